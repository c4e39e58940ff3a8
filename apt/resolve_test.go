package apt_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apt-ostree/apt-ostree-factory/apt"
	"github.com/apt-ostree/apt-ostree-factory/apt/apttest"
)

// bootUniverse publishes two signed archives: the fixture's "stable"
// (priority 500) with hello, and "stable-backports" pinned to 990. Both
// have refind (depending on packages no archive has) and
// systemd-boot-efi; stable has two versions of an arch:all package.
func bootUniverse(t *testing.T) (f *fixture, sources []*apt.Source) {
	t.Helper()
	missingDeps := map[string]string{"Depends": "not-in-any-archive (>= 3), efibootmgr-missing", "Recommends": "also-missing"}
	f = newFixture(t, func(r *apttest.Repo) {
		for _, d := range []apttest.Deb{
			{Package: "refind", Version: "0.14.2-1", Fields: missingDeps, Scripts: map[string]string{"postinst": "#!/bin/sh\nrefind-install\n"}, Files: map[string]string{"usr/share/refind/refind/drivers_x64/ext4_x64.efi": "ext4 driver 0.14"}},
			{Package: "systemd-boot-efi", Version: "257-1", Files: map[string]string{"usr/lib/systemd/boot/efi/systemd-bootx64.efi": "sd-boot 257"}},
			{Package: "boot-theme", Version: "1.0", Architecture: "all"},
			{Package: "boot-theme", Version: "2.0", Architecture: "all"},
		} {
			_, err := r.AddDeb("main", d)
			must(t, err)
		}
	})
	archive, _, _ := testKeys(t)
	bpo := apttest.NewRepo(filepath.Join(t.TempDir(), "backports"), archive)
	bpo.Suite, bpo.Codename = "stable-backports", "apttest-backports"
	for _, d := range []apttest.Deb{
		{Package: "refind", Version: "0.13-1", Fields: missingDeps, Files: map[string]string{"usr/share/refind/refind/drivers_x64/ext4_x64.efi": "ext4 driver 0.13"}},
		{Package: "systemd-boot-efi", Version: "258-1", Files: map[string]string{"usr/lib/systemd/boot/efi/systemd-bootx64.efi": "sd-boot 258"}},
	} {
		_, err := bpo.AddDeb("main", d)
		must(t, err)
	}
	must(t, bpo.Publish())
	backports := bpo.Source([]string{f.keyring})
	backports.Priority = 990
	return f, []*apt.Source{f.source(), backports}
}

func bootIDs(ps []apt.LockedPackage) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.ID()+" "+p.Suite)
	}
	return out
}

func TestResolveBootPackages(t *testing.T) {
	f, sources := bootUniverse(t)
	ctx := context.Background()
	resolve := func(boot ...string) (*apt.Lock, *apt.Solution, error) {
		return apt.Resolve(ctx, apt.ResolveOptions{
			Sources:  sources,
			Request:  apt.Request{Architecture: "amd64", Packages: []string{"hello"}, BootPackages: boot},
			CacheDir: f.cache,
			Opener:   f.opener,
			Now:      time.Now(),
		})
	}

	lock, sol, err := resolve("refind", "systemd-boot-efi", "boot-theme")
	must(t, err)
	// Highest pin priority first (backports at 990 beats a higher version
	// at 500), then the highest version; arch:all is accepted. The missing
	// dependencies of refind do not matter.
	want := []string{
		"boot-theme:all=2.0 stable",
		"refind:amd64=0.13-1 stable-backports",
		"systemd-boot-efi:amd64=258-1 stable-backports",
	}
	if got := bootIDs(lock.BootPackages); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("boot packages\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Not installed: the installed set is what the request asks for.
	if got := bootIDs(lock.Packages); len(got) != 1 || got[0] != "hello:amd64=1.0-1 stable" {
		t.Errorf("installed packages %v, want only hello", got)
	}
	for _, p := range sol.Packages {
		if p.Name != "hello" {
			t.Errorf("solution installs %s", p.ID())
		}
	}
	if len(sol.BootPackages) != 3 || sol.BootPackages[0].Name != "refind" || sol.BootPackages[2].Name != "boot-theme" {
		t.Errorf("Solution.BootPackages %v (want request order)", sol.BootPackages)
	}
	// The backports source contributed only boot packages and is listed.
	if len(lock.Sources) != 2 {
		t.Fatalf("sources %+v", lock.Sources)
	}
	for i, s := range lock.Sources {
		if s.Suite != "stable" && s.Suite != "stable-backports" || len(s.ReleaseSHA256) != 64 {
			t.Errorf("source %d: %+v", i, s)
		}
	}

	// The lock is valid, survives a round trip, and fetching its cache
	// items downloads the boot packages' .debs.
	b, err := lock.Marshal()
	must(t, err)
	if !strings.Contains(string(b), "\nboot-package refind 0.13-1 amd64 stable-backports ") {
		t.Errorf("lock file:\n%s", b)
	}
	back, err := apt.ParseLock(strings.NewReader(string(b)), "boot.lock")
	must(t, err)
	if back.Digest() != lock.Digest() || len(back.BootPackages) != 3 {
		t.Errorf("round trip: %+v", back)
	}
	cache := apt.DebCache(f.cache)
	must(t, cache.Fetch(ctx, lock.CacheItems(), f.opener, nil))
	for _, p := range lock.BootPackages {
		if _, err := os.Stat(cache.Path(p.SHA256)); err != nil {
			t.Errorf("boot package %s not fetched: %v", p.ID(), err)
		}
	}

	// name=version and name/suite choose as for installed packages; a
	// source that then contributes nothing is not listed.
	lock, _, err = resolve("systemd-boot-efi=257-1", "refind/stable")
	must(t, err)
	want = []string{"refind:amd64=0.14.2-1 stable", "systemd-boot-efi:amd64=257-1 stable"}
	if got := bootIDs(lock.BootPackages); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("pinned boot packages %v, want %v", got, want)
	}
	if len(lock.Sources) != 1 || lock.Sources[0].Suite != "stable" {
		t.Errorf("sources %+v", lock.Sources)
	}

	// No boot packages: the lock is exactly the one without the feature.
	plain, _, err := resolve()
	must(t, err)
	if plain.BootPackages != nil || strings.Contains(string(mustMarshal(t, plain)), "boot-package") {
		t.Errorf("lock without boot packages: %+v", plain)
	}

	// A package no source has is an error naming it and the sources.
	_, _, err = resolve("refind", "nosuch-loader")
	wantErr := "boot package nosuch-loader is not available from " + sources[0].String() + ", " + sources[1].String()
	if err == nil || !strings.Contains(err.Error(), wantErr) {
		t.Errorf("missing boot package: %v, want %q", err, wantErr)
	}
	_, _, err = resolve("refind=9.9")
	if err == nil || !strings.Contains(err.Error(), "version 9.9 of refind is not available (have 0.14.2-1 (stable), 0.13-1 (stable-backports))") {
		t.Errorf("missing version: %v", err)
	}
}

func mustMarshal(t *testing.T, l *apt.Lock) []byte {
	t.Helper()
	b, err := l.Marshal()
	must(t, err)
	return b
}
