package ostree

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var ts2020 = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

func newRepo(t *testing.T) *Repo {
	t.Helper()
	r, err := Init(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestInitLayoutAndReopen(t *testing.T) {
	r := newRepo(t)
	cfg, err := os.ReadFile(filepath.Join(r.Path(), "config"))
	if err != nil {
		t.Fatal(err)
	}
	if string(cfg) != "[core]\nrepo_version=1\nmode=archive-z2\n" {
		t.Errorf("config %q", cfg)
	}
	for _, d := range []string{"tmp", "extensions", "state", "refs/heads", "refs/mirrors", "refs/remotes", "objects"} {
		if st, err := os.Stat(filepath.Join(r.Path(), d)); err != nil || !st.IsDir() {
			t.Errorf("missing %s", d)
		}
	}
	if _, err := Init(r.Path()); err != nil {
		t.Errorf("Init on an existing repository: %v", err)
	}
}

func TestOpenRejectsBadConfig(t *testing.T) {
	for name, cfg := range map[string]string{
		"version": "[core]\nrepo_version=2\nmode=archive-z2\n",
		"mode":    "[core]\nrepo_version=1\nmode=weird\n",
		"legacy":  "[core]\nrepo_version=1\narchive=true\n",
		"syntax":  "repo_version=1\n",
		"level":   "[core]\nrepo_version=1\nmode=archive-z2\n[archive]\nzlib-level=12\n",
	} {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "config"), []byte(cfg), 0o644)
		os.Mkdir(filepath.Join(dir, "objects"), 0o755)
		if _, err := Open(dir); err == nil {
			t.Errorf("%s: accepted", name)
		} else if !strings.Contains(err.Error(), "config") {
			t.Errorf("%s: error does not name the config file: %v", name, err)
		}
	}
	if _, err := Open(t.TempDir()); err == nil || !strings.Contains(err.Error(), "not an OSTree repository") {
		t.Errorf("empty dir: %v", err)
	}
}

func TestValidateRef(t *testing.T) {
	for _, ok := range []string{"main", "debian/13/x86_64/minimal", "a.b-c_d", "_x"} {
		if err := ValidateRef(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "/a", "a/", "a//b", "-a", ".a", "a b", "a/../b", "a:b"} {
		if err := ValidateRef(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func commitExample(t *testing.T, r *Repo, branch, subject string, root *MemDir) *CommitResult {
	t.Helper()
	res, err := r.CommitTree(context.Background(), root, CommitOptions{Branch: branch, Subject: subject, Timestamp: ts2020})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestParentChainRefsAndResolve(t *testing.T) {
	r := newRepo(t)
	c1 := commitExample(t, r, "os/main", "one", exampleTree())
	root := exampleTree()
	root.Files["new"] = &MemFile{Header: FileHeader{FileMeta: FileMeta{Mode: ModeRegular | 0o600}, Size: 3}, Data: []byte("new")}
	c2 := commitExample(t, r, "os/main", "two", root)
	if c2.Commit.Parent != c1.Checksum {
		t.Fatalf("parent %s, want %s", c2.Commit.Parent, c1.Checksum)
	}
	if got, err := r.ResolveRev("os/main^"); err != nil || got != c1.Checksum {
		t.Errorf("os/main^ = %s, %v", got, err)
	}
	if _, err := r.ResolveRev("os/main^^"); err == nil || !strings.Contains(err.Error(), "no parent") {
		t.Errorf("os/main^^: %v", err)
	}
	if got, err := r.ResolveRev(c1.Checksum.String()); err != nil || got != c1.Checksum {
		t.Errorf("by checksum: %v", err)
	}
	if _, err := r.ResolveRev("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing ref: %v", err)
	}
	if err := r.WriteRef("origin:os/main", c1.Checksum); err != nil {
		t.Fatal(err)
	}
	refs, names, err := r.ListRefs()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(names, ",") != "origin:os/main,os/main" || refs["os/main"] != c2.Checksum {
		t.Errorf("refs %v %v", names, refs)
	}
	if err := r.WriteRef("x", Checksum{1}); err == nil {
		t.Error("ref to a missing commit accepted")
	}
	cm, err := r.ReadCommit(c2.Checksum)
	if err != nil || cm.Subject != "two" || !cm.Timestamp.Equal(ts2020) {
		t.Errorf("read back: %+v %v", cm, err)
	}
	if v, _ := cm.Metadata.Get("ostree.ref-binding"); v.Value.([]string)[0] != "os/main" {
		t.Errorf("ref binding %v", v)
	}
}

// Objects already in the repository are not written again.
func TestExistingObjectsNotRewritten(t *testing.T) {
	r := newRepo(t)
	first := commitExample(t, r, "a", "s", exampleTree())
	if first.Stats.FilesWritten != 3 {
		t.Errorf("first commit wrote %d files", first.Stats.FilesWritten)
	}
	obj := r.objectPath(mustChecksum(t, "44f778e59f0a4748d6b0c90a47347212a231c4ad1e8f7ea5c5dffc7749153a6b"), ObjectFile)
	var before, after syscall.Stat_t
	syscall.Stat(obj, &before)
	second := commitExample(t, r, "b", "s", exampleTree())
	syscall.Stat(obj, &after)
	if second.Stats.FilesWritten != 0 {
		t.Errorf("second commit wrote %d files", second.Stats.FilesWritten)
	}
	if before.Ino != after.Ino {
		t.Error("existing object was replaced")
	}
}

func TestCheckoutRoundTrip(t *testing.T) {
	r := newRepo(t)
	root := exampleTree()
	root.Files["suid"] = &MemFile{Header: FileHeader{FileMeta: FileMeta{Mode: ModeRegular | 0o4755, UID: 0}, Size: 2}, Data: []byte("#!")}
	ro := NewMemDir(FileMeta{Mode: ModeDir | 0o555})
	ro.Files["f"] = &MemFile{Header: FileHeader{FileMeta: FileMeta{Mode: ModeRegular | 0o444}, Size: 1}, Data: []byte("f")}
	root.Dirs["ro"] = ro
	res := commitExample(t, r, "main", "s", root)
	dest := filepath.Join(t.TempDir(), "co")
	if err := r.Checkout(context.Background(), res.Checksum, dest, CheckoutOptions{}); err != nil {
		t.Fatal(err)
	}
	check := func(p string, mode os.FileMode, content string) {
		t.Helper()
		st, err := os.Lstat(filepath.Join(dest, p))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != mode {
			t.Errorf("%s: mode %v want %v", p, st.Mode(), mode)
		}
		if content != "" {
			b, _ := os.ReadFile(filepath.Join(dest, p))
			if string(b) != content {
				t.Errorf("%s: content %q", p, b)
			}
		}
	}
	check("hello", 0o644, "hello\n")
	check("sub/x", 0o755, "x")
	check("suid", 0o755|os.ModeSetuid, "#!")
	check("ro", 0o555|os.ModeDir, "")
	check("ro/f", 0o444, "f")
	if target, _ := os.Readlink(filepath.Join(dest, "link")); target != "hello" {
		t.Errorf("link -> %q", target)
	}
	if err := r.Checkout(context.Background(), res.Checksum, dest, CheckoutOptions{}); err == nil {
		t.Error("checkout over an existing destination accepted")
	}
	sub := filepath.Join(t.TempDir(), "sub")
	if err := r.Checkout(context.Background(), res.Checksum, sub, CheckoutOptions{Subpath: "/sub"}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(sub, "x")); string(b) != "x" {
		t.Errorf("subpath checkout: %q", b)
	}
}

func TestLockExcludesSecondWriter(t *testing.T) {
	r := newRepo(t)
	unlock, err := r.Lock(time.Second)
	if err != nil {
		t.Fatal(err)
	}
	r2, _ := Open(r.Path())
	if _, err := r2.Lock(200 * time.Millisecond); err == nil || !strings.Contains(err.Error(), "locked by another writer") {
		t.Errorf("second lock: %v", err)
	}
	_, err = r2.CommitTree(context.Background(), exampleTree(), CommitOptions{Branch: "x", LockTimeout: 200 * time.Millisecond})
	if err == nil {
		t.Error("commit while locked succeeded")
	}
	unlock()
	if _, err := r2.Lock(time.Second); err != nil {
		t.Errorf("lock after release: %v", err)
	}
}

// A failed commit leaves the branch where it was.
func TestFailedCommitKeepsRef(t *testing.T) {
	r := newRepo(t)
	c1 := commitExample(t, r, "main", "one", exampleTree())
	root := exampleTree()
	root.Files["bad"] = &MemFile{Header: FileHeader{FileMeta: FileMeta{Mode: ModeRegular | 0o644}, Size: 10}, Data: []byte("short"), Origin: "pkg:bad"}
	_, err := r.CommitTree(context.Background(), root, CommitOptions{Branch: "main", Timestamp: ts2020})
	if err == nil || !strings.Contains(err.Error(), "pkg:bad") {
		t.Fatalf("error does not name the file: %v", err)
	}
	if got, _ := r.ReadRef("main"); got != c1.Checksum {
		t.Error("ref moved after a failed commit")
	}
	ents, _ := os.ReadDir(filepath.Join(r.Path(), "tmp"))
	if len(ents) != 0 {
		t.Errorf("temporary files left: %v", ents)
	}
}

func TestReadDirRejectsSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Skip("mkfifo:", err)
	}
	_, err := ReadDir(dir, DirOptions{})
	if err == nil || !strings.Contains(err.Error(), fifo) {
		t.Errorf("FIFO: %v", err)
	}
}

func TestContentChecksumMatchesWrite(t *testing.T) {
	r := newRepo(t)
	data := bytes.Repeat([]byte("abc"), 100000)
	h := FileHeader{FileMeta: FileMeta{UID: 7, GID: 8, Mode: ModeRegular | 0o640, Xattrs: []Xattr{{"user.b", []byte("2")}, {"user.a", []byte("1")}}}, Size: uint64(len(data))}
	want, err := ContentChecksum(h, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.WriteContent(h, bytes.NewReader(data))
	if err != nil || got != want {
		t.Fatalf("WriteContent %s %v, want %s", got, err, want)
	}
	rh, rc, err := r.OpenContent(got)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(rc); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), data) || rh.UID != 7 || rh.GID != 8 || rh.Mode != ModeRegular|0o640 || len(rh.Xattrs) != 2 || rh.Xattrs[0].Name != "user.a" {
		t.Errorf("read back header %+v", rh)
	}
	if _, err := r.WriteContent(h, bytes.NewReader(data[:10])); err == nil {
		t.Error("short content accepted")
	}
	dup := FileHeader{FileMeta: FileMeta{Mode: ModeRegular | 0o644, Xattrs: []Xattr{{"user.a", nil}, {"user.a", nil}}}}
	if _, err := r.WriteContent(dup, bytes.NewReader(nil)); err == nil {
		t.Error("duplicate xattrs accepted")
	}
}

func TestKeyFile(t *testing.T) {
	kf, err := ParseKeyFile([]byte("# c\n[core]\nrepo_version=1\n\n[remote \"origin\"]\nurl = http://x/repo\ngpg-verify=true\n"))
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := kf.Get(`remote "origin"`, "url"); v != "http://x/repo" {
		t.Errorf("url %q", v)
	}
	if g := kf.Groups(); len(g) != 2 {
		t.Errorf("groups %v", g)
	}
}
