package builder

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apt-ostree/apt-ostree-factory/apt"
	"github.com/apt-ostree/apt-ostree-factory/ostree"
	"pault.ag/go/debian/version"

	"github.com/apt-ostree/apt-ostree-factory/internal/testenv"
)

// Tests against the live Debian archive this machine's apt uses. They run
// only with AOF_NETWORK_TESTS=1. Indexes are verified (InRelease against
// debian-archive-keyring) and .debs fetched by SHA-256 into a cache kept
// in $TMPDIR/aof-test-cache, so reruns download nothing new.

const archiveKeyring = "/usr/share/keyrings/debian-archive-keyring.gpg"

func needNetwork(t *testing.T) {
	t.Helper()
	if os.Getenv("AOF_NETWORK_TESTS") != "1" {
		t.Skip("set AOF_NETWORK_TESTS=1 to fetch real packages from the Debian archive")
	}
	if _, err := os.Stat(archiveKeyring); err != nil {
		t.Fatalf("%s is needed to verify the archive: %v", archiveKeyring, err)
	}
}

func testCacheDir(t *testing.T, what string) string {
	dir := filepath.Join(os.TempDir(), "aof-test-cache", what)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// livePackages resolves names in a suite's main/amd64 index and fetches
// their .debs into the test cache. A name ending in "@depends" stands for
// the first dependency of that package (linux-image-amd64@depends is the
// current kernel image).
func livePackages(t *testing.T, suite string, names ...string) (*apt.Cache, []apt.LockedPackage) {
	t.Helper()
	ctx := context.Background()
	src := &apt.Source{URI: testenv.DebianMirror(t), Suite: suite, Components: []string{"main"}, SignedBy: []string{archiveKeyring}}
	pkgs, _, err := apt.LoadSources(ctx, &apt.Transport{}, []*apt.Source{src}, "amd64", testCacheDir(t, "indexes"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	newest := map[string]*apt.Package{}
	for _, p := range pkgs {
		if p.Architecture != "amd64" && p.Architecture != "all" {
			continue
		}
		if cur := newest[p.Name]; cur == nil || version.Compare(p.Version, cur.Version) > 0 {
			newest[p.Name] = p
		}
	}
	var chosen []*apt.Package
	for _, n := range names {
		name, deps := strings.CutSuffix(n, "@depends")
		p := newest[name]
		if p == nil {
			t.Fatalf("%s: no package %s", suite, name)
		}
		if deps {
			dep := p.Depends.Relations[0].Possibilities[0].Name
			if p = newest[dep]; p == nil {
				t.Fatalf("%s: no package %s", suite, dep)
			}
		}
		chosen = append(chosen, p)
	}
	lock := apt.LockFromPackages(chosen)
	cache := &apt.Cache{Dir: testCacheDir(t, "debs")}
	if err := cache.Fetch(ctx, lock.CacheItems(), &apt.Transport{}, nil); err != nil {
		t.Fatal(err)
	}
	// Keep the caller's order (the lock is sorted by name).
	byName := map[string]apt.LockedPackage{}
	for _, lp := range lock.Packages {
		byName[lp.Name] = lp
	}
	out := make([]apt.LockedPackage, len(chosen))
	for i, p := range chosen {
		out[i] = byName[p.Name]
	}
	return cache, out
}

// TestLiveDebianTree unpacks and merges a handful of real packages of
// trixie (merged-/usr from base-files) and bookworm (merged-/usr seeded as
// debootstrap does), commits, and checks the result with `ostree fsck`.
// A second round must come entirely from the per-.deb cache and give the
// same commit.
func TestLiveDebianTree(t *testing.T) {
	needNetwork(t)
	for _, suite := range []string{"trixie", "bookworm"} {
		t.Run(suite, func(t *testing.T) {
			ctx := context.Background()
			cache, locked := livePackages(t, suite, "base-files", "coreutils", "bash", "libc6", "dash", "base-passwd", "passwd")
			repo := newRepo(t)
			var commits []ostree.Checksum
			for round := 0; round < 2; round++ {
				start := time.Now()
				m := NewMerger(nil, MergeOptions{Architecture: "amd64"})
				if suite == "bookworm" {
					if err := m.SeedMergedUsr("amd64"); err != nil {
						t.Fatal(err)
					}
				}
				trees, cached, err := UnpackAllCached(ctx, repo, cache, locked, 0)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("round %d: unpacked in %s", round+1, time.Since(start))
				for _, tree := range trees {
					for _, w := range tree.Warnings {
						t.Logf("warning: %s", w)
					}
					if err := m.Merge(tree); err != nil {
						t.Fatal(err)
					}
				}
				for _, w := range m.Warnings() {
					t.Logf("merge warning: %s", w)
				}
				c := commitTree(t, repo, m.Root(), "system/"+suite)
				t.Logf("round %d: %d of %d packages from the cache, commit %s in %s", round+1, cached, len(locked), c, time.Since(start))
				if round == 0 && cached != 0 || round == 1 && cached != len(locked) {
					t.Errorf("round %d: %d packages from the cache", round+1, cached)
				}
				commits = append(commits, c)
			}
			var trees []ostree.Checksum
			for _, c := range commits {
				cm, err := repo.ReadCommit(c)
				if err != nil {
					t.Fatal(err)
				}
				trees = append(trees, cm.RootTree)
			}
			if trees[0] != trees[1] {
				t.Errorf("the cached round gave the tree %s, the first %s", trees[1], trees[0])
			}
			ents := walkAll(t, repo, commits[0])
			check := func(p string, mode uint32, symlink string) {
				e := ents[p]
				if e == nil {
					t.Errorf("%s missing", p)
					return
				}
				if e.Meta.Mode != mode || e.Symlink != symlink || e.Meta.UID != 0 {
					t.Errorf("%s: mode %o owner %d symlink %q; want mode %o symlink %q", p, e.Meta.Mode, e.Meta.UID, e.Symlink, mode, symlink)
				}
			}
			check("/usr/bin/ls", ostree.ModeRegular|0o755, "")
			check("/usr/bin/bash", ostree.ModeRegular|0o755, "")
			check("/usr/lib/x86_64-linux-gnu/libc.so.6", ostree.ModeRegular|0o755, "")
			check("/usr/bin/passwd", ostree.ModeRegular|0o4755, "")
			check("/bin", ostree.ModeSymlink|0o777, "usr/bin")
			check("/lib64", ostree.ModeSymlink|0o777, "usr/lib64")
			check("/tmp", ostree.ModeDir|0o1777, "")
			check("/root", ostree.ModeDir|0o700, "")
			if e := ents["/usr/lib64/ld-linux-x86-64.so.2"]; e == nil || e.Meta.Mode&ostree.ModeTypeMask != ostree.ModeSymlink {
				t.Errorf("dynamic linker link: %+v", e)
			}
			if e := ents["/bin/ls"]; e != nil {
				t.Errorf("/bin/ls is a real path in the commit: %+v", e)
			}
			ostreeFsck(t, repo)
			compareWithTarExtraction(t, repo, cache, locked, suite == "bookworm", commits[0])
		})
	}
}

// compareWithTarExtraction is the oracle for Merge on real packages:
// extracting the same .debs in the same order with GNU tar (as root,
// keeping owners, modes and xattrs, and keeping directory symlinks as dpkg
// does) into a directory, and reading that directory as `ostree commit`
// would, must give the same tree.
func compareWithTarExtraction(t *testing.T, repo *ostree.Repo, cache *apt.Cache, locked []apt.LockedPackage, seed bool, merged ostree.Checksum) {
	cm, err := repo.ReadCommit(merged)
	if err != nil {
		t.Fatal(err)
	}
	want := cm.RootTree
	if os.Geteuid() != 0 {
		t.Log("not root: skipping the comparison with tar extraction")
		return
	}
	needTool(t, "tar")
	needTool(t, "dpkg-deb")
	dir := filepath.Join(t.TempDir(), "root")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if seed {
		for _, d := range MergedUsrDirs("amd64") {
			if err := os.MkdirAll(filepath.Join(dir, "usr", d), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("usr/"+d, filepath.Join(dir, d)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, lp := range locked {
		cmd := exec.Command("bash", "-c", `set -o pipefail; dpkg-deb --fsys-tarfile "$1" | tar -x -p --same-owner --numeric-owner --xattrs --xattrs-include='*' --keep-directory-symlink -C "$2"`, "extract", cache.Path(lp.SHA256), dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("extracting %s: %v\n%s", lp.ID(), err, out)
		}
	}
	disk, err := ostree.ReadDir(dir, ostree.DirOptions{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := repo.CommitTree(context.Background(), disk, ostree.CommitOptions{Branch: "extracted", Timestamp: testMtime})
	if err != nil {
		t.Fatal(err)
	}
	if res.Commit.RootTree != want {
		t.Errorf("merged tree %s, tar extraction %s", want, res.Commit.RootTree)
		a, b := walkAll(t, repo, merged), walkAll(t, repo, res.Checksum)
		for p, x := range a {
			if y := b[p]; y == nil {
				t.Errorf("%s: only in the merged tree", p)
			} else if x.Checksum != y.Checksum || x.MetaSum != y.MetaSum {
				t.Errorf("%s: merged %o %d:%d, extracted %o %d:%d", p, x.Meta.Mode, x.Meta.UID, x.Meta.GID, y.Meta.Mode, y.Meta.UID, y.Meta.GID)
			}
		}
		for p := range b {
			if a[p] == nil {
				t.Errorf("%s: only in the extracted tree", p)
			}
		}
	} else {
		t.Logf("same tree as tar extraction: %s", want)
	}
}

// TestUnpackThroughput measures Unpack on a large real package: the
// current trixie kernel image (AOF_NETWORK_TESTS=1), or the .deb named by
// AOF_BIG_DEB. It reports MB/s of unpacked content, then the same .deb
// again into the same repository (every object present), loading it from
// the per-.deb cache, and, when dpkg-deb and ostree are installed, the
// dpkg-deb -x + ostree commit pipeline on the same .deb. AOF_GO_XZ=1
// measures the Go xz decoder instead of the xz program.
func TestUnpackThroughput(t *testing.T) {
	debPath := os.Getenv("AOF_BIG_DEB")
	if debPath == "" {
		needNetwork(t)
		cache, locked := livePackages(t, "trixie", "linux-image-amd64@depends")
		debPath = cache.Path(locked[0].SHA256)
		t.Logf("%s", locked[0].ID())
	}
	if os.Getenv("AOF_GO_XZ") == "1" {
		XZProgram = "-" // measure the Go decoder
		defer func() { XZProgram = "" }()
	}
	ctx := context.Background()
	repo := newRepo(t)
	unpackFile := func() (*DebTree, time.Duration) {
		f, err := os.Open(debPath)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		start := time.Now()
		tree, err := Unpack(ctx, repo, f, UnpackOptions{Origin: debPath})
		if err != nil {
			t.Fatal(err)
		}
		return tree, time.Since(start)
	}
	tree, cold := unpackFile()
	var content int64
	seen := map[*ostree.MemFile]bool{}
	var walk func(d *ostree.MemDir)
	walk = func(d *ostree.MemDir) {
		for _, f := range d.Files {
			if !seen[f] {
				seen[f] = true
				content += int64(f.Header.Size)
			}
		}
		for _, sub := range d.Dirs {
			walk(sub)
		}
	}
	walk(tree.Root)
	mb := func(n int64, d time.Duration) string { return fmt.Sprintf("%.1f MB/s", float64(n)/1e6/d.Seconds()) }
	t.Logf("%s: %.1f MB .deb, %.1f MB in %d files", tree.ID(), float64(tree.Size)/1e6, float64(content)/1e6, len(seen))
	t.Logf("unpack, new objects:      %6.2fs  %s of content (%s of .deb)", cold.Seconds(), mb(content, cold), mb(tree.Size, cold))
	_, warm := unpackFile()
	t.Logf("unpack, objects present:  %6.2fs  %s of content", warm.Seconds(), mb(content, warm))
	if err := StoreCached(ctx, repo, tree); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := LoadCached(repo, tree.SHA256); err != nil {
		t.Fatal(err)
	}
	t.Logf("load from per-.deb cache: %6.2fs", time.Since(start).Seconds())

	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		return
	}
	if _, err := exec.LookPath("ostree"); err != nil {
		return
	}
	dir := t.TempDir()
	start = time.Now()
	if out, err := exec.Command("dpkg-deb", "-x", debPath, filepath.Join(dir, "root")).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -x: %v\n%s", err, out)
	}
	extract := time.Since(start)
	if out, err := exec.Command("ostree", "init", "--repo="+filepath.Join(dir, "repo"), "--mode=archive").CombinedOutput(); err != nil {
		t.Fatalf("ostree init: %v\n%s", err, out)
	}
	start = time.Now()
	if out, err := exec.Command("ostree", "commit", "--repo="+filepath.Join(dir, "repo"), "-b", "k", "--tree=dir="+filepath.Join(dir, "root")).CombinedOutput(); err != nil {
		t.Fatalf("ostree commit: %v\n%s", err, out)
	}
	commit := time.Since(start)
	t.Logf("dpkg-deb -x + ostree commit: %.2fs + %.2fs = %.2fs (%s); Unpack is %.1fx as fast",
		extract.Seconds(), commit.Seconds(), (extract + commit).Seconds(), mb(content, extract+commit), (extract+commit).Seconds()/cold.Seconds())
}
