package gvariant

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"unicode/utf8"
)

// ErrFormat reports bytes that are not a well-framed serialisation of the type.
var ErrFormat = errors.New("gvariant: malformed data")

// maxVariantDepth bounds variants nested inside variants.
const maxVariantDepth = 64

func formatErr(t *Type, format string, args ...any) error {
	return fmt.Errorf("%w for %q: %s", ErrFormat, t.sig, fmt.Sprintf(format, args...))
}

// Decode parses data as a value of type t. It accepts well-framed data only:
// elements must lie in order without overlap, padding must be zero, booleans
// 0 or 1 and strings valid UTF-8. Use IsNormal to also require normal form.
func Decode(t *Type, data []byte) (any, error) {
	d := decoder{}
	return d.value(t, data)
}

// DecodeString is Decode with a type string.
func DecodeString(sig string, data []byte) (any, error) {
	t, err := ParseType(sig)
	if err != nil {
		return nil, err
	}
	return Decode(t, data)
}

// IsNormal reports whether data is the normal-form serialisation of a value of type t.
func IsNormal(t *Type, data []byte) bool {
	v, err := Decode(t, data)
	if err != nil {
		return false
	}
	b, err := Encode(t, v)
	return err == nil && bytes.Equal(b, data)
}

type decoder struct {
	variantDepth int
}

func readOffset(b []byte) uint64 {
	var v uint64
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

func zero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func (d *decoder) value(t *Type, data []byte) (any, error) {
	if t.fixedSize != 0 && len(data) != t.fixedSize {
		return nil, formatErr(t, "size %d, want %d", len(data), t.fixedSize)
	}
	switch t.kind {
	case 'y':
		return data[0], nil
	case 'b':
		if data[0] > 1 {
			return nil, formatErr(t, "boolean byte %d", data[0])
		}
		return data[0] == 1, nil
	case 'n':
		return int16(binary.LittleEndian.Uint16(data)), nil
	case 'q':
		return binary.LittleEndian.Uint16(data), nil
	case 'i', 'h':
		return int32(binary.LittleEndian.Uint32(data)), nil
	case 'u':
		return binary.LittleEndian.Uint32(data), nil
	case 'x':
		return int64(binary.LittleEndian.Uint64(data)), nil
	case 't':
		return binary.LittleEndian.Uint64(data), nil
	case 'd':
		return math.Float64frombits(binary.LittleEndian.Uint64(data)), nil
	case 's', 'o', 'g':
		if len(data) == 0 || data[len(data)-1] != 0 {
			return nil, formatErr(t, "string not NUL-terminated")
		}
		s := data[:len(data)-1]
		if bytes.IndexByte(s, 0) >= 0 {
			return nil, formatErr(t, "string contains NUL")
		}
		if !utf8.Valid(s) {
			return nil, formatErr(t, "string is not valid UTF-8")
		}
		str := string(s)
		if t.kind != 's' {
			if err := checkString(t.kind, str); err != nil {
				return nil, formatErr(t, "%v", err)
			}
		}
		return str, nil
	case 'v':
		return d.variant(t, data)
	case 'm':
		return d.maybe(t, data)
	case 'a':
		return d.array(t, data)
	case '(':
		return d.tuple(t, data)
	case '{':
		vals, err := d.tuple(t, data)
		if err != nil {
			return nil, err
		}
		return DictEntry{Key: vals[0], Value: vals[1]}, nil
	}
	return nil, formatErr(t, "unsupported type")
}

func (d *decoder) variant(t *Type, data []byte) (any, error) {
	i := bytes.LastIndexByte(data, 0)
	if i < 0 {
		return nil, formatErr(t, "variant without type separator")
	}
	sig := string(data[i+1:])
	ct, err := ParseType(sig)
	if err != nil {
		return nil, formatErr(t, "variant type: %v", err)
	}
	if d.variantDepth >= maxVariantDepth {
		return nil, formatErr(t, "variants nested too deeply")
	}
	d.variantDepth++
	defer func() { d.variantDepth-- }()
	v, err := d.value(ct, data[:i])
	if err != nil {
		return nil, err
	}
	return Variant{Type: ct, Value: v}, nil
}

func (d *decoder) maybe(t *Type, data []byte) (any, error) {
	if len(data) == 0 {
		return nil, nil
	}
	if t.elem.fixedSize != 0 {
		return d.value(t.elem, data)
	}
	if data[len(data)-1] != 0 {
		return nil, formatErr(t, "maybe without trailing zero byte")
	}
	v, err := d.value(t.elem, data[:len(data)-1])
	if err != nil {
		return nil, err
	}
	if v == nil {
		return nil, formatErr(t, "nested nothing cannot be represented")
	}
	return v, nil
}

func (d *decoder) array(t *Type, data []byte) (any, error) {
	el := t.elem
	if el.kind == 'y' {
		return bytes.Clone(data), nil
	}
	if el.fixedSize != 0 {
		if len(data)%el.fixedSize != 0 {
			return nil, formatErr(t, "size %d not a multiple of element size %d", len(data), el.fixedSize)
		}
		n := len(data) / el.fixedSize
		out := make([]any, n)
		for i := range out {
			v, err := d.value(el, data[i*el.fixedSize:(i+1)*el.fixedSize])
			if err != nil {
				return nil, err
			}
			out[i] = v
		}
		return convertArray(t, out), nil
	}
	if len(data) == 0 {
		return convertArray(t, nil), nil
	}
	w := offsetSize(len(data))
	if len(data) < w {
		return nil, formatErr(t, "too short for its framing offset")
	}
	last := readOffset(data[len(data)-w:])
	if last > uint64(len(data)-w) {
		return nil, formatErr(t, "framing offset %d beyond size %d", last, len(data))
	}
	table := len(data) - int(last)
	if table%w != 0 {
		return nil, formatErr(t, "offset table of %d bytes is not a multiple of %d", table, w)
	}
	n := table / w
	out := make([]any, n)
	pos := 0
	body := int(last)
	for i := 0; i < n; i++ {
		end := readOffset(data[body+i*w : body+(i+1)*w])
		start := alignUp(pos, el.align)
		if start > body || end < uint64(start) || end > uint64(body) {
			return nil, formatErr(t, "element %d out of order or out of bounds", i)
		}
		if !zero(data[pos:start]) {
			return nil, formatErr(t, "non-zero padding")
		}
		v, err := d.value(el, data[start:end])
		if err != nil {
			return nil, err
		}
		out[i] = v
		pos = int(end)
	}
	if pos != body {
		return nil, formatErr(t, "junk after the last element")
	}
	return convertArray(t, out), nil
}

// convertArray gives arrays the typed Go representations the encoder accepts.
func convertArray(t *Type, vals []any) any {
	switch {
	case t.elem.kind == '{':
		out := make([]DictEntry, len(vals))
		for i, v := range vals {
			out[i] = v.(DictEntry)
		}
		return out
	case t.elem.kind == 's' || t.elem.kind == 'o' || t.elem.kind == 'g':
		out := make([]string, len(vals))
		for i, v := range vals {
			out[i] = v.(string)
		}
		return out
	case t.elem.sig == "ay":
		out := make([][]byte, len(vals))
		for i, v := range vals {
			out[i] = v.([]byte)
		}
		return out
	}
	if vals == nil {
		return []any{}
	}
	return vals
}

func (d *decoder) tuple(t *Type, data []byte) ([]any, error) {
	if len(t.fields) == 0 {
		if len(data) != 1 || data[0] != 0 {
			return nil, formatErr(t, "unit value must be one zero byte")
		}
		return []any{}, nil
	}
	nOff := 0
	last := len(t.fields) - 1
	for i, f := range t.fields {
		if f.fixedSize == 0 && i != last {
			nOff++
		}
	}
	w := 0
	if nOff > 0 {
		w = offsetSize(len(data))
	}
	if nOff*w > len(data) {
		return nil, formatErr(t, "too short for its framing offsets")
	}
	bodyEnd := len(data) - nOff*w
	out := make([]any, len(t.fields))
	pos, used := 0, 0
	for i, f := range t.fields {
		start := alignUp(pos, f.align)
		if start > bodyEnd {
			return nil, formatErr(t, "member %d beyond the end", i)
		}
		if !zero(data[pos:start]) {
			return nil, formatErr(t, "non-zero padding")
		}
		var end int
		switch {
		case f.fixedSize != 0:
			end = start + f.fixedSize
		case i == last:
			end = bodyEnd
		default:
			used++
			off := readOffset(data[len(data)-used*w : len(data)-(used-1)*w])
			if off > uint64(bodyEnd) {
				return nil, formatErr(t, "member %d offset beyond the body", i)
			}
			end = int(off)
		}
		if end < start || end > bodyEnd {
			return nil, formatErr(t, "member %d out of bounds", i)
		}
		v, err := d.value(f, data[start:end])
		if err != nil {
			return nil, err
		}
		out[i] = v
		pos = end
	}
	if t.fixedSize != 0 {
		if !zero(data[pos:]) {
			return nil, formatErr(t, "non-zero trailing padding")
		}
	} else if pos != bodyEnd {
		return nil, formatErr(t, "junk after the last member")
	}
	return out, nil
}
