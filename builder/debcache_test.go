package builder

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/apt-ostree/apt-ostree-factory/apt"
	"github.com/apt-ostree/apt-ostree-factory/apt/apttest"
	"github.com/apt-ostree/apt-ostree-factory/ostree"
)

func TestUnpackCachedReadsTheDebOnce(t *testing.T) {
	ctx := context.Background()
	repo := newRepo(t)
	cache := &apt.Cache{Dir: filepath.Join(t.TempDir(), "debs")}
	d := richDeb
	d.Entries = append(append([]ent{}, d.Entries...), ent{Name: "./dev/"}, ent{Name: "./dev/console", Type: '3', Mode: 0o600})
	lp := putInCache(t, cache, "rich", "1:2.0-1", "amd64", d.build(t))

	first, fromCache, err := UnpackCached(ctx, repo, cache, lp)
	if err != nil {
		t.Fatal(err)
	}
	if fromCache {
		t.Error("first unpack reported as from the cache")
	}
	if c, err := CachedCommit(repo, lp.SHA256); err != nil || c.IsZero() {
		t.Fatalf("no cache ref: %v", err)
	}
	firstTree, firstMeta, _, err := repo.WriteTree(ctx, first.Root, ostree.WriteTreeOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// Prove the second call does not read the .deb: it is gone.
	if err := os.Remove(cache.Path(lp.SHA256)); err != nil {
		t.Fatal(err)
	}
	second, fromCache, err := UnpackCached(ctx, repo, cache, lp)
	if err != nil {
		t.Fatal(err)
	}
	if !fromCache {
		t.Error("second unpack not from the cache")
	}
	secondTree, secondMeta, _, err := repo.WriteTree(ctx, second.Root, ostree.WriteTreeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if firstTree != secondTree || firstMeta != secondMeta {
		t.Errorf("tree from the cache %s/%s differs from the unpacked one %s/%s", secondTree, secondMeta, firstTree, firstMeta)
	}
	for _, field := range []string{"Package", "Version", "Architecture", "SHA256", "Size", "Files", "Skipped", "Control", "Conffiles", "Warnings"} {
		a := reflect.ValueOf(first).Elem().FieldByName(field).Interface()
		b := reflect.ValueOf(second).Elem().FieldByName(field).Interface()
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%s: unpacked %v, from the cache %v", field, a, b)
		}
	}
	if second.Field("Multi-Arch") != "foreign" {
		t.Errorf("control fields not available from the cache")
	}
	_, f := second.Root.Lookup("usr/bin/ping")
	if f == nil || f.Checksum.IsZero() || f.Open != nil || f.Data != nil || len(f.Header.Xattrs) != 1 {
		t.Errorf("cached MemFile %+v", f)
	}

	// Merging a cached tree and committing it works without the .deb.
	m := NewMerger(nil, MergeOptions{})
	if err := m.Merge(second); err != nil {
		t.Fatal(err)
	}
	commitTree(t, repo, m.Root(), "system")
	ostreeFsck(t, repo)
}

func TestUnpackCachedIsDeterministic(t *testing.T) {
	ctx := context.Background()
	deb, err := apttest.Deb{Package: "hello", Version: "2.10-3", Files: map[string]string{"usr/bin/hello": "hi\n"}}.Build()
	if err != nil {
		t.Fatal(err)
	}
	var commits []ostree.Checksum
	for range 2 {
		repo := newRepo(t)
		cache := &apt.Cache{Dir: t.TempDir()}
		lp := putInCache(t, cache, "hello", "2.10-3", "amd64", deb)
		if _, _, err := UnpackCached(ctx, repo, cache, lp); err != nil {
			t.Fatal(err)
		}
		c, err := CachedCommit(repo, lp.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		commits = append(commits, c)
	}
	if commits[0] != commits[1] {
		t.Errorf("the same .deb gave cache commits %s and %s", commits[0], commits[1])
	}
}

func TestUnpackCachedRecoversFromDamage(t *testing.T) {
	ctx := context.Background()
	repo := newRepo(t)
	cache := &apt.Cache{Dir: t.TempDir()}
	lp := putInCache(t, cache, "rich", "1:2.0-1", "amd64", richDeb.build(t))
	first, _, err := UnpackCached(ctx, repo, cache, lp)
	if err != nil {
		t.Fatal(err)
	}
	// Lose a content object, as a careless prune would.
	_, f := first.Root.Lookup("usr/bin/wall")
	h := f.Checksum.String()
	if err := os.Remove(filepath.Join(repo.Path(), "objects", h[:2], h[2:]+".filez")); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCached(repo, lp.SHA256); err == nil || errors.Is(err, ErrNotCached) {
		t.Fatalf("LoadCached of a damaged entry: %v", err)
	}
	again, fromCache, err := UnpackCached(ctx, repo, cache, lp)
	if err != nil {
		t.Fatal(err)
	}
	if fromCache || len(again.Warnings) != 1 || !strings.Contains(again.Warnings[0], "unpacked again") {
		t.Errorf("fromCache %v, warnings %q", fromCache, again.Warnings)
	}
	if _, fromCache, err := UnpackCached(ctx, repo, cache, lp); err != nil || !fromCache {
		t.Errorf("after repair: fromCache %v, %v", fromCache, err)
	}
}

func TestUnpackCachedChecksIdentity(t *testing.T) {
	ctx := context.Background()
	repo := newRepo(t)
	cache := &apt.Cache{Dir: t.TempDir()}
	lp := putInCache(t, cache, "rich", "1:2.0-1", "amd64", richDeb.build(t))
	lp.Version = "1:2.0-2"
	if _, _, err := UnpackCached(ctx, repo, cache, lp); err == nil || !strings.Contains(err.Error(), "rich:amd64=1:2.0-1") {
		t.Errorf("a lock entry naming another version: %v", err)
	}
	// Nothing was recorded for a package that failed.
	if _, err := CachedCommit(repo, lp.SHA256); !errors.Is(err, ErrNotCached) {
		t.Errorf("cache ref after a failure: %v", err)
	}
}

func TestUnpackCachedRefusesCorruptDeb(t *testing.T) {
	ctx := context.Background()
	repo := newRepo(t)
	cache := &apt.Cache{Dir: t.TempDir()}
	deb := richDeb.build(t)
	lp := putInCache(t, cache, "rich", "1:2.0-1", "amd64", deb)
	// Change a byte of file content in the (uncompressed) data.tar: the
	// tar still reads, and only the cache's check at the end notices.
	i := bytes.Index(deb, []byte("data data"))
	if i < 0 {
		t.Fatal("content not found")
	}
	deb[i] = 'D'
	if err := os.WriteFile(cache.Path(lp.SHA256), deb, 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err := UnpackCached(ctx, repo, cache, lp)
	if err == nil {
		t.Fatal("a corrupted .deb was unpacked")
	}
	if !strings.Contains(err.Error(), "rich") {
		t.Errorf("error does not name the package: %v", err)
	}
	t.Log(err)
	if _, err := CachedCommit(repo, lp.SHA256); !errors.Is(err, ErrNotCached) {
		t.Errorf("cache ref after a failure: %v", err)
	}
}

func TestLoadCachedMissing(t *testing.T) {
	repo := newRepo(t)
	if _, err := LoadCached(repo, strings.Repeat("ab", 32)); !errors.Is(err, ErrNotCached) {
		t.Errorf("got %v", err)
	}
	if _, err := LoadCached(repo, "../../etc"); err == nil {
		t.Error("a bad SHA-256 was accepted")
	}
	_, _, err := UnpackCached(context.Background(), repo, &apt.Cache{Dir: t.TempDir()}, apt.LockedPackage{Name: "gone", Version: "1", Architecture: "amd64", SHA256: strings.Repeat("cd", 32)})
	if err == nil || !strings.Contains(err.Error(), "gone:amd64=1") {
		t.Errorf("missing .deb: %v", err)
	}
}

func TestUnpackAllCached(t *testing.T) {
	ctx := context.Background()
	repo := newRepo(t)
	cache := &apt.Cache{Dir: t.TempDir()}
	var pkgs []apt.LockedPackage
	for _, name := range []string{"one", "two", "three", "four", "five"} {
		deb, err := apttest.Deb{Package: name, Version: "1", Files: map[string]string{"usr/share/" + name + "/f": name}}.Build()
		if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, putInCache(t, cache, name, "1", "amd64", deb))
	}
	for round, wantCached := range []int{0, 5} {
		trees, cached, err := UnpackAllCached(ctx, repo, cache, pkgs, 3)
		if err != nil {
			t.Fatal(err)
		}
		if cached != wantCached {
			t.Errorf("round %d: %d from the cache", round+1, cached)
		}
		for i, tr := range trees {
			if tr.Package != pkgs[i].Name {
				t.Errorf("tree %d is %s, want %s", i, tr.Package, pkgs[i].Name)
			}
		}
	}
	missing := append(pkgs, apt.LockedPackage{Name: "gone", Version: "1", Architecture: "amd64", SHA256: strings.Repeat("ef", 32)})
	if _, _, err := UnpackAllCached(ctx, repo, cache, missing, 0); err == nil || !strings.Contains(err.Error(), "gone:amd64=1") {
		t.Errorf("a missing .deb: %v", err)
	}
}
