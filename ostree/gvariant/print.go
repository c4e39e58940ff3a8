package gvariant

import (
	"fmt"
	"strconv"
	"strings"
)

// Format renders a value of type t in GVariant text notation, close to
// g_variant_print with type annotations, for human-readable output.
func Format(t *Type, v any) string {
	var b strings.Builder
	format(&b, t, v)
	return b.String()
}

// FormatVariant renders a Variant's value.
func FormatVariant(v Variant) string { return Format(v.Type, v.Value) }

func format(b *strings.Builder, t *Type, v any) {
	switch t.kind {
	case 'b':
		b.WriteString(strconv.FormatBool(v.(bool)))
	case 'y':
		fmt.Fprintf(b, "byte 0x%02x", v.(byte))
	case 'n':
		fmt.Fprintf(b, "int16 %d", v.(int16))
	case 'q':
		fmt.Fprintf(b, "uint16 %d", v.(uint16))
	case 'i':
		fmt.Fprintf(b, "%d", v.(int32))
	case 'h':
		fmt.Fprintf(b, "handle %d", v.(int32))
	case 'u':
		fmt.Fprintf(b, "uint32 %d", v.(uint32))
	case 'x':
		fmt.Fprintf(b, "int64 %d", v.(int64))
	case 't':
		fmt.Fprintf(b, "uint64 %d", v.(uint64))
	case 'd':
		b.WriteString(strconv.FormatFloat(v.(float64), 'g', -1, 64))
	case 's':
		b.WriteString(quote(v.(string)))
	case 'o':
		b.WriteString("objectpath " + quote(v.(string)))
	case 'g':
		b.WriteString("signature " + quote(v.(string)))
	case 'v':
		x := v.(Variant)
		b.WriteByte('<')
		format(b, x.Type, x.Value)
		b.WriteByte('>')
	case 'm':
		if v == nil {
			b.WriteString("nothing")
		} else {
			format(b, t.elem, v)
		}
	case 'a':
		formatArray(b, t, v)
	case '(':
		b.WriteByte('(')
		for i, f := range t.fields {
			if i > 0 {
				b.WriteString(", ")
			}
			format(b, f, v.([]any)[i])
		}
		if len(t.fields) == 1 {
			b.WriteByte(',')
		}
		b.WriteByte(')')
	case '{':
		e := v.(DictEntry)
		b.WriteByte('{')
		format(b, t.fields[0], e.Key)
		b.WriteString(", ")
		format(b, t.fields[1], e.Value)
		b.WriteByte('}')
	}
}

func formatArray(b *strings.Builder, t *Type, v any) {
	if t.elem.kind == 'y' {
		bs := v.([]byte)
		if n := len(bs); n > 0 && bs[n-1] == 0 && printable(bs[:n-1]) {
			b.WriteString("b" + quote(string(bs[:n-1])))
			return
		}
		b.WriteString("[")
		for i, c := range bs {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(b, "0x%02x", c)
		}
		b.WriteString("]")
		return
	}
	n, at, _ := arrayElems(t, v)
	if n == 0 {
		b.WriteString("@" + t.sig + " []")
		return
	}
	open, close := "[", "]"
	if t.elem.kind == '{' {
		open, close = "{", "}"
	}
	b.WriteString(open)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		if t.elem.kind == '{' {
			e := at(i).(DictEntry)
			format(b, t.elem.fields[0], e.Key)
			b.WriteString(": ")
			format(b, t.elem.fields[1], e.Value)
			continue
		}
		format(b, t.elem, at(i))
	}
	b.WriteString(close)
}

func printable(bs []byte) bool {
	for _, c := range bs {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

func quote(s string) string {
	var b strings.Builder
	b.WriteByte('\'')
	for _, r := range s {
		switch {
		case r == '\'' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('\'')
	return b.String()
}
