package apt_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apt-ostree/apt-ostree-factory/apt"
	"github.com/apt-ostree/apt-ostree-factory/apt/apttest"
)

// fetchIndexes verifies the fixture's Release and fetches its indexes for
// amd64 through opener.
func (f *fixture) fetchIndexes(t *testing.T, opener apt.Opener) ([]*apt.IndexFile, *apt.Release, error) {
	t.Helper()
	rel, err := f.fetch(t)
	if err != nil {
		t.Fatal(err)
	}
	files, err := apt.FetchIndexes(context.Background(), opener, f.source(), rel, "amd64", f.cache)
	return files, rel, err
}

func readIndex(t *testing.T, f *apt.IndexFile) (string, error) {
	t.Helper()
	rc, err := f.Open()
	if err != nil {
		return "", err
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	return string(data), err
}

func published(t *testing.T, f *fixture, rel string) string {
	t.Helper()
	data, err := os.ReadFile(f.repo.DistPath(rel))
	must(t, err)
	return string(data)
}

// cacheEntries lists the index cache, temporary files included.
func cacheEntries(t *testing.T, cache string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(cache, "indexes"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	must(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestFetchIndexesPrefersGzip(t *testing.T) {
	f := newFixture(t, nil)
	files, rel, err := f.fetchIndexes(t, f.opener)
	must(t, err)
	if len(files) != 1 {
		t.Fatalf("%d index files, want 1", len(files))
	}
	ix := files[0]
	if ix.Path != "main/binary-amd64/Packages.gz" || !strings.HasSuffix(ix.URL, "/dists/stable/main/binary-amd64/Packages.gz") {
		t.Errorf("picked %s from %s, want Packages.gz", ix.Path, ix.URL)
	}
	if ix.Index.Component != "main" || ix.Index.Architecture != "amd64" || ix.Index.ReleaseSHA256 != rel.SHA256 || ix.Index.Source.Suite != "stable" {
		t.Errorf("Index %+v", ix.Index)
	}
	if ix.CachePath != filepath.Join(f.cache, "indexes", ix.SHA256) {
		t.Errorf("CachePath %s", ix.CachePath)
	}
	got, err := readIndex(t, ix)
	must(t, err)
	if want := published(t, f, "main/binary-amd64/Packages"); got != want || !strings.Contains(got, "Package: hello\n") {
		t.Errorf("content:\n%s\nwant:\n%s", got, want)
	}
}

func TestFetchIndexesCompressions(t *testing.T) {
	for _, ext := range []string{".xz", ".gz", ""} {
		t.Run("Packages"+ext, func(t *testing.T) {
			f := newFixture(t, func(r *apttest.Repo) { r.Compressions = []string{ext} })
			files, _, err := f.fetchIndexes(t, f.opener)
			must(t, err)
			if len(files) != 1 || files[0].Path != "main/binary-amd64/Packages"+ext {
				t.Fatalf("files %+v", files)
			}
			got, err := readIndex(t, files[0])
			must(t, err)
			if !strings.Contains(got, "Package: hello\n") || !strings.Contains(got, "Filename: pool/main/h/hello/hello_1.0-1_amd64.deb\n") {
				t.Errorf("content:\n%s", got)
			}
		})
	}
}

// A second resolve uses the cache without touching the opener: it works
// with an opener that refuses everything.
func TestFetchIndexesCachedOffline(t *testing.T) {
	f := newFixture(t, nil)
	first, rel, err := f.fetchIndexes(t, f.opener)
	must(t, err)
	files, err := apt.FetchIndexes(context.Background(), apttest.Offline{}, f.source(), rel, "amd64", f.cache)
	must(t, err)
	if len(files) != 1 || files[0].CachePath != first[0].CachePath {
		t.Fatalf("files %+v", files)
	}
	if _, err := readIndex(t, files[0]); err != nil {
		t.Fatal(err)
	}
	// Without the cache, offline fails and says so.
	_, err = apt.FetchIndexes(context.Background(), apttest.Offline{}, f.source(), rel, "amd64", t.TempDir())
	if !errors.Is(err, apt.ErrOffline) || !strings.Contains(err.Error(), "Packages.gz") {
		t.Errorf("offline with empty cache: %v", err)
	}
}

func TestFetchIndexesChecksumMismatch(t *testing.T) {
	for _, tc := range []struct {
		name   string
		breakf func(f *fixture) error
		want   []string
	}{
		{"flipped bit", func(f *fixture) error { return f.repo.Corrupt("main/binary-amd64/Packages.gz") }, []string{"SHA-256 mismatch", "expected "}},
		{"longer", func(f *fixture) error {
			p := f.repo.DistPath("main/binary-amd64/Packages.gz")
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(p, append(data, "more"...), 0o644)
		}, []string{"larger than"}},
		{"shorter", func(f *fixture) error {
			p := f.repo.DistPath("main/binary-amd64/Packages.gz")
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(p, data[:len(data)-1], 0o644)
		}, []string{"bytes, expected"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			must(t, tc.breakf(f))
			_, rel, err := f.fetchIndexes(t, f.opener)
			var ce *apt.ChecksumError
			if !errors.As(err, &ce) {
				t.Fatalf("error %v, want a ChecksumError", err)
			}
			want, _ := rel.File("main/binary-amd64/Packages.gz")
			for _, s := range append(tc.want, f.source().String(), "/dists/stable/main/binary-amd64/Packages.gz", want.SHA256, "nothing cached") {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
			if got := cacheEntries(t, f.cache); len(got) != 0 {
				t.Errorf("cache holds %v after a refused download", got)
			}
		})
	}
}

func TestFetchIndexesByHash(t *testing.T) {
	f := newFixture(t, func(r *apttest.Repo) { r.AcquireByHash = true })
	files, rel, err := f.fetchIndexes(t, f.opener)
	must(t, err)
	if !rel.AcquireByHash {
		t.Error("Acquire-By-Hash not parsed")
	}
	if want := "/main/binary-amd64/by-hash/SHA256/" + files[0].SHA256; !strings.HasSuffix(files[0].URL, want) {
		t.Errorf("URL %s, want by-hash", files[0].URL)
	}

	// A mirror without the by-hash copy: fall back to the plain name.
	g := newFixture(t, func(r *apttest.Repo) { r.AcquireByHash = true })
	must(t, os.RemoveAll(g.repo.DistPath("main/binary-amd64/by-hash")))
	files, _, err = g.fetchIndexes(t, g.opener)
	must(t, err)
	if !strings.HasSuffix(files[0].URL, "/main/binary-amd64/Packages.gz") {
		t.Errorf("URL %s, want the plain name", files[0].URL)
	}
}

// apt's rule for binary-all: read it only when the Release lists "all" and
// does not say "No-Support-for-Architecture-all: Packages".
func TestFetchIndexesArchAll(t *testing.T) {
	for _, tc := range []struct {
		name   string
		adjust func(r *apttest.Repo)
		want   []string
	}{
		{"all listed", nil, []string{"amd64", "all"}},
		{"No-Support-for-Architecture-all", func(r *apttest.Repo) {
			r.Fields = []string{"No-Support-for-Architecture-all: Packages"}
		}, []string{"amd64"}},
		{"all not in Architectures", func(r *apttest.Repo) {
			r.Architectures = []string{"amd64"}
		}, []string{"amd64"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, func(r *apttest.Repo) {
				_, err := r.AddDeb("main", apttest.Deb{Package: "data", Version: "1", Architecture: "all"})
				must(t, err)
				if tc.adjust != nil {
					tc.adjust(r)
				}
			})
			files, _, err := f.fetchIndexes(t, f.opener)
			must(t, err)
			var archs []string
			for _, ix := range files {
				archs = append(archs, ix.Index.Architecture)
			}
			if !slices.Equal(archs, tc.want) {
				t.Errorf("indexes for %v, want %v", archs, tc.want)
			}
		})
	}
}

func TestFetchIndexesMissing(t *testing.T) {
	f := newFixture(t, nil)
	rel, err := f.fetch(t)
	must(t, err)
	for _, tc := range []struct {
		comp, arch, want string
	}{
		{"contrib", "amd64", `no component "contrib"`},
		{"main", "arm64", `does not support architecture "arm64"`},
	} {
		src := f.source()
		src.Components = []string{tc.comp}
		_, err := apt.FetchIndexes(context.Background(), f.opener, src, rel, tc.arch, f.cache)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), src.String()) {
			t.Errorf("%s/%s: error %v, want %q and the source", tc.comp, tc.arch, err, tc.want)
		}
	}
	// A source restricted to other architectures gives nothing, quietly.
	src := f.source()
	src.Architectures = []string{"arm64"}
	files, err := apt.FetchIndexes(context.Background(), f.opener, src, rel, "amd64", f.cache)
	if err != nil || len(files) != 0 {
		t.Errorf("arch-restricted source: %v, %v", files, err)
	}
}

// A cached index altered on disk is caught when read, and replaced by the
// next FetchIndexes.
func TestCachedIndexCorruptedOnDisk(t *testing.T) {
	f := newFixture(t, nil)
	files, rel, err := f.fetchIndexes(t, f.opener)
	must(t, err)
	p := files[0].CachePath
	data, err := os.ReadFile(p)
	must(t, err)
	data[len(data)-3] ^= 0xff // inside the gzip trailer: decompression itself may not notice
	must(t, os.WriteFile(p, data, 0o644))
	if _, err := readIndex(t, files[0]); err == nil {
		t.Fatal("altered cache file read without error")
	} else if !strings.Contains(err.Error(), p) {
		t.Errorf("error %v does not name the cache file", err)
	}
	f.opener.Reset()
	files, err = apt.FetchIndexes(context.Background(), f.opener, f.source(), rel, "amd64", f.cache)
	must(t, err)
	if len(f.opener.Opened()) != 1 {
		t.Errorf("opened %v, want one re-download", f.opener.Opened())
	}
	if _, err := readIndex(t, files[0]); err != nil {
		t.Error(err)
	}
}

func TestLoadSources(t *testing.T) {
	archive, _, _ := testKeys(t)
	f := newFixture(t, func(r *apttest.Repo) {
		for _, d := range []apttest.Deb{
			{Package: "libfoo1", Version: "2.0-1", Fields: map[string]string{"Multi-Arch": "same", "Depends": "libc6 (>= 2.34)"}},
			{Package: "foo", Version: "2.0-1", Fields: map[string]string{"Depends": "libfoo1 (= 2.0-1)"}},
		} {
			_, err := r.AddDeb("main", d)
			must(t, err)
		}
	})
	// A second archive, signed by the same key, with its own package.
	dir := t.TempDir()
	updates := apttest.NewRepo(dir, archive)
	updates.Suite, updates.Codename = "stable-updates", "apttest-updates"
	stanza, err := updates.AddDeb("main", apttest.Deb{Package: "hello", Version: "1.0-2"})
	must(t, err)
	must(t, updates.Publish())

	sources := []*apt.Source{f.source(), updates.Source([]string{f.keyring})}
	pkgs, indexes, err := apt.LoadSources(context.Background(), f.opener, sources, "amd64", f.cache, time.Now())
	must(t, err)
	if len(indexes) != 2 || indexes[0].Source != sources[0] || indexes[1].Source != sources[1] {
		t.Fatalf("indexes %+v", indexes)
	}
	var ids []string
	for _, p := range pkgs {
		ids = append(ids, p.ID())
	}
	want := []string{"hello:amd64=1.0-1", "libfoo1:amd64=2.0-1", "foo:amd64=2.0-1", "hello:amd64=1.0-2"}
	if !slices.Equal(ids, want) {
		t.Errorf("packages %v, want %v (source order, then file order)", ids, want)
	}
	last := pkgs[len(pkgs)-1]
	if last.Index != indexes[1] || !strings.Contains(stanza, "SHA256: "+last.SHA256) || last.Size == 0 {
		t.Errorf("last package %+v", last)
	}
	// The .deb the stanza describes is in the pool with that digest.
	if got := sha256File(t, filepath.Join(dir, last.Filename)); got != last.SHA256 {
		t.Errorf("pool file digest %s, stanza says %s", got, last.SHA256)
	}

	// One bad source fails the whole load, naming it.
	must(t, updates.Tamper("InRelease", "Suite: stable-updates", "Suite: stable-updatez"))
	_, _, err = apt.LoadSources(context.Background(), f.opener, sources, "amd64", f.cache, time.Now())
	if !errors.Is(err, apt.ErrBadSignature) || !strings.Contains(err.Error(), sources[1].String()) {
		t.Errorf("tampered second source: %v", err)
	}
}

// TestLoadSourcesLiveDebian resolves the metadata of Debian trixie main
// from the live archive and reports the time taken cold and with warm
// caches. It needs the network: set AOF_NETWORK_TESTS=1.
func TestLoadSourcesLiveDebian(t *testing.T) {
	if os.Getenv("AOF_NETWORK_TESTS") != "1" {
		t.Skip("set AOF_NETWORK_TESTS=1 to fetch from deb.debian.org")
	}
	const keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
	if _, err := os.Stat(keyring); err != nil {
		t.Skipf("no %s", keyring)
	}
	mirror := os.Getenv("AOF_DEBIAN_MIRROR")
	if mirror == "" {
		mirror = "http://deb.debian.org/debian"
	}
	cache := t.TempDir()
	src := &apt.Source{URI: mirror, Suite: "trixie", Components: []string{"main"}, SignedBy: []string{keyring}}
	tr := &apt.Transport{}
	for _, round := range []string{"cold", "warm"} {
		start := time.Now()
		pkgs, indexes, err := apt.LoadSources(context.Background(), tr, []*apt.Source{src}, "amd64", cache, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if len(indexes) != 1 || len(pkgs) < 50000 {
			t.Errorf("%d indexes, %d packages", len(indexes), len(pkgs))
		}
		t.Logf("%s: %d packages from %d index(es) in %s", round, len(pkgs), len(indexes), time.Since(start))
	}
}
