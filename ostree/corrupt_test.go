package ostree_test

// Corruption detection: a corrupted object (one byte flipped), a missing
// object and a truncated object are reported by Verify and `aof fsck`, and
// reading them through the API returns an error naming the object. `ostree
// fsck` is run on every corrupted repository to confirm that the corruption
// is real. The helpers crashRequireOstree, crashBuildCLI and crashRun come
// from crash_test.go.

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apt-ostree/apt-ostree-factory/ostree"
)

// corruptFixture is a small committed repository and the objects of it that
// the tests damage.
type corruptFixture struct {
	repo    string
	commit  ostree.Checksum
	tree    ostree.Checksum // root dirtree
	subTree ostree.Checksum // dirtree of sub/
	subMeta ostree.Checksum // dirmeta of sub/ (differs from the root's)
	big     ostree.Checksum // regular file, multi-block deflate payload
	hello   ostree.Checksum // small regular file
	xattr   ostree.Checksum // regular file with extended attributes
	link    ostree.Checksum // symlink
}

func corruptMakeFixture(t *testing.T) *corruptFixture {
	t.Helper()
	repoPath := filepath.Join(t.TempDir(), "repo")
	r, err := ostree.Init(repoPath)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	big := make([]byte, 300<<10)
	for i := range big {
		big[i] = "abcdefghijklmnop \n"[rng.IntN(18)]
	}
	reg := func(mode uint32, data []byte, xs ...ostree.Xattr) *ostree.MemFile {
		return &ostree.MemFile{Header: ostree.FileHeader{FileMeta: ostree.FileMeta{Mode: ostree.ModeRegular | mode, Xattrs: xs}, Size: uint64(len(data))}, Data: data}
	}
	root := ostree.NewMemDir(ostree.FileMeta{Mode: ostree.ModeDir | 0o755})
	root.Files["big"] = reg(0o644, big)
	root.Files["hello"] = reg(0o644, []byte("hello\n"))
	root.Files["empty"] = reg(0o600, []byte{}) // nil Data is rejected as "regular file without content"
	root.Files["xattr"] = reg(0o755, []byte("with attributes\n"),
		ostree.Xattr{Name: "user.one", Value: []byte("1")}, ostree.Xattr{Name: "user.two", Value: []byte("second value")})
	root.Files["link"] = &ostree.MemFile{Header: ostree.FileHeader{FileMeta: ostree.FileMeta{Mode: ostree.ModeSymlink | 0o777}, Symlink: "sub/x"}}
	sub := ostree.NewMemDir(ostree.FileMeta{Mode: ostree.ModeDir | 0o700, UID: 1000, GID: 1000})
	sub.Files["x"] = reg(0o644, []byte("x\n"))
	root.Dirs["sub"] = sub
	res, err := r.CommitTree(context.Background(), root, ostree.CommitOptions{
		Branch: "main", Subject: "corruption fixture", Timestamp: time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC),
	})
	if err != nil {
		t.Fatal(err)
	}
	dt, err := r.ReadDirTree(res.Commit.RootTree)
	if err != nil {
		t.Fatal(err)
	}
	fx := &corruptFixture{repo: repoPath, commit: res.Checksum, tree: res.Commit.RootTree}
	for _, d := range dt.Dirs {
		if d.Name == "sub" {
			fx.subTree, fx.subMeta = d.Tree, d.Meta
		}
	}
	files := map[string]*ostree.Checksum{"big": &fx.big, "hello": &fx.hello, "xattr": &fx.xattr, "link": &fx.link}
	for _, f := range dt.Files {
		if p := files[f.Name]; p != nil {
			*p = f.Checksum
		}
	}
	if fx.subMeta == res.Commit.RootMeta || fx.big.IsZero() || fx.link.IsZero() || fx.subTree.IsZero() {
		t.Fatalf("fixture objects not as expected: %+v", fx)
	}
	return fx
}

// corruptObjectPath returns the file of an object in an archive repository.
func corruptObjectPath(repo string, c ostree.Checksum, ext string) string {
	h := c.String()
	return filepath.Join(repo, "objects", h[:2], h[2:]+"."+ext)
}

// corruptCopyDir copies a directory tree of regular files and directories.
func corruptCopyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(out, info.Mode().Perm()|0o700)
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(out, b, info.Mode().Perm())
		}
		return fmt.Errorf("%s: unexpected file type %v", p, d.Type())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// corruptFlipByte inverts every bit of the byte at off.
func corruptFlipByte(t *testing.T, path string, off int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if off < 0 || off >= len(b) {
		t.Fatalf("%s: offset %d outside its %d bytes", path, off, len(b))
	}
	b[off] ^= 0xff
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// corruptHeaderLen returns the length of a .filez file's header (the
// size-prefixed archive header that precedes the deflate payload).
func corruptHeaderLen(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return 8 + int(binary.BigEndian.Uint32(b[:4]))
}

// corruptReadContent opens a content object and reads it to the end.
func corruptReadContent(r *ostree.Repo, c ostree.Checksum) error {
	_, rc, err := r.OpenContent(c)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, rc)
	if cerr := rc.Close(); err == nil {
		err = cerr
	}
	return err
}

// corruptVerifyNames runs Verify on repo and returns "" if one of the
// problems names c, or a description of what it reported instead.
func corruptVerifyNames(t *testing.T, repo string, c ostree.Checksum) string {
	t.Helper()
	r, err := ostree.Open(repo)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := r.Verify(context.Background(), 0)
	if err != nil {
		return fmt.Sprintf("Verify failed instead of reporting a problem: %v", err)
	}
	for _, p := range rep.Problems {
		if strings.Contains(p, c.String()) {
			return ""
		}
	}
	return fmt.Sprintf("Verify problems do not name %s: %q", c, rep.Problems)
}

// corruptCheckDetected runs every check on a damaged repository: Verify,
// `aof fsck`, `ostree fsck` (to confirm the damage is real), the API read
// of the object, and a checkout of the commit. Each must fail naming c.
func corruptCheckDetected(t *testing.T, ostreeBin, aof, repo string, fx *corruptFixture, c ostree.Checksum, read func(*ostree.Repo) error) {
	t.Helper()
	if msg := corruptVerifyNames(t, repo, c); msg != "" {
		t.Errorf("Verify: %s", msg)
	}
	if out, code := crashRun(t, aof, "fsck", "--repo="+repo); code != 1 || !strings.Contains(out, c.String()) {
		t.Errorf("aof fsck: exit %d (want 1), output must name %s:\n%s", code, c, out)
	}
	if out, code := crashRun(t, ostreeBin, "fsck", "--repo="+repo); code == 0 {
		t.Errorf("ostree fsck accepts the damaged repository, so the test damaged nothing:\n%s", out)
	}
	r, err := ostree.Open(repo)
	if err != nil {
		t.Fatal(err)
	}
	if err := read(r); err == nil || !strings.Contains(err.Error(), c.String()) {
		t.Errorf("reading the object through the API: got error %v, want one naming %s", err, c)
	}
	dest := filepath.Join(t.TempDir(), "checkout")
	err = r.Checkout(context.Background(), fx.commit, dest, ostree.CheckoutOptions{})
	if err == nil || !strings.Contains(err.Error(), c.String()) {
		t.Errorf("Checkout: got error %v, want one naming %s", err, c)
	}
	if _, serr := os.Lstat(dest); serr == nil {
		t.Errorf("failed Checkout left %s behind", dest)
	}
}

// TestCorruptObjectDetected flips one byte of each kind of object in a copy
// of a committed repository.
func TestCorruptObjectDetected(t *testing.T) {
	ostreeBin := crashRequireOstree(t)
	aof := crashBuildCLI(t)
	fx := corruptMakeFixture(t)
	if out, code := crashRun(t, ostreeBin, "fsck", "--repo="+fx.repo); code != 0 {
		t.Fatalf("ostree fsck rejects the undamaged fixture:\n%s", out)
	}
	if r, err := ostree.Open(fx.repo); err != nil {
		t.Fatal(err)
	} else if rep, err := r.Verify(context.Background(), 0); err != nil || len(rep.Problems) > 0 {
		t.Fatalf("Verify of the undamaged fixture: %v %q", err, rep.Problems)
	}
	readContent := func(c ostree.Checksum) func(*ostree.Repo) error {
		return func(r *ostree.Repo) error { return corruptReadContent(r, c) }
	}
	cases := []struct {
		name string
		obj  ostree.Checksum
		ext  string
		off  func(path string) int // byte to flip
		read func(*ostree.Repo) error
	}{
		{"content payload", fx.big, "filez", func(p string) int {
			st, _ := os.Stat(p)
			h := corruptHeaderLen(t, p)
			return h + int(st.Size()-int64(h))/2
		}, readContent(fx.big)},
		// Byte 19 is the last byte of the uid (BE32 at 16..19 after the
		// 8-byte size prefix and the 8-byte size): only the checksum can tell.
		{"content header uid", fx.big, "filez", func(string) int { return 19 }, readContent(fx.big)},
		{"content header mode", fx.hello, "filez", func(string) int { return 27 }, readContent(fx.hello)},
		{"symlink target", fx.link, "filez", func(string) int { return 32 }, readContent(fx.link)},
		{"dirtree", fx.tree, "dirtree", corruptMiddle, func(r *ostree.Repo) error { _, err := r.ReadDirTree(fx.tree); return err }},
		{"dirmeta", fx.subMeta, "dirmeta", corruptMiddle, func(r *ostree.Repo) error { _, err := r.ReadDirMeta(fx.subMeta); return err }},
		{"commit", fx.commit, "commit", corruptMiddle, func(r *ostree.Repo) error { _, err := r.ReadCommit(fx.commit); return err }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			repo := filepath.Join(t.TempDir(), "repo")
			corruptCopyDir(t, fx.repo, repo)
			p := corruptObjectPath(repo, tc.obj, tc.ext)
			off := tc.off(p)
			corruptFlipByte(t, p, off)
			t.Logf("flipped byte %d of %s", off, filepath.Base(p))
			corruptCheckDetected(t, ostreeBin, aof, repo, fx, tc.obj, tc.read)
		})
	}
}

func corruptMiddle(path string) int {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return int(st.Size() / 2)
}

// TestCorruptMissingObject deletes one object of each kind.
func TestCorruptMissingObject(t *testing.T) {
	ostreeBin := crashRequireOstree(t)
	aof := crashBuildCLI(t)
	fx := corruptMakeFixture(t)
	cases := []struct {
		name string
		obj  ostree.Checksum
		ext  string
		read func(*ostree.Repo) error
	}{
		{"content", fx.big, "filez", func(r *ostree.Repo) error { return corruptReadContent(r, fx.big) }},
		{"dirtree", fx.subTree, "dirtree", func(r *ostree.Repo) error { _, err := r.ReadDirTree(fx.subTree); return err }},
		{"dirmeta", fx.subMeta, "dirmeta", func(r *ostree.Repo) error { _, err := r.ReadDirMeta(fx.subMeta); return err }},
		{"commit", fx.commit, "commit", func(r *ostree.Repo) error { _, err := r.ReadCommit(fx.commit); return err }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			repo := filepath.Join(t.TempDir(), "repo")
			corruptCopyDir(t, fx.repo, repo)
			if err := os.Remove(corruptObjectPath(repo, tc.obj, tc.ext)); err != nil {
				t.Fatal(err)
			}
			corruptCheckDetected(t, ostreeBin, aof, repo, fx, tc.obj, tc.read)
		})
	}
}

// TestCorruptTruncatedContent cuts a .filez short at points in its size
// prefix, its header and its deflate payload.
func TestCorruptTruncatedContent(t *testing.T) {
	ostreeBin := crashRequireOstree(t)
	aof := crashBuildCLI(t)
	fx := corruptMakeFixture(t)
	for _, obj := range []struct {
		name string
		c    ostree.Checksum
	}{{"big", fx.big}, {"hello", fx.hello}, {"symlink", fx.link}} {
		src := corruptObjectPath(fx.repo, obj.c, "filez")
		st, err := os.Stat(src)
		if err != nil {
			t.Fatal(err)
		}
		size := int(st.Size())
		h := corruptHeaderLen(t, src)
		cuts := []int{0, 3, 7, 8, h - 1}
		if h < size {
			// A symlink's .filez is its header alone.
			cuts = append(cuts, h, h+1, h+(size-h)/2, size-2, size-1)
		}
		for _, n := range cuts {
			if n < 0 || n >= size {
				continue
			}
			t.Run(fmt.Sprintf("%s to %d of %d bytes", obj.name, n, size), func(t *testing.T) {
				repo := filepath.Join(t.TempDir(), "repo")
				corruptCopyDir(t, fx.repo, repo)
				if err := os.Truncate(corruptObjectPath(repo, obj.c, "filez"), int64(n)); err != nil {
					t.Fatal(err)
				}
				corruptCheckDetected(t, ostreeBin, aof, repo, fx, obj.c, func(r *ostree.Repo) error { return corruptReadContent(r, obj.c) })
			})
		}
	}
}

// corruptHeaderField names the field of a .filez header at byte off, for a
// header of length hlen: BE32 length, 4 padding bytes, then the GVariant
// (tuuuusa(ayay)): size, uid, gid, mode, rdev, symlink target, xattrs and
// framing offsets.
func corruptHeaderField(off int) string {
	switch {
	case off < 4:
		return "header length"
	case off < 8:
		return "padding"
	case off < 16:
		return "size"
	case off < 20:
		return "uid"
	case off < 24:
		return "gid"
	case off < 28:
		return "mode"
	case off < 32:
		return "rdev"
	}
	return "symlink/xattrs/framing"
}

// corruptSweepHeader flips, one at a time, each byte of the header of
// content object c (in place, restoring it after), and calls check with
// whether `ostree fsck` and Verify/OpenContent detect the damage.
func corruptSweepHeader(t *testing.T, ostreeBin, repo string, c ostree.Checksum, check func(off int, ostreeSees bool, ourErr string)) {
	t.Helper()
	p := corruptObjectPath(repo, c, "filez")
	orig, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	defer os.WriteFile(p, orig, 0o644)
	hlen := corruptHeaderLen(t, p)
	for off := 0; off < hlen; off++ {
		b := append([]byte(nil), orig...)
		b[off] ^= 0xff
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		_, code := crashRun(t, ostreeBin, "fsck", "--repo="+repo)
		ours := corruptVerifyNames(t, repo, c)
		r, err := ostree.Open(repo)
		if err != nil {
			t.Fatal(err)
		}
		if err := corruptReadContent(r, c); err == nil {
			ours += "; OpenContent+read succeeds"
		} else if !strings.Contains(err.Error(), c.String()) {
			ours += fmt.Sprintf("; OpenContent+read error does not name the object: %v", err)
		}
		check(off, code != 0, ours)
	}
}

// corruptUnchecked reports whether header byte off of a content object is
// in a field that no checksum covers and that `ostree fsck` ignores: the 4
// padding bytes after the length, and the size field of a symlink (OSTree
// writes 0 there). TestCorruptContentHeaderUncheckedFields covers them.
func corruptUnchecked(off int, symlink bool) bool {
	f := corruptHeaderField(off)
	return f == "padding" || symlink && f == "size"
}

// TestCorruptContentHeaderEveryByte flips each header byte of a regular
// file, a file with xattrs and a symlink (except the fields of
// corruptUnchecked). Every flip must be detected, by Verify and by
// OpenContent, with the object named; what ostree fsck misses is logged.
func TestCorruptContentHeaderEveryByte(t *testing.T) {
	ostreeBin := crashRequireOstree(t)
	fx := corruptMakeFixture(t)
	for _, obj := range []struct {
		name    string
		c       ostree.Checksum
		symlink bool
	}{{"regular", fx.hello, false}, {"xattrs", fx.xattr, false}, {"symlink", fx.link, true}} {
		t.Run(obj.name, func(t *testing.T) {
			repo := filepath.Join(t.TempDir(), "repo")
			corruptCopyDir(t, fx.repo, repo)
			var ostreeMisses []string
			corruptSweepHeader(t, ostreeBin, repo, obj.c, func(off int, ostreeSees bool, ours string) {
				field := corruptHeaderField(off)
				if !ostreeSees {
					ostreeMisses = append(ostreeMisses, fmt.Sprintf("%d(%s)", off, field))
				}
				if corruptUnchecked(off, obj.symlink) || ours == "" {
					return
				}
				if ostreeSees {
					t.Errorf("byte %d (%s) flipped: ostree fsck detects it but we do not: %s", off, field, ours)
				} else {
					t.Errorf("byte %d (%s) flipped: not detected (ostree fsck does not detect it either): %s", off, field, ours)
				}
			})
			t.Logf("header flips that ostree fsck accepts: %v", ostreeMisses)
		})
	}
}

// TestCorruptContentHeaderUncheckedFields flips the bytes of a .filez
// header that no checksum covers and that `ostree fsck` (2022.7) skips: the
// 4 padding bytes after the header length, and a symlink's size field.
// OSTree always writes zeros there, so a non-zero byte is damage a reader
// can see; the acceptance criterion (any one-byte flip is detected) needs
// the reader to check them.
func TestCorruptContentHeaderUncheckedFields(t *testing.T) {
	ostreeBin := crashRequireOstree(t)
	fx := corruptMakeFixture(t)
	for _, obj := range []struct {
		name    string
		c       ostree.Checksum
		symlink bool
	}{{"regular", fx.hello, false}, {"symlink", fx.link, true}} {
		t.Run(obj.name, func(t *testing.T) {
			repo := filepath.Join(t.TempDir(), "repo")
			corruptCopyDir(t, fx.repo, repo)
			corruptSweepHeader(t, ostreeBin, repo, obj.c, func(off int, ostreeSees bool, ours string) {
				if !corruptUnchecked(off, obj.symlink) || ours == "" {
					return
				}
				t.Errorf("byte %d (%s) flipped: not detected (ostree fsck detects it: %v): %s", off, corruptHeaderField(off), ostreeSees, ours)
			})
		})
	}
}

// TestCorruptMetadataEveryByte flips each byte of a dirtree, a dirmeta and
// the commit in turn; the Read* call and Verify must name the object.
func TestCorruptMetadataEveryByte(t *testing.T) {
	fx := corruptMakeFixture(t)
	repo := filepath.Join(t.TempDir(), "repo")
	corruptCopyDir(t, fx.repo, repo)
	r, err := ostree.Open(repo)
	if err != nil {
		t.Fatal(err)
	}
	for _, obj := range []struct {
		c    ostree.Checksum
		ext  string
		read func() error
	}{
		{fx.tree, "dirtree", func() error { _, err := r.ReadDirTree(fx.tree); return err }},
		{fx.subTree, "dirtree", func() error { _, err := r.ReadDirTree(fx.subTree); return err }},
		{fx.subMeta, "dirmeta", func() error { _, err := r.ReadDirMeta(fx.subMeta); return err }},
		{fx.commit, "commit", func() error { _, err := r.ReadCommit(fx.commit); return err }},
	} {
		p := corruptObjectPath(repo, obj.c, obj.ext)
		orig, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for off := range orig {
			b := append([]byte(nil), orig...)
			b[off] ^= 0xff
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := obj.read(); err == nil || !strings.Contains(err.Error(), obj.c.String()) {
				t.Errorf("%s.%s byte %d flipped: read error %v, want one naming the object", obj.c, obj.ext, off, err)
			}
			if msg := corruptVerifyNames(t, repo, obj.c); msg != "" {
				t.Errorf("%s.%s byte %d flipped: %s", obj.c, obj.ext, off, msg)
			}
		}
		if err := os.WriteFile(p, orig, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
