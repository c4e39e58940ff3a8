package apt

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Cache is a content-addressed store of .deb files, keyed by SHA-256.
//
// Layout: Dir/<sha256>.deb holds a verified file; Dir/<sha256>.partial is
// a download in progress (or interrupted, to be resumed) and also the lock
// that serializes work on that item between goroutines and processes
// (flock(2), taken before the partial is touched).
//
// Verification: a file only ever gets its <sha256>.deb name by an atomic
// rename, after its size and SHA-256 were checked and its data synced, so
// the presence of the name means the content was verified. Reading does
// not hash again by default: Open returns a reader that hashes as it goes
// and fails at the end of the file if the content changed on disk since
// (free for consumers that read the whole .deb, as unpacking does), and
// Verify re-hashes on demand. Fetch re-downloads a cached file whose size
// is not the expected one.
//
// Several Cache values, in one process or in several, may share a Dir:
// an item is downloaded once, and the others wait for it.
type Cache struct {
	Dir string
	// Parallel bounds simultaneous downloads in one Fetch; 0 means 4.
	Parallel int
	// Offline makes Fetch use only what is already cached: it never
	// calls the Opener, and fails listing every missing item.
	Offline bool
}

// CacheItem is one file for Fetch to make present.
type CacheItem struct {
	// Name identifies the item in messages, e.g. "bash:amd64=5.2.37-1".
	Name   string
	URL    string
	SHA256 string // lowercase hex
	Size   int64  // bytes; must be known
}

func (it CacheItem) label() string {
	if it.Name != "" {
		return it.Name
	}
	return "sha256:" + it.SHA256
}

// CacheItem is what the cache needs to fetch the package.
func (lp LockedPackage) CacheItem() CacheItem {
	return CacheItem{Name: lp.ID(), URL: lp.URL(), SHA256: lp.SHA256, Size: lp.Size}
}

// CacheItems lists the lock's packages for Fetch, then its boot packages
// (a boot package that is also installed, the same .deb, is listed once).
func (l *Lock) CacheItems() []CacheItem {
	items := make([]CacheItem, 0, len(l.Packages)+len(l.BootPackages))
	have := make(map[string]bool, len(l.Packages))
	for _, p := range l.Packages {
		items = append(items, p.CacheItem())
		have[p.SHA256] = true
	}
	for _, p := range l.BootPackages {
		if !have[p.SHA256] {
			have[p.SHA256] = true
			items = append(items, p.CacheItem())
		}
	}
	return items
}

// Downloader is a resumable Opener: Download writes the content of url
// from offset on to w and returns the number of bytes written. Transport
// implements it; Fetch falls back to Open (reading and discarding the
// first offset bytes) for Openers that do not.
type Downloader interface {
	Download(ctx context.Context, url string, w io.Writer, offset int64) (int64, error)
}

// ChecksumError reports downloaded content that is not what the lock
// pinned. Nothing is cached when it happens.
type ChecksumError struct {
	Name, URL        string
	Expected, Actual string // SHA-256, lowercase hex; Actual is empty when the size was wrong
	ExpectedSize     int64
	ActualSize       int64 // -1 when the download exceeded ExpectedSize and was stopped
}

func (e *ChecksumError) Error() string {
	switch {
	case e.ActualSize < 0:
		return fmt.Sprintf("%s: %s is larger than the expected %d bytes (SHA-256 %s); refused, nothing cached", e.Name, e.URL, e.ExpectedSize, e.Expected)
	case e.ActualSize != e.ExpectedSize:
		return fmt.Sprintf("%s: %s has %d bytes, expected %d (SHA-256 %s); refused, nothing cached", e.Name, e.URL, e.ActualSize, e.ExpectedSize, e.Expected)
	}
	return fmt.Sprintf("%s: %s: SHA-256 mismatch: expected %s, got %s; refused, nothing cached", e.Name, e.URL, e.Expected, e.Actual)
}

// MissingError lists the items an offline Fetch could not find in the
// cache.
type MissingError struct {
	Dir   string
	Items []CacheItem
}

func (e *MissingError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "offline: %d package(s) missing from the cache %s (fetch them with network access first):", len(e.Items), e.Dir)
	for _, it := range e.Items {
		fmt.Fprintf(&b, "\n  %s sha256:%s %s", it.label(), it.SHA256, it.URL)
	}
	return b.String()
}

// Is makes errors.Is(err, ErrOffline) true for a MissingError.
func (e *MissingError) Is(target error) bool { return target == ErrOffline }

// Path is where the verified file with this SHA-256 lives.
func (c *Cache) Path(sha256 string) string {
	return filepath.Join(c.Dir, sha256+".deb")
}

func (c *Cache) partialPath(sha256 string) string {
	return filepath.Join(c.Dir, sha256+".partial")
}

// Has reports whether the file with this SHA-256 is in the cache.
func (c *Cache) Has(sha256 string) bool {
	if !isSHA256(sha256) {
		return false
	}
	fi, err := os.Stat(c.Path(sha256))
	return err == nil && fi.Mode().IsRegular()
}

// Open returns the cached file with this SHA-256. The reader hashes what
// is read and, at the end of the file, returns an error instead of io.EOF
// if the content does not match (a file corrupted on disk after it was
// cached). A caller that stops early gets no such check: see Verify.
func (c *Cache) Open(sha256 string) (io.ReadCloser, error) {
	if !isSHA256(sha256) {
		return nil, fmt.Errorf("cache: %q is not a SHA-256", sha256)
	}
	f, err := os.Open(c.Path(sha256))
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	return &verifyingReader{f: f, h: newSHA256(), want: sha256}, nil
}

// Verify re-hashes the cached file with this SHA-256.
func (c *Cache) Verify(sha256 string) error {
	r, err := c.Open(sha256)
	if err != nil {
		return err
	}
	defer r.Close()
	_, err = io.Copy(io.Discard, r)
	return err
}

type verifyingReader struct {
	f    *os.File
	h    hash.Hash
	want string
}

func (r *verifyingReader) Read(p []byte) (int, error) {
	n, err := r.f.Read(p)
	r.h.Write(p[:n])
	if err == io.EOF {
		if got := hex.EncodeToString(r.h.Sum(nil)); got != r.want {
			return n, fmt.Errorf("cache: %s is corrupt: its SHA-256 is now %s; delete it and fetch again", r.f.Name(), got)
		}
	}
	return n, err
}

func (r *verifyingReader) Close() error { return r.f.Close() }

// Missing returns the items that are not in the cache with their expected
// size.
func (c *Cache) Missing(items []CacheItem) []CacheItem {
	var missing []CacheItem
	for _, it := range items {
		if !c.present(it) {
			missing = append(missing, it)
		}
	}
	return missing
}

func (c *Cache) present(it CacheItem) bool {
	if !isSHA256(it.SHA256) {
		return false
	}
	fi, err := os.Stat(c.Path(it.SHA256))
	return err == nil && fi.Mode().IsRegular() && fi.Size() == it.Size
}

// Fetch makes every item present in the cache, downloading the missing
// ones through opener, at most Parallel at a time. A download that fails
// leaves its partial file behind and the next Fetch resumes it. Content
// whose size or SHA-256 is wrong is deleted and reported as a
// *ChecksumError; after a resumed download that fails the check, the item
// is downloaded once more from the start before giving up. progress, if
// not nil, is called (never concurrently) with the bytes done and the
// total of the items that had to be fetched. Every item is attempted; the
// error joins the failures of all of them.
//
// With Offline set, Fetch never uses opener and returns a *MissingError
// when anything is missing.
func (c *Cache) Fetch(ctx context.Context, items []CacheItem, opener Opener, progress func(done, total int64)) error {
	if c.Dir == "" {
		return errors.New("cache: no directory")
	}
	unique, err := dedupItems(items)
	if err != nil {
		return err
	}
	missing := c.Missing(unique)
	if len(missing) == 0 {
		return nil
	}
	if c.Offline {
		return &MissingError{Dir: c.Dir, Items: missing}
	}
	if opener == nil {
		return errors.New("cache: Fetch needs an Opener")
	}
	dl, ok := opener.(Downloader)
	if !ok {
		dl = openerDownloader{opener}
	}
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return fmt.Errorf("cache: %w", err)
	}

	agg := &progressAgg{fn: progress}
	trackers := make([]*itemProgress, len(missing))
	for i, it := range missing {
		trackers[i] = &itemProgress{agg: agg}
		agg.total += it.Size
		if fi, err := os.Stat(c.partialPath(it.SHA256)); err == nil {
			trackers[i].cur = min(fi.Size(), it.Size)
			agg.done += trackers[i].cur
		}
	}
	agg.report()

	parallel := c.Parallel
	if parallel <= 0 {
		parallel = 4
	}
	errs := make([]error, len(missing))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(parallel, len(missing)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				errs[i] = c.fetchOne(ctx, missing[i], dl, trackers[i])
			}
		}()
	}
	for i := range missing {
		if ctx.Err() != nil {
			errs[i] = fmt.Errorf("%s: not fetched: %w", missing[i].label(), ctx.Err())
			continue
		}
		next <- i
	}
	close(next)
	wg.Wait()
	syncDir(c.Dir)

	var failed []error
	for _, err := range errs {
		if err != nil {
			failed = append(failed, err)
		}
	}
	if len(failed) == 0 {
		return nil
	}
	if len(failed) == 1 {
		return failed[0]
	}
	return fmt.Errorf("%d of %d downloads failed:\n%w", len(failed), len(missing), errors.Join(failed...))
}

func dedupItems(items []CacheItem) ([]CacheItem, error) {
	seen := map[string]int{}
	var out []CacheItem
	for _, it := range items {
		if !isSHA256(it.SHA256) {
			return nil, fmt.Errorf("cache: %s: SHA-256 %q is not 64 lowercase hex digits", it.label(), it.SHA256)
		}
		if it.Size <= 0 {
			return nil, fmt.Errorf("cache: %s: size %d: the size must be known", it.label(), it.Size)
		}
		if i, dup := seen[it.SHA256]; dup {
			if out[i].Size != it.Size {
				return nil, fmt.Errorf("cache: %s and %s have the same SHA-256 %s but sizes %d and %d", out[i].label(), it.label(), it.SHA256, out[i].Size, it.Size)
			}
			continue
		}
		seen[it.SHA256] = len(out)
		out = append(out, it)
	}
	return out, nil
}

// errTooLarge stops a download that goes past the expected size.
var errTooLarge = errors.New("more data than expected")

func (c *Cache) fetchOne(ctx context.Context, it CacheItem, dl Downloader, prog *itemProgress) error {
	partial := c.partialPath(it.SHA256)
	f, err := lockPartial(ctx, partial)
	if err != nil {
		return fmt.Errorf("%s: cache: %w", it.label(), err)
	}
	defer f.Close() // releases the lock
	if c.present(it) {
		// Another Cache finished it while we waited for the lock.
		os.Remove(partial)
		prog.set(it.Size)
		return nil
	}

	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("%s: cache: %w", it.label(), err)
	}
	size := fi.Size()
	h := newSHA256()
	if size > it.Size {
		size = 0
	}
	if size > 0 {
		if _, err := io.Copy(h, io.NewSectionReader(f, 0, size)); err != nil {
			return fmt.Errorf("%s: cache: reading %s: %w", it.label(), partial, err)
		}
	}
	resumed := size > 0
	for {
		if err := f.Truncate(size); err != nil {
			return fmt.Errorf("%s: cache: %w", it.label(), err)
		}
		if _, err := f.Seek(size, io.SeekStart); err != nil {
			return fmt.Errorf("%s: cache: %w", it.label(), err)
		}
		prog.set(size)
		var dlErr error
		if size < it.Size {
			w := &cacheWriter{f: f, h: h, size: size, limit: it.Size, prog: prog}
			_, dlErr = dl.Download(ctx, it.URL, w, size)
			size = w.size
		}
		var cerr *ChecksumError
		switch {
		case errors.Is(dlErr, errTooLarge):
			cerr = &ChecksumError{Name: it.label(), URL: it.URL, Expected: it.SHA256, ExpectedSize: it.Size, ActualSize: -1}
		case errors.Is(dlErr, errBeyondEnd):
			cerr = &ChecksumError{Name: it.label(), URL: it.URL, Expected: it.SHA256, ExpectedSize: it.Size, ActualSize: size}
		case dlErr != nil:
			// Keep what we have: the next Fetch resumes from it.
			f.Sync()
			return fmt.Errorf("%s: %w", it.label(), dlErr)
		case size != it.Size:
			cerr = &ChecksumError{Name: it.label(), URL: it.URL, Expected: it.SHA256, ExpectedSize: it.Size, ActualSize: size}
		default:
			if got := hex.EncodeToString(h.Sum(nil)); got != it.SHA256 {
				cerr = &ChecksumError{Name: it.label(), URL: it.URL, Expected: it.SHA256, Actual: got, ExpectedSize: it.Size, ActualSize: size}
			}
		}
		if cerr == nil {
			break
		}
		if resumed {
			// The bytes kept from an earlier run may be what is wrong:
			// start over once.
			resumed, size = false, 0
			h.Reset()
			continue
		}
		os.Remove(partial) // still ours: we hold its lock
		return cerr
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("%s: cache: %w", it.label(), err)
	}
	if err := os.Rename(partial, c.Path(it.SHA256)); err != nil {
		return fmt.Errorf("%s: cache: %w", it.label(), err)
	}
	prog.set(it.Size)
	return nil
}

// lockPartial opens (creating it if need be) and flocks the partial file,
// making sure the locked file is still the one at that path: another
// holder may have renamed it into place or deleted it meanwhile.
func lockPartial(ctx context.Context, path string) (*os.File, error) {
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, err
		}
		if err := flock(ctx, f); err != nil {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		held, err1 := f.Stat()
		atPath, err2 := os.Stat(path)
		if err1 == nil && err2 == nil && os.SameFile(held, atPath) {
			return f, nil
		}
		f.Close()
		if err1 != nil {
			return nil, err1
		}
		if err2 != nil && !errors.Is(err2, fs.ErrNotExist) {
			return nil, err2
		}
	}
}

// flock takes an exclusive lock on f, polling so that ctx can interrupt
// the wait.
func flock(ctx context.Context, f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	wait := 5 * time.Millisecond
	for {
		var ferr error
		if err := rc.Control(func(fd uintptr) {
			for {
				ferr = unix.Flock(int(fd), unix.LOCK_EX|unix.LOCK_NB)
				if ferr != unix.EINTR {
					return
				}
			}
		}); err != nil {
			return err
		}
		if ferr == nil {
			return nil
		}
		if ferr != unix.EWOULDBLOCK {
			return ferr
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(wait*2, 200*time.Millisecond)
	}
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// cacheWriter appends to the partial file, hashing, bounding the size and
// reporting progress.
type cacheWriter struct {
	f           *os.File
	h           hash.Hash
	size, limit int64
	prog        *itemProgress
}

func (w *cacheWriter) Write(p []byte) (int, error) {
	over := false
	if int64(len(p)) > w.limit-w.size {
		p, over = p[:w.limit-w.size], true
	}
	n, err := w.f.Write(p)
	w.h.Write(p[:n])
	w.size += int64(n)
	w.prog.set(w.size)
	if err != nil {
		return n, err
	}
	if over {
		return n, errTooLarge
	}
	return n, nil
}

// openerDownloader resumes through a plain Opener by skipping bytes.
type openerDownloader struct{ o Opener }

func (d openerDownloader) Download(ctx context.Context, url string, w io.Writer, offset int64) (int64, error) {
	r, err := d.o.Open(ctx, url)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	if n, err := io.CopyN(io.Discard, r, offset); err != nil {
		if err == io.EOF {
			return 0, fmt.Errorf("%s: %w: has %d bytes, fewer than the %d already downloaded", url, errBeyondEnd, n, offset)
		}
		return 0, err
	}
	return copyBody(w, r)
}

type progressAgg struct {
	mu          sync.Mutex
	done, total int64
	fn          func(done, total int64)
}

func (a *progressAgg) report() {
	if a.fn != nil {
		a.fn(a.done, a.total)
	}
}

type itemProgress struct {
	agg *progressAgg
	cur int64
}

func (p *itemProgress) set(v int64) {
	a := p.agg
	a.mu.Lock()
	defer a.mu.Unlock()
	if v == p.cur {
		return
	}
	a.done += v - p.cur
	p.cur = v
	a.report()
}

func newSHA256() hash.Hash { return sha256.New() }
