package delta

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/bits"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ulikunitz/xz"

	"github.com/apt-ostree/apt-ostree-factory/ostree"
	"github.com/apt-ostree/apt-ostree-factory/ostree/gvariant"
)

var (
	typeSuperblock = gvariant.MustParseType("(a{sv}tayay(a{sv}aya(say)sstayay)aya(uayttay)a(yaytt))")
	typePart       = gvariant.MustParseType("(yay)")
	typePayload    = gvariant.MustParseType("(a(uuu)aa(ayay)ayay)")
)

// Info is a decoded superblock.
type Info struct {
	// Metadata is the superblock's a{sv} as stored (user keys,
	// ostree.endianness, inline parts, commitmeta).
	Metadata   ostree.Metadata
	Endianness byte // 'l' or 'B' (0 when absent)
	Timestamp  time.Time
	From       *ostree.Checksum // nil from scratch
	To         ostree.Checksum
	Commit     []byte // the embedded to-commit object
	// CommitMeta is the to-commit's detached metadata carried in the
	// superblock (nil when absent), re-serialised.
	CommitMeta []byte
	Parts      []PartInfo
	Fallbacks  []FallbackInfo
}

// PartInfo is a part header, plus what decoding the part found.
type PartInfo struct {
	Version                          uint32
	Checksum                         ostree.Checksum
	CompressedSize, UncompressedSize uint64
	Objects                          []ostree.ObjectName
	Inline                           bool
	// Decoded reports that the part's data was available (inline, or a
	// file next to the superblock) and was decoded; the fields below are
	// then set.
	Decoded     bool
	Compression byte // 'x' or 0
	// Stored: an xz part whose data is not compressed (uncompressed
	// LZMA2 chunks only), as written for already-compressed files.
	Stored    bool
	Modes     int // mode table entries
	XattrSets int // xattr table entries
	BlobSize  int
	Ops       []byte // opcode letters in order
	// Verified counts objects whose bytes hash to their name: written by
	// open-splice-and-close, or patched (bspatch) from a source object
	// when ShowSources could read it.
	Verified int
	// Patched counts objects written by bspatch, verified or not.
	Patched int
}

// FallbackInfo is an object clients fetch individually.
type FallbackInfo struct {
	Object                           ostree.ObjectName
	CompressedSize, UncompressedSize uint64
}

// Show reads a superblock file, a bundle, or a delta directory (holding
// "superblock"), decodes it and every part it can find (inline, or numbered
// files next to the superblock), checks part checksums and replays their
// operations, verifying each object written with open-splice-and-close.
func Show(path string) (*Info, error) {
	return ShowSources(path, nil)
}

// ShowSources is Show that also verifies patched objects, reading their
// source objects' data with source (e.g. from the repository holding the
// from-commit).
func ShowSources(path string, source func(ostree.Checksum) ([]byte, error)) (*Info, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, "superblock")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	info, inline, err := decodeSuperblock(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	dir := filepath.Dir(path)
	for i := range info.Parts {
		p := &info.Parts[i]
		raw, ok := inline[i]
		if ok {
			p.Inline = true
		} else {
			raw, err = os.ReadFile(filepath.Join(dir, strconv.Itoa(i)))
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, err
			}
			if got := ostree.Checksum(sha256.Sum256(raw)); got != p.Checksum {
				return nil, fmt.Errorf("part %d: checksum %s, header says %s", i, got, p.Checksum)
			}
			if uint64(len(raw)) != p.CompressedSize {
				return nil, fmt.Errorf("part %d: %d bytes, header says %d", i, len(raw), p.CompressedSize)
			}
		}
		if err := decodePart(p, raw, source); err != nil {
			return nil, fmt.Errorf("part %d: %w", i, err)
		}
	}
	return info, nil
}

func decodeSuperblock(data []byte) (*Info, map[int][]byte, error) {
	v, err := gvariant.Decode(typeSuperblock, data)
	if err != nil {
		return nil, nil, err
	}
	f := v.([]any)
	info := &Info{}
	meta := f[0].([]gvariant.DictEntry)
	for _, e := range meta {
		info.Metadata = append(info.Metadata, ostree.MetadataEntry{Key: e.Key.(string), Value: e.Value.(gvariant.Variant)})
	}
	if v, ok := info.Metadata.Get("ostree.endianness"); ok {
		if b, ok := v.Value.(byte); ok {
			info.Endianness = b
		}
	}
	swap := info.Endianness == 'B'
	u32 := func(x uint32) uint32 {
		if swap {
			return bits.ReverseBytes32(x)
		}
		return x
	}
	u64 := func(x uint64) uint64 {
		if swap {
			return bits.ReverseBytes64(x)
		}
		return x
	}
	info.Timestamp = time.Unix(int64(bits.ReverseBytes64(f[1].(uint64))), 0).UTC()
	if fb := f[2].([]byte); len(fb) != 0 {
		if len(fb) != 32 {
			return nil, nil, fmt.Errorf("from checksum of %d bytes", len(fb))
		}
		var c ostree.Checksum
		copy(c[:], fb)
		info.From = &c
	}
	tb := f[3].([]byte)
	if len(tb) != 32 {
		return nil, nil, fmt.Errorf("to checksum of %d bytes", len(tb))
	}
	copy(info.To[:], tb)
	info.Commit, err = gvariant.Encode(gvariant.MustParseType("(a{sv}aya(say)sstayay)"), f[4])
	if err != nil {
		return nil, nil, err
	}
	if sha256.Sum256(info.Commit) != info.To {
		return nil, nil, fmt.Errorf("embedded commit does not hash to %s", info.To)
	}
	if len(f[5].([]byte)) != 0 {
		return nil, nil, fmt.Errorf("non-empty recursive delta list")
	}
	for _, h := range f[6].([]any) {
		t := h.([]any)
		p := PartInfo{Version: u32(t[0].(uint32)), CompressedSize: u64(t[2].(uint64)), UncompressedSize: u64(t[3].(uint64))}
		if cs := t[1].([]byte); len(cs) == 32 {
			copy(p.Checksum[:], cs)
		} else {
			return nil, nil, fmt.Errorf("part checksum of %d bytes", len(cs))
		}
		objs := t[4].([]byte)
		if len(objs)%33 != 0 {
			return nil, nil, fmt.Errorf("part object list of %d bytes", len(objs))
		}
		for i := 0; i < len(objs); i += 33 {
			var n ostree.ObjectName
			n.Type = ostree.ObjectType(objs[i])
			copy(n.Checksum[:], objs[i+1:i+33])
			p.Objects = append(p.Objects, n)
		}
		info.Parts = append(info.Parts, p)
	}
	for _, fbv := range f[7].([]any) {
		t := fbv.([]any)
		cs := t[1].([]byte)
		if len(cs) != 32 {
			return nil, nil, fmt.Errorf("fallback checksum of %d bytes", len(cs))
		}
		fi := FallbackInfo{CompressedSize: u64(t[2].(uint64)), UncompressedSize: u64(t[3].(uint64))}
		fi.Object.Type = ostree.ObjectType(t[0].(byte))
		copy(fi.Object.Checksum[:], cs)
		info.Fallbacks = append(info.Fallbacks, fi)
	}
	rel := relDir(info.From, info.To)
	inline := map[int][]byte{}
	for _, e := range info.Metadata {
		switch {
		case e.Key == rel+"/commitmeta":
			info.CommitMeta, err = gvariant.Encode(e.Value.Type, e.Value.Value)
			if err != nil {
				return nil, nil, err
			}
		case strings.HasPrefix(e.Key, rel+"/"):
			i, err := strconv.Atoi(strings.TrimPrefix(e.Key, rel+"/"))
			if err != nil || e.Value.Type.String() != "(yay)" {
				continue
			}
			inline[i], err = gvariant.Encode(typePart, e.Value.Value)
			if err != nil {
				return nil, nil, err
			}
		}
	}
	return info, inline, nil
}

func decodePart(p *PartInfo, raw []byte, source func(ostree.Checksum) ([]byte, error)) error {
	if len(raw) == 0 {
		return fmt.Errorf("empty part")
	}
	p.Compression = raw[0]
	var payload []byte
	switch raw[0] {
	case 0:
		payload = raw[1:]
	case 'x':
		var err error
		if payload, err = unxz(raw[1:]); err != nil {
			return err
		}
		p.Stored = len(raw)-1 > len(payload)
	default:
		return fmt.Errorf("unknown compression %q", raw[0])
	}
	v, err := gvariant.Decode(typePayload, payload)
	if err != nil {
		return err
	}
	f := v.([]any)
	modes := f[0].([]any)
	xattrs := f[1].([]any)
	blob := f[2].([]byte)
	ops := f[3].([]byte)
	p.Modes, p.XattrSets, p.BlobSize = len(modes), len(xattrs), len(blob)
	p.Decoded = true

	next := 0 // index of the object the next operation produces
	header := func(obj ostree.ObjectName, mi, xi uint64) (ostree.FileHeader, error) {
		if mi >= uint64(len(modes)) || xi >= uint64(len(xattrs)) {
			return ostree.FileHeader{}, fmt.Errorf("object %s: mode/xattr index out of range", obj)
		}
		m := modes[mi].([]any)
		h := ostree.FileHeader{FileMeta: ostree.FileMeta{
			UID: bits.ReverseBytes32(m[0].(uint32)), GID: bits.ReverseBytes32(m[1].(uint32)), Mode: bits.ReverseBytes32(m[2].(uint32)),
		}}
		for _, x := range xattrs[xi].([]any) {
			pair := x.([]any)
			name := pair[0].([]byte)
			if len(name) == 0 || name[len(name)-1] != 0 {
				return h, fmt.Errorf("object %s: xattr name without NUL", obj)
			}
			h.Xattrs = append(h.Xattrs, ostree.Xattr{Name: string(name[:len(name)-1]), Value: pair[1].([]byte)})
		}
		return h, nil
	}
	// An object being written by open ... close.
	var (
		open      bool
		openHdr   ostree.FileHeader
		readSrc   *ostree.Checksum
		openPatch []byte
	)
	arg := func() (uint64, error) {
		x, n := binary.Uvarint(ops)
		if n <= 0 {
			return 0, fmt.Errorf("truncated opcode argument")
		}
		ops = ops[n:]
		return x, nil
	}
	slice := func(off, n uint64) ([]byte, error) {
		if off > uint64(len(blob)) || n > uint64(len(blob))-off {
			return nil, fmt.Errorf("blob range %d+%d beyond %d bytes", off, n, len(blob))
		}
		return blob[off : off+n], nil
	}
	for len(ops) > 0 {
		op := ops[0]
		ops = ops[1:]
		p.Ops = append(p.Ops, op)
		if next >= len(p.Objects) && op != opUnsetReadSource {
			return fmt.Errorf("operation %q after the last object", op)
		}
		switch op {
		case opOpenSpliceAndClose:
			obj := p.Objects[next]
			next++
			if obj.Type.IsMeta() {
				n, err := arg()
				if err != nil {
					return err
				}
				off, err := arg()
				if err != nil {
					return err
				}
				b, err := slice(off, n)
				if err != nil {
					return err
				}
				if sha256.Sum256(b) != obj.Checksum {
					return fmt.Errorf("object %s: payload hashes to %x", obj, sha256.Sum256(b))
				}
				p.Verified++
				continue
			}
			var a [4]uint64
			for i := range a {
				if a[i], err = arg(); err != nil {
					return err
				}
			}
			h, err := header(obj, a[0], a[1])
			if err != nil {
				return err
			}
			b, err := slice(a[3], a[2])
			if err != nil {
				return err
			}
			var content io.Reader = bytes.NewReader(nil)
			if h.Mode&ostree.ModeTypeMask == ostree.ModeSymlink {
				h.Symlink = string(b)
			} else {
				h.Size = uint64(len(b))
				content = bytes.NewReader(b)
			}
			got, err := ostree.ContentChecksum(h, content)
			if err != nil {
				return fmt.Errorf("object %s: %w", obj, err)
			}
			if got != obj.Checksum {
				return fmt.Errorf("object %s: content hashes to %s", obj, got)
			}
			p.Verified++
		case opOpen:
			var a [3]uint64
			for i := range a {
				if a[i], err = arg(); err != nil {
					return err
				}
			}
			if open {
				return fmt.Errorf("open while object %s is open", p.Objects[next])
			}
			if openHdr, err = header(p.Objects[next], a[0], a[1]); err != nil {
				return err
			}
			openHdr.Size = a[2]
			open, openPatch = true, nil
		case opWrite:
			for i := 0; i < 2; i++ {
				if _, err := arg(); err != nil {
					return err
				}
			}
		case opBspatch:
			off, err := arg()
			if err != nil {
				return err
			}
			n, err := arg()
			if err != nil {
				return err
			}
			if !open || readSrc == nil {
				return fmt.Errorf("bspatch without an open object and a read source")
			}
			if openPatch, err = slice(off, n); err != nil {
				return err
			}
		case opSetReadSource:
			off, err := arg()
			if err != nil {
				return err
			}
			b, err := slice(off, 32)
			if err != nil {
				return err
			}
			readSrc = new(ostree.Checksum)
			copy(readSrc[:], b)
		case opUnsetReadSource:
			readSrc = nil
		case opClose:
			obj := p.Objects[next]
			next++
			if openPatch != nil {
				p.Patched++
				if source != nil {
					old, err := source(*readSrc)
					if err != nil {
						return fmt.Errorf("object %s: patch source %s: %w", obj, readSrc, err)
					}
					b, ok := bspatch(old, openPatch, int(openHdr.Size))
					if !ok {
						return fmt.Errorf("object %s: the patch does not apply to %s", obj, readSrc)
					}
					got, err := ostree.ContentChecksum(openHdr, bytes.NewReader(b))
					if err != nil {
						return fmt.Errorf("object %s: %w", obj, err)
					}
					if got != obj.Checksum {
						return fmt.Errorf("object %s: patched content hashes to %s", obj, got)
					}
					p.Verified++
				}
			}
			open, openPatch, readSrc = false, nil, nil
		default:
			return fmt.Errorf("unknown opcode %q", op)
		}
	}
	if next != len(p.Objects) {
		return fmt.Errorf("operations produce %d objects, header lists %d", next, len(p.Objects))
	}
	return nil
}

// unxz decompresses a part: with the xz tool when there is one (parts of
// x86 code use its x86 filter, which the Go reader lacks), else in Go.
func unxz(b []byte) ([]byte, error) {
	if xzCommand != "" {
		cmd := exec.Command(xzCommand, "-d", "-c", "-q")
		cmd.Stdin = bytes.NewReader(b)
		var stderr limitedBuffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("xz -d: %v: %s", err, strings.TrimSpace(stderr.String()))
		}
		return out, nil
	}
	r, err := xz.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	out, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("xz: %w (parts with filters such as x86 need the xz tool)", err)
	}
	return out, nil
}
