package delta

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"

	"github.com/apt-ostree/apt-ostree-factory/ostree/gvariant"
)

// rope is a serialised value assembled from byte slices and file ranges, so
// that a superblock with inline parts is written without holding the parts
// in memory.
type rope struct {
	segs []segment
	n    uint64
}

type segment struct {
	b    []byte
	file string
	size int64
}

func (r *rope) add(b []byte) {
	r.segs = append(r.segs, segment{b: b})
	r.n += uint64(len(b))
}

func (r *rope) addFile(path string, size int64) {
	r.segs = append(r.segs, segment{file: path, size: size})
	r.n += uint64(size)
}

var zeros [8]byte

func (r *rope) pad(align uint64) {
	if k := (align - r.n%align) % align; k != 0 {
		r.add(zeros[:k])
	}
}

// writeTo writes the rope to every writer.
func (r *rope) writeTo(ws ...io.Writer) error {
	w := io.MultiWriter(ws...)
	buf := make([]byte, 256<<10)
	var pending []byte
	flush := func() error {
		if len(pending) == 0 {
			return nil
		}
		_, err := w.Write(pending)
		pending = pending[:0]
		return err
	}
	for _, s := range r.segs {
		if s.file == "" {
			if len(pending)+len(s.b) > cap(buf) {
				if err := flush(); err != nil {
					return err
				}
			}
			if len(s.b) > cap(buf) {
				if _, err := w.Write(s.b); err != nil {
					return err
				}
				continue
			}
			if pending == nil {
				pending = buf[:0]
			}
			pending = append(pending, s.b...)
			continue
		}
		if err := flush(); err != nil {
			return err
		}
		f, err := os.Open(s.file)
		if err != nil {
			return err
		}
		n, err := io.CopyBuffer(w, io.LimitReader(f, s.size), make([]byte, 256<<10))
		f.Close()
		if err != nil {
			return err
		}
		if n != s.size {
			return fmt.Errorf("%s: %d bytes, expected %d", s.file, n, s.size)
		}
	}
	return flush()
}

// bytes flattens a rope without file segments (tests).
func (r *rope) bytes() []byte {
	var out []byte
	for _, s := range r.segs {
		if s.file != "" {
			panic("rope with file segments")
		}
		out = append(out, s.b...)
	}
	return out
}

// superblockRope lays out (a{sv}tayay(a{sv}aya(say)sstayay)aya(uayttay)a(yaytt))
// following GVariant's normal form (§2.1): hdrs and fallbacks are the
// serialised part-header and fallback arrays, commit the to-commit object.
// timestampBE is the generation time already byte-swapped to big-endian.
func superblockRope(entries []superblockEntry, timestampBE uint64, from, to, commit, hdrs, fallbacks []byte) (*rope, error) {
	r := &rope{}
	// a{sv}: dict entries are 8-aligned ('v'), each one framed by its key end.
	var ends []uint64
	for _, e := range entries {
		r.pad(8)
		start := r.n
		if e.file == "" {
			b, err := gvariant.Encode(typeSVEntry, gvariant.DictEntry{Key: e.key, Value: e.value})
			if err != nil {
				return nil, fmt.Errorf("superblock metadata %q: %w", e.key, err)
			}
			r.add(b)
		} else {
			key := append([]byte(e.key), 0)
			r.add(key)
			r.pad(8)
			r.addFile(e.file, e.size) // the part file is exactly its (yay) value
			r.add([]byte("\x00(yay)"))
			r.add(appendOffset(nil, uint64(len(key)), offsetWidth(r.n-start, 1)))
		}
		ends = append(ends, r.n)
	}
	w := offsetWidth(r.n, len(ends))
	var offs []byte
	for _, e := range ends {
		offs = appendOffset(offs, e, w)
	}
	r.add(offs)

	var members []uint64 // end offsets of the variable members but the last
	members = append(members, r.n)
	r.pad(8)
	r.add(binary.LittleEndian.AppendUint64(nil, timestampBE))
	r.add(from)
	members = append(members, r.n)
	r.add(to)
	members = append(members, r.n)
	r.pad(8)
	r.add(commit)
	members = append(members, r.n)
	// recursive deltas: empty ay
	members = append(members, r.n)
	r.pad(8)
	r.add(hdrs)
	members = append(members, r.n)
	r.pad(8)
	r.add(fallbacks)
	w = offsetWidth(r.n, len(members))
	offs = nil
	for i := len(members) - 1; i >= 0; i-- {
		offs = appendOffset(offs, members[i], w)
	}
	r.add(offs)
	return r, nil
}
