package ext4

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
)

const (
	xattrMagic      = 0xEA020000
	xattrEntrySize  = 16 // struct ext4_xattr_entry without the name
	xattrBlockHdr   = 32 // struct ext4_xattr_header
	inodeXattrStart = 128 + extraIsize
	inodeXattrSpace = inodeSize - inodeXattrStart // magic + entries + values
)

// Name prefixes and the e_name_index that replaces them on disk. The two ACL
// names are whole names (the stored suffix is empty) and must be matched
// before the generic "system." prefix.
var xattrPrefixes = []struct {
	prefix string
	index  uint8
	whole  bool
}{
	{"system.posix_acl_access", 2, true},
	{"system.posix_acl_default", 3, true},
	{"user.", 1, false},
	{"trusted.", 4, false},
	{"security.", 6, false},
	{"system.", 7, false},
}

// xent is one xattr as stored: name index, suffix and the on-disk value.
type xent struct {
	index uint8
	name  string
	value []byte
}

func (e *xent) entryLen() int { return xattrEntrySize + pad4(len(e.name)) }
func (e *xent) valueLen() int { return pad4(len(e.value)) }

// xattrPlacement is where a node's xattrs go: the inode body, an external
// block, or both when neither alone can hold them.
type xattrPlacement struct {
	inInode []xent
	inBlock []xent
}

func pad4(n int) int { return (n + 3) &^ 3 }

// placeXattrs validates and encodes xs, sorted the way the kernel searches
// sorted xattr blocks (name index, name length, name), and decides where they
// are stored: in the inode body if all fit, else all in one block, else
// greedily in the inode and the rest in the block.
func placeXattrs(xs []Xattr) (xattrPlacement, error) {
	if len(xs) == 0 {
		return xattrPlacement{}, nil
	}
	ents := make([]xent, 0, len(xs))
	for _, x := range xs {
		e, err := encodeXattr(x)
		if err != nil {
			return xattrPlacement{}, err
		}
		ents = append(ents, e)
	}
	sort.Slice(ents, func(i, j int) bool { return xentLess(&ents[i], &ents[j]) })
	for i := 1; i < len(ents); i++ {
		if !xentLess(&ents[i-1], &ents[i]) {
			return xattrPlacement{}, fmt.Errorf("duplicate xattr %q", ents[i].fullName())
		}
	}
	inodeFree := inodeXattrSpace - 4 - 4 // magic, end marker
	blockFree := blockSize - xattrBlockHdr - 4
	total := 0
	for i := range ents {
		total += ents[i].entryLen() + ents[i].valueLen()
	}
	switch {
	case total <= inodeFree:
		return xattrPlacement{inInode: ents}, nil
	case total <= blockFree:
		return xattrPlacement{inBlock: ents}, nil
	}
	var p xattrPlacement
	for _, e := range ents {
		if n := e.entryLen() + e.valueLen(); n <= inodeFree {
			p.inInode = append(p.inInode, e)
			inodeFree -= n
		} else if n <= blockFree {
			p.inBlock = append(p.inBlock, e)
			blockFree -= n
		} else {
			return xattrPlacement{}, fmt.Errorf("xattrs need more than the inode and one %d-byte block", blockSize)
		}
	}
	return p, nil
}

func xentLess(a, b *xent) bool {
	if a.index != b.index {
		return a.index < b.index
	}
	if len(a.name) != len(b.name) {
		return len(a.name) < len(b.name)
	}
	return a.name < b.name
}

func (e *xent) fullName() string {
	for _, p := range xattrPrefixes {
		if p.index == e.index {
			return p.prefix + e.name
		}
	}
	return e.name
}

func encodeXattr(x Xattr) (xent, error) {
	for _, p := range xattrPrefixes {
		if p.whole {
			if x.Name != p.prefix {
				continue
			}
			v, err := ext4ACL(x.Value)
			if err != nil {
				return xent{}, fmt.Errorf("xattr %s: %w", x.Name, err)
			}
			return xent{index: p.index, value: v}, nil
		}
		if len(x.Name) < len(p.prefix) || x.Name[:len(p.prefix)] != p.prefix {
			continue
		}
		suffix := x.Name[len(p.prefix):]
		if suffix == "" || len(suffix) > 255 {
			return xent{}, fmt.Errorf("xattr %q: name after the prefix must be 1..255 bytes", x.Name)
		}
		return xent{index: p.index, name: suffix, value: bytes.Clone(x.Value)}, nil
	}
	return xent{}, fmt.Errorf("xattr %q: unsupported namespace (want user., trusted., security. or system.)", x.Name)
}

// POSIX ACL tags.
const (
	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclGroup    = 0x08
	aclMask     = 0x10
	aclOther    = 0x20
)

// ext4ACL converts a POSIX ACL from the getxattr(2) format (version 2,
// 8-byte entries) to ext4's on-disk format (version 1, 4-byte entries for
// the entries without an id). The kernel does this conversion on setxattr,
// so writing the xattr format verbatim would be misread. A value already in
// ext4 format (version 1) is kept.
func ext4ACL(v []byte) ([]byte, error) {
	if len(v) < 4 {
		return nil, errors.New("ACL too short")
	}
	switch binary.LittleEndian.Uint32(v) {
	case 1:
		return bytes.Clone(v), nil
	case 2:
	default:
		return nil, fmt.Errorf("unknown ACL version %d", binary.LittleEndian.Uint32(v))
	}
	if (len(v)-4)%8 != 0 {
		return nil, errors.New("ACL size is not 4 + 8*n")
	}
	out := binary.LittleEndian.AppendUint32(nil, 1)
	for p := 4; p < len(v); p += 8 {
		tag := binary.LittleEndian.Uint16(v[p:])
		perm := binary.LittleEndian.Uint16(v[p+2:])
		out = binary.LittleEndian.AppendUint16(out, tag)
		out = binary.LittleEndian.AppendUint16(out, perm)
		switch tag {
		case aclUserObj, aclGroupObj, aclMask, aclOther:
		case aclUser, aclGroup:
			out = append(out, v[p+4:p+8]...)
		default:
			return nil, fmt.Errorf("unknown ACL tag %#x", tag)
		}
	}
	return out, nil
}

// xattrHash is ext4_xattr_hash_entry: the name bytes (unsigned, as current
// kernels and e2fsprogs compute it; identical to the old signed variant for
// ASCII names) then the value as little-endian 32-bit words, zero padded.
func xattrHash(e *xent) uint32 {
	var h uint32
	for i := 0; i < len(e.name); i++ {
		h = h<<5 ^ h>>27 ^ uint32(e.name[i])
	}
	for p := 0; p < len(e.value); p += 4 {
		var w [4]byte
		copy(w[:], e.value[p:])
		h = h<<16 ^ h>>16 ^ binary.LittleEndian.Uint32(w[:])
	}
	return h
}

// writeXattrs stores ents into region: entries from entryOff, values packed
// down from the region's end, value offsets relative to valueBase (the first
// entry for the inode body, the block start for a block). It returns the
// entries' hashes.
func writeXattrs(region []byte, entryOff, valueBase int, ents []xent) []uint32 {
	hashes := make([]uint32, len(ents))
	vend := len(region)
	p := entryOff
	for i := range ents {
		e := &ents[i]
		voff := 0
		if len(e.value) > 0 {
			vend -= e.valueLen()
			copy(region[vend:], e.value)
			voff = vend - valueBase
		}
		hashes[i] = xattrHash(e)
		region[p] = uint8(len(e.name))
		region[p+1] = e.index
		binary.LittleEndian.PutUint16(region[p+2:], uint16(voff))
		binary.LittleEndian.PutUint32(region[p+4:], 0) // e_value_inum
		binary.LittleEndian.PutUint32(region[p+8:], uint32(len(e.value)))
		binary.LittleEndian.PutUint32(region[p+12:], hashes[i])
		copy(region[p+16:], e.name)
		p += e.entryLen()
	}
	// The 4 bytes after the last entry stay zero: the end marker.
	return hashes
}

// inodeXattrs fills the in-inode xattr area (the inode bytes after
// i_extra_isize).
func inodeXattrs(area []byte, ents []xent) {
	if len(ents) == 0 {
		return
	}
	binary.LittleEndian.PutUint32(area, xattrMagic)
	// In the inode body value offsets count from the first entry.
	writeXattrs(area, 4, 4, ents)
}

// xattrBlock builds an external xattr block referenced by one inode.
func xattrBlock(ents []xent) []byte {
	b := make([]byte, blockSize)
	binary.LittleEndian.PutUint32(b[0:], xattrMagic)
	binary.LittleEndian.PutUint32(b[4:], 1) // h_refcount
	binary.LittleEndian.PutUint32(b[8:], 1) // h_blocks
	hashes := writeXattrs(b, xattrBlockHdr, 0, ents)
	// h_hash as ext4_xattr_rehash: 0 if any entry hash is 0.
	var h uint32
	for _, eh := range hashes {
		if eh == 0 {
			h = 0
			break
		}
		h = h<<16 ^ h>>16 ^ eh
	}
	binary.LittleEndian.PutUint32(b[12:], h)
	return b
}
