package builder

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apt-ostree/apt-ostree-factory/apt"
	"github.com/apt-ostree/apt-ostree-factory/internal/atomicfile"
	"github.com/apt-ostree/apt-ostree-factory/ostree"
	"github.com/apt-ostree/apt-ostree-factory/ostree/gvariant"
)

// The per-.deb cache lives in the OSTree repository itself. An unpacked
// .deb is a commit of its DebTree.Root, with no parent, no ref binding,
// timestamp 0 and the subject "deb <package> <version> <arch>", so the same
// .deb always gives the same commit checksum. The commit's metadata carries
// what the tree cannot:
//
//	aof.deb.format        u       DebCacheFormat; other values are ignored (unpacked again)
//	aof.deb.sha256        s       the .deb's SHA-256
//	aof.deb.size          t       the .deb's size in bytes
//	aof.deb.package       s       Package, Version, Architecture of the control file
//	aof.deb.version       s
//	aof.deb.architecture  s
//	aof.deb.files         as      DebTree.Files: the archive's entries in archive order
//	aof.deb.skipped       as      DebTree.Skipped
//	aof.deb.warnings      as      DebTree.Warnings
//	aof.deb.control       a{say}  every control.tar member by name
//
// The commit is found through a file outside refs/, holding its checksum:
//
//	<repo>/extensions/apt-ostree-factory/debs/<sha256 of the .deb>
//
// (ostree leaves extensions/ to tools, as rpm-ostree's does). Not being a
// ref, the cache never shows in `ostree refs`, in a summary or in a pull,
// and a failed build changes no ref. The commits pass `ostree fsck` and
// can be inspected with `ostree show <checksum>`; `ostree prune` removes
// them (the cache is then rebuilt: an entry whose objects are gone is
// unpacked again). Loading reads only the commit, its dirtree/dirmeta
// objects and the headers of its content objects; the .deb is not opened.

// DebCacheFormat is the version of the cache entries written here.
const DebCacheFormat = 1

// DebCacheDir is the directory of the cache's index inside a repository.
const DebCacheDir = "extensions/apt-ostree-factory/debs"

// debCacheIndex is the index file of the .deb with this SHA-256.
func debCacheIndex(repo *ostree.Repo, sha256 string) string {
	return filepath.Join(repo.Path(), DebCacheDir, sha256)
}

// CachedCommit returns the cache commit of the .deb with this SHA-256, or
// an error wrapping ErrNotCached.
func CachedCommit(repo *ostree.Repo, sha256 string) (ostree.Checksum, error) {
	b, err := os.ReadFile(debCacheIndex(repo, sha256))
	if errors.Is(err, fs.ErrNotExist) {
		return ostree.Checksum{}, fmt.Errorf("%s: %w", sha256, ErrNotCached)
	}
	if err != nil {
		return ostree.Checksum{}, err
	}
	c, err := ostree.ParseChecksum(strings.TrimSpace(string(b)))
	if err != nil {
		return ostree.Checksum{}, fmt.Errorf("%s: %v: %w", debCacheIndex(repo, sha256), err, ErrNotCached)
	}
	return c, nil
}

// ErrNotCached is returned by LoadCached when the repository holds no
// usable entry for a .deb.
var ErrNotCached = errors.New("not in the per-.deb cache")

// UnpackCached returns the unpacked tree of a locked package: from the
// repository's per-.deb cache when it holds the package's SHA-256 (fromCache
// is true, and the .deb is not read), else by unpacking the .deb from
// cache, which then records it in the repository. A damaged cache entry
// (objects pruned, for example) is unpacked again; the tree's Warnings say so.
func UnpackCached(ctx context.Context, repo *ostree.Repo, cache *apt.Cache, pkg apt.LockedPackage) (t *DebTree, fromCache bool, err error) {
	return unpackCached(ctx, repo, cache, pkg, 0)
}

// UnpackAllCached runs UnpackCached for every package, up to parallel at a
// time (0 means GOMAXPROCS), and returns the trees in the order of pkgs and
// how many came from the cache. Small packages are dominated by per-.deb
// latency (control parsing, object creation), which parallelism hides; a
// large one uses several cores on its own. The first failure stops the
// others and is returned.
func UnpackAllCached(ctx context.Context, repo *ostree.Repo, cache *apt.Cache, pkgs []apt.LockedPackage, parallel int) ([]*DebTree, int, error) {
	return UnpackAllCachedNotify(ctx, repo, cache, pkgs, parallel, nil)
}

// UnpackAllCachedNotify is UnpackAllCached calling done (from worker
// goroutines) after each package, with how long it took.
func UnpackAllCachedNotify(ctx context.Context, repo *ostree.Repo, cache *apt.Cache, pkgs []apt.LockedPackage, parallel int, done func(i int, t *DebTree, fromCache bool, took time.Duration)) ([]*DebTree, int, error) {
	procs := runtime.GOMAXPROCS(0)
	if parallel <= 0 {
		parallel = procs
	}
	parallel = min(parallel, max(len(pkgs), 1))
	// Content buffers are per Unpack: share the cores out so that memory
	// stays bounded by about 16 MiB per core.
	workers := max(2, procs/parallel)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	trees := make([]*DebTree, len(pkgs))
	var (
		next     atomic.Int64
		cached   atomic.Int64
		errOnce  sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(pkgs) {
					return
				}
				start := time.Now()
				t, fromCache, err := unpackCached(ctx, repo, cache, pkgs[i], workers)
				if err == nil && done != nil {
					done(i, t, fromCache, time.Since(start))
				}
				if err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
				if fromCache {
					cached.Add(1)
				}
				trees[i] = t
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, 0, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	return trees, int(cached.Load()), nil
}

func unpackCached(ctx context.Context, repo *ostree.Repo, cache *apt.Cache, pkg apt.LockedPackage, workers int) (t *DebTree, fromCache bool, err error) {
	t, err = LoadCached(repo, pkg.SHA256)
	if err == nil {
		if err := checkIdentity(t, pkg); err != nil {
			return nil, false, err
		}
		return t, true, nil
	}
	var damaged error
	if !errors.Is(err, ErrNotCached) {
		damaged = err
	}
	if cache == nil {
		return nil, false, fmt.Errorf("%s: %w and no .deb cache to unpack it from", pkg.ID(), err)
	}
	rc, err := cache.Open(pkg.SHA256)
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", pkg.ID(), err)
	}
	defer rc.Close()
	t, err = Unpack(ctx, repo, rc, UnpackOptions{Origin: pkg.ID(), Workers: workers})
	if err != nil {
		return nil, false, err
	}
	if t.SHA256 != pkg.SHA256 {
		return nil, false, fmt.Errorf("%s: the cached .deb has SHA-256 %s, the lock says %s", pkg.ID(), t.SHA256, pkg.SHA256)
	}
	if err := checkIdentity(t, pkg); err != nil {
		return nil, false, err
	}
	if damaged != nil {
		t.Warnings = append(t.Warnings, fmt.Sprintf("%s: per-.deb cache entry %s was unusable (%v); unpacked again", t.Package, pkg.SHA256, damaged))
	}
	if err := StoreCached(ctx, repo, t); err != nil {
		return nil, false, err
	}
	return t, false, nil
}

func checkIdentity(t *DebTree, pkg apt.LockedPackage) error {
	if t.Package != pkg.Name || t.Version != pkg.Version || t.Architecture != pkg.Architecture {
		return fmt.Errorf("%s: the .deb with SHA-256 %s is %s", pkg.ID(), pkg.SHA256, t.ID())
	}
	return nil
}

// StoreCached records an unpacked tree as the cache entry of its .deb. Its
// content objects must be in repo (as Unpack leaves them).
func StoreCached(ctx context.Context, repo *ostree.Repo, t *DebTree) error {
	if !isHexSHA256(t.SHA256) {
		return fmt.Errorf("%s: cannot cache a tree without the .deb's SHA-256", t.Package)
	}
	names := make([]string, 0, len(t.Control))
	for n := range t.Control {
		names = append(names, n)
	}
	sort.Strings(names)
	control := make([]gvariant.DictEntry, len(names))
	for i, n := range names {
		control[i] = gvariant.DictEntry{Key: n, Value: t.Control[n]}
	}
	strs := func(s []string) []string {
		if s == nil {
			return []string{}
		}
		return s
	}
	md := ostree.Metadata{
		{Key: "aof.deb.format", Value: gvariant.NewVariant("u", uint32(DebCacheFormat))},
		{Key: "aof.deb.sha256", Value: gvariant.NewVariant("s", t.SHA256)},
		{Key: "aof.deb.size", Value: gvariant.NewVariant("t", uint64(t.Size))},
		{Key: "aof.deb.package", Value: gvariant.NewVariant("s", t.Package)},
		{Key: "aof.deb.version", Value: gvariant.NewVariant("s", t.Version)},
		{Key: "aof.deb.architecture", Value: gvariant.NewVariant("s", t.Architecture)},
		{Key: "aof.deb.files", Value: gvariant.NewVariant("as", strs(t.Files))},
		{Key: "aof.deb.skipped", Value: gvariant.NewVariant("as", strs(t.Skipped))},
		{Key: "aof.deb.warnings", Value: gvariant.NewVariant("as", strs(t.Warnings))},
		{Key: "aof.deb.control", Value: gvariant.NewVariant("a{say}", control)},
	}
	cr, err := repo.CommitTree(ctx, t.Root, ostree.CommitOptions{
		Subject:    fmt.Sprintf("deb %s %s %s", t.Package, t.Version, t.Architecture),
		Timestamp:  time.Unix(0, 0),
		Metadata:   md,
		Orphan:     true,
		NoBindings: true,
	})
	if err == nil {
		// The objects are on disk (CommitTree syncs before it returns);
		// only now does the index point at them.
		idx := debCacheIndex(repo, t.SHA256)
		if err = os.MkdirAll(filepath.Dir(idx), 0o755); err == nil {
			err = atomicfile.WriteFile(idx, []byte(cr.Checksum.String()+"\n"), 0o644)
		}
	}
	if err != nil {
		return fmt.Errorf("%s: recording in the per-.deb cache: %w", t.ID(), err)
	}
	return nil
}

// LoadCached reads the cache entry of the .deb with this SHA-256. It
// returns an error wrapping ErrNotCached when there is none (or one in
// another format), and another error when the entry is damaged.
func LoadCached(repo *ostree.Repo, sha256 string) (*DebTree, error) {
	if !isHexSHA256(sha256) {
		return nil, fmt.Errorf("%q is not a SHA-256", sha256)
	}
	ref := "per-.deb cache entry " + sha256
	c, err := CachedCommit(repo, sha256)
	if err != nil {
		return nil, err
	}
	cm, err := repo.ReadCommit(c)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	md := cm.Metadata
	if v, ok := md.Get("aof.deb.format"); !ok || v.Value != uint32(DebCacheFormat) {
		return nil, fmt.Errorf("%s: entry of another format: %w", ref, ErrNotCached)
	}
	t := &DebTree{}
	var bad []string
	str := func(key string, dst *string) {
		if s, ok := md.String(key); ok {
			*dst = s
		} else {
			bad = append(bad, key)
		}
	}
	list := func(key string, dst *[]string) {
		v, ok := md.Get(key)
		if s, isList := v.Value.([]string); ok && isList {
			*dst = s
		} else {
			bad = append(bad, key)
		}
	}
	str("aof.deb.sha256", &t.SHA256)
	str("aof.deb.package", &t.Package)
	str("aof.deb.version", &t.Version)
	str("aof.deb.architecture", &t.Architecture)
	list("aof.deb.files", &t.Files)
	list("aof.deb.skipped", &t.Skipped)
	list("aof.deb.warnings", &t.Warnings)
	if v, ok := md.Get("aof.deb.size"); ok {
		if n, isU := v.Value.(uint64); isU {
			t.Size = int64(n)
		} else {
			bad = append(bad, "aof.deb.size")
		}
	} else {
		bad = append(bad, "aof.deb.size")
	}
	if v, ok := md.Get("aof.deb.control"); ok {
		if entries, isDict := v.Value.([]gvariant.DictEntry); isDict {
			t.Control = make(map[string][]byte, len(entries))
			for _, e := range entries {
				k, _ := e.Key.(string)
				b, _ := e.Value.([]byte)
				t.Control[k] = b
			}
		}
	}
	if t.Control == nil || t.Control["control"] == nil {
		bad = append(bad, "aof.deb.control")
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("%s: commit %s lacks valid metadata %s", ref, c, strings.Join(bad, ", "))
	}
	if t.SHA256 != sha256 {
		return nil, fmt.Errorf("%s: commit %s records the .deb %s", ref, c, t.SHA256)
	}
	if t.fields, err = parseControlFields(t.Control["control"]); err != nil {
		return nil, fmt.Errorf("%s: control file: %w", ref, err)
	}
	if cf, ok := t.Control["conffiles"]; ok {
		t.Conffiles = parseConffiles(cf)
	}
	l := treeLoader{repo: repo, metas: map[ostree.Checksum]ostree.FileMeta{}, headers: map[ostree.Checksum]ostree.FileHeader{}}
	l.origin = t.Package + ":"
	root, err := l.dir(cm.RootTree, cm.RootMeta, "/")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	t.Root = root
	return t, nil
}

// treeLoader reads a committed tree back into a MemDir whose files carry
// their checksums and headers.
type treeLoader struct {
	repo    *ostree.Repo
	metas   map[ostree.Checksum]ostree.FileMeta
	headers map[ostree.Checksum]ostree.FileHeader
	origin  string
}

func (l *treeLoader) dir(tree, meta ostree.Checksum, at string) (*ostree.MemDir, error) {
	m, ok := l.metas[meta]
	if !ok {
		var err error
		if m, err = l.repo.ReadDirMeta(meta); err != nil {
			return nil, err
		}
		l.metas[meta] = m
	}
	dt, err := l.repo.ReadDirTree(tree)
	if err != nil {
		return nil, err
	}
	d := ostree.NewMemDir(m)
	for _, f := range dt.Files {
		h, ok := l.headers[f.Checksum]
		if !ok {
			if h, err = l.header(f.Checksum); err != nil {
				return nil, err
			}
			l.headers[f.Checksum] = h
		}
		d.Files[f.Name] = &ostree.MemFile{Header: h, Checksum: f.Checksum, Origin: l.origin + at + f.Name}
	}
	for _, sub := range dt.Dirs {
		sd, err := l.dir(sub.Tree, sub.Meta, at+sub.Name+"/")
		if err != nil {
			return nil, err
		}
		d.Dirs[sub.Name] = sd
	}
	return d, nil
}

func (l *treeLoader) header(c ostree.Checksum) (ostree.FileHeader, error) {
	h, rc, err := l.repo.OpenContent(c)
	if err != nil {
		return ostree.FileHeader{}, err
	}
	rc.Close()
	return h, nil
}

func isHexSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
