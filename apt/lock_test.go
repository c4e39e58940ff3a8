package apt

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"pault.ag/go/debian/version"
)

func hexOf(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func mustVersion(t *testing.T, s string) version.Version {
	t.Helper()
	v, err := version.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// lockTestPackages is a small solver result from two archives.
func lockTestPackages(t *testing.T) []*Package {
	main := &Index{Source: &Source{URI: "http://deb.debian.org/debian", Suite: "trixie"}, Component: "main", Architecture: "amd64", ReleaseSHA256: hexOf("trixie InRelease")}
	mainAll := &Index{Source: main.Source, Component: "main", Architecture: "all", ReleaseSHA256: main.ReleaseSHA256}
	sec := &Index{Source: &Source{URI: "http://security.debian.org/debian-security/", Suite: "trixie-security"}, Component: "main", Architecture: "amd64", ReleaseSHA256: hexOf("security InRelease")}
	pkg := func(name, ver, arch string, idx *Index, size int64) *Package {
		return &Package{
			Name: name, Version: mustVersion(t, ver), Architecture: arch, Index: idx, Size: size,
			SHA256:   hexOf(name + ver + arch),
			Filename: fmt.Sprintf("pool/main/%c/%s/%s_%s_%s.deb", name[0], name, name, strings.ReplaceAll(ver, ":", "%3a"), arch),
		}
	}
	return []*Package{
		pkg("libc6", "2.41-12", "amd64", sec, 2850580),
		pkg("base-files", "13.8+deb13u1", "amd64", main, 73248),
		pkg("adduser", "3.152", "all", mainAll, 196000),
		pkg("libc6", "2.41-12", "i386", sec, 2900000),
		pkg("bash", "5.2.37-2+b5", "amd64", main, 1500000),
		pkg("perl-base", "1:5.40.1-6", "amd64", main, 1700000),
	}
}

func TestLockRoundTrip(t *testing.T) {
	pkgs := lockTestPackages(t)
	l := LockFromPackages(pkgs)
	if len(l.Sources) != 2 || len(l.Packages) != 6 {
		t.Fatalf("%d sources, %d packages", len(l.Sources), len(l.Packages))
	}
	b, err := l.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseLock(bytes.NewReader(b), "test.lock")
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if !reflect.DeepEqual(back, l) {
		t.Fatalf("round trip differs:\n%+v\n%+v", back, l)
	}
	b2, _ := back.Marshal()
	if !bytes.Equal(b, b2) {
		t.Fatalf("second serialization differs:\n%s\n%s", b, b2)
	}
	var buf bytes.Buffer
	n, err := back.WriteTo(&buf)
	if err != nil || n != int64(len(b)) || !bytes.Equal(buf.Bytes(), b) {
		t.Fatalf("WriteTo: %d, %v", n, err)
	}
	if l.Digest() != back.Digest() || l.Digest() != hexOf(string(b)) {
		t.Error("digest is not the SHA-256 of the serialization")
	}
	for i, p := range back.Packages {
		if i > 0 {
			prev := back.Packages[i-1]
			if prev.Name > p.Name || prev.Name == p.Name && prev.Architecture >= p.Architecture {
				t.Errorf("not sorted: %s before %s", prev.ID(), p.ID())
			}
		}
	}
	// The lock names what the solver chose.
	for _, p := range pkgs {
		found := false
		for _, lp := range back.Packages {
			if lp.Name == p.Name && lp.Architecture == p.Architecture {
				found = true
				if lp.Version != p.Version.String() || lp.SHA256 != p.SHA256 || lp.Size != p.Size || lp.Filename != p.Filename || lp.URI != p.Index.Source.URI || lp.Suite != p.Index.Source.Suite {
					t.Errorf("%s: locked as %+v", p.ID(), lp)
				}
			}
		}
		if !found {
			t.Errorf("%s missing", p.ID())
		}
	}
}

func TestLockFormat(t *testing.T) {
	l := &Lock{
		Sources: []LockSource{{URI: "http://deb.debian.org/debian", Suite: "trixie", ReleaseSHA256: strings.Repeat("ab", 32)}},
		Packages: []LockedPackage{{
			Name: "base-files", Version: "13.8+deb13u1", Architecture: "amd64", Size: 73248,
			SHA256: strings.Repeat("0c", 32), Filename: "pool/main/b/base-files/base-files_13.8+deb13u1_amd64.deb",
			URI: "http://deb.debian.org/debian", Suite: "trixie",
		}},
	}
	b, err := l.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want := `# apt-ostree-factory lock file: every package pinned by SHA-256.
lock-format 1

# source ID URI SUITE INRELEASE-SHA256
source trixie http://deb.debian.org/debian trixie abababababababababababababababababababababababababababababababab

# package NAME VERSION ARCH SOURCE-ID SIZE SHA256 FILENAME
package base-files 13.8+deb13u1 amd64 trixie 73248 0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c pool/main/b/base-files/base-files_13.8+deb13u1_amd64.deb
`
	if string(b) != want {
		t.Errorf("got:\n%s\nwant:\n%s", b, want)
	}
	if got := l.Packages[0].URL(); got != "http://deb.debian.org/debian/pool/main/b/base-files/base-files_13.8+deb13u1_amd64.deb" {
		t.Errorf("URL %s", got)
	}
}

func TestLockOnePackageChangeIsOneLineDiff(t *testing.T) {
	pkgs := lockTestPackages(t)
	before, _ := LockFromPackages(pkgs).Marshal()
	pkgs[4].Version = mustVersion(t, "5.2.37-3")
	pkgs[4].SHA256 = hexOf("new bash")
	after, _ := LockFromPackages(pkgs).Marshal()
	a, b := strings.Split(string(before), "\n"), strings.Split(string(after), "\n")
	if len(a) != len(b) {
		t.Fatalf("line count changed: %d -> %d", len(a), len(b))
	}
	var changed []string
	for i := range a {
		if a[i] != b[i] {
			changed = append(changed, b[i])
		}
	}
	if len(changed) != 1 || !strings.HasPrefix(changed[0], "package bash 5.2.37-3 amd64 ") {
		t.Errorf("changed lines: %q", changed)
	}
}

func TestLockDigest(t *testing.T) {
	pkgs := lockTestPackages(t)
	d1 := LockFromPackages(pkgs).Digest()
	rev := make([]*Package, len(pkgs))
	for i, p := range pkgs {
		rev[len(pkgs)-1-i] = p
	}
	l := LockFromPackages(rev)
	// Unsorted slices give the same digest.
	l.Packages[0], l.Packages[1] = l.Packages[1], l.Packages[0]
	if d := l.Digest(); d != d1 {
		t.Errorf("digest depends on order: %s vs %s", d, d1)
	}
	l.Packages[0].Size++
	if l.Digest() == d1 {
		t.Error("digest did not change with a package")
	}
	if !isSHA256(d1) {
		t.Errorf("digest %q", d1)
	}
	// Comments and spacing in a parsed file do not count.
	b, _ := LockFromPackages(pkgs).Marshal()
	edited := strings.Replace(string(b), "lock-format 1\n", "lock-format 1\n# hand-written note\n\n", 1)
	edited = strings.Replace(edited, "package bash ", "package   bash ", 1)
	parsed, err := ParseLock(strings.NewReader(edited), "edited.lock")
	if err != nil {
		t.Fatal(err)
	}
	if parsed.Digest() != d1 {
		t.Error("comments changed the digest")
	}
}

func TestLockSourceIDs(t *testing.T) {
	sha := strings.Repeat("1", 64)
	l := &Lock{Sources: []LockSource{
		{URI: "http://deb.debian.org/debian", Suite: "trixie", ReleaseSHA256: sha},
		{URI: "https://vendor.example/apt", Suite: "trixie", ReleaseSHA256: sha},
		{URI: "https://vendor.example/apt2", Suite: "trixie", ReleaseSHA256: sha},
		{URI: "file:///srv/mirror", Suite: "trixie", ReleaseSHA256: sha},
		{URI: "http://deb.debian.org/debian", Suite: "trixie-updates", ReleaseSHA256: sha},
		{URI: "http://ppa.example/x", Suite: "stable/updates", ReleaseSHA256: sha},
	}}
	for _, s := range l.Sources {
		l.Packages = append(l.Packages, LockedPackage{Name: "p" + fmt.Sprint(len(l.Packages)), Version: "1", Architecture: "all", SHA256: sha, Size: 1, Filename: "p.deb", URI: s.URI, Suite: s.Suite})
	}
	b, err := l.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"source trixie@local file:///srv/mirror trixie ",
		"source trixie@deb.debian.org http://deb.debian.org/debian trixie ",
		"source trixie-updates http://deb.debian.org/debian trixie-updates ",
		"source stable_updates http://ppa.example/x stable/updates ",
		"source trixie@vendor.example https://vendor.example/apt trixie ",
		"source trixie@vendor.example-2 https://vendor.example/apt2 trixie ",
	} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("missing %q in\n%s", want, b)
		}
	}
	back, err := ParseLock(bytes.NewReader(b), "ids.lock")
	if err != nil {
		t.Fatal(err)
	}
	l.Sort()
	if !reflect.DeepEqual(back, l) {
		t.Errorf("round trip differs")
	}
}

func TestLockURL(t *testing.T) {
	for _, c := range []struct{ uri, file, want string }{
		{"http://deb.debian.org/debian", "pool/main/a/a.deb", "http://deb.debian.org/debian/pool/main/a/a.deb"},
		{"http://deb.debian.org/debian/", "pool/main/a/a.deb", "http://deb.debian.org/debian/pool/main/a/a.deb"},
		{"file:///srv/mirror", "pool/a.deb", "file:///srv/mirror/pool/a.deb"},
	} {
		if got := (LockedPackage{URI: c.uri, Filename: c.file}).URL(); got != c.want {
			t.Errorf("URL(%s, %s) = %s", c.uri, c.file, got)
		}
	}
}

func TestLockValidate(t *testing.T) {
	good := func() *Lock { return LockFromPackages(lockTestPackages(t)) }
	cases := []struct {
		name   string
		modify func(l *Lock)
		want   string
	}{
		{"no index", func(l *Lock) { l.Packages[0].URI, l.Packages[0].Suite = "", "" }, "has no source"},
		{"unknown source", func(l *Lock) { l.Packages[0].Suite = "sid" }, "not among the lock's sources"},
		{"bad sha", func(l *Lock) { l.Packages[0].SHA256 = "ABC" }, "not 64 lowercase hex"},
		{"space in filename", func(l *Lock) { l.Packages[0].Filename = "pool/a b.deb" }, "spaces"},
		{"absolute filename", func(l *Lock) { l.Packages[0].Filename = "/etc/passwd" }, "not a clean path"},
		{"dotdot filename", func(l *Lock) { l.Packages[0].Filename = "../x.deb" }, "not a clean path"},
		{"duplicate", func(l *Lock) { l.Packages = append(l.Packages, l.Packages[0]) }, "listed twice"},
		{"two digests", func(l *Lock) {
			s := l.Sources[0]
			s.ReleaseSHA256 = hexOf("other")
			l.Sources = append(l.Sources, s)
		}, "listed twice"},
		{"bad version", func(l *Lock) { l.Packages[0].Version = "" }, "empty version"},
		{"zero size", func(l *Lock) { l.Packages[0].Size = 0 }, "size 0"},
		{"bad name", func(l *Lock) { l.Packages[0].Name = "Bash" }, "invalid package name"},
		{"bad uri", func(l *Lock) { l.Sources[0].URI = "ftp://x" }, "scheme"},
	}
	if err := good().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		l := good()
		c.modify(l)
		_, err := l.Marshal()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.name, err, c.want)
		}
		if _, err := l.WriteTo(&bytes.Buffer{}); err == nil {
			t.Errorf("%s: WriteTo accepted it", c.name)
		}
	}
	// A package without an Index is reported, not a panic.
	pkgs := lockTestPackages(t)
	pkgs[0].Index = nil
	if _, err := LockFromPackages(pkgs).Marshal(); err == nil || !strings.Contains(err.Error(), "libc6:amd64") {
		t.Errorf("nil Index: %v", err)
	}
}

func TestParseLockErrors(t *testing.T) {
	sha := strings.Repeat("a", 64)
	header := "lock-format 1\nsource trixie http://deb.debian.org/debian trixie " + sha + "\n"
	pkgLine := func(name, arch, src string) string {
		return fmt.Sprintf("package %s 1.0-1 %s %s 100 %s pool/main/%s.deb\n", name, arch, src, sha, name)
	}
	cases := []struct {
		name, input string
		want        []string // substrings of the error, each with its file:line
	}{
		{"empty", "", []string{"bad.lock:1: no \"lock-format 1\" record"}},
		{"no header", "# x\n" + pkgLine("bash", "amd64", "trixie"), []string{"bad.lock:2: expected \"lock-format 1\""}},
		{"future format", "lock-format 2\n", []string{"bad.lock:1: unsupported lock format \"2\""}},
		{"bad sha", header + "package bash 5.2-1 amd64 trixie 100 deadbeef pool/b.deb\n", []string{"bad.lock:3: package bash:amd64=5.2-1: SHA-256 \"deadbeef\" is not 64 lowercase hex digits"}},
		{"uppercase sha", header + "package bash 5.2-1 amd64 trixie 100 " + strings.ToUpper(sha) + " pool/b.deb\n", []string{"bad.lock:3:", "lowercase hex"}},
		{"missing field", header + "package bash 5.2-1 amd64 trixie 100 " + sha + "\n", []string{"bad.lock:3: package record has 7 fields, want 8"}},
		{"bad size", header + "package bash 5.2-1 amd64 trixie 10x " + sha + " pool/b.deb\n", []string{"bad.lock:3: package bash:amd64=5.2-1: size \"10x\" is not a number"}},
		{"negative size", header + "package bash 5.2-1 amd64 trixie -1 " + sha + " pool/b.deb\n", []string{"bad.lock:3:", "size -1"}},
		{"bad version", header + "package bash 5.2:1 amd64 trixie 1 " + sha + " pool/b.deb\n", []string{"bad.lock:3:", "invalid version"}},
		{"duplicate package", header + pkgLine("bash", "amd64", "trixie") + "# c\n" + pkgLine("bash", "amd64", "trixie"), []string{"bad.lock:5: package bash:amd64 is already listed on line 3"}},
		{"same name other arch is fine, third is not", header + pkgLine("libc6", "amd64", "trixie") + pkgLine("libc6", "i386", "trixie") + pkgLine("libc6", "i386", "trixie"), []string{"bad.lock:5: package libc6:i386 is already listed on line 4"}},
		{"unknown source", header + pkgLine("bash", "amd64", "sid"), []string{"bad.lock:3: package bash:amd64=1.0-1 refers to source \"sid\", which no source record defines"}},
		{"source fields", "lock-format 1\nsource trixie http://x trixie\n", []string{"bad.lock:2: source record has 4 fields, want 5"}},
		{"source sha", "lock-format 1\nsource trixie http://x trixie 123\n", []string{"bad.lock:2: source trixie: InRelease SHA-256 \"123\""}},
		{"source scheme", "lock-format 1\nsource trixie ftp://x trixie " + sha + "\n", []string{"bad.lock:2: source trixie: URI \"ftp://x\": scheme must be http, https or file"}},
		{"duplicate source id", header + "source trixie http://other trixie " + sha + "\n", []string{"bad.lock:3: source ID trixie already defined on line 2"}},
		{"duplicate source", header + "source t2 http://deb.debian.org/debian trixie " + sha + "\n", []string{"bad.lock:3: source http://deb.debian.org/debian trixie is already listed on line 2"}},
		{"unknown record", header + "pakage bash\n", []string{"bad.lock:3: unknown record \"pakage\""}},
		{"format twice", header + "lock-format 1\n", []string{"bad.lock:3: lock-format given twice"}},
		{"several errors", header + "package bash 5.2-1 amd64 trixie 100 deadbeef pool/b.deb\n" + pkgLine("dash", "amd64", "nope"), []string{"bad.lock:3:", "bad.lock:4:"}},
		{"bad filename", header + "package bash 5.2-1 amd64 trixie 1 " + sha + " ../../etc/x.deb\n", []string{"bad.lock:3:", "not a clean path"}},
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
}

func TestParseLockAcceptsHandEdits(t *testing.T) {
	sha := strings.Repeat("b", 64)
	in := "\n# my lock\n  lock-format   1  \n" +
		"package zsh 5.9-8 amd64 mine 10 " + sha + " pool/z.deb\n" + // before its source, unsorted
		"package apt 3.0.3 amd64 mine 20 " + sha + " pool/a.deb\n" +
		"source mine https://apt.example/debian/ trixie " + sha + "\n"
	l, err := ParseLock(strings.NewReader(in), "hand.lock")
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Packages) != 2 || l.Packages[0].URI != "https://apt.example/debian/" || l.Packages[1].Suite != "trixie" {
		t.Fatalf("%+v", l)
	}
	if got := l.Packages[0].URL(); got != "https://apt.example/debian/pool/z.deb" {
		t.Errorf("URL %s", got)
	}
	b, err := l.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte("source trixie https://apt.example/debian/ trixie")) || bytes.Index(b, []byte("package apt")) > bytes.Index(b, []byte("package zsh")) {
		t.Errorf("not canonicalized:\n%s", b)
	}
}
