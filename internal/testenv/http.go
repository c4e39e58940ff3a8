package testenv

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// FileServer serves a directory (an OSTree repository) over HTTP on
// loopback, as a static web server would, and records the paths clients
// asked for.
type FileServer struct {
	*httptest.Server
	mu    sync.Mutex
	paths []string
}

// ServeDir starts a FileServer for dir, stopped when the test ends.
func ServeDir(tb testing.TB, dir string) *FileServer {
	tb.Helper()
	s := &FileServer{}
	files := http.FileServer(http.Dir(dir))
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.paths = append(s.paths, r.URL.Path)
		s.mu.Unlock()
		files.ServeHTTP(w, r)
	}))
	tb.Cleanup(s.Close)
	return s
}

// Requests returns the paths asked for since the last call.
func (s *FileServer) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.paths
	s.paths = nil
	return p
}
