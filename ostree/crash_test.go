package ostree_test

// Crash safety: killing the writer (SIGKILL, at random moments) must leave a
// repository that `ostree fsck` accepts and whose refs point only at
// complete commits; a repository whose initialisation was interrupted must
// be usable by the next commit; our stale temporary files must be removed by
// the next writer.
//
// The shared helpers of crash_test.go and corrupt_test.go (building the CLI,
// finding `ostree`, running commands) are defined here.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apt-ostree/apt-ostree-factory/ostree"
)

// crashRequireOstree returns the path of the ostree binary. Without it the
// test is skipped, or fails when AOF_REQUIRE_TOOLS=1.
func crashRequireOstree(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("ostree")
	if err != nil {
		if os.Getenv("AOF_REQUIRE_TOOLS") == "1" {
			t.Fatalf("ostree is required (AOF_REQUIRE_TOOLS=1) but not found: %v", err)
		}
		t.Skipf("ostree not installed: %v", err)
	}
	return p
}

// crashModuleRoot finds the directory holding go.mod, walking up from the
// test's working directory.
func crashModuleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		up := filepath.Dir(dir)
		if up == dir {
			t.Fatal("go.mod not found above the test directory")
		}
		dir = up
	}
}

// crashBuildCLI builds cmd/apt-ostree-factory into a temporary directory
// and returns the binary's path.
func crashBuildCLI(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, serr := os.Stat(goTool); serr != nil {
			if os.Getenv("AOF_REQUIRE_TOOLS") == "1" {
				t.Fatalf("go tool is required to build the CLI but not found: %v", err)
			}
			t.Skipf("go tool not found: %v", err)
		}
	}
	bin := filepath.Join(t.TempDir(), "aof")
	cmd := exec.Command(goTool, "build", "-o", bin, "./cmd/apt-ostree-factory")
	cmd.Dir = crashModuleRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/apt-ostree-factory: %v\n%s", err, out)
	}
	return bin
}

// crashRun runs a command to completion and returns its combined output and
// exit status. Failing to start it at all fails the test.
func crashRun(t *testing.T, name string, args ...string) (string, int) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), ee.ExitCode()
		}
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return string(out), 0
}

// crashWriteRandom writes n pseudo-random bytes to path. Text-like bytes
// (a 16-letter alphabet) make deflate work for its living; raw random bytes
// are incompressible. Both are fast to generate.
func crashWriteRandom(t *testing.T, rng *rand.Rand, path string, n int, textLike bool) {
	t.Helper()
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(rng.Uint32())
	}
	if textLike {
		for i := range b {
			b[i] = 'a' + b[i]&15
			if b[i] == 'a'+15 {
				b[i] = '\n'
			}
		}
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// crashMakeFixture builds a tree of small files of mixed sizes in nested
// directories, a few symlinks, and nBig large files of bigSize bytes.
func crashMakeFixture(t *testing.T, rng *rand.Rand, dir string, nSmall, nBig, bigSize int) {
	t.Helper()
	for i := 0; i < nSmall; i++ {
		sub := filepath.Join(dir, fmt.Sprintf("d%02d", i%40), fmt.Sprintf("e%d", i%3))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		var size int
		switch i % 4 {
		case 0:
			size = rng.IntN(64)
		case 1, 2:
			size = rng.IntN(8 << 10)
		default:
			size = rng.IntN(48 << 10)
		}
		crashWriteRandom(t, rng, filepath.Join(sub, fmt.Sprintf("f%05d", i)), size, i%2 == 0)
	}
	for i := 0; i < 10; i++ {
		if err := os.Symlink(fmt.Sprintf("d%02d/e0", i), filepath.Join(dir, fmt.Sprintf("link%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "big"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < nBig; i++ {
		crashWriteRandom(t, rng, filepath.Join(dir, "big", fmt.Sprintf("big%d.bin", i)), bigSize, i%2 == 0)
	}
}

// crashWritingInTmp reports whether process pid has a file in repo/tmp/
// open: a named temp file or an O_TMPFILE ("tmp/#inode (deleted)").
func crashWritingInTmp(pid int, repo string) bool {
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	d, err := os.Open(fdDir)
	if err != nil {
		return false
	}
	names, _ := d.Readdirnames(-1)
	d.Close()
	prefix := filepath.Join(repo, "tmp") + "/"
	for _, n := range names {
		if target, err := os.Readlink(filepath.Join(fdDir, n)); err == nil && strings.HasPrefix(target, prefix) {
			return true
		}
	}
	return false
}

// crashTempFiles lists our temporary files (aof-tmp-*) in repo/tmp.
func crashTempFiles(t *testing.T, repo string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(repo, "tmp"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "aof-tmp-") {
			out = append(out, e.Name())
		}
	}
	return out
}

// crashReadRef returns refs/heads/<ref> of a repository, zero if absent.
func crashReadRef(t *testing.T, repo, ref string) ostree.Checksum {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo, "refs", "heads", ref))
	if errors.Is(err, os.ErrNotExist) {
		return ostree.Checksum{}
	}
	if err != nil {
		t.Fatal(err)
	}
	c, err := ostree.ParseChecksum(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("ref %s holds %q: %v", ref, b, err)
	}
	return c
}

// crashCheckRepo checks a repository after a writer died or finished:
// `ostree fsck`, our fsck and Verify accept it, every ref under refs/heads
// names a present commit whose whole tree is present, and `ostree ls -R`
// can walk the main branch.
func crashCheckRepo(t *testing.T, ostreeBin, aof, repo, what string) {
	t.Helper()
	t0 := time.Now()
	defer func() { t.Logf("check %v", time.Since(t0)) }()
	if out, code := crashRun(t, ostreeBin, "fsck", "--repo="+repo); code != 0 || strings.Contains(strings.ToLower(out), "error:") {
		t.Fatalf("%s: ostree fsck exit %d:\n%s", what, code, out)
	}
	t.Logf("ostree fsck %v", time.Since(t0))
	if out, code := crashRun(t, aof, "fsck", "--repo="+repo); code != 0 {
		t.Fatalf("%s: aof fsck exit %d:\n%s", what, code, out)
	}
	t.Logf("aof fsck %v", time.Since(t0))
	r, err := ostree.Open(repo)
	if err != nil {
		t.Fatalf("%s: open: %v", what, err)
	}
	rep, err := r.Verify(context.Background(), 0)
	if err != nil {
		t.Fatalf("%s: Verify: %v", what, err)
	}
	if len(rep.Problems) > 0 {
		t.Fatalf("%s: Verify problems:\n%s", what, strings.Join(rep.Problems, "\n"))
	}
	t.Logf("verify %v", time.Since(t0))
	heads := filepath.Join(repo, "refs", "heads")
	err = filepath.WalkDir(heads, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasPrefix(d.Name(), ".") {
			return err
		}
		rel, _ := filepath.Rel(heads, p)
		c := crashReadRef(t, repo, filepath.ToSlash(rel))
		cm, err := r.ReadCommit(c)
		if err != nil {
			return fmt.Errorf("ref %s: %w", rel, err)
		}
		// The whole tree must be present and sound, not only the commit.
		n := 0
		if err := r.Walk(c, "/", true, func(e *ostree.TreeEntry) error {
			if !e.IsDir() {
				n++
				if ok, err := r.HasObject(e.Checksum, ostree.ObjectFile); err != nil || !ok {
					return fmt.Errorf("%s: content object %s missing (%v)", e.Path, e.Checksum, err)
				}
			}
			return nil
		}); err != nil {
			return fmt.Errorf("ref %s -> %s (%q): %w", rel, c, cm.Subject, err)
		}
		if n == 0 {
			return fmt.Errorf("ref %s -> %s: empty tree", rel, c)
		}
		if out, code := crashRun(t, ostreeBin, "ls", "-R", "--repo="+repo, filepath.ToSlash(rel)); code != 0 {
			return fmt.Errorf("ostree ls -R %s: exit %d:\n%s", rel, code, out)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// crashCheckNewObjects verifies every object file written since the given
// time, referenced by a commit or not: a killed writer must not leave a
// partial object under its final name (fsck only reads reachable objects,
// and the next commit would trust it and skip writing it). It returns how
// many objects it checked.
func crashCheckNewObjects(t *testing.T, repo string, since time.Time, what string) int {
	t.Helper()
	r, err := ostree.Open(repo)
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]ostree.ObjectType{"dirtree": ostree.ObjectDirTree, "dirmeta": ostree.ObjectDirMeta, "commit": ostree.ObjectCommit}
	n := 0
	base := filepath.Join(repo, "objects")
	err = filepath.WalkDir(base, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.ModTime().Before(since) {
			return nil
		}
		rel, _ := filepath.Rel(base, p)
		hex, ext, _ := strings.Cut(strings.Replace(rel, "/", "", 1), ".")
		c, err := ostree.ParseChecksum(hex)
		if err != nil {
			return fmt.Errorf("stray file in objects/: %s", rel)
		}
		n++
		if ext == "filez" {
			return r.VerifyContent(c)
		}
		if typ, ok := types[ext]; ok {
			_, err = r.ReadMetadata(typ, c)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return n
}

// crashCommitCmd returns an `aof commit` command for dir.
func crashCommitCmd(aof, repo, subject, dir string) *exec.Cmd {
	return exec.Command(aof, "commit", "--repo="+repo, "--branch=main", "--subject="+subject, dir)
}

// crashRunKilled starts cmd and SIGKILLs it after delay; with a trigger,
// the delay counts from the moment the trigger (polled every half
// millisecond with the process id) first reports true. It reports whether the command finished
// on its own before the kill (and its output).
func crashRunKilled(t *testing.T, cmd *exec.Cmd, delay time.Duration, trigger func(pid int) bool) (finished bool, out string, elapsed time.Duration) {
	t.Helper()
	var buf strings.Builder
	cmd.Stdout = &buf
	cmd.Stderr = &buf
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	fire := make(chan struct{})
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		if trigger != nil {
			for !trigger(cmd.Process.Pid) {
				select {
				case <-stop:
					return
				case <-time.After(500 * time.Microsecond):
				}
			}
		}
		select {
		case <-stop:
		case <-time.After(delay):
			close(fire)
		}
	}()
	var err error
	select {
	case err = <-done:
		finished = true
	case <-fire:
		if kerr := cmd.Process.Signal(syscall.SIGKILL); kerr != nil && !errors.Is(kerr, os.ErrProcessDone) {
			t.Fatalf("kill: %v", kerr)
		}
		err = <-done
		// The process may have exited normally just before the signal.
		finished = cmd.ProcessState.Exited()
	}
	elapsed = time.Since(start)
	if finished && err != nil {
		t.Fatalf("%v exited with %v before it was killed:\n%s", cmd.Args, err, buf.String())
	}
	return finished, buf.String(), elapsed
}

// crashMutate changes the tree between iterations so that new objects get
// written: one large file gets new content, a few small files are
// rewritten, and one file is added.
func crashMutate(t *testing.T, rng *rand.Rand, dir string, iter, nBig, bigSize int) {
	t.Helper()
	// A medium-sized file gets new content every time, a large one every
	// fifth time (so the repository, which fsck reads whole after every
	// iteration, stays of moderate size).
	crashWriteRandom(t, rng, filepath.Join(dir, "big", "medium.bin"), 4<<20+rng.IntN(2<<20), true)
	if iter%5 == 0 {
		crashWriteRandom(t, rng, filepath.Join(dir, "big", fmt.Sprintf("big%d.bin", iter%nBig)), bigSize, iter%2 == 0)
	}
	for k := 0; k < 5; k++ {
		sub := filepath.Join(dir, fmt.Sprintf("d%02d", rng.IntN(40)), "e1")
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		crashWriteRandom(t, rng, filepath.Join(sub, fmt.Sprintf("mut%d", k)), rng.IntN(32<<10), true)
	}
	crashWriteRandom(t, rng, filepath.Join(dir, fmt.Sprintf("added-%02d", iter)), 1+rng.IntN(4<<10), false)
}

// TestCrashKillDuringCommit SIGKILLs `aof commit` at random moments, over
// and over, into one repository, checking it after each kill.
func TestCrashKillDuringCommit(t *testing.T) {
	ostreeBin := crashRequireOstree(t)
	aof := crashBuildCLI(t)

	// The seed fixes the fixture, the tree changes and the kill delays (the
	// moments the writer reaches still vary with the machine's speed).
	seed := uint64(20240601)
	if s := os.Getenv("AOF_CRASH_SEED"); s != "" {
		if _, err := fmt.Sscan(s, &seed); err != nil {
			t.Fatalf("AOF_CRASH_SEED=%q: %v", s, err)
		}
	}
	t.Logf("seed %d (rerun with AOF_CRASH_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0x5eed))

	const (
		nSmall  = 2000
		nBig    = 2
		bigSize = 16 << 20
		iters   = 18
	)
	tmp := t.TempDir()
	tree := filepath.Join(tmp, "tree")
	start := time.Now()
	crashMakeFixture(t, rng, tree, nSmall, nBig, bigSize)
	t.Logf("fixture: %d small files, %d x %d MiB, made in %v", nSmall, nBig, bigSize>>20, time.Since(start).Round(time.Millisecond))

	// One full, undisturbed commit into a scratch repository measures how
	// long writing everything takes.
	scratch := filepath.Join(tmp, "scratch")
	fin, out, full := crashRunKilled(t, crashCommitCmd(aof, scratch, "measure", tree), time.Minute, nil)
	if !fin {
		t.Fatalf("measuring commit did not finish:\n%s", out)
	}
	t.Logf("full commit takes %v", full.Round(time.Millisecond))
	os.RemoveAll(scratch)

	repo := filepath.Join(tmp, "repo")
	if real, err := filepath.EvalSymlinks(tmp); err == nil {
		repo = filepath.Join(real, "repo") // as /proc/PID/fd shows it
	}
	if _, err := ostree.Init(repo); err != nil {
		t.Fatal(err)
	}
	crashCheckRepo(t, ostreeBin, aof, repo, "empty repository")

	typical := full // duration of the last commit that finished
	var kills, finishes, strandedTemps, killedAfterRef int
	prev := ostree.Checksum{}
	for i := 0; i < iters; i++ {
		if i > 0 {
			crashMutate(t, rng, tree, i, nBig, bigSize)
		}
		subject := fmt.Sprintf("iter-%d", i)
		// Every fourth iteration runs to completion. Others are killed at a
		// random moment between start and the typical duration of a commit,
		// or, every fourth, at a random moment up to 20 ms after the writer
		// has opened a file in tmp/ (named or O_TMPFILE), i.e. is storing an
		// object: much of a commit is hashing unchanged files and syncing,
		// so plain random kills seldom land inside a write.
		delay := time.Duration(rng.Int64N(int64(typical) + 1))
		var trigger func(pid int) bool
		how := "after"
		switch i % 4 {
		case 3:
			delay, how = time.Minute, "finish, limit"
		case 1:
			delay, how = time.Duration(rng.Int64N(int64(20*time.Millisecond))), "after it opened a file in tmp/ +"
			trigger = func(pid int) bool { return crashWritingInTmp(pid, repo) }
		}
		iterStart := time.Now().Add(-time.Second) // slack for coarse timestamps
		fin, out, took := crashRunKilled(t, crashCommitCmd(aof, repo, subject, tree), delay, trigger)
		what := fmt.Sprintf("iteration %d (kill %s %v, finished=%v)", i, how, delay.Round(time.Microsecond), fin)
		temps := crashTempFiles(t, repo)
		newObjs := crashCheckNewObjects(t, repo, iterStart, what)
		t.Logf("%s: ran %v; verified %d objects written since about its start; %d stray temp files", what, took.Round(time.Millisecond), newObjs, len(temps))

		crashCheckRepo(t, ostreeBin, aof, repo, what)

		cur := crashReadRef(t, repo, "main")
		r, err := ostree.Open(repo)
		if err != nil {
			t.Fatal(err)
		}
		if fin {
			finishes++
			typical = took
			if want := strings.TrimSpace(out); cur.String() != want {
				t.Fatalf("%s: commit printed %q but main is %s", what, want, cur)
			}
			if len(temps) > 0 {
				t.Fatalf("%s: a finished commit left temp files in tmp/: %v", what, temps)
			}
		} else {
			kills++
			strandedTemps += len(temps)
			if cur != prev {
				killedAfterRef++
			}
		}
		switch {
		case cur == prev:
			if fin {
				t.Fatalf("%s: finished commit did not move main", what)
			}
		case cur.IsZero():
			t.Fatalf("%s: main disappeared (was %s)", what, prev)
		default:
			cm, err := r.ReadCommit(cur)
			if err != nil {
				t.Fatalf("%s: main moved to unreadable commit: %v", what, err)
			}
			if cm.Subject != subject || cm.Parent != prev {
				t.Fatalf("%s: main moved from %s to %s (subject %q, parent %s), expected this iteration's commit on top of the previous one",
					what, prev, cur, cm.Subject, cm.Parent)
			}
		}
		prev = cur
	}
	t.Logf("%d kills (%d after main had moved), %d finished commits, %d stray temp files left by kills",
		kills, killedAfterRef, finishes, strandedTemps)
	if kills == 0 || finishes == 0 {
		t.Fatalf("expected both kills and finished commits, got %d and %d", kills, finishes)
	}

	// A stale temp file of ours, as a killed writer leaves, must be removed
	// by the next writer when it takes the lock.
	stale := filepath.Join(repo, "tmp", "aof-tmp-0123456789abcdef")
	if err := os.WriteFile(stale, []byte("stale"), 0o600); err != nil {
		t.Fatal(err)
	}
	crashMutate(t, rng, tree, iters, nBig, bigSize)
	if out, code := crashRun(t, aof, "commit", "--repo="+repo, "--branch=main", "--subject=final", tree); code != 0 {
		t.Fatalf("final commit: exit %d:\n%s", code, out)
	}
	if temps := crashTempFiles(t, repo); len(temps) > 0 {
		t.Fatalf("after a successful commit tmp/ still holds our temp files: %v", temps)
	}
	crashCheckRepo(t, ostreeBin, aof, repo, "final commit")
}

// crashRepoState describes what an interrupted initialisation left.
func crashRepoState(repo string) string {
	if _, err := os.Stat(repo); err != nil {
		return "absent"
	}
	ents, _ := os.ReadDir(repo)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if _, err := os.Stat(filepath.Join(repo, "refs", "heads", "main")); err == nil {
		return "committed"
	}
	return "[" + strings.Join(names, " ") + "]"
}

// TestCrashKillDuringInit kills `aof commit` into a fresh repository path
// within its first milliseconds, when it creates the repository, and checks
// that the next commit to that path succeeds and gives a sound repository.
func TestCrashKillDuringInit(t *testing.T) {
	ostreeBin := crashRequireOstree(t)
	aof := crashBuildCLI(t)
	tmp := t.TempDir()
	tree := filepath.Join(tmp, "tree")
	if err := os.MkdirAll(filepath.Join(tree, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "sub", "hello"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Find how long the process takes to get to a finished commit, then
	// spread kills over that window (at most 5 ms).
	fin, _, took := crashRunKilled(t, crashCommitCmd(aof, filepath.Join(tmp, "measure"), "m", tree), time.Minute, nil)
	if !fin {
		t.Fatal("measuring commit did not finish")
	}
	window := min(took, 5*time.Millisecond)
	t.Logf("a fresh commit takes %v; killing within %v", took.Round(time.Microsecond), window)

	const n = 24
	states := map[string]int{}
	for i := 0; i < n; i++ {
		repo := filepath.Join(tmp, fmt.Sprintf("repo%02d", i))
		delay := window * time.Duration(i) / n
		_, _, _ = crashRunKilled(t, crashCommitCmd(aof, repo, "killed", tree), delay, nil)
		state := crashRepoState(repo)
		states[state]++
		what := fmt.Sprintf("kill after %v left %s", delay, state)
		if out, code := crashRun(t, aof, "commit", "--repo="+repo, "--branch=main", "--subject=after", tree); code != 0 {
			t.Errorf("%s; the next commit failed (exit %d):\n%s", what, code, out)
			continue
		}
		crashCheckRepo(t, ostreeBin, aof, repo, what)
	}
	for s, k := range states {
		t.Logf("%2d x %s", k, s)
	}
}

// TestCrashInitPrefixStates builds, deterministically, every state that an
// interrupted ostree.Init can leave (its steps, in order, are: the
// directory, config through a temporary file, tmp, extensions, state, refs,
// refs/heads, refs/mirrors, refs/remotes, objects) and checks that Init and a
// commit then succeed and give a repository that ostree accepts.
func TestCrashInitPrefixStates(t *testing.T) {
	ostreeBin := crashRequireOstree(t)
	aof := crashBuildCLI(t)
	tmp := t.TempDir()
	tree := filepath.Join(tmp, "tree")
	if err := os.MkdirAll(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "f"), []byte("content\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	config := "[core]\nrepo_version=1\nmode=archive-z2\n"
	dirs := []string{"tmp", "extensions", "state", "refs", "refs/heads", "refs/mirrors", "refs/remotes"}
	type step struct {
		name  string
		build func(repo string) error
	}
	steps := []step{
		{"empty directory", func(repo string) error { return os.Mkdir(repo, 0o775) }},
		{"half-written config temp file", func(repo string) error {
			if err := os.Mkdir(repo, 0o775); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(repo, ".config.tmp-123"), []byte(config[:10]), 0o600)
		}},
	}
	for k := 0; k <= len(dirs); k++ {
		k := k
		steps = append(steps, step{fmt.Sprintf("config + %v", dirs[:k]), func(repo string) error {
			if err := os.Mkdir(repo, 0o775); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(repo, "config"), []byte(config), 0o644); err != nil {
				return err
			}
			for _, d := range dirs[:k] {
				if err := os.Mkdir(filepath.Join(repo, d), 0o775); err != nil {
					return err
				}
			}
			return nil
		}})
	}
	for i, s := range steps {
		for _, via := range []string{"library", "cli"} {
			repo := filepath.Join(tmp, fmt.Sprintf("r%02d-%s", i, via))
			if err := s.build(repo); err != nil {
				t.Fatal(err)
			}
			what := fmt.Sprintf("%s after %s", via, s.name)
			if via == "library" {
				r, err := ostree.Init(repo)
				if err != nil {
					t.Errorf("%s: Init: %v", what, err)
					continue
				}
				root := ostree.NewMemDir(ostree.FileMeta{Mode: ostree.ModeDir | 0o755})
				root.Files["f"] = &ostree.MemFile{Header: ostree.FileHeader{FileMeta: ostree.FileMeta{Mode: ostree.ModeRegular | 0o644}, Size: 2}, Data: []byte("x\n")}
				if _, err := r.CommitTree(context.Background(), root, ostree.CommitOptions{Branch: "main", Subject: "s"}); err != nil {
					t.Errorf("%s: commit: %v", what, err)
					continue
				}
			} else if out, code := crashRun(t, aof, "commit", "--repo="+repo, "--branch=main", "--subject=s", tree); code != 0 {
				t.Errorf("%s: commit exit %d:\n%s", what, code, out)
				continue
			}
			crashCheckRepo(t, ostreeBin, aof, repo, what)
		}
	}
}
