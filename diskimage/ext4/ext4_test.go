package ext4

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

const MiB = 1 << 20

var testUUID = [16]byte{0x6a, 0x0b, 0x2c, 0x1d, 0x4e, 0x5f, 0x40, 0x61, 0x82, 0x93, 0xa4, 0xb5, 0xc6, 0xd7, 0xe8, 0xf9}

func testOpts(journal int64) Options {
	return Options{
		Label:        "aof-test",
		UUID:         testUUID,
		HashSeed:     [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		Time:         testTime,
		JournalBytes: journal,
	}
}

func dumpe2fsHeader(t *testing.T, img string) map[string]string {
	t.Helper()
	out, err := exec.Command(tool(t, "dumpe2fs"), "-h", img).CombinedOutput()
	if err != nil {
		t.Fatalf("dumpe2fs: %v\n%s", err, out)
	}
	h := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			h[k] = strings.TrimSpace(v)
		}
	}
	return h
}

func TestEmpty(t *testing.T) {
	for _, tc := range []struct {
		name    string
		journal int64
		size    int64
	}{
		{"journal", 0, 16 * MiB},
		{"nojournal", -1, 16 * MiB},
		{"journal-600M", 0, 600 * MiB},
		{"journal-explicit", 8 * MiB, 600 * MiB},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := New(testOpts(tc.journal))
			img := writeImage(t, f, tc.size)
			fsck(t, img)
			h := dumpe2fsHeader(t, img)
			feats := "ext_attr dir_index filetype extent sparse_super large_file huge_file dir_nlink extra_isize"
			if tc.journal >= 0 {
				feats = "has_journal " + feats
			}
			checks := map[string]string{
				"Filesystem volume name":  "aof-test",
				"Filesystem UUID":         "6a0b2c1d-4e5f-4061-8293-a4b5c6d7e8f9",
				"Filesystem magic number": "0xEF53",
				"Filesystem features":     feats,
				"Block size":              "4096",
				"Inode size":              "256",
				"Filesystem state":        "clean",
				"Errors behavior":         "Continue",
				"Default directory hash":  "half_md4",
				"Directory Hash Seed":     "01020304-0506-0708-090a-0b0c0d0e0f10",
				"Default mount options":   "user_xattr acl",
				"Maximum mount count":     "-1",
				"First inode":             "11",
				"Blocks per group":        "32768",
				"Block count":             fmt.Sprint(tc.size / blockSize),
			}
			if tc.journal > 0 {
				checks["Total journal size"] = "8M"
			}
			if tc.journal == 0 && tc.size == 600*MiB {
				checks["Total journal size"] = "16M"
			}
			for k, v := range checks {
				if h[k] != v {
					t.Errorf("dumpe2fs %s = %q, want %q", k, h[k], v)
				}
			}
			if dir := mountImage(t, img); dir != "" {
				tr := newTree(t, testOpts(tc.journal))
				tr.finish()
				compareMounted(t, dir, tr)
			}
		})
	}
}

// TestRich writes the full test tree with and without journal, checks it
// with e2fsck, debugfs and (as root) a loop mount.
func TestRich(t *testing.T) {
	for _, tc := range []struct {
		name    string
		journal int64
		size    int64
	}{
		{"journal-600M", 0, 600 * MiB},
		{"nojournal-16M", -1, 16 * MiB},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTree(t, testOpts(tc.journal))
			buildRich(tr)
			tr.finish()
			img := writeImage(t, tr.f, tc.size)
			fsck(t, img)

			st := debugfs(t, img, "stat /links/a")
			for _, re := range []string{`Type: regular\s+Mode:\s+0644`, `Links: 3`, `Size: 15\b`, `EXTENTS:\n\(0\):\d+`} {
				if !regexp.MustCompile(re).MatchString(st) {
					t.Errorf("debugfs stat /links/a: no %q in\n%s", re, st)
				}
			}
			st = debugfs(t, img, "stat /dir/bigids")
			if !regexp.MustCompile(`User: (4000000000|-294967296)\s+Group:\s+65536`).MatchString(st) {
				t.Errorf("debugfs stat /dir/bigids:\n%s", st)
			}
			st = debugfs(t, img, "stat /immutable")
			if !regexp.MustCompile(`Flags: 0x80010\b`).MatchString(st) {
				t.Errorf("debugfs stat /immutable:\n%s", st)
			}
			st = debugfs(t, img, "stat /xattr/large")
			if !strings.Contains(st, "File ACL: ") || strings.Contains(st, "File ACL: 0") ||
				!strings.Contains(st, `user.a (100)`) || !strings.Contains(st, `trusted.c (60)`) {
				t.Errorf("debugfs stat /xattr/large (external xattr block):\n%s", st)
			}
			st = debugfs(t, img, "stat /xattr/cap")
			if !strings.Contains(st, "File ACL: 0") || !strings.Contains(st, "security.capability (20)") {
				t.Errorf("debugfs stat /xattr/cap (in-inode xattr):\n%s", st)
			}
			st = debugfs(t, img, "stat /sym/fast")
			if !strings.Contains(st, `Fast link dest: "../one"`) {
				t.Errorf("debugfs stat /sym/fast:\n%s", st)
			}
			if ls := debugfs(t, img, "ls -l /many"); strings.Count(ls, "entry-with-a-longish-name-") != 5000 {
				t.Errorf("debugfs ls /many: %d entries", strings.Count(ls, "entry-with-a-longish-name-"))
			}
			if cat := debugfs(t, img, "cat /multi"); !strings.HasPrefix(cat[strings.Index(cat, "0123"):], "0123456789abcdef0123") {
				t.Errorf("debugfs cat /multi: %.100q", cat)
			}
			if dir := mountImage(t, img); dir != "" {
				compareMounted(t, dir, tr)
			}
		})
	}
}

// TestLarge writes a 700 MiB generated file (depth-1 extent tree across
// several groups) with the rich tree into a 5 GiB sparse image.
func TestLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	tr := newTree(t, testOpts(0))
	buildRich(tr)
	tr.mkdir("/big", Meta{Mode: 0o755, Mtime: testTime})
	tr.gen("/big/file", Meta{Mode: 0o644, Mtime: testTime}, 42, 700*MiB+1234)
	tr.gen("/big/medium", Meta{Mode: 0o644, Mtime: testTime}, 43, 20*MiB)
	tr.finish()
	img := writeImage(t, tr.f, 5<<30)
	fsck(t, img)
	st := debugfs(t, img, "stat /big/file")
	if !strings.Contains(st, "(ETB0)") || !regexp.MustCompile(`Size: 734004434\b`).MatchString(st) {
		t.Errorf("debugfs stat /big/file (want a depth-1 extent tree):\n%s", st)
	}
	h := dumpe2fsHeader(t, img)
	if h["Total journal size"] != "64M" {
		t.Errorf("journal size %q, want 64M", h["Journal size"])
	}
	if dir := mountImage(t, img); dir != "" {
		compareMounted(t, dir, tr)
	}
}

func sha256File(t *testing.T, p string) [32]byte {
	t.Helper()
	fh, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	h := sha256.New()
	if _, err := io.Copy(h, fh); err != nil {
		t.Fatal(err)
	}
	var s [32]byte
	h.Sum(s[:0])
	return s
}

// TestDeterminism: the same tree built in different call orders gives
// byte-identical images.
func TestDeterminism(t *testing.T) {
	build := func(reverse bool) string {
		f := New(testOpts(0))
		type entry struct {
			dir, name string
		}
		var entries []entry
		for _, d := range []string{"a", "b", "c"} {
			for i := range 50 {
				entries = append(entries, entry{d, fmt.Sprintf("f%02d", i)})
			}
		}
		dirs := []string{"a", "b", "c"}
		if reverse {
			for i, j := 0, len(entries)-1; i < j; i, j = i+1, j-1 {
				entries[i], entries[j] = entries[j], entries[i]
			}
			dirs = []string{"c", "b", "a"}
		}
		nodes := map[string]*Node{}
		for _, d := range dirs {
			n, err := f.Mkdir(f.Root(), d, Meta{Mode: 0o755, Mtime: testTime})
			if err != nil {
				t.Fatal(err)
			}
			nodes[d] = n
		}
		for _, e := range entries {
			content := []byte(e.dir + e.name + strings.Repeat("z", len(e.name)*1000))
			_, err := f.Create(nodes[e.dir], e.name, Meta{Mode: 0o644, UID: 1, Mtime: testTime,
				Xattrs: []Xattr{{"user.b", []byte(e.name)}, {"user.a", []byte(e.dir)}}}, int64(len(content)),
				func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(content)), nil })
			if err != nil {
				t.Fatal(err)
			}
		}
		// Hard links in a different order too.
		links := [][2]string{{"a", "f01"}, {"b", "f02"}}
		if reverse {
			links[0], links[1] = links[1], links[0]
		}
		for _, l := range links {
			if err := f.Link(nodes["c"], "link-"+l[0]+l[1], f.Lookup(nodes[l[0]], l[1])); err != nil {
				t.Fatal(err)
			}
		}
		return writeImage(t, f, 64*MiB)
	}
	a, b, c := build(false), build(false), build(true)
	sa, sb, sc := sha256File(t, a), sha256File(t, b), sha256File(t, c)
	if sa != sb {
		t.Error("same calls gave different images")
	}
	if sa != sc {
		t.Error("different call order gave different images")
	}
	fsck(t, a)
}

// TestSparse: a 1 GiB image with 10 MiB of content stays small on disk.
func TestSparse(t *testing.T) {
	f := New(testOpts(0))
	d, _ := f.Mkdir(f.Root(), "data", Meta{Mode: 0o755})
	for i := range 10 {
		content := bytes.Repeat([]byte{byte(i + 1)}, MiB)
		if _, err := f.Create(d, fmt.Sprint(i), Meta{Mode: 0o644}, MiB, func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(content)), nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	img := writeImage(t, f, 1<<30)
	var st syscall.Stat_t
	if err := syscall.Stat(img, &st); err != nil {
		t.Fatal(err)
	}
	alloc := st.Blocks * 512
	t.Logf("1 GiB image with 10 MiB of files: %.1f MiB allocated", float64(alloc)/MiB)
	if alloc > 30*MiB {
		t.Errorf("image allocates %d bytes, want well under 100 MiB", alloc)
	}
	fsck(t, img)
}

// TestMinSize: MinSize fits exactly; one block less fails before writing.
func TestMinSize(t *testing.T) {
	for _, tc := range []struct {
		name    string
		journal int64
		rich    bool
	}{
		{"empty-journal", 0, false},
		{"empty-nojournal", -1, false},
		{"rich-journal", 0, true},
		{"rich-nojournal", -1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTree(t, testOpts(tc.journal))
			if tc.rich {
				buildRich(tr)
				tr.gen("/big", Meta{Mode: 0o644}, 7, 150*MiB)
			}
			min := tr.f.MinSize()
			t.Logf("MinSize = %d (%.2f MiB)", min, float64(min)/MiB)
			if min <= 0 || min%blockSize != 0 {
				t.Fatalf("MinSize = %d", min)
			}
			img := writeImage(t, tr.f, min)
			fsck(t, img)

			small := sparseImage(t, min-blockSize)
			fh, err := os.OpenFile(small, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer fh.Close()
			err = tr.f.WriteTo(fh, 0, min-blockSize)
			if err == nil || !strings.Contains(err.Error(), "MiB") {
				t.Fatalf("WriteTo(MinSize-4096) = %v, want a too-small error", err)
			}
			t.Log(err)
			var st syscall.Stat_t
			if err := syscall.Stat(small, &st); err != nil {
				t.Fatal(err)
			}
			if st.Blocks != 0 {
				t.Errorf("failed WriteTo wrote %d sectors", st.Blocks)
			}
		})
	}
}

// TestOffset writes at an offset inside a bigger file (as into a partition)
// and leaves the bytes before it alone.
func TestOffset(t *testing.T) {
	f := New(testOpts(-1))
	if _, err := f.Create(f.Root(), "x", Meta{Mode: 0o644}, 5, func() (io.ReadCloser, error) {
		return io.NopCloser(strings.NewReader("hello")), nil
	}); err != nil {
		t.Fatal(err)
	}
	const off = 1 * MiB
	img := sparseImage(t, off+16*MiB)
	fh, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	marker := bytes.Repeat([]byte{0xAA}, 4096)
	if _, err := fh.WriteAt(marker, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.WriteTo(fh, off, 16*MiB); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4096)
	if _, err := fh.ReadAt(got, 0); err != nil || !bytes.Equal(got, marker) {
		t.Error("bytes before the offset changed")
	}
	fh.Close()
	out, err := exec.Command(tool(t, "e2fsck"), "-fn", img+"?offset="+fmt.Sprint(off)).CombinedOutput()
	if err != nil {
		t.Fatalf("e2fsck at offset: %v\n%s", err, out)
	}
}

func TestAPIErrors(t *testing.T) {
	f := New(testOpts(0))
	root := f.Root()
	m := Meta{Mode: 0o644}
	file, err := f.Create(root, "file", m, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := f.Mkdir(root, "dir", m)
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"empty", func() error { _, err := f.Mkdir(root, "", m); return err }(), "/: empty name"},
		{"slash", func() error { _, err := f.Mkdir(dir, "a/b", m); return err }(), "/dir/a/b: name contains"},
		{"nul", func() error { _, err := f.Create(dir, "a\x00", m, 0, nil); return err }(), "contains '/' or NUL"},
		{"dot", func() error { _, err := f.Symlink(dir, ".", m, "x"); return err }(), `/dir/.: invalid name "."`},
		{"dotdot", func() error { _, err := f.Mkdir(dir, "..", m); return err }(), `invalid name ".."`},
		{"long", func() error { _, err := f.Mkdir(dir, strings.Repeat("n", 256), m); return err }(), "256 bytes, at most 255"},
		{"dup", func() error { _, err := f.Mkdir(root, "file", m); return err }(), "/file: already exists"},
		{"dup-lost+found", func() error { _, err := f.Mkdir(root, "lost+found", m); return err }(), "/lost+found: already exists"},
		{"dup-link", f.Link(root, "dir", file), "/dir: already exists"},
		{"link-dir", f.Link(root, "d2", dir), "/d2: cannot hard link to directory /dir"},
		{"parent-file", func() error { _, err := f.Mkdir(file, "x", m); return err }(), "/file/x: parent /file is not a directory"},
		{"no-content", func() error { _, err := f.Create(root, "nc", m, 5, nil); return err }(), "/nc: no content"},
		{"bad-xattr", func() error {
			_, err := f.Create(root, "bx", Meta{Xattrs: []Xattr{{"foo.bar", nil}}}, 0, nil)
			return err
		}(), "/bx: xattr \"foo.bar\": unsupported namespace"},
		{"dup-xattr", func() error {
			_, err := f.Create(root, "dx", Meta{Xattrs: []Xattr{{"user.a", nil}, {"user.a", nil}}}, 0, nil)
			return err
		}(), "duplicate xattr \"user.a\""},
		{"too-many-xattrs", func() error {
			_, err := f.Create(root, "tx", Meta{Xattrs: []Xattr{{"user.a", make([]byte, 3000)}, {"user.b", make([]byte, 3000)}}}, 0, nil)
			return err
		}(), "xattrs need more than"},
		{"flags", func() error { _, err := f.Mkdir(root, "fl", Meta{Flags: 0x80000}); return err }(), "unsupported inode flags"},
		{"symlink-empty", func() error { _, err := f.Symlink(root, "s", m, ""); return err }(), "/s: invalid symlink target"},
	} {
		if tc.err == nil || !strings.Contains(tc.err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, tc.err, tc.want)
		}
	}
	if f.Lookup(root, "file") != file || f.Lookup(root, "nope") != nil || f.Lookup(file, "x") != nil {
		t.Error("Lookup")
	}
	if err := New(Options{Label: strings.Repeat("L", 17)}).WriteTo(discard{}, 0, 16*MiB); err == nil || !strings.Contains(err.Error(), "label") {
		t.Errorf("long label: %v", err)
	}
	g := New(testOpts(0))
	g.SetMeta(g.Root(), Meta{Flags: 1 << 30})
	if err := g.WriteTo(discard{}, 0, 16*MiB); err == nil || !strings.Contains(err.Error(), "/: unsupported inode flags") {
		t.Errorf("SetMeta bad flags: %v", err)
	}
	if err := New(testOpts(0)).WriteTo(discard{}, 0, 17<<40); err == nil || !strings.Contains(err.Error(), "16 TiB") {
		t.Errorf("17 TiB: %v", err)
	}
}

type discard struct{}

func (discard) WriteAt(p []byte, off int64) (int, error) { return len(p), nil }

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// TestContentErrors: a failing open, a short and a long file each fail
// WriteTo with the file's path.
func TestContentErrors(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name string
		size int64
		open func() (io.ReadCloser, error)
		want string
	}{
		{"open", 10, func() (io.ReadCloser, error) { return nil, boom }, "/d/open: open: boom"},
		{"short", 10 * MiB, func() (io.ReadCloser, error) { return newGen(1, 10*MiB-1), nil }, "/d/short: content is 10485759 bytes, expected 10485760"},
		{"long", 10, func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader("12345678901")), nil }, "/d/long: content is longer than 10 bytes"},
		{"read", 10, func() (io.ReadCloser, error) { return io.NopCloser(errReader{boom}), nil }, "/d/read: read: boom"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := New(testOpts(0))
			d, _ := f.Mkdir(f.Root(), "d", Meta{Mode: 0o755})
			for i := range 20 { // other files keep the workers busy
				f.Create(d, fmt.Sprint(i), Meta{Mode: 0o644}, MiB, func() (io.ReadCloser, error) { return newGen(int64(i), MiB), nil })
			}
			if _, err := f.Create(d, tc.name, Meta{Mode: 0o644}, tc.size, tc.open); err != nil {
				t.Fatal(err)
			}
			err := f.WriteTo(discard{}, 0, 64*MiB)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("WriteTo = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestMountRW mounts the rich tree read-write (as root), lets the kernel
// allocate, modify and free inodes and blocks, and checks with e2fsck that
// the bitmaps, counts and directories it found were consistent.
func TestMountRW(t *testing.T) {
	tr := newTree(t, testOpts(0))
	buildRich(tr)
	tr.finish()
	img := writeImage(t, tr.f, 64*MiB)
	if os.Geteuid() != 0 {
		t.Skip("not root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("timeout", "60", "mount", "-t", "ext4", "-o", "loop", img, dir).CombinedOutput(); err != nil {
		t.Skipf("mount: %v\n%s", err, out)
	}
	mounted := true
	umount := func() {
		if mounted {
			if out, err := exec.Command("timeout", "60", "umount", dir).CombinedOutput(); err != nil {
				t.Errorf("umount: %v\n%s", err, out)
			}
			mounted = false
		}
	}
	t.Cleanup(umount)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(dir+"/new", bytes.Repeat([]byte("n"), 5*MiB), 0o644))
	must(os.WriteFile(dir+"/many/new-entry", []byte("x"), 0o644))
	must(os.Mkdir(dir+"/dir/a/b/c/new", 0o755))
	must(os.Remove(dir + "/links/b"))
	must(os.Remove(dir + "/xattr/large"))
	must(os.RemoveAll(dir + "/many/entry-with-a-longish-name-00100"))
	must(os.WriteFile(dir+"/multi", []byte("truncated"), 0o644))
	must(syscall.Setxattr(dir+"/one", "user.new", bytes.Repeat([]byte("v"), 500), 0))
	must(os.Symlink(strings.Repeat("s", 100), dir+"/sym/new"))
	umount()
	fsck(t, img)
}

// TestDirNlink: a directory with more than 65000 subdirectories gets link
// count 1 (dir_nlink), which e2fsck accepts.
func TestDirNlink(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	f := New(testOpts(-1))
	d, _ := f.Mkdir(f.Root(), "d", Meta{Mode: 0o755})
	for i := range maxLinks {
		if _, err := f.Mkdir(d, fmt.Sprint(i), Meta{Mode: 0o755}); err != nil {
			t.Fatal(err)
		}
	}
	img := writeImage(t, f, f.MinSize())
	fsck(t, img)
	if st := debugfs(t, img, "stat /d"); !strings.Contains(st, "Links: 1 ") {
		t.Errorf("debugfs stat /d:\n%.300s", st)
	}
}

type zeroReader struct{ n int64 }

func (z *zeroReader) Read(p []byte) (int, error) {
	if z.n <= 0 {
		return 0, io.EOF
	}
	k := int(min(int64(len(p)), z.n))
	clear(p[:k])
	z.n -= int64(k)
	return k, nil
}

// TestHugeFile: a file above 4 GiB (i_size_high, many groups, depth-1
// extent tree); its zero content is never written, so this is cheap.
func TestHugeFile(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	const size = 4<<30 + 12345
	f := New(testOpts(0))
	if _, err := f.Create(f.Root(), "huge", Meta{Mode: 0o600, Mtime: testTime}, size, func() (io.ReadCloser, error) {
		return io.NopCloser(&zeroReader{size}), nil
	}); err != nil {
		t.Fatal(err)
	}
	img := writeImage(t, f, 5<<30)
	fsck(t, img)
	st := debugfs(t, img, "stat /huge")
	if !strings.Contains(st, fmt.Sprintf("Size: %d", size)) || !strings.Contains(st, "(ETB0)") {
		t.Errorf("debugfs stat /huge:\n%.600s", st)
	}
	var fst syscall.Stat_t
	if err := syscall.Stat(img, &fst); err != nil {
		t.Fatal(err)
	}
	if fst.Blocks*512 > 64*MiB {
		t.Errorf("image allocates %d bytes for a zero file", fst.Blocks*512)
	}
}
