package apttest

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"sync"

	"github.com/apt-ostree/apt-ostree-factory/apt"
)

// FileOpener is an apt.Opener for file:// URLs only, recording what was
// opened so tests can tell whether something was (re)downloaded. Missing
// files are reported as apt.ErrNotFound, as the real Transport does.
type FileOpener struct {
	mu     sync.Mutex
	opened []string
}

// Open implements apt.Opener.
func (o *FileOpener) Open(ctx context.Context, rawURL string) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "file" {
		return nil, fmt.Errorf("%s: apttest.FileOpener opens only file:// URLs", rawURL)
	}
	o.mu.Lock()
	o.opened = append(o.opened, rawURL)
	o.mu.Unlock()
	f, err := os.Open(u.Path)
	if err != nil {
		if os.IsNotExist(err) || isNotDir(err) {
			return nil, fmt.Errorf("%s: %w", rawURL, apt.ErrNotFound)
		}
		return nil, fmt.Errorf("%s: %w", rawURL, err)
	}
	return f, nil
}

// isNotDir catches "open a/file/x: not a directory", a missing file too.
func isNotDir(err error) bool {
	pe, ok := err.(*fs.PathError)
	return ok && pe.Err != nil && pe.Err.Error() == "not a directory"
}

// Opened lists the URLs opened so far (found or not), in order.
func (o *FileOpener) Opened() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.opened...)
}

// Reset forgets the recorded URLs.
func (o *FileOpener) Reset() {
	o.mu.Lock()
	o.opened = nil
	o.mu.Unlock()
}

// Offline is an apt.Opener that refuses everything, standing in for a
// transport in offline mode: whatever a test gets must come from a cache.
type Offline struct{}

// Open implements apt.Opener.
func (Offline) Open(_ context.Context, rawURL string) (io.ReadCloser, error) {
	return nil, fmt.Errorf("%s: %w", rawURL, apt.ErrOffline)
}
