package apt

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/ulikunitz/xz"
)

// IndexFile is one Packages index of a source, verified against its
// Release and stored in the index cache. Open reads it uncompressed.
type IndexFile struct {
	Index *Index
	// Path is the file's name in the Release, e.g. main/binary-amd64/Packages.gz.
	Path string
	// URL is where it was (or, when cached, would have been) downloaded.
	URL string
	// SHA256 and Size of the file as stored (compressed), from the Release.
	SHA256 string
	Size   int64
	// CachePath is the verified copy: <cacheDir>/indexes/<sha256>.
	CachePath string
}

// indexCompressions are the Packages variants we read, in order of
// preference. gzip comes first on purpose, against apt's xz-first order:
// the index is downloaded once but decompressed on every resolve, and the
// pure-Go xz reader is slow. Measured on bookworm main/binary-amd64 (50 MB
// uncompressed, 2 cores): xz 4.7 s, gzip 0.24 s, for 3 MB more download
// (11.7 MB .gz vs 8.9 MB .xz).
var indexCompressions = []string{".gz", ".xz", ""}

// FetchIndexes returns the Packages indexes of src for arch, verified
// against rel: for each component, binary-<arch>/Packages in the first of
// the forms .gz, .xz, uncompressed that the Release lists, plus
// binary-all/Packages where apt would read it (see readsArchAll). Each file
// is downloaded only when cacheDir has no verified copy, and its size and
// SHA-256 are checked against the Release before it is stored or used; a
// mismatch is refused and nothing is cached. A cached copy is used without
// calling the opener, so a resolve with warm caches works offline.
//
// A source whose Architectures exclude arch yields no index.
func FetchIndexes(ctx context.Context, opener Opener, src *Source, rel *Release, arch, cacheDir string) ([]*IndexFile, error) {
	if len(src.Architectures) > 0 && !slices.Contains(src.Architectures, arch) {
		return nil, nil
	}
	if cacheDir == "" {
		return nil, fmt.Errorf("source %q: no cache directory for indexes", src.String())
	}
	targets, err := indexTargets(src, rel, arch)
	if err != nil {
		return nil, fmt.Errorf("source %q: %s: %w", src.String(), rel.URL, err)
	}
	store := indexStore{dir: filepath.Join(cacheDir, "indexes")}
	var files []*IndexFile
	for _, t := range targets {
		f, err := store.fetch(ctx, opener, src, rel, t)
		if err != nil {
			return nil, fmt.Errorf("source %q: %w", src.String(), err)
		}
		files = append(files, f)
	}
	return files, nil
}

// indexTarget is one index to fetch: which component and architecture, and
// the Release entry of the chosen compressed form.
type indexTarget struct {
	component, arch string
	file            ReleaseFile
}

// indexTargets picks the indexes to read for arch. An index the Release does
// not list is an error rather than apt's warning: building from a silently
// smaller package universe would be worse than stopping.
func indexTargets(src *Source, rel *Release, arch string) ([]indexTarget, error) {
	archs := []string{arch}
	if arch != "all" && readsArchAll(rel) {
		archs = append(archs, "all")
	}
	var targets []indexTarget
	for _, comp := range src.Components {
		for _, a := range archs {
			f, ok := pickIndex(rel, comp, a)
			switch {
			case ok:
				targets = append(targets, indexTarget{component: comp, arch: a, file: f})
			case a == "all":
				// binary-all is optional, as for apt.
			case !rel.HasComponent(comp):
				return nil, fmt.Errorf("the suite has no component %q (Components: %s)", comp, strings.Join(rel.Components, " "))
			case !rel.HasArchitecture(a):
				return nil, fmt.Errorf("the suite does not support architecture %q (Architectures: %s)", a, strings.Join(rel.Architectures, " "))
			default:
				return nil, fmt.Errorf("the Release lists no %s/binary-%s/Packages index", comp, a)
			}
		}
	}
	return targets, nil
}

// readsArchAll is apt's rule (debReleaseIndex::IsArchitectureAllSupportedFor):
// binary-all indexes are read when the Release lists "all" among its
// Architectures (or has no Architectures field) and does not declare
// "No-Support-for-Architecture-all: Packages". Debian declares it (bookworm,
// trixie): arch:all packages are repeated in every binary-<arch>/Packages,
// and reading binary-all too would count them twice.
func readsArchAll(rel *Release) bool {
	return rel.HasArchitecture("all") && !slices.Contains(rel.NoSupportForArchitectureAll, "Packages")
}

// pickIndex finds the preferred listed form of comp/binary-arch/Packages.
func pickIndex(rel *Release, comp, arch string) (ReleaseFile, bool) {
	base := comp + "/binary-" + arch + "/Packages"
	for _, ext := range indexCompressions {
		if f, ok := rel.File(base + ext); ok {
			return f, true
		}
	}
	return ReleaseFile{}, false
}

// indexStore is the content-addressed cache of verified index files. A file
// gets its <sha256> name only by rename after verification, so a name
// present means verified content (and it is hashed again when used).
type indexStore struct{ dir string }

func (s indexStore) path(sum string) string { return filepath.Join(s.dir, sum) }

// fetch makes t present in the store and describes it.
func (s indexStore) fetch(ctx context.Context, opener Opener, src *Source, rel *Release, t indexTarget) (*IndexFile, error) {
	dists := distsURL(src)
	f := &IndexFile{
		Index: &Index{
			Source:        src,
			Component:     t.component,
			Architecture:  t.arch,
			ReleaseSHA256: rel.SHA256,
		},
		Path:      t.file.Path,
		URL:       dists + t.file.Path,
		SHA256:    t.file.SHA256,
		Size:      t.file.Size,
		CachePath: s.path(t.file.SHA256),
	}
	if s.has(t.file) {
		return f, nil
	}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return nil, fmt.Errorf("index cache: %w", err)
	}
	var urls []string
	if rel.AcquireByHash {
		// by-hash names are immutable, so a mirror being updated under us
		// cannot hand us an index newer than our Release.
		dir := dists + t.file.Path[:strings.LastIndexByte(t.file.Path, '/')+1]
		urls = append(urls, dir+"by-hash/SHA256/"+t.file.SHA256)
	}
	urls = append(urls, f.URL)
	var err error
	for _, u := range urls {
		if err = s.download(ctx, opener, u, t.file); !errors.Is(err, ErrNotFound) {
			f.URL = u
			break
		}
	}
	if err != nil {
		return nil, err
	}
	return f, nil
}

// has reports whether a verified copy is cached. It re-hashes the copy
// (milliseconds for a compressed index) and deletes one that went bad, so
// that it is downloaded again instead of failing every later read.
func (s indexStore) has(want ReleaseFile) bool {
	p := s.path(want.SHA256)
	fh, err := os.Open(p)
	if err != nil {
		return false
	}
	defer fh.Close()
	h := sha256.New()
	n, err := io.Copy(h, fh)
	if err == nil && n == want.Size && hex.EncodeToString(h.Sum(nil)) == want.SHA256 {
		return true
	}
	os.Remove(p)
	return false
}

// download streams url into a temporary file while hashing it, and gives
// it its cache name only if size and SHA-256 match the Release. Reading
// stops one byte past the expected size, so a wrong file cannot fill the
// disk.
func (s indexStore) download(ctx context.Context, opener Opener, url string, want ReleaseFile) (err error) {
	rc, err := opener.Open(ctx, url)
	if err != nil {
		return err // Openers name the URL in their errors
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(s.dir, ".partial-*")
	if err != nil {
		return fmt.Errorf("index cache: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(rc, want.Size+1))
	if err != nil {
		return fmt.Errorf("%s: %w", url, err)
	}
	if err := checkDigest(url, want, n, h); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("index cache: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("index cache: %w", err)
	}
	if err := os.Rename(tmp.Name(), s.path(want.SHA256)); err != nil {
		return fmt.Errorf("index cache: %w", err)
	}
	return nil
}

// checkDigest compares what was read with the Release entry.
func checkDigest(where string, want ReleaseFile, n int64, h hash.Hash) error {
	if n != want.Size {
		actual := n
		if n > want.Size {
			actual = -1
		}
		return &ChecksumError{Name: want.Path, URL: where, Expected: want.SHA256, ExpectedSize: want.Size, ActualSize: actual}
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want.SHA256 {
		return &ChecksumError{Name: want.Path, URL: where, Expected: want.SHA256, Actual: got, ExpectedSize: want.Size, ActualSize: n}
	}
	return nil
}

// Open returns the uncompressed Packages text. The cached file is hashed
// again as it is read: if it changed on disk since it was verified, the
// read that reaches its end fails with a ChecksumError, so a consumer that
// propagates read errors never accepts altered content.
func (f *IndexFile) Open() (io.ReadCloser, error) {
	fh, err := os.Open(f.CachePath)
	if err != nil {
		return nil, fmt.Errorf("index %s: %w", f.Path, err)
	}
	raw := &hashingReader{r: fh, h: sha256.New()}
	r := &indexReader{f: f, fh: fh, raw: raw}
	switch {
	case strings.HasSuffix(f.Path, ".gz"):
		gz, err := gzip.NewReader(raw)
		if err != nil {
			fh.Close()
			return nil, fmt.Errorf("index %s (%s): %w", f.Path, f.CachePath, err)
		}
		r.dec = gz
	case strings.HasSuffix(f.Path, ".xz"):
		x, err := xz.NewReader(raw)
		if err != nil {
			fh.Close()
			return nil, fmt.Errorf("index %s (%s): %w", f.Path, f.CachePath, err)
		}
		r.dec = x
	default:
		r.dec = raw
	}
	return r, nil
}

// hashingReader hashes and counts what passes through it.
type hashingReader struct {
	r io.Reader
	h hash.Hash
	n int64
}

func (hr *hashingReader) Read(p []byte) (int, error) {
	n, err := hr.r.Read(p)
	hr.h.Write(p[:n])
	hr.n += int64(n)
	return n, err
}

// indexReader decompresses a cached index and checks the compressed
// stream's digest when the decompressed one ends.
type indexReader struct {
	f    *IndexFile
	fh   *os.File
	raw  *hashingReader
	dec  io.Reader
	done bool
}

func (r *indexReader) Read(p []byte) (int, error) {
	n, err := r.dec.Read(p)
	if err == io.EOF && !r.done {
		r.done = true
		// The decompressor may stop before the end of the file (padding,
		// trailing garbage): hash the rest too.
		if _, cerr := io.Copy(io.Discard, r.raw); cerr != nil {
			return n, fmt.Errorf("index %s: %w", r.f.CachePath, cerr)
		}
		want := ReleaseFile{Path: r.f.Path, Size: r.f.Size, SHA256: r.f.SHA256}
		if cerr := checkDigest(r.f.CachePath, want, r.raw.n, r.raw.h); cerr != nil {
			return n, cerr
		}
	}
	if err != nil && err != io.EOF {
		err = fmt.Errorf("index %s (%s): %w", r.f.Path, r.f.CachePath, err)
	}
	return n, err
}

func (r *indexReader) Close() error { return r.fh.Close() }

// LoadSources fetches and verifies the Release and the Packages indexes of
// every source for arch and parses them. Sources are fetched concurrently
// and indexes parsed concurrently, but the result is in source order, then
// index order (component, then arch before all), so that the same inputs
// always give the same slices. Every failing source is reported, not only
// the first.
func LoadSources(ctx context.Context, opener Opener, sources []*Source, arch, cacheDir string, now time.Time) ([]*Package, []*Index, error) {
	files, err := fetchAllIndexes(ctx, opener, sources, arch, cacheDir, now)
	if err != nil {
		return nil, nil, err
	}
	parsed := make([][]*Package, len(files))
	errs := make([]error, len(files))
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for i, f := range files {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			parsed[i], errs[i] = parseIndexFile(f)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	var pkgs []*Package
	indexes := make([]*Index, len(files))
	for i, f := range files {
		pkgs = append(pkgs, parsed[i]...)
		indexes[i] = f.Index
	}
	return pkgs, indexes, nil
}

// fetchAllIndexes runs FetchRelease and FetchIndexes for all sources, at
// most four at a time (downloads, not CPU, are the limit).
func fetchAllIndexes(ctx context.Context, opener Opener, sources []*Source, arch, cacheDir string, now time.Time) ([]*IndexFile, error) {
	perSource := make([][]*IndexFile, len(sources))
	errs := make([]error, len(sources))
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for i, src := range sources {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			rel, err := FetchRelease(ctx, opener, src, now)
			if err == nil {
				perSource[i], err = FetchIndexes(ctx, opener, src, rel, arch, cacheDir)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var files []*IndexFile
	for _, fs := range perSource {
		files = append(files, fs...)
	}
	return files, nil
}

func parseIndexFile(f *IndexFile) ([]*Package, error) {
	rc, err := f.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	pkgs, err := ParsePackages(rc, f.Index)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.URL, err)
	}
	return pkgs, nil
}
