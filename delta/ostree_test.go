package delta

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apt-ostree/apt-ostree-factory/internal/testenv"
	"github.com/apt-ostree/apt-ostree-factory/ostree"
	"github.com/apt-ostree/apt-ostree-factory/ostree/gvariant"
)

// ostreeCmd runs the real ostree and returns its stdout; failure is fatal.
func ostreeCmd(t testing.TB, bin string, args ...string) string {
	t.Helper()
	out, stderr, err := ostreeTry(bin, args...)
	if err != nil {
		t.Fatalf("ostree %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr)
	}
	return out
}

func ostreeTry(bin string, args ...string) (string, string, error) {
	cmd := exec.Command(bin, args...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	cmd.Env = append(os.Environ(), "LC_ALL=C", "OSTREE_SKIP_CACHE=1")
	err := cmd.Run()
	return out.String(), stderr.String(), err
}

func initRepo(t testing.TB, bin, path, mode string) {
	t.Helper()
	ostreeCmd(t, bin, "init", "--repo="+path, "--mode="+mode)
}

// lsTree is `ostree ls -R -X` of a commit.
func lsTree(t testing.TB, bin, repo string, c ostree.Checksum) string {
	t.Helper()
	return ostreeCmd(t, bin, "ls", "--repo="+repo, "-R", "-X", c.String())
}

// checkImported verifies a destination repository after a delta import:
// fsck clean, the tree listing equal to the source's, the commitmeta copied.
func checkImported(t *testing.T, bin string, fx *fixture, dst string, to ostree.Checksum) {
	t.Helper()
	out := ostreeCmd(t, bin, "fsck", "--repo="+dst)
	if strings.Contains(out, "corrupted") || strings.Contains(out, "missing") {
		t.Errorf("fsck: %s", out)
	}
	if got, want := lsTree(t, bin, dst, to), lsTree(t, bin, fx.path, to); got != want {
		t.Errorf("ls -R differs:\n%s\nwant\n%s", got, want)
	}
	h := to.String()
	want, err := ostree.EncodeMetadata(fx.meta)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dst, "objects", h[:2], h[2:]+".commitmeta"))
	if err != nil {
		t.Errorf("commitmeta not imported: %v", err)
	} else if !bytes.Equal(got, want) {
		t.Errorf("commitmeta differs")
	}
	// ostree sees the detached metadata too.
	if out := ostreeCmd(t, bin, "show", "--repo="+dst, "--print-detached-metadata-key=test.signature", h); len(strings.TrimSpace(out)) == 0 {
		t.Errorf("ostree show does not see the detached metadata: %q", out)
	}
}

var showNum = regexp.MustCompile(`(?m)^(Number of parts|Number of fallback entries|Total Part Uncompressed Size|Total Fallback Uncompressed Size): (\d+)`)

func showCounts(out string) map[string]int {
	m := map[string]int{}
	for _, s := range showNum.FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(s[2])
		m[s[1]] = n
	}
	return m
}

func TestOstreeShowParsesOurDeltas(t *testing.T) {
	bin := testenv.Tool(t, "ostree")
	fx := makeFixture(t)
	ctx := context.Background()
	for _, from := range []*ostree.Checksum{&fx.v1, nil} {
		res, err := Generate(ctx, fx.repo, from, fx.v2, Options{Time: fixedTime, MinFallbackSize: DefaultMinFallbackSize, MaxChunkSize: 16 << 10})
		if err != nil {
			t.Fatal(err)
		}
		out := ostreeCmd(t, bin, "static-delta", "show", "--repo="+fx.path, res.ID)
		c := showCounts(out)
		if c["Number of parts"] != res.Parts || c["Number of fallback entries"] != res.Fallbacks ||
			int64(c["Total Part Uncompressed Size"]) != res.UncompressedSize {
			t.Errorf("ostree static-delta show:\n%s\nresult %+v", out, res)
		}
		if res.Fallbacks == 0 || res.Parts < 2 {
			t.Errorf("fixture should give fallbacks and several parts: %+v", res)
		}
		if !strings.Contains(out, "Timestamp: "+strconv.FormatInt(fixedTime.Unix(), 10)) {
			t.Errorf("timestamp not shown: %s", out)
		}
		for i := 0; i < res.Parts; i++ {
			if !regexp.MustCompile(fmt.Sprintf(`PartPayloadOps%d: openspliceclose=\d+ open=\d+ write=0`, i)).MatchString(out) {
				t.Errorf("part %d ops not shown: %s", i, out)
			}
		}
	}
	list := ostreeCmd(t, bin, "static-delta", "list", "--repo="+fx.path)
	for _, want := range []string{fx.v2.String(), fx.v1.String() + "-" + fx.v2.String()} {
		if !strings.Contains(list, want+"\n") {
			t.Errorf("static-delta list lacks %s:\n%s", want, list)
		}
	}
}

// TestScratchMatchesOstreeCounts compares our scratch delta with the one
// `ostree static-delta generate --empty` makes on the same repository: the
// same objects, fallbacks and uncompressed sizes (no bsdiff applies to a
// scratch delta).
func TestScratchMatchesOstreeCounts(t *testing.T) {
	bin := testenv.Tool(t, "ostree")
	fx := makeFixture(t)
	theirs := filepath.Join(t.TempDir(), "theirs")
	copyTree(t, fx.path, theirs)
	ostreeCmd(t, bin, "static-delta", "generate", "--repo="+theirs, "--empty", "--to="+fx.v2.String())
	// As ostree: compressed files in the xz parts with the rest.
	opts := DefaultOptions()
	opts.CompressPacked = true
	res, err := Generate(context.Background(), fx.repo, nil, fx.v2, opts)
	if err != nil {
		t.Fatal(err)
	}
	ours := showCounts(ostreeCmd(t, bin, "static-delta", "show", "--repo="+fx.path, res.ID))
	their := showCounts(ostreeCmd(t, bin, "static-delta", "show", "--repo="+theirs, res.ID))
	for k, v := range their {
		if ours[k] != v {
			t.Errorf("%s: ours %d, ostree %d", k, ours[k], v)
		}
	}
	oi, err := Show(res.Dir)
	if err != nil {
		t.Fatal(err)
	}
	ti, err := Show(filepath.Join(theirs, ostree.DeltaDir(nil, fx.v2)))
	if err != nil {
		t.Fatalf("decoding ostree's delta: %v", err)
	}
	set := func(i *Info) map[ostree.ObjectName]bool {
		m := map[ostree.ObjectName]bool{}
		for _, p := range i.Parts {
			for _, o := range p.Objects {
				m[o] = true
			}
		}
		for _, f := range i.Fallbacks {
			m[f.Object] = true
		}
		return m
	}
	os, ts := set(oi), set(ti)
	if len(os) != len(ts) {
		t.Errorf("objects: ours %d, ostree %d", len(os), len(ts))
	}
	for o := range ts {
		if !os[o] {
			t.Errorf("ostree carries %s, we do not", o)
		}
	}
	if oi.Parts[0].Modes != ti.Parts[0].Modes || oi.Parts[0].XattrSets != ti.Parts[0].XattrSets || oi.Parts[0].BlobSize != ti.Parts[0].BlobSize {
		t.Errorf("part 0 tables: ours %d modes %d xattrs %d blob, ostree %d/%d/%d",
			oi.Parts[0].Modes, oi.Parts[0].XattrSets, oi.Parts[0].BlobSize, ti.Parts[0].Modes, ti.Parts[0].XattrSets, ti.Parts[0].BlobSize)
	}
	if !bytes.Equal(oi.CommitMeta, ti.CommitMeta) {
		t.Errorf("commitmeta in superblock differs from ostree's")
	}
}

func TestBundleApplyOffline(t *testing.T) {
	bin := testenv.Tool(t, "ostree")
	fx := makeFixture(t)
	ctx := context.Background()
	for _, goXZ := range []bool{false, true} {
		for _, mode := range []string{"archive", "bare-user"} {
			for _, scratch := range []bool{true, false} {
				name := fmt.Sprintf("%s/scratch=%v/goxz=%v", mode, scratch, goXZ)
				t.Run(name, func(t *testing.T) {
					if goXZ && (mode != "bare-user" || scratch) {
						t.Skip("the pure-Go encoder is checked on one combination (slow under -race)")
					}
					saved := xzCommand
					if goXZ {
						xzCommand = ""
					}
					defer func() { xzCommand = saved }()
					var from *ostree.Checksum
					if !scratch {
						from = &fx.v1
					}
					tmp := t.TempDir()
					bundle := filepath.Join(tmp, "update.delta")
					// ostree applies patches only into bare-family
					// repositories (it aborts on an archive one).
					res, err := WriteBundle(ctx, fx.repo, from, fx.v2, bundle, Options{Time: fixedTime, MaxChunkSize: 1 << 20, DisableBsdiff: mode == "archive"})
					if err != nil {
						t.Fatal(err)
					}
					if res.Fallbacks != 0 {
						t.Errorf("bundle has %d fallbacks", res.Fallbacks)
					}
					dst := filepath.Join(tmp, "dst")
					initRepo(t, bin, dst, mode)
					if from != nil {
						ostreeCmd(t, bin, "pull-local", "--repo="+dst, fx.path, fx.v1.String())
					}
					ostreeCmd(t, bin, "static-delta", "apply-offline", "--repo="+dst, bundle)
					checkImported(t, bin, fx, dst, fx.v2)
				})
			}
		}
	}
}

// serveRepo serves a repository over HTTP, logging requests.
func serveRepo(t testing.TB, dir string) (string, *testenv.FileServer) {
	t.Helper()
	srv := testenv.ServeDir(t, dir)
	return srv.URL, srv
}

// pullRequiringDeltas pulls origin:test into a new repository of the given
// mode, seeded with the from commit when from is set.
func pullRequiringDeltas(t *testing.T, bin, url, src, mode string, from *ostree.Checksum) (dst, out string, err error) {
	t.Helper()
	dst = filepath.Join(t.TempDir(), "dst")
	initRepo(t, bin, dst, mode)
	ostreeCmd(t, bin, "remote", "add", "--repo="+dst, "--no-gpg-verify", "origin", url)
	if from != nil {
		ostreeCmd(t, bin, "pull-local", "--repo="+dst, src, from.String())
		ostreeCmd(t, bin, "refs", "--repo="+dst, "--create=origin:test", from.String())
	}
	stdout, stderr, err := ostreeTry(bin, "pull", "--repo="+dst, "--require-static-deltas", "origin", "test")
	return dst, stdout + stderr, err
}

func TestPullUsesOurDeltas(t *testing.T) {
	bin := testenv.Tool(t, "ostree")
	fx := makeFixture(t)
	ctx := context.Background()
	if _, err := Generate(ctx, fx.repo, &fx.v1, fx.v2, Options{Time: fixedTime, MinFallbackSize: DefaultMinFallbackSize, MaxChunkSize: 16 << 10}); err != nil {
		t.Fatal(err)
	}
	if _, err := Generate(ctx, fx.repo, nil, fx.v2, Options{Time: fixedTime, MinFallbackSize: DefaultMinFallbackSize}); err != nil {
		t.Fatal(err)
	}
	ostreeCmd(t, bin, "summary", "-u", "--repo="+fx.path)
	sum := ostreeCmd(t, bin, "summary", "--view", "--repo="+fx.path)
	if !strings.Contains(sum, fx.v1.String()+"-"+fx.v2.String()) {
		t.Fatalf("summary does not list the delta:\n%s", sum)
	}
	// Detached metadata must travel in the superblock: drop the loose copy.
	h := fx.v2.String()
	if err := os.Remove(filepath.Join(fx.path, "objects", h[:2], h[2:]+".commitmeta")); err != nil {
		t.Fatal(err)
	}
	url, log := serveRepo(t, fx.path)
	// ostree refuses delta pulls into archive repositories ("Can't use
	// static deltas in an archive repo"); clients are bare or bare-user.
	for _, remote := range []string{"http", "file"} {
		for _, mode := range []string{"bare-user", "bare"} {
			for _, from := range []*ostree.Checksum{&fx.v1, nil} {
				t.Run(fmt.Sprintf("%s/%s/scratch=%v", remote, mode, from == nil), func(t *testing.T) {
					u := url
					if remote == "file" {
						u = "file://" + fx.path
					}
					log.Requests()
					dst, out, err := pullRequiringDeltas(t, bin, u, fx.path, mode, from)
					if err != nil {
						t.Fatalf("pull: %v\n%s", err, out)
					}
					if remote == "http" {
						paths := log.Requests()
						t.Logf("requests: %v", paths)
						checkRequests(t, paths, fx.path, from, fx.v2)
					}
					checkImported(t, bin, fx, dst, fx.v2)
					if got := strings.TrimSpace(ostreeCmd(t, bin, "rev-parse", "--repo="+dst, "origin:test")); got != fx.v2.String() {
						t.Errorf("origin:test = %s", got)
					}
				})
			}
		}
	}
}

func TestPullRejectsCorruptPart(t *testing.T) {
	bin := testenv.Tool(t, "ostree")
	fx := makeFixture(t)
	res, err := Generate(context.Background(), fx.repo, &fx.v1, fx.v2, Options{Time: fixedTime, MinFallbackSize: DefaultMinFallbackSize})
	if err != nil {
		t.Fatal(err)
	}
	ostreeCmd(t, bin, "summary", "-u", "--repo="+fx.path)
	part := filepath.Join(res.Dir, "0")
	b, err := os.ReadFile(part)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x01
	if err := os.WriteFile(part, b, 0o644); err != nil {
		t.Fatal(err)
	}
	url, _ := serveRepo(t, fx.path)
	for _, u := range []string{url, "file://" + fx.path} {
		dst, out, err := pullRequiringDeltas(t, bin, u, fx.path, "bare-user", &fx.v1)
		if err == nil {
			t.Errorf("pull of a corrupted part from %s succeeded:\n%s", u, out)
			continue
		}
		t.Logf("pull from %s failed as expected: %s", u, strings.TrimSpace(out))
		if got := strings.TrimSpace(ostreeCmd(t, bin, "rev-parse", "--repo="+dst, "origin:test")); got != fx.v1.String() {
			t.Errorf("ref moved to %s after a failed pull", got)
		}
	}
}

// checkRequests asserts that a pull fetched the delta (superblock, all
// parts, fallbacks) and no loose object the delta does not carry. ostree
// 2022.7 writes the to-commit from the superblock and scans it while parts
// are still being applied, so it may also fetch, redundantly, objects of a
// part not yet written; those are logged. An object missing from the delta
// would be fetched loose and fail this check.
func checkRequests(t *testing.T, paths []string, repo string, from *ostree.Checksum, to ostree.Checksum) {
	t.Helper()
	info, err := Show(filepath.Join(repo, ostree.DeltaDir(from, to)))
	if err != nil {
		t.Fatal(err)
	}
	rel := "/" + relDir(from, to) + "/"
	loosePath := func(n ostree.ObjectName) string {
		h, ext := n.Checksum.String(), n.Type.String()
		if n.Type == ostree.ObjectFile {
			ext = "filez"
		}
		return "/objects/" + h[:2] + "/" + h[2:] + "." + ext
	}
	allowed := map[string]bool{}
	inParts := map[string]bool{}
	for _, f := range info.Fallbacks {
		allowed[loosePath(f.Object)] = true
	}
	for _, p := range info.Parts {
		for _, o := range p.Objects {
			inParts[loosePath(o)] = true
		}
	}
	fetched := map[string]bool{}
	var redundant int
	for _, p := range paths {
		fetched[p] = true
		switch {
		case !strings.HasPrefix(p, "/objects/") || allowed[p] || strings.HasSuffix(p, ".commitmeta"):
		case inParts[p]:
			redundant++
		default:
			t.Errorf("pull fetched loose object %s, which the delta does not carry", p)
		}
		if strings.HasPrefix(p, "/deltas/") && !strings.HasPrefix(p, rel) {
			t.Errorf("pull fetched another delta's %s", p)
		}
	}
	if redundant > 0 {
		t.Logf("ostree also fetched %d objects of not yet applied parts as loose objects", redundant)
	}
	need := []string{rel + "superblock"}
	for i := range info.Parts {
		need = append(need, rel+strconv.Itoa(i))
	}
	for p := range allowed {
		need = append(need, p)
	}
	for _, p := range need {
		if !fetched[p] {
			t.Errorf("pull did not fetch %s (requests: %v)", p, paths)
		}
	}
}

// TestSizesVsOstree reports our sizes and times next to `ostree
// static-delta generate` on the same repositories.
func TestSizesVsOstree(t *testing.T) {
	bin := testenv.Tool(t, "ostree")
	if testing.Short() {
		t.Skip("short")
	}
	fx := makeFixture(t)
	theirs := filepath.Join(t.TempDir(), "theirs")
	copyTree(t, fx.path, theirs)
	dirSize := func(dir string) (n int64) {
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			st, _ := e.Info()
			n += st.Size()
		}
		return n
	}
	for _, from := range []*ostree.Checksum{&fx.v1, nil} {
		args := []string{"static-delta", "generate", "--repo=" + theirs, "--to=" + fx.v2.String()}
		if from == nil {
			args = append(args, "--empty")
		} else {
			args = append(args, "--from="+from.String())
		}
		start := time.Now()
		ostreeCmd(t, bin, args...)
		theirTime := time.Since(start)
		start = time.Now()
		res, err := Generate(context.Background(), fx.repo, from, fx.v2, DefaultOptions())
		if err != nil {
			t.Fatal(err)
		}
		ourTime := time.Since(start)
		rel := ostree.DeltaDir(from, fx.v2)
		ti, err := Show(filepath.Join(theirs, rel))
		if err != nil {
			t.Fatal(err)
		}
		var ops []string
		for _, p := range ti.Parts {
			ops = append(ops, string(p.Ops))
		}
		t.Logf("%-9s ours: %7d bytes (%d parts, %d objects, %d fallbacks) in %v; ostree: %7d bytes (%d parts, %d fallbacks) in %v; ostree ops %q",
			map[bool]string{true: "scratch", false: "from->to"}[from == nil],
			dirSize(res.Dir), res.Parts, res.Objects, res.Fallbacks, ourTime.Round(time.Millisecond),
			dirSize(filepath.Join(theirs, rel)), len(ti.Parts), len(ti.Fallbacks), theirTime.Round(time.Millisecond), ops)
	}
}

// TestSizesVsOstreeHostTree compares with ostree on a real directory tree:
// AOF_DELTA_BENCH_DIR=/usr/bin go test -run HostTree -v ./delta/
// v1 is the directory, v2 the same with every 10th regular file changed
// (a byte appended) and a few files removed.
func TestSizesVsOstreeHostTree(t *testing.T) {
	src := os.Getenv("AOF_DELTA_BENCH_DIR")
	if src == "" {
		t.Skip("set AOF_DELTA_BENCH_DIR to a directory to compare with ostree on it")
	}
	bin := testenv.Tool(t, "ostree")
	ctx := context.Background()
	zero := uint32(0)
	root, err := ostree.ReadDir(src, ostree.DirOptions{OwnerUID: &zero, OwnerGID: &zero, NoXattrs: true})
	if err != nil {
		t.Fatal(err)
	}
	repoPath := filepath.Join(t.TempDir(), "src")
	repo, err := ostree.Init(repoPath)
	if err != nil {
		t.Fatal(err)
	}
	c1, err := repo.CommitTree(ctx, root, ostree.CommitOptions{Branch: "test", Subject: "v1", Timestamp: fixedTime})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	var mutate func(d *ostree.MemDir)
	mutate = func(d *ostree.MemDir) {
		names := make([]string, 0, len(d.Files))
		for name := range d.Files {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			f := d.Files[name]
			if f.Header.Mode&ostree.ModeTypeMask != ostree.ModeRegular {
				continue
			}
			n++
			switch {
			case n%97 == 0:
				delete(d.Files, name)
			case n%10 == 0:
				c := f.Checksum
				nf := *f
				nf.Checksum = ostree.Checksum{}
				nf.Open = func() (io.ReadCloser, error) {
					_, rc, err := repo.OpenContent(c)
					if err != nil {
						return nil, err
					}
					return readCloser{io.MultiReader(rc, strings.NewReader("!")), rc}, nil
				}
				nf.Data = nil
				nf.Header.Size++
				d.Files[name] = &nf
			}
		}
		for _, sub := range d.Dirs {
			mutate(sub)
		}
	}
	mutate(root)
	c2, err := repo.CommitTree(ctx, root, ostree.CommitOptions{Branch: "test", Subject: "v2", Timestamp: fixedTime.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	theirs := filepath.Join(t.TempDir(), "theirs")
	copyTree(t, repoPath, theirs)
	total := func(dir string) (n int64) {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			st, _ := e.Info()
			n += st.Size()
		}
		return n
	}
	for _, from := range []*ostree.Checksum{&c1.Checksum, nil} {
		args := []string{"static-delta", "generate", "--repo=" + theirs, "--to=" + c2.Checksum.String()}
		if from == nil {
			args = append(args, "--empty")
		} else {
			args = append(args, "--from="+from.String())
		}
		start := time.Now()
		ostreeCmd(t, bin, args...)
		theirTime := time.Since(start)
		start = time.Now()
		res, err := Generate(ctx, repo, from, c2.Checksum, DefaultOptions())
		if err != nil {
			t.Fatal(err)
		}
		ourTime := time.Since(start)
		ti, err := Show(filepath.Join(theirs, ostree.DeltaDir(from, c2.Checksum)))
		if err != nil {
			t.Fatal(err)
		}
		var theirFB int64
		for _, f := range ti.Fallbacks {
			theirFB += int64(f.CompressedSize)
		}
		var ourFB int64
		oi, err := Show(res.Dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range oi.Fallbacks {
			ourFB += int64(f.CompressedSize)
		}
		t.Logf("%s %s: ours %d bytes in %d parts + %d fallbacks (%d bytes), %v; ostree %d bytes in %d parts + %d fallbacks (%d bytes), %v",
			src, map[bool]string{true: "scratch", false: "from->to"}[from == nil],
			total(res.Dir), res.Parts, res.Fallbacks, ourFB, ourTime.Round(time.Millisecond),
			total(filepath.Join(theirs, ostree.DeltaDir(from, c2.Checksum))), len(ti.Parts), len(ti.Fallbacks), theirFB, theirTime.Round(time.Millisecond))
	}
}

type readCloser struct {
	io.Reader
	io.Closer
}

// TestARM64Filter: a part of arm64 code gets xz's ARM64 filter when the
// target's package manifest has liblzma5 >= 5.4 (and not otherwise), and
// Debian's ostree imports such a bundle.
func TestARM64Filter(t *testing.T) {
	bin := testenv.Tool(t, "ostree")
	xzBin := testenv.Tool(t, "xz")
	if !xzHasARM64() {
		t.Skip("xz has no ARM64 filter (xz < 5.4)")
	}
	for _, lzma := range []string{"5.4.1-1", "5.2.5-2.1"} {
		t.Run(lzma, func(t *testing.T) {
			repo, err := ostree.Init(filepath.Join(t.TempDir(), "repo"))
			if err != nil {
				t.Fatal(err)
			}
			root := ostree.NewMemDir(dirMeta(0, 0, 0o755))
			root.Files["prog"] = regFile(0, 0, 0o755, fakeELF(elfAArch64, 300<<10))
			root.Files["notes"] = regFile(0, 0, 0o644, text(3, 100))
			manifest := []any{[]any{"libc6", "2.41-12", "arm64"}, []any{"liblzma5", lzma, "arm64"}}
			res, err := repo.CommitTree(context.Background(), root, ostree.CommitOptions{Branch: "test", Timestamp: fixedTime,
				Metadata: ostree.Metadata{{Key: "apt-ostree.packages", Value: gvariant.NewVariant("a(sss)", manifest)}}})
			if err != nil {
				t.Fatal(err)
			}
			bundle := filepath.Join(t.TempDir(), "b.delta")
			if _, err := WriteBundle(context.Background(), repo, nil, res.Checksum, bundle, Options{Time: fixedTime}); err != nil {
				t.Fatal(err)
			}
			info, err := Show(bundle)
			if err != nil {
				t.Fatal(err)
			}
			// The inline part is the superblock entry's (yay): find the
			// xz stream in the bundle and list its filters.
			data, _ := os.ReadFile(bundle)
			i := bytes.Index(data, []byte{0xfd, '7', 'z', 'X', 'Z', 0})
			if i < 0 || len(info.Parts) != 1 {
				t.Fatalf("no xz stream in the bundle (%d parts)", len(info.Parts))
			}
			end := i + int(info.Parts[0].CompressedSize) - 1
			f := filepath.Join(t.TempDir(), "part.xz")
			os.WriteFile(f, data[i:end], 0o644)
			out, err := exec.Command(xzBin, "--robot", "--list", "-vv", f).CombinedOutput()
			if err != nil {
				t.Fatalf("xz --list: %v\n%s", err, out)
			}
			if want := lzma == "5.4.1-1"; strings.Contains(string(out), "--arm64") != want {
				t.Errorf("liblzma5 %s: ARM64 filter used = %v, want %v\n%s", lzma, !want, want, out)
			}
			dst := filepath.Join(t.TempDir(), "dst")
			initRepo(t, bin, dst, "bare-user")
			ostreeCmd(t, bin, "static-delta", "apply-offline", "--repo="+dst, bundle)
			ostreeCmd(t, bin, "fsck", "--repo="+dst)
		})
	}
}

// splitFixture commits, on top of the fixture's v2, 30 translations of one
// program (app.mo: shared message ids and per-language text, 2.2 MB) and
// 1.3 MB of other files: a delta that fits in one part and that
// splitForCores lays out on two cores, keeping the translations together.
func splitFixture(t *testing.T, fx *fixture) ostree.Checksum {
	t.Helper()
	root := buildV2()
	share := root.Dirs["usr"].Dirs["share"]
	locale := ostree.NewMemDir(dirMeta(0, 0, 0o755))
	share.Dirs["locale"] = locale
	ids := text(100, 400) // the English message ids every translation has
	for i := 0; i < 30; i++ {
		lc := ostree.NewMemDir(dirMeta(0, 0, 0o755))
		lm := ostree.NewMemDir(dirMeta(0, 0, 0o755))
		lc.Dirs["LC_MESSAGES"] = lm
		locale.Dirs[fmt.Sprintf("l%02d", i)] = lc
		lm.Files["app.mo"] = regFile(0, 0, 0o644, append(append([]byte{0xde, 0x12, 0x04, 0x95}, ids...), text(200+uint64(i), 500)...))
	}
	doc := share.Dirs["doc"]
	for i := 0; i < 25; i++ {
		doc.Files[fmt.Sprintf("page%02d.html", i)] = regFile(0, 0, 0o644, text(300+uint64(i), 700))
	}
	c, err := fx.repo.CommitTree(context.Background(), root, ostree.CommitOptions{Branch: "test", Subject: "v3", Timestamp: fixedTime.Add(2 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return c.Checksum
}

// TestSplitDeltaWithOstree: a small delta laid out on two cores (two xz
// parts, one of them the translations compressed the faster way) is
// accepted by ostree, from the repository over HTTP and as a bundle.
func TestSplitDeltaWithOstree(t *testing.T) {
	bin := testenv.Tool(t, "ostree")
	xzBin := testenv.Tool(t, "xz")
	fx := makeFixture(t)
	v3 := splitFixture(t, fx)
	ctx := context.Background()
	res, err := Generate(ctx, fx.repo, &fx.v2, v3, Options{Time: fixedTime, Workers: 2, MinFallbackSize: DefaultMinFallbackSize})
	if err != nil {
		t.Fatal(err)
	}
	info, err := Show(res.Dir)
	if err != nil {
		t.Fatal(err)
	}
	// Two xz parts (and none stored: nothing here is compressed), the
	// translations in one of them.
	if len(info.Parts) != 2 {
		t.Fatalf("%d parts, want 2", len(info.Parts))
	}
	var dicts []string
	for i := range info.Parts {
		raw, err := os.ReadFile(filepath.Join(res.Dir, strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(t.TempDir(), "part.xz")
		os.WriteFile(f, raw[1:], 0o644)
		out, err := exec.Command(xzBin, "--robot", "--list", "-vv", f).CombinedOutput()
		if err != nil {
			t.Fatalf("xz --list: %v\n%s", err, out)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "block\t") {
				fs := strings.Split(l, "\t")
				dicts = append(dicts, fs[len(fs)-1])
			}
		}
	}
	// The translations' part has the dictionary of four of them (46 kB
	// each: 256 KiB), the other one the dictionary of its size (1 MiB).
	if got := strings.Join(dicts, " | "); got != "--lzma2=dict=256KiB | --lzma2=dict=1MiB" && got != "--lzma2=dict=1MiB | --lzma2=dict=256KiB" {
		t.Errorf("filter chains of the parts: %s", got)
	}
	ostreeCmd(t, bin, "summary", "-u", "--repo="+fx.path)
	url, _ := serveRepo(t, fx.path)
	dst, out, err := pullRequiringDeltas(t, bin, url, fx.path, "bare-user", &fx.v2)
	if err != nil {
		t.Fatalf("pull: %v\n%s", err, out)
	}
	check := func(dst string) {
		t.Helper()
		if out := ostreeCmd(t, bin, "fsck", "--repo="+dst); strings.Contains(out, "corrupted") || strings.Contains(out, "missing") {
			t.Errorf("fsck: %s", out)
		}
		if got, want := lsTree(t, bin, dst, v3), lsTree(t, bin, fx.path, v3); got != want {
			t.Errorf("ls -R differs:\n%s\nwant\n%s", got, want)
		}
	}
	check(dst)

	bundle := filepath.Join(t.TempDir(), "update.delta")
	if _, err := WriteBundle(ctx, fx.repo, &fx.v2, v3, bundle, Options{Time: fixedTime, Workers: 2}); err != nil {
		t.Fatal(err)
	}
	dst = filepath.Join(t.TempDir(), "offline")
	initRepo(t, bin, dst, "bare-user")
	ostreeCmd(t, bin, "pull-local", "--repo="+dst, fx.path, fx.v2.String())
	ostreeCmd(t, bin, "static-delta", "apply-offline", "--repo="+dst, bundle)
	check(dst)
}
