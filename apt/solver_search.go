package apt

import (
	"fmt"
	"sort"
	"strings"

	"pault.ag/go/debian/dependency"
	"pault.ag/go/debian/version"
)

// The search follows apt's pkgDepCache::MarkInstall: depth first, each
// package's relation groups in order, the first installable alternative
// of an unsatisfied group wins. It is written as an explicit agenda (a
// persistent stack of frames) so that a choice point can save and restore
// the rest of the walk in O(1).

// frame is "process relation group i of n next" (and the following ones,
// unless only).
type frame struct {
	n    *node
	i    int
	only bool
	next *frame
}

// choicePoint is an unsatisfied relation group and the candidates for it.
type choicePoint struct {
	owner    *node
	group    *relGroup
	cands    []*node
	next     int // index of the next candidate to try
	level    int
	trailLen int
	agenda   *frame       // the walk to resume after this group
	culprits map[int]bool // choice points that made candidates fail
	notes    []why        // why each tried candidate failed
}

// failure explains why a relation group cannot be satisfied and which
// earlier choices (levels) are to blame.
type failure struct {
	levels map[int]bool
	why    why
}

// why is an explanation: the chain of packages from a requested one to
// the relation that failed, and what failed.
type why struct {
	chain []string
	text  string
}

// relVerb turns a relation field into a verb: "depends on", "conflicts with".
func relVerb(kind string) string {
	switch kind {
	case "Pre-Depends":
		return "pre-depends on"
	case "Depends":
		return "depends on"
	case "Recommends":
		return "recommends"
	case "Conflicts":
		return "conflicts with"
	case "Breaks":
		return "breaks"
	}
	return strings.ToLower(kind)
}

// prepare computes a node's relations and provides on first use.
func (s *solver) prepare(n *node) {
	if n.built {
		return
	}
	n.built = true
	p := n.pkg
	n.groups = append(n.groups, s.relGroups(n, "Pre-Depends", p.PreDepends, false)...)
	n.groups = append(n.groups, s.relGroups(n, "Depends", p.Depends, false)...)
	if s.req.Recommends {
		n.groups = append(n.groups, s.relGroups(n, "Recommends", p.Recommends, true)...)
	}
	for _, f := range []struct {
		kind string
		d    dependency.Dependency
	}{{"Conflicts", p.Conflicts}, {"Breaks", p.Breaks}} {
		for _, r := range f.d.Relations {
			for _, poss := range r.Possibilities {
				nr := negRel{kind: f.kind, poss: poss, qual: s.resolveQual(archQualifier(poss))}
				if poss.Version != nil {
					v, err := version.Parse(strings.TrimSpace(poss.Version.Number))
					if err != nil {
						continue // a conflict we cannot read matches nothing
					}
					nr.ver = &v
				}
				n.negs = append(n.negs, nr)
			}
		}
	}
	s.prepareProvides(n)
}

// relGroups turns a relation field of n into groups of alternatives.
func (s *solver) relGroups(n *node, kind string, d dependency.Dependency, optional bool) []*relGroup {
	var out []*relGroup
	for _, r := range d.Relations {
		g := &relGroup{kind: kind, optional: optional}
		var text []string
		for _, poss := range r.Possibilities {
			if !archListOK(poss, n.arch) {
				continue
			}
			a := &atom{poss: poss, qual: s.resolveQual(archQualifier(poss)), fromArch: n.arch}
			if poss.Version != nil {
				v, err := version.Parse(strings.TrimSpace(poss.Version.Number))
				if err != nil {
					a.bad = true // nothing satisfies a relation we cannot read
				}
				a.ver = &v
			}
			g.atoms = append(g.atoms, a)
			text = append(text, possString(poss))
		}
		if len(g.atoms) == 0 {
			continue
		}
		g.text = strings.Join(text, " | ")
		out = append(out, g)
	}
	return out
}

func (s *solver) prepareProvides(n *node) {
	if !n.provBuilt {
		n.provBuilt = true
		n.provides = s.providesOf(n)
	}
}

// providesOf parses a node's Provides; apt ignores provides with an
// operator other than "=".
func (s *solver) providesOf(n *node) []provide {
	var out []provide
	for _, r := range n.pkg.Provides.Relations {
		for _, poss := range r.Possibilities {
			pr := provide{name: poss.Name, qual: s.resolveQual(archQualifier(poss))}
			if pr.qual == "any" {
				pr.qual = ""
			}
			if poss.Version != nil {
				if poss.Version.Operator != "=" {
					continue
				}
				v, err := version.Parse(strings.TrimSpace(poss.Version.Number))
				if err != nil {
					continue
				}
				pr.ver = &v
			}
			if pr.name == n.name && pr.qual == "" && (pr.ver == nil || version.Compare(*pr.ver, n.pkg.Version) == 0) {
				continue // self-provides add nothing
			}
			out = append(out, pr)
		}
	}
	return out
}

// archListOK applies a relation's [arch list]; Packages indexes do not
// carry them, but a hand-written universe might.
func archListOK(p dependency.Possibility, arch string) bool {
	if p.Architectures == nil || len(p.Architectures.Architectures) == 0 {
		return true
	}
	match := false
	for _, a := range p.Architectures.Architectures {
		if a.String() == arch {
			match = true
		}
	}
	return match != p.Architectures.Not
}

func (s *solver) resolveQual(q string) string {
	if q == "native" {
		return s.native
	}
	return q
}

func possString(p dependency.Possibility) string {
	s := p.Name
	if q := archQualifier(p); q != "" {
		s += ":" + q
	}
	if p.Version != nil {
		s += " (" + p.Version.Operator + " " + strings.TrimSpace(p.Version.Number) + ")"
	}
	return s
}

// buildProviders indexes the Provides of every candidate. It runs after
// requests have changed candidates ("name=version").
func (s *solver) buildProviders() {
	s.provs = map[string][]provEntry{}
	for _, p := range s.universe {
		if p == nil || len(p.Provides.Relations) == 0 {
			continue
		}
		n := s.node(p.Name, s.effArch(p))
		if n == nil || n.pkg != p || n.provBuilt {
			continue // not the candidate, or seen already
		}
		s.prepareProvides(n)
		for i := range n.provides {
			pr := &n.provides[i]
			s.provs[pr.name] = append(s.provs[pr.name], provEntry{n, pr})
		}
	}
}

func versionOK(have version.Version, op string, want *version.Version) bool {
	if want == nil {
		return true
	}
	c := version.Compare(have, *want)
	switch op {
	case "<<":
		return c < 0
	case "<=":
		return c <= 0
	case "=":
		return c == 0
	case ">=":
		return c >= 0
	case ">>":
		return c > 0
	}
	return false
}

func atomOp(p dependency.Possibility) string {
	if p.Version == nil {
		return ""
	}
	return p.Version.Operator
}

// provideOK reports whether a Provides satisfies (or, for negative
// relations, matches) a relation: an unversioned Provides only
// unversioned relations.
func provideOK(pr *provide, op string, want *version.Version) bool {
	if want == nil {
		return true
	}
	if pr.ver == nil {
		return false
	}
	return versionOK(*pr.ver, op, want)
}

// satisfiers returns the candidates that satisfy an atom of a relation
// of a package of architecture a.fromArch, in apt's order of preference.
func (s *solver) satisfiers(a *atom) []*node {
	if a.sats != nil {
		return a.sats
	}
	key := satKey{name: a.poss.Name, qual: a.qual, op: atomOp(a.poss), fromArch: a.fromArch}
	if a.poss.Version != nil {
		key.ver = strings.TrimSpace(a.poss.Version.Number)
	}
	if sats, ok := s.satMemo[key]; ok {
		a.sats = sats
		return sats
	}
	op := key.op
	if a.bad {
		a.sats = []*node{}
		return a.sats
	}
	var out []*node
	seen := map[*node]bool{}
	add := func(n *node) {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	name := a.poss.Name
	switch a.qual {
	case "":
		// The real package of the same architecture first (apt's target
		// package), then Multi-Arch: foreign ones of other architectures.
		if n := s.node(name, a.fromArch); n != nil && versionOK(n.pkg.Version, op, a.ver) {
			add(n)
		}
		for _, n := range s.nodesNamed(name) {
			if n.arch != a.fromArch && n.pkg.MultiArch == "foreign" && versionOK(n.pkg.Version, op, a.ver) {
				add(n)
			}
		}
		for _, pe := range s.provs[name] {
			if pe.p.qual != "" && pe.p.qual != a.fromArch {
				continue
			}
			if pe.n.arch != a.fromArch && pe.n.pkg.MultiArch != "foreign" {
				continue
			}
			if provideOK(pe.p, op, a.ver) {
				add(pe.n)
			}
		}
	case "any":
		for _, n := range s.nodesNamed(name) {
			if n.pkg.MultiArch == "allowed" && versionOK(n.pkg.Version, op, a.ver) {
				add(n)
			}
		}
		for _, pe := range s.provs[name] {
			if pe.n.pkg.MultiArch == "allowed" && provideOK(pe.p, op, a.ver) {
				add(pe.n)
			}
		}
	default:
		if n := s.node(name, a.qual); n != nil && versionOK(n.pkg.Version, op, a.ver) {
			add(n)
		}
		for _, pe := range s.provs[name] {
			if (pe.p.qual == a.qual || pe.p.qual == "" && pe.n.arch == a.qual) && provideOK(pe.p, op, a.ver) {
				add(pe.n)
			}
		}
	}
	s.sortProviders(out, name)
	if out == nil {
		out = []*node{}
	}
	s.satMemo[key] = out
	a.sats = out
	return out
}

// sortProviders orders the satisfiers of one alternative as apt's
// CompareProviders does for a fresh install: the package of the relation's
// own name first, then Essential, then Important packages, the native
// architecture, then the configured architectures in order, then the
// Priority field (required first), then the higher package ID.
func (s *solver) sortProviders(ns []*node, target string) {
	archRank := func(a string) int {
		for i, x := range s.archs {
			if x == a {
				return i
			}
		}
		return len(s.archs)
	}
	if len(ns) < 2 {
		return
	}
	sort.SliceStable(ns, func(i, j int) bool {
		a, b := ns[i], ns[j]
		if (a.name == target) != (b.name == target) {
			return a.name == target
		}
		if a.essential != b.essential {
			return a.essential
		}
		if a.important != b.important {
			return a.important
		}
		if a.arch != b.arch {
			return archRank(a.arch) < archRank(b.arch)
		}
		if a.prio != b.prio {
			return a.prio < b.prio
		}
		if a.id < 0 || b.id < 0 {
			s.ensureIDs(ns) // rare: providers are numbered up front
		}
		return a.id > b.id
	})
}

// satisfied reports whether a chosen package satisfies the group.
func (s *solver) satisfied(g *relGroup) bool {
	for _, a := range g.atoms {
		for _, n := range s.satisfiers(a) {
			if n.selected {
				return true
			}
		}
	}
	return false
}

// candidates lists the satisfiers of a group in the order apt tries them.
func (s *solver) candidates(g *relGroup) []*node {
	var out []*node
	for _, a := range g.atoms {
		out = append(out, s.satisfiers(a)...)
	}
	return out
}

// negMatches reports whether negative relation r of owner applies to n.
func (s *solver) negMatches(owner *node, r *negRel, n *node) bool {
	if n == owner {
		return false
	}
	op := atomOp(r.poss)
	if n.name == r.poss.Name && (r.qual == "" || r.qual == "any" || r.qual == n.arch) {
		// A Multi-Arch: same package does not conflict with its other
		// architectures by name (apt's IsIgnorable).
		if !(owner.pkg.MultiArch == "same" && n.name == owner.name) && versionOK(n.pkg.Version, op, r.ver) {
			return true
		}
	}
	if n.name == owner.name {
		return false // provides of the own package group never conflict
	}
	for i := range n.provides {
		pr := &n.provides[i]
		if pr.name != r.poss.Name {
			continue
		}
		if r.qual != "" && r.qual != "any" && r.qual != n.arch && pr.qual != r.qual {
			continue
		}
		if provideOK(pr, op, r.ver) {
			return true
		}
	}
	return false
}

// incompatible returns why n cannot join the chosen set: the chosen
// package it clashes with (or nil for a reason of its own) and a message.
func (s *solver) incompatible(n *node) (*node, string) {
	if n.excluded {
		return nil, s.label(n) + " is excluded"
	}
	// Same name: one version per architecture; several architectures
	// only when all are Multi-Arch: same at the same version.
	for _, m := range s.selName[n.name] {
		if m == n {
			continue
		}
		if m.arch == n.arch {
			return m, fmt.Sprintf("%s %s is already chosen", s.label(m), m.pkg.Version)
		}
		if n.pkg.MultiArch != "same" || m.pkg.MultiArch != "same" {
			return m, fmt.Sprintf("%s cannot be installed next to %s (not both Multi-Arch: same)", s.label(n), s.label(m))
		}
		if version.Compare(n.pkg.Version, m.pkg.Version) != 0 {
			return m, fmt.Sprintf("%s %s must have the same version as %s %s (Multi-Arch: same)", s.label(n), n.pkg.Version, s.label(m), m.pkg.Version)
		}
	}
	s.prepare(n)
	// n's Conflicts and Breaks against chosen packages.
	for i := range n.negs {
		r := &n.negs[i]
		for _, m := range s.selName[r.poss.Name] {
			if s.negMatches(n, r, m) {
				return m, fmt.Sprintf("%s %s %s", s.label(n), relVerb(r.kind), s.describeClash(r, m))
			}
		}
		for _, pe := range s.selProv[r.poss.Name] {
			if s.negMatches(n, r, pe.n) {
				return pe.n, fmt.Sprintf("%s %s %s", s.label(n), relVerb(r.kind), s.describeClash(r, pe.n))
			}
		}
	}
	// Chosen packages' Conflicts and Breaks against n.
	names := []string{n.name}
	for _, pr := range n.provides {
		names = append(names, pr.name)
	}
	for _, name := range names {
		for _, ne := range s.selNegs[name] {
			if s.negMatches(ne.owner, ne.rel, n) {
				return ne.owner, fmt.Sprintf("%s %s %s", s.label(ne.owner), relVerb(ne.rel.kind), s.describeClash(ne.rel, n))
			}
		}
	}
	return nil, ""
}

func (s *solver) describeClash(r *negRel, m *node) string {
	rel := possString(r.poss)
	if r.poss.Name == m.name {
		if rel == m.name {
			return rel
		}
		return fmt.Sprintf("%s (%s %s is chosen)", rel, s.label(m), m.pkg.Version)
	}
	return fmt.Sprintf("%s (provided by %s)", rel, s.label(m))
}

// staticProblem reports why n can never be installed, whatever else is
// chosen: apt's IsInstallOkDependenciesSatisfiableByCandidates, which
// refuses a package when a critical relation has no candidate at all. It
// returns the relation and the explanation.
func (s *solver) staticProblem(n *node) (*relGroup, string) {
	if n.excluded {
		return nil, s.label(n) + " is excluded"
	}
	s.prepare(n)
	for _, g := range n.groups {
		if g.optional {
			continue
		}
		ok := false
		for _, c := range s.candidates(g) {
			if !c.excluded {
				ok = true
				break
			}
		}
		if !ok {
			return g, fmt.Sprintf("%s %s %s, but %s", s.label(n), relVerb(g.kind), g.text, s.whyNoCandidate(g))
		}
	}
	return nil, ""
}

// event is one change of the chosen set, so that backtracking can undo
// it: a node chosen, or a chosen node evicted (see evict).
type event struct {
	n       *node
	evicted bool
	// for an eviction, the node's state before it
	level  int
	parent *node
	via    *relGroup
}

func (s *solver) selectNode(n *node, level int, parent *node, via *relGroup) {
	n.selected = true
	n.level = level
	n.parent = parent
	n.via = via
	s.trail = append(s.trail, event{n: n})
	s.addIndexes(n)
}

// evict unchoses n, as apt's MarkKeep does when a package marked later
// conflicts with it. Its dependencies stay until the sweep.
func (s *solver) evict(n *node) {
	s.trail = append(s.trail, event{n: n, evicted: true, level: n.level, parent: n.parent, via: n.via})
	n.selected = false
	s.removeIndexes(n)
}

func (s *solver) addIndexes(n *node) {
	s.selName[n.name] = append(s.selName[n.name], n)
	s.prepare(n)
	for i := range n.provides {
		pr := &n.provides[i]
		s.selProv[pr.name] = append(s.selProv[pr.name], provEntry{n, pr})
	}
	for i := range n.negs {
		r := &n.negs[i]
		s.selNegs[r.poss.Name] = append(s.selNegs[r.poss.Name], negEntry{n, r})
	}
}

// removeIndexes takes n out of the per-name indexes. Without evictions
// n's entries are the last ones; with them they can be anywhere.
func (s *solver) removeIndexes(n *node) {
	s.selName[n.name] = removeNode(s.selName[n.name], n)
	for i := range n.provides {
		name := n.provides[i].name
		l := s.selProv[name]
		for j := len(l) - 1; j >= 0; j-- {
			if l[j].n == n {
				s.selProv[name] = append(l[:j], l[j+1:]...)
				break
			}
		}
	}
	for i := range n.negs {
		name := n.negs[i].poss.Name
		l := s.selNegs[name]
		for j := len(l) - 1; j >= 0; j-- {
			if l[j].owner == n {
				s.selNegs[name] = append(l[:j], l[j+1:]...)
				break
			}
		}
	}
}

func removeNode(l []*node, n *node) []*node {
	for j := len(l) - 1; j >= 0; j-- {
		if l[j] == n {
			return append(l[:j], l[j+1:]...)
		}
	}
	return l
}

// undoTo undoes the changes after the trail had length l.
func (s *solver) undoTo(l int) {
	for len(s.trail) > l {
		e := s.trail[len(s.trail)-1]
		s.trail = s.trail[:len(s.trail)-1]
		n := e.n
		if e.evicted {
			n.selected = true
			n.level, n.parent, n.via = e.level, e.parent, e.via
			s.addIndexes(n)
			continue
		}
		n.selected = false
		n.level = -1
		n.parent = nil
		n.via = nil
		s.removeIndexes(n)
	}
}

// chosen lists the chosen nodes in the order they were chosen.
func (s *solver) chosen() []*node {
	var out []*node
	seen := map[*node]bool{}
	for _, e := range s.trail {
		if !e.evicted && e.n.selected && !seen[e.n] {
			seen[e.n] = true
			out = append(out, e.n)
		}
	}
	return out
}

// push schedules n's relation groups, to be processed before what is on
// the agenda now.
func (s *solver) push(n *node) {
	s.prepare(n)
	if len(n.groups) > 0 {
		s.top = &frame{n: n, i: 0, next: s.top}
	}
}

// run walks the agenda until it is empty (success) or a failure cannot be
// undone by any choice (the returned error).
func (s *solver) run() error {
	for s.top != nil {
		f := s.top
		s.top = f.next
		if !f.only && f.i+1 < len(f.n.groups) {
			s.top = &frame{n: f.n, i: f.i + 1, next: s.top}
		}
		g := f.n.groups[f.i]
		if s.satisfied(g) {
			continue
		}
		cp := &choicePoint{
			owner:    f.n,
			group:    g,
			cands:    s.candidates(g),
			level:    len(s.points),
			trailLen: len(s.trail),
			agenda:   s.top,
			culprits: map[int]bool{},
		}
		s.points = append(s.points, cp)
		if s.advance(cp) {
			continue
		}
		if err := s.backjump(s.exhausted(cp)); err != nil {
			return err
		}
	}
	return nil
}

// advance chooses the next workable candidate of cp; false when none is
// left. An optional group (Recommends) then succeeds with nothing chosen.
func (s *solver) advance(cp *choicePoint) bool {
	for cp.next < len(cp.cands) {
		c := cp.cands[cp.next]
		cp.next++
		s.steps++
		if g, text := s.staticProblem(c); text != "" {
			chain := append(s.chain(cp.owner), s.label(c))
			if g != nil {
				chain = append(chain, g.text)
			}
			cp.notes = append(cp.notes, why{chain, text})
			continue
		}
		if m, text := s.incompatible(c); text != "" {
			if s.evictions && s.evictFor(c) {
				s.selectNode(c, cp.level, cp.owner, cp.group)
				s.push(c)
				return true
			}
			if m != nil {
				cp.culprits[m.level] = true
				text += s.chosenBecause(m)
			}
			cp.notes = append(cp.notes, why{append(s.chain(cp.owner), s.label(c)), text})
			continue
		}
		s.selectNode(c, cp.level, cp.owner, cp.group)
		s.push(c)
		return true
	}
	if cp.group.optional {
		// Nothing is chosen at this level; drop the point so that levels
		// stay the indexes of the points that chose something.
		s.points = s.points[:len(s.points)-1]
		return true
	}
	return false
}

// evictFor does what apt's MarkInstall does when c's own Conflicts or
// Breaks hit packages marked before: it unmarks them, unless one is
// protected (requested, installed by an earlier stage, or the only way to
// satisfy a relation of a protected package), and lets the repair pass
// re-satisfy what needed them. It reports whether c can now be chosen;
// if not, nothing is changed.
func (s *solver) evictFor(c *node) bool {
	var victims []*node
	for i := range c.negs {
		r := &c.negs[i]
		for _, m := range s.selName[r.poss.Name] {
			if s.negMatches(c, r, m) {
				victims = append(victims, m)
			}
		}
		for _, pe := range s.selProv[r.poss.Name] {
			if s.negMatches(c, r, pe.n) {
				victims = append(victims, pe.n)
			}
		}
	}
	if len(victims) == 0 {
		return false
	}
	for _, m := range victims {
		if m.protected {
			return false
		}
	}
	mark := len(s.trail)
	for _, m := range victims {
		if m.selected {
			s.evict(m)
		}
	}
	if _, text := s.incompatible(c); text != "" {
		s.undoTo(mark)
		return false
	}
	s.evicted++
	return true
}

// protect marks n and, transitively, the only candidate of each of its
// critical relations as protected, as apt's MarkInstall propagates the
// protection of requested packages.
func (s *solver) protect(n *node) {
	if n.protected {
		return
	}
	n.protected = true
	s.prepare(n)
	for _, g := range n.groups {
		if g.optional {
			continue
		}
		var only *node
		count := 0
		for _, c := range s.candidates(g) {
			if c != only {
				only = c
				count++
			}
		}
		if count == 1 {
			s.protect(only)
		}
	}
}

// broken lists the critical relation groups of chosen packages that no
// chosen package satisfies (after evictions), in the order of choice.
func (s *solver) broken() []*frame {
	var out []*frame
	for _, n := range s.chosen() {
		for i, g := range n.groups {
			if !g.optional && !s.satisfied(g) {
				out = append(out, &frame{n: n, i: i, only: true})
			}
		}
	}
	return out
}

// repair re-satisfies relations that evictions broke, as apt's problem
// resolver does in the simple cases: the alternatives in order.
func (s *solver) repair() error {
	for round := 0; round < 100; round++ {
		broken := s.broken()
		if len(broken) == 0 {
			return nil
		}
		for i := len(broken) - 1; i >= 0; i-- {
			f := broken[i]
			f.next = s.top
			s.top = f
		}
		if err := s.run(); err != nil {
			return err
		}
	}
	return errEmulation
}

// sweep drops what apt's autoremover would not install: chosen packages
// that no root reaches through Pre-Depends, Depends, Recommends or
// Suggests (only evictions leave such packages behind). Roots are the
// requested packages, those of earlier stages and Essential or Important
// ones.
func (s *solver) sweep(roots []*node) {
	if s.evicted == 0 {
		return
	}
	chosen := s.chosen()
	keep := map[*node]bool{}
	var queue []*node
	add := func(n *node) {
		if n.selected && !keep[n] {
			keep[n] = true
			queue = append(queue, n)
		}
	}
	for _, n := range roots {
		add(n)
	}
	for _, n := range chosen {
		if n.installed || n.essential || n.important {
			add(n)
		}
	}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		for _, g := range s.markGroups(n) {
			for _, a := range g.atoms {
				for _, m := range s.satisfiers(a) {
					add(m)
				}
			}
		}
	}
	for _, n := range chosen {
		if !keep[n] {
			s.evict(n)
		}
	}
}

// markGroups are the relations apt's autoremover follows.
func (s *solver) markGroups(n *node) []*relGroup {
	if n.markGroups == nil {
		s.prepare(n)
		n.markGroups = append([]*relGroup{}, n.groups...)
		if !s.req.Recommends {
			n.markGroups = append(n.markGroups, s.relGroups(n, "Recommends", n.pkg.Recommends, true)...)
		}
		n.markGroups = append(n.markGroups, s.relGroups(n, "Suggests", n.pkg.Suggests, true)...)
	}
	return n.markGroups
}

// exhausted turns a choice point without candidates left into a failure,
// and pops it.
func (s *solver) exhausted(cp *choicePoint) *failure {
	f := &failure{levels: cp.culprits}
	f.levels[cp.owner.level] = true
	f.why = s.explain(cp)
	s.points = s.points[:len(s.points)-1]
	return f
}

// backjump returns to the latest choice point that f blames and takes its
// next candidate; nil when the walk can go on, an error when no choice
// is to blame.
func (s *solver) backjump(f *failure) error {
	for {
		if s.steps > maxSteps {
			return s.failureError(f, fmt.Sprintf(" (gave up after %d steps)", s.steps))
		}
		target := -1
		for l := range f.levels {
			if l > target {
				target = l
			}
		}
		if target < 0 || target >= len(s.points) {
			return s.failureError(f, "")
		}
		s.points = s.points[:target+1]
		cp := s.points[target]
		s.undoTo(cp.trailLen)
		s.top = cp.agenda
		for l := range f.levels {
			if l != target {
				cp.culprits[l] = true
			}
		}
		cp.notes = append(cp.notes, f.why)
		if s.advance(cp) {
			return nil
		}
		f = s.exhausted(cp)
	}
}

// chosenBecause says why a chosen package is there, for messages.
func (s *solver) chosenBecause(m *node) string {
	chain := s.chain(m)
	if len(chain) <= 1 {
		if m.root != "" {
			return fmt.Sprintf(" (%s is %s)", s.label(m), m.root)
		}
		return ""
	}
	return " (chosen for " + strings.Join(chain, " -> ") + ")"
}

// chain lists the packages from a root to n.
func (s *solver) chain(n *node) []string {
	var out []string
	for m := n; m != nil; m = m.parent {
		out = append(out, s.label(m))
		if len(out) > 100 {
			break
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// failureError turns the failure that no choice can undo into an error.
func (s *solver) failureError(f *failure, suffix string) error {
	pkg := ""
	if len(f.why.chain) > 0 {
		pkg = f.why.chain[0]
	}
	return &SolveError{Package: pkg, Chain: f.why.chain, Reason: f.why.text + suffix}
}

// explain says why no candidate of cp could be installed. When one
// candidate was tried, its own failure is the explanation.
func (s *solver) explain(cp *choicePoint) why {
	chain := append(s.chain(cp.owner), cp.group.text)
	head := fmt.Sprintf("%s %s %s, but ", s.label(cp.owner), relVerb(cp.group.kind), cp.group.text)
	if len(cp.cands) == 0 {
		return why{chain, head + s.whyNoCandidate(cp.group)}
	}
	var none []string
	for _, a := range cp.group.atoms {
		if len(s.satisfiers(a)) == 0 {
			none = append(none, s.whyNoAtom(a))
		}
	}
	if len(cp.notes) == 1 && len(none) == 0 {
		return cp.notes[0]
	}
	notes := cp.notes
	const maxNotes = 4
	more := ""
	if len(notes) > maxNotes {
		more = fmt.Sprintf("; and %d more", len(notes)-maxNotes)
		notes = notes[:maxNotes]
	}
	var parts []string
	for _, n := range notes {
		parts = append(parts, n.text)
	}
	body := strings.Join(parts, "; ") + more
	if len(none) > 0 {
		body += "; " + strings.Join(none, "; ")
	}
	// Keep messages readable when failures nest deeply.
	if len(body) > 2000 {
		body = body[:2000] + "..."
	}
	return why{chain, head + body}
}

// whyNoCandidate explains a group none of whose alternatives has an
// installable candidate.
func (s *solver) whyNoCandidate(g *relGroup) string {
	var parts []string
	for _, a := range g.atoms {
		sats := s.satisfiers(a)
		if len(sats) == 0 {
			parts = append(parts, s.whyNoAtom(a))
			continue
		}
		var ex []string
		for _, n := range sats {
			if n.excluded {
				ex = append(ex, s.label(n))
			}
		}
		switch len(ex) {
		case 0:
		case 1:
			parts = append(parts, ex[0]+" is excluded")
		default:
			parts = append(parts, strings.Join(ex, ", ")+" are excluded")
		}
	}
	return strings.Join(parts, "; ")
}

// whyNoAtom explains why nothing satisfies one alternative.
func (s *solver) whyNoAtom(a *atom) string {
	name := a.poss.Name
	arch := a.fromArch
	if a.qual != "" && a.qual != "any" {
		arch = a.qual
	}
	rel := possString(a.poss)
	if a.bad {
		return fmt.Sprintf("%s has an invalid version", rel)
	}
	if a.qual == "any" {
		if len(s.nodesNamed(name)) > 0 {
			return fmt.Sprintf("%s is not Multi-Arch: allowed, so nothing satisfies %s", name, rel)
		}
	}
	if n := s.node(name, arch); n != nil {
		// The package exists: its candidate has the wrong version.
		var others []string
		for _, p := range s.versionsOf(name, arch) {
			if p != n.pkg && versionOK(p.Version, atomOp(a.poss), a.ver) {
				others = append(others, fmt.Sprintf("%s from %s", p.Version, sourceName(p)))
			}
		}
		msg := fmt.Sprintf("%s %s is the candidate version", s.labelKey(name, arch), n.pkg.Version)
		if len(s.versionsOf(name, arch)) == 1 {
			msg = fmt.Sprintf("only %s %s is available", s.labelKey(name, arch), n.pkg.Version)
		}
		if len(others) > 0 {
			msg += fmt.Sprintf(" (%s has a lower priority)", strings.Join(others, ", "))
		}
		return msg
	}
	if others := s.nodesNamed(name); len(others) > 0 && a.qual == "" {
		var archs []string
		for _, o := range others {
			archs = append(archs, o.arch)
		}
		return fmt.Sprintf("%s is not available for %s (only for %s, and not Multi-Arch: foreign)", name, arch, strings.Join(archs, ", "))
	}
	if pes := s.provs[name]; len(pes) > 0 {
		var provs []string
		for _, pe := range pes {
			v := ""
			if pe.p.ver != nil {
				v = " (= " + pe.p.ver.String() + ")"
			}
			provs = append(provs, s.label(pe.n)+" provides "+name+v)
		}
		sort.Strings(provs)
		if len(provs) > 5 {
			provs = append(provs[:5], "...")
		}
		return fmt.Sprintf("no provider satisfies %s (%s)", rel, strings.Join(provs, ", "))
	}
	if len(s.versionsOf(name, arch)) > 0 {
		return fmt.Sprintf("%s has no installable version (pin priority below 0)", s.labelKey(name, arch))
	}
	return fmt.Sprintf("%s is not available", s.labelKey(name, arch))
}

func (s *solver) labelKey(name, arch string) string {
	if arch == s.native {
		return name
	}
	return name + ":" + arch
}

func sourceName(p *Package) string {
	if p.Index == nil || p.Index.Source == nil {
		return "an unnamed source"
	}
	return p.Index.Source.String()
}
