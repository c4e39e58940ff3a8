package ext4

import (
	"fmt"
	"io"
	"os"
	"testing"
	"time"
)

// manyFiles describes 10,000 files totalling about 700 MB in 100
// directories, with sizes spread from a few bytes to ~280 KB, and a hard
// link to every 10th file (as an OSTree checkout has).
func manyFiles(t testing.TB) (*FS, int64) {
	f := New(testOpts(0))
	var total int64
	var dirs []*Node
	for i := range 100 {
		d, err := f.Mkdir(f.Root(), fmt.Sprintf("d%02d", i), Meta{Mode: 0o755, Mtime: testTime})
		if err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, d)
	}
	links, _ := f.Mkdir(f.Root(), "links", Meta{Mode: 0o755, Mtime: testTime})
	x := uint64(12345)
	for i := range 10000 {
		x = x*6364136223846793005 + 1442695040888963407
		size := int64(x>>33) % 140000 // mean ~70 KB
		seed := int64(i)
		n, err := f.Create(dirs[i%100], fmt.Sprintf("f%05d", i), Meta{Mode: 0o644, Mtime: testTime}, size,
			func() (io.ReadCloser, error) { return newGen(seed, size), nil })
		if err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 {
			if err := f.Link(links, fmt.Sprintf("l%05d", i), n); err != nil {
				t.Fatal(err)
			}
		}
		total += size
	}
	return f, total
}

// writeTimed writes f into a fresh sparse image of size bytes and returns
// the path and the time WriteTo took.
func writeTimed(t testing.TB, f *FS, size int64) (string, time.Duration) {
	img := sparseImage(t, size)
	fh, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	start := time.Now()
	if err := f.WriteTo(fh, 0, size); err != nil {
		t.Fatal(err)
	}
	return img, time.Since(start)
}

// TestManyFiles is the benchmark scenario as a test: 10,000 files, 700 MB.
// It logs the throughput (no timing assertion) and checks the result.
func TestManyFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	f, total := manyFiles(t)
	start := time.Now()
	min := f.MinSize()
	t.Logf("MinSize %.1f MiB in %v", float64(min)/MiB, time.Since(start))
	img, d := writeTimed(t, f, 2<<30)
	t.Logf("wrote %d files, %.1f MB in %v: %.0f MB/s (GOMAXPROCS workers)", 10000, float64(total)/1e6, d, float64(total)/1e6/d.Seconds())
	fsck(t, img)
}

func BenchmarkWrite10kFiles700MB(b *testing.B) {
	f, total := manyFiles(b)
	b.SetBytes(total)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		img := sparseImage(b, 2<<30)
		fh, err := os.OpenFile(img, os.O_RDWR, 0)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := f.WriteTo(fh, 0, 2<<30); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		fh.Close()
		os.Remove(img)
		b.StartTimer()
	}
}
