package delta

import (
	"sort"

	"github.com/apt-ostree/apt-ostree-factory/ostree"
)

// Splitting a small delta among the cores.
//
// A delta whose xz-compressed objects fit in one part would be one xz
// stream. With several cores, that stream is compressed in parallel
// anyway, and how it is cut decides both the time and the size. xz's
// own threads cut it into equal blocks at byte offsets, which separates
// files that compress well together (the translations of one program
// share all their English message ids; cutting nano's 38 catalogues in
// two costs 5% of their compressed size). The layout below instead makes
// one part per core and keeps such families of files whole:
//
//   - A family is the files with the same base name (nano.mo, hello.mo,
//     copyright, __init__.py, index.html).
//   - Families go, largest first, to the part with the least work; the
//     rest of the objects (in ostree's order) then fill the parts up to
//     an equal amount of work.
//   - A family larger than a fair share makes its part the slowest. That
//     part is compressed faster: with the hash-chain match finder
//     (mf=hc4, nice=32) and a dictionary of four of its largest files
//     (a member matches the members before it, and a smaller dictionary
//     keeps the match finder's tables in the CPU's caches), and with
//     pb=0 when it holds no code. On nano's translations that takes 0.28
//     s instead of 0.57 s, for at most 2% more bytes. A family too large even
//     for that (its work over a fair share) is not kept whole; its files
//     fill the parts like the rest.
//
// The work estimate is the byte count, and fastCost per byte in a part
// compressed the faster way.
const (
	// minSplit is the least xz payload per core worth a part of its own
	// (as xz's own minimum block for threads, 1 MiB).
	minSplit = minBlock
	// fastCost is the time per byte of a family part compressed the
	// faster way, relative to xz's preset: the hash-chain match finder
	// takes 0.72-0.8 of the binary tree's time (measured on
	// translations, code, text and dirtrees), and the small dictionary
	// and the redundancy of a family take off more (0.5 on nano's
	// translations).
	fastCost = 0.6
	// fastFrom: a part whose families exceed the fair share by this
	// factor is compressed the faster way.
	fastFrom = 1.05
	// minFamilyDict is the least dictionary of a family part.
	minFamilyDict = 256 << 10
)

// blobBytes is the blob bytes of the objects in lists.
func blobBytes(lists [][]*object) uint64 {
	var n uint64
	for _, l := range lists {
		for _, o := range l {
			n += o.blobLen()
		}
	}
	return n
}

// splitPart is one part of splitForCores' layout.
type splitPart struct {
	objs []*object
	// fast: compressed the faster way, with a dictionary of dict bytes.
	fast bool
	dict uint64
}

// splitForCores lays out the xz objects (metadata, patched, regular,
// symlinks, in ostree's order) of a delta that fits in one part into
// one part per worker, as described above; total is their blob bytes. It
// returns nil when the payload is too small to split or there is only one
// worker; the caller then makes a single part.
func splitForCores(lists [][]*object, total uint64, workers int) []splitPart {
	k := min(uint64(workers), total/minSplit)
	if k < 2 {
		return nil
	}
	share := float64(total) / float64(k)

	// Families of regular files by base name, in the order first met.
	members := map[string][]*object{}
	var names []string
	for _, l := range lists {
		for _, o := range l {
			if o.base == "" || o.patch != nil || o.name.Type.IsMeta() || o.hdr.Mode&ostree.ModeTypeMask != ostree.ModeRegular {
				continue
			}
			if members[o.base] == nil {
				names = append(names, o.base)
			}
			members[o.base] = append(members[o.base], o)
		}
	}
	type family struct {
		objs     []*object
		bytes    uint64
		greatest uint64 // the largest member
	}
	var fams []family
	for _, n := range names {
		m := members[n]
		if len(m) < 2 {
			continue
		}
		f := family{objs: m}
		for _, o := range m {
			f.bytes += o.blobLen()
			f.greatest = max(f.greatest, o.blobLen())
		}
		if float64(f.bytes)*fastCost > share*fastFrom {
			continue // too large to keep whole: its files are filler
		}
		fams = append(fams, f)
	}
	sort.SliceStable(fams, func(i, j int) bool { return fams[i].bytes > fams[j].bytes })

	parts := make([][]*object, k)
	bytes := make([]uint64, k)
	fast := make([]bool, k)
	greatest := make([]uint64, k)
	cost := func(i int) float64 {
		if fast[i] {
			return float64(bytes[i]) * fastCost
		}
		return float64(bytes[i])
	}
	placed := map[*object]bool{}
	for _, f := range fams {
		best := 0
		for i := 1; i < int(k); i++ {
			if cost(i) < cost(best) {
				best = i
			}
		}
		parts[best] = append(parts[best], f.objs...)
		bytes[best] += f.bytes
		greatest[best] = max(greatest[best], f.greatest)
		if float64(bytes[best]) > share*fastFrom {
			fast[best] = true
		}
		for _, o := range f.objs {
			placed[o] = true
		}
	}

	// Fill: the remaining objects, in order, raise the cheapest parts to
	// a common level of work. quota[i] is what part i takes.
	var filler []*object
	var fillBytes uint64
	for _, l := range lists {
		for _, o := range l {
			if !placed[o] {
				filler = append(filler, o)
				fillBytes += o.blobLen()
			}
		}
	}
	quota := fillQuotas(k, cost, fast, fillBytes)
	i := 0
	var took uint64
	for _, o := range filler {
		// Move on when this part has its quota, or would overshoot it by
		// more than the object's half.
		for i < int(k)-1 && took+o.blobLen()/2 >= quota[i] {
			i++
			took = 0
		}
		parts[i] = append(parts[i], o)
		bytes[i] += o.blobLen()
		took += o.blobLen()
	}
	// Parts left empty (a tiny remainder) are dropped.
	var out []splitPart
	for j, p := range parts {
		if len(p) == 0 {
			continue
		}
		sp := splitPart{objs: p, fast: fast[j]}
		if sp.fast {
			sp.dict = minFamilyDict
			for sp.dict < 4*greatest[j] {
				sp.dict *= 2
			}
		}
		out = append(out, sp)
	}
	if len(out) < 2 {
		return nil
	}
	return out
}

// fillQuotas returns how many filler bytes each of k parts takes so that
// their work (cost, with fastCost per byte in fast parts) ends level, as
// far as the filler reaches: water-filling over the parts' current work.
func fillQuotas(k uint64, cost func(int) float64, fast []bool, fill uint64) []uint64 {
	rate := func(i int) float64 {
		if fast[i] {
			return fastCost
		}
		return 1
	}
	order := make([]int, k)
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return cost(order[a]) < cost(order[b]) })
	// Raise the level over the cheapest parts until the filler runs out:
	// with n parts at the level, a unit of level takes perLevel bytes.
	level := cost(order[0])
	left := float64(fill)
	for n := 1; ; n++ {
		var perLevel float64
		for _, j := range order[:n] {
			perLevel += 1 / rate(j)
		}
		if n == len(order) || level+left/perLevel <= cost(order[n]) {
			level += left / perLevel
			break
		}
		left -= (cost(order[n]) - level) * perLevel
		level = cost(order[n])
	}
	quota := make([]uint64, k)
	for i := range quota {
		if d := level - cost(i); d > 0 {
			quota[i] = uint64(d / rate(i))
		}
	}
	return quota
}
