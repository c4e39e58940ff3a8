package apt

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// TestSolveMatchesAptGet is a differential test against apt itself: for
// many single-package requests it compares Solve with `apt-get -s install`
// run on an empty dpkg status against the same Packages list (this
// machine's /var/lib/apt/lists), package set and versions.
//
// AOF_APT_DIFF=N compares N packages spread over the index (plus a few
// large, alternative-heavy ones); it needs apt-get and a Debian main list.
// Recommends are compared too when AOF_APT_DIFF_RECOMMENDS=1.
func TestSolveMatchesAptGet(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("AOF_APT_DIFF"))
	if n <= 0 {
		t.Skip("set AOF_APT_DIFF=N to compare N requests with apt-get -s install")
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		t.Fatal(err)
	}
	list, uri, suite := aptListFile(t)
	data, err := readCompressed(list)
	if err != nil {
		t.Fatal(err)
	}
	src := &Source{URI: uri, Suite: suite}
	universe, err := ParsePackages(bytes.NewReader(data), &Index{Source: src, Component: "main", Architecture: "amd64"})
	if err != nil {
		t.Fatal(err)
	}
	recommends := os.Getenv("AOF_APT_DIFF_RECOMMENDS") == "1"
	conf := aptConfig(t, uri, suite, recommends)

	seen := map[string]bool{}
	var sample []string
	for _, name := range []string{"ostree", "systemd-sysv", "gnome-core", "kde-standard", "postfix", "exim4", "mutt", "default-jdk", "texlive-base", "build-essential", "python3-pip", "docker.io", "qemu-system-x86", "libreoffice-writer", "sudo", "openssh-server", "network-manager", "xorg", "emacs", "vim"} {
		seen[name] = true
		sample = append(sample, name)
	}
	step := len(universe) / n
	if step < 1 {
		step = 1
	}
	for i := 0; i < len(universe) && len(sample) < n+20; i += step {
		if name := universe[i].Name; !seen[name] {
			seen[name] = true
			sample = append(sample, name)
		}
	}

	type outcome struct {
		name  string
		apt   map[string]string
		err   string
		diffs string
	}
	results := make([]outcome, len(sample))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 2)
	for i, name := range sample {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			pkgs, aptErr := aptGetSimulate(conf, name)
			o := outcome{name: name, apt: pkgs}
			sol, err := Solve(universe, Request{Architecture: "amd64", Packages: []string{name}, Recommends: recommends})
			switch {
			case aptErr != nil && err != nil:
				// both refuse
			case aptErr != nil:
				o.err = fmt.Sprintf("apt-get refuses (%v), Solve installs %d packages", firstLine(aptErr.Error()), len(sol.Packages))
			case err != nil:
				o.err = fmt.Sprintf("Solve refuses (%v), apt-get installs %d packages", err, len(pkgs))
			default:
				ours := map[string]string{}
				for _, p := range sol.Packages {
					ours[p.Name] = p.Version.String()
				}
				o.diffs = diffSets(ours, pkgs, sol, "apt-get")
			}
			results[i] = o
		}()
	}
	wg.Wait()
	bad := 0
	for _, o := range results {
		switch {
		case o.err != "":
			bad++
			t.Errorf("%s: %s", o.name, o.err)
		case o.diffs != "":
			bad++
			t.Errorf("%s: differs from apt-get:\n%s", o.name, o.diffs)
		}
	}
	t.Logf("%d of %d requests resolve as apt-get does", len(results)-bad, len(results))
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// aptListFile finds the Debian main amd64 list and the URI and suite it
// came from (apt names lists after their URL).
func aptListFile(t *testing.T) (path, uri, suite string) {
	t.Helper()
	matches, _ := filepath.Glob("/var/lib/apt/lists/*_dists_*_main_binary-amd64_Packages*")
	sort.Slice(matches, func(i, j int) bool { return fileSize(matches[i]) > fileSize(matches[j]) })
	if len(matches) == 0 {
		t.Skip("no main binary-amd64 Packages list in /var/lib/apt/lists")
	}
	path = matches[0]
	base := filepath.Base(path)
	i := strings.Index(base, "_dists_")
	j := strings.Index(base, "_main_binary-amd64_Packages")
	if i < 0 || j < i {
		t.Skipf("cannot tell the source of %s", path)
	}
	uri = "http://" + strings.ReplaceAll(base[:i], "_", "/")
	suite = strings.ReplaceAll(base[i+len("_dists_"):j], "_", "/")
	return path, uri, suite
}

// aptConfig writes an apt configuration that reads only that list, with an
// empty dpkg status, as mmdebstrap configures apt; the host's apt.conf.d
// is not read (Docker images, e.g., turn SuggestsImportant off there).
func aptConfig(t *testing.T, uri, suite string, recommends bool) string {
	dir := t.TempDir()
	sources := filepath.Join(dir, "sources.list")
	if err := os.WriteFile(sources, []byte(fmt.Sprintf("deb %s %s main\n", uri, suite)), 0o644); err != nil {
		t.Fatal(err)
	}
	status := filepath.Join(dir, "status")
	if err := os.WriteFile(status, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "cache"), 0o755); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "apt.conf")
	text := fmt.Sprintf(`Dir::Etc::SourceList %q;
Dir::Etc::SourceParts "/dev/null";
Dir::Etc::Parts "/dev/null";
Dir::Etc::Main "/dev/null";
Dir::Etc::Preferences "/dev/null";
Dir::Etc::PreferencesParts "/dev/null";
Dir::Cache %q;
Dir::State::status %q;
Dir::State::Lists "/var/lib/apt/lists";
APT::Architecture "amd64";
APT::Architectures "amd64";
APT::Install-Recommends %q;
pkgCacheGen::ForceEssential ",";
Debug::NoLocking "1";
`, sources, filepath.Join(dir, "cache"), status, strconv.FormatBool(recommends))
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	// Build apt's cache once, before the parallel runs.
	cmd := exec.Command("apt-get", "-s", "check")
	cmd.Env = append(os.Environ(), "APT_CONFIG="+conf)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("apt-get check: %v\n%s", err, out)
	}
	return conf
}

func aptGetSimulate(conf, name string) (map[string]string, error) {
	cmd := exec.Command("apt-get", "-s", "-q", "install", name)
	cmd.Env = append(os.Environ(), "APT_CONFIG="+conf, "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("%v: %s", err, tail(out, 10))
	}
	pkgs := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if m := instLine.FindStringSubmatch(sc.Text()); m != nil {
			pkgs[m[1]] = m[2]
		}
	}
	return pkgs, nil
}

// aptScenario is a small universe on which Solve's answer is checked, and
// with apt-get available also apt's (TestSolveScenariosMatchApt).
type aptScenario struct {
	name       string
	universe   string
	packages   []string
	recommends bool
	want       []string
	// aptWant is what apt installs where it differs from Solve (see
	// Solve's documentation); nil means the same as want, and "error"
	// that apt gives up.
	aptWant []string
}

var aptScenarios = []aptScenario{
	{name: "first installable alternative",
		universe: "Package: a\nDepends: missing | b | c\n\nPackage: b\n\nPackage: c",
		packages: []string{"a"}, want: []string{"a", "b"}},
	{name: "chosen alternative satisfies",
		universe: "Package: a\nDepends: b | c\n\nPackage: b\n\nPackage: c",
		packages: []string{"a", "c"}, want: []string{"a", "c"}},
	{name: "depth first",
		universe: "Package: a\nDepends: x, y\n\nPackage: x\nDepends: p | q\n\nPackage: y\nDepends: q\n\nPackage: p\n\nPackage: q",
		packages: []string{"a"}, want: []string{"a", "p", "q", "x", "y"}},
	{name: "depth first, other order",
		universe: "Package: z\nDepends: y, x\n\nPackage: x\nDepends: p | q\n\nPackage: y\nDepends: q\n\nPackage: p\n\nPackage: q",
		packages: []string{"z"}, want: []string{"q", "x", "y", "z"}},
	{name: "provider by Priority",
		universe: "Package: a\nDepends: v\n\nPackage: p-optional\nPriority: optional\nProvides: v\n\nPackage: p-required\nPriority: required\nProvides: v\n\nPackage: p-extra\nPriority: extra\nProvides: v",
		packages: []string{"a"}, want: []string{"a", "p-required"}},
	{name: "provider read last",
		universe: "Package: a\nDepends: v\n\nPackage: p-first\nPriority: optional\nProvides: v\n\nPackage: p-second\nPriority: optional\nProvides: v",
		packages: []string{"a"}, want: []string{"a", "p-second"}},
	{name: "provider Protected",
		universe: "Package: a\nDepends: v\n\nPackage: p-required\nPriority: required\nProvides: v\n\nPackage: p-protected\nPriority: optional\nProtected: yes\nProvides: v",
		packages: []string{"a"}, want: []string{"a", "p-protected"}},
	{name: "real package before providers",
		universe: "Package: a\nDepends: awk\n\nPackage: mawk\nPriority: required\nProvides: awk\n\nPackage: awk\nPriority: optional",
		packages: []string{"a"}, want: []string{"a", "awk"}},
	{name: "versioned provides",
		universe: "Package: a\nDepends: v (>= 2)\n\nPackage: old\nProvides: v\n\nPackage: new\nProvides: v (= 2.1)",
		packages: []string{"a"}, want: []string{"a", "new"}},
	{name: "single provider requested",
		universe: "Package: only\nProvides: virt",
		packages: []string{"virt"}, want: []string{"only"}},
	{name: "conflict with a request",
		universe: "Package: a\nDepends: b | c\n\nPackage: b\nConflicts: d\n\nPackage: c\n\nPackage: d",
		packages: []string{"d", "a"}, want: []string{"a", "c", "d"}},
	{name: "versioned breaks",
		universe: "Package: e\nDepends: x | y\n\nPackage: x\nBreaks: d (<< 2)\n\nPackage: y\n\nPackage: d",
		packages: []string{"d", "e"}, want: []string{"d", "e", "y"}},
	{name: "conflict with a provided name",
		universe: "Package: f\nDepends: g | h\n\nPackage: g\nConflicts: virt\n\nPackage: h\n\nPackage: pv\nProvides: virt",
		packages: []string{"pv", "f"}, want: []string{"f", "h", "pv"}},
	{name: "backtracking over alternatives",
		universe: "Package: a\nDepends: b | c\n\nPackage: b\nConflicts: d\n\nPackage: c\n\nPackage: e\nDepends: f\n\nPackage: f\nDepends: d\n\nPackage: d",
		packages: []string{"a", "e"}, want: []string{"a", "c", "d", "e", "f"}},
	{name: "backtracking over a version clash",
		universe: "Package: root\nDepends: impl-a | impl-b, x\n\nPackage: impl-a\nDepends: lib-old\n\nPackage: impl-b\n\nPackage: lib-old\nProvides: lib (= 1)\nConflicts: lib\n\nPackage: lib-new\nProvides: lib (= 2)\nConflicts: lib\n\nPackage: x\nDepends: lib (>= 2)",
		packages: []string{"root"}, want: []string{"impl-b", "lib-new", "root", "x"}},
	{name: "backjumping where apt gives up",
		universe: "Package: top\nDepends: mid1 | mid2, other1 | other2, needs-d\n\nPackage: mid1\nDepends: leaf1\n\nPackage: leaf1\nDepends: bad1 | bad2\n\nPackage: bad1\nConflicts: d\n\nPackage: bad2\nConflicts: d\n\nPackage: mid2\n\nPackage: other1\n\nPackage: other2\n\nPackage: needs-d\nDepends: d\n\nPackage: d",
		packages: []string{"top"}, want: []string{"d", "mid2", "needs-d", "other1", "top"}, aptWant: []string{"error"}},
	{name: "later conflict with an automatic choice",
		universe: "Package: r1\nDepends: m1 | m2\n\nPackage: r2\nDepends: c | d\n\nPackage: m1\n\nPackage: m2\n\nPackage: c\nConflicts: m1\n\nPackage: d",
		packages: []string{"r1", "r2"}, want: []string{"c", "m2", "r1", "r2"}},
	{name: "eviction drops what only the evicted package needed",
		universe: "Package: r1\nDepends: m1 | m2\n\nPackage: m1\nDepends: m1dep\n\nPackage: m1dep\n\nPackage: m2\n\nPackage: r2\nDepends: c\n\nPackage: c\nConflicts: m1",
		packages: []string{"r1", "r2"}, want: []string{"c", "m2", "r1", "r2"}},
	{name: "no eviction of a protected package",
		universe: "Package: r1\nDepends: m1\n\nPackage: m1\n\nPackage: r2\nDepends: c | d\n\nPackage: c\nConflicts: m1\n\nPackage: d",
		packages: []string{"r1", "r2"}, want: []string{"d", "m1", "r1", "r2"}},
	{name: "recommends",
		universe: "Package: a\nDepends: b\nRecommends: r1, missing, r2 | r3\n\nPackage: b\n\nPackage: r1\nDepends: r1dep\n\nPackage: r1dep\n\nPackage: r2\nConflicts: a\n\nPackage: r3",
		packages: []string{"a"}, recommends: true, want: []string{"a", "b", "r1", "r1dep", "r3"}},
}

func TestSolveScenarios(t *testing.T) {
	for _, sc := range aptScenarios {
		t.Run(sc.name, func(t *testing.T) {
			sol := solve(t, uni(t, nil, sc.universe), Request{Packages: sc.packages, Recommends: sc.recommends})
			wantNames(t, sol, sc.want...)
		})
	}
}

// TestSolveScenariosMatchApt runs the scenarios through apt-get itself
// (a flat file:// repository, an empty status), so that the expectations
// above are apt's, not ours. It needs apt-get; AOF_APT_SCENARIOS=0 skips it.
func TestSolveScenariosMatchApt(t *testing.T) {
	if testing.Short() || os.Getenv("AOF_APT_SCENARIOS") == "0" {
		t.Skip("short mode or AOF_APT_SCENARIOS=0")
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		t.Skip("apt-get is not installed")
	}
	for _, sc := range aptScenarios {
		t.Run(sc.name, func(t *testing.T) {
			got, err := aptOnUniverse(t, sc.universe, sc.packages, sc.recommends)
			want := sc.want
			if sc.aptWant != nil {
				want = sc.aptWant
			}
			if len(want) == 1 && want[0] == "error" {
				if err == nil {
					t.Errorf("apt installs %v, the scenario says apt gives up", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			sort.Strings(want)
			if strings.Join(got, " ") != strings.Join(want, " ") {
				t.Errorf("apt installs %v, the scenario says %v", got, want)
			}
		})
	}
}

// aptOnUniverse writes the universe as a flat repository and asks
// apt-get -s install for the packages; it skips the test when apt cannot
// be set up here (e.g. unprivileged without a usable sandbox).
func aptOnUniverse(t *testing.T, universe string, packages []string, recommends bool) ([]string, error) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	for _, d := range []string{repo, filepath.Join(dir, "lists", "partial"), filepath.Join(dir, "cache")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var stanzas []string
	for _, p := range uni(t, nil, universe) {
		st := fmt.Sprintf("Package: %s\nVersion: %s\nArchitecture: %s\n", p.Name, p.Version, p.Architecture)
		for _, f := range []struct {
			key string
			val string
		}{{"Priority", p.Priority}, {"Pre-Depends", p.PreDepends.String()}, {"Depends", p.Depends.String()},
			{"Recommends", p.Recommends.String()}, {"Conflicts", p.Conflicts.String()}, {"Breaks", p.Breaks.String()},
			{"Provides", p.Provides.String()}} {
			if f.val != "" {
				st += f.key + ": " + f.val + "\n"
			}
		}
		if p.Essential {
			st += "Essential: yes\n"
		}
		if p.Important {
			st += "Protected: yes\n"
		}
		st += fmt.Sprintf("Filename: pool/%s.deb\nSize: 100\nSHA256: %s\n", p.Name, strings.Repeat("0", 64))
		stanzas = append(stanzas, st)
	}
	if err := os.WriteFile(filepath.Join(repo, "Packages"), []byte(strings.Join(stanzas, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	sources := filepath.Join(dir, "sources.list")
	if err := os.WriteFile(sources, []byte("deb [trusted=yes] file:"+repo+" ./\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	status := filepath.Join(dir, "status")
	if err := os.WriteFile(status, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "apt.conf")
	text := fmt.Sprintf(`Dir::Etc::SourceList %q;
Dir::Etc::SourceParts "/dev/null";
Dir::Etc::Parts "/dev/null";
Dir::Etc::Main "/dev/null";
Dir::Etc::Preferences "/dev/null";
Dir::Etc::PreferencesParts "/dev/null";
Dir::Cache %q;
Dir::State::status %q;
Dir::State::Lists %q;
APT::Architecture "amd64";
APT::Architectures "amd64";
APT::Install-Recommends %q;
APT::Sandbox::User "root";
pkgCacheGen::ForceEssential ",";
Debug::NoLocking "1";
Acquire::Languages "none";
`, sources, filepath.Join(dir, "cache"), status, filepath.Join(dir, "lists"), strconv.FormatBool(recommends))
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "APT_CONFIG="+conf, "LC_ALL=C")
	update := exec.Command("apt-get", "-q", "update")
	update.Env = env
	if out, err := update.CombinedOutput(); err != nil {
		t.Skipf("apt-get update on a file:// repository does not work here: %v\n%s", err, out)
	}
	args := append([]string{"-s", "-q", "install"}, packages...)
	cmd := exec.Command("apt-get", args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("apt-get %s: %v\n%s", strings.Join(args, " "), err, tail(out, 10))
	}
	var got []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if m := instLine.FindStringSubmatch(sc.Text()); m != nil {
			got = append(got, m[1])
		}
	}
	sort.Strings(got)
	return got, nil
}
