package ext4

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
)

var errTooLarge = errors.New("ext4: filesystems larger than 16 TiB need the 64bit feature, which this writer does not implement")

// WriteTo lays the filesystem out in size bytes (rounded down to whole
// blocks; a partial last group too small to be useful is left unused) and
// writes it at offset off of w.
//
// Nothing is written if the layout fails, e.g. when size is too small. Only
// blocks that are not all zero are written: w must read as zeros where
// nothing is written (a fresh or truncated file), which keeps sparse files
// sparse. File contents are read and written by runtime.GOMAXPROCS(0)
// workers in parallel, with WriteAt calls on disjoint ranges; metadata is
// written concurrently by the calling goroutine.
func (f *FS) WriteTo(w io.WriterAt, off, size int64) error {
	if f.err != nil {
		return f.err
	}
	if off < 0 || size < 0 {
		return fmt.Errorf("ext4: negative offset %d or size %d", off, size)
	}
	nblocks := uint64(size) / blockSize
	if nblocks > maxBlocks {
		return fmt.Errorf("%w (given %d MiB)", errTooLarge, size>>20)
	}
	p, err := f.layout(nblocks, true)
	if err != nil {
		if errors.Is(err, errTooSmall) {
			need := f.MinSize()
			if need < 0 {
				return fmt.Errorf("ext4: the tree does not fit in a 16 TiB filesystem (given %.1f MiB)", mib(size))
			}
			return fmt.Errorf("ext4: filesystem too small: needs %.1f MiB (%d bytes), given %.1f MiB (%d bytes)", mib(need), need, mib(size), size)
		}
		return err
	}
	bw := &blockWriter{w: w, off: off}

	// File contents: biggest first so the long copies start early and the
	// workers finish together.
	var jobs []uint32
	for ino := uint32(firstIno + 1); ino <= p.prep.lastIno; ino++ {
		if n := p.prep.byIno[ino]; n.kind == kindFile && n.size > 0 {
			jobs = append(jobs, ino)
		}
	}
	sort.SliceStable(jobs, func(i, j int) bool {
		return p.prep.byIno[jobs[i]].size > p.prep.byIno[jobs[j]].size
	})
	var (
		stop     atomic.Bool
		errOnce  sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err })
		stop.Store(true)
	}
	ch := make(chan uint32)
	workers := runtime.GOMAXPROCS(0)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, copyBuffer)
			for ino := range ch {
				if stop.Load() {
					continue
				}
				if err := bw.writeFile(p.prep.byIno[ino], &p.inodes[ino], buf); err != nil {
					fail(err)
				}
			}
		}()
	}
	go func() {
		defer close(ch)
		for _, ino := range jobs {
			if stop.Load() {
				return
			}
			ch <- ino
		}
	}()
	if err := p.writeMetadata(bw, &f.opts, &stop); err != nil {
		fail(err)
	}
	wg.Wait()
	return firstErr
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

const copyBuffer = 1 << 20

// blockWriter writes block-addressed data to the image, skipping all-zero
// blocks.
type blockWriter struct {
	w   io.WriterAt
	off int64
}

var zeroBlock [blockSize]byte

// writeAt writes data at block blk, one WriteAt per run of non-zero blocks.
func (bw *blockWriter) writeAt(blk uint64, data []byte) error {
	start := -1
	flush := func(end int) error {
		if start < 0 {
			return nil
		}
		_, err := bw.w.WriteAt(data[start:end], bw.off+int64(blk)*blockSize+int64(start))
		start = -1
		if err != nil {
			return fmt.Errorf("ext4: write: %w", err)
		}
		return nil
	}
	for p := 0; p < len(data); p += blockSize {
		e := min(p+blockSize, len(data))
		if bytes.Equal(data[p:e], zeroBlock[:e-p]) {
			if err := flush(p); err != nil {
				return err
			}
		} else if start < 0 {
			start = p
		}
	}
	return flush(len(data))
}

// writeRuns writes data (block-aligned, logically contiguous) to the
// blocks of runs.
func (bw *blockWriter) writeRuns(runs []run, data []byte) error {
	for _, r := range runs {
		n := min(len(data), int(r.n)*blockSize)
		if err := bw.writeAt(uint64(r.phys), data[:n]); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// writeFile streams the content of regular file n into its blocks and
// checks it has exactly n.size bytes.
func (bw *blockWriter) writeFile(n *Node, ip *inodePlan, buf []byte) (err error) {
	rc, err := n.open()
	if err != nil {
		return fmt.Errorf("ext4: %s: open: %w", n.path(), err)
	}
	if rc == nil {
		return fmt.Errorf("ext4: %s: open returned no reader", n.path())
	}
	defer func() {
		if cerr := rc.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("ext4: %s: close: %w", n.path(), cerr)
		}
	}()
	done := int64(0)
	for _, r := range ip.runs {
		blk := uint64(r.phys)
		left := min(int64(r.n)*blockSize, n.size-done)
		for left > 0 {
			chunk := min(int64(len(buf)), left)
			got, err := io.ReadFull(rc, buf[:chunk])
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return fmt.Errorf("ext4: %s: content is %d bytes, expected %d", n.path(), done+int64(got), n.size)
			}
			if err != nil {
				return fmt.Errorf("ext4: %s: read: %w", n.path(), err)
			}
			if err := bw.writeAt(blk, buf[:chunk]); err != nil {
				return err
			}
			blk += uint64(chunk / blockSize)
			left -= chunk
			done += chunk
		}
	}
	var one [1]byte
	got, err := io.ReadFull(rc, one[:])
	if got > 0 {
		return fmt.Errorf("ext4: %s: content is longer than %d bytes", n.path(), n.size)
	}
	if err != nil && err != io.EOF {
		return fmt.Errorf("ext4: %s: read: %w", n.path(), err)
	}
	return nil
}

// writeMetadata writes everything but file contents: inode tables,
// directory, symlink, xattr and extent tree blocks, the journal superblock,
// bitmaps, group descriptors and superblocks.
func (p *plan) writeMetadata(bw *blockWriter, opts *Options, stop *atomic.Bool) error {
	g := &p.geometry
	lastIno := p.prep.lastIno
	var journalIBlock []byte
	for grp := uint32(0); grp < g.ngroups; grp++ {
		first := grp*g.ipg + 1
		if first > lastIno {
			break
		}
		if stop.Load() {
			return nil
		}
		cnt := min(g.ipg, lastIno-first+1)
		table := make([]byte, (int(cnt)*inodeSize+blockSize-1)/blockSize*blockSize)
		for i := uint32(0); i < cnt; i++ {
			ino := first + i
			b := table[i*inodeSize : (i+1)*inodeSize]
			for _, t := range p.encodeInode(b, ino, opts) {
				if err := bw.writeAt(uint64(t.blk), t.data); err != nil {
					return err
				}
			}
			if ino == journalIno {
				journalIBlock = b[0x28 : 0x28+60]
			}
			if err := p.writeInodeBlocks(bw, ino); err != nil {
				return err
			}
		}
		if err := bw.writeAt(g.blockBitmap(grp)+2, table); err != nil {
			return err
		}
	}
	if g.journal > 0 {
		if err := bw.writeAt(uint64(p.journal.runs[0].phys), journalSuperblock(g.journal, opts.UUID)); err != nil {
			return err
		}
	}

	// Bitmaps and group descriptors. Used blocks and inodes are a prefix
	// of each group; bits past the group's end are set as padding.
	usedDirs := make([]uint32, g.ngroups)
	for ino, n := range p.prep.byIno {
		if n != nil && n.kind == kindDir {
			usedDirs[uint32(ino-1)/g.ipg]++
		}
	}
	gdt := make([]byte, int(g.gdtBlocks)*blockSize)
	var freeInodes uint64
	bitmap := make([]byte, blockSize)
	for grp := uint32(0); grp < g.ngroups; grp++ {
		size := uint32(g.groupEnd(grp) - g.groupStart(grp))
		usedBlocks := g.overhead(grp) + p.dataUsed[grp]
		setPrefix(bitmap, usedBlocks, size)
		if err := bw.writeAt(g.blockBitmap(grp), bitmap); err != nil {
			return err
		}
		usedInodes := uint32(0)
		if first := uint64(grp) * uint64(g.ipg); uint64(lastIno) > first {
			usedInodes = uint32(min(uint64(lastIno)-first, uint64(g.ipg)))
		}
		setPrefix(bitmap, usedInodes, g.ipg)
		if err := bw.writeAt(g.blockBitmap(grp)+1, bitmap); err != nil {
			return err
		}
		freeInodes += uint64(g.ipg - usedInodes)
		d := gdt[grp*32 : grp*32+32]
		le := binary.LittleEndian
		le.PutUint32(d[0x00:], uint32(g.blockBitmap(grp)))
		le.PutUint32(d[0x04:], uint32(g.blockBitmap(grp)+1))
		le.PutUint32(d[0x08:], uint32(g.blockBitmap(grp)+2))
		le.PutUint16(d[0x0C:], uint16(size-usedBlocks))
		le.PutUint16(d[0x0E:], uint16(g.ipg-usedInodes))
		le.PutUint16(d[0x10:], uint16(usedDirs[grp]))
		// bg_flags, bg_itable_unused and checksums stay 0: no uninit_bg.
	}

	var jnl [17]uint32
	if journalIBlock != nil {
		for i := range 15 {
			jnl[i] = binary.LittleEndian.Uint32(journalIBlock[4*i:])
		}
		size := uint64(g.journal) * blockSize
		jnl[15], jnl[16] = uint32(size>>32), uint32(size)
	}
	for grp := uint32(0); grp < g.ngroups; grp++ {
		if !hasSuper(grp) {
			continue
		}
		sb := p.superblock(opts, grp, freeInodes, &jnl)
		start := g.groupStart(grp)
		var err error
		if grp == 0 {
			// The primary superblock lives at byte 1024; the first 1024
			// bytes (boot sector) are left alone.
			_, err = bw.w.WriteAt(sb, bw.off+1024)
		} else {
			_, err = bw.w.WriteAt(sb, bw.off+int64(start)*blockSize)
		}
		if err != nil {
			return fmt.Errorf("ext4: write: %w", err)
		}
		if err := bw.writeAt(start+1, gdt); err != nil {
			return err
		}
	}
	return nil
}

// setPrefix fills a bitmap block: bits [0, used) and [limit, end) set.
func setPrefix(b []byte, used, limit uint32) {
	clear(b)
	setBits(b, 0, used)
	setBits(b, limit, uint32(len(b))*8)
}

func setBits(b []byte, from, to uint32) {
	for from < to && from%8 != 0 {
		b[from/8] |= 1 << (from % 8)
		from++
	}
	for ; from+8 <= to; from += 8 {
		b[from/8] = 0xFF
	}
	for ; from < to; from++ {
		b[from/8] |= 1 << (from % 8)
	}
}

// writeInodeBlocks writes the data blocks of inode ino that are not file
// contents: directory blocks, a slow symlink's target and the external
// xattr block.
func (p *plan) writeInodeBlocks(bw *blockWriter, ino uint32) error {
	n := p.prep.byIno[ino]
	if n == nil {
		return nil
	}
	ip := &p.inodes[ino]
	switch {
	case n.kind == kindDir:
		buf := make([]byte, n.nblk*blockSize)
		dirBlocks(n, buf)
		if err := bw.writeRuns(ip.runs, buf); err != nil {
			return err
		}
	case n.kind == kindSymlink && n.nblk > 0:
		if err := bw.writeRuns(ip.runs, []byte(n.target)); err != nil {
			return err
		}
	}
	if ip.xattr != 0 {
		return bw.writeAt(uint64(ip.xattr), xattrBlock(n.xattrs.inBlock))
	}
	return nil
}

// Feature flags.
const (
	compatHasJournal = 0x4
	compatExtAttr    = 0x8
	compatDirIndex   = 0x20

	incompatFiletype = 0x2
	incompatExtents  = 0x40

	roCompatSparseSuper = 0x1
	roCompatLargeFile   = 0x2
	roCompatHugeFile    = 0x8
	roCompatDirNlink    = 0x20
	roCompatExtraIsize  = 0x40
)

// superblock encodes the 1024-byte superblock; backups differ from the
// primary only in s_block_group_nr.
func (p *plan) superblock(opts *Options, grp uint32, freeInodes uint64, jnl *[17]uint32) []byte {
	g := &p.geometry
	b := make([]byte, 1024)
	le := binary.LittleEndian
	inodes := g.ipg * g.ngroups
	le.PutUint32(b[0x00:], inodes)
	le.PutUint32(b[0x04:], uint32(g.nblocks))
	le.PutUint32(b[0x08:], uint32(g.resBlocks))
	le.PutUint32(b[0x0C:], uint32(p.free))
	le.PutUint32(b[0x10:], uint32(freeInodes))
	le.PutUint32(b[0x14:], 0) // s_first_data_block
	le.PutUint32(b[0x18:], 2) // s_log_block_size: 1024 << 2
	le.PutUint32(b[0x1C:], 2) // s_log_cluster_size
	le.PutUint32(b[0x20:], blocksPerGroup)
	le.PutUint32(b[0x24:], blocksPerGroup) // s_clusters_per_group
	le.PutUint32(b[0x28:], g.ipg)
	t, thi := encodeSuperTime(opts.Time)
	le.PutUint32(b[0x30:], t)      // s_wtime (s_mtime stays 0: never mounted)
	le.PutUint16(b[0x36:], 0xFFFF) // s_max_mnt_count -1
	le.PutUint16(b[0x38:], 0xEF53) // s_magic
	le.PutUint16(b[0x3A:], 1)      // s_state: clean
	le.PutUint16(b[0x3C:], 1)      // s_errors: continue
	le.PutUint32(b[0x40:], t)      // s_lastcheck
	le.PutUint32(b[0x48:], 0)      // s_creator_os: Linux
	le.PutUint32(b[0x4C:], 1)      // s_rev_level: dynamic
	le.PutUint32(b[0x54:], firstIno)
	le.PutUint16(b[0x58:], inodeSize)
	le.PutUint16(b[0x5A:], uint16(grp))
	compat := uint32(compatExtAttr | compatDirIndex)
	if g.journal > 0 {
		compat |= compatHasJournal
	}
	le.PutUint32(b[0x5C:], compat)
	le.PutUint32(b[0x60:], incompatFiletype|incompatExtents)
	le.PutUint32(b[0x64:], roCompatSparseSuper|roCompatLargeFile|roCompatHugeFile|roCompatDirNlink|roCompatExtraIsize)
	copy(b[0x68:0x78], opts.UUID[:])
	copy(b[0x78:0x88], opts.Label)
	if g.journal > 0 {
		le.PutUint32(b[0xE0:], journalIno)
	}
	seed := opts.HashSeed
	if seed == ([16]byte{}) {
		// e2fsck would otherwise invent a random one.
		sum := sha256.Sum256(append([]byte("ext4 hash seed "), opts.UUID[:]...))
		copy(seed[:], sum[:])
	}
	copy(b[0xEC:0xFC], seed[:])
	b[0xFC] = 1 // s_def_hash_version: half_md4
	if g.journal > 0 {
		b[0xFD] = 1 // s_jnl_backup_type: EXT3_JNL_BACKUP_BLOCKS
		for i, v := range jnl {
			le.PutUint32(b[0x10C+4*i:], v)
		}
	}
	le.PutUint32(b[0x100:], 0x4|0x8) // s_default_mount_opts: user_xattr, acl
	le.PutUint32(b[0x108:], t)       // s_mkfs_time
	le.PutUint16(b[0x15C:], extraIsize)
	le.PutUint16(b[0x15E:], extraIsize)
	// s_flags: signed directory hash, what mke2fs records on x86 and arm64
	// (the kernel uses it for directories it indexes later).
	le.PutUint32(b[0x160:], 1)
	b[0x274], b[0x276], b[0x277] = thi, thi, thi // s_wtime_hi, s_mkfs_time_hi, s_lastcheck_hi
	return b
}

// encodeSuperTime splits t into the 32-bit field and its high byte.
func encodeSuperTime(t int64) (uint32, uint8) {
	if t < 0 {
		return 0, 0
	}
	return uint32(t), uint8(t >> 32)
}
