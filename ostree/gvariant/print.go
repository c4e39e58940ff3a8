package gvariant

import (
	"fmt"
	"strconv"
	"strings"
)

// Format renders a value of type t in GVariant text notation the way
// g_variant_print(value, TRUE) does, so output can be compared with ostree's.
func Format(t *Type, v any) string {
	var b strings.Builder
	format(&b, t, v, true)
	return b.String()
}

// FormatVariant renders a Variant's value.
func FormatVariant(v Variant) string { return Format(v.Type, v.Value) }

// format follows GLib's printer: with annotate set, types that are not the
// default for their literal get a type word (uint64 5, byte 0x01), and
// empty containers an @type prefix; in arrays only the first element is
// annotated, since it fixes the type of the rest.
func format(b *strings.Builder, t *Type, v any, annotate bool) {
	word := func(w string) {
		if annotate {
			b.WriteString(w + " ")
		}
	}
	switch t.kind {
	case 'b':
		b.WriteString(strconv.FormatBool(v.(bool)))
	case 'y':
		word("byte")
		fmt.Fprintf(b, "0x%02x", v.(byte))
	case 'n':
		word("int16")
		fmt.Fprintf(b, "%d", v.(int16))
	case 'q':
		word("uint16")
		fmt.Fprintf(b, "%d", v.(uint16))
	case 'i':
		fmt.Fprintf(b, "%d", v.(int32))
	case 'h':
		word("handle")
		fmt.Fprintf(b, "%d", v.(int32))
	case 'u':
		word("uint32")
		fmt.Fprintf(b, "%d", v.(uint32))
	case 'x':
		word("int64")
		fmt.Fprintf(b, "%d", v.(int64))
	case 't':
		word("uint64")
		fmt.Fprintf(b, "%d", v.(uint64))
	case 'd':
		s := strconv.FormatFloat(v.(float64), 'g', 17, 64)
		if !strings.ContainsAny(s, ".eEnN") {
			s += ".0"
		}
		b.WriteString(s)
	case 's':
		b.WriteString(quote(v.(string)))
	case 'o':
		word("objectpath")
		b.WriteString(quote(v.(string)))
	case 'g':
		word("signature")
		b.WriteString(quote(v.(string)))
	case 'v':
		x := v.(Variant)
		b.WriteByte('<')
		format(b, x.Type, x.Value, true)
		b.WriteByte('>')
	case 'm':
		if annotate {
			b.WriteString("@" + t.sig + " ")
		}
		switch {
		case v == nil:
			b.WriteString("nothing")
		case t.elem.kind == 'm':
			b.WriteString("just ")
			format(b, t.elem, v, false)
		default:
			format(b, t.elem, v, false)
		}
	case 'a':
		formatArray(b, t, v, annotate)
	case '(':
		b.WriteByte('(')
		for i, f := range t.fields {
			if i > 0 {
				b.WriteString(", ")
			}
			format(b, f, v.([]any)[i], annotate)
		}
		if len(t.fields) == 1 {
			b.WriteByte(',')
		}
		b.WriteByte(')')
	case '{':
		e := v.(DictEntry)
		b.WriteByte('{')
		format(b, t.fields[0], e.Key, annotate)
		b.WriteString(", ")
		format(b, t.fields[1], e.Value, annotate)
		b.WriteByte('}')
	}
}

func formatArray(b *strings.Builder, t *Type, v any, annotate bool) {
	if t.elem.kind == 'y' {
		bs := v.([]byte)
		if n := len(bs); n > 0 && bs[n-1] == 0 && printable(bs[:n-1]) {
			b.WriteString("b" + quote(string(bs[:n-1])))
			return
		}
	}
	n, at, _ := arrayElems(t, v)
	if n == 0 {
		if annotate {
			b.WriteString("@" + t.sig + " ")
		}
		b.WriteString("[]")
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
			format(b, t.elem.fields[0], e.Key, annotate)
			b.WriteString(": ")
			format(b, t.elem.fields[1], e.Value, annotate)
		} else {
			format(b, t.elem, at(i), annotate)
		}
		annotate = false
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

// quote uses single quotes unless the string contains one, as GLib does.
func quote(s string) string {
	q := byte('\'')
	if strings.IndexByte(s, '\'') >= 0 {
		q = '"'
	}
	var b strings.Builder
	b.WriteByte(q)
	for _, r := range s {
		switch {
		case r == rune(q) || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\a':
			b.WriteString(`\a`)
		case r == '\b':
			b.WriteString(`\b`)
		case r == '\f':
			b.WriteString(`\f`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\v':
			b.WriteString(`\v`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte(q)
	return b.String()
}
