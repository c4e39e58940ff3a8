package gvariant

import (
	"bytes"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Examples from the GVariant specification and from OSTree objects.
func TestEncodeKnownBytes(t *testing.T) {
	cases := []struct {
		sig  string
		val  any
		want string
	}{
		{"(si)", []any{"foo", int32(-1)}, "666f6f00 ffffffff 04"},
		{"as", []string{"i", "can", "has", "strings?"}, "6900 63616e00 68617300 737472696e67733f00 02 06 0a 13"},
		{"ai", []any{int32(1), int32(2)}, "01000000 02000000"},
		{"ay", []byte{1, 2, 3}, "010203"},
		{"as", []string{}, ""},
		{"a{sv}", []DictEntry{}, ""},
		{"as", []string{""}, "00 01"},
		{"b", true, "01"},
		{"()", []any{}, "00"},
		{"(yt)", []any{byte(1), uint64(2)}, "01 00000000000000 0200000000000000"},
		{"(ty)", []any{uint64(2), byte(1)}, "0200000000000000 01 00000000000000"},
		{"v", NewVariant("s", "x"), "7800 00 73"},
		// OSTree dirmeta (uuua(ayay)): uid 0, gid 0, mode 040755 big-endian, no xattrs.
		{"(uuua(ayay))", []any{uint32(0), uint32(0), uint32(0xed410000), []any{}}, "00000000 00000000 000041ed"},
		// An empty dirtree is the single framing offset byte.
		{"(a(say)a(sayay))", []any{[]any{}, []any{}}, "00"},
		{"ms", "hi", "686900 00"},
		{"ms", nil, ""},
		{"mu", uint32(7), "07000000"},
	}
	for _, c := range cases {
		typ := MustParseType(c.sig)
		got, err := Encode(typ, c.val)
		if err != nil {
			t.Fatalf("%s: %v", c.sig, err)
		}
		want := unhex(t, c.want)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: got %x want %x", c.sig, got, want)
		}
		dec, err := Decode(typ, got)
		if err != nil {
			t.Fatalf("%s: decode: %v", c.sig, err)
		}
		again, err := Encode(typ, dec)
		if err != nil || !bytes.Equal(again, got) {
			t.Errorf("%s: re-encode of decoded value differs: %x (%v)", c.sig, again, err)
		}
		if !IsNormal(typ, got) {
			t.Errorf("%s: own output not normal", c.sig)
		}
	}
}

// The framing-offset width is chosen so that the whole container, offsets
// included, is addressable: 255 bytes fits in width 1, 256 needs width 2.
func TestOffsetWidthBoundary(t *testing.T) {
	typ := MustParseType("as")
	// One string of n-1 chars plus NUL gives body n, plus one offset.
	for _, tc := range []struct{ strlen, wantLen int }{{253, 254 + 1}, {254, 255 + 2}, {65532, 65533 + 2}, {65533, 65534 + 4}} {
		b, err := Encode(typ, []string{strings.Repeat("a", tc.strlen)})
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != tc.wantLen {
			t.Errorf("string of %d: serialised length %d want %d", tc.strlen, len(b), tc.wantLen)
		}
		v, err := Decode(typ, b)
		if err != nil {
			t.Fatalf("string of %d: %v", tc.strlen, err)
		}
		if got := v.([]string)[0]; len(got) != tc.strlen {
			t.Errorf("decoded length %d", len(got))
		}
	}
}

func TestRoundTripNested(t *testing.T) {
	typ := MustParseType("(a{sv}aya(say)sstayay)")
	val := []any{
		[]DictEntry{
			{Key: "version", Value: NewVariant("s", "1.0")},
			{Key: "ostree.ref-binding", Value: NewVariant("as", []string{"a", "b"})},
			{Key: "n", Value: NewVariant("t", uint64(1<<40))},
			{Key: "nested", Value: NewVariant("v", NewVariant("(ib)", []any{int32(-5), false}))},
			{Key: "sigs", Value: NewVariant("aay", [][]byte{{1, 2}, {}, {3}})},
		},
		[]byte{},
		[]any{[]any{"x", []byte{9}}},
		"subject", "body with\nnewline",
		uint64(0x5e0be100),
		bytes.Repeat([]byte{0xaa}, 32),
		bytes.Repeat([]byte{0xbb}, 32),
	}
	b, err := Encode(typ, val)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := Decode(typ, b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(dec.([]any)[3], "subject") {
		t.Errorf("subject: %v", dec.([]any)[3])
	}
	b2, err := Encode(typ, dec)
	if err != nil || !bytes.Equal(b, b2) {
		t.Fatalf("round trip differs: %v", err)
	}
}

func TestLargeArrayUsesWideOffsets(t *testing.T) {
	typ := MustParseType("a(say)")
	var elems []any
	for i := 0; i < 5000; i++ {
		elems = append(elems, []any{strings.Repeat("n", i%40+1), bytes.Repeat([]byte{byte(i)}, 32)})
	}
	b, err := Encode(typ, elems)
	if err != nil {
		t.Fatal(err)
	}
	if !IsNormal(typ, b) {
		t.Fatal("not normal")
	}
	v, err := Decode(typ, b)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.([]any)) != 5000 {
		t.Fatalf("got %d elements", len(v.([]any)))
	}
}

func TestRejectsMalformed(t *testing.T) {
	cases := []struct {
		sig  string
		data string
	}{
		{"s", "6869"},           // no NUL
		{"s", "680069 00"},      // embedded NUL
		{"s", "ff00"},           // invalid UTF-8
		{"b", "02"},             // boolean out of range
		{"u", "010203"},         // wrong size
		{"as", "6100 05"},       // offset beyond
		{"as", "6100 62 00 02"}, // offsets out of order
		{"(si)", "666f6f00 ffffffff 0a"},
		{"(yt)", "01 01000000000000 0200000000000000"}, // non-zero padding
		{"v", "7800"},     // no type after separator
		{"v", "78 00 7a"}, // bad type
		{"ai", "010000"},  // not a multiple
		{"()", "01"},
	}
	for _, c := range cases {
		typ := MustParseType(c.sig)
		if _, err := Decode(typ, unhex(t, c.data)); err == nil {
			t.Errorf("%s %s: accepted malformed data", c.sig, c.data)
		} else if !errors.Is(err, ErrFormat) {
			t.Errorf("%s %s: error %v does not wrap ErrFormat", c.sig, c.data, err)
		}
	}
}

// Well-framed but not normal: a wider offset than needed, and non-minimal padding.
func TestIsNormalRejectsNonNormal(t *testing.T) {
	typ := MustParseType("as")
	if IsNormal(typ, unhex(t, "6100 6200 0200 0400")) {
		t.Error("2-byte offsets in a small container accepted as normal")
	}
	if !IsNormal(typ, unhex(t, "6100 6200 02 04")) {
		t.Error("normal form rejected")
	}
}

func TestParseTypeErrors(t *testing.T) {
	for _, sig := range []string{"", "(", "a", "{ss", "{vs}", "(s))", "z", "{sss}", strings.Repeat("a", 100) + "y"} {
		if _, err := ParseType(sig); err == nil {
			t.Errorf("ParseType(%q) accepted", sig)
		}
	}
	for _, sig := range []string{"(a{sv}aya(say)sstayay)", "(a(s(taya{sv}))a{sv})", "(a{sv}tayay(a{sv}aya(say)sstayay)aya(uayttay)a(yaytt))", "mv", "()"} {
		if _, err := ParseType(sig); err != nil {
			t.Errorf("ParseType(%q): %v", sig, err)
		}
	}
}

func TestEncodeTypeMismatch(t *testing.T) {
	if _, err := Encode(MustParseType("(su)"), []any{"a", int32(1)}); err == nil {
		t.Error("int32 accepted for u")
	}
	if _, err := Encode(MustParseType("s"), "a\x00b"); err == nil {
		t.Error("NUL in string accepted")
	}
}

func TestFormat(t *testing.T) {
	typ := MustParseType("a{sv}")
	v := []DictEntry{
		{Key: "version", Value: NewVariant("s", "1.0")},
		{Key: "ostree.ref-binding", Value: NewVariant("as", []string{"x"})},
		{Key: "ts", Value: NewVariant("t", uint64(5))},
	}
	got := Format(typ, v)
	want := "{'version': <'1.0'>, 'ostree.ref-binding': <['x']>, 'ts': <uint64 5>}"
	if got != want {
		t.Errorf("got %s", got)
	}
}
