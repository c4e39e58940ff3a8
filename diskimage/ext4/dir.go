package ext4

import "encoding/binary"

// Directory entry file types (incompat filetype).
const (
	ftFile    = 1
	ftDir     = 2
	ftSymlink = 7
)

// lostFoundBlocks is the size mke2fs gives lost+found, so e2fsck has room to
// reconnect inodes without allocating.
const lostFoundBlocks = 4

func fileType(k kind) uint8 {
	switch k {
	case kindDir:
		return ftDir
	case kindSymlink:
		return ftSymlink
	}
	return ftFile
}

// dirBlocks lays out directory d as linear ext4_dir_entry_2 records: ".",
// "..", then the entries in bytewise name order. A record never crosses a
// block; the last record of each block is stretched to the block end. With
// buf == nil it only counts the blocks; otherwise buf must hold that many
// blocks, zeroed. The same loop serves both, so the size used for the
// allocation always matches what is written.
func dirBlocks(d *Node, buf []byte) uint64 {
	le := binary.LittleEndian
	blk, off := 0, 0
	prev := -1 // offset of the previous record in buf
	put := func(ino uint32, ft uint8, name string) {
		size := pad4(8 + len(name))
		if off+size > blockSize {
			if buf != nil {
				le.PutUint16(buf[prev+4:], uint16(blockSize*(blk+1)-prev))
			}
			blk++
			off = 0
		}
		pos := blk*blockSize + off
		if buf != nil {
			le.PutUint32(buf[pos:], ino)
			le.PutUint16(buf[pos+4:], uint16(size))
			buf[pos+6] = uint8(len(name))
			buf[pos+7] = ft
			copy(buf[pos+8:], name)
		}
		prev = pos
		off += size
	}
	parent := uint32(rootIno)
	if d.parent != nil {
		parent = d.parent.ino
	}
	put(d.ino, ftDir, ".")
	put(parent, ftDir, "..")
	for _, name := range d.sortedNames() {
		c := d.children[name]
		put(c.ino, fileType(c.kind), name)
	}
	if buf != nil {
		le.PutUint16(buf[prev+4:], uint16(blockSize*(blk+1)-prev))
	}
	n := blk + 1
	total := n
	if d == d.fs.lostFound {
		total = max(n, lostFoundBlocks)
	}
	// Extra blocks are empty: one unused record spanning the block.
	for b := n; buf != nil && b < total; b++ {
		le.PutUint16(buf[b*blockSize+4:], blockSize)
	}
	return uint64(total)
}
