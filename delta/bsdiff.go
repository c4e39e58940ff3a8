package delta

import (
	"bytes"
	"encoding/binary"
)

// This file writes binary patches in the stream format ostree's bspatch
// opcode reads (Colin Percival's bsdiff as in the mendsley/bsdiff library,
// without its header and without compression; the part's xz does that):
// a sequence of steps, each
//
//	three 8-byte little-endian sign-magnitude integers: diff length,
//	extra length, seek in the old file
//	diff bytes: added bytewise to the old file's bytes at the old position
//	extra bytes: copied as they are
//
// until the new file is complete. The matching is bsdiff's: exact matches
// found through a suffix array of the old file, extended forwards and
// backwards while at least half the bytes agree (so code whose addresses
// moved still patches into mostly zero bytes).

// suffixArray returns the start offsets of data's suffixes in
// lexicographic order (prefix doubling: each round sorts by the rank of
// the first k bytes and then the rank of the next k, with one counting
// sort, until every rank is distinct).
func suffixArray(data []byte) []int32 {
	n := len(data)
	sa := make([]int32, n)
	if n == 0 {
		return sa
	}
	rank := make([]int32, n)
	tmp := make([]int32, n)
	// Round 0: by first byte.
	var cnt [257]int32
	for _, b := range data {
		cnt[int(b)+1]++
	}
	for i := 1; i < 257; i++ {
		cnt[i] += cnt[i-1]
	}
	for i, b := range data {
		sa[cnt[b]] = int32(i)
		cnt[b]++
	}
	rank[sa[0]] = 0
	classes := int32(1)
	for i := 1; i < n; i++ {
		if data[sa[i]] != data[sa[i-1]] {
			classes++
		}
		rank[sa[i]] = classes - 1
	}
	count := make([]int32, n+1)
	for k := 1; int(classes) < n; k *= 2 {
		// Order by the second key: suffixes without one (i+k >= n) first,
		// then by the previous order of suffix i+k.
		j := 0
		for i := n - k; i < n; i++ {
			tmp[j] = int32(i)
			j++
		}
		for _, s := range sa {
			if int(s) >= k {
				tmp[j] = s - int32(k)
				j++
			}
		}
		// Stable counting sort by the first key.
		clear(count[:classes+1])
		for _, s := range tmp {
			count[rank[s]+1]++
		}
		for i := int32(1); i <= classes; i++ {
			count[i] += count[i-1]
		}
		for _, s := range tmp {
			r := rank[s]
			sa[count[r]] = s
			count[r]++
		}
		// New ranks, into tmp.
		second := func(i int32) int32 {
			if int(i)+k < n {
				return rank[int(i)+k]
			}
			return -1
		}
		tmp[sa[0]] = 0
		classes = 1
		for i := 1; i < n; i++ {
			a, b := sa[i-1], sa[i]
			if rank[a] != rank[b] || second(a) != second(b) {
				classes++
			}
			tmp[b] = classes - 1
		}
		rank, tmp = tmp, rank
	}
	return sa
}

func matchLen(a, b []byte) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// search finds the longest prefix of target that occurs in old, by binary
// search in old's suffix array between lo and hi (inclusive).
func search(sa []int32, old, target []byte, lo, hi int) (length, pos int) {
	for hi-lo >= 2 {
		mid := lo + (hi-lo)/2
		s := old[sa[mid]:]
		n := min(len(s), len(target))
		if bytes.Compare(s[:n], target[:n]) < 0 {
			lo = mid
		} else {
			hi = mid
		}
	}
	x := matchLen(old[sa[lo]:], target)
	y := matchLen(old[sa[hi]:], target)
	if x > y {
		return x, int(sa[lo])
	}
	return y, int(sa[hi])
}

func appendOfft(b []byte, v int64) []byte {
	u := uint64(v)
	if v < 0 {
		u = uint64(-v) | 1<<63
	}
	return binary.LittleEndian.AppendUint64(b, u)
}

// patchStats counts what a patch costs before compression: bytes that
// are not zero diff (extra bytes, non-zero diff bytes and the 24-byte
// controls).
type patchStats struct {
	significant int
}

// bsdiff returns the patch that turns old into new.
func bsdiff(old, new []byte) ([]byte, patchStats) {
	var st patchStats
	out := make([]byte, 0, len(new)/4+64)
	oldsize, newsize := len(old), len(new)
	emit := func(lastscan, lastpos, lenf, extra, seek int) {
		out = appendOfft(out, int64(lenf))
		out = appendOfft(out, int64(extra))
		out = appendOfft(out, int64(seek))
		st.significant += 24 + extra
		for i := 0; i < lenf; i++ {
			d := new[lastscan+i] - old[lastpos+i]
			if d != 0 {
				st.significant++
			}
			out = append(out, d)
		}
		out = append(out, new[lastscan+lenf:lastscan+lenf+extra]...)
	}
	if oldsize == 0 {
		emit(0, 0, 0, newsize, 0)
		return out, st
	}
	sa := suffixArray(old)
	var scan, length, pos, lastscan, lastpos, lastoffset int
	for scan < newsize {
		oldscore := 0
		scan += length
		scsc := scan
		for ; scan < newsize; scan++ {
			length, pos = search(sa, old, new[scan:], 0, oldsize-1)
			for ; scsc < scan+length; scsc++ {
				if scsc+lastoffset < oldsize && old[scsc+lastoffset] == new[scsc] {
					oldscore++
				}
			}
			if (length == oldscore && length != 0) || length > oldscore+8 {
				break
			}
			if scan+lastoffset < oldsize && old[scan+lastoffset] == new[scan] {
				oldscore--
			}
		}
		if length == oldscore && scan != newsize {
			continue
		}
		// Extend the previous match forwards while at least half agrees.
		lenf := 0
		for i, s, best := 0, 0, 0; lastscan+i < scan && lastpos+i < oldsize; {
			if old[lastpos+i] == new[lastscan+i] {
				s++
			}
			i++
			if s*2-i > best*2-lenf {
				best, lenf = s, i
			}
		}
		// And the new match backwards.
		lenb := 0
		if scan < newsize {
			for i, s, best := 1, 0, 0; scan >= lastscan+i && pos >= i; i++ {
				if old[pos-i] == new[scan-i] {
					s++
				}
				if s*2-i > best*2-lenb {
					best, lenb = s, i
				}
			}
		}
		// Where the two extensions overlap, split at the best point.
		if lastscan+lenf > scan-lenb {
			overlap := lastscan + lenf - (scan - lenb)
			s, best, lens := 0, 0, 0
			for i := 0; i < overlap; i++ {
				if new[lastscan+lenf-overlap+i] == old[lastpos+lenf-overlap+i] {
					s++
				}
				if new[scan-lenb+i] == old[pos-lenb+i] {
					s--
				}
				if s > best {
					best, lens = s, i+1
				}
			}
			lenf += lens - overlap
			lenb -= lens
		}
		emit(lastscan, lastpos, lenf, (scan-lenb)-(lastscan+lenf), (pos-lenb)-(lastpos+lenf))
		lastscan = scan - lenb
		lastpos = pos - lenb
		lastoffset = pos - scan
	}
	return out, st
}

// bspatch applies a patch (for tests and for checking a patch before it
// is used): the same reading rules as ostree's bspatch.
func bspatch(old, patch []byte, newsize int) ([]byte, bool) {
	out := make([]byte, newsize)
	var newpos, oldpos int64
	p := 0
	read := func(n int64) ([]byte, bool) {
		if n < 0 || int64(len(patch)-p) < n {
			return nil, false
		}
		b := patch[p : p+int(n)]
		p += int(n)
		return b, true
	}
	offt := func() (int64, bool) {
		b, ok := read(8)
		if !ok {
			return 0, false
		}
		u := binary.LittleEndian.Uint64(b)
		v := int64(u &^ (1 << 63))
		if u&(1<<63) != 0 {
			v = -v
		}
		return v, true
	}
	for newpos < int64(newsize) {
		var ctrl [3]int64
		for i := range ctrl {
			v, ok := offt()
			if !ok {
				return nil, false
			}
			ctrl[i] = v
		}
		if ctrl[0] < 0 || ctrl[1] < 0 || newpos+ctrl[0] > int64(newsize) {
			return nil, false
		}
		d, ok := read(ctrl[0])
		if !ok {
			return nil, false
		}
		for i := int64(0); i < ctrl[0]; i++ {
			b := d[i]
			if o := oldpos + i; o >= 0 && o < int64(len(old)) {
				b += old[o]
			}
			out[newpos+i] = b
		}
		newpos += ctrl[0]
		oldpos += ctrl[0]
		if newpos+ctrl[1] > int64(newsize) {
			return nil, false
		}
		e, ok := read(ctrl[1])
		if !ok {
			return nil, false
		}
		copy(out[newpos:], e)
		newpos += ctrl[1]
		oldpos += ctrl[2]
	}
	return out, true
}
