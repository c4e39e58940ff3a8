package delta

import (
	"crypto/sha256"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/apt-ostree/apt-ostree-factory/ostree"
)

// layoutObj is a regular file of size bytes under base name.
func layoutObj(base string, size uint64, seq int) *object {
	return &object{
		name: ostree.ObjectName{Checksum: sha256.Sum256([]byte(fmt.Sprint(base, seq))), Type: ostree.ObjectFile},
		hdr:  ostree.FileHeader{FileMeta: ostree.FileMeta{Mode: ostree.ModeRegular | 0o644}, Size: size},
		base: base,
	}
}

// many is n objects of size bytes, named by format (with %d: numbered).
func many(format string, n int, size uint64) []*object {
	var out []*object
	for i := 0; i < n; i++ {
		base := format
		if strings.Contains(format, "%d") {
			base = fmt.Sprintf(format, i)
		}
		out = append(out, layoutObj(base, size, i))
	}
	return out
}

// split is splitForCores with the lists' total.
func split(lists [][]*object, workers int) []splitPart {
	return splitForCores(lists, blobBytes(lists), workers)
}

// checkLayout: every object is in exactly one part; returns the part of
// each object and each part's work.
func checkLayout(t *testing.T, lists [][]*object, parts []splitPart) (map[*object]int, []float64) {
	t.Helper()
	where := map[*object]int{}
	work := make([]float64, len(parts))
	for i, p := range parts {
		for _, o := range p.objs {
			if _, dup := where[o]; dup {
				t.Fatalf("object %s in two parts", o.name)
			}
			where[o] = i
			c := float64(o.blobLen())
			if p.fast {
				c *= fastCost
			}
			work[i] += c
		}
	}
	for _, l := range lists {
		for _, o := range l {
			if _, ok := where[o]; !ok {
				t.Fatalf("object %s (%s) in no part", o.name, o.base)
			}
		}
	}
	return where, work
}

func TestSplitForCores(t *testing.T) {
	// Translations: 30 × 70 kB of app.mo (2.1 MB), and 1.4 MB of other
	// files with distinct names, as in the default recipe's v1→v2 delta.
	var mo, rest []*object
	for i := 0; i < 30; i++ {
		mo = append(mo, layoutObj("app.mo", 70_000+uint64(i)*100, i))
	}
	for i := 0; i < 70; i++ {
		rest = append(rest, layoutObj(fmt.Sprintf("file%d", i), 20_000, i))
	}
	var regular []*object
	for i := range 100 { // interleaved, as a walk meets them
		if i%3 == 0 && len(mo) > 0 {
			regular, mo = append(regular, mo[0]), mo[1:]
		} else if len(rest) > 0 {
			regular, rest = append(regular, rest[0]), rest[1:]
		}
	}
	regular = append(append(regular, mo...), rest...)
	lists := [][]*object{nil, nil, regular, nil}

	t.Run("families kept whole", func(t *testing.T) {
		parts := split(lists, 2)
		if len(parts) != 2 {
			t.Fatalf("%d parts, want 2", len(parts))
		}
		where, work := checkLayout(t, lists, parts)
		famPart := -1
		for _, o := range regular {
			if o.base != "app.mo" {
				continue
			}
			if famPart == -1 {
				famPart = where[o]
			} else if where[o] != famPart {
				t.Fatalf("app.mo files in parts %d and %d", famPart, where[o])
			}
		}
		// 2.1 MB of 3.5 MB is over a fair share: the family's part is
		// compressed the faster way, with a dictionary of 4 × 72.9 kB
		// rounded up to a power of two.
		if !parts[famPart].fast || parts[famPart].dict != 512<<10 {
			t.Errorf("family part: fast %v, dict %d; want fast, 512 KiB", parts[famPart].fast, parts[famPart].dict)
		}
		if other := parts[1-famPart]; other.fast || other.dict != 0 {
			t.Errorf("other part: fast %v, dict %d", other.fast, other.dict)
		}
		if r := math.Max(work[0], work[1]) / math.Min(work[0], work[1]); r > 1.1 {
			t.Errorf("work %v: unbalanced by %.2f", work, r)
		}
		// The filler keeps its order.
		last := -1
		for _, o := range parts[1-famPart].objs {
			var seq int
			fmt.Sscanf(o.base, "file%d", &seq)
			if seq <= last {
				t.Errorf("filler out of order: file%d after file%d", seq, last)
			}
			last = seq
		}
	})
	t.Run("deterministic", func(t *testing.T) {
		a, b := split(lists, 2), split(lists, 2)
		for i := range a {
			for j := range a[i].objs {
				if a[i].objs[j] != b[i].objs[j] {
					t.Fatalf("part %d object %d differs between runs", i, j)
				}
			}
		}
	})
	t.Run("one core or too small", func(t *testing.T) {
		if p := split(lists, 1); p != nil {
			t.Errorf("one worker: %d parts", len(p))
		}
		small := [][]*object{{layoutObj("a", 600_000, 0), layoutObj("b", 600_000, 0)}}
		if p := split(small, 8); p != nil {
			t.Errorf("1.2 MB: %d parts", len(p))
		}
	})
	t.Run("family too large to keep whole", func(t *testing.T) {
		// 3.3 MB of one family and 0.2 MB else: even compressed the
		// faster way it would take longer than splitting it.
		l := [][]*object{append(many("huge.mo", 33, 100_000), many("f%d", 10, 20_000)...)}
		parts := split(l, 2)
		if len(parts) != 2 {
			t.Fatalf("%d parts", len(parts))
		}
		_, work := checkLayout(t, l, parts)
		for i, p := range parts {
			if p.fast {
				t.Errorf("part %d fast", i)
			}
		}
		if r := math.Max(work[0], work[1]) / math.Min(work[0], work[1]); r > 1.1 {
			t.Errorf("work %v: unbalanced by %.2f", work, r)
		}
	})
	t.Run("several families on four cores", func(t *testing.T) {
		var objs []*object
		for f, n := range []int{40, 25, 10, 5} {
			objs = append(objs, many(fmt.Sprintf("fam%d", f), n, 50_000)...)
		}
		objs = append(objs, many("x%d", 60, 30_000)...)
		l := [][]*object{objs}
		parts := split(l, 4)
		if len(parts) != 4 {
			t.Fatalf("%d parts", len(parts))
		}
		where, work := checkLayout(t, l, parts)
		fam := map[string]int{}
		for _, o := range objs {
			if len(o.base) == 4 && o.base[:3] == "fam" {
				if p, ok := fam[o.base]; ok && p != where[o] {
					t.Errorf("%s split between parts %d and %d", o.base, p, where[o])
				}
				fam[o.base] = where[o]
			}
		}
		lo, hi := math.Inf(1), 0.0
		for _, w := range work {
			lo, hi = math.Min(lo, w), math.Max(hi, w)
		}
		if hi/lo > 1.15 {
			t.Errorf("work %v: unbalanced by %.2f", work, hi/lo)
		}
	})
}

func TestFillQuotas(t *testing.T) {
	costs := []float64{100, 0, 50}
	fast := []bool{false, false, true}
	cost := func(i int) float64 { return costs[i] }
	// Level 100 needs 100 bytes in part 1 and 50/fastCost in part 2;
	// the rest is spread so that all three end level.
	fill := uint64(300)
	q := fillQuotas(3, cost, fast, fill)
	var sum uint64
	level := -1.0
	for i, b := range q {
		sum += b
		w := costs[i] + float64(b)*map[bool]float64{true: fastCost, false: 1}[fast[i]]
		if level >= 0 && math.Abs(w-level) > 1 {
			t.Errorf("part %d ends at %.1f, others at %.1f (quotas %v)", i, w, level, q)
		}
		level = w
	}
	if sum+3 < fill || sum > fill {
		t.Errorf("quotas %v sum to %d, want %d", q, sum, fill)
	}
	// Too little filler to reach the most loaded part: it gets none.
	q = fillQuotas(3, cost, fast, 40)
	if q[0] != 0 || q[1] != 40 || q[2] != 0 {
		t.Errorf("quotas %v, want [0 40 0]", q)
	}
}
