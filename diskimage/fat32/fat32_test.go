package fat32

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// TestSizes builds the ESP tree in filesystems of many sizes and checks
// them with fsck.fat and mtools.
func TestSizes(t *testing.T) {
	needTool(t, "fsck.fat", "mkfs.fat", "mdir", "mcopy", "minfo")
	files, dirs := espTree()
	for _, size := range []int64{33 * mb, 34 * mb, 64 * mb, 100 * mb, 128 * mb, 256 * mb, 260 * mb, 300 * mb, 512 * mb, 1024 * mb, 2048 * mb} {
		t.Run(fmt.Sprintf("%dMiB", size/mb), func(t *testing.T) {
			t.Parallel()
			f, err := New(size, testOptions())
			if err != nil {
				t.Fatal(err)
			}
			addTree(t, f, files, dirs)
			img := newImage(t, size)
			if err := writeImage(t, f, img, 0); err != nil {
				t.Fatal(err)
			}
			out := checkFsck(t, img, referenceLines(t, size))
			checkMtools(t, img, files, dirs)
			if testing.Verbose() {
				t.Logf("fsck.fat -n -v:\n%s", out)
			}
		})
	}
}

func TestTooSmall(t *testing.T) {
	for _, size := range []int64{0, 1 * mb, 32 * mb, MinFSSize - 512, MinFSSize - 1} {
		_, err := New(size, testOptions())
		if err == nil {
			t.Fatalf("New(%d) succeeded", size)
		}
		if !strings.Contains(err.Error(), "too small") || !strings.Contains(err.Error(), "32.51 MiB") {
			t.Errorf("New(%d): unclear error: %v", size, err)
		}
	}
	if _, err := New(MinFSSize, testOptions()); err != nil {
		t.Fatalf("New(MinFSSize): %v", err)
	}
	if _, err := New(3<<40, testOptions()); err == nil {
		t.Fatal("New(3 TiB) succeeded")
	}
}

// TestMinimum checks the smallest filesystem and the tier boundaries.
func TestMinimum(t *testing.T) {
	needTool(t, "fsck.fat", "mkfs.fat", "mdir", "mcopy", "minfo")
	for _, size := range []int64{MinFSSize, 260 * mb, 260*mb + 512, 64*mb - 512, 64*mb + 512} {
		f, err := New(size, testOptions())
		if err != nil {
			t.Fatal(err)
		}
		files := []testFile{{"/EFI/BOOT/BOOTX64.EFI", randBytes(3, 5000)}}
		addTree(t, f, files, nil)
		img := newImage(t, size)
		if err := writeImage(t, f, img, 0); err != nil {
			t.Fatal(err)
		}
		out, err := run(t, "fsck.fat", "-n", img)
		if err != nil || strings.Count(out, "\n") != 2 {
			t.Errorf("size %d: fsck.fat -n: %v\n%s", size, err, out)
		}
		checkMtools(t, img, files, nil)
	}
}

func TestGeometry(t *testing.T) {
	for ts := uint64(MinFSSize / 512); ts < MinFSSize/512+5000; ts++ {
		checkGeometry(t, ts)
	}
	for _, ts := range []uint64{131072, 532480, 532481, 16777216, 16777217, 33554432, 67108864, 67108865, 0xFFFFFFFF} {
		checkGeometry(t, ts)
	}
}

func checkGeometry(t *testing.T, ts uint64) {
	g, err := geometryFor(ts)
	if err != nil {
		t.Fatalf("%d sectors: %v", ts, err)
	}
	// fsck.fat's view: clusters from the total sector count.
	n := (uint64(g.totSec) - reservedSectors - 2*uint64(g.fatSz)) / uint64(g.spc)
	if n != uint64(g.clusters) || n < minClusters || uint64(g.fatSz) != fatSectors(n) || uint64(g.totSec) > ts || ts-uint64(g.totSec) > uint64(g.spc)+1 {
		t.Fatalf("%d sectors: bad geometry %+v (fsck counts %d clusters)", ts, g, n)
	}
	if fitClusters(ts, g.spc) != n || sectorsFor(n+1, g.spc) <= ts {
		t.Fatalf("%d sectors: %d clusters is not the most", ts, n)
	}
}

func TestDeterminism(t *testing.T) {
	files, dirs := espTree()
	build := func(reverse bool) []byte {
		f, err := New(100*mb, testOptions())
		if err != nil {
			t.Fatal(err)
		}
		fs, ds := files, dirs
		if reverse {
			fs, ds = nil, nil
			for i := len(files) - 1; i >= 0; i-- {
				fs = append(fs, files[i])
			}
			for i := len(dirs) - 1; i >= 0; i-- {
				ds = append(ds, dirs[i])
			}
		}
		addTree(t, f, fs, ds)
		img := newImage(t, 100*mb+3*mb)
		if err := writeImage(t, f, img, 2*mb); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range b[:2*mb] {
			if c != 0 {
				t.Fatal("WriteTo wrote before its offset")
			}
		}
		return b[2*mb : 102*mb]
	}
	a, b, c := build(false), build(false), build(true)
	if !bytes.Equal(a, b) {
		t.Fatal("two builds differ")
	}
	if !bytes.Equal(a, c) {
		t.Fatal("the order of the calls changes the bytes")
	}
}

func TestSparse(t *testing.T) {
	f, err := New(1024*mb, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	addTree(t, f, []testFile{{"/EFI/BOOT/BOOTX64.EFI", randBytes(4, 2*mb)}}, []string{"/loader/entries"})
	img := newImage(t, 1024*mb)
	if err := writeImage(t, f, img, 0); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(img, &st); err != nil {
		t.Fatal(err)
	}
	if used := st.Blocks * 512; used >= 20*mb {
		t.Fatalf("the 1 GiB image allocates %d bytes", used)
	} else {
		t.Logf("1 GiB image with 2 MiB of content allocates %d KiB", used/1024)
	}
}

func TestMinSize(t *testing.T) {
	f, _ := New(64*mb, testOptions())
	if got := f.MinSize(); got != MinFSSize {
		t.Fatalf("empty MinSize = %d, want %d", got, MinFSSize)
	}
	for _, content := range []int64{10 * mb, 100 * mb, 255 * mb, 259 * mb, 300 * mb} {
		files := []testFile{{"/big", make([]byte, content)}, {"/EFI/BOOT/BOOTX64.EFI", randBytes(5, 1000)}}
		f, _ := New(MinFSSize, testOptions())
		addTree(t, f, files, []string{"/loader/entries"})
		min := f.MinSize()
		if min < int64(content) || min%512 != 0 {
			t.Fatalf("content %d: MinSize %d", content, min)
		}
		for _, size := range []int64{min, min - 512} {
			g, err := New(size, testOptions())
			if err != nil {
				if size == min {
					t.Fatalf("New(MinSize=%d): %v", size, err)
				}
				continue
			}
			addTree(t, g, files, []string{"/loader/entries"})
			if g.MinSize() != min {
				t.Fatalf("MinSize depends on the size given to New")
			}
			img := newImage(t, size)
			err = writeImage(t, g, img, 0)
			if size == min && err != nil {
				t.Fatalf("content %d, size MinSize=%d: %v", content, size, err)
			}
			if size < min && err == nil {
				t.Fatalf("content %d, size MinSize-512=%d: WriteTo succeeded", content, size)
			}
			if size == min {
				if _, err := exec.LookPath("fsck.fat"); err == nil {
					if _, out, err := fsckLines(t, img); err != nil {
						t.Fatalf("MinSize image: fsck.fat: %v\n%s", err, out)
					}
				}
			}
		}
	}
}

func TestTooMuchContent(t *testing.T) {
	f, err := New(64*mb, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	opened := false
	if err := f.AddFile("/EFI/BOOT/BOOTX64.EFI", 70*mb, func() (io.ReadCloser, error) {
		opened = true
		return io.NopCloser(bytes.NewReader(make([]byte, 70*mb))), nil
	}); err != nil {
		t.Fatal(err)
	}
	img := newImage(t, 64*mb)
	err = writeImage(t, f, img, 0)
	if err == nil || !strings.Contains(err.Error(), "MiB") || !strings.Contains(err.Error(), "64.00 MiB") || !strings.Contains(err.Error(), "does not fit") {
		t.Fatalf("WriteTo: %v", err)
	}
	t.Log(err)
	if opened {
		t.Fatal("the file was opened")
	}
	b, _ := os.ReadFile(img)
	if len(b) != 64*mb || bytes.IndexFunc(b, func(r rune) bool { return r != 0 }) >= 0 {
		t.Fatal("the target is not all zero")
	}
}

func TestBadContent(t *testing.T) {
	for _, n := range []int{999, 1001} {
		f, _ := New(64*mb, testOptions())
		data := make([]byte, n)
		data[0] = 1
		f.AddFile("/loader/loader.conf", 1000, opener(data))
		err := writeImage(t, f, newImage(t, 64*mb), 0)
		if err == nil || !strings.Contains(err.Error(), "/loader/loader.conf") {
			t.Fatalf("%d bytes for 1000: %v", n, err)
		}
	}
}

func TestNames(t *testing.T) {
	f, _ := New(64*mb, testOptions())
	ok := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	fail := func(err error) {
		t.Helper()
		if err == nil {
			t.Fatal("no error")
		}
	}
	ok(f.Mkdir("/EFI/BOOT"))
	ok(f.Mkdir("/efi/boot")) // idempotent, case-insensitive
	ok(f.Mkdir("EFI/BOOT/"))
	ok(f.AddFile("/EFI/BOOT/BOOTX64.EFI", 0, opener(nil)))
	fail(f.AddFile("/efi/boot/bootx64.efi", 0, opener(nil)))
	fail(f.Mkdir("/EFI/BOOT/BOOTX64.EFI"))
	fail(f.Mkdir("/EFI/BOOT/BOOTX64.EFI/X"))
	fail(f.AddFile("/EFI/BOOT/BOOTX64.EFI/X", 0, opener(nil)))
	fail(f.AddFile("/EFI", 0, opener(nil)))
	fail(f.AddFile("/", 0, opener(nil)))
	fail(f.AddFile("/a?b", 0, opener(nil)))
	fail(f.AddFile("/a/../b", 0, opener(nil)))
	fail(f.AddFile("/trailing.", 0, opener(nil)))
	fail(f.AddFile("/"+strings.Repeat("x", 256), 0, opener(nil)))
	ok(f.AddFile("/"+strings.Repeat("x", 255), 0, opener(nil)))
	fail(f.AddFile("/neg", -1, opener(nil)))
	fail(f.AddFile("/big", 1<<32, opener(nil)))
	if _, err := New(64*mb, Options{Label: "TOO LONG LABEL"}); err == nil {
		t.Fatal("long label accepted")
	}
	if _, err := New(64*mb, Options{Label: "a.b"}); err == nil {
		t.Fatal("label with '.' accepted")
	}

	// Short names.
	for _, tc := range []struct{ long, base, ext string }{
		{"loader.conf", "LOADER", "CON"},
		{"Some Long Name.conf", "SOMELONG", "CON"},
		{".bashrc", "BASHRC", ""},
		{"a.b.c.d", "ABC", "D"},
		{"A+B=C;D.TXT", "A_B_C_D", "TXT"},
	} {
		b, e := basisName(tc.long)
		if b != tc.base || e != tc.ext {
			t.Errorf("basisName(%q) = %q %q, want %q %q", tc.long, b, e, tc.base, tc.ext)
		}
	}
	d := &node{dir: true, index: map[string]*node{}}
	for _, n := range []string{"loader.conf", "loader.config", "LOADER~1.CON", "readme", "README.TXT", "readme.txt2"} {
		d.add(&node{name: n})
	}
	kids := d.sortedChildren()
	if err := d.assignShortNames(kids); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, c := range d.children {
		got[c.name] = string(c.short[:])
		if (c.lfn == nil) != (c.name == "LOADER~1.CON" || c.name == "README.TXT") {
			t.Errorf("%s: long-name entries %v", c.name, c.lfn != nil)
		}
	}
	want := map[string]string{
		"LOADER~1.CON":  "LOADER~1CON",
		"loader.conf":   "LOADER~2CON",
		"loader.config": "LOADER~3CON",
		"readme":        "README     ",
		"README.TXT":    "README  TXT",
		"readme.txt2":   "README~1TXT",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("short name of %q = %q, want %q", k, got[k], v)
		}
	}
	// The checksum of the FAT specification's algorithm.
	if s := shortChecksum(makeShort("README", "TXT")); s != checksumRef([]byte("README  TXT")) {
		t.Errorf("checksum %#x", s)
	}
}

// checksumRef is the FAT specification's ChkSum, written differently.
func checksumRef(name []byte) byte {
	var sum uint8
	for _, c := range name {
		var carry uint8
		if sum&1 != 0 {
			carry = 0x80
		}
		sum = carry + (sum >> 1) + c
	}
	return sum
}

func TestBootSector(t *testing.T) {
	f, err := New(100*mb, Options{Label: "ESP", VolumeID: 7, HiddenSectors: 2048, Time: testTime})
	if err != nil {
		t.Fatal(err)
	}
	addTree(t, f, []testFile{{"/x", []byte("x")}}, nil)
	img := newImage(t, 100*mb)
	if err := writeImage(t, f, img, 0); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(img)
	le := binary.LittleEndian
	if !bytes.Equal(b[:512], b[6*512:7*512]) || !bytes.Equal(b[512:1024], b[7*512:8*512]) {
		t.Fatal("backups differ")
	}
	if le.Uint32(b[28:]) != 2048 || b[13] != 1 || le.Uint16(b[14:]) != 32 || b[21] != 0xF8 || le.Uint16(b[510:]) != 0xAA55 {
		t.Fatalf("BPB: % x", b[:90])
	}
	fat := b[32*512:]
	if le.Uint32(fat) != 0x0FFFFFF8 || le.Uint32(fat[4:]) != 0x0FFFFFFF || le.Uint32(fat[8:]) != 0x0FFFFFFF {
		t.Fatalf("FAT: % x", fat[:16])
	}
	clusters := f.geo.clusters
	if free := le.Uint32(b[512+488:]); free != clusters-2 {
		t.Fatalf("free %d of %d", free, clusters)
	}
	if next := le.Uint32(b[512+492:]); next != 4 {
		t.Fatalf("next free %d", next)
	}
}
