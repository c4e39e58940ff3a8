package apt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// debFixture is a fake .deb served at /pool/<name>.deb.
type debFixture struct {
	name string
	data []byte
}

func makeDebs(n, size int) []debFixture {
	debs := make([]debFixture, n)
	for i := range debs {
		debs[i] = debFixture{name: fmt.Sprintf("pkg%d", i), data: randomBytes(int64(100+i), size+i*1000)}
	}
	return debs
}

func debFiles(debs []debFixture) map[string][]byte {
	m := map[string][]byte{}
	for _, d := range debs {
		m["/pool/"+d.name+".deb"] = d.data
	}
	return m
}

func debItems(base string, debs []debFixture) []CacheItem {
	items := make([]CacheItem, len(debs))
	for i, d := range debs {
		items[i] = CacheItem{Name: d.name + ":amd64=1.0", URL: base + "/pool/" + d.name + ".deb", SHA256: hexOf(string(d.data)), Size: int64(len(d.data))}
	}
	return items
}

// cacheFiles lists the cache directory's entries.
func cacheFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

func checkCached(t *testing.T, c *Cache, debs []debFixture) {
	t.Helper()
	for _, d := range debs {
		sha := hexOf(string(d.data))
		if !c.Has(sha) {
			t.Fatalf("%s not cached", d.name)
		}
		r, err := c.Open(sha)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(got, d.data) {
			t.Fatalf("%s: cached content differs (%v)", d.name, err)
		}
	}
	for _, f := range cacheFiles(t, c.Dir) {
		if strings.HasSuffix(f, ".partial") {
			t.Errorf("partial file left behind: %s", f)
		}
	}
}

func TestCacheFetch(t *testing.T) {
	debs := makeDebs(5, 50_000)
	ts := newTestServer(t, serveFiles(debFiles(debs), true))
	c := &Cache{Dir: filepath.Join(t.TempDir(), "debs")}
	items := debItems(ts.URL, debs)
	items = append(items, items[2]) // the same file twice is fetched once

	var calls []int64
	var total int64
	err := c.Fetch(context.Background(), items, fastTransport(), func(done, tot int64) {
		calls = append(calls, done)
		total = tot
	})
	if err != nil {
		t.Fatal(err)
	}
	checkCached(t, c, debs)
	if n := ts.requests.Load(); n != 5 {
		t.Errorf("%d requests, want 5", n)
	}
	var want int64
	for _, d := range debs {
		want += int64(len(d.data))
	}
	if total != want || calls[len(calls)-1] != want || calls[0] != 0 {
		t.Errorf("progress: total %d, first %d, last %d; want 0 .. %d", total, calls[0], calls[len(calls)-1], want)
	}
	for i := 1; i < len(calls); i++ {
		if calls[i] < calls[i-1] {
			t.Fatalf("progress went backwards: %d after %d", calls[i], calls[i-1])
		}
	}
	if c.Path(items[0].SHA256) != filepath.Join(c.Dir, items[0].SHA256+".deb") {
		t.Errorf("Path = %s", c.Path(items[0].SHA256))
	}
	if err := c.Verify(items[0].SHA256); err != nil {
		t.Error(err)
	}
	if len(c.Missing(items)) != 0 {
		t.Error("Missing lists cached items")
	}

	// A second fetch has nothing to do.
	if err := c.Fetch(context.Background(), items, fastTransport(), nil); err != nil {
		t.Fatal(err)
	}
	if n := ts.requests.Load(); n != 5 {
		t.Errorf("second fetch made requests (%d total)", n)
	}
}

func TestCacheFetchFromLock(t *testing.T) {
	debs := makeDebs(2, 1000)
	ts := newTestServer(t, serveFiles(debFiles(debs), true))
	l := &Lock{Sources: []LockSource{{URI: ts.URL + "/", Suite: "trixie", ReleaseSHA256: hexOf("r")}}}
	for _, d := range debs {
		l.Packages = append(l.Packages, LockedPackage{Name: d.name, Version: "1.0", Architecture: "amd64", SHA256: hexOf(string(d.data)), Size: int64(len(d.data)), Filename: "pool/" + d.name + ".deb", URI: ts.URL + "/", Suite: "trixie"})
	}
	c := &Cache{Dir: t.TempDir()}
	if err := c.Fetch(context.Background(), l.CacheItems(), fastTransport(), nil); err != nil {
		t.Fatal(err)
	}
	checkCached(t, c, debs)
	if it := l.Packages[0].CacheItem(); it.Name != "pkg0:amd64=1.0" || it.URL != ts.URL+"/pool/pkg0.deb" {
		t.Errorf("CacheItem %+v", it)
	}
}

func TestCacheFileURLs(t *testing.T) {
	mirror := t.TempDir()
	debs := makeDebs(2, 3000)
	for p, data := range debFiles(debs) {
		os.MkdirAll(filepath.Join(mirror, filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(mirror, p), data, 0o644)
	}
	c := &Cache{Dir: t.TempDir()}
	if err := c.Fetch(context.Background(), debItems("file://"+mirror, debs), &Transport{}, nil); err != nil {
		t.Fatal(err)
	}
	checkCached(t, c, debs)
}

// A download cut midway leaves a partial file; the next run resumes it
// with a Range request.
func TestCacheResumeAcrossRuns(t *testing.T) {
	debs := makeDebs(1, 300_000)
	ts := newTestServer(t, cutFirst(debFiles(debs)))
	c := &Cache{Dir: t.TempDir()}
	items := debItems(ts.URL, debs)
	noRetry := &Transport{Retries: -1}

	err := c.Fetch(context.Background(), items, noRetry, nil)
	if err == nil {
		t.Fatal("cut download succeeded")
	}
	if !strings.Contains(err.Error(), "pkg0:amd64=1.0") || !strings.Contains(err.Error(), items[0].URL) {
		t.Errorf("error does not name the package and URL: %v", err)
	}
	if c.Has(items[0].SHA256) {
		t.Fatal("incomplete file is in the cache")
	}
	fi, err := os.Stat(filepath.Join(c.Dir, items[0].SHA256+".partial"))
	if err != nil || fi.Size() != int64(len(debs[0].data)/2) {
		t.Fatalf("partial: %v, %v", fi, err)
	}

	var first int64 = -1
	if err := c.Fetch(context.Background(), items, noRetry, func(done, total int64) {
		if first < 0 {
			first = done
		}
	}); err != nil {
		t.Fatal(err)
	}
	checkCached(t, c, debs)
	if r := ts.rangeHeaders(); len(r) != 2 || r[1] != fmt.Sprintf("bytes=%d-", len(debs[0].data)/2) {
		t.Errorf("Range headers %q", r)
	}
	if first != int64(len(debs[0].data)/2) {
		t.Errorf("progress started at %d, want the resumed %d", first, len(debs[0].data)/2)
	}
}

// Within one run, the transport resumes a cut transfer by itself.
func TestCacheResumeWithinRun(t *testing.T) {
	debs := makeDebs(3, 200_000)
	ts := newTestServer(t, cutFirst(debFiles(debs)))
	c := &Cache{Dir: t.TempDir()}
	if err := c.Fetch(context.Background(), debItems(ts.URL, debs), fastTransport(), nil); err != nil {
		t.Fatal(err)
	}
	checkCached(t, c, debs)
	if n := ts.requests.Load(); n != 6 {
		t.Errorf("%d requests, want 6 (each cut once, then resumed)", n)
	}
}

func TestCacheResumeServerIgnoresRange(t *testing.T) {
	debs := makeDebs(1, 100_000)
	ts := newTestServer(t, serveFiles(debFiles(debs), false))
	c := &Cache{Dir: t.TempDir()}
	items := debItems(ts.URL, debs)
	os.WriteFile(filepath.Join(c.Dir, items[0].SHA256+".partial"), debs[0].data[:40_000], 0o644)
	if err := c.Fetch(context.Background(), items, fastTransport(), nil); err != nil {
		t.Fatal(err)
	}
	checkCached(t, c, debs)
	if r := ts.rangeHeaders(); len(r) != 1 || r[0] != "bytes=40000-" {
		t.Errorf("Range headers %q", r)
	}
}

// A partial whose bytes are wrong fails the check after resuming; the
// item is then downloaded once more from the start.
func TestCacheCorruptPartialRestarts(t *testing.T) {
	debs := makeDebs(1, 100_000)
	ts := newTestServer(t, serveFiles(debFiles(debs), true))
	c := &Cache{Dir: t.TempDir()}
	items := debItems(ts.URL, debs)
	os.WriteFile(filepath.Join(c.Dir, items[0].SHA256+".partial"), randomBytes(99, 40_000), 0o644)
	if err := c.Fetch(context.Background(), items, fastTransport(), nil); err != nil {
		t.Fatal(err)
	}
	checkCached(t, c, debs)
	if r := ts.rangeHeaders(); len(r) != 2 || r[0] != "bytes=40000-" || r[1] != "" {
		t.Errorf("Range headers %q", r)
	}

	// A partial longer than the item is discarded without asking.
	c2 := &Cache{Dir: t.TempDir()}
	os.WriteFile(filepath.Join(c2.Dir, items[0].SHA256+".partial"), randomBytes(98, 200_000), 0o644)
	if err := c2.Fetch(context.Background(), items, fastTransport(), nil); err != nil {
		t.Fatal(err)
	}
	checkCached(t, c2, debs)
}

func TestCacheChecksumMismatch(t *testing.T) {
	good := randomBytes(10, 50_000)
	files := map[string][]byte{
		"/pool/evil.deb":  randomBytes(11, 50_000), // same size, other bytes
		"/pool/long.deb":  randomBytes(12, 80_000),
		"/pool/short.deb": good[:20_000],
	}
	ts := newTestServer(t, serveFiles(files, true))
	for _, c := range []struct {
		name, want string
		actual     bool
	}{
		{"evil", "SHA-256 mismatch: expected " + hexOf(string(good)) + ", got " + hexOf(string(files["/pool/evil.deb"])), true},
		{"long", "is larger than the expected 50000 bytes", false},
		{"short", "has 20000 bytes, expected 50000", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			cache := &Cache{Dir: t.TempDir()}
			item := CacheItem{Name: c.name + ":amd64=1", URL: ts.URL + "/pool/" + c.name + ".deb", SHA256: hexOf(string(good)), Size: int64(len(good))}
			err := cache.Fetch(context.Background(), []CacheItem{item}, fastTransport(), nil)
			var ce *ChecksumError
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want a ChecksumError", err)
			}
			msg := err.Error()
			for _, w := range []string{item.Name, item.URL, item.SHA256, c.want, "nothing cached"} {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
			if c.actual && ce.Actual != hexOf(string(files["/pool/evil.deb"])) {
				t.Errorf("Actual = %s", ce.Actual)
			}
			if cache.Has(item.SHA256) {
				t.Error("refused content is in the cache")
			}
			if f := cacheFiles(t, cache.Dir); len(f) != 0 {
				t.Errorf("cache directory holds %q", f)
			}
		})
	}
}

func TestCacheNotFound(t *testing.T) {
	debs := makeDebs(2, 1000)
	ts := newTestServer(t, serveFiles(debFiles(debs[:1]), true))
	c := &Cache{Dir: t.TempDir()}
	items := debItems(ts.URL, debs)
	err := c.Fetch(context.Background(), items, fastTransport(), nil)
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "pkg1:amd64=1.0") || !strings.Contains(err.Error(), items[1].URL) {
		t.Fatalf("err = %v", err)
	}
	if !c.Has(items[0].SHA256) || c.Has(items[1].SHA256) {
		t.Error("the item that exists should be cached, the other not")
	}
	if n := ts.requests.Load(); n != 2 {
		t.Errorf("%d requests, want 2 (no retry on 404)", n)
	}
}

func TestCacheSeveralFailuresReported(t *testing.T) {
	debs := makeDebs(3, 1000)
	ts := newTestServer(t, serveFiles(debFiles(debs[:1]), true))
	err := (&Cache{Dir: t.TempDir()}).Fetch(context.Background(), debItems(ts.URL, debs), fastTransport(), nil)
	if err == nil || !strings.Contains(err.Error(), "2 of 3 downloads failed") || !strings.Contains(err.Error(), "pkg1") || !strings.Contains(err.Error(), "pkg2") {
		t.Fatalf("err = %v", err)
	}
}

func TestCacheOffline(t *testing.T) {
	debs := makeDebs(3, 2000)
	ts := newTestServer(t, serveFiles(debFiles(debs), true))
	dir := t.TempDir()
	items := debItems(ts.URL, debs)
	if err := (&Cache{Dir: dir}).Fetch(context.Background(), items[:1], fastTransport(), nil); err != nil {
		t.Fatal(err)
	}
	ts.requests.Store(0)
	ts.conns.Store(0)

	c := &Cache{Dir: dir, Offline: true}
	err := c.Fetch(context.Background(), items, fastTransport(), nil)
	var me *MissingError
	if !errors.As(err, &me) || !errors.Is(err, ErrOffline) {
		t.Fatalf("err = %v, want a MissingError", err)
	}
	if len(me.Items) != 2 || me.Items[0].Name != "pkg1:amd64=1.0" || me.Items[1].Name != "pkg2:amd64=1.0" {
		t.Errorf("missing items %+v", me.Items)
	}
	msg := err.Error()
	for _, w := range []string{"offline", "2 package(s) missing", dir, "pkg1:amd64=1.0", items[1].URL, items[1].SHA256, "pkg2:amd64=1.0", items[2].URL} {
		if !strings.Contains(msg, w) {
			t.Errorf("error does not contain %q:\n%s", w, msg)
		}
	}
	if strings.Contains(msg, "pkg0") {
		t.Errorf("error lists a cached package:\n%s", msg)
	}
	// Offline never calls the opener, even one that would work.
	if err := c.Fetch(context.Background(), items, nil, nil); !errors.As(err, &me) {
		t.Errorf("offline with no opener: %v", err)
	}
	if n, cn := ts.requests.Load(), ts.conns.Load(); n != 0 || cn != 0 {
		t.Errorf("offline fetch made %d requests over %d connections", n, cn)
	}
	// All present: fine. A cache directory that does not exist: all missing.
	if err := c.Fetch(context.Background(), items[:1], nil, nil); err != nil {
		t.Errorf("offline with everything cached: %v", err)
	}
	empty := &Cache{Dir: filepath.Join(dir, "nonexistent"), Offline: true}
	if err := empty.Fetch(context.Background(), items, nil, nil); !errors.As(err, &me) || len(me.Items) != 3 {
		t.Errorf("empty offline cache: %v", err)
	}
	if _, err := os.Stat(empty.Dir); !os.IsNotExist(err) {
		t.Error("offline fetch created the cache directory")
	}
}

func TestCacheParallelismBounded(t *testing.T) {
	debs := makeDebs(12, 5000)
	files := debFiles(debs)
	var inflight, peak atomic.Int64
	ts := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
		n := inflight.Add(1)
		defer inflight.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(30 * time.Millisecond)
		serveFiles(files, true)(w, r)
	})
	c := &Cache{Dir: t.TempDir(), Parallel: 3}
	if err := c.Fetch(context.Background(), debItems(ts.URL, debs), fastTransport(), nil); err != nil {
		t.Fatal(err)
	}
	checkCached(t, c, debs)
	if p := peak.Load(); p > 3 || p < 2 {
		t.Errorf("peak of %d simultaneous downloads, want 2..3", p)
	}
}

// slowServer serves files slowly, so that concurrent fetches overlap.
func slowServer(t *testing.T, files map[string][]byte) *testServer {
	serve := serveFiles(files, true)
	return newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(150 * time.Millisecond)
		serve(w, r)
	})
}

func TestCacheConcurrentSameItem(t *testing.T) {
	debs := makeDebs(3, 100_000)
	ts := slowServer(t, debFiles(debs))
	dir := t.TempDir()
	items := debItems(ts.URL, debs)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &Cache{Dir: dir} // separate Cache values sharing a directory
			errs[i] = c.Fetch(context.Background(), items, fastTransport(), nil)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	checkCached(t, &Cache{Dir: dir}, debs)
	if n := ts.requests.Load(); n != 3 {
		t.Errorf("%d requests, want 3: each item downloaded once", n)
	}
}

func TestCacheLockWaitHonoursContext(t *testing.T) {
	debs := makeDebs(1, 1000)
	ts := newTestServer(t, serveFiles(debFiles(debs), true))
	dir := t.TempDir()
	items := debItems(ts.URL, debs)
	held, err := lockPartial(context.Background(), filepath.Join(dir, items[0].SHA256+".partial"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err = (&Cache{Dir: dir}).Fetch(ctx, items, fastTransport(), nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want deadline exceeded while waiting for the lock", err)
	}
	held.Close()
	if err := (&Cache{Dir: dir}).Fetch(context.Background(), items, fastTransport(), nil); err != nil {
		t.Fatal(err)
	}
	checkCached(t, &Cache{Dir: dir}, debs)
}

func TestCacheDetectsCorruptionOnDisk(t *testing.T) {
	debs := makeDebs(1, 10_000)
	ts := newTestServer(t, serveFiles(debFiles(debs), true))
	c := &Cache{Dir: t.TempDir()}
	items := debItems(ts.URL, debs)
	if err := c.Fetch(context.Background(), items, fastTransport(), nil); err != nil {
		t.Fatal(err)
	}
	p := c.Path(items[0].SHA256)
	bad := append([]byte(nil), debs[0].data...)
	bad[5000] ^= 1
	os.WriteFile(p, bad, 0o644)
	if err := c.Verify(items[0].SHA256); err == nil || !strings.Contains(err.Error(), "corrupt") || !strings.Contains(err.Error(), p) {
		t.Errorf("Verify: %v", err)
	}
	r, _ := c.Open(items[0].SHA256)
	if _, err := io.ReadAll(r); err == nil {
		t.Error("Open read corrupt content to the end without error")
	}
	r.Close()

	// A cached file of the wrong size is fetched again.
	os.WriteFile(p, debs[0].data[:100], 0o644)
	if err := c.Fetch(context.Background(), items, fastTransport(), nil); err != nil {
		t.Fatal(err)
	}
	checkCached(t, c, debs)
}

func TestCacheInvalidItems(t *testing.T) {
	c := &Cache{Dir: t.TempDir()}
	sha := strings.Repeat("a", 64)
	for _, c2 := range []struct {
		items []CacheItem
		want  string
	}{
		{[]CacheItem{{Name: "x", SHA256: "../../etc/passwd", Size: 1}}, "x: SHA-256 \"../../etc/passwd\""},
		{[]CacheItem{{Name: "x", SHA256: sha}}, "x: size 0"},
		{[]CacheItem{{Name: "x", SHA256: sha, Size: 1}, {Name: "y", SHA256: sha, Size: 2}}, "same SHA-256"},
	} {
		if err := c.Fetch(context.Background(), c2.items, &Transport{}, nil); err == nil || !strings.Contains(err.Error(), c2.want) {
			t.Errorf("err = %v, want %q", err, c2.want)
		}
	}
	if c.Has("../x") {
		t.Error("Has accepted a path")
	}
	if _, err := c.Open("../x"); err == nil {
		t.Error("Open accepted a path")
	}
}

// plainOpener has no Download method: Fetch resumes by skipping.
type plainOpener struct{ t *Transport }

func (o plainOpener) Open(ctx context.Context, url string) (io.ReadCloser, error) {
	return o.t.Open(ctx, url)
}

func TestCachePlainOpener(t *testing.T) {
	debs := makeDebs(1, 50_000)
	ts := newTestServer(t, serveFiles(debFiles(debs), true))
	c := &Cache{Dir: t.TempDir()}
	items := debItems(ts.URL, debs)
	os.WriteFile(filepath.Join(c.Dir, items[0].SHA256+".partial"), debs[0].data[:1000], 0o644)
	if err := c.Fetch(context.Background(), items, plainOpener{fastTransport()}, nil); err != nil {
		t.Fatal(err)
	}
	checkCached(t, c, debs)
}

const helperEnv = "APT_OSTREE_FACTORY_CACHE_HELPER"

// TestCacheHelperProcess is the child of TestCacheTwoProcesses: it
// fetches the items described in the environment and exits.
func TestCacheHelperProcess(t *testing.T) {
	spec := os.Getenv(helperEnv)
	if spec == "" {
		t.Skip("helper process for TestCacheTwoProcesses")
	}
	f := strings.Split(spec, "|")
	var items []CacheItem
	for i := 1; i+3 < len(f); i += 4 {
		size, _ := strconv.ParseInt(f[i+3], 10, 64)
		items = append(items, CacheItem{Name: f[i], URL: f[i+1], SHA256: f[i+2], Size: size})
	}
	if err := (&Cache{Dir: f[0]}).Fetch(context.Background(), items, fastTransport(), nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

func TestCacheTwoProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	debs := makeDebs(4, 200_000)
	ts := slowServer(t, debFiles(debs))
	dir := t.TempDir()
	items := debItems(ts.URL, debs)
	spec := []string{dir}
	for _, it := range items {
		spec = append(spec, it.Name, it.URL, it.SHA256, fmt.Sprint(it.Size))
	}
	var cmds []*exec.Cmd
	var outs []*bytes.Buffer
	for range 2 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCacheHelperProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), helperEnv+"="+strings.Join(spec, "|"))
		out := &bytes.Buffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
		outs = append(outs, out)
	}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("process %d: %v\n%s", i, err, outs[i])
		}
	}
	checkCached(t, &Cache{Dir: dir}, debs)
	if n := ts.requests.Load(); n != 4 {
		t.Errorf("%d requests from two processes, want 4: each item downloaded once", n)
	}
}
