package gvariant

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"
)

// Variant is a value of type "v": a value together with its own type.
type Variant struct {
	Type  *Type
	Value any
}

// NewVariant builds a Variant from a type string and value; it panics on an
// invalid type string, so use it with constant type strings.
func NewVariant(sig string, v any) Variant {
	return Variant{Type: MustParseType(sig), Value: v}
}

// DictEntry is a value of a dict-entry type "{kv}".
type DictEntry struct {
	Key   any
	Value any
}

// Encode serialises v as type t in normal form.
func Encode(t *Type, v any) ([]byte, error) {
	return AppendEncode(nil, t, v)
}

// AppendEncode appends the normal-form serialisation of v to buf. buf's
// length must be a multiple of t's alignment (zero is).
func AppendEncode(buf []byte, t *Type, v any) ([]byte, error) {
	if len(buf)%t.align != 0 {
		return buf, fmt.Errorf("gvariant: AppendEncode at misaligned offset %d for %s", len(buf), t.sig)
	}
	e := encoder{buf: buf}
	if err := e.value(t, v); err != nil {
		return buf, err
	}
	return e.buf, nil
}

// MustEncode is Encode for values whose shape the program guarantees.
func MustEncode(t *Type, v any) []byte {
	b, err := Encode(t, v)
	if err != nil {
		panic(err)
	}
	return b
}

type encoder struct {
	buf []byte
}

func (e *encoder) pad(align int) {
	for len(e.buf)%align != 0 {
		e.buf = append(e.buf, 0)
	}
}

func typeErr(t *Type, v any) error {
	return fmt.Errorf("gvariant: cannot encode %T as %q", v, t.sig)
}

func (e *encoder) value(t *Type, v any) error {
	e.pad(t.align)
	switch t.kind {
	case 'y':
		x, ok := v.(byte)
		if !ok {
			return typeErr(t, v)
		}
		e.buf = append(e.buf, x)
	case 'b':
		x, ok := v.(bool)
		if !ok {
			return typeErr(t, v)
		}
		if x {
			e.buf = append(e.buf, 1)
		} else {
			e.buf = append(e.buf, 0)
		}
	case 'n':
		x, ok := v.(int16)
		if !ok {
			return typeErr(t, v)
		}
		e.buf = binary.LittleEndian.AppendUint16(e.buf, uint16(x))
	case 'q':
		x, ok := v.(uint16)
		if !ok {
			return typeErr(t, v)
		}
		e.buf = binary.LittleEndian.AppendUint16(e.buf, x)
	case 'i', 'h':
		x, ok := v.(int32)
		if !ok {
			return typeErr(t, v)
		}
		e.buf = binary.LittleEndian.AppendUint32(e.buf, uint32(x))
	case 'u':
		x, ok := v.(uint32)
		if !ok {
			return typeErr(t, v)
		}
		e.buf = binary.LittleEndian.AppendUint32(e.buf, x)
	case 'x':
		x, ok := v.(int64)
		if !ok {
			return typeErr(t, v)
		}
		e.buf = binary.LittleEndian.AppendUint64(e.buf, uint64(x))
	case 't':
		x, ok := v.(uint64)
		if !ok {
			return typeErr(t, v)
		}
		e.buf = binary.LittleEndian.AppendUint64(e.buf, x)
	case 'd':
		x, ok := v.(float64)
		if !ok {
			return typeErr(t, v)
		}
		e.buf = binary.LittleEndian.AppendUint64(e.buf, math.Float64bits(x))
	case 's', 'o', 'g':
		x, ok := v.(string)
		if !ok {
			return typeErr(t, v)
		}
		if err := checkString(t.kind, x); err != nil {
			return err
		}
		e.buf = append(e.buf, x...)
		e.buf = append(e.buf, 0)
	case 'v':
		x, ok := v.(Variant)
		if !ok || x.Type == nil {
			return typeErr(t, v)
		}
		if err := e.value(x.Type, x.Value); err != nil {
			return err
		}
		e.buf = append(e.buf, 0)
		e.buf = append(e.buf, x.Type.sig...)
	case 'm':
		if v == nil {
			return nil
		}
		if err := e.value(t.elem, v); err != nil {
			return err
		}
		if t.elem.fixedSize == 0 {
			e.buf = append(e.buf, 0)
		}
	case 'a':
		return e.array(t, v)
	case '(':
		x, ok := v.([]any)
		if !ok || len(x) != len(t.fields) {
			return typeErr(t, v)
		}
		return e.tuple(t, x)
	case '{':
		x, ok := v.(DictEntry)
		if !ok {
			return typeErr(t, v)
		}
		return e.tuple(t, []any{x.Key, x.Value})
	default:
		return typeErr(t, v)
	}
	return nil
}

func checkString(k Kind, s string) error {
	if strings.IndexByte(s, 0) >= 0 {
		return fmt.Errorf("gvariant: string contains a NUL byte: %q", s)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("gvariant: string is not valid UTF-8: %q", s)
	}
	switch k {
	case 'g':
		if s != "" {
			if _, err := ParseType("(" + s + ")"); err != nil {
				return fmt.Errorf("gvariant: invalid signature %q", s)
			}
		}
	case 'o':
		if !validObjectPath(s) {
			return fmt.Errorf("gvariant: invalid object path %q", s)
		}
	}
	return nil
}

func validObjectPath(s string) bool {
	if s == "/" {
		return true
	}
	if len(s) < 2 || s[0] != '/' || s[len(s)-1] == '/' {
		return false
	}
	for _, part := range strings.Split(s[1:], "/") {
		if part == "" {
			return false
		}
		for i := 0; i < len(part); i++ {
			c := part[i]
			if !(c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
				return false
			}
		}
	}
	return true
}

// elements turns the accepted Go representations of an array into a length
// and an element accessor.
func arrayElems(t *Type, v any) (int, func(int) any, bool) {
	switch x := v.(type) {
	case []any:
		return len(x), func(i int) any { return x[i] }, true
	case []byte:
		if t.elem.kind == 'y' {
			return len(x), func(i int) any { return x[i] }, true
		}
	case []string:
		if k := t.elem.kind; k == 's' || k == 'o' || k == 'g' {
			return len(x), func(i int) any { return x[i] }, true
		}
	case [][]byte:
		if t.elem.sig == "ay" {
			return len(x), func(i int) any { return x[i] }, true
		}
	case []DictEntry:
		if t.elem.kind == '{' {
			return len(x), func(i int) any { return x[i] }, true
		}
	case nil:
		return 0, nil, true
	}
	return 0, nil, false
}

func (e *encoder) array(t *Type, v any) error {
	if b, ok := v.([]byte); ok && t.elem.kind == 'y' {
		e.buf = append(e.buf, b...)
		return nil
	}
	n, at, ok := arrayElems(t, v)
	if !ok {
		return typeErr(t, v)
	}
	if t.elem.fixedSize != 0 {
		for i := 0; i < n; i++ {
			if err := e.value(t.elem, at(i)); err != nil {
				return err
			}
		}
		return nil
	}
	start := len(e.buf)
	ends := make([]int, n)
	for i := 0; i < n; i++ {
		if err := e.value(t.elem, at(i)); err != nil {
			return err
		}
		ends[i] = len(e.buf) - start
	}
	e.offsets(start, ends)
	return nil
}

func (e *encoder) tuple(t *Type, vals []any) error {
	start := len(e.buf)
	if len(t.fields) == 0 {
		e.buf = append(e.buf, 0)
		return nil
	}
	var ends []int
	last := len(t.fields) - 1
	for i, f := range t.fields {
		if err := e.value(f, vals[i]); err != nil {
			return err
		}
		if f.fixedSize == 0 && i != last {
			ends = append(ends, len(e.buf)-start)
		}
	}
	if t.fixedSize != 0 {
		for len(e.buf)-start < t.fixedSize {
			e.buf = append(e.buf, 0)
		}
		return nil
	}
	// Tuples store member offsets last-member-first.
	for i, j := 0, len(ends)-1; i < j; i, j = i+1, j-1 {
		ends[i], ends[j] = ends[j], ends[i]
	}
	e.offsets(start, ends)
	return nil
}

// offsets appends framing offsets with the smallest width that can address
// the whole container including the offsets themselves.
func (e *encoder) offsets(start int, ends []int) {
	if len(ends) == 0 {
		return
	}
	body := len(e.buf) - start
	w := 8
	switch {
	case body+len(ends) <= 0xff:
		w = 1
	case body+2*len(ends) <= 0xffff:
		w = 2
	case uint64(body)+4*uint64(len(ends)) <= 0xffffffff:
		w = 4
	}
	for _, off := range ends {
		e.buf = appendOffset(e.buf, uint64(off), w)
	}
}

func appendOffset(b []byte, v uint64, w int) []byte {
	for i := 0; i < w; i++ {
		b = append(b, byte(v>>(8*i)))
	}
	return b
}
