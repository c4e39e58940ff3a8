package apt

import (
	"fmt"
	"math/rand"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"pault.ag/go/debian/dependency"
	"pault.ag/go/debian/version"
)

// TestSolveRandomUniverses checks the solver against brute force on many
// small random universes: whatever Solve returns must be a consistent
// install (every Pre-Depends and Depends satisfied inside the set, no
// Conflicts or Breaks between its members, the requests in it), and Solve
// must fail only when no consistent set exists at all.
func TestSolveRandomUniverses(t *testing.T) {
	rounds, seed := 3000, int64(1)
	if testing.Short() {
		rounds = 300
	}
	if v, err := strconv.Atoi(os.Getenv("AOF_RANDOM_ROUNDS")); err == nil && v > 0 {
		rounds, seed = v, time.Now().UnixNano()
		t.Logf("seed %d", seed)
	}
	rng := rand.New(rand.NewSource(seed))
	solved, refused := 0, 0
	for round := 0; round < rounds; round++ {
		text, req := randomUniverse(rng)
		u := uni(t, nil, text)
		sol, err := Solve(u, req)
		exists := bruteForceSolvable(u, req)
		if err != nil {
			if _, ok := err.(*SolveError); !ok {
				t.Fatalf("round %d: error of type %T: %v", round, err, err)
			}
			if exists {
				t.Fatalf("round %d: Solve failed (%v) but a solution exists\nrequest %v\n%s", round, err, req.Packages, text)
			}
			refused++
			continue
		}
		if !exists {
			t.Fatalf("round %d: Solve returned %v but brute force finds no solution\n%s", round, names(sol), text)
		}
		if why := checkInstall(sol.Packages, req); why != "" {
			t.Fatalf("round %d: Solve returned an inconsistent set %v: %s\nrequest %v\n%s", round, names(sol), why, req.Packages, text)
		}
		solved++
	}
	t.Logf("%d solved, %d refused", solved, refused)
}

func randomUniverse(rng *rand.Rand) (string, Request) {
	n := 4 + rng.Intn(8)
	name := func(i int) string { return fmt.Sprintf("p%d", i) }
	rel := func() string {
		target := rng.Intn(n + 2) // sometimes a name nobody has, or a virtual one
		s := name(target)
		if target >= n {
			s = fmt.Sprintf("v%d", target-n)
		}
		if rng.Intn(3) == 0 {
			ops := []string{"<<", "<=", "=", ">=", ">>"}
			s += fmt.Sprintf(" (%s %d)", ops[rng.Intn(len(ops))], 1+rng.Intn(3))
		}
		return s
	}
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "Package: %s\nVersion: %d\n", name(i), 1+rng.Intn(3))
		if k := rng.Intn(3); k > 0 {
			var groups []string
			for j := 0; j < k; j++ {
				alts := []string{rel()}
				for rng.Intn(2) == 0 && len(alts) < 3 {
					alts = append(alts, rel())
				}
				groups = append(groups, strings.Join(alts, " | "))
			}
			fmt.Fprintf(&b, "Depends: %s\n", strings.Join(groups, ", "))
		}
		if rng.Intn(3) == 0 {
			fmt.Fprintf(&b, "Conflicts: %s\n", rel())
		}
		if rng.Intn(5) == 0 {
			fmt.Fprintf(&b, "Breaks: %s\n", rel())
		}
		if rng.Intn(3) == 0 {
			v := fmt.Sprintf("v%d", rng.Intn(2))
			if rng.Intn(2) == 0 {
				v += fmt.Sprintf(" (= %d)", 1+rng.Intn(3))
			}
			fmt.Fprintf(&b, "Provides: %s\n", v)
		}
		b.WriteString("\n")
	}
	req := Request{Architecture: "amd64"}
	for k := 1 + rng.Intn(2); k > 0; k-- {
		req.Packages = append(req.Packages, name(rng.Intn(n)))
	}
	if rng.Intn(4) == 0 {
		req.Excludes = []string{name(rng.Intn(n))}
	}
	return b.String(), req
}

// bruteForceSolvable tries every subset of the universe (one version per
// name in these universes).
func bruteForceSolvable(u []*Package, req Request) bool {
	excluded := map[string]bool{}
	for _, x := range req.Excludes {
		excluded[x] = true
	}
	var must, may []*Package
	for _, p := range u {
		isReq := false
		for _, r := range req.Packages {
			if r == p.Name {
				isReq = true
			}
		}
		switch {
		case isReq && excluded[p.Name]:
			return false
		case isReq:
			must = append(must, p)
		case !excluded[p.Name]:
			may = append(may, p)
		}
	}
	for mask := 0; mask < 1<<len(may); mask++ {
		set := append([]*Package(nil), must...)
		for i, p := range may {
			if mask&(1<<i) != 0 {
				set = append(set, p)
			}
		}
		if checkInstall(set, req) == "" {
			return true
		}
	}
	return false
}

// checkInstall is an independent, simple statement of the rules for one
// architecture: "" when set is a consistent install of req.
func checkInstall(set []*Package, req Request) string {
	for _, r := range req.Packages {
		found := false
		for _, p := range set {
			if p.Name == r {
				found = true
			}
		}
		if !found {
			return r + " is not installed"
		}
	}
	satisfies := func(q *Package, poss dependency.Possibility, negative bool, owner *Package) bool {
		var want *version.Version
		if poss.Version != nil {
			v, err := version.Parse(poss.Version.Number)
			if err != nil {
				return false
			}
			want = &v
		}
		op := ""
		if poss.Version != nil {
			op = poss.Version.Operator
		}
		if q.Name == poss.Name && !(negative && q == owner) && versionOK(q.Version, op, want) {
			return true
		}
		if negative && q.Name == owner.Name {
			return false
		}
		for _, r := range q.Provides.Relations {
			for _, pr := range r.Possibilities {
				if pr.Name != poss.Name {
					continue
				}
				if want == nil {
					return true
				}
				if pr.Version == nil {
					continue
				}
				pv, err := version.Parse(pr.Version.Number)
				if err == nil && versionOK(pv, op, want) {
					return true
				}
			}
		}
		return false
	}
	for _, p := range set {
		for _, d := range []dependency.Dependency{p.PreDepends, p.Depends} {
			for _, r := range d.Relations {
				ok := false
				for _, poss := range r.Possibilities {
					for _, q := range set {
						if satisfies(q, poss, false, p) {
							ok = true
						}
					}
				}
				if !ok {
					return fmt.Sprintf("%s: unsatisfied %s", p.Name, dependency.Dependency{Relations: []dependency.Relation{r}}.String())
				}
			}
		}
		for _, d := range []dependency.Dependency{p.Conflicts, p.Breaks} {
			for _, r := range d.Relations {
				for _, poss := range r.Possibilities {
					for _, q := range set {
						if q != p && satisfies(q, poss, true, p) {
							return fmt.Sprintf("%s conflicts with %s", p.Name, q.Name)
						}
					}
				}
			}
		}
	}
	return ""
}
