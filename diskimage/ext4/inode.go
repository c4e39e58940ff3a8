package ext4

import (
	"encoding/binary"
)

const (
	modeDir     = 0o040000
	modeFile    = 0o100000
	modeSymlink = 0o120000

	flagExtents = 0x80000 // EXT4_EXTENTS_FL

	extentMagic    = 0xF30A
	maxExtentLen   = 32768 // longest initialized extent
	extentsInInode = 4     // (60 - 12) / 12
	extentsInBlock = (blockSize - 12) / 12

	fastSymlinkMax = 60 // targets shorter than this live in i_block
)

// treeBlocks returns how many extent tree blocks (leaves and index blocks
// below the root in i_block) n extents need, and the tree depth. Nodes are
// filled completely, so the tree is as shallow and narrow as possible and
// e2fsck has nothing to optimize.
func treeBlocks(n int) (blocks, depth int) {
	for n > extentsInInode {
		n = (n + extentsInBlock - 1) / extentsInBlock
		blocks += n
		depth++
	}
	return blocks, depth
}

func putExtentHeader(b []byte, entries, maxEntries, depth int) {
	binary.LittleEndian.PutUint16(b[0:], extentMagic)
	binary.LittleEndian.PutUint16(b[2:], uint16(entries))
	binary.LittleEndian.PutUint16(b[4:], uint16(maxEntries))
	binary.LittleEndian.PutUint16(b[6:], uint16(depth))
	binary.LittleEndian.PutUint32(b[8:], 0) // eh_generation
}

// treeNode is one written extent tree block.
type treeNode struct {
	blk  uint32
	data []byte
}

// buildExtents encodes the extent tree for data runs into iblock (the
// inode's 60-byte i_block) and returns the tree blocks to write, which use
// the blocks of tree in order (leaves first, then each index level).
func buildExtents(iblock []byte, runs, tree []run) []treeNode {
	// Level 0 entries: extents, each at most maxExtentLen blocks.
	type entry struct {
		lblk uint32
		rec  [12]byte
	}
	var cur []entry
	var lblk uint32
	for _, r := range runs {
		for off := uint32(0); off < r.n; {
			n := min(r.n-off, maxExtentLen)
			var e entry
			e.lblk = lblk
			binary.LittleEndian.PutUint32(e.rec[0:], lblk)
			binary.LittleEndian.PutUint16(e.rec[4:], uint16(n))
			binary.LittleEndian.PutUint16(e.rec[6:], 0) // ee_start_hi
			binary.LittleEndian.PutUint32(e.rec[8:], r.phys+off)
			cur = append(cur, e)
			lblk += n
			off += n
		}
	}
	var blocks []uint32
	for _, r := range tree {
		for i := uint32(0); i < r.n; i++ {
			blocks = append(blocks, r.phys+i)
		}
	}
	var out []treeNode
	depth := 0
	for len(cur) > extentsInInode {
		var next []entry
		for i := 0; i < len(cur); i += extentsInBlock {
			chunk := cur[i:min(i+extentsInBlock, len(cur))]
			blk := blocks[0]
			blocks = blocks[1:]
			data := make([]byte, blockSize)
			putExtentHeader(data, len(chunk), extentsInBlock, depth)
			for j, e := range chunk {
				copy(data[12+12*j:], e.rec[:])
			}
			out = append(out, treeNode{blk, data})
			var ix entry
			ix.lblk = chunk[0].lblk
			binary.LittleEndian.PutUint32(ix.rec[0:], chunk[0].lblk)
			binary.LittleEndian.PutUint32(ix.rec[4:], blk) // ei_leaf_lo
			binary.LittleEndian.PutUint16(ix.rec[8:], 0)   // ei_leaf_hi
			next = append(next, ix)
		}
		cur = next
		depth++
	}
	putExtentHeader(iblock, len(cur), extentsInInode, depth)
	for j, e := range cur {
		copy(iblock[12+12*j:], e.rec[:])
	}
	return out
}

// inodeFields are the values of one on-disk inode.
type inodeFields struct {
	mode    uint16
	uid     uint32
	gid     uint32
	size    uint64
	time    int64
	links   uint16
	sectors uint64 // i_blocks in 512-byte units
	flags   uint32
	xattr   uint32 // i_file_acl
}

// encodeTime splits t into the 32-bit seconds field and the epoch bits of
// the *_extra field (nanoseconds are always 0), so dates after 2038 and
// before 1970 round-trip like the kernel stores them.
func encodeTime(t int64) (uint32, uint32) {
	lo := int32(uint32(t))
	return uint32(lo), uint32((t-int64(lo))>>32) & 3
}

// putInode encodes the fixed part of an inode into b (256 bytes, zeroed);
// i_block and the xattr area are filled by the caller.
func putInode(b []byte, in *inodeFields) {
	le := binary.LittleEndian
	le.PutUint16(b[0x00:], in.mode)
	le.PutUint16(b[0x02:], uint16(in.uid))
	le.PutUint32(b[0x04:], uint32(in.size))
	sec, extra := encodeTime(in.time)
	le.PutUint32(b[0x08:], sec) // atime
	le.PutUint32(b[0x0C:], sec) // ctime
	le.PutUint32(b[0x10:], sec) // mtime
	le.PutUint16(b[0x18:], uint16(in.gid))
	le.PutUint16(b[0x1A:], in.links)
	le.PutUint32(b[0x1C:], uint32(in.sectors))
	le.PutUint32(b[0x20:], in.flags)
	le.PutUint32(b[0x68:], in.xattr)
	le.PutUint32(b[0x6C:], uint32(in.size>>32))
	le.PutUint16(b[0x74:], uint16(in.sectors>>32)) // l_i_blocks_high (huge_file)
	le.PutUint16(b[0x78:], uint16(in.uid>>16))
	le.PutUint16(b[0x7A:], uint16(in.gid>>16))
	le.PutUint16(b[0x80:], extraIsize)
	le.PutUint32(b[0x84:], extra) // ctime_extra
	le.PutUint32(b[0x88:], extra) // mtime_extra
	le.PutUint32(b[0x8C:], extra) // atime_extra
	le.PutUint32(b[0x90:], sec)   // crtime
	le.PutUint32(b[0x94:], extra) // crtime_extra
}

// encodeInode writes the complete inode ino into b and returns the extent
// tree blocks that go with it.
func (p *plan) encodeInode(b []byte, ino uint32, opts *Options) []treeNode {
	if ino == journalIno && p.journal.runs != nil {
		return p.encodeJournalInode(b, opts)
	}
	n := p.prep.byIno[ino]
	if n == nil {
		return nil // unused reserved inode: all zero
	}
	ip := &p.inodes[ino]
	in := inodeFields{
		uid:   n.meta.UID,
		gid:   n.meta.GID,
		time:  n.meta.Mtime,
		flags: n.meta.Flags,
		xattr: ip.xattr,
	}
	perm := uint16(n.meta.Mode & 0o7777)
	var trees []treeNode
	extentMapped := true
	switch n.kind {
	case kindDir:
		in.mode = modeDir | perm
		in.size = n.nblk * blockSize
		links := 2 + n.ndirs
		if links > maxLinks {
			links = 1 // dir_nlink: too many to count
		}
		in.links = uint16(links)
	case kindFile:
		in.mode = modeFile | perm
		in.size = uint64(n.size)
		in.links = uint16(n.nlink)
	case kindSymlink:
		in.mode = modeSymlink | perm
		in.size = uint64(len(n.target))
		in.links = uint16(n.nlink)
		if n.nblk == 0 {
			extentMapped = false
			copy(b[0x28:0x28+60], n.target)
		}
	}
	if extentMapped {
		in.flags |= flagExtents
		trees = buildExtents(b[0x28:0x28+60], ip.runs, ip.tree)
	}
	used := n.nblk + uint64(len(trees))
	if ip.xattr != 0 {
		used++
	}
	in.sectors = used * (blockSize / 512)
	putInode(b, &in)
	inodeXattrs(b[inodeXattrStart:], n.xattrs.inInode)
	return trees
}
