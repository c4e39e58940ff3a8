package ext4

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// testTime is a fixed past timestamp (2023-11-14) so e2fsck never sees
// times in the future.
const testTime = 1700000000

// tool returns the path of an e2fsprogs tool or skips the test (fails when
// AOF_REQUIRE_TOOLS=1).
func tool(t testing.TB, name string) string {
	t.Helper()
	for _, dir := range []string{"", "/usr/sbin/", "/sbin/"} {
		if p, err := exec.LookPath(dir + name); err == nil {
			return p
		}
	}
	if os.Getenv("AOF_REQUIRE_TOOLS") == "1" {
		t.Fatalf("%s not found and AOF_REQUIRE_TOOLS=1", name)
	}
	t.Skipf("%s not found", name)
	return ""
}

// sparseImage creates a sparse, zero file of size bytes.
func sparseImage(t testing.TB, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fs.img")
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

// writeImage writes f into a new sparse image of size bytes.
func writeImage(t testing.TB, f *FS, size int64) string {
	t.Helper()
	p := sparseImage(t, size)
	fh, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if err := f.WriteTo(fh, 0, size); err != nil {
		t.Fatal(err)
	}
	return p
}

// fsckOK lines e2fsck -fn prints for a clean filesystem.
var fsckOK = regexp.MustCompile(`^(Pass [1-5][A-Z]?: .*|e2fsck [0-9.]+ \(.*\)|\S+: \d+/\d+ files \(.*\), \d+/\d+ blocks|)$`)

// fsck runs e2fsck -fn and fails on a non-zero exit or any unexpected line.
func fsck(t testing.TB, img string) {
	t.Helper()
	e2fsck := tool(t, "e2fsck")
	out, err := exec.Command(e2fsck, "-fn", img).CombinedOutput()
	bad := err != nil
	for _, line := range strings.Split(string(out), "\n") {
		if !fsckOK.MatchString(line) {
			bad = true
		}
	}
	if bad {
		t.Fatalf("e2fsck -fn %s: %v\n%s", img, err, out)
	}
}

func debugfs(t testing.TB, img, cmd string) string {
	t.Helper()
	out, err := exec.Command(tool(t, "debugfs"), "-R", cmd, img).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs -R %q: %v\n%s", cmd, err, out)
	}
	return string(out)
}

// genReader yields size bytes of deterministic content without holding it:
// every 4 KiB block is a fixed random pattern stamped with the seed and the
// block number, except that every 16th MiB is zeros (to exercise holes).
type genReader struct {
	seed, size, pos int64
	blk             [blockSize]byte
}

var genPattern = func() []byte {
	b := make([]byte, blockSize)
	x := uint64(0x9E3779B97F4A7C15)
	for i := 0; i < len(b); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(b[i:], x)
	}
	return b
}()

func newGen(seed, size int64) *genReader { return &genReader{seed: seed, size: size} }

func (g *genReader) Read(p []byte) (int, error) {
	if g.pos >= g.size {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && g.pos < g.size {
		off := g.pos % blockSize
		end := min(int64(blockSize), off+g.size-g.pos)
		var k int
		if (g.pos>>20)%16 == 5 {
			k = copy(p[n:], zeroBlock[off:end])
		} else {
			copy(g.blk[:], genPattern)
			binary.LittleEndian.PutUint64(g.blk[0:], uint64(g.seed))
			binary.LittleEndian.PutUint64(g.blk[8:], uint64(g.pos/blockSize))
			k = copy(p[n:], g.blk[off:end])
		}
		n += k
		g.pos += int64(k)
	}
	return n, nil
}

func (g *genReader) Close() error { return nil }

func genSum(seed, size int64) [32]byte {
	h := sha256.New()
	if _, err := io.Copy(h, newGen(seed, size)); err != nil {
		panic(err)
	}
	var s [32]byte
	h.Sum(s[:0])
	return s
}

// want is what a path must look like when read back.
type want struct {
	kind   kind
	perm   uint32
	uid    uint32
	gid    uint32
	mtime  int64
	size   int64
	sum    [32]byte
	target string
	xattrs []Xattr
	flags  uint32
	nlink  uint64
	node   *Node
}

// tree builds an FS and records the expected result of every path.
type tree struct {
	t    testing.TB
	f    *FS
	want map[string]*want
}

func newTree(t testing.TB, opts Options) *tree {
	tr := &tree{t: t, f: New(opts), want: map[string]*want{}}
	root := Meta{Mode: 0o755, Mtime: opts.Time}
	tr.want["/"] = &want{kind: kindDir, perm: 0o755, mtime: opts.Time, node: tr.f.Root()}
	tr.want["/lost+found"] = &want{kind: kindDir, perm: 0o700, mtime: opts.Time, size: 16384, node: tr.f.lostFound}
	tr.f.SetMeta(tr.f.Root(), root)
	return tr
}

func (tr *tree) parent(p string) *Node {
	tr.t.Helper()
	w := tr.want[filepath.Dir(p)]
	if w == nil {
		tr.t.Fatalf("no parent for %s", p)
	}
	return w.node
}

func wantOf(k kind, m Meta) *want {
	return &want{kind: k, perm: m.Mode & 0o7777, uid: m.UID, gid: m.GID, mtime: m.Mtime, xattrs: m.Xattrs, flags: m.Flags}
}

func (tr *tree) mkdir(p string, m Meta) {
	tr.t.Helper()
	n, err := tr.f.Mkdir(tr.parent(p), filepath.Base(p), m)
	if err != nil {
		tr.t.Fatal(err)
	}
	w := wantOf(kindDir, m)
	w.node = n
	tr.want[p] = w
}

func (tr *tree) file(p string, m Meta, content []byte) {
	tr.t.Helper()
	c := bytes.Clone(content)
	n, err := tr.f.Create(tr.parent(p), filepath.Base(p), m, int64(len(c)), func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(c)), nil
	})
	if err != nil {
		tr.t.Fatal(err)
	}
	w := wantOf(kindFile, m)
	w.node, w.size, w.sum = n, int64(len(c)), sha256.Sum256(c)
	tr.want[p] = w
}

// gen adds a file of generated content (nothing held in memory).
func (tr *tree) gen(p string, m Meta, seed, size int64) {
	tr.t.Helper()
	n, err := tr.f.Create(tr.parent(p), filepath.Base(p), m, size, func() (io.ReadCloser, error) {
		return newGen(seed, size), nil
	})
	if err != nil {
		tr.t.Fatal(err)
	}
	w := wantOf(kindFile, m)
	w.node, w.size, w.sum = n, size, genSum(seed, size)
	tr.want[p] = w
}

func (tr *tree) symlink(p string, m Meta, target string) {
	tr.t.Helper()
	n, err := tr.f.Symlink(tr.parent(p), filepath.Base(p), m, target)
	if err != nil {
		tr.t.Fatal(err)
	}
	w := wantOf(kindSymlink, m)
	w.node, w.target, w.size = n, target, int64(len(target))
	tr.want[p] = w
}

func (tr *tree) link(p, target string) {
	tr.t.Helper()
	tw := tr.want[target]
	if err := tr.f.Link(tr.parent(p), filepath.Base(p), tw.node); err != nil {
		tr.t.Fatal(err)
	}
	tr.want[p] = tw // the same *want: one inode
}

// finish computes expected link counts.
func (tr *tree) finish() {
	names := map[*want]uint64{}
	for p, w := range tr.want {
		if w.kind != kindDir {
			names[w]++
			continue
		}
		w.nlink = 2
		for q, c := range tr.want {
			if c.kind == kindDir && q != "/" && filepath.Dir(q) == p {
				w.nlink++
			}
		}
	}
	for w, n := range names {
		w.nlink = n
	}
}

var (
	capValue = []byte{0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0} // cap_net_bind_service=e (v2)
	aclValue = func() []byte {
		b := binary.LittleEndian.AppendUint32(nil, 2)
		for _, e := range []struct {
			tag, perm uint16
			id        uint32
		}{{aclUserObj, 6, 0xFFFFFFFF}, {aclUser, 4, 1000}, {aclGroupObj, 4, 0xFFFFFFFF}, {aclGroup, 6, 2000}, {aclMask, 6, 0xFFFFFFFF}, {aclOther, 0, 0xFFFFFFFF}} {
			b = binary.LittleEndian.AppendUint16(b, e.tag)
			b = binary.LittleEndian.AppendUint16(b, e.perm)
			b = binary.LittleEndian.AppendUint32(b, e.id)
		}
		return b
	}()
)

// buildRich adds the test tree: every kind of node, edge sizes, modes, ids,
// hard links, xattrs in the inode and in a block, flags, a big directory.
func buildRich(tr *tree) {
	T := int64(testTime)
	m := func(mode uint32) Meta { return Meta{Mode: mode, Mtime: T} }
	tr.file("/empty", m(0o644), nil)
	tr.file("/one", m(0o644), []byte("x"))
	tr.file("/block", m(0o600), bytes.Repeat([]byte("b"), blockSize))
	tr.file("/multi", m(0o640), bytes.Repeat([]byte("0123456789abcdef"), 3*blockSize/16+100))
	tr.file("/zeros", m(0o644), make([]byte, 3*blockSize+5))
	tr.mkdir("/dir", Meta{Mode: 0o750, UID: 70000, GID: 80000, Mtime: T - 100})
	tr.file("/dir/suid", Meta{Mode: 0o4755, Mtime: T}, []byte("#!/bin/sh\n"))
	tr.file("/dir/sgid", Meta{Mode: 0o2755, GID: 5, Mtime: T}, []byte("sgid"))
	tr.mkdir("/dir/sticky", m(0o1777))
	tr.file("/dir/bigids", Meta{Mode: 0o644, UID: 4000000000, GID: 65536, Mtime: T}, []byte("ids"))
	tr.file("/dir/y2100", Meta{Mode: 0o644, Mtime: 4102444800}, []byte("future"))
	tr.mkdir("/dir/a", m(0o755))
	tr.mkdir("/dir/a/b", m(0o755))
	tr.mkdir("/dir/a/b/c", m(0o700))
	tr.mkdir("/many", m(0o755))
	for i := range 5000 {
		name := fmt.Sprintf("/many/entry-with-a-longish-name-%05d", i)
		if i%100 == 0 {
			tr.mkdir(name, m(0o755))
		} else if i%10 == 0 {
			tr.file(name, m(0o644), []byte(name))
		} else {
			tr.file(name, m(0o644), nil)
		}
	}
	tr.mkdir("/links", m(0o755))
	tr.file("/links/a", m(0o644), []byte("shared content\n"))
	tr.link("/links/b", "/links/a")
	tr.mkdir("/links/sub", m(0o755))
	tr.link("/links/sub/c", "/links/a")
	tr.symlink("/links/sl", m(0o777), "a")
	tr.link("/links/sl2", "/links/sl")
	tr.mkdir("/sym", m(0o755))
	tr.symlink("/sym/fast", m(0o777), "../one")
	tr.symlink("/sym/slow", m(0o777), strings.Repeat("long/", 40)+"target")
	tr.symlink("/sym/dangling", m(0o777), "/does/not/exist")
	tr.symlink("/sym/len59", m(0o777), strings.Repeat("a", 59))
	tr.symlink("/sym/len60", m(0o777), strings.Repeat("b", 60))
	tr.symlink("/sym/len4095", m(0o777), strings.Repeat("c/", 2047)+"d")
	tr.mkdir("/xattr", Meta{Mode: 0o755, Mtime: T, Xattrs: []Xattr{{"user.dir", []byte("on a directory")}}})
	tr.file("/xattr/cap", Meta{Mode: 0o755, Mtime: T, Xattrs: []Xattr{{"security.capability", capValue}}}, []byte("ping"))
	tr.file("/xattr/selinux", Meta{Mode: 0o644, Mtime: T, Xattrs: []Xattr{{"security.selinux", []byte("system_u:object_r:bin_t:s0\x00")}}}, nil)
	tr.file("/xattr/large", Meta{Mode: 0o644, Mtime: T, Xattrs: []Xattr{
		{"user.a", bytes.Repeat([]byte("A"), 100)},
		{"user.bb", bytes.Repeat([]byte("B"), 81)},
		{"trusted.c", bytes.Repeat([]byte("C"), 60)},
		{"security.capability", capValue},
		{"user.empty", []byte{}},
	}}, []byte("large xattrs"))
	tr.file("/xattr/huge", Meta{Mode: 0o644, Mtime: T, Xattrs: []Xattr{
		{"user.one", bytes.Repeat([]byte{1}, 3000)},
		{"user.two", bytes.Repeat([]byte{2}, 40)},
	}}, nil)
	tr.file("/xattr/mixed", Meta{Mode: 0o644, Mtime: T, Xattrs: []Xattr{ // too much for one block: split
		{"user.big1", bytes.Repeat([]byte{3}, 2000)},
		{"user.big2", bytes.Repeat([]byte{4}, 2000)},
		{"user.small", []byte("0123456789")},
	}}, nil)
	tr.file("/xattr/acl", Meta{Mode: 0o660, Mtime: T, Xattrs: []Xattr{{"system.posix_acl_access", aclValue}}}, []byte("acl"))
	tr.mkdir("/xattr/defacl", Meta{Mode: 0o770, Mtime: T, Xattrs: []Xattr{{"system.posix_acl_default", aclValue}}})
	tr.symlink("/xattr/sym", Meta{Mode: 0o777, Mtime: T, Xattrs: []Xattr{{"security.selinux", []byte("system_u:object_r:etc_t:s0\x00")}}}, "cap")
	tr.file("/immutable", Meta{Mode: 0o644, Mtime: T, Flags: FlagImmutable}, []byte("frozen"))
	tr.mkdir("/immutable-dir", Meta{Mode: 0o755, Mtime: T, Flags: FlagImmutable})
}

// mountImage mounts img read-only through a loop device, or returns "" if
// that is not possible here (not root, no loop support).
func mountImage(t testing.TB, img string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Log("not root: skipping the mount comparison")
		return ""
	}
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "mount", "-t", "ext4", "-o", "loop,ro", img, dir).CombinedOutput()
	if err != nil {
		t.Logf("mount failed, skipping the mount comparison: %v\n%s", err, out)
		return ""
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if out, err := exec.CommandContext(ctx, "umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v\n%s", dir, err, out)
		}
	})
	return dir
}

// compareMounted checks every path of the mounted filesystem against tr.
func compareMounted(t *testing.T, dir string, tr *tree) {
	t.Helper()
	seen := map[string]bool{}
	inos := map[*want]uint64{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := "/" + strings.TrimPrefix(strings.TrimPrefix(p, dir), "/")
		w := tr.want[rel]
		if w == nil {
			t.Errorf("%s: unexpected path", rel)
			return nil
		}
		seen[rel] = true
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		typ := map[kind]uint32{kindDir: unix.S_IFDIR, kindFile: unix.S_IFREG, kindSymlink: unix.S_IFLNK}[w.kind]
		if st.Mode != typ|w.perm {
			t.Errorf("%s: mode %o, want %o", rel, st.Mode, typ|w.perm)
		}
		if st.Uid != w.uid || st.Gid != w.gid {
			t.Errorf("%s: owner %d:%d, want %d:%d", rel, st.Uid, st.Gid, w.uid, w.gid)
		}
		if st.Mtim.Sec != w.mtime || st.Ctim.Sec != w.mtime || st.Atim.Sec != w.mtime {
			t.Errorf("%s: times %d/%d/%d, want %d", rel, st.Mtim.Sec, st.Ctim.Sec, st.Atim.Sec, w.mtime)
		}
		if uint64(st.Nlink) != w.nlink {
			t.Errorf("%s: nlink %d, want %d", rel, st.Nlink, w.nlink)
		}
		if ino, ok := inos[w]; ok && ino != st.Ino {
			t.Errorf("%s: inode %d, want %d (hard link)", rel, st.Ino, ino)
		}
		inos[w] = st.Ino
		switch w.kind {
		case kindFile:
			if st.Size != w.size {
				t.Errorf("%s: size %d, want %d", rel, st.Size, w.size)
			}
			fh, err := os.Open(p)
			if err != nil {
				return err
			}
			h := sha256.New()
			_, err = io.Copy(h, fh)
			flags, ferr := unix.IoctlGetUint32(int(fh.Fd()), unix.FS_IOC_GETFLAGS)
			fh.Close()
			if err != nil || ferr != nil {
				return fmt.Errorf("%s: %v %v", rel, err, ferr)
			}
			if !bytes.Equal(h.Sum(nil), w.sum[:]) {
				t.Errorf("%s: content differs", rel)
			}
			if flags&FlagImmutable != w.flags&FlagImmutable {
				t.Errorf("%s: flags %#x, want immutable=%v", rel, flags, w.flags&FlagImmutable != 0)
			}
		case kindSymlink:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if target != w.target {
				t.Errorf("%s: target %q, want %q", rel, target, w.target)
			}
		case kindDir:
			if rel == "/lost+found" && st.Size != 16384 {
				t.Errorf("%s: size %d", rel, st.Size)
			}
		}
		compareXattrs(t, rel, p, w.xattrs)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("compared %d mounted paths", len(seen))
	for p := range tr.want {
		if !seen[p] {
			t.Errorf("%s: missing", p)
		}
	}
}

func compareXattrs(t *testing.T, rel, p string, want []Xattr) {
	t.Helper()
	buf := make([]byte, 65536)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		t.Errorf("%s: listxattr: %v", rel, err)
		return
	}
	var got []string
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name != "" {
			got = append(got, name)
		}
	}
	var names []string
	for _, x := range want {
		names = append(names, x.Name)
	}
	sort.Strings(got)
	sort.Strings(names)
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Errorf("%s: xattrs %q, want %q", rel, got, names)
	}
	for _, x := range want {
		n, err := unix.Lgetxattr(p, x.Name, buf)
		if err != nil {
			t.Errorf("%s: getxattr %s: %v", rel, x.Name, err)
			continue
		}
		if !bytes.Equal(buf[:n], x.Value) {
			t.Errorf("%s: xattr %s = %x, want %x", rel, x.Name, buf[:n], x.Value)
		}
	}
}
