package apt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testServer is an httptest server on 127.0.0.1 that counts requests and
// connections and records each request's Range header.
type testServer struct {
	*httptest.Server
	requests atomic.Int64
	conns    atomic.Int64

	mu     sync.Mutex
	ranges []string
	agents []string
}

func newTestServer(t *testing.T, h http.HandlerFunc) *testServer {
	t.Helper()
	ts := &testServer{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ts.requests.Add(1)
		ts.mu.Lock()
		ts.ranges = append(ts.ranges, r.Header.Get("Range"))
		ts.agents = append(ts.agents, r.Header.Get("User-Agent"))
		ts.mu.Unlock()
		h(w, r)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			ts.conns.Add(1)
		}
	}
	srv.Start()
	if !strings.HasPrefix(srv.URL, "http://127.0.0.1:") {
		t.Fatalf("test server is not on loopback: %s", srv.URL)
	}
	t.Cleanup(srv.Close)
	ts.Server = srv
	return ts
}

func (ts *testServer) rangeHeaders() []string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]string(nil), ts.ranges...)
}

// serveFiles serves files by path; with honorRange it answers Range
// requests (http.ServeContent), without it always sends the whole file.
func serveFiles(files map[string][]byte, honorRange bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		data, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if honorRange {
			http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		w.Write(data)
	}
}

// cutFirst serves files with Range support, but the first request for
// each path sends the right Content-Length and then only half the body
// before the connection is dropped.
func cutFirst(files map[string][]byte) http.HandlerFunc {
	var mu sync.Mutex
	cut := map[string]bool{}
	serve := serveFiles(files, true)
	return func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		first := !cut[r.URL.Path]
		cut[r.URL.Path] = true
		mu.Unlock()
		data, ok := files[r.URL.Path]
		if !first || !ok {
			serve(w, r)
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		w.Write(data[:len(data)/2])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // drops the connection
	}
}

func randomBytes(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func fastTransport() *Transport {
	return &Transport{Backoff: time.Millisecond, StallTimeout: 5 * time.Second}
}

func readAll(t *testing.T, tr *Transport, url string) ([]byte, error) {
	t.Helper()
	rc, err := tr.Open(context.Background(), url)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func TestTransportOpenHTTP(t *testing.T) {
	data := randomBytes(1, 100_000)
	var encodings []string
	var mu sync.Mutex
	ts := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		encodings = append(encodings, r.Header.Get("Accept-Encoding"))
		mu.Unlock()
		serveFiles(map[string][]byte{"/dists/trixie/InRelease": data}, true)(w, r)
	})
	got, err := readAll(t, fastTransport(), ts.URL+"/dists/trixie/InRelease")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("content differs")
	}
	if ts.agents[0] != "apt-ostree-factory" {
		t.Errorf("User-Agent %q", ts.agents[0])
	}
	if encodings[0] != "identity" {
		t.Errorf("Accept-Encoding %q, want identity", encodings[0])
	}
	if ts.rangeHeaders()[0] != "" {
		t.Errorf("Open sent Range %q", ts.rangeHeaders()[0])
	}
}

func TestTransportNotFound(t *testing.T) {
	ts := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/gone" {
			w.WriteHeader(http.StatusGone)
			return
		}
		http.NotFound(w, r)
	})
	tr := fastTransport()
	for _, p := range []string{"/missing", "/gone"} {
		before := ts.requests.Load()
		url := ts.URL + p
		_, err := tr.Open(context.Background(), url)
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("Open %s: %v, want ErrNotFound", p, err)
		}
		if !strings.Contains(err.Error(), url) {
			t.Errorf("error does not name the URL: %v", err)
		}
		var buf bytes.Buffer
		_, err = tr.Download(context.Background(), url, &buf, 10)
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("Download %s: %v, want ErrNotFound", p, err)
		}
		if n := ts.requests.Load() - before; n != 2 {
			t.Errorf("%s: %d requests for one Open and one Download, want 2 (no retries)", p, n)
		}
	}
}

func TestTransportRetries5xx(t *testing.T) {
	data := []byte("Packages index")
	var failures atomic.Int64
	failures.Store(2)
	ts := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/always500" {
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		}
		if failures.Add(-1) >= 0 {
			http.Error(w, "try later", http.StatusServiceUnavailable)
			return
		}
		w.Write(data)
	})
	tr := fastTransport()
	got, err := readAll(t, tr, ts.URL+"/flaky")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("got %q", got)
	}
	if n := ts.requests.Load(); n != 3 {
		t.Errorf("%d requests, want 3 (two 503s, then 200)", n)
	}

	ts.requests.Store(0)
	tr.Retries = 2
	_, err = tr.Open(context.Background(), ts.URL+"/always500")
	if err == nil || !strings.Contains(err.Error(), "500") || !strings.Contains(err.Error(), ts.URL+"/always500") {
		t.Fatalf("err = %v, want a 500 naming the URL", err)
	}
	if errors.Is(err, ErrNotFound) {
		t.Error("a 500 is not ErrNotFound")
	}
	if n := ts.requests.Load(); n != 3 {
		t.Errorf("%d requests, want 1 + 2 retries", n)
	}
}

func TestTransportNoRetryOnClientError(t *testing.T) {
	ts := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusForbidden)
	})
	_, err := fastTransport().Open(context.Background(), ts.URL+"/x")
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("err = %v", err)
	}
	if n := ts.requests.Load(); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}

func TestTransportOffline(t *testing.T) {
	ts := newTestServer(t, serveFiles(map[string][]byte{"/a": []byte("a")}, true))
	tr := &Transport{Offline: true}
	url := ts.URL + "/a"
	_, err := tr.Open(context.Background(), url)
	if !errors.Is(err, ErrOffline) {
		t.Fatalf("Open: %v, want ErrOffline", err)
	}
	if want := "offline mode forbids network access to " + url; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	if _, err := tr.Download(context.Background(), "https://deb.debian.org/debian/x.deb", io.Discard, 0); !errors.Is(err, ErrOffline) {
		t.Fatalf("Download: %v, want ErrOffline", err)
	}
	if n, c := ts.requests.Load(), ts.conns.Load(); n != 0 || c != 0 {
		t.Errorf("offline transport made %d requests over %d connections", n, c)
	}

	// Local files are not network access.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "Release"), []byte("local"), 0o644)
	got, err := readAll(t, tr, "file://"+dir+"/Release")
	if err != nil || string(got) != "local" {
		t.Fatalf("file:// offline: %q, %v", got, err)
	}
}

func TestTransportFile(t *testing.T) {
	dir := t.TempDir()
	data := randomBytes(2, 5000)
	path := filepath.Join(dir, "pool", "a b.deb")
	os.MkdirAll(filepath.Dir(path), 0o755)
	os.WriteFile(path, data, 0o644)
	tr := &Transport{}

	got, err := readAll(t, tr, "file://"+dir+"/pool/a%20b.deb")
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Open: %v", err)
	}
	got, err = readAll(t, tr, "file://localhost"+dir+"/pool/a%20b.deb")
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Open with localhost: %v", err)
	}
	var buf bytes.Buffer
	n, err := tr.Download(context.Background(), "file://"+dir+"/pool/a%20b.deb", &buf, 1234)
	if err != nil || n != int64(len(data)-1234) || !bytes.Equal(buf.Bytes(), data[1234:]) {
		t.Fatalf("Download from 1234: n=%d err=%v", n, err)
	}
	n, err = tr.Download(context.Background(), "file://"+dir+"/pool/a%20b.deb", &buf, int64(len(data)))
	if err != nil || n != 0 {
		t.Fatalf("Download at end: n=%d err=%v", n, err)
	}
	if _, err := tr.Download(context.Background(), "file://"+dir+"/pool/a%20b.deb", &buf, int64(len(data))+1); !errors.Is(err, errBeyondEnd) {
		t.Fatalf("Download beyond end: %v", err)
	}

	missing := "file://" + dir + "/dists/trixie/InRelease"
	_, err = tr.Open(context.Background(), missing)
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), missing) {
		t.Fatalf("missing file: %v", err)
	}
	if _, err := tr.Download(context.Background(), missing, &buf, 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Download missing file: %v", err)
	}
	if _, err := tr.Open(context.Background(), "file://"+dir+"/pool"); err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("directory: %v", err)
	}
	if _, err := tr.Open(context.Background(), "file://otherhost/srv/x"); err == nil || !strings.Contains(err.Error(), "otherhost") {
		t.Fatalf("remote file URL: %v", err)
	}
	if _, err := tr.Open(context.Background(), "file:relative/x"); err == nil {
		t.Fatal("relative file URL accepted")
	}
	if _, err := tr.Open(context.Background(), "ftp://example.org/x"); err == nil || !strings.Contains(err.Error(), "unsupported scheme") {
		t.Fatalf("ftp: %v", err)
	}
}

func TestTransportDownloadRange(t *testing.T) {
	data := randomBytes(3, 300_000)
	for _, honor := range []bool{true, false} {
		t.Run(fmt.Sprintf("honorRange=%v", honor), func(t *testing.T) {
			ts := newTestServer(t, serveFiles(map[string][]byte{"/f": data}, honor))
			tr := fastTransport()
			for _, off := range []int64{0, 1, 65536, 299_999} {
				var buf bytes.Buffer
				n, err := tr.Download(context.Background(), ts.URL+"/f", &buf, off)
				if err != nil {
					t.Fatalf("offset %d: %v", off, err)
				}
				if n != int64(len(data))-off || !bytes.Equal(buf.Bytes(), data[off:]) {
					t.Fatalf("offset %d: got %d bytes, want %d", off, n, int64(len(data))-off)
				}
			}
			r := ts.rangeHeaders()
			if r[0] != "" || r[1] != "bytes=1-" || r[3] != "bytes=299999-" {
				t.Errorf("Range headers %q", r)
			}
			// At the end: nothing to do. Beyond: an error.
			n, err := tr.Download(context.Background(), ts.URL+"/f", io.Discard, int64(len(data)))
			if err != nil || n != 0 {
				t.Errorf("at end: n=%d err=%v", n, err)
			}
			_, err = tr.Download(context.Background(), ts.URL+"/f", io.Discard, int64(len(data))+10)
			if !errors.Is(err, errBeyondEnd) {
				t.Errorf("beyond end: %v", err)
			}
		})
	}
}

func TestTransportDownloadResumesDroppedConnection(t *testing.T) {
	data := randomBytes(4, 200_000)
	ts := newTestServer(t, cutFirst(map[string][]byte{"/pool/big.deb": data}))
	var buf bytes.Buffer
	n, err := fastTransport().Download(context.Background(), ts.URL+"/pool/big.deb", &buf, 0)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len(data)) || !bytes.Equal(buf.Bytes(), data) {
		t.Fatalf("got %d bytes, content equal: %v", n, bytes.Equal(buf.Bytes(), data))
	}
	r := ts.rangeHeaders()
	if len(r) != 2 || r[0] != "" || r[1] != fmt.Sprintf("bytes=%d-", len(data)/2) {
		t.Errorf("requests' Range headers %q, want a whole request then a resume from %d", r, len(data)/2)
	}

	// Open does not resume: the caller sees the cut, naming the URL.
	ts2 := newTestServer(t, cutFirst(map[string][]byte{"/x": data}))
	_, err = readAll(t, fastTransport(), ts2.URL+"/x")
	if err == nil || !strings.Contains(err.Error(), ts2.URL+"/x") {
		t.Errorf("Open of a cut body: %v", err)
	}
}

func TestTransportDownloadStall(t *testing.T) {
	data := randomBytes(5, 100_000)
	var first atomic.Bool
	first.Store(true)
	ts := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
		if first.Swap(false) {
			w.Header().Set("Content-Length", fmt.Sprint(len(data)))
			w.Write(data[:1000])
			w.(http.Flusher).Flush()
			select { // hang until the client gives up
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
	})
	tr := fastTransport()
	tr.StallTimeout = 200 * time.Millisecond
	start := time.Now()
	var buf bytes.Buffer
	if _, err := tr.Download(context.Background(), ts.URL+"/f", &buf, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), data) {
		t.Fatal("content differs")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %s: the stall was not detected", d)
	}
	if r := ts.rangeHeaders(); len(r) != 2 || r[1] != "bytes=1000-" {
		t.Errorf("Range headers %q", r)
	}
}

func TestTransportContextCancel(t *testing.T) {
	ts := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := fastTransport().Download(ctx, ts.URL+"/f", io.Discard, 0)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("cancellation took %s", d)
	}
	if n := ts.requests.Load(); n != 1 {
		t.Errorf("%d requests after cancellation, want 1", n)
	}
}

func TestTransportWriterErrorNotRetried(t *testing.T) {
	ts := newTestServer(t, serveFiles(map[string][]byte{"/f": randomBytes(6, 200_000)}, true))
	boom := errors.New("disk full")
	_, err := fastTransport().Download(context.Background(), ts.URL+"/f", failingWriter{boom}, 0)
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	if n := ts.requests.Load(); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}

type failingWriter struct{ err error }

func (w failingWriter) Write(p []byte) (int, error) { return 0, w.err }
