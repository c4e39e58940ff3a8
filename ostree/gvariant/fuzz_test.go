package gvariant

import (
	"bytes"
	"testing"
)

// Types OSTree reads from untrusted repositories and servers.
var fuzzTypes = []string{
	"(a{sv}aya(say)sstayay)",
	"(a(say)a(sayay))",
	"(uuua(ayay))",
	"(tuuuusa(ayay))",
	"a{sv}",
	"(a(s(taya{sv}))a{sv})",
	"(a{sv}tayay(a{sv}aya(say)sstayay)aya(uayttay)a(yaytt))",
	"(a(uuu)aa(ayay)ayay)",
	"v",
	"mv",
}

func FuzzDecode(f *testing.F) {
	f.Add(byte(0), []byte{0})
	f.Add(byte(4), []byte{0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x41, 0xed})
	f.Add(byte(8), []byte("x\x00\x00s"))
	f.Add(byte(8), []byte("\x00\x00(a{sv}aya(say)sstayay)"))
	for i, sig := range fuzzTypes {
		typ := MustParseType(sig)
		if b, err := Encode(typ, sampleValue(typ)); err == nil {
			f.Add(byte(i), b)
		}
	}
	f.Fuzz(func(t *testing.T, which byte, data []byte) {
		typ := MustParseType(fuzzTypes[int(which)%len(fuzzTypes)])
		v, err := Decode(typ, data)
		if err != nil {
			return
		}
		enc, err := Encode(typ, v)
		if err != nil {
			t.Fatalf("decoded value does not encode: %v", err)
		}
		// Normal-form input must round-trip exactly; any decodable input
		// must decode to the same value once normalised.
		if IsNormal(typ, data) && !bytes.Equal(enc, data) {
			t.Fatalf("normal input did not round-trip")
		}
		v2, err := Decode(typ, enc)
		if err != nil {
			t.Fatalf("normalised bytes do not decode: %v", err)
		}
		enc2, err := Encode(typ, v2)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("normalisation is not stable")
		}
	})
}

func FuzzParseType(f *testing.F) {
	for _, s := range fuzzTypes {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sig string) {
		typ, err := ParseType(sig)
		if err != nil {
			return
		}
		if typ.String() != sig {
			t.Fatalf("String() = %q for %q", typ.String(), sig)
		}
	})
}

// sampleValue builds a small value of any type, for seeding the fuzzer.
func sampleValue(t *Type) any {
	switch t.kind {
	case 'y':
		return byte(7)
	case 'b':
		return true
	case 'n':
		return int16(-2)
	case 'q':
		return uint16(2)
	case 'i', 'h':
		return int32(-3)
	case 'u':
		return uint32(3)
	case 'x':
		return int64(-4)
	case 't':
		return uint64(4)
	case 'd':
		return 1.5
	case 's':
		return "str"
	case 'o':
		return "/a/b"
	case 'g':
		return "as"
	case 'v':
		return NewVariant("(su)", []any{"x", uint32(1)})
	case 'm':
		return sampleValue(t.elem)
	case 'a':
		switch {
		case t.elem.kind == 'y':
			return []byte{1, 2, 3}
		case t.elem.kind == '{':
			e := sampleValue(t.elem).(DictEntry)
			return []DictEntry{e, e}
		case t.elem.kind == 's':
			return []string{"a", "bc"}
		case t.elem.sig == "ay":
			return [][]byte{{1}, {}}
		}
		e := sampleValue(t.elem)
		return []any{e, e}
	case '(':
		vals := make([]any, len(t.fields))
		for i, f := range t.fields {
			vals[i] = sampleValue(f)
		}
		return vals
	case '{':
		return DictEntry{Key: sampleValue(t.fields[0]), Value: sampleValue(t.fields[1])}
	}
	return nil
}
