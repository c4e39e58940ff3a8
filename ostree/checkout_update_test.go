package ostree

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestCheckoutUpdate: a checkout of tree A, updated to tree B, reads back
// as exactly B (files added, changed, removed; a file turned into a
// directory and back; a directory's mode changed; an unchanged subtree
// left alone).
func TestCheckoutUpdate(t *testing.T) {
	r := newRepo(t)
	ctx := context.Background()
	dirMeta := FileMeta{Mode: ModeDir | 0o755}
	reg := func(mode uint32, data string) *MemFile {
		return &MemFile{Header: FileHeader{FileMeta: FileMeta{Mode: ModeRegular | mode}, Size: uint64(len(data))}, Data: []byte(data)}
	}
	a := exampleTree()
	a.Files["gone"] = reg(0o644, "gone")
	a.Files["becomes-dir"] = reg(0o644, "file")
	keep := NewMemDir(dirMeta)
	keep.Files["k"] = reg(0o600, "keep")
	a.Dirs["keep"] = keep
	old := NewMemDir(dirMeta)
	old.Files["o"] = reg(0o644, "old")
	a.Dirs["old"] = old
	a.Dirs["becomes-file"] = NewMemDir(dirMeta)
	ro := NewMemDir(FileMeta{Mode: ModeDir | 0o555})
	ro.Files["f"] = reg(0o444, "f")
	a.Dirs["ro"] = ro

	b := exampleTree()
	b.Files["hello"] = reg(0o600, "changed\n")
	delete(b.Files, "link")
	b.Files["link2"] = &MemFile{Header: FileHeader{FileMeta: FileMeta{Mode: ModeSymlink | 0o777}, Symlink: "sub/x"}}
	b.Dirs["sub"].Files["new"] = reg(0o644, "new")
	bd := NewMemDir(FileMeta{Mode: ModeDir | 0o700})
	bd.Files["inner"] = reg(0o644, "inner")
	b.Dirs["becomes-dir"] = bd
	b.Files["becomes-file"] = reg(0o644, "now a file")
	keep2 := NewMemDir(dirMeta)
	keep2.Files["k"] = reg(0o600, "keep")
	b.Dirs["keep"] = keep2
	ro2 := NewMemDir(FileMeta{Mode: ModeDir | 0o755})
	ro2.Files["f"] = reg(0o444, "f")
	ro2.Files["g"] = reg(0o644, "g")
	b.Dirs["ro"] = ro2

	at, am, _, err := r.WriteTree(ctx, a, WriteTreeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bt, bm, _, err := r.WriteTree(ctx, b, WriteTreeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "co")
	if err := r.CheckoutDirTree(ctx, at, am, dest, CheckoutOptions{}); err != nil {
		t.Fatal(err)
	}
	keepIno := inode(t, filepath.Join(dest, "keep", "k"))
	n, err := r.CheckoutUpdate(ctx, at, am, bt, bm, dest, CheckoutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Error("CheckoutUpdate reports no change")
	}
	if inode(t, filepath.Join(dest, "keep", "k")) != keepIno {
		t.Error("an unchanged subtree was written again")
	}
	zero := uint32(0)
	uid, gid := zero, zero
	back, err := ReadDir(dest, DirOptions{OwnerUID: &uid, OwnerGID: &gid, NoXattrs: true})
	if err != nil {
		t.Fatal(err)
	}
	gt, gm, _, err := r.WriteTree(ctx, back, WriteTreeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if gt != bt || gm != bm {
		t.Errorf("updated checkout reads back as %s/%s, want %s/%s", gt, gm, bt, bm)
		var dump func(d *MemDir, at string)
		dump = func(d *MemDir, at string) {
			for n, f := range d.Files {
				t.Logf("%s%s %o %q", at, n, f.Header.Mode, f.Header.Symlink)
			}
			for n, sd := range d.Dirs {
				t.Logf("%s%s/ %o", at, n, sd.Meta.Mode)
				dump(sd, at+n+"/")
			}
		}
		dump(back, "/")
	}
	// Updating to the same tree changes nothing.
	if n, err := r.CheckoutUpdate(ctx, bt, bm, bt, bm, dest, CheckoutOptions{}); err != nil || n != 0 {
		t.Errorf("no-op update: %d changes, %v", n, err)
	}
	if _, err := r.CheckoutUpdate(ctx, at, am, bt, bm, filepath.Join(dest, "hello"), CheckoutOptions{}); err == nil {
		t.Error("update of a non-directory accepted")
	}
}

func inode(t *testing.T, p string) uint64 {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// TestCheckoutUpdateXattrs: a directory whose metadata changes loses the
// extended attributes the new metadata does not list.
func TestCheckoutUpdateXattrs(t *testing.T) {
	r := newRepo(t)
	ctx := context.Background()
	mk := func(x ...Xattr) (Checksum, Checksum) {
		root := NewMemDir(FileMeta{Mode: ModeDir | 0o755})
		root.Dirs["d"] = NewMemDir(FileMeta{Mode: ModeDir | 0o755, Xattrs: x})
		tr, m, _, err := r.WriteTree(ctx, root, WriteTreeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tr, m
	}
	at, am := mk(Xattr{Name: "user.old", Value: []byte("1")}, Xattr{Name: "user.kept", Value: []byte("2")})
	bt, bm := mk(Xattr{Name: "user.kept", Value: []byte("3")})
	dest := filepath.Join(t.TempDir(), "co")
	if err := r.CheckoutDirTree(ctx, at, am, dest, CheckoutOptions{Xattrs: true}); err != nil {
		if strings.Contains(err.Error(), "operation not supported") {
			t.Skip("no user xattrs on this file system")
		}
		t.Fatal(err)
	}
	if _, err := r.CheckoutUpdate(ctx, at, am, bt, bm, dest, CheckoutOptions{Xattrs: true}); err != nil {
		t.Fatal(err)
	}
	got, err := readXattrs(filepath.Join(dest, "d"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Name != "user.kept" || string(got[0].Value) != "3" {
		t.Errorf("xattrs after the update: %v", got)
	}
}
