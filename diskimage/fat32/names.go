package fat32

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf16"
)

// plainShortName returns the 11-byte short name of s if s is a plain
// upper-case 8.3 name (no long-name entries needed).
func plainShortName(s string) ([11]byte, bool) {
	var b [11]byte
	base, ext := s, ""
	if i := strings.IndexByte(s, '.'); i >= 0 {
		base, ext = s[:i], s[i+1:]
		if ext == "" {
			return b, false
		}
	}
	if len(base) < 1 || len(base) > 8 || len(ext) > 3 {
		return b, false
	}
	for i := 0; i < len(base); i++ {
		if !shortChar(base[i]) {
			return b, false
		}
	}
	for i := 0; i < len(ext); i++ {
		if !shortChar(ext[i]) {
			return b, false
		}
	}
	copy(b[:], "           ")
	copy(b[:8], base)
	copy(b[8:], ext)
	return b, true
}

// basisName derives the short-name basis of a long name, following the
// FAT specification: upper-case, drop spaces and leading periods, replace
// characters invalid in short names with '_', take up to 8 characters
// before the last period and up to 3 after it.
func basisName(s string) (base, ext string) {
	up := strings.ToUpper(s)
	conv := func(r rune) string {
		if r < 0x80 && shortChar(byte(r)) {
			return string(r)
		}
		return "_"
	}
	up = strings.TrimLeft(strings.ReplaceAll(up, " ", ""), ".")
	main, extPart := up, ""
	if i := strings.LastIndexByte(up, '.'); i >= 0 {
		main, extPart = up[:i], up[i+1:]
	}
	var bb, eb strings.Builder
	n := 0
	for _, r := range main {
		if r == '.' {
			continue
		}
		if n == 8 {
			break
		}
		bb.WriteString(conv(r))
		n++
	}
	n = 0
	for _, r := range extPart {
		if n == 3 {
			break
		}
		eb.WriteString(conv(r))
		n++
	}
	base, ext = bb.String(), eb.String()
	if base == "" {
		base = "_"
	}
	return base, ext
}

func makeShort(base, ext string) [11]byte {
	var b [11]byte
	copy(b[:], "           ")
	copy(b[:8], base)
	copy(b[8:], ext)
	return b
}

// assignShortNames gives every child of d a unique short name and, where
// needed, its long-name entries. Plain upper-case 8.3 names keep their
// name; names whose upper-case form is a valid 8.3 name get it; the rest
// get a numeric tail (~1, ~2, ...), in name order.
func (d *node) assignShortNames(children []*node) error {
	used := map[[11]byte]bool{}
	var fits, rest []*node
	for _, c := range children {
		c.lfn = nil
		if sn, ok := plainShortName(c.name); ok {
			c.short = sn
			used[sn] = true
			continue
		}
		c.lfn = utf16.Encode([]rune(c.name))
		if _, ok := plainShortName(strings.ToUpper(c.name)); ok && isASCII(c.name) {
			fits = append(fits, c)
		} else {
			rest = append(rest, c)
		}
	}
	for _, c := range fits {
		sn, _ := plainShortName(strings.ToUpper(c.name))
		if used[sn] {
			rest = append(rest, c)
			continue
		}
		c.short = sn
		used[sn] = true
	}
	for _, c := range rest {
		base, ext := basisName(c.name)
		ok := false
		for i := 1; i <= 999999; i++ {
			tail := "~" + strconv.Itoa(i)
			b := base
			if len(b)+len(tail) > 8 {
				b = b[:8-len(tail)]
			}
			sn := makeShort(b+tail, ext)
			if !used[sn] {
				c.short = sn
				used[sn] = true
				ok = true
				break
			}
		}
		if !ok {
			return fmt.Errorf("fat32: %s: no free short name", c.path())
		}
	}
	return nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// shortChecksum is the long-name entries' checksum of a short name.
func shortChecksum(name [11]byte) byte {
	var sum byte
	for _, c := range name {
		sum = (sum&1)<<7 + sum>>1 + c
	}
	return sum
}

// lfnEntries returns the number of long-name entries for a UTF-16 name.
func lfnEntries(u []uint16) int { return (len(u) + 12) / 13 }

// appendLFN appends the long-name entries for u (last part first).
func appendLFN(buf []byte, u []uint16, short [11]byte) []byte {
	n := lfnEntries(u)
	sum := shortChecksum(short)
	for seq := n; seq >= 1; seq-- {
		var e [32]byte
		e[0] = byte(seq)
		if seq == n {
			e[0] |= 0x40
		}
		e[11] = 0x0F // ATTR_LONG_NAME
		e[13] = sum
		for k := 0; k < 13; k++ {
			i := (seq-1)*13 + k
			var c uint16
			switch {
			case i < len(u):
				c = u[i]
			case i == len(u):
				c = 0
			default:
				c = 0xFFFF
			}
			var off int
			switch {
			case k < 5:
				off = 1 + 2*k
			case k < 11:
				off = 14 + 2*(k-5)
			default:
				off = 28 + 2*(k-11)
			}
			e[off], e[off+1] = byte(c), byte(c>>8)
		}
		buf = append(buf, e[:]...)
	}
	return buf
}
