package apt

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/apt-ostree/apt-ostree-factory/internal/testenv"
)

// The acceptance test of the solver: for the live Debian archive this
// machine's apt is configured with, resolving mmdebstrap's minbase variant
// plus a bootable OSTree system must give exactly the packages mmdebstrap
// installs for the same request.
//
// It downloads the Packages indexes itself (unverified: verification is
// the job of release.go, and this test only compares solvers) and runs
// `mmdebstrap --simulate`. It needs the network, mmdebstrap and xz, and
// runs only with AOF_NETWORK_TESTS=1. With AOF_MMDEBSTRAP_REAL=1 it also
// builds the chroots of the host's architecture for real (minutes each)
// and compares with what dpkg installed.

var liveIncludes = []string{"systemd-sysv", "udev", "linux-image-%s", "ostree", "ostree-boot"}

func TestSolveMatchesMmdebstrap(t *testing.T) {
	if os.Getenv("AOF_NETWORK_TESTS") != "1" {
		t.Skip("set AOF_NETWORK_TESTS=1 to compare with mmdebstrap on the live archive")
	}
	for _, tool := range []string{"mmdebstrap", "xz"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed for this test: %v", tool, err)
		}
	}
	mirror := testenv.DebianMirror(t)
	t.Logf("mirror: %s", mirror)
	for _, suite := range []string{"trixie", "bookworm"} {
		for _, arch := range []string{"amd64", "arm64"} {
			t.Run(suite+"/"+arch, func(t *testing.T) {
				t.Parallel()
				var includes []string
				for _, inc := range liveIncludes {
					if strings.Contains(inc, "%s") {
						inc = fmt.Sprintf(inc, arch)
					}
					includes = append(includes, inc)
				}
				compareWithMmdebstrap(t, mirror, suite, arch, includes)
			})
		}
	}
}

func compareWithMmdebstrap(t *testing.T, mirror, suite, arch string, includes []string) {
	type result struct {
		stages [2]map[string]string
		err    error
	}
	mm := make(chan result, 1)
	go func() {
		stages, err := mmdebstrapSimulate(mirror, suite, arch, includes)
		mm <- result{stages, err}
	}()

	src := &Source{URI: mirror, Suite: suite, Components: []string{"main"}}
	universe := fetchLivePackages(t, src, arch)
	req := Request{Architecture: arch, Variant: "minbase", Packages: includes}

	// What mmdebstrap installs: its second apt run sees the essential set
	// of the first one installed. This is what Solve returns.
	start := time.Now()
	sol, err := Solve(universe, req)
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("Solve: %v", err)
	}
	t.Logf("%s/%s: solved %d packages out of %d in %v", suite, arch, len(sol.Packages), len(universe), elapsed)

	// What `mmdebstrap --simulate` prints: in simulation the second apt
	// run starts from an empty status file, so it is resolved on its own.
	s, err := newSolver(universe, req)
	if err != nil {
		t.Fatal(err)
	}
	s.independentStages = true
	s.evictions = true
	simSol, err := s.solve()
	if err != nil {
		t.Fatalf("Solve (independent stages): %v", err)
	}
	var ourStages [2]map[string]string
	ourStages[0], ourStages[1] = map[string]string{}, map[string]string{}
	for _, n := range s.chosen() {
		for i := 0; i < 2; i++ {
			if s.stageOf[n]&(1<<i) != 0 {
				ourStages[i][n.name] = n.pkg.Version.String()
			}
		}
	}

	r := <-mm
	if r.err != nil {
		t.Fatalf("mmdebstrap: %v", r.err)
	}
	ok := true
	for i, what := range []string{"stage 1 (Essential: yes)", "stage 2 (minbase and includes)"} {
		if d := diffSets(ourStages[i], r.stages[i], simSol, "mmdebstrap"); d != "" {
			t.Errorf("%s/%s %s differs from mmdebstrap --simulate:\n%s", suite, arch, what, d)
			ok = false
		} else {
			t.Logf("%s/%s %s: the same %d packages as mmdebstrap --simulate", suite, arch, what, len(ourStages[i]))
		}
	}
	if !ok {
		return
	}

	// The real install differs from the simulation only where a package of
	// stage 1 satisfies what stage 2 would otherwise pull in.
	real := map[string]string{}
	for _, p := range sol.Packages {
		real[p.Name] = p.Version.String()
	}
	union := map[string]string{}
	for i := range r.stages {
		for name, v := range r.stages[i] {
			union[name] = v
		}
	}
	var simOnly []string
	for name, v := range union {
		if _, ok := real[name]; !ok {
			if _, inStage1 := r.stages[0][name]; inStage1 {
				t.Errorf("%s/%s: %s is in mmdebstrap's essential set but not in ours", suite, arch, name)
			}
			simOnly = append(simOnly, name+" "+v)
		}
	}
	for name := range real {
		if _, ok := union[name]; !ok {
			t.Errorf("%s/%s: Solve installs %s (%s), which mmdebstrap --simulate does not list", suite, arch, name, reasonOf(sol, name))
		}
	}
	sort.Strings(simOnly)
	if len(simOnly) > 0 {
		t.Logf("%s/%s: the install has %d packages; --simulate also lists %s, which the installed essential set makes unnecessary", suite, arch, len(real), strings.Join(simOnly, ", "))
	} else {
		t.Logf("%s/%s: the install has the %d packages --simulate lists", suite, arch, len(real))
	}

	// Optionally compare with a real mmdebstrap run (slow: it downloads and
	// installs everything; needs the target architecture to be runnable).
	if os.Getenv("AOF_MMDEBSTRAP_REAL") == "1" {
		if host, _ := exec.Command("dpkg", "--print-architecture").Output(); strings.TrimSpace(string(host)) != arch {
			t.Logf("%s/%s: no real mmdebstrap run: the host cannot run %s without qemu binfmt", suite, arch, arch)
			return
		}
		installed, err := mmdebstrapReal(mirror, suite, arch, includes)
		if err != nil {
			t.Fatalf("mmdebstrap (real install): %v", err)
		}
		if d := diffSets(real, installed, sol, "mmdebstrap"); d != "" {
			t.Errorf("%s/%s differs from what mmdebstrap installs:\n%s", suite, arch, d)
		} else {
			t.Logf("%s/%s: the same %d packages as a real mmdebstrap install", suite, arch, len(real))
		}
	}
}

// diffSets describes the differences of two name -> version maps; "" when
// they are equal.
func diffSets(ours, theirs map[string]string, sol *Solution, who string) string {
	var onlyOurs, onlyTheirs, differ []string
	for name, v := range ours {
		tv, ok := theirs[name]
		switch {
		case !ok:
			onlyOurs = append(onlyOurs, name+" "+v+"  ("+reasonOf(sol, name)+")")
		case tv != v:
			differ = append(differ, fmt.Sprintf("%s: ours %s, %s %s", name, v, who, tv))
		}
	}
	for name, v := range theirs {
		if _, ok := ours[name]; !ok {
			onlyTheirs = append(onlyTheirs, name+" "+v)
		}
	}
	if len(onlyOurs)+len(onlyTheirs)+len(differ) == 0 {
		return ""
	}
	sort.Strings(onlyOurs)
	sort.Strings(onlyTheirs)
	sort.Strings(differ)
	return fmt.Sprintf("%d packages ours, %d %s\nonly ours:\n  %s\nonly %s:\n  %s\nversions differ:\n  %s",
		len(ours), len(theirs), who, strings.Join(onlyOurs, "\n  "), who, strings.Join(onlyTheirs, "\n  "), strings.Join(differ, "\n  "))
}

func reasonOf(sol *Solution, name string) string {
	for _, p := range sol.Packages {
		if p.Name == name {
			return sol.Reason(p)
		}
	}
	return ""
}

// fetchLivePackages downloads and parses dists/SUITE/main/binary-ARCH/Packages.xz.
// Downloads are kept for an hour in $TMPDIR/aof-live-indexes so that
// reruns are quick.
func fetchLivePackages(t *testing.T, src *Source, arch string) []*Package {
	t.Helper()
	url := fmt.Sprintf("%s/dists/%s/main/binary-%s/Packages.xz", src.URI, src.Suite, arch)
	dir := filepath.Join(os.TempDir(), "aof-live-indexes")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cached := filepath.Join(dir, strings.NewReplacer("/", "_", ":", "_").Replace(url))
	if fi, err := os.Stat(cached); err != nil || time.Since(fi.ModTime()) > time.Hour {
		if err := download(url, cached); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("xz", "-dc", cached)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	data, err := cmd.Output()
	if err != nil {
		t.Fatalf("xz -dc %s: %v: %s", cached, err, stderr.String())
	}
	start := time.Now()
	pkgs, err := ParsePackages(bytes.NewReader(data), &Index{Source: src, Component: "main", Architecture: arch})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %d packages, parsed in %v", url, len(pkgs), time.Since(start))
	return pkgs
}

func download(url, dest string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	tmp := dest + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("GET %s: %w", url, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dest)
}

// instLine is apt's simulation output: "Inst name (version release [arch])".
var instLine = regexp.MustCompile(`^Inst (\S+) \((\S+) .*\[(\S+)\]\)`)

// mmdebstrapSimulate runs mmdebstrap --simulate and returns what each of
// its two apt runs would install (name -> version): the Essential: yes
// set, then the rest.
func mmdebstrapSimulate(mirror, suite, arch string, includes []string) ([2]map[string]string, error) {
	var stages [2]map[string]string
	args := []string{
		"--simulate", "--verbose", "--skip=check/qemu",
		"--variant=minbase", "--architectures=" + arch,
		"--include=" + strings.Join(includes, ","),
		suite, "/dev/null", mirror,
	}
	if os.Geteuid() == 0 {
		args = append([]string{"--mode=root"}, args...)
	}
	out, err := exec.Command("mmdebstrap", args...).CombinedOutput()
	if err != nil {
		return stages, fmt.Errorf("mmdebstrap %s: %v\n%s", strings.Join(args, " "), err, tail(out, 40))
	}
	stages[0], stages[1] = map[string]string{}, map[string]string{}
	stage := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, "installing remaining packages") {
			stage = 1
		}
		if m := instLine.FindStringSubmatch(line); m != nil {
			stages[stage][strings.TrimSuffix(m[1], ":"+arch)] = m[2]
		}
	}
	if len(stages[0]) == 0 || len(stages[1]) == 0 {
		return stages, fmt.Errorf("mmdebstrap %s: no Inst lines for one of its stages:\n%s", strings.Join(args, " "), tail(out, 40))
	}
	return stages, nil
}

// mmdebstrapReal builds the chroot for real and lists what dpkg has
// installed in it.
func mmdebstrapReal(mirror, suite, arch string, includes []string) (map[string]string, error) {
	list, err := os.CreateTemp("", "aof-mmdebstrap-*.list")
	if err != nil {
		return nil, err
	}
	list.Close()
	defer os.Remove(list.Name())
	args := []string{
		"--variant=minbase", "--architectures=" + arch,
		"--include=" + strings.Join(includes, ","),
		`--customize-hook=chroot "$1" dpkg-query -W -f='${Package} ${Version}\n' > ` + list.Name(),
		suite, "/dev/null", mirror,
	}
	out, err := exec.Command("mmdebstrap", args...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("mmdebstrap %s: %v\n%s", strings.Join(args, " "), err, tail(out, 40))
	}
	data, err := os.ReadFile(list.Name())
	if err != nil {
		return nil, err
	}
	pkgs := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			pkgs[f[0]] = f[1]
		}
	}
	return pkgs, nil
}

func tail(b []byte, lines int) string {
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}
