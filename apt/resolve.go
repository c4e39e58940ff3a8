package apt

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/apt-ostree/apt-ostree-factory/internal/atomicfile"
)

// ResolveOptions is a whole resolution: which archives, which request.
type ResolveOptions struct {
	Sources []*Source
	Request Request
	// CacheDir holds verified indexes (CacheDir/indexes) and .debs
	// (CacheDir/debs).
	CacheDir string
	Opener   Opener
	Now      time.Time // zero means time.Now(); checks Valid-Until and Date
}

// Resolve verifies the sources' metadata, loads their indexes and solves the
// request, returning the lock that pins the result and the solution (with
// the reason each package was chosen). The request's BootPackages are
// picked by BootCandidates (no dependencies, not installed) and pinned in
// Lock.BootPackages and Solution.BootPackages; their sources are in
// Lock.Sources.
func Resolve(ctx context.Context, opts ResolveOptions) (*Lock, *Solution, error) {
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	universe, _, err := LoadSources(ctx, opts.Opener, opts.Sources, opts.Request.Architecture, opts.CacheDir, now)
	if err != nil {
		return nil, nil, err
	}
	sol, err := Solve(universe, opts.Request)
	if err != nil {
		return nil, nil, err
	}
	boot, err := BootCandidates(universe, opts.Sources, opts.Request)
	if err != nil {
		return nil, nil, err
	}
	sol.BootPackages = boot
	lock := LockFromPackages(sol.Packages)
	lock.AddBootPackages(boot)
	if err := lock.Validate(); err != nil {
		return nil, nil, fmt.Errorf("resolved set cannot be locked: %w", err)
	}
	lock.Sort()
	return lock, sol, nil
}

// DebCache returns the .deb cache under a cache directory.
func DebCache(cacheDir string) *Cache {
	return &Cache{Dir: filepath.Join(cacheDir, "debs")}
}

// DefaultCacheDir is $XDG_CACHE_HOME/apt-ostree-factory (or ~/.cache/...).
func DefaultCacheDir() (string, error) {
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no cache directory: %w (set --cache-dir)", err)
	}
	return filepath.Join(d, "apt-ostree-factory"), nil
}

// IsLockFile reports whether data looks like a lock file rather than a
// recipe: its first record is the lock-format line.
func IsLockFile(data []byte) bool {
	for _, line := range bytes.Split(data, []byte("\n")) {
		l := strings.TrimSpace(string(line))
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		return strings.HasPrefix(l, "lock-format ")
	}
	return false
}

// WriteFile writes the lock to path atomically (temp file, fsync, rename),
// so an interrupted write leaves the previous lock intact.
func (l *Lock) WriteFile(path string) error {
	b, err := l.Marshal()
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write lock file %s: %w", path, err)
	}
	return nil
}

// ReadLockFile parses a lock file.
func ReadLockFile(path string) (*Lock, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseLock(f, path)
}
