// Package gvariant encodes and decodes GLib's GVariant serialisation format
// (version 1.0) in normal form, for the types OSTree stores on disk.
//
// Values are plain Go values, chosen by the type string:
//
//	y byte   b bool   n int16  q uint16  i, h int32  u uint32
//	x int64  t uint64 d float64          s, o, g string
//	v Variant            ay []byte       as []string      aay [][]byte
//	a{..} []DictEntry    other arrays []any
//	(..) []any (a tuple) {..} DictEntry
//
// Integers are serialised little-endian as GVariant specifies; OSTree stores
// several of its integers big-endian inside GVariants, and callers swap those
// themselves (see the ostree package).
//
// Decode is strict: it accepts only well-framed input, and IsNormal tells
// whether bytes are in normal form (the form OSTree requires for metadata).
// Malformed input yields an error, never a panic, and allocation stays
// proportional to the input size.
package gvariant

import (
	"errors"
	"fmt"
)

// Kind is the leading character of a type string.
type Kind byte

// Type is a parsed GVariant type string.
type Type struct {
	kind   Kind
	elem   *Type   // arrays and maybes
	fields []*Type // tuples and dict entries
	sig    string

	align     int // 1, 2, 4 or 8
	fixedSize int // 0 when variable-size
}

// maxTypeDepth bounds nesting, as GLib does, so hostile type strings inside
// variants cannot exhaust the stack.
const maxTypeDepth = 64

// ErrType reports an invalid or unsupported type string.
var ErrType = errors.New("gvariant: invalid type string")

// ParseType parses a single complete type string such as "(a{sv}aya(say)sstayay)".
func ParseType(sig string) (*Type, error) {
	t, rest, err := parseType(sig, 0)
	if err != nil {
		return nil, err
	}
	if rest != "" {
		return nil, fmt.Errorf("%w %q: trailing %q", ErrType, sig, rest)
	}
	return t, nil
}

// MustParseType is ParseType for type strings that are constants of the program.
func MustParseType(sig string) *Type {
	t, err := ParseType(sig)
	if err != nil {
		panic(err)
	}
	return t
}

func parseType(s string, depth int) (*Type, string, error) {
	if depth > maxTypeDepth {
		return nil, "", fmt.Errorf("%w: nested too deeply", ErrType)
	}
	if s == "" {
		return nil, "", fmt.Errorf("%w: unexpected end", ErrType)
	}
	c := s[0]
	switch c {
	case 'y', 'b':
		return basic(c, 1, 1), s[1:], nil
	case 'n', 'q':
		return basic(c, 2, 2), s[1:], nil
	case 'i', 'u', 'h':
		return basic(c, 4, 4), s[1:], nil
	case 'x', 't', 'd':
		return basic(c, 8, 8), s[1:], nil
	case 's', 'o', 'g':
		return &Type{kind: Kind(c), sig: s[:1], align: 1}, s[1:], nil
	case 'v':
		return &Type{kind: 'v', sig: "v", align: 8}, s[1:], nil
	case 'a', 'm':
		elem, rest, err := parseType(s[1:], depth+1)
		if err != nil {
			return nil, "", err
		}
		t := &Type{kind: Kind(c), elem: elem, sig: string(c) + elem.sig, align: elem.align}
		return t, rest, nil
	case '(':
		rest := s[1:]
		t := &Type{kind: '(', align: 1}
		for {
			if rest == "" {
				return nil, "", fmt.Errorf("%w: unterminated tuple", ErrType)
			}
			if rest[0] == ')' {
				rest = rest[1:]
				break
			}
			f, r, err := parseType(rest, depth+1)
			if err != nil {
				return nil, "", err
			}
			t.fields = append(t.fields, f)
			rest = r
		}
		t.sig = s[:len(s)-len(rest)]
		layoutStruct(t)
		return t, rest, nil
	case '{':
		k, rest, err := parseType(s[1:], depth+1)
		if err != nil {
			return nil, "", err
		}
		if k.kind == 'v' || k.kind == 'a' || k.kind == 'm' || k.kind == '(' || k.kind == '{' {
			return nil, "", fmt.Errorf("%w: dict entry key must be a basic type", ErrType)
		}
		v, rest, err := parseType(rest, depth+1)
		if err != nil {
			return nil, "", err
		}
		if rest == "" || rest[0] != '}' {
			return nil, "", fmt.Errorf("%w: dict entry must have exactly two members", ErrType)
		}
		rest = rest[1:]
		t := &Type{kind: '{', fields: []*Type{k, v}, sig: s[:len(s)-len(rest)], align: 1}
		layoutStruct(t)
		return t, rest, nil
	}
	return nil, "", fmt.Errorf("%w: unexpected %q", ErrType, c)
}

func basic(c byte, align, size int) *Type {
	return &Type{kind: Kind(c), sig: string(c), align: align, fixedSize: size}
}

// layoutStruct computes alignment and, for all-fixed members, the fixed size.
func layoutStruct(t *Type) {
	fixed := true
	off := 0
	for _, f := range t.fields {
		if f.align > t.align {
			t.align = f.align
		}
		if f.fixedSize == 0 {
			fixed = false
			continue
		}
		off = alignUp(off, f.align) + f.fixedSize
	}
	if !fixed {
		return
	}
	if len(t.fields) == 0 {
		t.fixedSize = 1 // the unit type serialises as a single zero byte
		return
	}
	t.fixedSize = alignUp(off, t.align)
}

// String returns the type string.
func (t *Type) String() string { return t.sig }

// Kind returns the leading character of the type string.
func (t *Type) Kind() Kind { return t.kind }

// Elem returns the element type of an array or maybe.
func (t *Type) Elem() *Type { return t.elem }

// Fields returns the member types of a tuple or dict entry.
func (t *Type) Fields() []*Type { return t.fields }

// Alignment returns the type's alignment in bytes.
func (t *Type) Alignment() int { return t.align }

// FixedSize returns the serialised size of a fixed-size type, or 0.
func (t *Type) FixedSize() int { return t.fixedSize }

func alignUp(n, a int) int { return (n + a - 1) &^ (a - 1) }

// offsetSize is the framing-offset width for a container of the given total size.
func offsetSize(size int) int {
	switch {
	case size <= 0xff:
		return 1
	case size <= 0xffff:
		return 2
	case uint64(size) <= 0xffffffff:
		return 4
	}
	return 8
}
