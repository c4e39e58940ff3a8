package apt

import (
	"errors"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// Synthetic universes are written as Packages stanzas; a stanza without
// Version or Architecture gets "1" and "amd64".
func uni(t *testing.T, src *Source, text string) []*Package {
	t.Helper()
	var stanzas []string
	for _, st := range strings.Split(strings.TrimSpace(text), "\n\n") {
		st = strings.TrimSpace(st)
		if !strings.Contains(st, "\nVersion:") {
			st += "\nVersion: 1"
		}
		if !strings.Contains(st, "\nArchitecture:") {
			st += "\nArchitecture: amd64"
		}
		stanzas = append(stanzas, st)
	}
	if src == nil {
		src = &Source{URI: "http://deb.example.org/debian", Suite: "test"}
	}
	pkgs, err := ParsePackages(strings.NewReader(strings.Join(stanzas, "\n\n")+"\n"), &Index{Source: src, Component: "main", Architecture: "amd64"})
	if err != nil {
		t.Fatal(err)
	}
	return pkgs
}

func solve(t *testing.T, universe []*Package, req Request) *Solution {
	t.Helper()
	if req.Architecture == "" {
		req.Architecture = "amd64"
	}
	sol, err := Solve(universe, req)
	if err != nil {
		t.Fatalf("Solve: %v", err)
	}
	return sol
}

// names lists a solution as "name" (native) or "name:arch", sorted.
func names(sol *Solution) []string {
	var out []string
	for _, p := range sol.Packages {
		n := p.Name
		if p.Architecture != "amd64" && p.Architecture != "all" {
			n += ":" + p.Architecture
		}
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func wantNames(t *testing.T, sol *Solution, want ...string) {
	t.Helper()
	sort.Strings(want)
	if got := names(sol); !reflect.DeepEqual(got, want) {
		t.Errorf("installed %v, want %v", got, want)
	}
}

func solveErr(t *testing.T, universe []*Package, req Request, want ...string) *SolveError {
	t.Helper()
	if req.Architecture == "" {
		req.Architecture = "amd64"
	}
	sol, err := Solve(universe, req)
	if err == nil {
		t.Fatalf("Solve succeeded with %v, want an error", names(sol))
	}
	t.Logf("error: %v", err)
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
	var se *SolveError
	if !errors.As(err, &se) {
		t.Fatalf("error %T is not a *SolveError", err)
	}
	return se
}

func TestSolveDependsChain(t *testing.T) {
	u := uni(t, nil, `
Package: a
Pre-Depends: b
Depends: c, d (>= 1)

Package: b

Package: c
Depends: e

Package: d

Package: e

Package: unrelated
`)
	sol := solve(t, u, Request{Packages: []string{"a"}})
	wantNames(t, sol, "a", "b", "c", "d", "e")
	for i := 1; i < len(sol.Packages); i++ {
		if sol.Packages[i-1].Name > sol.Packages[i].Name {
			t.Errorf("not sorted by name: %v", names(sol))
		}
	}
	reasons := map[string]string{}
	for _, p := range sol.Packages {
		reasons[p.Name] = sol.Reason(p)
	}
	if reasons["a"] != "requested" || reasons["b"] != "Pre-Depends of a: b" || reasons["e"] != "Depends of c: e" {
		t.Errorf("reasons: %v", reasons)
	}
}

func TestSolveAlternatives(t *testing.T) {
	u := uni(t, nil, `
Package: a
Depends: missing | b | c

Package: b

Package: c

Package: d
Depends: b | c
`)
	// The first installable alternative wins.
	wantNames(t, solve(t, u, Request{Packages: []string{"a"}}), "a", "b")
	// An alternative that is chosen already satisfies the relation.
	wantNames(t, solve(t, u, Request{Packages: []string{"a", "c"}}), "a", "c")
	wantNames(t, solve(t, u, Request{Packages: []string{"c", "d"}}), "c", "d")
}

// apt marks depth first: a package's first relation is followed all the
// way down before its second one is looked at, which decides which
// alternative later relations find already chosen.
func TestSolveDepthFirstOrder(t *testing.T) {
	u := uni(t, nil, `
Package: a
Depends: x, y

Package: x
Depends: p | q

Package: y
Depends: q

Package: p

Package: q

Package: z
Depends: y, x
`)
	wantNames(t, solve(t, u, Request{Packages: []string{"a"}}), "a", "x", "y", "p", "q")
	// With y first, q is chosen before x's "p | q" is looked at.
	wantNames(t, solve(t, u, Request{Packages: []string{"z"}}), "z", "x", "y", "q")
	// Requested packages are all marked before any relation is followed.
	wantNames(t, solve(t, u, Request{Packages: []string{"x", "y"}}), "x", "y", "p", "q")
}

func TestSolveVersionedRelations(t *testing.T) {
	u := uni(t, nil, `
Package: b
Version: 1:2.0-1
`)
	tests := []struct {
		rel string
		ok  bool
	}{
		{"b (<< 1:2.0-2)", true}, {"b (<< 1:2.0-1)", false},
		{"b (<= 1:2.0-1)", true}, {"b (<= 1:1.9)", false},
		{"b (= 1:2.0-1)", true}, {"b (= 2.0-1)", false},
		{"b (>= 1:2.0-1)", true}, {"b (>= 1:2.0-1+b1)", false},
		{"b (>> 1:2.0~rc1)", true}, {"b (>> 1:2.0-1)", false},
		{"b (>= 2.0)", true}, // epoch 1 beats no epoch
	}
	for _, tt := range tests {
		t.Run(tt.rel, func(t *testing.T) {
			uu := append(uni(t, nil, "Package: a\nDepends: "+tt.rel), u...)
			sol, err := Solve(uu, Request{Architecture: "amd64", Packages: []string{"a"}})
			if tt.ok {
				if err != nil {
					t.Fatal(err)
				}
				wantNames(t, sol, "a", "b")
			} else if err == nil {
				t.Fatalf("%s satisfied by b 1:2.0-1", tt.rel)
			} else if !strings.Contains(err.Error(), "only b 1:2.0-1 is available") {
				t.Errorf("error %q does not say which version is available", err)
			}
		})
	}
}

func TestSolveProvides(t *testing.T) {
	u := uni(t, nil, `
Package: needs-virtual
Depends: mail-transport-agent

Package: needs-versioned
Depends: libfoo-abi (>= 2)

Package: needs-real-or-virtual
Depends: awk

Package: postfix
Priority: optional
Provides: mail-transport-agent

Package: old-foo
Provides: libfoo-abi

Package: new-foo
Provides: libfoo-abi (= 2.1)

Package: awk
Version: 1

Package: mawk
Provides: awk (= 5)
`)
	wantNames(t, solve(t, u, Request{Packages: []string{"needs-virtual"}}), "needs-virtual", "postfix")
	// Only a versioned Provides satisfies a versioned relation.
	wantNames(t, solve(t, u, Request{Packages: []string{"needs-versioned"}}), "needs-versioned", "new-foo")
	// The real package of the relation's name comes before providers.
	wantNames(t, solve(t, u, Request{Packages: []string{"needs-real-or-virtual"}}), "needs-real-or-virtual", "awk")

	// An unversioned Provides does not satisfy a versioned relation.
	u2 := uni(t, nil, `
Package: a
Depends: v (>= 1)

Package: p
Provides: v
`)
	solveErr(t, u2, Request{Packages: []string{"a"}}, "cannot install a", "a depends on v (>= 1)", "no provider satisfies v (>= 1)", "p provides v")
}

// For a virtual package apt prefers, in order: essential providers,
// important ones, the native architecture, the more important Priority
// field, then the package it read last.
func TestSolveProviderOrder(t *testing.T) {
	u := uni(t, nil, `
Package: a
Depends: v

Package: p-optional
Priority: optional
Provides: v

Package: p-required
Priority: required
Provides: v

Package: p-extra
Priority: extra
Provides: v
`)
	wantNames(t, solve(t, u, Request{Packages: []string{"a"}}), "a", "p-required")

	u = uni(t, nil, `
Package: a
Depends: v

Package: p-first
Priority: optional
Provides: v

Package: p-second
Priority: optional
Provides: v
`)
	wantNames(t, solve(t, u, Request{Packages: []string{"a"}}), "a", "p-second")

	u = uni(t, nil, `
Package: a
Depends: v

Package: p-required
Priority: required
Provides: v

Package: p-essential
Priority: optional
Essential: yes
Provides: v

Package: p-protected
Priority: optional
Protected: yes
Provides: v
`)
	wantNames(t, solve(t, u, Request{Packages: []string{"a"}}), "a", "p-essential")
	u = append(u[:2:2], u[3]) // without the essential one: Protected (apt's Important flag) next
	wantNames(t, solve(t, u, Request{Packages: []string{"a"}}), "a", "p-protected")
}

func TestSolveRequestVirtual(t *testing.T) {
	u := uni(t, nil, `
Package: only-provider
Provides: single-virtual

Package: mta-a
Provides: mail-transport-agent

Package: mta-b
Provides: mail-transport-agent
`)
	// One provider: apt selects it ("Note, selecting ... instead of ...").
	sol := solve(t, u, Request{Packages: []string{"single-virtual"}})
	wantNames(t, sol, "only-provider")
	if r := sol.Reason(sol.Packages[0]); !strings.Contains(r, "provider of single-virtual") {
		t.Errorf("reason %q", r)
	}
	// Several: apt refuses to choose.
	solveErr(t, u, Request{Packages: []string{"mail-transport-agent"}}, "mail-transport-agent is a virtual package provided by mta-a, mta-b", "explicitly")
	solveErr(t, u, Request{Packages: []string{"nonexistent"}}, "package nonexistent is not available")
}

func TestSolveConflicts(t *testing.T) {
	u := uni(t, nil, `
Package: a
Depends: b | c

Package: b
Conflicts: d

Package: c

Package: d

Package: e
Depends: x | y

Package: x
Version: 2
Breaks: d (<< 2)

Package: y

Package: f
Depends: g | h

Package: g
Conflicts: virt

Package: h

Package: provides-virt
Provides: virt

Package: self
Provides: virt
Conflicts: virt
`)
	// b conflicts with the requested d: the next alternative.
	wantNames(t, solve(t, u, Request{Packages: []string{"d", "a"}}), "a", "c", "d")
	// Breaks applies to versions below 2 only: d (version 1) is broken.
	wantNames(t, solve(t, u, Request{Packages: []string{"d", "e"}}), "d", "e", "y")
	// Conflicts against a virtual name hit its providers.
	wantNames(t, solve(t, u, Request{Packages: []string{"provides-virt", "f"}}), "f", "h", "provides-virt")
	// ... but never the package itself (Provides + Conflicts: the
	// Debian idiom for "only one provider at a time").
	wantNames(t, solve(t, u, Request{Packages: []string{"self"}}), "self")
	solveErr(t, u, Request{Packages: []string{"self", "provides-virt"}}, "self conflicts with virt (provided by provides-virt)")
	// Requests that conflict are an error naming both.
	solveErr(t, u, Request{Packages: []string{"b", "d"}}, "cannot install d", "b conflicts with d")

	// A versioned conflict does not hit an unversioned Provides.
	u2 := uni(t, nil, `
Package: a
Conflicts: v (<< 2)

Package: p
Provides: v

Package: q
Provides: v (= 1)
`)
	wantNames(t, solve(t, u2, Request{Packages: []string{"a", "p"}}), "a", "p")
	solveErr(t, u2, Request{Packages: []string{"a", "q"}}, "a conflicts with v (<< 2) (provided by q)")
}

// apt's greedy marking takes b for "b | c" and only then meets d, which b
// conflicts with; its problem resolver fixes that. The solver backtracks
// to the choice that caused the conflict instead.
func TestSolveBacktracking(t *testing.T) {
	u := uni(t, nil, `
Package: a
Depends: b | c

Package: b
Conflicts: d

Package: c

Package: e
Depends: f

Package: f
Depends: d

Package: d
`)
	sol := solve(t, u, Request{Packages: []string{"a", "e"}})
	wantNames(t, sol, "a", "c", "d", "e", "f")

	// Deeper: the conflicting package is chosen two levels below the
	// choice that must change, and an unrelated choice in between must
	// be kept (backjumping skips it).
	u = uni(t, nil, `
Package: top
Depends: mid1 | mid2, other1 | other2, needs-d

Package: mid1
Depends: leaf1

Package: leaf1
Depends: bad1 | bad2

Package: bad1
Conflicts: d

Package: bad2
Conflicts: d

Package: mid2

Package: other1

Package: other2

Package: needs-d
Depends: d

Package: d
`)
	sol = solve(t, u, Request{Packages: []string{"top"}})
	wantNames(t, sol, "top", "mid2", "other1", "needs-d", "d")

	// A choice that must change because of a version clash, not a
	// conflict: x needs lib (>= 2), which only lib-new provides.
	u = uni(t, nil, `
Package: root
Depends: impl-a | impl-b, x

Package: impl-a
Depends: lib-old

Package: impl-b

Package: lib-old
Provides: lib (= 1)
Conflicts: lib

Package: lib-new
Provides: lib (= 2)
Conflicts: lib

Package: x
Depends: lib (>= 2)
`)
	wantNames(t, solve(t, u, Request{Packages: []string{"root"}}), "root", "impl-b", "x", "lib-new")
}

// A request that no choice can satisfy must end quickly with the reason,
// not search every combination of unrelated alternatives.
func TestSolveUnsatisfiableIsFast(t *testing.T) {
	var b strings.Builder
	b.WriteString("Package: root\nDepends: ")
	for i := 0; i < 40; i++ {
		b.WriteString("p" + itoa(i) + "a | p" + itoa(i) + "b, ")
	}
	b.WriteString("broken\n\nPackage: broken\nDepends: missing (>= 1)\n")
	for i := 0; i < 40; i++ {
		b.WriteString("\nPackage: p" + itoa(i) + "a\n\nPackage: p" + itoa(i) + "b\n")
	}
	u := uni(t, nil, b.String())
	se := solveErr(t, u, Request{Packages: []string{"root"}}, "cannot install root: broken depends on missing (>= 1), but missing is not available", "(root -> broken -> missing (>= 1))")
	if !reflect.DeepEqual(se.Chain, []string{"root", "broken", "missing (>= 1)"}) {
		t.Errorf("chain %q", se.Chain)
	}
}

func itoa(i int) string {
	return string(rune('0'+i/10)) + string(rune('0'+i%10))
}

func TestSolveErrorMessages(t *testing.T) {
	u := uni(t, nil, `
Package: foo
Depends: baz

Package: baz
Depends: bar (>= 2)

Package: bar
Version: 1.0

Package: x
Depends: y | z

Package: y
Conflicts: w

Package: z
Depends: nothing-here

Package: w
`)
	se := solveErr(t, u, Request{Packages: []string{"foo"}},
		"cannot install foo: baz depends on bar (>= 2), but only bar 1.0 is available (foo -> baz -> bar (>= 2))")
	if se.Package != "foo" {
		t.Errorf("Package = %q", se.Package)
	}
	// Every alternative's failure is named, with the conflicting choice
	// and why it was chosen.
	solveErr(t, u, Request{Packages: []string{"w", "x"}},
		"cannot install x: x depends on y | z, but",
		"y conflicts with w (w is requested)",
		"z depends on nothing-here, but nothing-here is not available")

	solveErr(t, u, Request{Packages: []string{"bar=2.0"}}, "version 2.0 of bar is not available (have 1.0")
	solveErr(t, u, Request{Packages: []string{"bar:arm64"}}, "architecture arm64 is not configured")
	solveErr(t, u, Request{Packages: []string{"Bad Name"}}, "bad package")
	solveErr(t, u, Request{Variant: "tiny"}, `unknown variant "tiny"`)
	solveErr(t, u, Request{Architecture: "", Packages: []string{"foo"}}, "")
}

func TestSolveMultiArch(t *testing.T) {
	u := uni(t, nil, `
Package: app
Architecture: arm64
Depends: libc6, tool, data, pyth:any

Package: libc6
Architecture: amd64
Multi-Arch: same
Version: 2.36

Package: libc6
Architecture: arm64
Multi-Arch: same
Version: 2.36

Package: tool
Architecture: amd64
Multi-Arch: foreign

Package: data
Architecture: all
Multi-Arch: foreign

Package: pyth
Architecture: amd64
Multi-Arch: allowed

Package: native-app
Architecture: amd64
Depends: libc6, data

Package: arch-all-user
Architecture: all
Depends: libc6
`)
	req := Request{ForeignArchitectures: []string{"arm64"}}
	req.Packages = []string{"app:arm64", "native-app"}
	// libc6 of both architectures (Multi-Arch: same, same version); tool
	// and data from amd64 (Multi-Arch: foreign); pyth:any satisfied by
	// the amd64 pyth (Multi-Arch: allowed).
	wantNames(t, solve(t, u, req), "app:arm64", "libc6:arm64", "libc6", "tool", "data", "pyth", "native-app")
	// An arch:all package's relations are those of the native
	// architecture.
	req.Packages = []string{"arch-all-user"}
	wantNames(t, solve(t, u, req), "arch-all-user", "libc6")

	// Without Multi-Arch: foreign a native package does not satisfy a
	// foreign package's relation; without allowed, :any is not
	// satisfied.
	u2 := uni(t, nil, `
Package: app
Architecture: arm64
Depends: tool

Package: tool
Architecture: amd64

Package: app2
Architecture: arm64
Depends: pyth:any

Package: pyth
Architecture: amd64
`)
	req.Packages = []string{"app:arm64"}
	solveErr(t, u2, req, "tool is not available for arm64 (only for amd64, and not Multi-Arch: foreign)")
	req.Packages = []string{"app2:arm64"}
	solveErr(t, u2, req, "pyth is not Multi-Arch: allowed")

	// Multi-Arch: same only at the same version; other packages never
	// in two architectures.
	u3 := uni(t, nil, `
Package: libx
Architecture: amd64
Multi-Arch: same
Version: 2

Package: libx
Architecture: arm64
Multi-Arch: same
Version: 1

Package: prog
Architecture: amd64

Package: prog
Architecture: arm64
`)
	req.Packages = []string{"libx", "libx:arm64"}
	solveErr(t, u3, req, "libx:arm64 1 must have the same version as libx 2")
	req.Packages = []string{"prog", "prog:arm64"}
	solveErr(t, u3, req, "prog:arm64 cannot be installed next to prog (not both Multi-Arch: same)")
	req.Packages = []string{"libx=2", "prog:arm64"}
	wantNames(t, solve(t, u3, req), "libx", "prog:arm64")
}

// The universe of the variant tests: an essential set, required, important
// and standard packages, and apt.
const variantUniverse = `
Package: base-files
Essential: yes
Priority: required

Package: dash
Essential: yes
Priority: required
Depends: libc6

Package: libc6
Priority: optional

Package: sysvutils
Essential: yes
Priority: required
Provides: oldlsb (= 11.1)

Package: oldlsb
Version: 11.6
Depends: sysvutils

Package: apt
Priority: required
Depends: gpgv, oldlsb (>= 3)

Package: gpgv
Priority: optional

Package: mount
Priority: required

Package: lessimportant
Priority: important

Package: vim-tiny
Priority: standard

Package: build-essential
Priority: optional
Depends: make

Package: make
Priority: optional
`

func TestSolveVariants(t *testing.T) {
	u := uni(t, nil, variantUniverse)
	essential := []string{"base-files", "dash", "libc6", "sysvutils"}
	tests := []struct {
		variant string
		extra   []string
	}{
		{"essential", nil},
		{"apt", []string{"apt", "gpgv"}},
		// oldlsb is not installed: the essential set, installed first,
		// provides it (mmdebstrap's two apt runs).
		{"minbase", []string{"apt", "gpgv", "mount"}},
		{"required", []string{"apt", "gpgv", "mount"}},
		{"buildd", []string{"apt", "gpgv", "mount", "build-essential", "make"}},
		{"important", []string{"apt", "gpgv", "mount", "lessimportant"}},
		{"debootstrap", []string{"apt", "gpgv", "mount", "lessimportant"}},
		{"standard", []string{"apt", "gpgv", "mount", "lessimportant", "vim-tiny"}},
	}
	for _, tt := range tests {
		t.Run(tt.variant, func(t *testing.T) {
			sol := solve(t, u, Request{Variant: tt.variant})
			wantNames(t, sol, append(append([]string{}, essential...), tt.extra...)...)
		})
	}
	wantNames(t, solve(t, u, Request{Variant: "custom", Packages: []string{"dash"}}), "dash", "libc6")

	// As in `mmdebstrap --simulate`, resolving the second stage on its
	// own pulls in oldlsb.
	s, err := newSolver(u, Request{Architecture: "amd64", Variant: "minbase"})
	if err != nil {
		t.Fatal(err)
	}
	s.independentStages = true
	sol, err := s.solve()
	if err != nil {
		t.Fatal(err)
	}
	wantNames(t, sol, append(essential, "apt", "gpgv", "mount", "oldlsb")...)
}

func TestSolveRecommends(t *testing.T) {
	u := uni(t, nil, `
Package: a
Depends: b
Recommends: r1, missing, r2 | r3

Package: b

Package: r1
Depends: r1dep

Package: r1dep

Package: r2
Conflicts: a

Package: r3
`)
	wantNames(t, solve(t, u, Request{Packages: []string{"a"}}), "a", "b")
	// Unsatisfiable and conflicting recommendations are skipped.
	wantNames(t, solve(t, u, Request{Packages: []string{"a"}, Recommends: true}), "a", "b", "r1", "r1dep", "r3")
}

func TestSolveExcludes(t *testing.T) {
	u := uni(t, nil, `
Package: a
Depends: b | c

Package: b

Package: c

Package: d
Depends: e

Package: e
Depends: b
`)
	wantNames(t, solve(t, u, Request{Packages: []string{"a"}, Excludes: []string{"b"}}), "a", "c")
	solveErr(t, u, Request{Packages: []string{"d"}, Excludes: []string{"b"}}, "cannot install d: e depends on b, but b is excluded", "(d -> e -> b)")
	solveErr(t, u, Request{Packages: []string{"b"}, Excludes: []string{"b:amd64"}}, "b is both requested and excluded")
	solveErr(t, u, Request{Packages: []string{"a"}, Excludes: []string{"b=1"}}, "bad exclude")
	// Excluded packages leave the variant's base set.
	u2 := uni(t, nil, variantUniverse)
	sol := solve(t, u2, Request{Variant: "minbase", Excludes: []string{"mount"}})
	for _, p := range sol.Packages {
		if p.Name == "mount" {
			t.Error("excluded mount installed")
		}
	}
}

func TestSolvePinning(t *testing.T) {
	stable := &Source{URI: "http://deb.example.org/debian", Suite: "stable"}
	backports := &Source{URI: "http://deb.example.org/debian", Suite: "stable-backports", Priority: 100}
	pinned := &Source{URI: "http://local.example.org/repo", Suite: "local", Priority: 900}
	never := &Source{URI: "http://bad.example.org/repo", Suite: "bad", Priority: -1}
	var u []*Package
	u = append(u, uni(t, stable, "Package: tool\nVersion: 1.0\n\nPackage: lib\nVersion: 2.0\n\nPackage: app\nVersion: 1\nDepends: lib (>= 3)")...)
	u = append(u, uni(t, backports, "Package: tool\nVersion: 2.0\n\nPackage: lib\nVersion: 3.0")...)
	u = append(u, uni(t, pinned, "Package: lib\nVersion: 1.5")...)
	u = append(u, uni(t, never, "Package: tool\nVersion: 9.0\n\nPackage: evil")...)

	version := func(sol *Solution, name string) string {
		for _, p := range sol.Packages {
			if p.Name == name {
				return p.Version.String()
			}
		}
		return ""
	}
	// Priority first (500 beats 100), then version; -1 never.
	sol := solve(t, u, Request{Packages: []string{"tool", "lib"}})
	if v := version(sol, "tool"); v != "1.0" {
		t.Errorf("tool %s, want 1.0 (stable, priority 500)", v)
	}
	if v := version(sol, "lib"); v != "1.5" {
		t.Errorf("lib %s, want 1.5 (pinned to 900)", v)
	}
	// Candidates only: app needs lib (>= 3), which only a lower-priority
	// source has.
	solveErr(t, u, Request{Packages: []string{"app"}}, "app depends on lib (>= 3), but lib 1.5 is the candidate version (3.0 from http://deb.example.org/debian stable-backports has a lower priority)")
	// Asking for a version or a suite changes the candidate, as in apt.
	sol = solve(t, u, Request{Packages: []string{"tool=2.0", "lib/stable-backports", "app"}})
	if version(sol, "tool") != "2.0" || version(sol, "lib") != "3.0" {
		t.Errorf("got %v", sol.Packages)
	}
	solveErr(t, u, Request{Packages: []string{"evil"}}, "has no installation candidate")
	solveErr(t, u, Request{Packages: []string{"tool/nosuch"}}, "suite nosuch of tool is not available")
}

func TestSolveDeterministic(t *testing.T) {
	u := uni(t, nil, variantUniverse)
	first := names(solve(t, u, Request{Variant: "standard", Packages: []string{"build-essential"}}))
	for i := 0; i < 20; i++ {
		if got := names(solve(t, u, Request{Variant: "standard", Packages: []string{"build-essential"}})); !reflect.DeepEqual(got, first) {
			t.Fatalf("run %d: %v, first %v", i, got, first)
		}
	}
}

func TestSolveOddInput(t *testing.T) {
	// nil entries, an empty universe, empty requests: no panics.
	if _, err := Solve([]*Package{nil}, Request{Architecture: "amd64"}); err != nil {
		t.Error(err)
	}
	if _, err := Solve(nil, Request{Architecture: "amd64", Variant: "minbase"}); err != nil {
		t.Error(err)
	}
	solveErr(t, nil, Request{Packages: []string{"x"}}, "package x is not available")
	sol := solve(t, nil, Request{Packages: []string{" ", ""}})
	if len(sol.Packages) != 0 {
		t.Error(sol.Packages)
	}
}
