package builder

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/apt-ostree/apt-ostree-factory/apt"
	"github.com/apt-ostree/apt-ostree-factory/internal/testenv"
	"github.com/apt-ostree/apt-ostree-factory/ostree"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"
)

// apttest.Deb builds simple packages (gzip, root-owned, 0644/0755 files);
// the tests here also need owners, setuid bits, xattrs, links, device
// nodes, hostile names and every compression dpkg-deb knows, so they use
// this builder for those.

// ent is one data.tar entry. Name is the tar name as written ("./usr/bin/x",
// "./usr/" for a directory); Type defaults to a regular file (a directory
// when Name ends in "/").
type ent struct {
	Name     string
	Type     byte
	Mode     int64
	UID, GID int
	Body     string
	Link     string            // symlink or hardlink target
	Xattrs   map[string]string // written as SCHILY.xattr.* PAX records
	Size     int64             // with Gen: content of this size from Gen
	Gen      func(w io.Writer)
}

type testDeb struct {
	Package, Version, Arch string
	Fields                 map[string]string
	Entries                []ent
	Control                map[string]string // further control.tar members
	Comp                   string            // data.tar compression: "", ".gz", ".xz", ".zst", ".bz2", ".lzma"
}

var testMtime = time.Unix(1700000000, 0)

func (d testDeb) controlText() string {
	arch := d.Arch
	if arch == "" {
		arch = "amd64"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Package: %s\nVersion: %s\nArchitecture: %s\nMaintainer: test <t@example.invalid>\n", d.Package, d.Version, arch)
	keys := make([]string, 0, len(d.Fields))
	for k := range d.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s: %s\n", k, d.Fields[k])
	}
	fmt.Fprintf(&b, "Description: test package %s\n", d.Package)
	return b.String()
}

// dataTar returns the uncompressed data.tar.
func (d testDeb) dataTar(t testing.TB) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range d.Entries {
		h := &tar.Header{Name: e.Name, Mode: e.Mode, Uid: e.UID, Gid: e.GID, ModTime: testMtime, Typeflag: e.Type, Linkname: e.Link, Format: tar.FormatPAX}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
			if strings.HasSuffix(e.Name, "/") {
				h.Typeflag = tar.TypeDir
			}
		}
		if h.Mode == 0 {
			h.Mode = map[byte]int64{tar.TypeDir: 0o755, tar.TypeSymlink: 0o777}[h.Typeflag]
			if h.Mode == 0 {
				h.Mode = 0o644
			}
		}
		if h.Typeflag == tar.TypeChar || h.Typeflag == tar.TypeBlock {
			h.Devmajor, h.Devminor = 1, 3
		}
		if len(e.Xattrs) > 0 {
			h.PAXRecords = map[string]string{}
			for k, v := range e.Xattrs {
				h.PAXRecords["SCHILY.xattr."+k] = v
			}
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.Body))
			if e.Gen != nil {
				h.Size = e.Size
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("%s: %v", e.Name, err)
		}
		if h.Typeflag == tar.TypeReg {
			if e.Gen != nil {
				e.Gen(tw)
			} else if _, err := io.WriteString(tw, e.Body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func compress(t testing.TB, comp string, data []byte) []byte {
	var b bytes.Buffer
	var w io.WriteCloser
	var err error
	switch comp {
	case "":
		return data
	case ".gz":
		w = gzip.NewWriter(&b)
	case ".xz":
		// The xz program, when there is one, writes what dpkg-deb writes
		// (and is much faster than the Go encoder on large inputs).
		if _, err := exec.LookPath("xz"); err == nil {
			cmd := exec.Command("xz", "-6", "-c")
			cmd.Stdin = bytes.NewReader(data)
			out, err := cmd.Output()
			if err != nil {
				t.Fatal(err)
			}
			return out
		}
		w, err = xz.NewWriter(&b)
	case ".zst":
		w, err = zstd.NewWriter(&b)
	case ".lzma":
		w, err = lzma.NewWriter(&b)
	case ".bz2":
		if _, err := exec.LookPath("bzip2"); err != nil {
			t.Skip("bzip2 is needed to write a .bz2 member")
		}
		cmd := exec.Command("bzip2", "-c")
		cmd.Stdin = bytes.NewReader(data)
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		return out
	default:
		t.Fatalf("compression %q", comp)
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func (d testDeb) build(t testing.TB) []byte {
	t.Helper()
	var cb bytes.Buffer
	tw := tar.NewWriter(&cb)
	members := map[string]string{"control": d.controlText()}
	for k, v := range d.Control {
		members[k] = v
	}
	names := make([]string, 0, len(members))
	for k := range members {
		names = append(names, k)
	}
	sort.Strings(names)
	tw.WriteHeader(&tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: testMtime})
	for _, n := range names {
		mode := int64(0o644)
		if strings.HasSuffix(n, "inst") || strings.HasSuffix(n, "rm") || n == "config" {
			mode = 0o755
		}
		tw.WriteHeader(&tar.Header{Name: "./" + n, Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(members[n])), ModTime: testMtime})
		io.WriteString(tw, members[n])
	}
	tw.Close()
	control := compress(t, ".xz", cb.Bytes())
	data := compress(t, d.Comp, d.dataTar(t))

	var b bytes.Buffer
	b.WriteString("!<arch>\n")
	ar := func(name string, content []byte) {
		fmt.Fprintf(&b, "%-16s%-12d%-6d%-6d%-8s%-10d`\n", name, testMtime.Unix(), 0, 0, "100644", len(content))
		b.Write(content)
		if len(content)%2 == 1 {
			b.WriteByte('\n')
		}
	}
	ar("debian-binary", []byte("2.0\n"))
	ar("control.tar.xz", control)
	ar("data.tar"+d.Comp, data)
	return b.Bytes()
}

func newRepo(t testing.TB) *ostree.Repo {
	t.Helper()
	r, err := ostree.Init(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func unpackBytes(t testing.TB, repo *ostree.Repo, deb []byte) *DebTree {
	t.Helper()
	tree, err := Unpack(context.Background(), repo, bytes.NewReader(deb), UnpackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

// putInCache stores deb in an apt.Cache directory as Fetch would have, and
// returns the lock entry that names it.
func putInCache(t testing.TB, cache *apt.Cache, name, version, arch string, deb []byte) apt.LockedPackage {
	t.Helper()
	sum := sha256.Sum256(deb)
	hexsum := hex.EncodeToString(sum[:])
	if err := os.MkdirAll(cache.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cache.Path(hexsum), deb, 0o644); err != nil {
		t.Fatal(err)
	}
	return apt.LockedPackage{Name: name, Version: version, Architecture: arch, SHA256: hexsum, Size: int64(len(deb)),
		Filename: fmt.Sprintf("pool/main/%s/%s_%s_%s.deb", name, name, version, arch), URI: "http://example.invalid/debian", Suite: "test"}
}

// commitTree commits root on a throwaway branch and returns the commit.
func commitTree(t testing.TB, repo *ostree.Repo, root *ostree.MemDir, branch string) ostree.Checksum {
	t.Helper()
	res, err := repo.CommitTree(context.Background(), root, ostree.CommitOptions{Branch: branch, Subject: branch, Timestamp: testMtime})
	if err != nil {
		t.Fatal(err)
	}
	return res.Checksum
}

// walkAll lists a commit's entries by path.
func walkAll(t testing.TB, repo *ostree.Repo, c ostree.Checksum) map[string]*ostree.TreeEntry {
	t.Helper()
	out := map[string]*ostree.TreeEntry{}
	err := repo.Walk(c, "/", true, func(e *ostree.TreeEntry) error {
		out[e.Path] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func needTool(t testing.TB, tool string) string {
	t.Helper()
	return testenv.Tool(t, tool)
}

// ostreeFsck runs the real `ostree fsck` on the repository.
func ostreeFsck(t testing.TB, repo *ostree.Repo) {
	t.Helper()
	needTool(t, "ostree")
	out, err := exec.Command("ostree", "fsck", "--repo="+repo.Path()).CombinedOutput()
	if err != nil {
		t.Fatalf("ostree fsck: %v\n%s", err, out)
	}
}
