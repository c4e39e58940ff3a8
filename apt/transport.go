package apt

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// UserAgent is sent with every HTTP request.
const UserAgent = "apt-ostree-factory"

// ErrOffline is wrapped by the error of every http(s) request a Transport
// refuses because it is Offline.
var ErrOffline = errors.New("offline mode forbids network access")

// errBeyondEnd is wrapped when a download resumes past the end of the
// resource: what was downloaded before is not a prefix of it.
var errBeyondEnd = errors.New("resume offset beyond the end")

// Transport opens http://, https:// and file:// URLs. It implements Opener
// (whole files, for archive metadata) and Download (resumable ranged
// transfers, for the .deb cache). The zero value is ready to use.
//
// Transient failures (connection errors, timeouts, a body cut short, HTTP
// 5xx, 408 and 429) are retried with exponential backoff; other HTTP
// errors are not. HTTP 404 and 410 and missing local files are reported
// as errors wrapping ErrNotFound.
type Transport struct {
	// Client does the HTTP requests. nil means a client with connect, TLS
	// handshake and response header timeouts that honours the proxy
	// environment variables.
	Client *http.Client
	// Offline makes every http(s) request fail at once, without opening a
	// socket, with an error wrapping ErrOffline. file:// URLs still work.
	Offline bool
	// Retries is how many times a transient failure is retried: 0 means 3,
	// a negative value means none.
	Retries int
	// Backoff is the wait before the first retry, doubled for each next
	// one up to 30 s. 0 means 500 ms.
	Backoff time.Duration
	// StallTimeout gives up on (and, where retries remain, retries) a
	// request that receives nothing for this long, whether waiting for the
	// response or for the next bytes of the body. 0 means 60 s.
	StallTimeout time.Duration

	once   sync.Once
	client *http.Client
}

func (t *Transport) httpClient() *http.Client {
	if t.Client != nil {
		return t.Client
	}
	t.once.Do(func() {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.DialContext = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
		tr.TLSHandshakeTimeout = 15 * time.Second
		tr.ResponseHeaderTimeout = 60 * time.Second
		tr.MaxIdleConnsPerHost = 8
		t.client = &http.Client{Transport: tr}
	})
	return t.client
}

func (t *Transport) retries() int {
	switch {
	case t.Retries < 0:
		return 0
	case t.Retries == 0:
		return 3
	}
	return t.Retries
}

func (t *Transport) backoff(attempt int) time.Duration {
	d := t.Backoff
	if d <= 0 {
		d = 500 * time.Millisecond
	}
	for i := 0; i < attempt && d < 30*time.Second; i++ {
		d *= 2
	}
	return min(d, 30*time.Second)
}

func (t *Transport) stallTimeout() time.Duration {
	if t.StallTimeout <= 0 {
		return 60 * time.Second
	}
	return t.StallTimeout
}

// permanentError marks a failure that retrying cannot fix.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// retryAfterError carries a server's Retry-After delay.
type retryAfterError struct {
	err   error
	delay time.Duration
}

func (e retryAfterError) Error() string { return e.err.Error() }
func (e retryAfterError) Unwrap() error { return e.err }

func isPermanent(ctx context.Context, err error) bool {
	var p permanentError
	if errors.As(err, &p) || ctx.Err() != nil {
		return true
	}
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	return errors.As(err, &unknownCA) || errors.As(err, &hostname) || errors.As(err, &invalid)
}

// retry runs op until it succeeds, fails permanently or has failed
// 1+Retries times in a row without progress. op reports whether it made
// progress (received bytes) before failing; progress resets the count, so
// that a transfer cut short now and then still completes, up to a total
// of 20+Retries failures.
func (t *Transport) retry(ctx context.Context, op func() (progress bool, err error)) error {
	failures, total := 0, 0
	for {
		progress, err := op()
		if err == nil {
			return nil
		}
		if isPermanent(ctx, err) {
			if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
				return fmt.Errorf("%w (%v)", ctx.Err(), err)
			}
			return err
		}
		if progress {
			failures = 0
		}
		failures++
		total++
		if failures > t.retries() || total > 20+t.retries() {
			if total > 1 {
				return fmt.Errorf("%w (gave up after %d attempts)", err, total)
			}
			return err
		}
		wait := t.backoff(failures - 1)
		var ra retryAfterError
		if errors.As(err, &ra) && ra.delay > wait {
			wait = min(ra.delay, 30*time.Second)
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("%w (after: %v)", ctx.Err(), err)
		case <-timer.C:
		}
	}
}

// Open returns the content of rawURL. For http(s) the request is retried
// on transient failures until the response starts; a failure while the
// caller reads the body is returned by Read, naming the URL.
func (t *Transport) Open(ctx context.Context, rawURL string) (io.ReadCloser, error) {
	u, err := t.parse(rawURL)
	if err != nil {
		return nil, err
	}
	if u.Scheme == "file" {
		return openLocal(rawURL, u.Path, 0)
	}
	var body io.ReadCloser
	err = t.retry(ctx, func() (bool, error) {
		resp, err := t.get(ctx, rawURL, 0)
		if err != nil {
			return false, err
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return false, permanentError{fmt.Errorf("GET %s: unexpected %s", rawURL, resp.Status)}
		}
		body = resp.Body
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	return body, nil
}

// Download writes the content of rawURL from byte offset on to w, and
// returns how many bytes it wrote. An http(s) transfer asks for the rest
// with a Range header; when the server ignores it (200 instead of 206),
// the first offset bytes of the response are skipped. A transfer cut short
// is resumed the same way, so w only ever receives each byte once, in
// order. An offset at the end of the resource writes nothing; an offset
// beyond it is an error. Errors from w are returned as they are, without
// retrying.
func (t *Transport) Download(ctx context.Context, rawURL string, w io.Writer, offset int64) (int64, error) {
	if offset < 0 {
		return 0, fmt.Errorf("download %s: negative offset %d", rawURL, offset)
	}
	u, err := t.parse(rawURL)
	if err != nil {
		return 0, err
	}
	if u.Scheme == "file" {
		f, err := openLocal(rawURL, u.Path, offset)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		n, err := copyBody(w, f)
		return n, err
	}
	var written int64
	err = t.retry(ctx, func() (bool, error) {
		n, err := t.downloadOnce(ctx, rawURL, w, offset+written)
		written += n
		return n > 0, err
	})
	return written, err
}

// downloadOnce makes one request for rawURL from offset on.
func (t *Transport) downloadOnce(ctx context.Context, rawURL string, w io.Writer, offset int64) (int64, error) {
	resp, err := t.get(ctx, rawURL, offset)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		if offset > 0 {
			// The server ignored Range: skip what we already have.
			if n, err := io.CopyN(io.Discard, resp.Body, offset); err != nil {
				if err == io.EOF {
					return 0, permanentError{fmt.Errorf("GET %s: %w: the resource has %d bytes, fewer than the %d already downloaded", rawURL, errBeyondEnd, n, offset)}
				}
				return 0, err
			}
		}
	case http.StatusPartialContent:
		start, err := contentRangeStart(resp.Header.Get("Content-Range"))
		if err != nil {
			return 0, permanentError{fmt.Errorf("GET %s: %v", rawURL, err)}
		}
		if start > offset {
			return 0, permanentError{fmt.Errorf("GET %s: server sent bytes from %d, asked for %d", rawURL, start, offset)}
		}
		if start < offset {
			if _, err := io.CopyN(io.Discard, resp.Body, offset-start); err != nil {
				return 0, err
			}
		}
	case http.StatusRequestedRangeNotSatisfiable:
		// "bytes */LENGTH": offset is at or beyond the end.
		if total, ok := contentRangeTotal(resp.Header.Get("Content-Range")); ok && total == offset {
			return 0, nil
		}
		return 0, permanentError{fmt.Errorf("GET %s: %w: range from byte %d not satisfiable (%s)", rawURL, errBeyondEnd, offset, resp.Header.Get("Content-Range"))}
	default:
		return 0, permanentError{fmt.Errorf("GET %s: unexpected %s", rawURL, resp.Status)}
	}
	return copyBody(w, resp.Body)
}

// writeError marks an error from the destination writer: not retried.
type writeError struct{ err error }

func (e writeError) Error() string { return e.err.Error() }
func (e writeError) Unwrap() error { return e.err }

// copyBody copies src to w; errors writing to w are returned unwrapped
// (and never retried), errors reading src as they are.
func copyBody(w io.Writer, src io.Reader) (int64, error) {
	buf := make([]byte, 64*1024)
	var n int64
	for {
		nr, rerr := src.Read(buf)
		if nr > 0 {
			nw, werr := w.Write(buf[:nr])
			n += int64(nw)
			if werr == nil && nw < nr {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				return n, permanentError{writeError{werr}}
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

func contentRangeStart(h string) (int64, error) {
	// "bytes START-END/TOTAL"
	spec, ok := strings.CutPrefix(h, "bytes ")
	if !ok {
		return 0, fmt.Errorf("206 response with Content-Range %q", h)
	}
	startStr, _, ok := strings.Cut(spec, "-")
	if !ok {
		return 0, fmt.Errorf("206 response with Content-Range %q", h)
	}
	start, err := strconv.ParseInt(strings.TrimSpace(startStr), 10, 64)
	if err != nil || start < 0 {
		return 0, fmt.Errorf("206 response with Content-Range %q", h)
	}
	return start, nil
}

func contentRangeTotal(h string) (int64, bool) {
	_, total, ok := strings.Cut(h, "/")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(total), 10, 64)
	return n, err == nil
}

// parse checks the scheme, and refuses http(s) when offline.
func (t *Transport) parse(rawURL string) (*url.URL, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("invalid URL %q: %v", rawURL, err)
	}
	switch u.Scheme {
	case "http", "https":
		if t.Offline {
			return nil, fmt.Errorf("%w to %s", ErrOffline, rawURL)
		}
		if u.Host == "" {
			return nil, fmt.Errorf("invalid URL %q: no host", rawURL)
		}
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return nil, fmt.Errorf("file URL %q names host %q: only local files are supported", rawURL, u.Host)
		}
		if u.Opaque != "" || !strings.HasPrefix(u.Path, "/") {
			return nil, fmt.Errorf("file URL %q: path must be absolute (file:///path)", rawURL)
		}
	default:
		return nil, fmt.Errorf("URL %q: unsupported scheme %q (want http, https or file)", rawURL, u.Scheme)
	}
	return u, nil
}

func openLocal(rawURL, path string, offset int64) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w (%v)", rawURL, ErrNotFound, err)
		}
		return nil, fmt.Errorf("%s: %w", rawURL, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", rawURL, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s: %s is not a regular file", rawURL, path)
	}
	if offset > fi.Size() {
		f.Close()
		return nil, fmt.Errorf("%s: %w: offset %d, the file has %d bytes", rawURL, errBeyondEnd, offset, fi.Size())
	}
	if offset > 0 {
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: %w", rawURL, err)
		}
	}
	return f, nil
}

// get sends one GET (from offset on when offset > 0) and classifies the
// status: it returns a response only for 200, 206 and 416, whose body
// aborts after StallTimeout without data.
func (t *Transport) get(ctx context.Context, rawURL string, offset int64) (*http.Response, error) {
	rctx, cancel := context.WithCancel(ctx)
	sb := &stallBody{url: rawURL, stall: t.stallTimeout(), cancel: cancel}
	sb.timer = time.AfterFunc(sb.stall, sb.fire)
	fail := func(err error) (*http.Response, error) {
		sb.timer.Stop()
		cancel()
		return nil, err
	}
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return fail(permanentError{fmt.Errorf("GET %s: %v", rawURL, err)})
	}
	req.Header.Set("User-Agent", UserAgent)
	// Byte ranges and digests refer to the stored bytes: no transparent
	// decompression.
	req.Header.Set("Accept-Encoding", "identity")
	if offset > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
	}
	resp, err := t.httpClient().Do(req)
	if err != nil {
		if sb.fired.Load() {
			return fail(fmt.Errorf("GET %s: no response for %s", rawURL, sb.stall))
		}
		return fail(fmt.Errorf("GET %s: %w", rawURL, unwrapURLError(err)))
	}
	switch code := resp.StatusCode; {
	case code == http.StatusOK || code == http.StatusPartialContent || code == http.StatusRequestedRangeNotSatisfiable:
		sb.timer.Stop()
		sb.body = resp.Body
		resp.Body = sb
		return resp, nil
	case code == http.StatusNotFound || code == http.StatusGone:
		drain(resp.Body)
		return fail(permanentError{fmt.Errorf("GET %s: %s: %w", rawURL, resp.Status, ErrNotFound)})
	case code >= 500 || code == http.StatusRequestTimeout || code == http.StatusTooManyRequests:
		drain(resp.Body)
		err := fmt.Errorf("GET %s: %s", rawURL, resp.Status)
		if s, perr := strconv.Atoi(resp.Header.Get("Retry-After")); perr == nil && s > 0 {
			return fail(retryAfterError{err, time.Duration(s) * time.Second})
		}
		return fail(err)
	default:
		drain(resp.Body)
		return fail(permanentError{fmt.Errorf("GET %s: %s", rawURL, resp.Status)})
	}
}

// unwrapURLError drops net/http's `Get "URL": ` prefix, which would repeat
// the URL our messages already name.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func drain(body io.ReadCloser) {
	io.CopyN(io.Discard, body, 64*1024)
	body.Close()
}

// stallBody aborts the request when a Read waits longer than stall, and
// names the URL in read errors.
type stallBody struct {
	body   io.ReadCloser
	url    string
	stall  time.Duration
	timer  *time.Timer
	cancel context.CancelFunc
	fired  atomic.Bool
	closed atomic.Bool
}

func (b *stallBody) fire() {
	b.fired.Store(true)
	b.cancel()
}

func (b *stallBody) Read(p []byte) (int, error) {
	// Only time spent waiting inside Read counts: a slow consumer is not a
	// stalled server.
	if !b.fired.Load() {
		b.timer.Reset(b.stall)
	}
	n, err := b.body.Read(p)
	b.timer.Stop()
	switch {
	case err == nil || err == io.EOF:
		return n, err
	case b.fired.Load():
		return n, fmt.Errorf("reading %s: no data for %s", b.url, b.stall)
	case b.closed.Load():
		return n, err
	}
	return n, fmt.Errorf("reading %s: %w", b.url, err)
}

func (b *stallBody) Close() error {
	b.closed.Store(true)
	b.timer.Stop()
	err := b.body.Close()
	b.cancel()
	return err
}
