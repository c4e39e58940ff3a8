package apt

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"pault.ag/go/debian/dependency"
	"pault.ag/go/debian/version"
)

// Request is what to install into an empty root, as mmdebstrap would be
// asked for it.
type Request struct {
	// Architecture is the native architecture (dpkg --print-architecture
	// of the target), e.g. "amd64". Architecture "all" packages count as
	// native, as in apt and dpkg.
	Architecture string
	// ForeignArchitectures may be installed too (dpkg --add-architecture).
	ForeignArchitectures []string
	// Variant selects a base set, as mmdebstrap's --variant does:
	//   "" or "custom"          nothing but Packages
	//   "essential"             the Essential: yes packages
	//   "apt"                   essential plus apt
	//   "required" or "minbase" essential, then Priority: required (apt is one)
	//   "buildd"                minbase plus build-essential
	//   "important" or "debootstrap"  required plus Priority: important
	//   "standard"              important plus Priority: standard
	// As in mmdebstrap, the base set only considers packages of the native
	// architecture, and the solve has two stages: the essential set is
	// resolved (and in mmdebstrap installed) first, then the priority set
	// and Packages are resolved with the essential set already present.
	Variant string
	// Packages to install, in order (order matters to apt: earlier
	// requests choose alternatives first). Each is "name", "name:arch",
	// "name=version", "name:arch=version" or "name/suite".
	Packages []string
	// Excludes are package names ("name" or "name:arch") that must not be
	// installed: alternatives avoid them, and a hard need for one is an
	// error naming the chain that needs it.
	Excludes []string
	// Recommends installs recommended packages too (apt's
	// APT::Install-Recommends; mmdebstrap turns it off).
	Recommends bool
	// BootPackages are packages whose .debs the build needs only to take
	// files from (a UEFI boot loader, a file system driver for the ESP),
	// never to install. Each is "name", "name:arch", "name=version",
	// "name:arch=version" or "name/suite", as in Packages; its candidate
	// is chosen as for an install request (pin priority, then version;
	// the native architecture unless one is given), but its dependencies
	// are not resolved, Excludes do not apply, and it is not added to the
	// installed set. Solve ignores them; Resolve locks them (see
	// BootCandidates and Lock.BootPackages).
	BootPackages []string
}

// Solution is the resolved package set.
type Solution struct {
	// Packages is every package to install, sorted by name, then
	// architecture.
	Packages []*Package
	// Reasons says why each package is in the set: "requested", "variant
	// minbase: Essential: yes", "Depends of systemd: libc6 (>= 2.34)", ...
	Reasons map[*Package]string
	// BootPackages are the candidates of Request.BootPackages, in request
	// order: locked, not installed. Resolve fills it in; Solve leaves it
	// empty.
	BootPackages []*Package
}

// Reason returns why p was chosen, or "" if it was not.
func (s *Solution) Reason(p *Package) string { return s.Reasons[p] }

// SolveError is a request the solver cannot satisfy.
type SolveError struct {
	// Package is the requested package that cannot be installed, or ""
	// when the request itself is at fault (unknown package, bad spec).
	Package string
	// Chain leads from Package to the package whose relation failed,
	// e.g. [foo baz bar] for "foo depends on baz, which depends on bar".
	Chain []string
	// Reason explains the failure, naming the relation, the versions that
	// are available and the choices that conflict.
	Reason string
}

func (e *SolveError) Error() string {
	if e.Package == "" {
		return "cannot resolve request: " + e.Reason
	}
	msg := "cannot install " + e.Package + ": " + e.Reason
	if len(e.Chain) > 1 {
		msg += " (" + strings.Join(e.Chain, " -> ") + ")"
	}
	return msg
}

// Variants lists the values Request.Variant accepts.
var Variants = []string{"", "custom", "essential", "apt", "required", "minbase", "buildd", "important", "debootstrap", "standard"}

// maxSteps bounds the search: a request this hard is almost certainly
// unsatisfiable in a way that backtracking cannot prove quickly.
const maxSteps = 2_000_000

// Solve resolves req against universe, the packages of every index of the
// recipe's sources, in the order apt would read them (sources in order,
// each index in file order; apt's tie-breaks depend on it).
//
// It does what apt (the classic solver of apt 2.6, as mmdebstrap runs it)
// does for a fresh install:
//
//   - The candidate of each package (name and architecture) is its
//     version from the highest-priority source that has it, and among
//     those the highest version (Source.Priority; a negative priority
//     never installs). Only candidates are installed, as in apt: a
//     dependency that needs another version fails even if a lower-priority
//     source has it. A request "name=version" or "name/suite" changes the
//     candidate of that package.
//   - Requested packages are marked first, then each one's Pre-Depends
//     and Depends (and Recommends with Request.Recommends) are followed
//     depth first, in field order. A relation already satisfied by a
//     chosen package needs nothing; otherwise its alternatives are tried
//     in order, and for each alternative the real package first, then its
//     providers in apt's order (essential, then important, then native
//     architecture, then Priority field, then apt's package order).
//   - Versioned relations are satisfied by the package's version or by a
//     versioned Provides (an unversioned Provides satisfies only
//     unversioned relations). Conflicts and Breaks apply to real and
//     provided names, versioned or not, never to the package itself.
//   - Multi-Arch: a relation of an arch:X package is satisfied by X or
//     arch:all packages, by Multi-Arch: foreign packages of any
//     architecture, and "name:any" by Multi-Arch: allowed packages. Two
//     architectures of a package are only co-installable when both are
//     Multi-Arch: same at the same version.
//   - Like apt, when a package's own Conflicts or Breaks hit a package
//     chosen earlier as a dependency, the earlier one is unmarked (unless
//     it is requested, installed by the first stage, or the only way to
//     satisfy a relation of such a package); the relations it satisfied
//     are then satisfied again, alternatives in order (apt's problem
//     resolver, in its simple cases), and, as apt's autoremover does for
//     new installs, packages nothing reaches any more are dropped.
//
// Where apt's greedy marking leaves a broken state (a package chosen
// later that an earlier choice's Conflicts or Breaks hit), Solve backtracks: it takes
// the next alternative at the latest choice that caused the conflict
// (conflict-directed backjumping). If following apt's unmarking leads to
// no solution, Solve searches again without it. So it finds a solution
// whenever one exists with candidates only, also where apt's resolver
// gives up ("pkgProblemResolver::Resolve generated breaks"). On requests
// that apt resolves without its problem resolver the result is the set
// apt installs; where apt needs the resolver (rare without Recommends),
// results can differ.
func Solve(universe []*Package, req Request) (*Solution, error) {
	s, err := newSolver(universe, req)
	if err != nil {
		return nil, err
	}
	s.evictions = true
	sol, err := s.solve()
	if s.evicted == 0 || err == nil && s.consistent() {
		return sol, err
	}
	// Following apt's evictions led nowhere: search without them, which
	// finds a solution whenever there is one.
	s, err = newSolver(universe, req)
	if err != nil {
		return nil, err
	}
	return s.solve()
}

// consistent reports whether the chosen set is closed under Pre-Depends
// and Depends and free of conflicts; a safety net after evictions.
func (s *solver) consistent() bool {
	for _, n := range s.chosen() {
		for _, g := range n.groups {
			if !g.optional && !s.satisfied(g) {
				return false
			}
		}
		n.selected = false
		s.removeIndexes(n)
		_, why := s.incompatible(n)
		s.addIndexes(n)
		n.selected = true
		if why != "" {
			return false
		}
	}
	return true
}

// errEmulation: apt's way of repairing after an eviction did not work out.
var errEmulation = errors.New("repairing relations broken by a conflict did not converge")

// variantPlan returns the stage-1 and stage-2 base selections of a variant.
func variantPlan(v string) (essential, apt bool, priorities []string, extra []string, err error) {
	switch v {
	case "", "custom":
		return false, false, nil, nil, nil
	case "essential":
		return true, false, nil, nil, nil
	case "apt":
		return true, true, nil, nil, nil
	case "required", "minbase":
		return true, false, []string{"required"}, nil, nil
	case "buildd":
		return true, false, []string{"required"}, []string{"build-essential"}, nil
	case "important", "debootstrap":
		return true, false, []string{"required", "important"}, nil, nil
	case "standard":
		return true, false, []string{"required", "important", "standard"}, nil, nil
	}
	return false, false, nil, nil, fmt.Errorf("unknown variant %q (want one of %s)", v, strings.Join(Variants[1:], ", "))
}

// node is the candidate of one package (name and architecture).
type node struct {
	pkg  *Package
	name string
	arch string // "all" is mapped to the native architecture
	id   int    // apt's package ID: order of first mention in the indexes

	essential bool // apt's package flags: any version says so
	important bool
	prio      int // apt's enum of the Priority field (0 when absent)
	excluded  bool

	groups    []*relGroup // Pre-Depends, Depends, Recommends in apt's order
	negs      []negRel
	provides  []provide
	built     bool
	provBuilt bool

	// search state
	selected   bool
	protected  bool        // apt would not unmark it for a later conflict
	installed  bool        // chosen by an earlier stage
	markGroups []*relGroup // relations apt's autoremover follows
	level      int         // choice point that selected it; -1 for the roots
	parent     *node       // whose relation pulled it in; nil for roots
	via        *relGroup   // that relation
	root       string      // for roots: why ("requested", "variant minbase: ...")
}

func (n *node) String() string { return n.name + ":" + n.arch }

// label names a node in messages: with its architecture only when foreign.
func (s *solver) label(n *node) string {
	if n.arch == s.native {
		return n.name
	}
	return n.name + ":" + n.arch
}

type relGroup struct {
	kind     string // Pre-Depends, Depends, Recommends
	text     string
	atoms    []*atom
	optional bool
}

type atom struct {
	poss     dependency.Possibility
	qual     string // "", "any" or an architecture
	ver      *version.Version
	fromArch string
	bad      bool    // the version cannot be parsed
	sats     []*node // satisfiers in apt's order of preference
}

type negRel struct {
	kind string // Conflicts, Breaks
	poss dependency.Possibility
	qual string
	ver  *version.Version
}

type provide struct {
	name string
	qual string           // architecture qualifier of "Provides: foo:arch", rare
	ver  *version.Version // nil when unversioned
}

type solver struct {
	req      Request
	native   string
	archs    []string // native first, then the foreign ones
	archOK   map[string]bool
	universe []*Package
	versions map[string][]*Package // every version of every architecture, by name
	byKey    map[pkgKey]*node      // candidates made so far (nil: none)
	provs    map[string][]provEntry
	exclude  map[string]bool // "name" or "name:arch"
	satMemo  map[satKey][]*node
	// evictions lets a package chosen later unmark an earlier automatic
	// choice it conflicts with, as apt does (see evictFor); evicted
	// counts how often that happened.
	evictions bool
	evicted   int
	// independentStages resolves the second stage as if the first had
	// installed nothing, as `mmdebstrap --simulate` does (its second apt
	// run sees an empty status file); the live test compares with that.
	independentStages bool
	stageOf           map[*node]int // for independentStages: 1 or 2

	// search state
	top     *frame
	points  []*choicePoint
	trail   []event                // changes of the chosen set, undone by backtracking
	selName map[string][]*node     // selected nodes by name
	selProv map[string][]provEntry // selected providers by provided name
	selNegs map[string][]negEntry  // negative relations of selected nodes by target name
	steps   int
}

type provEntry struct {
	n *node
	p *provide
}

type negEntry struct {
	owner *node
	rel   *negRel
}

type satKey struct {
	name, qual, op, ver, fromArch string
}

func newSolver(universe []*Package, req Request) (*solver, error) {
	if req.Architecture == "" {
		return nil, &SolveError{Reason: "no architecture given"}
	}
	if _, _, _, _, err := variantPlan(req.Variant); err != nil {
		return nil, &SolveError{Reason: err.Error()}
	}
	s := &solver{
		req:      req,
		native:   req.Architecture,
		archs:    append([]string{req.Architecture}, req.ForeignArchitectures...),
		archOK:   map[string]bool{req.Architecture: true},
		universe: universe,
		versions: make(map[string][]*Package, len(universe)),
		byKey:    map[pkgKey]*node{},
		provs:    map[string][]provEntry{},
		exclude:  map[string]bool{},
		satMemo:  map[satKey][]*node{},
		selName:  map[string][]*node{},
		selProv:  map[string][]provEntry{},
		selNegs:  map[string][]negEntry{},
	}
	for _, a := range req.ForeignArchitectures {
		s.archOK[a] = true
	}
	for _, x := range req.Excludes {
		x = strings.TrimSpace(x)
		if x == "" {
			continue
		}
		if strings.ContainsAny(x, "=/ ") {
			return nil, &SolveError{Reason: fmt.Sprintf("bad exclude %q: want a package name, optionally with :arch", x)}
		}
		s.exclude[x] = true
	}
	for _, p := range universe {
		if p == nil || !s.archOK[s.effArch(p)] {
			continue
		}
		s.versions[p.Name] = append(s.versions[p.Name], p)
	}
	return s, nil
}

// effArch is the architecture apt files a package under: "all" is native.
func (s *solver) effArch(p *Package) string {
	if p.Architecture == "all" {
		return s.native
	}
	return p.Architecture
}

// versionsOf returns every version of a package, in universe order.
func (s *solver) versionsOf(name, arch string) []*Package {
	all := s.versions[name]
	n := 0
	for _, p := range all {
		if s.effArch(p) == arch {
			n++
		}
	}
	if n == len(all) {
		return all
	}
	out := make([]*Package, 0, n)
	for _, p := range all {
		if s.effArch(p) == arch {
			out = append(out, p)
		}
	}
	return out
}

// node returns the candidate of a package, made on first use; nil when
// the package does not exist or has no installable version.
func (s *solver) node(name, arch string) *node {
	key := pkgKey{name, arch}
	if n, ok := s.byKey[key]; ok {
		return n
	}
	vs := s.versionsOf(name, arch)
	c := candidate(vs)
	if c == nil {
		s.byKey[key] = nil
		return nil
	}
	n := s.newNode(c, arch, vs)
	s.byKey[key] = n
	return n
}

func (s *solver) newNode(c *Package, arch string, versions []*Package) *node {
	n := &node{pkg: c, name: c.Name, arch: arch, level: -1, id: -1, prio: priorityEnum(c.Priority)}
	n.excluded = s.exclude[c.Name] || s.exclude[c.Name+":"+arch]
	for _, v := range versions {
		n.essential = n.essential || v.Essential
		n.important = n.important || v.Important
	}
	return n
}

// nodesNamed returns the candidates of every architecture of a name.
func (s *solver) nodesNamed(name string) []*node {
	vs := s.versions[name]
	if len(vs) == 0 {
		return nil
	}
	var out []*node
	for _, a := range s.archs {
		for _, p := range vs {
			if s.effArch(p) == a {
				if n := s.node(name, a); n != nil {
					out = append(out, n)
				}
				break
			}
		}
	}
	return out
}

// candidate applies apt's policy for a fresh install: highest pin
// priority first, then highest version; negative priorities never.
func candidate(pkgs []*Package) *Package {
	var best *Package
	bestPrio := 0
	for _, p := range pkgs {
		prio := sourcePriority(p)
		if prio < 0 {
			continue
		}
		if best == nil || prio > bestPrio || prio == bestPrio && version.Compare(p.Version, best.Version) > 0 {
			best, bestPrio = p, prio
		}
	}
	return best
}

func sourcePriority(p *Package) int {
	if p.Index == nil || p.Index.Source == nil {
		return DefaultPriority
	}
	return p.Index.Source.EffectivePriority()
}

// priorityEnum is apt's pkgCache::State::VerPriority.
func priorityEnum(p string) int {
	switch strings.ToLower(p) {
	case "":
		return 0
	case "required":
		return 1
	case "important":
		return 2
	case "standard":
		return 3
	case "optional":
		return 4
	}
	return 5 // extra, and words apt does not know
}

// ensureIDs gives nodes apt's package order: the order in which apt's
// cache generator creates packages while reading the indexes. A stanza
// creates its own package, then the targets of Pre-Depends, Depends,
// Conflicts and Breaks (negative relations only when nothing of that name
// exists yet), Recommends, Suggests, Replaces, Enhances, then Provides.
// apt iterates pattern matches (e.g. ?essential) in this order and breaks
// ties between providers by it. Only the relative order of the nodes
// matters, so one scan numbers the first mentions of the wanted names.
func (s *solver) ensureIDs(ns []*node) {
	want := map[pkgKey]*node{}
	for _, n := range ns {
		if n.id < 0 {
			want[pkgKey{n.name, n.arch}] = n
		}
	}
	if len(want) == 0 {
		return
	}
	// Names whose nodes were numbered before keep their numbers; a new
	// scan numbers the rest after them, which keeps the order consistent
	// only if no earlier number is compared with a later one: so number
	// every known node again together with the new ones.
	for _, n := range s.byKey {
		if n != nil {
			want[pkgKey{n.name, n.arch}] = n
			n.id = -1
		}
	}
	wantName := make(map[string]bool, len(want))
	for k := range want {
		wantName[k.name] = true
	}
	hasGroup := map[string]bool{}
	pos := 0
	mention := func(name, arch string) {
		pos++
		if !wantName[name] {
			return
		}
		hasGroup[name] = true
		if n := want[pkgKey{name, arch}]; n != nil && n.id < 0 {
			n.id = pos
		}
	}
	qualArch := func(p dependency.Possibility, from string) (string, bool) {
		switch q := archQualifier(p); q {
		case "":
			return from, true
		case "any":
			return "", false // apt creates "name:any", a pseudo package
		case "native":
			return s.native, true
		default:
			return q, true
		}
	}
	for _, p := range s.universe {
		if p == nil {
			continue
		}
		arch := s.effArch(p)
		if !s.archOK[arch] {
			continue
		}
		mention(p.Name, arch)
		positive := func(d dependency.Dependency) {
			for _, r := range d.Relations {
				for _, poss := range r.Possibilities {
					if wantName[poss.Name] {
						if a, ok := qualArch(poss, arch); ok {
							mention(poss.Name, a)
						}
					}
				}
			}
		}
		negative := func(d dependency.Dependency) {
			for _, r := range d.Relations {
				for _, poss := range r.Possibilities {
					if !wantName[poss.Name] {
						continue
					}
					if archQualifier(poss) == "" {
						if !hasGroup[poss.Name] {
							mention(poss.Name, arch)
						}
					} else if a, ok := qualArch(poss, arch); ok {
						mention(poss.Name, a)
					}
				}
			}
		}
		positive(p.PreDepends)
		positive(p.Depends)
		negative(p.Conflicts)
		negative(p.Breaks)
		positive(p.Recommends)
		positive(p.Suggests)
		negative(p.Replaces)
		positive(p.Enhances)
		for _, r := range p.Provides.Relations {
			for _, poss := range r.Possibilities {
				if !wantName[poss.Name] {
					continue
				}
				q := archQualifier(poss)
				switch {
				case q != "" && q != "any":
					mention(poss.Name, s.resolveQual(q))
				case p.MultiArch == "foreign":
					if !hasGroup[poss.Name] {
						mention(poss.Name, s.native)
					}
				case poss.Name == p.Name && (poss.Version == nil || poss.Version.Number == p.Version.String()):
					// apt skips self-referencing provides
				default:
					mention(poss.Name, arch)
				}
			}
		}
	}
	for _, n := range want {
		if n.id < 0 {
			n.id = pos + 1 // made by a request only: last, as apt would
		}
	}
}

// archQualifier returns the ":arch" of a relation: "", "any", "native" or
// an architecture name.
func archQualifier(p dependency.Possibility) string {
	a := p.Arch
	if a == nil {
		return ""
	}
	if *a == dependency.Any {
		return "any"
	}
	if *a == dependency.All {
		return "all"
	}
	// pault.ag stores "amd64" as base-gnu-linux-amd64; its String turns it
	// back into the Debian name, but is slow, so only for the rare case.
	if a.ABI == "base" && a.Libc == "gnu" && a.OS == "linux" {
		return a.CPU
	}
	return a.String()
}

// request is one parsed entry of Request.Packages.
type request struct {
	spec    string
	name    string
	arch    string // "" when not given
	version string
	suite   string
}

func parseRequest(spec string) (request, error) {
	r := request{spec: spec}
	rest := strings.TrimSpace(spec)
	if i := strings.IndexByte(rest, '='); i >= 0 {
		r.version = strings.TrimSpace(rest[i+1:])
		rest = rest[:i]
		if r.version == "" {
			return r, fmt.Errorf("bad package %q: empty version after '='", spec)
		}
	} else if i := strings.IndexByte(rest, '/'); i >= 0 {
		r.suite = strings.TrimSpace(rest[i+1:])
		rest = rest[:i]
		if r.suite == "" {
			return r, fmt.Errorf("bad package %q: empty suite after '/'", spec)
		}
	}
	if i := strings.IndexByte(rest, ':'); i >= 0 {
		r.arch = rest[i+1:]
		rest = rest[:i]
		if r.arch == "" {
			return r, fmt.Errorf("bad package %q: empty architecture after ':'", spec)
		}
	}
	r.name = rest
	if !plausiblePackageName(r.name) {
		return r, fmt.Errorf("bad package %q: want name, name:arch, name=version or name/suite", spec)
	}
	return r, nil
}

// setCandidate makes p the candidate of its package, as apt's
// SetCandidateVersion does for "name=version".
func (s *solver) setCandidate(p *Package, arch string) *node {
	if old := s.node(p.Name, arch); old != nil && old.pkg == p {
		return old
	}
	n := s.newNode(p, arch, s.versionsOf(p.Name, arch))
	s.byKey[pkgKey{p.Name, arch}] = n
	return n
}

// requestArch picks the architecture of a request without one: native
// when the name exists there (as a package or a provided name), else the
// first foreign architecture that has a package of that name.
func (s *solver) requestArch(name string) string {
	if len(s.versionsOf(name, s.native)) > 0 {
		return s.native
	}
	if len(s.provs[name]) > 0 {
		return s.native
	}
	for _, a := range s.req.ForeignArchitectures {
		if len(s.versionsOf(name, a)) > 0 {
			return a
		}
	}
	return s.native
}

// pinRequests applies "name=version" and "name/suite", which change
// candidates, before anything else looks at candidates.
func (s *solver) pinRequests(reqs []request) error {
	for _, r := range reqs {
		if r.version == "" && r.suite == "" {
			continue
		}
		arch := r.arch
		if arch == "" {
			arch = s.native
			if len(s.versionsOf(r.name, arch)) == 0 {
				for _, a := range s.req.ForeignArchitectures {
					if len(s.versionsOf(r.name, a)) > 0 {
						arch = a
						break
					}
				}
			}
		}
		if !s.archOK[arch] {
			return &SolveError{Reason: fmt.Sprintf("%s: architecture %s is not configured (add it to the foreign architectures)", r.spec, arch)}
		}
		versions := s.versionsOf(r.name, arch)
		if len(versions) == 0 {
			return &SolveError{Reason: fmt.Sprintf("%s: package %s is not available", r.spec, s.labelKey(r.name, arch))}
		}
		pick, have := pinnedVersion(versions, r)
		if pick == nil {
			what := "version " + r.version
			if r.suite != "" {
				what = "suite " + r.suite
			}
			return &SolveError{Reason: fmt.Sprintf("%s: %s of %s is not available (have %s)", r.spec, what, s.labelKey(r.name, arch), strings.Join(have, ", "))}
		}
		s.setCandidate(pick, arch)
	}
	return nil
}

// pinnedVersion picks the version "name=version" or "name/suite" selects
// among versions, as apt does (the highest-priority source that has that
// version; the highest version of that suite), and lists the versions
// there are for messages.
func pinnedVersion(versions []*Package, r request) (pick *Package, have []string) {
	for _, p := range versions {
		have = append(have, fmt.Sprintf("%s (%s)", p.Version, sourceSuite(p)))
		switch {
		case r.version != "":
			if p.Version.String() == r.version || sameVersion(p.Version, r.version) {
				if pick == nil || sourcePriority(p) > sourcePriority(pick) {
					pick = p
				}
			}
		case sourceSuite(p) == r.suite:
			if pick == nil || version.Compare(p.Version, pick.Version) > 0 {
				pick = p
			}
		}
	}
	return pick, have
}

// BootCandidates returns the packages req.BootPackages name, in request
// order: for each, the candidate an install request of the same spec
// would install (the version from the highest-priority source, the
// highest among those; "name=version" and "name/suite" choose as in
// Packages), of the native architecture (or arch "all") unless the spec
// names a configured one. Dependencies are not looked at: a boot package
// only provides files, it is not installed. sources name the archives in
// the error for a package that is not available ("boot package refind is
// not available from http://deb.debian.org/debian trixie"); nil means the
// sources of universe's packages. Errors are *SolveError.
func BootCandidates(universe []*Package, sources []*Source, req Request) ([]*Package, error) {
	if len(req.BootPackages) == 0 {
		return nil, nil
	}
	if req.Architecture == "" {
		return nil, &SolveError{Reason: "no architecture given"}
	}
	s := &solver{
		req:      req,
		native:   req.Architecture,
		archOK:   map[string]bool{req.Architecture: true},
		versions: map[string][]*Package{},
	}
	for _, a := range req.ForeignArchitectures {
		s.archOK[a] = true
	}
	for _, p := range universe {
		if p != nil && s.archOK[s.effArch(p)] {
			s.versions[p.Name] = append(s.versions[p.Name], p)
		}
	}
	from := func() string {
		var names []string
		seen := map[*Source]bool{}
		if sources == nil {
			for _, p := range universe {
				if p != nil && p.Index != nil && p.Index.Source != nil && !seen[p.Index.Source] {
					seen[p.Index.Source] = true
					sources = append(sources, p.Index.Source)
				}
			}
		}
		for _, src := range sources {
			if src != nil {
				names = append(names, src.String())
			}
		}
		if len(names) == 0 {
			return "no sources"
		}
		return strings.Join(names, ", ")
	}
	var out []*Package
	chosen := map[pkgKey]*Package{}
	for _, spec := range req.BootPackages {
		if strings.TrimSpace(spec) == "" {
			continue
		}
		r, err := parseRequest(spec)
		if err != nil {
			return nil, &SolveError{Reason: "boot " + err.Error()}
		}
		arch := r.arch
		if arch == "" || arch == "native" {
			arch = s.native
		}
		if !s.archOK[arch] {
			return nil, &SolveError{Reason: fmt.Sprintf("boot package %s: architecture %s is not configured (add it to the foreign architectures)", r.spec, arch)}
		}
		label := s.labelKey(r.name, arch)
		versions := s.versionsOf(r.name, arch)
		if len(versions) == 0 {
			var elsewhere []string
			for _, p := range s.versions[r.name] {
				if a := s.effArch(p); !slices.Contains(elsewhere, a) {
					elsewhere = append(elsewhere, a)
				}
			}
			if len(elsewhere) > 0 {
				return nil, &SolveError{Reason: fmt.Sprintf("boot package %s is not available for %s (only for %s) from %s", r.name, arch, strings.Join(elsewhere, ", "), from())}
			}
			return nil, &SolveError{Reason: fmt.Sprintf("boot package %s is not available from %s", label, from())}
		}
		var pick *Package
		if r.version != "" || r.suite != "" {
			var have []string
			pick, have = pinnedVersion(versions, r)
			if pick == nil {
				what := "version " + r.version
				if r.suite != "" {
					what = "suite " + r.suite
				}
				return nil, &SolveError{Reason: fmt.Sprintf("boot package %s: %s of %s is not available (have %s)", r.spec, what, label, strings.Join(have, ", "))}
			}
		} else if pick = candidate(versions); pick == nil {
			return nil, &SolveError{Reason: fmt.Sprintf("boot package %s has no candidate (every version is pinned below 0)", label)}
		}
		key := pkgKey{r.name, arch}
		if prev, dup := chosen[key]; dup {
			if prev != pick {
				return nil, &SolveError{Reason: fmt.Sprintf("boot package %s is requested twice, as %s (%s) and %s (%s)", label, prev.Version, sourceSuite(prev), pick.Version, sourceSuite(pick))}
			}
			continue
		}
		chosen[key] = pick
		out = append(out, pick)
	}
	return out, nil
}

func sameVersion(v version.Version, s string) bool {
	w, err := version.Parse(s)
	return err == nil && version.Compare(v, w) == 0
}

func sourceSuite(p *Package) string {
	if p.Index == nil || p.Index.Source == nil {
		return ""
	}
	return p.Index.Source.Suite
}

// resolveRequest finds the node a request names. A name that only other
// packages provide resolves to its provider when there is exactly one,
// as apt does ("Note, selecting 'bar' instead of 'foo'"); with several,
// apt refuses and so does this.
func (s *solver) resolveRequest(r request) (*node, error) {
	arch := r.arch
	if arch == "" {
		arch = s.requestArch(r.name)
	}
	if arch == "native" {
		arch = s.native
	}
	if !s.archOK[arch] {
		return nil, &SolveError{Reason: fmt.Sprintf("%s: architecture %s is not configured (add it to the foreign architectures)", r.spec, arch)}
	}
	if n := s.node(r.name, arch); n != nil {
		if n.excluded {
			return nil, &SolveError{Package: s.label(n), Chain: []string{s.label(n)}, Reason: fmt.Sprintf("%s is both requested and excluded", s.label(n))}
		}
		return n, nil
	}
	a := &atom{poss: dependency.Possibility{Name: r.name}, fromArch: arch}
	provs := s.satisfiers(a)
	var names []string
	seen := map[string]bool{}
	var pick *node
	for _, p := range provs {
		if !seen[p.name] {
			seen[p.name] = true
			names = append(names, s.label(p))
			if pick == nil {
				pick = p
			}
		}
	}
	switch {
	case len(names) == 1:
		if pick.excluded {
			return nil, &SolveError{Package: s.label(pick), Chain: []string{s.label(pick)}, Reason: fmt.Sprintf("%s is requested (as the only provider of %s) and excluded", s.label(pick), r.name)}
		}
		return pick, nil
	case len(names) > 1:
		sort.Strings(names)
		return nil, &SolveError{Reason: fmt.Sprintf("%s is a virtual package provided by %s; request one of them explicitly", s.labelKey(r.name, arch), strings.Join(names, ", "))}
	}
	if len(s.versionsOf(r.name, arch)) > 0 {
		return nil, &SolveError{Reason: fmt.Sprintf("package %s has no installation candidate (every version is pinned below 0)", s.labelKey(r.name, arch))}
	}
	var elsewhere []string
	for _, n := range s.nodesNamed(r.name) {
		elsewhere = append(elsewhere, n.arch)
	}
	if len(elsewhere) > 0 {
		return nil, &SolveError{Reason: fmt.Sprintf("package %s is not available for %s (only for %s)", r.name, arch, strings.Join(elsewhere, ", "))}
	}
	return nil, &SolveError{Reason: fmt.Sprintf("package %s is not available", s.labelKey(r.name, arch))}
}

// baseSet returns the native-architecture packages a variant selects by
// flag, in apt's order (package ID): Essential: yes ones, or those with
// one of the priorities that are not essential (mmdebstrap's
// ?narrow(?architecture(native), ?and(?priority(...), ?not(?essential)))).
func (s *solver) baseSet(essential bool, priorities []string) []*node {
	var out []*node
	seen := map[*node]bool{}
	for _, p := range s.universe {
		if p == nil || s.effArch(p) != s.native {
			continue
		}
		if essential {
			if !p.Essential {
				continue
			}
		} else {
			match := false
			for _, want := range priorities {
				if strings.EqualFold(p.Priority, want) {
					match = true
				}
			}
			if !match {
				continue
			}
		}
		n := s.node(p.Name, s.native)
		if n == nil || n.excluded || seen[n] || (!essential && n.essential) {
			continue
		}
		seen[n] = true
		out = append(out, n)
	}
	return out
}

func sortByID(ns []*node) {
	sort.SliceStable(ns, func(i, j int) bool { return ns[i].id < ns[j].id })
}

func (s *solver) solve() (*Solution, error) {
	essential, withApt, priorities, extra, _ := variantPlan(s.req.Variant)
	var reqs []request
	for _, spec := range s.req.Packages {
		if strings.TrimSpace(spec) == "" {
			continue
		}
		r, err := parseRequest(spec)
		if err != nil {
			return nil, &SolveError{Reason: err.Error()}
		}
		reqs = append(reqs, r)
	}
	for _, name := range extra {
		reqs = append(reqs, request{spec: name, name: name})
	}
	if err := s.pinRequests(reqs); err != nil {
		return nil, err
	}
	s.buildProviders()
	var stage1, prioSet []*node
	if essential {
		stage1 = s.baseSet(true, nil)
	}
	if len(priorities) > 0 {
		prioSet = s.baseSet(false, priorities)
	}
	// Number the nodes whose order matters (apt's package IDs) in one
	// scan: the base sets, and providers, whose ties apt breaks by ID.
	ordered := append(append([]*node(nil), stage1...), prioSet...)
	for _, pes := range s.provs {
		for _, pe := range pes {
			ordered = append(ordered, pe.n)
		}
	}
	s.ensureIDs(ordered)
	sortByID(stage1)
	sortByID(prioSet)
	var stage2 []*node
	var labels []string
	for i, r := range reqs {
		n, err := s.resolveRequest(r)
		if err != nil {
			return nil, err
		}
		stage2 = append(stage2, n)
		label := "requested"
		if i >= len(reqs)-len(extra) {
			label = "variant " + s.req.Variant
		}
		if n.name != r.name {
			label += " (as provider of " + r.name + ")"
		}
		labels = append(labels, label)
	}
	if essential {
		var l1 []string
		for range stage1 {
			l1 = append(l1, "variant "+s.req.Variant+": Essential: yes")
		}
		if withApt {
			if n := s.node("apt", s.native); n != nil && !n.excluded {
				stage1 = append(stage1, n)
				l1 = append(l1, "variant apt")
			}
		}
		if err := s.stage(stage1, l1); err != nil {
			return nil, err
		}
	}
	if len(priorities) > 0 {
		for _, n := range prioSet {
			stage2 = append(stage2, n)
			labels = append(labels, fmt.Sprintf("variant %s: Priority: %s", s.req.Variant, n.pkg.Priority))
		}
	}
	if s.independentStages {
		s.stageOf = map[*node]int{}
		first := s.chosen()
		type why struct {
			parent *node
			via    *relGroup
		}
		whys := make([]why, len(first))
		for i, n := range first {
			s.stageOf[n] = 1
			whys[i] = why{n.parent, n.via}
			n.installed, n.protected = false, false
		}
		s.undoTo(0)
		if err := s.stage(stage2, labels); err != nil {
			return nil, err
		}
		for _, n := range s.chosen() {
			s.stageOf[n] |= 2
		}
		for i, n := range first {
			if !n.selected {
				n.selected = true
				n.parent, n.via = whys[i].parent, whys[i].via
				s.trail = append(s.trail, event{n: n})
			}
		}
		return s.solution(), nil
	}
	if err := s.stage(stage2, labels); err != nil {
		return nil, err
	}
	return s.solution(), nil
}

// stage marks roots as installed, then follows their relations, like one
// apt-get install run. What earlier stages chose stays.
func (s *solver) stage(roots []*node, labels []string) error {
	seen := map[*node]bool{}
	var todo []*node
	for i, n := range roots {
		if seen[n] {
			continue
		}
		seen[n] = true
		todo = append(todo, n)
		if n.selected {
			continue
		}
		if m, why := s.incompatible(n); why != "" {
			culprit := s.label(n)
			if m != nil {
				why += s.chosenBecause(m)
			}
			return &SolveError{Package: culprit, Chain: []string{culprit}, Reason: why}
		}
		s.selectNode(n, -1, nil, nil)
		n.root = labels[i]
	}
	for _, n := range todo {
		s.protect(n)
	}
	for i := len(todo) - 1; i >= 0; i-- {
		s.push(todo[i])
	}
	if err := s.run(); err != nil {
		return err
	}
	if s.evicted > 0 {
		if err := s.repair(); err != nil {
			return err
		}
		s.sweep(todo)
	}
	// What this stage chose is installed now: no later choice can undo it.
	for _, n := range s.chosen() {
		n.level = -1
		n.installed = true
		n.protected = true
	}
	s.points = nil
	return nil
}

func (s *solver) solution() *Solution {
	chosen := s.chosen()
	sol := &Solution{Reasons: make(map[*Package]string, len(chosen))}
	for _, n := range chosen {
		sol.Packages = append(sol.Packages, n.pkg)
		if n.parent == nil {
			sol.Reasons[n.pkg] = n.root
		} else {
			sol.Reasons[n.pkg] = fmt.Sprintf("%s of %s: %s", n.via.kind, s.label(n.parent), n.via.text)
		}
	}
	sort.Slice(sol.Packages, func(i, j int) bool {
		a, b := sol.Packages[i], sol.Packages[j]
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return a.Architecture < b.Architecture
	})
	return sol
}

// pkgKey names a package as apt's cache does: name and architecture
// ("all" mapped to the native one).
type pkgKey struct{ name, arch string }

func (k pkgKey) String() string { return k.name + ":" + k.arch }
