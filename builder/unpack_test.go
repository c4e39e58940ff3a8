package builder

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/apt-ostree/apt-ostree-factory/apt/apttest"
	"github.com/apt-ostree/apt-ostree-factory/ostree"
)

// A file capability (cap_net_raw+ep), as setcap writes it.
var capNetRaw = string([]byte{0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})

// richDeb has everything a data.tar can carry that OSTree stores.
var richDeb = testDeb{
	Package: "rich", Version: "1:2.0-1", Arch: "amd64",
	Fields:  map[string]string{"Multi-Arch": "foreign"},
	Control: map[string]string{"postinst": "#!/bin/sh\nexit 0\n", "conffiles": "/etc/rich.conf\nremove-on-upgrade /etc/old.conf\n", "md5sums": "x  usr/bin/rich\n"},
	Entries: []ent{
		{Name: "./"},
		{Name: "./etc/"},
		{Name: "./etc/rich.conf", Body: "key=value\n"},
		{Name: "./tmp/", Mode: 0o1777},
		{Name: "./usr/"},
		{Name: "./usr/bin/"},
		{Name: "./usr/bin/rich", Mode: 0o4755, Body: "#!/bin/sh\necho rich\n"},
		{Name: "./usr/bin/ping", Mode: 0o755, Body: "ping binary\n", Xattrs: map[string]string{"security.capability": capNetRaw}},
		{Name: "./usr/bin/rich-link", Type: tar.TypeLink, Link: "./usr/bin/rich"},
		{Name: "./usr/bin/sym", Type: tar.TypeSymlink, Link: "rich"},
		{Name: "./usr/bin/wall", Mode: 0o2755, GID: 5, Body: "wall\n"},
		{Name: "./usr/share/"},
		{Name: "./usr/share/rich/", Mode: 0o750, UID: 0, GID: 42, Xattrs: map[string]string{"user.comment": "a directory"}},
		{Name: "./usr/share/rich/empty"},
		{Name: "./usr/share/rich/data", UID: 8, GID: 8, Mode: 0o640, Body: strings.Repeat("data ", 1000), Xattrs: map[string]string{"user.a": "1", "user.b": "two", "user.empty": ""}},
		{Name: "./var/"},
		{Name: "./var/mail/", Mode: 0o2775, GID: 8},
	},
}

func TestUnpackMetadata(t *testing.T) {
	repo := newRepo(t)
	tree := unpackBytes(t, repo, richDeb.build(t))
	if tree.Package != "rich" || tree.Version != "1:2.0-1" || tree.Architecture != "amd64" || tree.Field("Multi-Arch") != "foreign" {
		t.Errorf("identity %s, Multi-Arch %q", tree.ID(), tree.Field("Multi-Arch"))
	}
	if got := strings.Join(tree.Conffiles, " "); got != "/etc/rich.conf /etc/old.conf" {
		t.Errorf("conffiles %q", got)
	}
	if string(tree.Control["postinst"]) != "#!/bin/sh\nexit 0\n" || tree.Control["md5sums"] == nil || tree.Control["control"] == nil {
		t.Errorf("control members %v", tree.Control)
	}
	wantFiles := "/. /etc /etc/rich.conf /tmp /usr /usr/bin /usr/bin/rich /usr/bin/ping /usr/bin/rich-link /usr/bin/sym /usr/bin/wall /usr/share /usr/share/rich /usr/share/rich/empty /usr/share/rich/data /var /var/mail"
	if got := strings.Join(tree.Files, " "); got != wantFiles {
		t.Errorf("Files\n got %s\nwant %s", got, wantFiles)
	}
	_, a := tree.Root.Lookup("usr/bin/rich")
	_, b := tree.Root.Lookup("usr/bin/rich-link")
	if a == nil || a != b {
		t.Errorf("hardlinked paths do not share a MemFile")
	}

	c := commitTree(t, repo, tree.Root, "rich")
	ents := walkAll(t, repo, c)
	type want struct {
		mode     uint32
		uid, gid uint32
		xattrs   string
		symlink  string
	}
	for p, w := range map[string]want{
		"/":                    {ostree.ModeDir | 0o755, 0, 0, "", ""},
		"/tmp":                 {ostree.ModeDir | 0o1777, 0, 0, "", ""},
		"/usr/bin/rich":        {ostree.ModeRegular | 0o4755, 0, 0, "", ""},
		"/usr/bin/rich-link":   {ostree.ModeRegular | 0o4755, 0, 0, "", ""},
		"/usr/bin/ping":        {ostree.ModeRegular | 0o755, 0, 0, "security.capability=" + capNetRaw, ""},
		"/usr/bin/sym":         {ostree.ModeSymlink | 0o777, 0, 0, "", "rich"},
		"/usr/bin/wall":        {ostree.ModeRegular | 0o2755, 0, 5, "", ""},
		"/usr/share/rich":      {ostree.ModeDir | 0o750, 0, 42, "user.comment=a directory", ""},
		"/usr/share/rich/data": {ostree.ModeRegular | 0o640, 8, 8, "user.a=1 user.b=two", ""},
		"/var/mail":            {ostree.ModeDir | 0o2775, 0, 8, "", ""},
	} {
		e := ents[p]
		if e == nil {
			t.Errorf("%s missing from the commit", p)
			continue
		}
		var xs []string
		for _, x := range e.Meta.Xattrs {
			xs = append(xs, x.Name+"="+string(x.Value))
		}
		if e.Meta.Mode != w.mode || e.Meta.UID != w.uid || e.Meta.GID != w.gid || strings.Join(xs, " ") != w.xattrs || e.Symlink != w.symlink {
			t.Errorf("%s: mode %o owner %d:%d xattrs %q symlink %q; want mode %o owner %d:%d xattrs %q symlink %q",
				p, e.Meta.Mode, e.Meta.UID, e.Meta.GID, strings.Join(xs, " "), e.Symlink, w.mode, w.uid, w.gid, w.xattrs, w.symlink)
		}
	}
	if ents["/usr/bin/rich"].Checksum != ents["/usr/bin/rich-link"].Checksum {
		t.Error("hardlinks have different objects")
	}
	// Content round-trips.
	_, rc, err := repo.OpenContent(ents["/usr/share/rich/data"].Checksum)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || string(got) != strings.Repeat("data ", 1000) {
		t.Errorf("content: %v", err)
	}
	ostreeFsck(t, repo)
}

// The oracle: extracting data.tar with GNU tar (as root, keeping owners,
// modes and xattrs) and committing the directory gives the same tree
// checksum as unpacking into objects.
func TestUnpackMatchesTarExtractCommit(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("extracting with owners and security.* xattrs needs root")
	}
	needTool(t, "tar")
	repo := newRepo(t)
	tree := unpackBytes(t, repo, richDeb.build(t))
	tm, mm, _, err := repo.WriteTree(context.Background(), tree.Root, ostree.WriteTreeOptions{})
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	tarFile := filepath.Join(t.TempDir(), "data.tar")
	if err := os.WriteFile(tarFile, richDeb.dataTar(t), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("tar", "-x", "-f", tarFile, "-C", dir, "--numeric-owner", "--same-permissions", "--same-owner", "--xattrs", "--xattrs-include=*").CombinedOutput()
	if err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	// Setuid bits are cleared by chown during extraction in some tar
	// versions; tar restores them afterwards with --same-permissions.
	disk, err := ostree.ReadDir(dir, ostree.DirOptions{})
	if err != nil {
		t.Fatal(err)
	}
	td, md, _, err := repo.WriteTree(context.Background(), disk, ostree.WriteTreeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if tm != td || mm != md {
		a := commitTree(t, repo, tree.Root, "unpacked")
		b := commitTree(t, repo, disk, "extracted")
		ea, eb := walkAll(t, repo, a), walkAll(t, repo, b)
		for p, x := range ea {
			y := eb[p]
			if y == nil {
				t.Errorf("%s: only in the unpacked tree", p)
			} else if x.Checksum != y.Checksum || x.MetaSum != y.MetaSum {
				t.Errorf("%s: unpacked %+v, extracted %+v", p, x.Meta, y.Meta)
			}
		}
		for p := range eb {
			if ea[p] == nil {
				t.Errorf("%s: only in the extracted tree", p)
			}
		}
		t.Fatalf("tree %s/%s, extracted and committed %s/%s", tm, mm, td, md)
	}
}

func TestUnpackCompressions(t *testing.T) {
	repo := newRepo(t)
	var first ostree.Checksum
	for _, comp := range []string{".gz", "", ".xz", ".zst", ".bz2", ".lzma"} {
		t.Run("data.tar"+comp, func(t *testing.T) {
			d := richDeb
			d.Comp = comp
			tree := unpackBytes(t, repo, d.build(t))
			tm, _, _, err := repo.WriteTree(context.Background(), tree.Root, ostree.WriteTreeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if first.IsZero() {
				first = tm
			} else if tm != first {
				t.Errorf("tree %s differs from the .gz one %s", tm, first)
			}
		})
	}
}

// apttest.Deb builds packages the way dpkg-deb lays them out.
func TestUnpackApttestDeb(t *testing.T) {
	repo := newRepo(t)
	deb, err := apttest.Deb{Package: "hello", Version: "2.10-3", Files: map[string]string{
		"usr/bin/hello": "#!/bin/sh\necho hello\n", "usr/share/doc/hello/copyright": "free\n",
	}}.Build()
	if err != nil {
		t.Fatal(err)
	}
	tree := unpackBytes(t, repo, deb)
	if tree.ID() != "hello:amd64=2.10-3" || len(tree.SHA256) != 64 || tree.Size != int64(len(deb)) {
		t.Errorf("%s %s %d", tree.ID(), tree.SHA256, tree.Size)
	}
	want := "/. /usr /usr/bin /usr/bin/hello /usr/share /usr/share/doc /usr/share/doc/hello /usr/share/doc/hello/copyright"
	if got := strings.Join(tree.Files, " "); got != want {
		t.Errorf("Files %s", got)
	}
	_, f := tree.Root.Lookup("usr/bin/hello")
	if f == nil || f.Header.Mode != ostree.ModeRegular|0o755 || f.Checksum.IsZero() {
		t.Errorf("usr/bin/hello: %+v", f)
	}
}

// A file much larger than the buffered limit streams through: the
// allocations during the unpack stay far below its size.
func TestUnpackLargeFileStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	const size = 96 << 20
	gen := func(w io.Writer) {
		r := rand.New(rand.NewSource(1))
		buf := make([]byte, 1<<20)
		for n := 0; n < size; n += len(buf) {
			r.Read(buf[:len(buf)/2]) // half random, half zeros: compressible
			w.Write(buf)
		}
	}
	d := testDeb{Package: "big", Version: "1", Comp: ".gz", Entries: []ent{
		{Name: "./"}, {Name: "./usr/"}, {Name: "./usr/lib/"},
		{Name: "./usr/lib/a-small", Body: "small"},
		{Name: "./usr/lib/big.bin", Size: size, Gen: gen},
		{Name: "./usr/lib/z-small", Body: "small too"},
	}}
	deb := d.build(t)
	repo := newRepo(t)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	tree := unpackBytes(t, repo, deb)
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > size/3 {
		t.Errorf("unpacking a %d MiB file allocated %d MiB", size>>20, alloc>>20)
	} else {
		t.Logf("unpacking a %d MiB file allocated %d MiB", size>>20, alloc>>20)
	}
	_, f := tree.Root.Lookup("usr/lib/big.bin")
	if f == nil || f.Header.Size != size {
		t.Fatalf("big.bin: %+v", f)
	}
	want := sha256.New()
	gen(want)
	if sha256sum(t, repo, f.Checksum) != hex.EncodeToString(want.Sum(nil)) {
		t.Error("big.bin content differs")
	}
}

func TestUnpackRefusesEscapes(t *testing.T) {
	repo := newRepo(t)
	for name, e := range map[string]ent{
		"dotdot":        {Name: "./usr/../../etc/evil", Body: "x"},
		"dotdot-start":  {Name: "../evil", Body: "x"},
		"absolute":      {Name: "/etc/evil", Body: "x"},
		"hardlink-out":  {Name: "./usr/evil", Type: tar.TypeLink, Link: "../../etc/shadow"},
		"hardlink-none": {Name: "./usr/evil", Type: tar.TypeLink, Link: "./etc/shadow"},
		"file-as-root":  {Name: ".", Type: tar.TypeReg, Body: "x"},
	} {
		t.Run(name, func(t *testing.T) {
			d := testDeb{Package: "evil", Version: "1", Comp: ".gz", Entries: []ent{{Name: "./"}, {Name: "./usr/"}, e}}
			_, err := Unpack(context.Background(), repo, bytes.NewReader(d.build(t)), UnpackOptions{Origin: "evil_1_amd64.deb"})
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), "evil") || !strings.Contains(err.Error(), strings.TrimPrefix(e.Name, "./")) {
				t.Errorf("error does not name the package and path: %v", err)
			}
			t.Log(err)
		})
	}
}

func TestUnpackSkipsDeviceNodes(t *testing.T) {
	repo := newRepo(t)
	d := testDeb{Package: "makedev", Version: "1", Comp: ".gz", Entries: []ent{
		{Name: "./"}, {Name: "./dev/"},
		{Name: "./dev/null", Type: tar.TypeChar, Mode: 0o666},
		{Name: "./dev/sda", Type: tar.TypeBlock, Mode: 0o660, GID: 6},
		{Name: "./dev/initctl", Type: tar.TypeFifo, Mode: 0o600},
		{Name: "./dev/README", Body: "devices\n"},
	}}
	tree := unpackBytes(t, repo, d.build(t))
	if got := strings.Join(tree.Skipped, " "); got != "/dev/initctl /dev/null /dev/sda" {
		t.Errorf("Skipped %q", got)
	}
	if len(tree.Warnings) != 3 || !strings.Contains(tree.Warnings[0], "makedev") || !strings.Contains(tree.Warnings[0], "/dev/null") {
		t.Errorf("Warnings %q", tree.Warnings)
	}
	if got := strings.Join(tree.Files, " "); got != "/. /dev /dev/null /dev/sda /dev/initctl /dev/README" {
		t.Errorf("Files %q", got)
	}
	dev, _ := tree.Root.Lookup("dev")
	if len(dev.Files) != 1 {
		t.Errorf("dev holds %d entries", len(dev.Files))
	}
	m := NewMerger(nil, MergeOptions{})
	if err := m.Merge(tree); err != nil {
		t.Fatal(err)
	}
	commitTree(t, repo, m.Root(), "makedev")
	ostreeFsck(t, repo)
}

func TestUnpackBrokenDebs(t *testing.T) {
	repo := newRepo(t)
	good := testDeb{Package: "p", Version: "1", Comp: ".gz", Entries: []ent{{Name: "./"}, {Name: "./f", Body: strings.Repeat("x", 5000)}}}.build(t)
	for name, deb := range map[string][]byte{
		"empty":     nil,
		"not-ar":    []byte("hello world, not a deb"),
		"truncated": good[:len(good)-40],
		"no-data":   good[:bytes.Index(good, []byte("data.tar"))],
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Unpack(context.Background(), repo, bytes.NewReader(deb), UnpackOptions{Origin: "p_1_amd64.deb"})
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), "p_1_amd64.deb") && !strings.Contains(err.Error(), "unpack p") {
				t.Errorf("error does not name the package: %v", err)
			}
			t.Log(err)
		})
	}
}

func TestUnpackCancelled(t *testing.T) {
	repo := newRepo(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Unpack(ctx, repo, bytes.NewReader(richDeb.build(t)), UnpackOptions{})
	if err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Errorf("got %v", err)
	}
}

func sha256sum(t testing.TB, repo *ostree.Repo, c ostree.Checksum) string {
	t.Helper()
	_, rc, err := repo.OpenContent(c)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	h := sha256.New()
	if _, err := io.Copy(h, rc); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Large data.tar.xz members go through the xz program when it is
// installed; both decoders must give the same tree, and xz's failures
// must surface.
func TestUnpackExternalXZ(t *testing.T) {
	needTool(t, "xz")
	if xzProgram() == "" {
		t.Skip("xz is older than 5.4")
	}
	defer func(n int64) { externalXZMin = n }(externalXZMin)
	externalXZMin = 0
	d := richDeb
	d.Comp = ".xz"
	deb := d.build(t)
	repo := newRepo(t)
	trees := map[string]ostree.Checksum{}
	for _, prog := range []string{"", "-"} {
		XZProgram = prog
		tree := unpackBytes(t, repo, deb)
		tm, _, _, err := repo.WriteTree(context.Background(), tree.Root, ostree.WriteTreeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		trees[prog] = tm
	}
	XZProgram = ""
	if trees[""] != trees["-"] {
		t.Errorf("xz program gave tree %s, the Go decoder %s", trees[""], trees["-"])
	}

	// Corrupt the end of the xz stream: xz refuses it.
	bad := append([]byte{}, deb...)
	bad[len(bad)-40] ^= 0xff
	_, err := Unpack(context.Background(), repo, bytes.NewReader(bad), UnpackOptions{Origin: "rich.deb"})
	if err == nil || !strings.Contains(err.Error(), "rich") {
		t.Errorf("corrupted data.tar.xz: %v", err)
	}
	t.Log(err)
}

type cancelAfter struct {
	r      io.Reader
	n      int64
	cancel func()
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.n -= int64(n); c.n <= 0 {
		c.cancel()
	}
	return n, err
}

// Cancelling in the middle of a large, piped file stops everything: no
// deadlock, no goroutine left behind, for both decoders.
func TestUnpackCancelledMidFile(t *testing.T) {
	const size = 12 << 20 // above bufferedFileLimit: piped
	gen := func(w io.Writer) {
		r := rand.New(rand.NewSource(2))
		buf := make([]byte, 1<<20)
		for n := 0; n < size; n += len(buf) {
			r.Read(buf[:len(buf)/8]) // mostly zeros: quick to compress
			w.Write(buf)
		}
	}
	for _, comp := range []string{".gz", ".xz"} {
		t.Run(comp, func(t *testing.T) {
			d := testDeb{Package: "big", Version: "1", Comp: comp, Entries: []ent{
				{Name: "./"}, {Name: "./a", Body: "a"}, {Name: "./big", Size: size, Gen: gen}, {Name: "./z", Body: "z"},
			}}
			deb := d.build(t)
			if comp == ".xz" {
				defer func(n int64) { externalXZMin = n }(externalXZMin)
				externalXZMin = 0
			}
			repo := newRepo(t)
			before := runtime.NumGoroutine()
			ctx, cancel := context.WithCancel(context.Background())
			_, err := Unpack(ctx, repo, &cancelAfter{r: bytes.NewReader(deb), n: int64(len(deb) / 2), cancel: cancel}, UnpackOptions{})
			if err == nil || !strings.Contains(err.Error(), "context canceled") {
				t.Errorf("got %v", err)
			}
			for i := 0; i < 100 && runtime.NumGoroutine() > before; i++ {
				time.Sleep(10 * time.Millisecond)
			}
			if n := runtime.NumGoroutine(); n > before {
				t.Errorf("%d goroutines before, %d after", before, n)
			}
		})
	}
}
