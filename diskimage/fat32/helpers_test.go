package fat32

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/apt-ostree/apt-ostree-factory/internal/testenv"
)

const mb = 1 << 20

// needTool skips the test when a tool is missing (fails under
// AOF_REQUIRE_TOOLS=1).
func needTool(t *testing.T, names ...string) {
	t.Helper()
	for _, name := range names {
		testenv.Tool(t, name)
	}
}

type testFile struct {
	path string
	data []byte
}

var testTime = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

func testOptions() Options {
	return Options{Label: "esp", VolumeID: 0x1234ABCD, Time: testTime}
}

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 42))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// espTree is the test content: the files and the empty directories.
func espTree() (files []testFile, dirs []string) {
	drv := randBytes(2, 300*1024)
	clear(drv[64*1024 : 200*1024]) // a run of zero sectors, not written
	files = []testFile{
		{"/EFI/BOOT/BOOTX64.EFI", randBytes(1, 1<<20)},
		{"/EFI/systemd/drivers/ext4x64.efi", drv},
		{"/loader/loader.conf", []byte("timeout 3\nconsole-mode keep\neditor no\n")},
		{"/EFI/Linux/Some Long Mixed-Case Name (v1.2.3).conf", []byte("title Some\n")},
		{"/EFI/Linux/ünïcode-名前.txt", []byte("unicode\n")},
		{"/loader/random-seed", nil},
		{"/EMPTY", nil},
		{"/a.b.c.d", []byte("dots")},
		{"/lower.txt", []byte("lower")},
		{"/MiXeD", []byte("mixed")},
		{"/A+B=C;D.TXT", []byte("lossy")},
	}
	for i := 0; i < 100; i++ {
		files = append(files, testFile{fmt.Sprintf("/many/file-with-a-longer-name-%03d.txt", i), []byte(fmt.Sprintf("file %d\n", i))})
	}
	return files, []string{"/loader/entries", "/EFI/BOOT"}
}

func opener(b []byte) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

func addTree(t *testing.T, f *FS, files []testFile, dirs []string) {
	t.Helper()
	for _, d := range dirs {
		if err := f.Mkdir(d); err != nil {
			t.Fatal(err)
		}
	}
	for _, fl := range files {
		if err := f.AddFile(fl.path, int64(len(fl.data)), opener(fl.data)); err != nil {
			t.Fatal(err)
		}
	}
}

// newImage makes a sparse file of size bytes.
func newImage(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "esp.img")
	fh, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if err := fh.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return p
}

// writeImage writes f at offset off of the file at p.
func writeImage(t *testing.T, f *FS, p string, off int64) error {
	t.Helper()
	fh, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	return f.WriteTo(fh, off)
}

func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

var (
	quoted = regexp.MustCompile(`"[^"]*"`)
	digits = regexp.MustCompile(`[0-9]+`)
)

// fsckLines runs fsck.fat -n -v and returns its normalized output lines
// (image path, quoted strings and numbers replaced).
func fsckLines(t *testing.T, img string) ([]string, string, error) {
	t.Helper()
	out, err := run(t, "fsck.fat", "-n", "-v", img)
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		l = strings.ReplaceAll(l, img, "IMG")
		l = quoted.ReplaceAllString(l, `"S"`)
		l = digits.ReplaceAllString(l, "N")
		lines = append(lines, strings.Join(strings.Fields(l), " "))
	}
	return lines, out, err
}

// referenceLines is fsckLines for a fresh mkfs.fat -F 32 image of size.
func referenceLines(t *testing.T, size int64) map[string]bool {
	t.Helper()
	img := newImage(t, size)
	if out, err := run(t, "mkfs.fat", "-F", "32", "-n", "ESP", "-i", "1234ABCD", img); err != nil {
		t.Fatalf("mkfs.fat: %v\n%s", err, out)
	}
	lines, out, err := fsckLines(t, img)
	if err != nil {
		t.Fatalf("fsck.fat on the mkfs.fat image: %v\n%s", err, out)
	}
	set := map[string]bool{}
	for _, l := range lines {
		set[l] = true
	}
	return set
}

var problemWords = []string{"uninitialized", "should be", "clusters but", "free cluster summary wrong", "dirty", "differ", "reclaim", "orphan", "invalid", "bad", "wrong", "truncat", "fixing", "lfn", "mismatch", "not ", "error", "warning"}

// checkFsck runs fsck.fat -n -v on img and fails on a non-zero exit or
// any line a fresh mkfs.fat image of the same size does not also give.
func checkFsck(t *testing.T, img string, ref map[string]bool) string {
	t.Helper()
	lines, out, err := fsckLines(t, img)
	if err != nil {
		t.Errorf("fsck.fat -n -v: %v\n%s", err, out)
	}
	for _, l := range lines {
		if !ref[l] {
			t.Errorf("fsck.fat printed a line mkfs.fat's image does not give: %q\n%s", l, out)
		}
		ll := strings.ToLower(l)
		for _, w := range problemWords {
			if strings.Contains(ll, w) && !strings.HasPrefix(ll, "checking") {
				t.Errorf("fsck.fat: %q looks like a problem\n%s", l, out)
			}
		}
	}
	return out
}

// checkMtools checks the listing, the label, the serial and every file's
// bytes with mtools.
func checkMtools(t *testing.T, img string, files []testFile, dirs []string) {
	t.Helper()
	out, err := run(t, "mdir", "-/", "-b", "-i", img, "::/")
	if err != nil {
		t.Fatalf("mdir: %v\n%s", err, out)
	}
	listed := map[string]bool{}
	for _, l := range strings.Split(out, "\n") {
		listed[strings.TrimSuffix(strings.TrimPrefix(l, "::"), "/")] = true
	}
	want := map[string]bool{}
	for _, d := range dirs {
		want[d] = true
	}
	for _, f := range files {
		want[f.path] = true
	}
	for p := range want {
		for q := p; q != "/" && q != "."; q = filepath.Dir(q) {
			if !listed[q] {
				t.Errorf("mdir -/ does not list %s\n%s", q, out)
			}
		}
	}
	out, err = run(t, "minfo", "-i", img, "::")
	if err != nil {
		t.Fatalf("minfo: %v\n%s", err, out)
	}
	for _, s := range []string{`disk label="ESP        "`, "serial number: 1234ABCD", `disk type="FAT32   "`} {
		if !strings.Contains(out, s) {
			t.Errorf("minfo does not show %s\n%s", s, out)
		}
	}
	for _, f := range files {
		cmd := exec.Command("mcopy", "-n", "-i", img, "::"+f.path, "-")
		cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		got, err := cmd.Output()
		if err != nil {
			t.Errorf("mcopy %s: %v\n%s", f.path, err, stderr.String())
			continue
		}
		if !bytes.Equal(got, f.data) {
			t.Errorf("mcopy %s: got %d bytes, differ from the %d added", f.path, len(got), len(f.data))
		}
	}
}
