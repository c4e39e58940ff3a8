package delta

import (
	"bytes"
	"io"
	"os/exec"
	"testing"

	"github.com/ulikunitz/xz"
)

func TestStoreWriter(t *testing.T) {
	for _, n := range []int{0, 1, 3, storeChunk - 1, storeChunk, storeChunk + 1, 3*storeChunk + 17, 1 << 20} {
		data := randBytes(uint64(n), n)
		var buf bytes.Buffer
		w, err := newStoreWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		// Odd write sizes, to cross chunk boundaries inside writes.
		for p := data; len(p) > 0; {
			k := min(len(p), 10007)
			w.Write(p[:k])
			p = p[k:]
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if buf.Len()%4 != 0 {
			t.Errorf("%d bytes: stream of %d bytes, not a multiple of 4", n, buf.Len())
		}
		r, err := xz.NewReader(bytes.NewReader(buf.Bytes()))
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%d bytes: Go xz reader: %v, equal=%v", n, err, bytes.Equal(got, data))
		}
		// liblzma (the xz tool) is what ostree decodes with.
		if path, err := exec.LookPath("xz"); err == nil {
			cmd := exec.Command(path, "-d", "-c")
			cmd.Stdin = bytes.NewReader(buf.Bytes())
			out, err := cmd.Output()
			if err != nil || !bytes.Equal(out, data) {
				t.Fatalf("%d bytes: xz -d: %v, equal=%v", n, err, bytes.Equal(out, data))
			}
		}
	}
}
