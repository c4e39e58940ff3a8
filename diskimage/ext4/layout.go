package ext4

import (
	"sort"
)

// prepared is the part of the layout that does not depend on the
// filesystem size: inode numbers and per-inode block needs.
type prepared struct {
	byIno   []*Node // indexed by inode number; nil for unused reserved inodes
	lastIno uint32
}

// sortedNames returns d's entry names in on-disk (bytewise) order.
func (d *Node) sortedNames() []string {
	if d.sorted == nil {
		d.sorted = make([]string, 0, len(d.children))
		for name := range d.children {
			d.sorted = append(d.sorted, name)
		}
		sort.Strings(d.sorted)
	}
	return d.sorted
}

// prepare numbers the inodes (see the package documentation) and computes
// each inode's data block count. The result is cached until the tree changes.
func (f *FS) prepare() *prepared {
	if f.prep != nil {
		return f.prep
	}
	for _, n := range f.nodes {
		n.ino = 0
	}
	p := &prepared{byIno: make([]*Node, firstIno+1, firstIno+1+len(f.nodes))}
	f.root.ino, p.byIno[rootIno] = rootIno, f.root
	f.lostFound.ino, p.byIno[lostFoundIno] = lostFoundIno, f.lostFound
	var walk func(d *Node)
	walk = func(d *Node) {
		names := d.sortedNames()
		for _, name := range names {
			if c := d.children[name]; c.ino == 0 {
				c.ino = uint32(len(p.byIno))
				p.byIno = append(p.byIno, c)
			}
		}
		for _, name := range names {
			if c := d.children[name]; c.kind == kindDir {
				walk(c)
			}
		}
	}
	walk(f.root)
	p.lastIno = uint32(len(p.byIno) - 1)
	for _, n := range p.byIno {
		if n == nil {
			continue
		}
		switch n.kind {
		case kindDir:
			n.nblk = dirBlocks(n, nil)
		case kindFile:
			n.nblk = uint64((n.size + blockSize - 1) / blockSize)
		case kindSymlink:
			n.nblk = 0
			if len(n.target) >= fastSymlinkMax {
				n.nblk = 1
			}
		}
	}
	f.prep = p
	return p
}

// geometry is the size-dependent shape of the filesystem.
type geometry struct {
	nblocks   uint64 // s_blocks_count
	ngroups   uint32
	ipg       uint32 // inodes per group
	itb       uint32 // inode table blocks per group
	gdtBlocks uint32 // group descriptor table blocks
	journal   uint32 // journal blocks, 0 = none
	resBlocks uint64 // s_r_blocks_count
}

// hasSuper reports whether group g holds a superblock backup under
// sparse_super: groups 0 and 1 and the powers of 3, 5 and 7.
func hasSuper(g uint32) bool {
	if g <= 1 {
		return true
	}
	for _, b := range []uint32{3, 5, 7} {
		n := g
		for n%b == 0 {
			n /= b
		}
		if n == 1 {
			return true
		}
	}
	return false
}

func (g *geometry) groupStart(grp uint32) uint64 { return uint64(grp) * blocksPerGroup }
func (g *geometry) groupEnd(grp uint32) uint64 {
	return min(uint64(grp+1)*blocksPerGroup, g.nblocks)
}

func (g *geometry) superBlocks(grp uint32) uint32 {
	if hasSuper(grp) {
		return 1 + g.gdtBlocks
	}
	return 0
}

// overhead is the number of metadata blocks at the start of group grp.
func (g *geometry) overhead(grp uint32) uint32 { return g.superBlocks(grp) + 2 + g.itb }

func (g *geometry) blockBitmap(grp uint32) uint64 {
	return g.groupStart(grp) + uint64(g.superBlocks(grp))
}
func (g *geometry) dataStart(grp uint32) uint64 { return g.groupStart(grp) + uint64(g.overhead(grp)) }

// minLastGroup is how many data blocks a partial last group must have to be
// kept; smaller tails are left unused, as mke2fs does, because their
// metadata would cost more than they hold.
const minLastGroup = 64

func (f *FS) inodeRatio() uint64 {
	if f.opts.InodeRatio == 0 {
		return 16384
	}
	return uint64(f.opts.InodeRatio)
}

// geometry computes the shape of a filesystem of nblocks blocks.
func (f *FS) geometry(nblocks uint64, p *prepared) (geometry, error) {
	if nblocks > maxBlocks {
		return geometry{}, errTooLarge
	}
	users := uint64(p.lastIno - firstIno)
	need := uint64(p.lastIno) + 256 + users/16
	for {
		var g geometry
		g.nblocks = nblocks
		g.ngroups = uint32((nblocks + blocksPerGroup - 1) / blocksPerGroup)
		if g.ngroups == 0 || need > uint64(g.ngroups)*maxIPG || need > maxBlocks {
			return geometry{}, errTooSmall
		}
		want := max(nblocks*blockSize/f.inodeRatio(), need)
		want = min(want, uint64(g.ngroups)*maxIPG, maxBlocks)
		ipg := (want + uint64(g.ngroups) - 1) / uint64(g.ngroups)
		ipg = (ipg + inodesPerBlock - 1) &^ (inodesPerBlock - 1)
		if ipg*uint64(g.ngroups) > maxBlocks { // s_inodes_count is 32 bits
			ipg = (maxBlocks / uint64(g.ngroups)) &^ (inodesPerBlock - 1)
		}
		g.ipg = uint32(ipg)
		g.itb = g.ipg / inodesPerBlock
		g.gdtBlocks = (g.ngroups*32 + blockSize - 1) / blockSize
		last := g.ngroups - 1
		tail := nblocks - g.groupStart(last)
		ov := uint64(g.overhead(last))
		if g.ngroups > 1 && tail < ov+minLastGroup {
			nblocks = g.groupStart(last)
			continue
		}
		if tail <= ov {
			return geometry{}, errTooSmall
		}
		g.journal = f.journalBlocks(nblocks)
		pct := uint64(5)
		if f.opts.ReservedPercent < 0 {
			pct = 0
		} else if f.opts.ReservedPercent > 0 {
			pct = uint64(f.opts.ReservedPercent)
		}
		g.resBlocks = nblocks * pct / 100
		return g, nil
	}
}

// run is a physically contiguous range of blocks.
type run struct {
	phys uint32
	n    uint32
}

// inodePlan is where one inode's blocks went.
type inodePlan struct {
	runs  []run  // data blocks in logical order
	tree  []run  // extent tree blocks
	xattr uint32 // external xattr block, 0 = none
}

// plan is a complete layout for one filesystem size.
type plan struct {
	geometry
	prep     *prepared
	inodes   []inodePlan // indexed by inode number
	journal  inodePlan
	dataUsed []uint32 // data blocks used per group (a prefix of its data area)
	free     uint64   // free blocks in total
}

// allocator hands out blocks with a single forward-moving cursor through
// the data areas of the groups.
type allocator struct {
	g          *geometry
	grp        uint32
	next, end  uint64
	used       []uint32 // per group, when recording
	arena      []run    // when recording
	recordRuns bool
}

// take allocates n blocks and returns the runs (when recording) and the
// number of extents they need.
func (a *allocator) take(n uint64) (runs []run, extents int, err error) {
	start := len(a.arena)
	for n > 0 {
		if a.next >= a.end {
			a.grp++
			if a.grp >= a.g.ngroups {
				return nil, 0, errTooSmall
			}
			a.next, a.end = a.g.dataStart(a.grp), a.g.groupEnd(a.grp)
			continue
		}
		k := min(n, a.end-a.next)
		if a.recordRuns {
			a.arena = append(a.arena, run{uint32(a.next), uint32(k)})
			a.used[a.grp] += uint32(k)
		}
		extents += int((k + maxExtentLen - 1) / maxExtentLen)
		a.next += k
		n -= k
	}
	if a.recordRuns {
		runs = a.arena[start:len(a.arena):len(a.arena)]
	}
	return runs, extents, nil
}

// takeInode allocates data, extent tree and xattr blocks for one inode.
func (a *allocator) takeInode(nblk uint64, xattrBlock bool) (inodePlan, error) {
	var ip inodePlan
	var ext int
	var err error
	if ip.runs, ext, err = a.take(nblk); err != nil {
		return ip, err
	}
	if tb, _ := treeBlocks(ext); tb > 0 {
		if ip.tree, _, err = a.take(uint64(tb)); err != nil {
			return ip, err
		}
	}
	if xattrBlock {
		r, _, err := a.take(1)
		if err != nil {
			return ip, err
		}
		if a.recordRuns {
			ip.xattr = r[0].phys
		}
	}
	return ip, nil
}

// layout plans a filesystem of nblocks blocks. Without record it only checks
// that everything fits (MinSize's search).
func (f *FS) layout(nblocks uint64, record bool) (*plan, error) {
	prep := f.prepare()
	g, err := f.geometry(nblocks, prep)
	if err != nil {
		return nil, err
	}
	a := &allocator{g: &g, recordRuns: record}
	a.next, a.end = g.dataStart(0), g.groupEnd(0)
	pl := &plan{geometry: g, prep: prep}
	if record {
		a.used = make([]uint32, g.ngroups)
		pl.inodes = make([]inodePlan, prep.lastIno+1)
		a.arena = make([]run, 0, len(prep.byIno)+int(g.ngroups))
	}
	if g.journal > 0 {
		if pl.journal, err = a.takeInode(uint64(g.journal), false); err != nil {
			return nil, err
		}
	}
	for ino := uint32(1); ino <= prep.lastIno; ino++ {
		n := prep.byIno[ino]
		if n == nil {
			continue
		}
		ip, err := a.takeInode(n.nblk, len(n.xattrs.inBlock) > 0)
		if err != nil {
			return nil, err
		}
		if record {
			pl.inodes[ino] = ip
		}
	}
	if record {
		pl.dataUsed = a.used
		for grp := uint32(0); grp < g.ngroups; grp++ {
			pl.free += g.groupEnd(grp) - g.groupStart(grp) - uint64(g.overhead(grp)) - uint64(a.used[grp])
		}
	}
	return pl, nil
}

// Default journal sizes by filesystem size in blocks (mke2fs' table for
// 4 KiB blocks, except that filesystems below 2048 blocks still get the
// minimum journal rather than none).
var journalTiers = []struct {
	below  uint64 // filesystem blocks
	blocks uint32 // journal blocks
}{
	{32768, 1024},        // < 128 MiB: 4 MiB
	{256 * 1024, 4096},   // < 1 GiB: 16 MiB
	{512 * 1024, 8192},   // < 2 GiB: 32 MiB
	{4096 * 1024, 16384}, // < 16 GiB: 64 MiB
	{8192 * 1024, 32768}, // < 32 GiB: 128 MiB
	{16384 * 1024, 65536},
	{32768 * 1024, 131072},
	{maxBlocks + 1, 262144},
}

const (
	minJournalBlocks = 1024
	maxJournalBlocks = 10240000
)

func (f *FS) journalBlocks(nblocks uint64) uint32 {
	switch jb := f.opts.JournalBytes; {
	case jb < 0:
		return 0
	case jb > 0:
		return uint32(max((jb+blockSize-1)/blockSize, minJournalBlocks))
	}
	for _, t := range journalTiers {
		if nblocks < t.below {
			return t.blocks
		}
	}
	return journalTiers[len(journalTiers)-1].blocks
}

// MinSize returns the smallest size in bytes (a multiple of 4096) that holds
// everything added so far, including metadata, journal and lost+found, or -1
// if nothing up to 16 TiB does (or the options are invalid). Writing with
// MinSize()-4096 bytes fails.
//
// With the default journal size the journal grows with the filesystem, so
// the search is done separately within each journal size tier.
func (f *FS) MinSize() int64 {
	if f.err != nil {
		return -1
	}
	fits := func(n uint64) bool {
		_, err := f.layout(n, false)
		return err == nil
	}
	type tier struct{ lo, hi uint64 } // blocks [lo, hi)
	tiers := []tier{{1, maxBlocks + 1}}
	if f.opts.JournalBytes == 0 {
		tiers = tiers[:0]
		lo := uint64(1)
		for _, t := range journalTiers {
			tiers = append(tiers, tier{lo, t.below})
			lo = t.below
		}
	}
	for _, t := range tiers {
		if !fits(t.hi - 1) {
			continue
		}
		// Invariant: lo does not fit (t.lo-1 is the previous tier's last
		// size, which did not fit, or 0), hi fits.
		lo, hi := t.lo-1, t.hi-1
		for hi-lo > 1 {
			mid := lo + (hi-lo)/2
			if fits(mid) {
				hi = mid
			} else {
				lo = mid
			}
		}
		return int64(hi) * blockSize
	}
	return -1
}
