package qcow2

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/apt-ostree/apt-ostree-factory/internal/testenv"
)

// requireTool returns the path of a tool, skipping the test when it is
// missing unless AOF_REQUIRE_TOOLS=1.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	return testenv.Tool(t, name)
}

type chunk struct {
	off  int64
	data []byte
}

// makeRaw creates a sparse raw file of the given size with the chunks
// written in it.
func makeRaw(t testing.TB, path string, size int64, chunks []chunk) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for _, c := range chunks {
		if _, err := f.WriteAt(c.data, c.off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func randomBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// textBytes gives compressible, non-repeating data.
func textBytes(r *rand.Rand, n int) []byte {
	words := []string{"ostree", "apt", "deb", "kernel", "initramfs", "boot", "sysroot", "etc", "usr", "var", "lib", "x86_64", "config", "systemd", "unit", "="}
	var b bytes.Buffer
	for b.Len() < n {
		fmt.Fprintf(&b, "%s/%s %d %s\n", words[r.IntN(len(words))], words[r.IntN(len(words))], r.IntN(100000), words[r.IntN(len(words))])
	}
	return b.Bytes()[:n]
}

func convertFile(t testing.TB, raw, out string, opts Options) {
	t.Helper()
	src, err := os.Open(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(out, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if err := Convert(dst, src, opts); err != nil {
		t.Fatalf("Convert(%s, %+v): %v", raw, opts, err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

// nonZeroClusters counts the clusters of a raw file that hold a non-zero
// byte, and returns how many bytes of the virtual disk they cover.
func nonZeroBytes(t *testing.T, raw string, cs int64) int64 {
	t.Helper()
	f, err := os.Open(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	vsize := roundUp(fi.Size(), sectorSize)
	var total int64
	zero := make([]byte, cs)
	next := int64(0) // extents may share a cluster: count it once
	err = walkData(f, fi.Size(), true, func(start, end int64) error {
		buf := make([]byte, cs)
		for c := max(start/cs, next); c*cs < end; c++ {
			next = c + 1
			if err := readFull(f, buf, c*cs); err != nil {
				return err
			}
			if !bytes.Equal(buf, zero) {
				total += min(cs, vsize-c*cs)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return total
}

// checkImage runs qemu-img check, compare, info and map on a converted image.
func checkImage(t *testing.T, raw, img string, cs int64, compressed bool) {
	t.Helper()
	qemuImg := requireTool(t, "qemu-img")

	out, err := run(t, qemuImg, "check", "-f", "qcow2", img)
	if err != nil || !strings.Contains(out, "No errors were found") || strings.Contains(out, "leaked") {
		t.Fatalf("qemu-img check %s: %v\n%s", img, err, out)
	}

	out, err = run(t, qemuImg, "compare", "-f", "raw", "-F", "qcow2", raw, img)
	if err != nil || !strings.Contains(out, "Images are identical") {
		t.Fatalf("qemu-img compare %s %s: %v\n%s", raw, img, err, out)
	}

	out, err = run(t, qemuImg, "info", "--output=json", "-f", "qcow2", img)
	if err != nil {
		t.Fatalf("qemu-img info: %v\n%s", err, out)
	}
	var info struct {
		VirtualSize int64  `json:"virtual-size"`
		Format      string `json:"format"`
		ClusterSize int64  `json:"cluster-size"`
		Format2     struct {
			Data struct {
				Compat        string `json:"compat"`
				RefcountBits  int    `json:"refcount-bits"`
				Corrupt       bool   `json:"corrupt"`
				LazyRefcounts bool   `json:"lazy-refcounts"`
			} `json:"data"`
		} `json:"format-specific"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("qemu-img info: %v\n%s", err, out)
	}
	fi, err := os.Stat(raw)
	if err != nil {
		t.Fatal(err)
	}
	wantSize := roundUp(fi.Size(), sectorSize)
	d := info.Format2.Data
	if info.VirtualSize != wantSize || info.Format != "qcow2" || info.ClusterSize != cs ||
		d.Compat != "1.1" || d.RefcountBits != 16 || d.Corrupt {
		t.Fatalf("qemu-img info: got %+v, want virtual-size %d, format qcow2, cluster-size %d, compat 1.1, 16-bit refcounts\n%s", info, wantSize, cs, out)
	}

	// Only the clusters with non-zero bytes are allocated.
	out, err = run(t, qemuImg, "map", "--output=json", "-f", "qcow2", img)
	if err != nil {
		t.Fatalf("qemu-img map: %v\n%s", err, out)
	}
	var m []struct {
		Length int64 `json:"length"`
		Data   bool  `json:"data"`
		Zero   bool  `json:"zero"`
	}
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("qemu-img map: %v\n%s", err, out)
	}
	var data int64
	for _, e := range m {
		if e.Data {
			data += e.Length
		}
	}
	if want := nonZeroBytes(t, raw, cs); data != want {
		t.Fatalf("qemu-img map: %d bytes of data allocated, want %d", data, want)
	}

	// Compressed clusters are used when asked for and only then.
	out, err = run(t, qemuImg, "check", "--output=json", "-f", "qcow2", img)
	if err != nil {
		t.Fatalf("qemu-img check --output=json: %v\n%s", err, out)
	}
	var chk struct {
		CompressedClusters int64 `json:"compressed-clusters"`
		AllocatedClusters  int64 `json:"allocated-clusters"`
		Leaks              int64 `json:"leaks"`
		Corruptions        int64 `json:"corruptions"`
	}
	if err := json.Unmarshal([]byte(out), &chk); err != nil {
		t.Fatalf("qemu-img check --output=json: %v\n%s", err, out)
	}
	if chk.Leaks != 0 || chk.Corruptions != 0 {
		t.Fatalf("qemu-img check: %s", out)
	}
	if !compressed && chk.CompressedClusters != 0 {
		t.Fatalf("uncompressed conversion has %d compressed clusters", chk.CompressedClusters)
	}
	t.Logf("%s: %d allocated clusters, %d compressed", filepath.Base(img), chk.AllocatedClusters, chk.CompressedClusters)
}

type fixture struct {
	name   string
	size   int64
	chunks func(r *rand.Rand) []chunk
}

func scattered10M(r *rand.Rand) []chunk {
	var cs []chunk
	for i := 0; i < 40; i++ {
		off := r.Int64N(10<<20 - 70000)
		n := 1 + r.IntN(70000)
		if i%2 == 0 {
			cs = append(cs, chunk{off, randomBytes(r, n)})
		} else {
			cs = append(cs, chunk{off, textBytes(r, n)})
		}
	}
	// An explicitly written run of zeros: a data extent whose clusters
	// must not be stored.
	cs = append(cs, chunk{3 << 20, make([]byte, 1<<20)})
	// Single bytes in otherwise empty clusters.
	cs = append(cs, chunk{5<<20 + 12345, []byte{1}}, chunk{7<<20 + 65535, []byte{0xff}})
	return cs
}

func fixtures() []fixture {
	return []fixture{
		{"empty-1G", 1 << 30, func(*rand.Rand) []chunk { return nil }},
		{"scattered-10M", 10 << 20, scattered10M},
		{"first-last-byte", 100<<20 + 3*512, func(*rand.Rand) []chunk {
			return []chunk{{0, []byte{0xeb}}, {100<<20 + 3*512 - 1, []byte{0xaa}}}
		}},
		{"unaligned-size", 5<<20 + 3*4096 + 512, func(r *rand.Rand) []chunk {
			return []chunk{{5<<20 - 1000, textBytes(r, 1000+3*4096+512)}, {4096, randomBytes(r, 100)}}
		}},
		// Not even a multiple of 512: the virtual size is rounded up.
		{"odd-size", 1<<20 + 1001, func(r *rand.Rand) []chunk {
			return []chunk{{1<<20 - 5, randomBytes(r, 1006)}}
		}},
	}
}

func TestConvertQemu(t *testing.T) {
	requireTool(t, "qemu-img")
	dir := t.TempDir()
	for _, fx := range fixtures() {
		raw := filepath.Join(dir, fx.name+".raw")
		makeRaw(t, raw, fx.size, fx.chunks(rand.New(rand.NewPCG(1, 2))))
		for _, cb := range []int{0, 12} {
			for _, compress := range []bool{false, true} {
				opts := Options{ClusterBits: cb, Compress: compress}
				name := fmt.Sprintf("%s/cb%d/compress=%v", fx.name, cb, compress)
				t.Run(name, func(t *testing.T) {
					img := filepath.Join(dir, strings.ReplaceAll(name, "/", "_")+".qcow2")
					convertFile(t, raw, img, opts)
					cs := int64(1) << DefaultClusterBits
					if cb != 0 {
						cs = int64(1) << cb
					}
					checkImage(t, raw, img, cs, compress)
				})
			}
		}
	}
}

// TestConvertClusterSizes uses the smallest and largest cluster sizes: with
// 512-byte clusters the refcount table spans several clusters.
func TestConvertClusterSizes(t *testing.T) {
	requireTool(t, "qemu-img")
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(3, 4))
	var chunks []chunk
	for i := 0; i < 24; i++ {
		off := int64(i)*(2<<20) + r.Int64N(1<<20)
		if i%3 == 0 {
			chunks = append(chunks, chunk{off, randomBytes(r, 300<<10)})
		} else {
			chunks = append(chunks, chunk{off, textBytes(r, 400<<10)})
		}
	}
	raw := filepath.Join(dir, "in.raw")
	makeRaw(t, raw, 64<<20-512, chunks)
	for _, cb := range []int{MinClusterBits, 10, MaxClusterBits} {
		for _, compress := range []bool{false, true} {
			t.Run(fmt.Sprintf("cb%d/compress=%v", cb, compress), func(t *testing.T) {
				img := filepath.Join(dir, fmt.Sprintf("cb%d-%v.qcow2", cb, compress))
				convertFile(t, raw, img, Options{ClusterBits: cb, Compress: compress})
				checkImage(t, raw, img, int64(1)<<cb, compress)
			})
		}
	}
}

// bigFixture is a 3 GiB sparse file with 300 MiB of random and
// compressible data spread over it (60 MiB under -race, 40 MiB with -short:
// still several L2 tables, and several refcount blocks with 4 KiB clusters).
func bigFixture(t testing.TB, path string) {
	r := rand.New(rand.NewPCG(5, 6))
	const size = 3 << 30
	var chunks []chunk
	n := 300
	switch {
	case testing.Short():
		n = 40
	case raceEnabled:
		n = 60
	}
	for i := 0; i < n; i++ {
		slot := int64(size / n)
		off := int64(i)*slot + r.Int64N(slot-(1<<20))
		if i%2 == 0 {
			chunks = append(chunks, chunk{off, randomBytes(r, 1<<20)})
		} else {
			chunks = append(chunks, chunk{off, textBytes(r, 1<<20)})
		}
	}
	makeRaw(t, path, size, chunks)
}

func TestConvertBig(t *testing.T) {
	requireTool(t, "qemu-img")
	dir := t.TempDir()
	raw := filepath.Join(dir, "big.raw")
	bigFixture(t, raw)
	for _, cb := range []int{16, 12} {
		for _, compress := range []bool{false, true} {
			t.Run(fmt.Sprintf("cb%d/compress=%v", cb, compress), func(t *testing.T) {
				img := filepath.Join(dir, fmt.Sprintf("big-%d-%v.qcow2", cb, compress))
				convertFile(t, raw, img, Options{ClusterBits: cb, Compress: compress})
				checkImage(t, raw, img, int64(1)<<cb, compress)
				fi, _ := os.Stat(img)
				t.Logf("output %d bytes", fi.Size())
				if cb == 16 && compress {
					// Determinism on the parallel path.
					img2 := img + ".2"
					convertFile(t, raw, img2, Options{ClusterBits: cb, Compress: compress})
					if a, b := fileHash(t, img), fileHash(t, img2); a != b {
						t.Fatalf("two conversions differ: %x vs %x", a, b)
					}
				}
			})
		}
	}
}

func fileHash(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// TestDeterministic needs no tools: same input, same bytes, whether or not
// SEEK_DATA is used.
func TestDeterministic(t *testing.T) {
	dir := t.TempDir()
	raw := filepath.Join(dir, "in.raw")
	makeRaw(t, raw, 10<<20, scattered10M(rand.New(rand.NewPCG(7, 8))))
	for _, compress := range []bool{false, true} {
		a := filepath.Join(dir, fmt.Sprintf("a-%v.qcow2", compress))
		b := filepath.Join(dir, fmt.Sprintf("b-%v.qcow2", compress))
		convertFile(t, raw, a, Options{Compress: compress})
		convertFile(t, raw, b, Options{Compress: compress})
		// Without SEEK_DATA/SEEK_HOLE.
		c := filepath.Join(dir, fmt.Sprintf("c-%v.qcow2", compress))
		src, err := os.Open(raw)
		if err != nil {
			t.Fatal(err)
		}
		dst, err := os.Create(c)
		if err != nil {
			t.Fatal(err)
		}
		if err := convert(dst, src, Options{Compress: compress}, false); err != nil {
			t.Fatal(err)
		}
		src.Close()
		dst.Close()
		ab, _ := os.ReadFile(a)
		bb, _ := os.ReadFile(b)
		cb, _ := os.ReadFile(c)
		if !bytes.Equal(ab, bb) || !bytes.Equal(ab, cb) {
			t.Fatalf("compress=%v: conversions differ (%d, %d, %d bytes)", compress, len(ab), len(bb), len(cb))
		}
		if !bytes.HasPrefix(ab, []byte("QFI\xfb\x00\x00\x00\x03")) {
			t.Fatalf("bad magic/version: % x", ab[:8])
		}
	}
}

func TestCopySparse(t *testing.T) {
	dir := t.TempDir()
	raw := filepath.Join(dir, "in.raw")
	r := rand.New(rand.NewPCG(9, 10))
	chunks := scattered10M(r)
	chunks = append(chunks, chunk{200 << 20, textBytes(r, 3<<20)}, chunk{256<<20 - 1, []byte{7}})
	makeRaw(t, raw, 256<<20, chunks)
	for _, useSeek := range []bool{true, false} {
		out := filepath.Join(dir, fmt.Sprintf("out-%v.raw", useSeek))
		src, err := os.Open(raw)
		if err != nil {
			t.Fatal(err)
		}
		dst, err := os.OpenFile(out, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if useSeek {
			err = CopySparse(dst, src)
		} else {
			err = copySparse(dst, src, false)
		}
		src.Close()
		dst.Close()
		if err != nil {
			t.Fatal(err)
		}
		if p, err := exec.LookPath("cmp"); err == nil {
			if out, err := exec.Command(p, raw, out).CombinedOutput(); err != nil {
				t.Fatalf("cmp: %v\n%s", err, out)
			}
		} else {
			a, _ := os.ReadFile(raw)
			b, _ := os.ReadFile(out)
			if !bytes.Equal(a, b) {
				t.Fatal("copy differs")
			}
		}
		fi, err := os.Stat(out)
		if err != nil {
			t.Fatal(err)
		}
		used := fi.Sys().(*syscall.Stat_t).Blocks * 512
		if fi.Size() != 256<<20 || used > 16<<20 {
			t.Fatalf("copy: size %d, %d bytes allocated; want 256 MiB, at most 16 MiB allocated", fi.Size(), used)
		}
		t.Logf("useSeek=%v: %d bytes allocated for %d", useSeek, used, fi.Size())
	}
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	raw := filepath.Join(dir, "in.raw")
	makeRaw(t, raw, 1<<20, []chunk{{0, []byte("data")}})

	open := func(path string, flag int) *os.File {
		f, err := os.OpenFile(path, flag, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}

	// Destination not empty.
	full := filepath.Join(dir, "full")
	if err := os.WriteFile(full, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Convert(open(full, os.O_RDWR), open(raw, os.O_RDONLY), Options{}); err == nil {
		t.Error("Convert into a non-empty file succeeded")
	}
	if err := CopySparse(open(full, os.O_RDWR), open(raw, os.O_RDONLY)); err == nil {
		t.Error("CopySparse into a non-empty file succeeded")
	}

	// Source not readable (opened write-only).
	for _, f := range []func(dst, src *os.File) error{
		func(dst, src *os.File) error { return Convert(dst, src, Options{}) },
		func(dst, src *os.File) error { return Convert(dst, src, Options{Compress: true}) },
		CopySparse,
	} {
		dst := filepath.Join(dir, "dst")
		os.Remove(dst)
		if err := f(open(dst, os.O_RDWR|os.O_CREATE|os.O_EXCL), open(raw, os.O_WRONLY)); err == nil {
			t.Error("conversion of a write-only source succeeded")
		}
	}

	// Closed source.
	src := open(raw, os.O_RDONLY)
	src.Close()
	dst := filepath.Join(dir, "dst2")
	if err := Convert(open(dst, os.O_RDWR|os.O_CREATE|os.O_EXCL), src, Options{}); err == nil {
		t.Error("Convert of a closed source succeeded")
	}

	// Source is a directory.
	dst3 := filepath.Join(dir, "dst3")
	if err := Convert(open(dst3, os.O_RDWR|os.O_CREATE|os.O_EXCL), open(dir, os.O_RDONLY), Options{}); err == nil {
		t.Error("Convert of a directory succeeded")
	}

	// Bad cluster size.
	for _, cb := range []int{8, 22, -1} {
		dst := filepath.Join(dir, fmt.Sprintf("dst-cb%d", cb))
		if err := Convert(open(dst, os.O_RDWR|os.O_CREATE|os.O_EXCL), open(raw, os.O_RDONLY), Options{ClusterBits: cb}); err == nil {
			t.Errorf("ClusterBits %d accepted", cb)
		}
	}
}

// TestZeroSize converts an empty file: no L1 table at all.
func TestZeroSize(t *testing.T) {
	dir := t.TempDir()
	raw := filepath.Join(dir, "empty.raw")
	makeRaw(t, raw, 0, nil)
	img := filepath.Join(dir, "empty.qcow2")
	convertFile(t, raw, img, Options{})
	qemuImg := requireTool(t, "qemu-img")
	out, err := run(t, qemuImg, "check", "-f", "qcow2", img)
	if err != nil || !strings.Contains(out, "No errors were found") {
		t.Fatalf("qemu-img check: %v\n%s", err, out)
	}
	out, err = run(t, qemuImg, "info", "--output=json", "-f", "qcow2", img)
	if err != nil || !strings.Contains(out, `"virtual-size": 0,`) {
		t.Fatalf("qemu-img info: %v\n%s", err, out)
	}
}
