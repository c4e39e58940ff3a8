package apt

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// digestFixtureLock is a fixed lock without boot packages. Its digest was
// computed before boot packages existed and is hard-coded below: adding
// them must not change the bytes or the digest of such a lock.
func digestFixtureLock() *Lock {
	const deb, sec = "http://deb.debian.org/debian", "http://security.debian.org/debian-security"
	return &Lock{
		Sources: []LockSource{
			{URI: sec, Suite: "trixie-security", ReleaseSHA256: "9d2f07aa00000000000000000000000000000000000000000000000000000002"},
			{URI: deb, Suite: "trixie", ReleaseSHA256: "3b0e4c1c00000000000000000000000000000000000000000000000000000001"},
		},
		Packages: []LockedPackage{
			{Name: "libc6", Version: "2.41-12", Architecture: "amd64", SHA256: "a6e1f2c800000000000000000000000000000000000000000000000000000004", Size: 2850580, Filename: "pool/updates/main/g/glibc/libc6_2.41-12_amd64.deb", URI: sec, Suite: "trixie-security"},
			{Name: "base-files", Version: "13.8+deb13u1", Architecture: "amd64", SHA256: "0c5b4e9d00000000000000000000000000000000000000000000000000000003", Size: 73248, Filename: "pool/main/b/base-files/base-files_13.8+deb13u1_amd64.deb", URI: deb, Suite: "trixie"},
		},
	}
}

const (
	// Digests of digestFixtureLock() and of
	// LockFromPackages(lockTestPackages(t)), computed with the code
	// before boot packages were added.
	digestFixtureWant    = "7c8eecb272080da07a61c6cca835f097dfbf26bcd5105fb16cddcf12181e4134"
	lockTestPackagesWant = "65165b2421dd1a0e3752f48618c3120fc49164a337c9132909b25349b5d8c2b1"
)

func TestLockDigestUnchangedWithoutBootPackages(t *testing.T) {
	l := digestFixtureLock()
	if d := l.Digest(); d != digestFixtureWant {
		t.Errorf("digest of a lock without boot packages changed: %s, want %s", d, digestFixtureWant)
	}
	b, err := l.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("boot-package")) {
		t.Errorf("a lock without boot packages mentions them:\n%s", b)
	}
	if hexOf(string(b)) != digestFixtureWant {
		t.Error("Marshal is not the canonical form")
	}
	// An empty, non-nil slice is the same as none.
	l.BootPackages = []LockedPackage{}
	if d := l.Digest(); d != digestFixtureWant {
		t.Errorf("empty BootPackages changed the digest: %s", d)
	}
	if d := LockFromPackages(lockTestPackages(t)).Digest(); d != lockTestPackagesWant {
		t.Errorf("digest of LockFromPackages(lockTestPackages) changed: %s, want %s", d, lockTestPackagesWant)
	}
	// Parsing the file gives a lock without boot packages and the same digest.
	back, err := ParseLock(bytes.NewReader(b), "old.lock")
	if err != nil {
		t.Fatal(err)
	}
	if back.BootPackages != nil || back.Digest() != digestFixtureWant {
		t.Errorf("parsed: %+v, digest %s", back.BootPackages, back.Digest())
	}
}

// bootFixtureLock is digestFixtureLock with two boot packages, one from a
// source that contributed no installed package.
func bootFixtureLock() *Lock {
	l := digestFixtureLock()
	const upd = "http://deb.debian.org/debian-backports"
	l.Sources = append(l.Sources, LockSource{URI: upd, Suite: "trixie-backports", ReleaseSHA256: "5555555500000000000000000000000000000000000000000000000000000005"})
	l.BootPackages = []LockedPackage{
		{Name: "systemd-boot-efi", Version: "257.8-1~deb13u2", Architecture: "amd64", SHA256: "5f1d83e200000000000000000000000000000000000000000000000000000006", Size: 134320, Filename: "pool/main/s/systemd/systemd-boot-efi_257.8-1~deb13u2_amd64.deb", URI: "http://deb.debian.org/debian", Suite: "trixie"},
		{Name: "refind", Version: "0.14.2-2~bpo13+1", Architecture: "amd64", SHA256: "7a7a7a7a00000000000000000000000000000000000000000000000000000007", Size: 900000, Filename: "pool/main/r/refind/refind_0.14.2-2~bpo13+1_amd64.deb", URI: upd, Suite: "trixie-backports"},
	}
	return l
}

func TestLockBootPackagesRoundTrip(t *testing.T) {
	l := bootFixtureLock()
	b, err := l.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	const comment = "\n# boot-package NAME VERSION ARCH SOURCE-ID SIZE SHA256 FILENAME (files for the disk image, not installed)\n"
	ci := strings.Index(s, comment)
	if ci < 0 || ci < strings.LastIndex(s, "\npackage ") {
		t.Fatalf("boot-package block missing or not after the packages:\n%s", s)
	}
	// Sorted by name: refind before systemd-boot-efi, each referring to
	// its source's ID.
	wantTail := comment +
		"boot-package refind 0.14.2-2~bpo13+1 amd64 trixie-backports 900000 7a7a7a7a00000000000000000000000000000000000000000000000000000007 pool/main/r/refind/refind_0.14.2-2~bpo13+1_amd64.deb\n" +
		"boot-package systemd-boot-efi 257.8-1~deb13u2 amd64 trixie 134320 5f1d83e200000000000000000000000000000000000000000000000000000006 pool/main/s/systemd/systemd-boot-efi_257.8-1~deb13u2_amd64.deb\n"
	if !strings.HasSuffix(s, wantTail) {
		t.Errorf("lock file:\n%s\nwant it to end with:\n%s", s, wantTail)
	}
	if !strings.Contains(s, "source trixie-backports http://deb.debian.org/debian-backports trixie-backports ") {
		t.Errorf("the boot-only source is not written:\n%s", s)
	}
	back, err := ParseLock(strings.NewReader(s), "boot.lock")
	if err != nil {
		t.Fatalf("%v\n%s", err, s)
	}
	l.Sort()
	if !reflect.DeepEqual(back, l) {
		t.Fatalf("round trip differs:\n%+v\n%+v", back, l)
	}
	b2, err := back.Marshal()
	if err != nil || !bytes.Equal(b, b2) {
		t.Fatalf("second serialization differs (%v):\n%s\n%s", err, b, b2)
	}
	// Boot packages are part of the digest, in any order.
	if l.Digest() == digestFixtureWant || l.Digest() != hexOf(s) {
		t.Errorf("digest %s", l.Digest())
	}
	back.BootPackages[0], back.BootPackages[1] = back.BootPackages[1], back.BootPackages[0]
	if back.Digest() != l.Digest() {
		t.Error("digest depends on the order of boot packages")
	}
	back.BootPackages[0].Size++
	if back.Digest() == l.Digest() {
		t.Error("digest did not change with a boot package")
	}
	// A boot package may also be installed; the .deb is fetched once.
	both := bootFixtureLock()
	both.BootPackages = append(both.BootPackages, both.Packages[0])
	if _, err := both.Marshal(); err != nil {
		t.Errorf("installed and boot package at once: %v", err)
	}
	items := both.CacheItems()
	if len(items) != 4 {
		t.Errorf("CacheItems: %d items, want 4 (2 packages, 2 more boot packages): %+v", len(items), items)
	}
}

func TestLockCacheItemsIncludeBootPackages(t *testing.T) {
	l := bootFixtureLock()
	l.Sort()
	items := l.CacheItems()
	if len(items) != len(l.Packages)+len(l.BootPackages) {
		t.Fatalf("%d items: %+v", len(items), items)
	}
	last := items[len(items)-1]
	want := l.BootPackages[len(l.BootPackages)-1]
	if last.SHA256 != want.SHA256 || last.Size != want.Size || last.URL != want.URL() || last.Name != want.ID() {
		t.Errorf("item %+v, want boot package %+v", last, want)
	}
	if got := l.BootPackages[0].URL(); got != "http://deb.debian.org/debian-backports/pool/main/r/refind/refind_0.14.2-2~bpo13+1_amd64.deb" {
		t.Errorf("URL %s", got)
	}
	if n := len(digestFixtureLock().CacheItems()); n != 2 {
		t.Errorf("lock without boot packages: %d items", n)
	}
}

func TestLockValidateBootPackages(t *testing.T) {
	l := bootFixtureLock()
	if err := l.Validate(); err != nil {
		t.Fatal(err)
	}
	l.BootPackages[0].URI = "http://elsewhere.example/debian"
	l.BootPackages = append(l.BootPackages, l.BootPackages[1])
	l.BootPackages[1].SHA256 = "XYZ"
	err := l.Validate()
	if err == nil {
		t.Fatal("accepted")
	}
	for _, w := range []string{
		"boot package systemd-boot-efi:amd64=257.8-1~deb13u2 comes from http://elsewhere.example/debian trixie, which is not among the lock's sources",
		"boot package refind:amd64 is listed twice",
		"boot package refind:amd64=0.14.2-2~bpo13+1: SHA-256 \"XYZ\"",
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error\n  %v\ndoes not contain\n  %s", err, w)
		}
	}
	if _, err := l.Marshal(); err == nil {
		t.Error("Marshal accepted an invalid lock")
	}
	l = bootFixtureLock()
	l.BootPackages[0].URI, l.BootPackages[0].Suite = "", ""
	if err := l.Validate(); err == nil || !strings.Contains(err.Error(), "boot package systemd-boot-efi:amd64=257.8-1~deb13u2 has no source") {
		t.Errorf("no source: %v", err)
	}
}

func TestAddBootPackages(t *testing.T) {
	pkgs := lockTestPackages(t)
	l := LockFromPackages(pkgs)
	nsrc := len(l.Sources)
	main := pkgs[1].Index // trixie
	bpo := &Index{Source: &Source{URI: "http://deb.debian.org/debian", Suite: "trixie-backports"}, Component: "main", Architecture: "amd64", ReleaseSHA256: hexOf("bpo InRelease")}
	boot := []*Package{
		{Name: "systemd-boot-efi", Version: mustVersion(t, "257.8-1"), Architecture: "amd64", Index: main, Size: 100, SHA256: hexOf("sbe"), Filename: "pool/main/s/systemd/systemd-boot-efi_257.8-1_amd64.deb"},
		{Name: "refind", Version: mustVersion(t, "0.14.2-2"), Architecture: "amd64", Index: bpo, Size: 200, SHA256: hexOf("refind"), Filename: "pool/main/r/refind/refind_0.14.2-2_amd64.deb"},
		nil,
	}
	boot = append(boot, boot[0]) // given twice, listed once
	l.AddBootPackages(boot)
	if len(l.Packages) != len(pkgs) {
		t.Errorf("AddBootPackages changed Packages: %d", len(l.Packages))
	}
	if len(l.BootPackages) != 2 || l.BootPackages[0].Name != "refind" || l.BootPackages[1].Name != "systemd-boot-efi" {
		t.Fatalf("boot packages %+v", l.BootPackages)
	}
	if len(l.Sources) != nsrc+1 {
		t.Fatalf("sources %+v: the backports source, which only has a boot package, is missing", l.Sources)
	}
	if err := l.Validate(); err != nil {
		t.Fatal(err)
	}
	if l.BootPackages[0].URI != bpo.Source.URI || l.BootPackages[0].Suite != "trixie-backports" {
		t.Errorf("refind %+v", l.BootPackages[0])
	}
}

func TestParseLockBootPackageErrors(t *testing.T) {
	sha := strings.Repeat("a", 64)
	header := "lock-format 1\nsource trixie http://deb.debian.org/debian trixie " + sha + "\n"
	line := func(rec, name, arch, src string) string {
		return fmt.Sprintf("%s %s 1.0-1 %s %s 100 %s pool/main/%s.deb\n", rec, name, arch, src, sha, name)
	}
	cases := []struct {
		name, input string
		want        []string
	}{
		{"missing field", header + "boot-package refind 1.0-1 amd64 trixie 100 " + sha + "\n", []string{"bad.lock:3: boot-package record has 7 fields, want 8: boot-package NAME VERSION ARCH SOURCE-ID SIZE SHA256 FILENAME"}},
		{"extra field", header + strings.TrimSuffix(line("boot-package", "refind", "amd64", "trixie"), "\n") + " extra\n", []string{"bad.lock:3: boot-package record has 9 fields, want 8"}},
		{"unknown source", header + line("boot-package", "refind", "amd64", "sid"), []string{"bad.lock:3: boot package refind:amd64=1.0-1 refers to source \"sid\", which no source record defines"}},
		{"duplicate", header + line("boot-package", "refind", "amd64", "trixie") + "# c\n" + line("boot-package", "refind", "amd64", "trixie"), []string{"bad.lock:5: boot package refind:amd64 is already listed on line 3"}},
		{"bad size", header + "boot-package refind 1.0-1 amd64 trixie 1x " + sha + " pool/r.deb\n", []string{"bad.lock:3: boot package refind:amd64=1.0-1: size \"1x\" is not a number"}},
		{"bad sha", header + "boot-package refind 1.0-1 amd64 trixie 1 deadbeef pool/r.deb\n", []string{"bad.lock:3: boot package refind:amd64=1.0-1: SHA-256 \"deadbeef\""}},
		{"bad filename", header + "boot-package refind 1.0-1 amd64 trixie 1 " + sha + " /etc/x.deb\n", []string{"bad.lock:3:", "not a clean path"}},
		{"unknown record names boot-package", header + "boot-pkg refind\n", []string{"bad.lock:3: unknown record \"boot-pkg\" (want source, package or boot-package)"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l, err := ParseLock(strings.NewReader(c.input), "bad.lock")
			if err == nil {
				t.Fatalf("accepted:\n%s\n%+v", c.input, l)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n  %v\ndoes not contain\n  %s", err, w)
				}
			}
		})
	}
	// The same name as a package and as a boot package is fine, and
	// records may come in any order.
	in := line("boot-package", "refind", "amd64", "trixie") + header + line("package", "refind", "amd64", "trixie")
	in = strings.Replace(in, "lock-format 1\n", "", 1)
	in = "lock-format 1\n" + in
	l, err := ParseLock(strings.NewReader(in), "ok.lock")
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Packages) != 1 || len(l.BootPackages) != 1 || l.BootPackages[0].Suite != "trixie" || l.BootPackages[0].URI != "http://deb.debian.org/debian" {
		t.Errorf("%+v", l)
	}
}
