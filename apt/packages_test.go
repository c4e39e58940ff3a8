package apt

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"pault.ag/go/debian/dependency"
)

const sampleStanzas = `Package: libfoo1
Source: foo (1.2-3)
Version: 1:1.2-3+b1
Installed-Size: 120
Maintainer: Someone <someone@example.org>
Architecture: amd64
Multi-Arch: same
Pre-Depends: libc6 (>= 2.34)
Depends: libbar2 (>= 2.0) | libbaz, libc6:any,
 zlib1g (>= 1:1.2.0)
Recommends: foo-data
Suggests: foo-doc
Enhances: bar
Conflicts: libfoo0 (<< 1.0)
Breaks: oldfoo (<= 0.9)
Provides: libfoo (= 1:1.2-3+b1), foo-virtual
Replaces: libfoo0
Description: the foo library
 It does foo things.
 .
 Multi-line.
Section: libs
Priority: optional
Filename: pool/main/f/foo/libfoo1_1.2-3+b1_amd64.deb
Size: 4321
MD5sum: 00000000000000000000000000000000
SHA256: ABCDEF0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789

Package: base-files
Essential: yes
Protected: yes
Priority: required
Version: 12.4
Architecture: all
Multi-Arch: foreign
Filename: pool/main/b/base-files/base-files_12.4_all.deb
Size: 70000
SHA256: 1111111111111111111111111111111111111111111111111111111111111111
Section: admin
`

func TestParsePackages(t *testing.T) {
	idx := &Index{Source: &Source{URI: "http://deb.example.org/debian", Suite: "bookworm"}, Component: "main", Architecture: "amd64"}
	pkgs, err := ParsePackages(strings.NewReader(sampleStanzas), idx)
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) != 2 {
		t.Fatalf("got %d packages, want 2", len(pkgs))
	}
	p := pkgs[0]
	check := func(what, got, want string) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %q, want %q", what, got, want)
		}
	}
	check("Name", p.Name, "libfoo1")
	check("Version", p.Version.String(), "1:1.2-3+b1")
	check("Architecture", p.Architecture, "amd64")
	check("MultiArch", p.MultiArch, "same")
	check("Priority", p.Priority, "optional")
	check("Section", p.Section, "libs")
	check("SourcePackage", p.SourcePackage, "foo")
	check("Filename", p.Filename, "pool/main/f/foo/libfoo1_1.2-3+b1_amd64.deb")
	check("SHA256", p.SHA256, "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789")
	check("PreDepends", p.PreDepends.String(), "libc6 (>= 2.34)")
	check("Depends", p.Depends.String(), "libbar2 (>= 2.0) | libbaz, libc6:any, zlib1g (>= 1:1.2.0)")
	check("Recommends", p.Recommends.String(), "foo-data")
	check("Suggests", p.Suggests.String(), "foo-doc")
	check("Enhances", p.Enhances.String(), "bar")
	check("Conflicts", p.Conflicts.String(), "libfoo0 (<< 1.0)")
	check("Breaks", p.Breaks.String(), "oldfoo (<= 0.9)")
	check("Provides", p.Provides.String(), "libfoo (= 1:1.2-3+b1), foo-virtual")
	check("Replaces", p.Replaces.String(), "libfoo0")
	if p.Size != 4321 || p.InstalledSize != 120 {
		t.Errorf("Size, InstalledSize = %d, %d; want 4321, 120", p.Size, p.InstalledSize)
	}
	if p.Essential || p.Important {
		t.Errorf("libfoo1: Essential/Important set")
	}
	if p.Index != idx {
		t.Errorf("Index not set")
	}
	if len(p.Depends.Relations) != 3 || len(p.Depends.Relations[0].Possibilities) != 2 {
		t.Errorf("Depends structure: %+v", p.Depends)
	}
	if a := p.Depends.Relations[1].Possibilities[0].Arch; a == nil || a.CPU != "any" {
		t.Errorf("libc6:any lost its :any qualifier: %+v", a)
	}

	b := pkgs[1]
	check("Name", b.Name, "base-files")
	check("SourcePackage (defaults to Name)", b.SourcePackage, "base-files")
	if !b.Essential || !b.Important {
		t.Errorf("base-files: Essential=%v Important=%v, want both", b.Essential, b.Important)
	}
	check("MultiArch", b.MultiArch, "foreign")
}

func TestParsePackagesSharesIdenticalRelations(t *testing.T) {
	in := "Package: a\nVersion: 1\nArchitecture: all\nDepends: libc6 (>= 2.34)\n\nPackage: b\nVersion: 1\nArchitecture: all\nDepends: libc6 (>= 2.34)\n"
	pkgs, err := ParsePackages(strings.NewReader(in), nil)
	if err != nil {
		t.Fatal(err)
	}
	if pkgs[0].Depends.String() != pkgs[1].Depends.String() {
		t.Fatal("relations differ")
	}
}

func TestParsePackagesEdgeCases(t *testing.T) {
	// CRLF line endings, several blank lines, a trailing stanza without a
	// final newline, lower-case keys, a comment line.
	in := "\r\n\r\npackage: a\r\nversion: 1.0\r\narchitecture: amd64\r\n# comment\r\nmulti-arch: no\r\n\r\n\r\n\nPackage: b\nVersion: 2\nArchitecture: arm64\nDepends: a"
	pkgs, err := ParsePackages(strings.NewReader(in), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) != 2 || pkgs[0].Name != "a" || pkgs[1].Name != "b" || pkgs[0].MultiArch != "" || pkgs[1].Depends.String() != "a" {
		t.Fatalf("got %+v", pkgs)
	}
	if pkgs, err := ParsePackages(strings.NewReader(""), nil); err != nil || len(pkgs) != 0 {
		t.Fatalf("empty input: %v, %v", pkgs, err)
	}
	// A line longer than the reader's buffer.
	long := "Package: big\nVersion: 1\nArchitecture: all\nDescription: " + strings.Repeat("x", 1<<20) + "\nDepends: " + strings.Repeat("a, ", 100000) + "z\n"
	pkgs, err = ParsePackages(strings.NewReader(long), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(pkgs[0].Depends.Relations); got != 100001 {
		t.Fatalf("long Depends: %d relations", got)
	}
}

func TestParsePackagesErrors(t *testing.T) {
	idx := &Index{Source: &Source{URI: "http://deb.example.org/debian", Suite: "trixie"}, Component: "main", Architecture: "arm64"}
	tests := []struct {
		name, in string
		want     []string
	}{
		{"bad version", "Package: foo\nVersion: a:b:c\nArchitecture: all\n", []string{"http://deb.example.org/debian trixie main/binary-arm64 Packages", "stanza at line 1", "package foo", "bad Version"}},
		{"no version", "Package: foo\nArchitecture: all\n", []string{"package foo", "no Version"}},
		{"no package", "Version: 1\nArchitecture: all\n", []string{"no Package field"}},
		{"no arch", "Package: foo\nVersion: 1\n", []string{"no Architecture"}},
		{"bad depends", "Package: foo\nVersion: 1\nArchitecture: all\nDepends: bar (>= )\n", []string{"package foo", "bad Depends"}},
		{"bad depends op", "Package: foo\nVersion: 1\nArchitecture: all\nDepends: bar (~= 1)\n", []string{"package foo", "bad Depends"}},
		{"unterminated", "Package: foo\nVersion: 1\nArchitecture: all\nDepends: bar (>= 1\n", []string{"package foo", "bad Depends"}},
		{"substvar", "Package: foo\nVersion: 1\nArchitecture: all\nDepends: ${shlibs:Depends}\n", []string{"bad Depends", "substitution"}},
		{"bad size", "Package: foo\nVersion: 1\nArchitecture: all\nSize: 12k\n", []string{"bad Size"}},
		{"bad sha", "Package: foo\nVersion: 1\nArchitecture: all\nSHA256: 1234\n", []string{"bad SHA256"}},
		{"bad multiarch", "Package: foo\nVersion: 1\nArchitecture: all\nMulti-Arch: sometimes\n", []string{"Multi-Arch"}},
		{"duplicate", "Package: foo\nVersion: 1\nVersion: 2\nArchitecture: all\n", []string{"duplicate field Version"}},
		{"no colon", "Package: foo\nVersion 1\n", []string{"malformed line"}},
		{"continuation first", " foo\n", []string{"continuation line outside a stanza"}},
		{"second stanza", "Package: ok\nVersion: 1\nArchitecture: all\n\nPackage: bad\nVersion: 1\nArchitecture: all\nDepends: x (>>\n", []string{"stanza at line 5", "package bad"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParsePackages(strings.NewReader(tt.in), idx)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// realPackagesIndex returns the decompressed bytes of a full Debian main
// Packages index: $AOF_PACKAGES_FILE, or the largest *_main_binary-*_Packages*
// list in /var/lib/apt/lists. It skips the test when there is none.
func realPackagesIndex(tb testing.TB) []byte {
	tb.Helper()
	data, why := loadRealIndex()
	if data == nil {
		tb.Skip(why)
	}
	return data
}

// loadRealIndex loads the index for realPackagesIndex once; without one
// it returns nil and the reason.
func loadRealIndex() ([]byte, string) {
	realIndexOnce.Do(func() {
		path := os.Getenv("AOF_PACKAGES_FILE")
		if path == "" {
			matches, _ := filepath.Glob("/var/lib/apt/lists/*_main_binary-*_Packages*")
			sort.Slice(matches, func(i, j int) bool { return fileSize(matches[i]) > fileSize(matches[j]) })
			if len(matches) == 0 {
				realIndexErr = "no Packages list in /var/lib/apt/lists (set AOF_PACKAGES_FILE)"
				return
			}
			path = matches[0]
		}
		data, err := readCompressed(path)
		if err != nil {
			realIndexErr = err.Error()
			return
		}
		realIndex = data
	})
	return realIndex, realIndexErr
}

var (
	realIndexOnce sync.Once
	realIndex     []byte
	realIndexErr  string
)

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// readCompressed reads a possibly compressed file, decompressing .gz in
// Go and .lz4, .xz, .zst with the command-line tools.
func readCompressed(path string) ([]byte, error) {
	tool := map[string][]string{".lz4": {"lz4cat"}, ".xz": {"xz", "-dc"}, ".zst": {"zstd", "-dc"}}[filepath.Ext(path)]
	switch {
	case tool != nil:
		cmd := exec.Command(tool[0], append(tool[1:], path)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, &os.PathError{Op: tool[0], Path: path, Err: errorsJoin(err, stderr.String())}
		}
		return out, nil
	case filepath.Ext(path) == ".gz":
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, err
		}
		return io.ReadAll(zr)
	default:
		return os.ReadFile(path)
	}
}

type toolError struct {
	err    error
	stderr string
}

func (e *toolError) Error() string { return e.err.Error() + ": " + strings.TrimSpace(e.stderr) }

func errorsJoin(err error, stderr string) error { return &toolError{err, stderr} }

func TestParsePackagesRealIndex(t *testing.T) {
	data := realPackagesIndex(t)
	start := time.Now()
	pkgs, err := ParsePackages(bytes.NewReader(data), &Index{Component: "main", Architecture: "amd64"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("parsed %d stanzas (%.1f MB) in %v", len(pkgs), float64(len(data))/1e6, time.Since(start))
	if want := bytes.Count(data, []byte("\nPackage: ")) + 1; len(pkgs) != want {
		t.Errorf("parsed %d packages, the index has %d Package fields", len(pkgs), want)
	}
	// Every relation round-trips through pault.ag's parser output.
	var essential, noSHA int
	for _, p := range pkgs {
		if p.Essential {
			essential++
		}
		if p.SHA256 == "" || p.Filename == "" || p.Size == 0 {
			noSHA++
		}
		for _, d := range []dependency.Dependency{p.PreDepends, p.Depends, p.Recommends, p.Suggests, p.Enhances, p.Conflicts, p.Breaks, p.Provides, p.Replaces} {
			for _, r := range d.Relations {
				if len(r.Possibilities) == 0 {
					t.Fatalf("%s: empty relation in %q", p.Name, d.String())
				}
			}
		}
	}
	if essential < 10 {
		t.Errorf("only %d Essential: yes packages", essential)
	}
	if noSHA != 0 {
		t.Errorf("%d packages lack Filename, Size or SHA256", noSHA)
	}
}

// BenchmarkParsePackages parses a whole Debian main Packages index (see
// realPackagesIndex); compare with apt's own cache build, e.g.
// `time apt-cache -o Dir::Cache=/tmp/c gencaches`.
func BenchmarkParsePackages(b *testing.B) {
	data := realPackagesIndex(b)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		pkgs, err := ParsePackages(bytes.NewReader(data), nil)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(len(pkgs)), "stanzas")
	}
}

// TestQuickRelationMatchesPaultAg checks the fast relation parser against
// pault.ag's on every relation of a real index, and on hand-picked odd
// ones (which must fall back to pault.ag).
func TestQuickRelationMatchesPaultAg(t *testing.T) {
	rels := []string{
		"libc6 (>= 2.34)", "a | b", "a|b", "python3:any", "python3:any (>= 3.11~)", "libfoo:native",
		"foo (= 1:2.0-1)", "foo (<< 2)", "foo (>> 2)", "foo (<= 2)", "foo ( >= 2 )", "foo (>= 2 )",
		"foo [amd64]", "foo <!nocheck>", "foo (>=2)", "foo:amd64", "a (>= 1) | b:any | c (<< 3)",
	}
	if data, _ := loadRealIndex(); data != nil {
		seen := map[string]bool{}
		for _, line := range bytes.Split(data, []byte("\n")) {
			i := bytes.IndexByte(line, ':')
			if i <= 0 || line[0] == ' ' {
				continue
			}
			switch string(line[:i]) {
			case "Depends", "Pre-Depends", "Recommends", "Suggests", "Enhances", "Conflicts", "Breaks", "Provides", "Replaces":
			default:
				continue
			}
			for _, r := range strings.Split(string(line[i+1:]), ",") {
				r = strings.TrimSpace(r)
				if r != "" && !seen[r] {
					seen[r] = true
					rels = append(rels, r)
				}
			}
		}
		t.Logf("checking %d distinct relations", len(rels))
	}
	p := newPackagesParser(nil, nil, 0)
	fallbacks := 0
	for _, r := range rels {
		quick, ok := p.quickRelation(r)
		want, err := dependency.Parse(r)
		if !ok {
			fallbacks++
			continue
		}
		if err != nil {
			t.Errorf("%q: quick parser accepted what pault.ag rejects: %v", r, err)
			continue
		}
		if len(want.Relations) != 1 || !reflect.DeepEqual(quick, want.Relations[0]) {
			t.Errorf("%q: quick parser gives %#v, pault.ag %#v", r, quick, want.Relations)
		}
	}
	t.Logf("%d relations went to pault.ag's parser", fallbacks)
}

// FuzzParsePackages: any input parses or fails with an error, never a
// panic, and what parses has the required fields.
func FuzzParsePackages(f *testing.F) {
	f.Add(sampleStanzas)
	f.Add("Package: a\nVersion: 1\nArchitecture: all\nDepends: b (>= 1) | c:any, d [amd64]\n")
	f.Add("Package: a\nVersion: 1:2-3\nArchitecture: amd64\nProvides: x (= 1)\nConflicts: y (<< 2)\n\n\nPackage: b\n")
	f.Fuzz(func(t *testing.T, in string) {
		pkgs, err := ParsePackages(strings.NewReader(in), nil)
		if err != nil {
			return
		}
		for _, p := range pkgs {
			if p.Name == "" || p.Architecture == "" || p.Version.Version == "" {
				t.Fatalf("incomplete package %+v", p)
			}
		}
	})
}

func TestParsePackagesFromFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "Packages")
	if err := os.WriteFile(path, []byte(sampleStanzas), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pkgs, err := ParsePackages(f, nil)
	if err != nil || len(pkgs) != 2 {
		t.Fatalf("%d packages, %v", len(pkgs), err)
	}
	// At the end of the file: nothing left, no error.
	pkgs, err = ParsePackages(f, nil)
	if err != nil || len(pkgs) != 0 {
		t.Fatalf("second read: %d packages, %v", len(pkgs), err)
	}
	// Split into chunks (as for a large index) without losing or
	// duplicating stanzas, with CRLF line endings too.
	var big strings.Builder
	for i := 0; i < 20000; i++ {
		fmt.Fprintf(&big, "Package: p%d\nVersion: 1\nArchitecture: all\nDepends: p%d\nDescription: x\n %s\n\n", i, i+1, strings.Repeat("y", 80))
	}
	for _, text := range []string{big.String(), strings.ReplaceAll(big.String(), "\n", "\r\n")} {
		pkgs, err = ParsePackages(strings.NewReader(text), nil)
		if err != nil || len(pkgs) != 20000 {
			t.Fatalf("%d packages, %v", len(pkgs), err)
		}
		for i, p := range pkgs {
			if p.Name != fmt.Sprintf("p%d", i) {
				t.Fatalf("package %d is %s", i, p.Name)
			}
		}
	}
	_, err = ParsePackages(strings.NewReader(big.String()+"Package: bad\nVersion: x\nArchitecture: all\n"), nil)
	if err == nil || !strings.Contains(err.Error(), "stanza at line 140001") {
		t.Fatalf("error in the last chunk: %v", err)
	}
}
