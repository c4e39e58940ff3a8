package ext4

import "encoding/binary"

const (
	jbd2Magic        = 0xC03B3998
	jbd2SuperblockV2 = 4
)

// journalSuperblock is the first block of an empty, clean internal JBD2
// journal as mke2fs writes it: s_start 0 means nothing to replay, the
// sequence starts at 1, one user (this filesystem), the UUID is the
// filesystem's. JBD2 fields are big-endian. The other journal blocks are
// zero.
func journalSuperblock(nblocks uint32, uuid [16]byte) []byte {
	b := make([]byte, blockSize)
	be := binary.BigEndian
	be.PutUint32(b[0x00:], jbd2Magic)
	be.PutUint32(b[0x04:], jbd2SuperblockV2)
	be.PutUint32(b[0x0C:], blockSize) // s_blocksize
	be.PutUint32(b[0x10:], nblocks)   // s_maxlen
	be.PutUint32(b[0x14:], 1)         // s_first
	be.PutUint32(b[0x18:], 1)         // s_sequence
	be.PutUint32(b[0x1C:], 0)         // s_start: clean
	copy(b[0x30:0x40], uuid[:])       // s_uuid
	be.PutUint32(b[0x40:], 1)         // s_nr_users
	return b
}

// encodeJournalInode writes inode 8: a regular file, mode 0600, owned by
// root, mapped by extents like any file.
func (p *plan) encodeJournalInode(b []byte, opts *Options) []treeNode {
	trees := buildExtents(b[0x28:0x28+60], p.journal.runs, p.journal.tree)
	putInode(b, &inodeFields{
		mode:    modeFile | 0o600,
		size:    uint64(p.geometry.journal) * blockSize,
		time:    opts.Time,
		links:   1,
		sectors: (uint64(p.geometry.journal) + uint64(len(trees))) * (blockSize / 512),
		flags:   flagExtents,
	})
	return trees
}
