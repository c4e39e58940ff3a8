package builder

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/apt-ostree/apt-ostree-factory/apt"
	"github.com/apt-ostree/apt-ostree-factory/internal/testenv"
)

// liveResolved resolves a request against the live archive and fetches it.
func liveResolved(t *testing.T, suite string, req apt.Request) (*apt.Cache, *apt.Lock) {
	t.Helper()
	ctx := context.Background()
	src := &apt.Source{URI: testenv.DebianMirror(t), Suite: suite, Components: []string{"main"}, Architectures: []string{"amd64"}, SignedBy: []string{archiveKeyring}}
	if req.Architecture == "" {
		req.Architecture = "amd64"
	}
	lock, _, err := apt.Resolve(ctx, apt.ResolveOptions{Sources: []*apt.Source{src}, Request: req, CacheDir: testCacheDir(t, ""), Opener: &apt.Transport{}})
	if err != nil {
		t.Fatal(err)
	}
	cache := &apt.Cache{Dir: testCacheDir(t, "debs")}
	if err := cache.Fetch(ctx, lock.CacheItems(), &apt.Transport{}, nil); err != nil {
		t.Fatal(err)
	}
	return cache, lock
}

// TestLiveConfigure configures a real minbase tree: the maintainer scripts
// run in the sandbox and the dpkg database ends with every package
// installed.
func TestLiveConfigure(t *testing.T) {
	needNetwork(t)
	for _, suite := range []string{"trixie"} {
		t.Run(suite, func(t *testing.T) {
			ctx := context.Background()
			cache, lock := liveResolved(t, suite, apt.Request{Variant: "minbase"})
			repo := newRepo(t)
			start := time.Now()
			trees, _, err := UnpackAllCached(ctx, repo, cache, lock.Packages, 0)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("unpacked %d packages in %s", len(trees), time.Since(start))
			m := NewMerger(nil, MergeOptions{Architecture: "amd64"})
			for _, tr := range trees {
				if err := m.Merge(tr); err != nil {
					t.Fatal(err)
				}
			}
			if err := m.WriteDpkgDatabase(trees); err != nil {
				t.Fatal(err)
			}
			var log bytes.Buffer
			res, err := Configure(ctx, repo, m.Root(), trees, ConfigureOptions{
				Hostname: "aoftest", SourceDateEpoch: 1700000000, Log: &log,
				Steps: []Step{{Name: "check", Script: "test \"$(hostname)\" = aoftest; dpkg-query -W -f='${db:Status-Abbrev}\\n' | sort | uniq -c"}},
			})
			if testing.Verbose() || err != nil {
				os.Stderr.Write(log.Bytes())
			}
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("configured in %s: %d files reused, %d read", res.Duration, res.Reused, res.Read)
			if !strings.Contains(log.String(), "ii ") {
				t.Errorf("no installed packages in the log")
			}
		})
	}
}
