package delta

import (
	"bytes"
	"math/rand/v2"
	"sort"
	"testing"
)

func TestSuffixArray(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	inputs := [][]byte{nil, []byte("a"), []byte("banana"), []byte("mississippi"), bytes.Repeat([]byte("a"), 1000), bytes.Repeat([]byte("abc"), 333)}
	for i := 0; i < 200; i++ {
		b := make([]byte, r.IntN(300))
		alpha := 1 + r.IntN(4)
		for j := range b {
			b[j] = byte('a' + r.IntN(alpha))
		}
		inputs = append(inputs, b)
	}
	// Longer inputs, several levels of recursion deep: random over the
	// whole byte range and over small alphabets, periodic text with
	// variations, and repeated blocks (as a dpkg status file has).
	for i := 0; i < 40; i++ {
		b := make([]byte, 1000+r.IntN(5000))
		alpha := []int{2, 3, 16, 256}[i%4]
		for j := range b {
			b[j] = byte(r.IntN(alpha))
		}
		inputs = append(inputs, b)
		period := bytes.Repeat([]byte("Package: x\nStatus: install ok installed\n"), 20+r.IntN(50))
		for k := 0; k < 5; k++ {
			period[r.IntN(len(period))] = byte(r.IntN(256))
		}
		inputs = append(inputs, period)
	}
	inputs = append(inputs, bytes.Repeat([]byte{0}, 700), bytes.Repeat([]byte{255, 0}, 500), []byte{0}, []byte{255})
	for _, in := range inputs {
		got := suffixArray(in)
		want := make([]int32, len(in))
		for i := range want {
			want[i] = int32(i)
		}
		sort.Slice(want, func(a, b int) bool { return bytes.Compare(in[want[a]:], in[want[b]:]) < 0 })
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("suffix array of %q: %v, want %v", in, got, want)
			}
		}
	}
}

// mutate makes a "new version" of old: substitutions, insertions,
// deletions and shifted copies, as a rebuilt binary or an edited
// database has.
func mutate(r *rand.Rand, old []byte) []byte {
	out := append([]byte{}, old...)
	for n := r.IntN(20); n > 0 && len(out) > 0; n-- {
		p := r.IntN(len(out))
		switch r.IntN(4) {
		case 0:
			out[p] ^= byte(1 + r.IntN(255))
		case 1:
			ins := make([]byte, r.IntN(100))
			for i := range ins {
				ins[i] = byte(r.Uint32())
			}
			out = append(out[:p], append(ins, out[p:]...)...)
		case 2:
			e := min(len(out), p+r.IntN(100))
			out = append(out[:p], out[e:]...)
		case 3: // every 4th byte shifts by a constant, like moved addresses
			for i := p; i < len(out) && i < p+2000; i += 4 {
				out[i] += 3
			}
		}
	}
	return out
}

func TestBsdiffRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	cases := [][2][]byte{
		{nil, []byte("new file")},
		{[]byte("old file"), nil},
		{[]byte("same"), []byte("same")},
		{text(5, 1000), append(text(5, 1000), "appended\n"...)},
	}
	for i := 0; i < 100; i++ {
		var old []byte
		if i%2 == 0 {
			old = randBytes(uint64(i), r.IntN(20000))
		} else {
			old = text(uint64(i), r.IntN(400))
		}
		cases = append(cases, [2][]byte{old, mutate(r, old)})
	}
	var saved, total int
	for i, c := range cases {
		patch, st := bsdiff(c[0], c[1])
		got, ok := bspatch(c[0], patch, len(c[1]))
		if !ok || !bytes.Equal(got, c[1]) {
			t.Fatalf("case %d: the patch does not reproduce the new file (ok=%v)", i, ok)
		}
		total += len(c[1])
		saved += len(c[1]) - st.significant
	}
	t.Logf("significant bytes: %d of %d", total-saved, total)
	if saved < total/2 {
		t.Errorf("patches of small edits keep %d of %d bytes significant", total-saved, total)
	}
}

func FuzzBsdiff(f *testing.F) {
	f.Add([]byte("hello world"), []byte("hello there world"))
	f.Fuzz(func(t *testing.T, old, new []byte) {
		patch, _ := bsdiff(old, new)
		got, ok := bspatch(old, patch, len(new))
		if !ok || !bytes.Equal(got, new) {
			t.Fatalf("round trip failed for %q → %q", old, new)
		}
	})
}
