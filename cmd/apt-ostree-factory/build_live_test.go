package main

import (
	"bytes"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/apt-ostree/apt-ostree-factory/apt"
	"github.com/apt-ostree/apt-ostree-factory/apt/apttest"
	"github.com/apt-ostree/apt-ostree-factory/builder"
	"github.com/apt-ostree/apt-ostree-factory/internal/testenv"
)

// The build acceptance tests: the default recipe from the live archive the
// machine's apt uses (AOF_NETWORK_TESTS=1), checked with Debian's own
// ostree, dpkg and systemctl. They need root (chroot into the result, and
// a second, unprivileged build as a user with a subuid range).

func needLiveBuild(t *testing.T) {
	t.Helper()
	if os.Getenv("AOF_NETWORK_TESTS") != "1" {
		t.Skip("set AOF_NETWORK_TESTS=1 to build from the Debian archive")
	}
	if os.Geteuid() != 0 {
		t.Skip("the build acceptance test needs root (chroot, and a second user)")
	}
	for _, tool := range []string{"ostree", "newuidmap", "newgidmap", "chroot"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed (scripts/install-test-deps.sh installs it): %v", tool, err)
		}
	}
}

type cli struct {
	t        *testing.T
	cacheDir string
	mirror   string
}

func (c *cli) run(args ...string) (stdout, stderr string, code int) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return o.String(), e.String(), code
}

// build runs `build` with the mirror and cache of the test; images go to
// a new temporary directory unless extra says where (or --no-images).
func (c *cli) build(recipePath string, extra ...string) (commit, stderr string, code int) {
	args := append([]string{"build", recipePath, "--set", "MIRROR=" + c.mirror, "--cache-dir", c.cacheDir}, extra...)
	if !hasFlag(extra, "--output-dir") && !hasFlag(extra, "--no-images") {
		args = append(args, "--output-dir", c.t.TempDir())
	}
	out, errOut, code := c.run(args...)
	return strings.TrimSpace(out), errOut, code
}

func hasFlag(args []string, flag string) bool {
	for _, a := range args {
		if a == flag || strings.HasPrefix(a, flag+"=") {
			return true
		}
	}
	return false
}

func ostreeCmd(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ostree", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ostree %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestLiveBuildDefaultRecipe(t *testing.T) {
	needLiveBuild(t)
	root := testenv.ModuleRoot(t)
	c := &cli{t: t, mirror: testenv.DebianMirror(t), cacheDir: filepath.Join(os.TempDir(), "aof-test-cache")}
	t.Setenv("SOURCE_DATE_EPOCH", "1763800000")
	tmp := t.TempDir()
	recipePath := filepath.Join(root, "recipes", "trixie-minimal.yaml")
	repoA := filepath.Join(tmp, "a", "repo")
	lockPath := filepath.Join(tmp, "trixie.lock")
	const branch = "debian/trixie/x86_64"
	var helloCommit string                             // the from-scratch build with hello added
	repoI := filepath.Join(tmp, "incremental", "repo") // --incremental builds
	// Their kept tree lives in the shared test cache: removed at the end.
	if kept, err := builder.KeptTreeDir(c.cacheDir, repoI, branch); err == nil {
		t.Cleanup(func() { os.RemoveAll(kept) })
	}

	imagesA := filepath.Join(tmp, "images-root")
	commit, stderr, code := c.build(recipePath, "--repo", repoA, "--write-lock", lockPath, "--output-dir", imagesA)
	t.Logf("first build:\n%s", stderr)
	if code != 0 {
		t.Fatalf("build failed (%d)", code)
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(commit) {
		t.Fatalf("stdout is not a commit checksum: %q", commit)
	}
	lock, err := apt.ReadLockFile(lockPath)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("ostree accepts the commit", func(t *testing.T) {
		ostreeCmd(t, "fsck", "--repo="+repoA)
		if got := strings.TrimSpace(ostreeCmd(t, "rev-parse", "--repo="+repoA, branch)); got != commit {
			t.Errorf("branch at %s, build printed %s", got, commit)
		}
		show := ostreeCmd(t, "show", "--repo="+repoA, "--print-metadata-key=ostree.linux", branch)
		kver := strings.Trim(strings.TrimSpace(show), "'")
		if kver == "" {
			t.Fatal("no ostree.linux")
		}
		if b := strings.TrimSpace(ostreeCmd(t, "show", "--repo="+repoA, "--print-metadata-key=ostree.bootable", branch)); b != "true" {
			t.Errorf("ostree.bootable = %s", b)
		}
		if d := strings.TrimSpace(ostreeCmd(t, "show", "--repo="+repoA, "--print-metadata-key=apt-ostree.lock-digest", branch)); d != "'"+lock.Digest()+"'" {
			t.Errorf("lock digest %s, want %s", d, lock.Digest())
		}
		ls := ostreeCmd(t, "ls", "--repo="+repoA, branch, "/usr/lib/modules/"+kver)
		for _, f := range []string{"/vmlinuz", "/initramfs.img"} {
			if !strings.Contains(ls, "/usr/lib/modules/"+kver+f+"\n") {
				t.Errorf("no %s in /usr/lib/modules/%s:\n%s", f, kver, ls)
			}
		}
		if ls := ostreeCmd(t, "ls", "--repo="+repoA, branch, "/usr/etc/passwd"); !strings.Contains(ls, "/usr/etc/passwd") {
			t.Errorf("no /usr/etc/passwd")
		}
		if ls := ostreeCmd(t, "ls", "-R", "--repo="+repoA, branch, "/var"); strings.Count(strings.TrimSpace(ls), "\n") != 0 {
			t.Errorf("/var is not empty:\n%s", ls)
		}
		if ls := ostreeCmd(t, "ls", "--repo="+repoA, branch, "/boot"); strings.Count(strings.TrimSpace(ls), "\n") != 0 {
			t.Errorf("/boot is not empty:\n%s", ls)
		}
		status := ostreeCmd(t, "cat", "--repo="+repoA, branch, "/usr/lib/sysimage/dpkg/status")
		installed := map[string]bool{}
		for _, st := range strings.Split(status, "\n\n") {
			var name, arch string
			ok := false
			for _, l := range strings.Split(st, "\n") {
				switch {
				case strings.HasPrefix(l, "Package: "):
					name = strings.TrimPrefix(l, "Package: ")
				case strings.HasPrefix(l, "Architecture: "):
					arch = strings.TrimPrefix(l, "Architecture: ")
				case l == "Status: install ok installed":
					ok = true
				}
			}
			if ok {
				installed[name+":"+arch] = true
			}
		}
		for _, p := range lock.Packages {
			if !installed[p.Name+":"+p.Architecture] {
				t.Errorf("%s is not installed in the dpkg database", p.ID())
			}
		}
		if len(installed) != len(lock.Packages) {
			t.Errorf("%d packages installed, the lock has %d", len(installed), len(lock.Packages))
		}
	})

	t.Run("disk image", func(t *testing.T) {
		checkImage(t, filepath.Join(imagesA, "trixie-minimal.raw"), repoA, commit)
	})

	t.Run("chroot into the checkout", func(t *testing.T) {
		co := filepath.Join(tmp, "checkout")
		ostreeCmd(t, "checkout", "--repo="+repoA, branch, co)
		// What ostree admin deploy and systemd-tmpfiles do on the device:
		// /etc from /usr/etc, /var from tmpfiles.d.
		if out, err := exec.Command("cp", "-a", filepath.Join(co, "usr/etc"), filepath.Join(co, "etc")).CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		chroot := func(args ...string) string {
			t.Helper()
			cmd := exec.Command("chroot", append([]string{co}, args...)...)
			cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C.UTF-8"}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("chroot %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			return string(out)
		}
		// systemd-tmpfiles needs /proc: mount it in a private namespace.
		if out, err := exec.Command("unshare", "--mount", "sh", "-c",
			`mount -t proc proc "$1/proc" && chroot "$1" systemd-tmpfiles --create /usr/lib/tmpfiles.d/apt-ostree-var.conf`, "sh", co).CombinedOutput(); err != nil {
			t.Fatalf("systemd-tmpfiles: %v\n%s", err, out)
		}
		if fi, err := os.Lstat(filepath.Join(co, "var/lib/dpkg")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Fatalf("tmpfiles.d did not link /var/lib/dpkg: %v", err)
		}
		if out := chroot("dpkg", "--audit"); strings.TrimSpace(out) != "" {
			t.Errorf("dpkg --audit: %s", out)
		}
		if out := chroot("dpkg", "-l"); strings.Count(out, "\nii ") != len(lock.Packages) {
			t.Errorf("dpkg -l lists %d installed packages, want %d", strings.Count(out, "\nii "), len(lock.Packages))
		}
		passwd := chroot("getent", "passwd")
		for _, u := range []string{"root", "_apt", "systemd-network"} {
			if !regexp.MustCompile(`(?m)^` + u + `:`).MatchString(passwd) {
				t.Errorf("getent passwd lacks %s:\n%s", u, passwd)
			}
		}
		units := chroot("systemctl", "list-unit-files", "--root=/", "--state=enabled", "--no-pager")
		for _, u := range []string{"getty@.service", "remote-fs.target"} {
			if !strings.Contains(units, u) {
				t.Errorf("systemctl list-unit-files: %s not enabled:\n%s", u, units)
			}
		}
	})

	t.Run("same inputs give the same commit", func(t *testing.T) {
		repoB := filepath.Join(tmp, "b", "repo")
		again, stderr, code := c.build(recipePath, "--repo", repoB, "--lock", lockPath, "--offline", "--no-images")
		if code != 0 {
			t.Fatalf("second build (offline, from the lock) failed:\n%s", stderr)
		}
		if again != commit {
			t.Errorf("second build gave %s, the first %s", again, commit)
		}
	})

	t.Run("unprivileged build with a subuid range", func(t *testing.T) {
		u := ensureBuildUser(t)
		bin := filepath.Join(tmp, "bin", "apt-ostree-factory")
		gob := exec.Command("go", "build", "-o", bin, "./cmd/apt-ostree-factory")
		gob.Dir = root
		if out, err := gob.CombinedOutput(); err != nil {
			t.Fatalf("go build: %v\n%s", err, out)
		}
		home := filepath.Join(tmp, "user")
		for _, d := range []string{home, filepath.Join(home, "cache")} {
			os.MkdirAll(d, 0o755)
		}
		// The user's own cache, filled from ours (no second download).
		if out, err := exec.Command("cp", "-r", filepath.Join(c.cacheDir, "debs"), filepath.Join(home, "cache", "debs")).CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		for _, p := range []string{lockPath, filepath.Join(tmp, "bin"), bin} {
			os.Chmod(p, 0o755)
		}
		os.Chmod(tmp, 0o755)
		os.Chmod(filepath.Dir(tmp), 0o755) // t.TempDir's parent is private
		exec.Command("chown", "-R", u.Uid+":"+u.Gid, home).Run()
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		// --incremental: the first build configures from scratch (and
		// keeps its tree, owned by the subuid range, in the cache).
		runAs := func(extra ...string) (string, string) {
			t.Helper()
			args := append([]string{"build", recipePath, "--set", "MIRROR=" + c.mirror, "--lock", lockPath, "--offline",
				"--cache-dir", filepath.Join(home, "cache"), "--repo", filepath.Join(home, "repo"), "--work-dir", home, "--incremental"}, extra...)
			cmd := exec.Command(bin, args...)
			cmd.Env = []string{"HOME=" + home, "PATH=" + os.Getenv("PATH"), "SOURCE_DATE_EPOCH=1763800000", "TMPDIR=" + home}
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
			var o, e bytes.Buffer
			cmd.Stdout, cmd.Stderr = &o, &e
			if err := cmd.Run(); err != nil {
				t.Fatalf("unprivileged build %v: %v\n%s", extra, err, e.String())
			}
			t.Logf("unprivileged build %v:\n%s", extra, e.String())
			return strings.TrimSpace(o.String()), e.String()
		}
		if got, _ := runAs("--output-dir", filepath.Join(home, "images")); got != commit {
			t.Errorf("unprivileged build gave %s, root's %s", got, commit)
		}
		ostreeCmd(t, "fsck", "--repo="+filepath.Join(home, "repo"))
		// Again with the same lock: configured on the kept tree (inside
		// the user namespace), with the same content.
		again, stderr := runAs("--no-images")
		if !strings.Contains(stderr, "incremental: configuring 0 new package(s) on the tree kept from commit "+commit) {
			t.Errorf("second unprivileged --incremental build did not use the kept tree")
		}
		content := func(c string) string {
			out := ostreeCmd(t, "show", "--repo="+filepath.Join(home, "repo"), c)
			i := strings.Index(out, "ContentChecksum:")
			if i < 0 {
				t.Fatalf("no ContentChecksum in %s", out)
			}
			return strings.Fields(out[i:])[1]
		}
		if content(again) != content(commit) {
			t.Errorf("incremental rebuild with nothing new changed the content: %s",
				ostreeCmd(t, "diff", "--repo="+filepath.Join(home, "repo"), commit, again))
		}
		// The image too, byte for byte.
		mine, _ := os.ReadFile(filepath.Join(imagesA, "trixie-minimal.raw.sha256"))
		theirs, err := os.ReadFile(filepath.Join(home, "images", "trixie-minimal.raw.sha256"))
		if err != nil {
			t.Fatal(err)
		}
		if string(mine) != string(theirs) || len(mine) == 0 {
			t.Errorf("unprivileged image differs: %q, root's %q", theirs, mine)
		}
		if out, err := exec.Command("cmp", filepath.Join(imagesA, "trixie-minimal.raw"), filepath.Join(home, "images", "trixie-minimal.raw")).CombinedOutput(); err != nil {
			t.Errorf("cmp: %v %s", err, out)
		}
	})

	t.Run("one more package unpacks one .deb", func(t *testing.T) {
		data, err := os.ReadFile(recipePath)
		if err != nil {
			t.Fatal(err)
		}
		extra := strings.Replace(string(data), "packages:\n", "packages:\n  - hello\n", 1)
		p := filepath.Join(tmp, "extra.yaml")
		os.WriteFile(p, []byte(extra), 0o644)
		next, stderr, code := c.build(p, "--repo", repoA, "--verify-reproducible", "--no-images")
		t.Logf("incremental build:\n%s", stderr)
		if code != 0 {
			t.Fatalf("incremental build failed")
		}
		// The check build of --verify-reproducible takes hello from the
		// per-.deb cache: one .deb is unpacked in all.
		if n := strings.Count(stderr, "    unpacked "); n != 1 {
			t.Errorf("%d .debs unpacked, want hello's only", n)
		}
		if !strings.Contains(stderr, "unpacked hello:") || !strings.Contains(stderr, "1 unpacked, ") {
			t.Errorf("log does not show hello alone being unpacked")
		}
		if !strings.Contains(stderr, "the second build gave the same commit") {
			t.Errorf("--verify-reproducible did not confirm")
		}
		if parent := strings.TrimSpace(ostreeCmd(t, "rev-parse", "--repo="+repoA, branch+"^")); parent != commit {
			t.Errorf("parent of the new commit is %s, want %s", parent, commit)
		}
		commit = next
		helloCommit = next
	})

	t.Run("--incremental configures only the added package", func(t *testing.T) {
		if helloCommit == "" {
			t.Skip("needs the commit with hello from the previous subtest")
		}
		data, err := os.ReadFile(recipePath)
		if err != nil {
			t.Fatal(err)
		}
		extra := filepath.Join(tmp, "extra-incremental.yaml")
		os.WriteFile(extra, []byte(strings.Replace(string(data), "packages:\n", "packages:\n  - hello\n", 1)), 0o644)
		build := func(recipe string) (string, string) {
			t.Helper()
			commit, stderr, code := c.build(recipe, "--repo", repoI, "--incremental", "--no-images")
			t.Logf("build --incremental %s:\n%s", filepath.Base(recipe), stderr)
			if code != 0 {
				t.Fatalf("build --incremental %s failed", filepath.Base(recipe))
			}
			return commit, stderr
		}
		first, stderr := build(recipePath)
		if !strings.Contains(stderr, "incremental: configuring from scratch: no configured tree kept") {
			t.Errorf("first --incremental build does not say it configures from scratch")
		}
		second, stderr := build(extra)
		if !strings.Contains(stderr, "incremental: configuring 1 new package(s) on the tree kept from commit "+first) ||
			!strings.Contains(stderr, "incremental (1 new packages") {
			t.Errorf("second build did not configure incrementally on %s", first)
		}
		if strings.Contains(stderr, "checkout ") {
			t.Errorf("incremental build checked the whole tree out")
		}
		if got := strings.Trim(strings.TrimSpace(ostreeCmd(t, "show", "--repo="+repoI, second, "--print-metadata-key="+builder.IncrementalFromKey)), "'"); got != first {
			t.Errorf("%s = %q, want %s", builder.IncrementalFromKey, got, first)
		}
		status := ostreeCmd(t, "cat", "--repo="+repoI, second, "/usr/lib/sysimage/dpkg/status")
		if !strings.Contains(status, "Package: hello\nStatus: install ok installed\n") {
			t.Errorf("hello is not installed in the incremental build's dpkg database")
		}
		// For this package the incremental result is the from-scratch
		// result: the same content checksum as the earlier cold build
		// of the same package set.
		contentOf := func(repo, c string) string {
			for _, l := range strings.Split(ostreeCmd(t, "show", "--repo="+repo, c), "\n") {
				if v, ok := strings.CutPrefix(l, "ContentChecksum:"); ok {
					return strings.TrimSpace(v)
				}
			}
			t.Fatalf("no ContentChecksum for %s", c)
			return ""
		}
		if a, b := contentOf(repoI, second), contentOf(repoA, helloCommit); a != b {
			t.Errorf("incremental build's content %s differs from the from-scratch build's %s:\n%s", a, b,
				ostreeCmd(t, "diff", "--repo="+repoI, first, second))
		}
		// Removing a package is not incremental: configured from scratch.
		_, stderr = build(recipePath)
		if !strings.Contains(stderr, "incremental: configuring from scratch: package hello:") {
			t.Errorf("removing hello did not fall back to a from-scratch configure")
		}
		ostreeCmd(t, "fsck", "--repo="+repoI)
	})

	t.Run("bad input leaves the refs alone", func(t *testing.T) {
		refsBefore := ostreeCmd(t, "refs", "--repo="+repoA)
		headBefore := ostreeCmd(t, "rev-parse", "--repo="+repoA, branch)
		data, _ := os.ReadFile(recipePath)
		write := func(name, text string) string {
			p := filepath.Join(tmp, name)
			if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			return p
		}
		// A local archive with a package whose postinst fails.
		arch := filepath.Join(tmp, "local-archive")
		if err := os.MkdirAll(arch, 0o755); err != nil {
			t.Fatal(err)
		}
		lrepo, keyring, err := apttest.NewSigned(arch)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := lrepo.AddDeb("main", apttest.Deb{Package: "aof-broken", Version: "1.0",
			Files:   map[string]string{"usr/share/doc/aof-broken/README": "broken\n"},
			Scripts: map[string]string{"postinst": "#!/bin/sh\necho 'aof-broken: failing on purpose' >&2\nexit 7\n"}}); err != nil {
			t.Fatal(err)
		}
		if err := lrepo.Publish(); err != nil {
			t.Fatal(err)
		}
		withBroken := strings.Replace(string(data), "sources:\n", "sources:\n  - uri: "+lrepo.URI()+"\n    suite: "+lrepo.Source(nil).Suite+"\n    signed-by: ["+keyring+"]\n", 1)
		withBroken = strings.Replace(withBroken, "packages:\n", "packages:\n  - aof-broken\n", 1)
		cases := []struct {
			name, recipe string
			extra        []string
			want         []string
		}{
			{"unknown key", write("unknown.yaml", string(data)+"colour: blue\n"), nil, []string{"unknown.yaml:", `unknown key "colour"`}},
			{"missing package", write("missing.yaml", strings.Replace(string(data), "packages:\n", "packages:\n  - aof-no-such-package\n", 1)), nil, []string{"aof-no-such-package"}},
			{"unreachable source offline", write("offline.yaml", string(data)), []string{"--set", "MIRROR=http://aof-unreachable.invalid/debian", "--offline"}, []string{"offline"}},
			{"failing maintainer script", write("broken.yaml", withBroken), nil, []string{"aof-broken", "exit status 7"}},
			{"image too small", write("small.yaml", strings.Replace(string(data), "      size: fit\n", "      size: 900MiB\n", 1)),
				[]string{"--output-dir", filepath.Join(tmp, "small-out")}, []string{"size 900 MiB is too small", "use size: fit"}},
		}
		for _, tc := range cases {
			args := append([]string{"build", tc.recipe, "--cache-dir", c.cacheDir, "--repo", repoA, "--set", "MIRROR=" + c.mirror}, tc.extra...)
			if !hasFlag(tc.extra, "--output-dir") {
				args = append(args, "--no-images")
			}
			_, stderr, code := c.run(args...)
			if code == 0 {
				t.Errorf("%s: build succeeded", tc.name)
				continue
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("%s: error does not mention %q:\n%s", tc.name, w, stderr)
				}
			}
			t.Logf("%s: exit %d: %s", tc.name, code, lastLines(stderr, 6))
		}
		if entries, _ := os.ReadDir(filepath.Join(tmp, "small-out")); len(entries) > 0 {
			t.Errorf("the failed image left files: %v", entries)
		}
		if after := ostreeCmd(t, "rev-parse", "--repo="+repoA, branch); after != headBefore {
			t.Errorf("branch moved: %s -> %s", headBefore, after)
		}
		// The per-.deb cache may gain entries, but it keeps no refs.
		if after := ostreeCmd(t, "refs", "--repo="+repoA); after != refsBefore {
			t.Errorf("refs changed:\n%s\nthen\n%s", refsBefore, after)
		}
		// A failing --incremental build leaves nothing to build upon:
		// no kept state, no kept tree, the branch where it was.
		if _, err := os.Stat(repoI); err == nil {
			headI := ostreeCmd(t, "rev-parse", "--repo="+repoI, branch)
			_, stderr, code := c.run("build", filepath.Join(tmp, "broken.yaml"), "--cache-dir", c.cacheDir, "--repo", repoI,
				"--set", "MIRROR="+c.mirror, "--no-images", "--incremental")
			t.Logf("failing --incremental build: exit %d: %s", code, lastLines(stderr, 8))
			if code == 0 || !strings.Contains(stderr, "aof-broken") {
				t.Errorf("failing --incremental build: exit %d", code)
			}
			if !strings.Contains(stderr, "incremental: configuring 1 new package(s) on the tree kept") {
				t.Errorf("the failing build did not configure aof-broken incrementally")
			}
			kept, err := builder.KeptTreeDir(c.cacheDir, repoI, branch)
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{"state.json", "root"} {
				if _, err := os.Lstat(filepath.Join(kept, name)); err == nil {
					t.Errorf("a failed --incremental build left %s", filepath.Join(kept, name))
				}
			}
			if after := ostreeCmd(t, "rev-parse", "--repo="+repoI, branch); after != headI {
				t.Errorf("branch moved: %s -> %s", headI, after)
			}
		}
	})
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ensureBuildUser returns an ordinary user with a subuid/subgid range,
// creating it (aof-build) when missing.
func ensureBuildUser(t *testing.T) *user.User {
	t.Helper()
	const name = "aof-build"
	u, err := user.Lookup(name)
	if err != nil {
		if out, err := exec.Command("useradd", "--create-home", "--shell", "/bin/sh", name).CombinedOutput(); err != nil {
			t.Fatalf("useradd: %v\n%s", err, out)
		}
		if u, err = user.Lookup(name); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
		data, _ := os.ReadFile(f)
		if !regexp.MustCompile(`(?m)^` + name + `:\d+:\d+$`).Match(data) {
			fh, err := os.OpenFile(f, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			fh.WriteString(name + ":300000:65536\n")
			fh.Close()
		}
	}
	return u
}

// TestLiveBuildRecipeFeatures builds a kernel-less recipe with users,
// groups, files, directories and scripts, and checks where each ended up.
func TestLiveBuildRecipeFeatures(t *testing.T) {
	needLiveBuild(t)
	root := testenv.ModuleRoot(t)
	c := &cli{t: t, mirror: testenv.DebianMirror(t), cacheDir: filepath.Join(os.TempDir(), "aof-test-cache")}
	t.Setenv("SOURCE_DATE_EPOCH", "1763800000")
	dir := t.TempDir()
	data, err := os.ReadFile(filepath.Join(root, "recipes", "trixie-minimal.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	text := regexp.MustCompile(`(?m)^kernel:\n  package: .*\n`).ReplaceAllString(string(data), "")
	text = text[:strings.Index(text, "outputs:\n")] // no kernel, no images
	text = strings.Replace(text, "hostname: debian", "hostname: demohost", 1)
	text += `groups:
  - name: operators
    gid: 1500
users:
  - name: admin
    uid: 1000
    groups: [operators]
    password-hash: $y$j9T$aofsalt$aofhash
files:
  - source: files/motd
    destination: /etc/motd
    mode: "0640"
    owner: admin:operators
  - source: files/tree
    destination: /opt/demo
directories:
  - path: /var/lib/demo
    mode: "0750"
    owner: admin:operators
scripts:
  - run: echo scripted > /etc/scripted
  - path: setup.sh
`
	os.MkdirAll(filepath.Join(dir, "files", "tree", "sub"), 0o755)
	os.WriteFile(filepath.Join(dir, "files", "motd"), []byte("welcome\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "files", "tree", "sub", "data"), []byte("d\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "setup.sh"), []byte("#!/bin/sh\nset -e\nid admin > /etc/admin-id\n"), 0o755)
	recipePath := filepath.Join(dir, "features.yaml")
	os.WriteFile(recipePath, []byte(text), 0o644)
	repo := filepath.Join(dir, "repo")
	commit, stderr, code := c.build(recipePath, "--repo", repo)
	if code != 0 {
		t.Fatalf("build failed:\n%s", stderr)
	}
	cat := func(p string) string { return ostreeCmd(t, "cat", "--repo="+repo, commit, p) }
	ls := func(p string) string { return strings.TrimSpace(ostreeCmd(t, "ls", "--repo="+repo, commit, p)) }
	if got := cat("/usr/etc/hostname"); got != "demohost\n" {
		t.Errorf("hostname %q", got)
	}
	if !strings.Contains(cat("/usr/etc/passwd"), "\nadmin:x:1000:1000::/home/admin:/bin/bash\n") {
		t.Errorf("passwd:\n%s", cat("/usr/etc/passwd"))
	}
	if !strings.Contains(cat("/usr/etc/shadow"), "\nadmin:$y$j9T$aofsalt$aofhash:") {
		t.Errorf("shadow lacks the hash")
	}
	if !strings.Contains(cat("/usr/etc/group"), "\noperators:x:1500:admin\n") {
		t.Errorf("group:\n%s", cat("/usr/etc/group"))
	}
	if got := ls("/usr/etc/motd"); !strings.HasPrefix(got, "-00640 1000 1500 ") {
		t.Errorf("motd: %s", got)
	}
	if got := cat("/usr/etc/scripted"); got != "scripted\n" {
		t.Errorf("inline script: %q", got)
	}
	if got := cat("/usr/etc/admin-id"); !strings.Contains(got, "uid=1000(admin)") {
		t.Errorf("script file: %q", got)
	}
	if got := cat("/usr/share/factory/var/opt/demo/sub/data"); got != "d\n" {
		t.Errorf("files tree under /opt: %q", got)
	}
	conf := cat("/usr/lib/tmpfiles.d/apt-ostree-var.conf")
	for _, want := range []string{"d /var/lib/demo 0750 1000 1500 -\n", "d /var/home/admin 0700 1000 1000 -\n", "d /var/opt/demo 0755 0 0 -\n"} {
		if !strings.Contains(conf, want) {
			t.Errorf("tmpfiles.d lacks %q:\n%s", want, conf)
		}
	}
}
