package apt

import (
	"errors"
	"strings"
	"testing"
)

func bootIDs(ps []*Package) string {
	var ids []string
	for _, p := range ps {
		ids = append(ids, p.ID())
	}
	return strings.Join(ids, " ")
}

func TestBootCandidates(t *testing.T) {
	stable := &Source{URI: "http://deb.example.org/debian", Suite: "stable"}
	bpo := &Source{URI: "http://deb.example.org/debian", Suite: "stable-backports", Priority: 100}
	pinned := &Source{URI: "http://pinned.example.org/debian", Suite: "pinned", Priority: 900}
	evil := &Source{URI: "http://evil.example.org/debian", Suite: "evil", Priority: -1}
	u := append(uni(t, stable, `
Package: refind
Version: 0.14.2-1
Depends: nowhere (>= 3), efibootmgr
Conflicts: hello

Package: systemd-boot-efi
Version: 257-1

Package: arm-only
Architecture: arm64

Package: theme
Architecture: all
Version: 1.0

Package: hello
`), uni(t, bpo, `
Package: systemd-boot-efi
Version: 258-1

Package: refind
Version: 0.15-1
`)...)
	u = append(u, uni(t, pinned, "Package: theme\nArchitecture: all\nVersion: 0.9")...)
	u = append(u, uni(t, evil, "Package: blocked\nVersion: 9")...)
	req := Request{Architecture: "amd64", ForeignArchitectures: []string{"arm64"}, Packages: []string{"hello"}, Excludes: []string{"refind"}}

	pick := func(boot ...string) ([]*Package, error) {
		r := req
		r.BootPackages = boot
		return BootCandidates(u, nil, r)
	}
	got, err := pick("refind", "systemd-boot-efi", "theme", " ", "refind", "arm-only:arm64")
	if err != nil {
		t.Fatal(err)
	}
	// Priority 500 beats the newer backports version; a 900 pin beats a
	// newer version; dependencies, conflicts and excludes do not matter;
	// a name given twice is listed once.
	if want := "refind:amd64=0.14.2-1 systemd-boot-efi:amd64=257-1 theme:all=0.9 arm-only:arm64=1"; bootIDs(got) != want {
		t.Errorf("got %s\nwant %s", bootIDs(got), want)
	}
	got, err = pick("systemd-boot-efi/stable-backports", "refind=0.15-1")
	if err != nil || bootIDs(got) != "systemd-boot-efi:amd64=258-1 refind:amd64=0.15-1" {
		t.Errorf("pinned: %s, %v", bootIDs(got), err)
	}
	if got, err := BootCandidates(u, nil, Request{Architecture: "amd64"}); got != nil || err != nil {
		t.Errorf("no boot packages: %v, %v", got, err)
	}

	for _, c := range []struct {
		boot []string
		want string
	}{
		{[]string{"refind"}, ""},
		{[]string{"nosuch"}, "cannot resolve request: boot package nosuch is not available from http://deb.example.org/debian stable, http://deb.example.org/debian stable-backports, http://pinned.example.org/debian pinned, http://evil.example.org/debian evil"},
		{[]string{"arm-only"}, "boot package arm-only is not available for amd64 (only for arm64) from "},
		{[]string{"refind:i386"}, "boot package refind:i386: architecture i386 is not configured"},
		{[]string{"blocked"}, "boot package blocked has no candidate (every version is pinned below 0)"},
		{[]string{"refind=1.0"}, "boot package refind=1.0: version 1.0 of refind is not available (have 0.14.2-1 (stable), 0.15-1 (stable-backports))"},
		{[]string{"refind", "refind=0.15-1"}, "boot package refind is requested twice, as 0.14.2-1 (stable) and 0.15-1 (stable-backports)"},
		{[]string{"Bad Name"}, "boot bad package"},
	} {
		_, err := pick(c.boot...)
		if c.want == "" {
			if err != nil {
				t.Errorf("%v: %v", c.boot, err)
			}
			continue
		}
		var se *SolveError
		if err == nil || !errors.As(err, &se) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want %q", c.boot, err, c.want)
		}
	}
	// Sources given name the archives in the message, also ones without
	// packages.
	empty := &Source{URI: "http://empty.example.org/debian", Suite: "void"}
	_, err = BootCandidates(u, []*Source{stable, empty}, Request{Architecture: "amd64", BootPackages: []string{"nosuch"}})
	if err == nil || !strings.HasSuffix(err.Error(), "boot package nosuch is not available from http://deb.example.org/debian stable, http://empty.example.org/debian void") {
		t.Errorf("given sources: %v", err)
	}
	if _, err := BootCandidates(u, nil, Request{BootPackages: []string{"refind"}}); err == nil {
		t.Error("no architecture accepted")
	}
	// Solve ignores boot packages.
	sol := solve(t, u, Request{Packages: []string{"hello"}, BootPackages: []string{"refind", "nosuch"}})
	wantNames(t, sol, "hello")
}
