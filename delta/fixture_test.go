package delta

import (
	"bytes"
	"compress/gzip"
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apt-ostree/apt-ostree-factory/ostree"
	"github.com/apt-ostree/apt-ostree-factory/ostree/gvariant"
)

var fixedTime = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

func dirMeta(uid, gid, perm uint32, xs ...ostree.Xattr) ostree.FileMeta {
	return ostree.FileMeta{UID: uid, GID: gid, Mode: ostree.ModeDir | perm, Xattrs: xs}
}

func regFile(uid, gid, perm uint32, data []byte, xs ...ostree.Xattr) *ostree.MemFile {
	return &ostree.MemFile{Header: ostree.FileHeader{
		FileMeta: ostree.FileMeta{UID: uid, GID: gid, Mode: ostree.ModeRegular | perm, Xattrs: xs},
		Size:     uint64(len(data)),
	}, Data: data}
}

func symlink(target string) *ostree.MemFile {
	return &ostree.MemFile{Header: ostree.FileHeader{FileMeta: ostree.FileMeta{Mode: ostree.ModeSymlink | 0o777}, Symlink: target}}
}

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for k := 0; k < 8; k++ {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	return b
}

func text(seed uint64, lines int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	words := []string{"ostree", "delta", "part", "superblock", "commit", "tree", "object", "xz", "fallback", "bundle"}
	var b bytes.Buffer
	for i := 0; i < lines; i++ {
		for j := 0; j < 8; j++ {
			b.WriteString(words[r.IntN(len(words))])
			b.WriteByte(' ')
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}

const bigSize = 5_000_123 // above DefaultMinFallbackSize

// fixture is an archive repository with two commits on branch "test"; v2
// carries detached metadata.
type fixture struct {
	path   string
	repo   *ostree.Repo
	v1, v2 ostree.Checksum
	meta   ostree.Metadata // v2's commitmeta
}

func buildV1() *ostree.MemDir {
	root := ostree.NewMemDir(dirMeta(0, 0, 0o755))
	usr := ostree.NewMemDir(dirMeta(0, 0, 0o755))
	root.Dirs["usr"] = usr
	bin := ostree.NewMemDir(dirMeta(0, 0, 0o755))
	usr.Dirs["bin"] = bin
	bin.Files["tool"] = regFile(0, 0, 0o755, append([]byte("#!/bin/sh\necho tool\n"), text(1, 200)...))
	bin.Files["su"] = regFile(0, 0, 0o4755, text(2, 50))
	bin.Files["sg"] = regFile(0, 5, 0o2755, text(3, 20))
	bin.Files["link"] = symlink("tool")
	bin.Files["abs"] = symlink("/usr/share/doc/readme.txt")
	share := ostree.NewMemDir(dirMeta(0, 0, 0o755))
	usr.Dirs["share"] = share
	doc := ostree.NewMemDir(dirMeta(0, 0, 0o755, ostree.Xattr{Name: "user.dir", Value: []byte("D")}))
	share.Dirs["doc"] = doc
	doc.Files["readme.txt"] = regFile(0, 0, 0o644, text(4, 300))
	doc.Files["changed.txt"] = regFile(0, 0, 0o644, text(5, 1000))
	doc.Files["empty"] = regFile(0, 0, 0o644, nil)
	doc.Files["xattr.txt"] = regFile(0, 0, 0o644, []byte("a"),
		ostree.Xattr{Name: "user.foo", Value: []byte("bar")}, ostree.Xattr{Name: "user.abc", Value: []byte("xyz")})
	share.Files["big.bin"] = regFile(0, 0, 0o644, randBytes(7, bigSize))
	share.Files["dup1"] = regFile(0, 0, 0o644, []byte("same content\n"))
	share.Files["dup2"] = regFile(0, 0, 0o644, []byte("same content\n"))
	etc := ostree.NewMemDir(dirMeta(0, 0, 0o755))
	root.Dirs["etc"] = etc
	etc.Files["shadow"] = regFile(0, 42, 0o640, []byte("root:*:19000:0:99999:7:::\n"))
	home := ostree.NewMemDir(dirMeta(1000, 1000, 0o700))
	root.Dirs["home"] = home
	home.Files["notes"] = regFile(1000, 1000, 0o600, text(6, 10))
	root.Dirs["tmp"] = ostree.NewMemDir(dirMeta(0, 0, 0o1777))
	old := ostree.NewMemDir(dirMeta(0, 0, 0o755))
	root.Dirs["old"] = old
	old.Files["gone.txt"] = regFile(0, 0, 0o644, text(8, 40))
	old.Dirs["deeper"] = ostree.NewMemDir(dirMeta(7, 7, 0o750))
	old.Dirs["deeper"].Files["x"] = regFile(7, 7, 0o640, []byte("x\n"))
	return root
}

// buildV2 mutates a v1 tree: a changed file, added and removed files, a
// removed directory, a new large file, changed xattrs and owner.
func buildV2() *ostree.MemDir {
	root := buildV1()
	doc := root.Dirs["usr"].Dirs["share"].Dirs["doc"]
	doc.Files["changed.txt"] = regFile(0, 0, 0o644, append(text(5, 1000), []byte("one more line\n")...))
	doc.Files["xattr.txt"] = regFile(0, 0, 0o644, []byte("a"), ostree.Xattr{Name: "user.foo", Value: []byte("baz")})
	doc.Files["new.txt"] = regFile(0, 0, 0o644, text(9, 100))
	delete(doc.Files, "empty")
	root.Dirs["usr"].Dirs["share"].Files["big2.bin"] = regFile(0, 0, 0o644, randBytes(11, bigSize+1000))
	root.Dirs["usr"].Dirs["bin"].Files["newlink"] = symlink("../share/doc/new.txt")
	delete(root.Dirs, "old")
	root.Dirs["home"].Files["notes"] = regFile(1000, 100, 0o640, text(6, 10))
	root.Dirs["srv"] = ostree.NewMemDir(dirMeta(33, 33, 0o2775))
	root.Dirs["srv"].Files["index.html"] = regFile(33, 33, 0o664, []byte("<html></html>\n"))
	// A compressed file (as a changelog.gz or a .ko.xz): a stored part.
	doc.Files["changelog.gz"] = regFile(0, 0, 0o644, gzipped(text(12, 3000)))
	// An x86-64 program: its part gets xz's x86 filter.
	root.Dirs["usr"].Dirs["bin"].Files["prog"] = regFile(0, 0, 0o755, fakeELF(62, 200<<10))
	return root
}

// fakeELF is an ELF header for machine followed by code-like bytes
// (relative calls among text).
func fakeELF(machine uint16, n int) []byte {
	b := []byte("\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00")
	b = append(b, byte(machine), byte(machine>>8))
	t := text(13, n/60)
	for i := 0; len(b) < n; i++ {
		b = append(b, 0xe8, byte(i), byte(i>>8), 0, 0)
		b = append(b, t[(i*37)%(len(t)-40):][:40]...)
	}
	return b[:n]
}

func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

func makeFixture(t testing.TB) *fixture {
	t.Helper()
	ctx := context.Background()
	fx := &fixture{path: filepath.Join(t.TempDir(), "src")}
	var err error
	if fx.repo, err = ostree.Init(fx.path); err != nil {
		t.Fatal(err)
	}
	c1, err := fx.repo.CommitTree(ctx, buildV1(), ostree.CommitOptions{Branch: "test", Subject: "v1", Timestamp: fixedTime})
	if err != nil {
		t.Fatal(err)
	}
	c2, err := fx.repo.CommitTree(ctx, buildV2(), ostree.CommitOptions{Branch: "test", Subject: "v2", Timestamp: fixedTime.Add(time.Hour),
		Metadata: ostree.Metadata{{Key: "version", Value: gvariant.NewVariant("s", "2")}}})
	if err != nil {
		t.Fatal(err)
	}
	fx.v1, fx.v2 = c1.Checksum, c2.Checksum
	fx.meta = ostree.Metadata{{Key: "test.signature", Value: gvariant.NewVariant("aay", [][]byte{randBytes(3, 64)})}}
	if err := fx.repo.WriteCommitMeta(fx.v2, fx.meta); err != nil {
		t.Fatal(err)
	}
	return fx
}

// copyTree copies a directory tree (regular files, dirs, symlinks).
func copyTree(t testing.TB, src, dst string) {
	t.Helper()
	out, err := exec.Command("cp", "-a", src, dst).CombinedOutput()
	if err != nil {
		t.Fatalf("cp -a %s %s: %v\n%s", src, dst, err, out)
	}
}

// readDeltaFiles returns name -> content of the files in a delta dir.
func readDeltaFiles(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	return out
}
