package ostree_test

// Interoperability tests against the real `ostree` CLI (Debian's 2022.7),
// used as the oracle:
//
//   - our writer (the apt-ostree-factory CLI and the library path
//     ReadDir + CommitTree) and `ostree commit` produce identical commit
//     checksums for the same tree and commit options;
//   - `ostree fsck` accepts repositories we write, and `ostree checkout`
//     of our commits reproduces the input tree;
//   - our reader (ReadCommit, Walk, `ls`, Checkout, Verify, `log`, `refs`)
//     handles repositories written by `ostree` and agrees with `ostree`.
//
// Everything lives under one TestInterop so that the CLI is built once per
// test run and the fixture tree (5,000-entry directory, owners, xattrs...)
// is made once; subtests produce what they need lazily, so
// `-run TestInterop/BigFile` does not pay for the rest. All helpers carry
// the interop prefix because other _test files share package ostree_test.
//
// The tests need root (chown, `ostree checkout` restoring owners). Without
// the ostree binary or root they skip, unless AOF_REQUIRE_TOOLS=1 (set by
// the Makefile), in which case they fail.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/apt-ostree/apt-ostree-factory/ostree"
	"github.com/apt-ostree/apt-ostree-factory/ostree/gvariant"
)

// ---------------------------------------------------------------------------
// Environment: required tools, running commands, building the CLI.
// ---------------------------------------------------------------------------

// interopRequireEnv names the variable that turns missing prerequisites
// from a skip into a failure.
const interopRequireEnv = "AOF_REQUIRE_TOOLS"

func interopToolsRequired() bool { return os.Getenv(interopRequireEnv) == "1" }

// interopRequireTool returns the path of the named executable. When it is
// missing the test fails if AOF_REQUIRE_TOOLS=1 and skips otherwise.
func interopRequireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if interopToolsRequired() {
		t.Fatalf("required tool %q not found (%s=1): %v", name, interopRequireEnv, err)
	}
	t.Skipf("tool %q not found, skipping interop test (set %s=1 to fail instead): %v", name, interopRequireEnv, err)
	return ""
}

// interopRequireRoot: the fixture has files owned by other users and the
// checkouts restore owners, which needs root. Same skip/fail rule as tools.
func interopRequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if interopToolsRequired() {
		t.Fatalf("interop tests must run as root (%s=1)", interopRequireEnv)
	}
	t.Skipf("interop tests need root (chown, checkout with owners); skipping (set %s=1 to fail instead)", interopRequireEnv)
}

// interopEnv is the environment of every command we run: a fixed time
// zone (ostree prints dates in local time) and a UTF-8 locale (g_print
// would otherwise mangle non-ASCII file names).
func interopEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "SOURCE_DATE_EPOCH=") || strings.HasPrefix(kv, "LC_ALL=") || strings.HasPrefix(kv, "TZ=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "TZ=UTC", "LC_ALL=C.UTF-8")
}

// interopExec runs a command and returns its output; a non-zero exit is
// returned as an *exec.ExitError. Slow commands are logged with their time.
func interopExec(t testing.TB, name string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = interopEnv()
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	start := time.Now()
	err = cmd.Run()
	if d := time.Since(start); d > 2*time.Second {
		t.Logf("%s %s: %.1fs", filepath.Base(name), interopShortArgs(args), d.Seconds())
	}
	return o.String(), e.String(), err
}

// interopRun runs a command that must succeed and returns its stdout.
func interopRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, errOut, err := interopExec(t, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, interopTail(out), interopTail(errOut))
	}
	return out
}

func interopShortArgs(args []string) string {
	s := strings.ReplaceAll(strings.Join(args, " "), "\n", `\n`)
	if len(s) > 160 {
		s = s[:160] + "..."
	}
	return s
}

// interopTail keeps the end of long command output for error messages.
func interopTail(s string) string {
	const max = 4000
	if len(s) > max {
		return "..." + s[len(s)-max:]
	}
	return s
}

// interopModuleRoot walks up from the working directory (the package
// directory under `go test`) to the go.mod of this module.
func interopModuleRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil {
			if !bytes.Contains(b, []byte("module github.com/apt-ostree/apt-ostree-factory")) {
				t.Fatalf("%s/go.mod is not the apt-ostree-factory module", dir)
			}
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// interopBuildCLI builds cmd/apt-ostree-factory into dir.
func interopBuildCLI(t testing.TB, dir string) string {
	t.Helper()
	goTool := interopRequireTool(t, "go")
	out := filepath.Join(dir, "aof")
	cmd := exec.Command(goTool, "build", "-o", out, "./cmd/apt-ostree-factory")
	cmd.Dir = interopModuleRoot(t)
	start := time.Now()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/apt-ostree-factory: %v\n%s", err, b)
	}
	t.Logf("built %s in %.1fs", out, time.Since(start).Seconds())
	return out
}

// ---------------------------------------------------------------------------
// The suite: shared, lazily made state.
// ---------------------------------------------------------------------------

// interopSuite holds what several subtests share. Lazy producers are called
// from subtests, so they must put files under s.tmp (the parent test's
// TempDir), never under a subtest's TempDir, which disappears with it.
type interopSuite struct {
	tmp     string
	cli     string
	fixture *interopFixture
	seq     int

	// The fixture committed with interopFixtureCommit by `ostree commit`
	// and by our CLI, each into a fresh archive repository.
	ostreeRepo, ostreeRev string
	ourRepo, ourRev       string
}

func (s *interopSuite) newDir(t testing.TB, name string) string {
	t.Helper()
	s.seq++
	d := filepath.Join(s.tmp, fmt.Sprintf("%02d-%s", s.seq, name))
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

func (s *interopSuite) getCLI(t *testing.T) string {
	t.Helper()
	if s.cli == "" {
		s.cli = interopBuildCLI(t, s.newDir(t, "cli"))
	}
	return s.cli
}

func (s *interopSuite) getFixture(t *testing.T) *interopFixture {
	t.Helper()
	if s.fixture == nil {
		start := time.Now()
		s.fixture = interopMakeTree(t, filepath.Join(s.newDir(t, "fixture"), "tree"))
		t.Logf("fixture tree made in %.1fs", time.Since(start).Seconds())
	}
	return s.fixture
}

func (s *interopSuite) getOstreeCommit(t *testing.T) (repo, rev string) {
	t.Helper()
	if s.ostreeRev == "" {
		fx := s.getFixture(t)
		repo := filepath.Join(s.newDir(t, "ostree-repo"), "repo")
		interopOstreeInit(t, repo)
		s.ostreeRev = interopOstreeCommit(t, repo, fx.Dir, interopFixtureCommit)
		s.ostreeRepo = repo
	}
	return s.ostreeRepo, s.ostreeRev
}

func (s *interopSuite) getOurCommit(t *testing.T) (repo, rev string) {
	t.Helper()
	if s.ourRev == "" {
		fx := s.getFixture(t)
		repo := filepath.Join(s.newDir(t, "our-repo"), "repo")
		s.ourRev = interopCLICommit(t, s.getCLI(t), repo, fx.Dir, interopFixtureCommit)
		s.ourRepo = repo
	}
	return s.ourRepo, s.ourRev
}

// interopFixtureCommit is the commit made of the fixture tree. The metadata
// has a repeated key and is deliberately not sorted: a{sv} order is part of
// the commit bytes, and `ostree commit` keeps the command-line order.
var interopFixtureCommit = interopCommit{
	Branch:  "interop/main",
	Subject: "Interop fixture — ünïcødé subject",
	Body:    "First line of the body.\n\nThird line, with 'single' and \"double\" quotes.",
	Time:    time.Date(2024, 5, 1, 12, 34, 56, 0, time.UTC),
	Metadata: [][2]string{
		{"version", "42.1"},
		{"zeta", "first"},
		{"alpha", "a=b=c"}, // only the first '=' separates key and value
		{"zeta", "second"}, // repeated key: both entries are kept
		{"empty", ""},
		{"unicode", "日本語 ✓"},
	},
}

func TestInterop(t *testing.T) {
	interopRequireTool(t, "ostree")
	interopRequireRoot(t)
	s := &interopSuite{tmp: t.TempDir()}
	t.Logf("%s", strings.TrimSpace(strings.SplitN(interopRun(t, "ostree", "--version"), "\n", 3)[1]))

	// Writer: same checksums as `ostree commit` (criteria 1 and 2).
	t.Run("CommitChecksum", s.testCommitChecksum)
	t.Run("CommitOptions", s.testCommitOptions)
	t.Run("OwnerOverride", s.testOwnerOverride)
	// Repositories we write, read by ostree (criteria 3 and 4).
	t.Run("OstreeFsckOfOurRepo", s.testOstreeFsckOfOurRepo)
	t.Run("OstreeCheckoutOfOurCommit", s.testOstreeCheckoutOfOurCommit)
	// Repositories ostree writes, read by us (criteria 5 and 6).
	t.Run("ReadOstreeCommit", s.testReadOstreeCommit)
	t.Run("MetadataVariants", s.testMetadataVariants)
	t.Run("WalkMatchesOstreeLs", s.testWalkMatchesOstreeLs)
	t.Run("LsMatchesOstreeLs", s.testLsMatchesOstreeLs)
	t.Run("CheckoutOfOstreeCommit", s.testCheckoutOfOstreeCommit)
	t.Run("VerifyOstreeRepo", s.testVerifyOstreeRepo)
	t.Run("LogAndRefsOnOstreeRepo", s.testLogAndRefsOnOstreeRepo)
	// All of the above for one file of several hundred MB.
	t.Run("BigFile", s.testBigFile)
}

// ---------------------------------------------------------------------------
// Committing with ostree, with our CLI and with the library.
// ---------------------------------------------------------------------------

// interopCommit is one set of `commit` options, expressed for all three
// writers.
type interopCommit struct {
	Branch             string
	Subject, Body      string
	Time               time.Time
	Metadata           [][2]string // --add-metadata-string KEY=VALUE, in order
	OwnerUID, OwnerGID *uint32     // --owner-uid / --owner-gid
	Orphan, NoBindings bool
}

func interopU32(v uint32) *uint32 { return &v }

func (c interopCommit) commonArgs(repo string) []string {
	args := []string{"commit", "--repo=" + repo, "--subject=" + c.Subject, "--body=" + c.Body}
	if c.Branch != "" {
		args = append(args, "--branch="+c.Branch)
	}
	for _, kv := range c.Metadata {
		args = append(args, "--add-metadata-string="+kv[0]+"="+kv[1])
	}
	if c.OwnerUID != nil {
		args = append(args, fmt.Sprintf("--owner-uid=%d", *c.OwnerUID))
	}
	if c.OwnerGID != nil {
		args = append(args, fmt.Sprintf("--owner-gid=%d", *c.OwnerGID))
	}
	if c.Orphan {
		args = append(args, "--orphan")
	}
	if c.NoBindings {
		args = append(args, "--no-bindings")
	}
	return args
}

func interopOstreeInit(t testing.TB, repo string) {
	t.Helper()
	interopRun(t, "ostree", "init", "--repo="+repo, "--mode=archive-z2")
}

// interopOstreeCommit commits dir with `ostree commit` and returns the
// commit checksum (the last line of its output).
func interopOstreeCommit(t testing.TB, repo, dir string, c interopCommit) string {
	t.Helper()
	args := append(c.commonArgs(repo), fmt.Sprintf("--timestamp=@%d", c.Time.Unix()), dir)
	return interopLastChecksum(t, interopRun(t, "ostree", args...))
}

// interopCLICommit commits dir with `apt-ostree-factory commit`; the
// repository is created if missing.
func interopCLICommit(t testing.TB, cli, repo, dir string, c interopCommit) string {
	t.Helper()
	args := append(c.commonArgs(repo), "--timestamp="+c.Time.UTC().Format(time.RFC3339), dir)
	return interopLastChecksum(t, interopRun(t, cli, args...))
}

// interopLibCommit commits dir through the library: ReadDir + CommitTree.
func interopLibCommit(t testing.TB, repoPath, dir string, c interopCommit) string {
	t.Helper()
	repo, err := ostree.Init(repoPath)
	if err != nil {
		t.Fatal(err)
	}
	tree, err := ostree.ReadDir(dir, ostree.DirOptions{OwnerUID: c.OwnerUID, OwnerGID: c.OwnerGID})
	if err != nil {
		t.Fatalf("ReadDir(%s): %v", dir, err)
	}
	var md ostree.Metadata
	for _, kv := range c.Metadata {
		md = append(md, ostree.MetadataEntry{Key: kv[0], Value: gvariant.NewVariant("s", kv[1])})
	}
	start := time.Now()
	res, err := repo.CommitTree(context.Background(), tree, ostree.CommitOptions{
		Branch: c.Branch, Subject: c.Subject, Body: c.Body, Timestamp: c.Time,
		Metadata: md, Orphan: c.Orphan, NoBindings: c.NoBindings,
	})
	if err != nil {
		t.Fatalf("CommitTree: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Logf("library CommitTree: %.1fs", d.Seconds())
	}
	return res.Checksum.String()
}

func interopLastChecksum(t testing.TB, out string) string {
	t.Helper()
	lines := strings.Fields(out)
	if len(lines) == 0 {
		t.Fatalf("commit printed nothing")
	}
	last := lines[len(lines)-1]
	if _, err := ostree.ParseChecksum(last); err != nil {
		t.Fatalf("commit output does not end in a checksum: %q", interopTail(out))
	}
	return last
}

// interopExplainMismatch is called when two commits that should be equal
// are not: it lists, with `ostree ls -R -X -C` (ostree reading both
// repositories), the first entries that differ, and both commits' metadata.
func interopExplainMismatch(t testing.TB, nameA, repoA, revA, nameB, repoB, revB string) {
	t.Helper()
	list := func(repo, rev string) []string {
		out, errOut, err := interopExec(t, "ostree", "ls", "--repo="+repo, "-R", "-X", "-C", rev)
		if err != nil {
			return []string{fmt.Sprintf("<ostree ls failed: %v: %s>", err, strings.TrimSpace(errOut))}
		}
		return interopNormLines(out)
	}
	show := func(repo, rev string) string {
		out, errOut, err := interopExec(t, "ostree", "show", "--raw", "--repo="+repo, rev)
		if err != nil {
			return fmt.Sprintf("<ostree show failed: %v: %s>", err, errOut)
		}
		return out
	}
	t.Errorf("commit %s (%s) != %s (%s)\ntree differences (ostree ls -R -X -C), %s vs %s:\n%s\nostree show --raw %s:\n%s\nostree show --raw %s:\n%s",
		revA, nameA, revB, nameB, nameA, nameB,
		interopLineDiff(list(repoA, revA), list(repoB, revB), 15),
		nameA, show(repoA, revA), nameB, show(repoB, revB))
}

// ---------------------------------------------------------------------------
// The fixture tree.
// ---------------------------------------------------------------------------

// interopFixture describes the tree made by interopMakeTree.
type interopFixture struct {
	Dir string
	// SymlinkUserXattr reports whether the filesystem accepted a user.*
	// xattr on a symlink (Linux normally refuses: EPERM).
	SymlinkUserXattr bool
}

// interopTreeBuilder makes files under root, failing the test on any error.
// Paths are slash-separated and relative to root.
type interopTreeBuilder struct {
	t    testing.TB
	root string
}

func (b *interopTreeBuilder) p(rel string) string {
	return filepath.Join(b.root, filepath.FromSlash(rel))
}

func (b *interopTreeBuilder) check(op, rel string, err error) {
	if err != nil {
		b.t.Helper()
		b.t.Fatalf("fixture: %s %s: %v", op, rel, err)
	}
}

// dir makes a directory (and missing parents, 0755) with the exact mode.
func (b *interopTreeBuilder) dir(rel string, mode uint32) {
	b.t.Helper()
	b.check("mkdir", rel, os.MkdirAll(b.p(rel), 0o755))
	b.chmod(rel, mode)
}

// file writes a regular file with the exact mode (suid etc. included).
func (b *interopTreeBuilder) file(rel string, data []byte, mode uint32) {
	b.t.Helper()
	b.check("write", rel, os.WriteFile(b.p(rel), data, 0o600))
	b.chmod(rel, mode)
}

func (b *interopTreeBuilder) symlink(rel, target string) {
	b.t.Helper()
	b.check("symlink", rel, os.Symlink(target, b.p(rel)))
}

func (b *interopTreeBuilder) hardlink(existing, rel string) {
	b.t.Helper()
	b.check("link", rel, os.Link(b.p(existing), b.p(rel)))
}

// chmod sets raw mode bits; unlike os.Chmod it takes S_ISUID etc. as is.
func (b *interopTreeBuilder) chmod(rel string, mode uint32) {
	b.t.Helper()
	b.check("chmod", rel, unix.Chmod(b.p(rel), mode))
}

// chown changes the owner without following symlinks. It clears setuid
// and setgid, so callers chmod afterwards.
func (b *interopTreeBuilder) chown(rel string, uid, gid int) {
	b.t.Helper()
	b.check("lchown", rel, os.Lchown(b.p(rel), uid, gid))
}

func (b *interopTreeBuilder) xattr(rel, name string, value []byte) {
	b.t.Helper()
	b.check("lsetxattr "+name, rel, unix.Lsetxattr(b.p(rel), name, value, 0))
}

// interopMakeTree makes the fixture at dir (which must not exist): every
// kind of entry `ostree commit` stores, with the metadata that goes into
// checksums (modes incl. setuid/setgid/sticky, owners, xattrs).
func interopMakeTree(t testing.TB, dir string) *interopFixture {
	t.Helper()
	b := &interopTreeBuilder{t: t, root: dir}
	fx := &interopFixture{Dir: dir}
	b.dir(".", 0o755)

	// Regular files, executables, special permission bits.
	b.file("hello.txt", []byte("hello, world\n"), 0o644)
	b.file("with space.txt", []byte("a name with a space\n"), 0o644)
	b.file("empty", nil, 0o644)
	b.file("empty-exec", nil, 0o755)
	b.file("no-permissions", []byte("mode 0000\n"), 0o000)
	b.file("read-only", []byte("mode 0444\n"), 0o444)
	b.file("world-writable", []byte("mode 0777\n"), 0o777)
	// Above the library's 1 MiB small-file limit: content is streamed twice
	// (hash pass, then compress pass).
	var medium bytes.Buffer
	if err := interopWriteMixed(&medium, 3<<20+12345, 1); err != nil {
		t.Fatal(err)
	}
	b.file("medium.bin", medium.Bytes(), 0o640)
	b.dir("bin", 0o755)
	b.file("bin/tool", []byte("#!/bin/sh\necho tool\n"), 0o755)
	b.file("bin/setuid", []byte("#!/bin/sh\necho setuid\n"), 0o4755)
	b.file("bin/setgid", []byte("#!/bin/sh\necho setgid\n"), 0o2755)
	b.file("bin/setuid-setgid", []byte("#!/bin/sh\necho both\n"), 0o6750)
	b.dir("sticky", 0o1777)
	b.file("sticky/inside", []byte("in a sticky dir\n"), 0o644)
	b.dir("setgid-dir", 0o2775)
	b.file("setgid-dir/inside", []byte("in a setgid dir\n"), 0o664)

	// Symlinks: relative, up-level, absolute, dangling, to a directory, to
	// itself, and a long target.
	b.symlink("link-relative", "hello.txt")
	b.symlink("bin/link-up", "../hello.txt")
	b.symlink("link-absolute", "/etc/passwd")
	b.symlink("link-dangling", "does/not/exist")
	b.symlink("link-to-dir", "bin")
	b.symlink("link-self", "link-self")
	b.symlink("link-long", strings.Repeat("long-component/", 60)+"end")

	// Hardlinks, within a directory and across directories.
	b.dir("hard", 0o755)
	b.file("hard/a", []byte("hardlinked content\n"), 0o644)
	b.hardlink("hard/a", "hard/b")
	b.hardlink("hard/a", "bin/hard-c")
	b.file("hard/exec", []byte("#!/bin/sh\n"), 0o755)
	b.hardlink("hard/exec", "hard/exec-link")

	// Empty directories, one deep chain, 30 levels of nesting.
	b.dir("empty-dir", 0o755)
	b.dir("nested/a/b/c/empty", 0o700)
	deep := "deep"
	for i := 0; i < 30; i++ {
		deep += "/" + strconv.Itoa(i)
	}
	b.dir(deep, 0o755)
	b.file(deep+"/leaf", []byte("leaf\n"), 0o644)

	// A directory with 5,000 entries: mostly files (every 7th shares its
	// content, to exercise deduplication), some subdirectories and symlinks.
	b.dir("many", 0o755)
	for i := 0; i < 5000; i++ {
		switch {
		case i%250 == 0:
			d := fmt.Sprintf("many/d%04d", i)
			b.dir(d, 0o755)
			b.file(d+"/x", []byte(fmt.Sprintf("in %s\n", d)), 0o644)
		case i%100 == 0:
			b.symlink(fmt.Sprintf("many/l%04d", i), fmt.Sprintf("f%04d", i+1))
		case i%7 == 0:
			b.file(fmt.Sprintf("many/f%04d", i), []byte("shared content\n"), 0o644)
		default:
			b.file(fmt.Sprintf("many/f%04d", i), []byte(fmt.Sprintf("entry %d\n", i)), 0o644)
		}
	}

	// Non-ASCII (UTF-8) names, and names whose byte order differs from
	// case-insensitive order; files and directories interleave by name so
	// that listing order is visible.
	b.file("ünïcødé.txt", []byte("unicode\n"), 0o644)
	b.dir("日本語", 0o755)
	b.file("日本語/ファイル.txt", []byte("japanese\n"), 0o644)
	b.file("emoji 😀", []byte("emoji\n"), 0o644)
	b.symlink("Ωmega-link", "ünïcødé.txt")
	b.dir("order", 0o755)
	for _, n := range []string{"a", "c", "B", "_u", ".hidden", "a.b", "a-b", "z"} {
		b.file("order/"+n, []byte(n+"\n"), 0o644)
	}
	for _, n := range []string{"b", "A", "aa", "a_b", "Z-dir", "é-dir"} {
		b.dir("order/"+n, 0o755)
		b.file("order/"+n+"/f", []byte(n+"\n"), 0o644)
	}

	// Extended attributes on a file, a directory and (if allowed) a symlink.
	b.dir("xattr", 0o755)
	b.file("xattr/file", []byte("with xattrs\n"), 0o644)
	b.xattr("xattr/file", "user.test", []byte("value"))
	b.xattr("xattr/file", "user.binary", []byte{0, 1, 2, 0xfe, 0xff})
	b.xattr("xattr/file", "user.utf8", []byte("ünï ✓"))
	b.xattr("xattr/file", "user.nul-terminated", []byte("text\x00"))
	b.xattr("xattr/file", "user.large", bytes.Repeat([]byte("0123456789abcdef"), 16))
	b.file("xattr/exec", []byte("#!/bin/sh\n"), 0o755)
	b.xattr("xattr/exec", "user.one", []byte("1"))
	b.dir("xattr/dir", 0o750)
	b.xattr("xattr/dir", "user.dir", []byte("directory xattr"))
	b.file("xattr/dir/plain", []byte("no xattrs here\n"), 0o644)
	b.symlink("xattr/link", "file")
	if err := unix.Lsetxattr(b.p("xattr/link"), "user.link", []byte("on a symlink"), 0); err == nil {
		fx.SymlinkUserXattr = true
	} else {
		t.Logf("fixture: user.* xattr on a symlink not supported here (%v); that case is skipped", err)
	}
	// trusted.* is allowed on symlinks for root: it makes sure symlink
	// xattrs are read without following the link by both writers.
	b.symlink("xattr/trusted-link", "file")
	b.xattr("xattr/trusted-link", "trusted.interop", []byte("trusted on a symlink"))

	// Owners: different uids/gids on files, a directory and a symlink.
	b.dir("owned", 0o755)
	b.file("owned/root", []byte("0:0\n"), 0o644)
	b.file("owned/user", []byte("1000:1000\n"), 0o644)
	b.chown("owned/user", 1000, 1000)
	b.file("owned/group", []byte("0:42\n"), 0o644)
	b.chown("owned/group", 0, 42)
	b.chmod("owned/group", 0o640)
	b.file("owned/nobody", []byte("65534:65534\n"), 0o600)
	b.chown("owned/nobody", 65534, 65534)
	b.file("owned/setuid-user", []byte("#!/bin/sh\n"), 0o755)
	b.chown("owned/setuid-user", 1000, 1000)
	b.chmod("owned/setuid-user", 0o4755) // after chown, which clears it
	b.dir("owned/user-dir", 0o750)
	b.file("owned/user-dir/file", []byte("in a user-owned dir\n"), 0o640)
	b.chown("owned/user-dir/file", 1000, 1000)
	b.chown("owned/user-dir", 1000, 1000)
	b.symlink("owned/user-link", "user")
	b.chown("owned/user-link", 1000, 1000)

	// A read-only directory, made read-only last.
	b.dir("read-only-dir/sub", 0o755)
	b.file("read-only-dir/inside", []byte("in a read-only dir\n"), 0o644)
	b.chmod("read-only-dir", 0o555)
	return fx
}

// interopWriteMixed writes size bytes of content that is partly random and
// partly compressible, deterministically from seed. Each 1 MiB block has a
// random quarter, a text quarter, a zero quarter and a low-entropy quarter
// (random nibbles), so both the deflate "stored" and "compressed" paths,
// and many block boundaries, are exercised.
func interopWriteMixed(w io.Writer, size int64, seed uint64) error {
	var key [32]byte
	for i := range key {
		key[i] = byte(seed >> (8 * (i % 8)))
	}
	rng := rand.NewChaCha8(key)
	const block = 1 << 20
	const quarter = block / 4
	buf := make([]byte, block)
	var line uint64
	for written := int64(0); written < size; {
		b := buf[:0]
		// random
		b = b[:quarter]
		rng.Read(b)
		// text
		for len(b) < 2*quarter {
			b = fmt.Appendf(b, "line %09d: the quick brown fox jumps over the lazy dog\n", line)
			line++
		}
		b = b[:2*quarter]
		// zeros
		b = b[:3*quarter]
		clear(b[2*quarter:])
		// low entropy
		b = b[:block]
		rng.Read(b[3*quarter:])
		for i := 3 * quarter; i < block; i++ {
			b[i] &= 0x0f
		}
		n := int64(len(b))
		if size-written < n {
			n = size - written
		}
		if _, err := w.Write(b[:n]); err != nil {
			return err
		}
		written += n
	}
	return nil
}

// ---------------------------------------------------------------------------
// Tree comparison.
// ---------------------------------------------------------------------------

// interopEntry is what the comparison looks at for one path.
type interopEntry struct {
	Type     byte   // 'd', '-', 'l' or '?'
	Perm     uint32 // st_mode & 07777 (setuid, setgid, sticky included)
	UID, GID uint32
	Size     int64
	SHA256   string // regular files
	Target   string // symlinks
	Xattrs   string // user.* xattrs, "name=hex;" sorted
}

// interopScan lstats every path under root (root itself as "/").
func interopScan(t testing.TB, root string) map[string]interopEntry {
	t.Helper()
	out := map[string]interopEntry{}
	buf := make([]byte, 1<<20)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		key := "/" + filepath.ToSlash(rel)
		if rel == "." {
			key = "/"
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return &fs.PathError{Op: "lstat", Path: p, Err: err}
		}
		e := interopEntry{Perm: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			e.Type = 'd'
		case unix.S_IFREG:
			e.Type = '-'
			e.Size = st.Size
			if e.SHA256, err = interopHashFile(p, buf); err != nil {
				return err
			}
		case unix.S_IFLNK:
			e.Type = 'l'
			if e.Target, err = os.Readlink(p); err != nil {
				return err
			}
		default:
			e.Type = '?'
		}
		if e.Xattrs, err = interopUserXattrs(p); err != nil {
			return err
		}
		out[key] = e
		return nil
	})
	if err != nil {
		t.Fatalf("scan %s: %v", root, err)
	}
	return out
}

func interopHashFile(p string, buf []byte) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, buf); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// interopUserXattrs lists the user.* xattrs of p without following symlinks.
// Sizes are queried first: most paths have none, and the scan must stay
// cheap on trees of thousands of files.
func interopUserXattrs(p string) (string, error) {
	n, err := unix.Llistxattr(p, nil)
	if errors.Is(err, unix.ENOTSUP) || n == 0 {
		return "", nil
	}
	if err != nil {
		return "", &fs.PathError{Op: "llistxattr", Path: p, Err: err}
	}
	names := make([]byte, n)
	if n, err = unix.Llistxattr(p, names); err != nil {
		return "", &fs.PathError{Op: "llistxattr", Path: p, Err: err}
	}
	var parts []string
	for _, name := range strings.Split(string(names[:n]), "\x00") {
		if !strings.HasPrefix(name, "user.") {
			continue
		}
		val := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(p, name, val)
		if err != nil {
			return "", &fs.PathError{Op: "lgetxattr " + name, Path: p, Err: err}
		}
		parts = append(parts, name+"="+hex.EncodeToString(val[:m]))
	}
	sort.Strings(parts)
	return strings.Join(parts, ";"), nil
}

// interopCompareOpts says which attributes a checkout must reproduce.
type interopCompareOpts struct {
	// Owners: uid/gid must equal the source's. Otherwise, if Owner is set,
	// every path must belong to that uid/gid (a checkout without owners
	// makes the files the invoking user's).
	Owners bool
	Owner  *[2]uint32
	// Xattrs: user.* xattrs must equal the source's. Otherwise they are
	// not compared.
	Xattrs bool
}

// interopCompareTrees checks that the tree at got reproduces the tree at
// want: same paths, types, permission bits (incl. setuid/setgid/sticky),
// sizes, content hashes and symlink targets, plus owners and xattrs as
// opts says. Hardlinks are not required to be preserved (ostree checkouts
// of archive repositories copy), only their content.
func interopCompareTrees(t testing.TB, want, got string, opts interopCompareOpts) {
	t.Helper()
	w, g := interopScan(t, want), interopScan(t, got)
	var diffs []string
	add := func(format string, args ...any) { diffs = append(diffs, fmt.Sprintf(format, args...)) }
	paths := make([]string, 0, len(w))
	for p := range w {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		we := w[p]
		ge, ok := g[p]
		if !ok {
			add("%s: missing from the checkout", p)
			continue
		}
		if we.Type != ge.Type {
			add("%s: type %c, want %c", p, ge.Type, we.Type)
			continue
		}
		// Symlink permissions are always 0777 on Linux; nothing to compare.
		if we.Type != 'l' && we.Perm != ge.Perm {
			add("%s: mode %04o, want %04o", p, ge.Perm, we.Perm)
		}
		switch {
		case opts.Owners:
			if we.UID != ge.UID || we.GID != ge.GID {
				add("%s: owner %d:%d, want %d:%d", p, ge.UID, ge.GID, we.UID, we.GID)
			}
		case opts.Owner != nil:
			if ge.UID != opts.Owner[0] || ge.GID != opts.Owner[1] {
				add("%s: owner %d:%d, want the invoking user %d:%d", p, ge.UID, ge.GID, opts.Owner[0], opts.Owner[1])
			}
		}
		if we.Size != ge.Size || we.SHA256 != ge.SHA256 {
			add("%s: content %d bytes sha256 %.12s, want %d bytes sha256 %.12s", p, ge.Size, ge.SHA256, we.Size, we.SHA256)
		}
		if we.Target != ge.Target {
			add("%s: symlink target %q, want %q", p, ge.Target, we.Target)
		}
		if opts.Xattrs && we.Xattrs != ge.Xattrs {
			add("%s: user xattrs {%s}, want {%s}", p, interopClip(ge.Xattrs), interopClip(we.Xattrs))
		}
	}
	for p := range g {
		if _, ok := w[p]; !ok {
			add("%s: in the checkout but not in the source", p)
		}
	}
	if len(diffs) == 0 {
		return
	}
	sort.Strings(diffs)
	const max = 30
	more := ""
	if len(diffs) > max {
		more = fmt.Sprintf("\n... and %d more", len(diffs)-max)
		diffs = diffs[:max]
	}
	t.Errorf("%s does not reproduce %s (%d paths compared):\n%s%s", got, want, len(w), strings.Join(diffs, "\n"), more)
}

// ---------------------------------------------------------------------------
// Output comparison.
// ---------------------------------------------------------------------------

// interopNormLines splits output into lines with runs of whitespace
// collapsed (ostree right-aligns sizes in a 6-wide column).
func interopNormLines(s string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		out = append(out, strings.Join(strings.Fields(l), " "))
	}
	return out
}

// interopLineDiff describes how two listings differ: the first line that
// differs, then the lines only one side has (as multisets). It says so
// when both hold the same lines in a different order.
func interopLineDiff(want, got []string, max int) string {
	first := -1
	for i := 0; i < len(want) || i < len(got); i++ {
		if i >= len(want) || i >= len(got) || want[i] != got[i] {
			first = i
			break
		}
	}
	if first < 0 {
		return "(identical)"
	}
	at := func(l []string, i int) string {
		if i < len(l) {
			return fmt.Sprintf("%q", interopClip(l[i]))
		}
		return "<end of output>"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "  %d vs %d lines; first difference at line %d:\n    want %s\n    got  %s\n", len(want), len(got), first+1, at(want, first), at(got, first))
	count := map[string]int{}
	for _, l := range want {
		count[l]++
	}
	for _, l := range got {
		count[l]--
	}
	var onlyWant, onlyGot []string
	for _, l := range want {
		if count[l] > 0 {
			onlyWant = append(onlyWant, l)
			count[l]--
		}
	}
	for k, v := range count {
		for ; v < 0; v++ {
			onlyGot = append(onlyGot, k)
		}
	}
	sort.Strings(onlyGot)
	if len(onlyWant) == 0 && len(onlyGot) == 0 {
		b.WriteString("  the same lines, in a different order\n")
		return b.String()
	}
	list := func(name string, l []string) {
		fmt.Fprintf(&b, "  %d lines only in %s:\n", len(l), name)
		for i, s := range l {
			if i == max {
				fmt.Fprintf(&b, "    ...\n")
				break
			}
			fmt.Fprintf(&b, "    %q\n", interopClip(s))
		}
	}
	list("want", onlyWant)
	list("got", onlyGot)
	return b.String()
}

// interopClip shortens a line for an error message.
func interopClip(s string) string {
	const max = 240
	if len(s) > max {
		return s[:max/2] + " ... " + s[len(s)-max/2:]
	}
	return s
}

// interopLsLine renders a TreeEntry the way `ostree ls` prints it (after
// whitespace normalisation): type, 0-prefixed octal mode, uid, gid, size,
// path, and " -> target" for symlinks.
func interopLsLine(e *ostree.TreeEntry) string {
	c := '-'
	switch e.Meta.Mode & ostree.ModeTypeMask {
	case ostree.ModeDir:
		c = 'd'
	case ostree.ModeSymlink:
		c = 'l'
	}
	s := fmt.Sprintf("%c0%04o %d %d %d %s", c, e.Meta.Mode&ostree.ModePermMask, e.Meta.UID, e.Meta.GID, e.Size, e.Path)
	if e.Symlink != "" {
		s += " -> " + e.Symlink
	}
	return s
}

// interopOstreeFsck runs `ostree fsck` (with ref-binding verification) and
// requires success and its "no errors" summary.
func interopOstreeFsck(t testing.TB, repo string) string {
	t.Helper()
	out, errOut, err := interopExec(t, "ostree", "fsck", "--repo="+repo, "--all", "--verify-bindings")
	if err != nil || !strings.Contains(out, "no errors found") {
		t.Errorf("ostree fsck --repo=%s: %v\nstdout:\n%s\nstderr:\n%s", repo, err, interopTail(out), interopTail(errOut))
	}
	return out
}

func interopOpen(t testing.TB, path string) *ostree.Repo {
	t.Helper()
	repo, err := ostree.Open(path)
	if err != nil {
		t.Fatalf("ostree.Open(%s): %v", path, err)
	}
	return repo
}

func interopParseChecksum(t testing.TB, s string) ostree.Checksum {
	t.Helper()
	c, err := ostree.ParseChecksum(strings.TrimSpace(s))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// ---------------------------------------------------------------------------
// Criteria 1 and 2: the same checksums as `ostree commit`.
// ---------------------------------------------------------------------------

// testCommitChecksum: the fixture committed by ostree, by our CLI and by
// the library (each into a fresh repository) has one checksum.
func (s *interopSuite) testCommitChecksum(t *testing.T) {
	fx := s.getFixture(t)
	oRepo, oRev := s.getOstreeCommit(t)
	cRepo, cRev := s.getOurCommit(t)
	lRepo := filepath.Join(s.newDir(t, "lib-repo"), "repo")
	lRev := interopLibCommit(t, lRepo, fx.Dir, interopFixtureCommit)
	t.Logf("ostree commit: %s", oRev)
	if cRev != oRev {
		interopExplainMismatch(t, "ostree", oRepo, oRev, "apt-ostree-factory commit", cRepo, cRev)
	}
	if lRev != oRev {
		interopExplainMismatch(t, "ostree", oRepo, oRev, "library ReadDir+CommitTree", lRepo, lRev)
	}
}

// testCommitOptions checks, on small trees, the commit options that only
// change the commit object (metadata order and repetition, bindings,
// orphans, parents), and one tree detail kept out of the main fixture so
// that its failure stays separate: an xattr with an empty value.
func (s *interopSuite) testCommitOptions(t *testing.T) {
	dir := filepath.Join(s.newDir(t, "small-tree"), "tree")
	b := &interopTreeBuilder{t: t, root: dir}
	b.dir(".", 0o755)
	b.file("file", []byte("small\n"), 0o644)
	b.symlink("link", "file")
	b.dir("sub", 0o700)

	// `ostree commit` (libglnx's xattr reader) leaves out xattrs whose
	// value is empty; a writer that keeps them computes another checksum.
	xdir := filepath.Join(s.newDir(t, "empty-xattr-tree"), "tree")
	xb := &interopTreeBuilder{t: t, root: xdir}
	xb.dir(".", 0o755)
	xb.file("file", []byte("empty xattr value\n"), 0o644)
	xb.xattr("file", "user.empty", nil)
	xb.xattr("file", "user.set", []byte("1"))
	xb.dir("dir", 0o755)
	xb.xattr("dir", "user.empty", nil)

	base := interopCommit{Branch: "small", Subject: "s", Body: "b", Time: time.Unix(1700000000, 0)}
	withMeta := func(kv ...string) interopCommit {
		c := base
		for i := 0; i < len(kv); i += 2 {
			c.Metadata = append(c.Metadata, [2]string{kv[i], kv[i+1]})
		}
		return c
	}
	cases := []struct {
		name string
		c    interopCommit
		dir  string // default: the small tree
	}{
		{"NoMetadata", base, ""},
		{"MetadataAB", withMeta("a", "1", "b", "2"), ""},
		{"MetadataBA", withMeta("b", "2", "a", "1"), ""},
		{"MetadataRepeated", withMeta("k", "1", "other", "x", "k", "2"), ""},
		{"NoBindings", func() interopCommit { c := withMeta("a", "1"); c.NoBindings = true; return c }(), ""},
		// ostree commit --orphan still records ostree.ref-binding, as an
		// empty list (ostree.ref-binding: <@as []>).
		{"Orphan", func() interopCommit { c := withMeta("a", "1"); c.Branch = ""; c.Orphan = true; return c }(), ""},
		{"EmptySubjectAndBody", func() interopCommit { c := base; c.Subject, c.Body = "", ""; return c }(), ""},
		{"XattrEmptyValue", base, xdir},
	}
	cli := s.getCLI(t)
	seen := map[string]string{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.c
			dir := dir
			if tc.dir != "" {
				dir = tc.dir
			}
			// A fresh repository each, so that no commit has a parent.
			oRepo := filepath.Join(t.TempDir(), "ostree")
			interopOstreeInit(t, oRepo)
			oRev := interopOstreeCommit(t, oRepo, dir, c)
			cRepo := filepath.Join(t.TempDir(), "cli")
			cRev := interopCLICommit(t, cli, cRepo, dir, c)
			lRepo := filepath.Join(t.TempDir(), "lib")
			lRev := interopLibCommit(t, lRepo, dir, c)
			if cRev != oRev {
				interopExplainMismatch(t, "ostree", oRepo, oRev, "apt-ostree-factory commit", cRepo, cRev)
			}
			if lRev != oRev {
				interopExplainMismatch(t, "ostree", oRepo, oRev, "library", lRepo, lRev)
			}
			if prev, dup := seen[oRev]; dup {
				t.Errorf("ostree gave case %s the same checksum as %s; the case tests nothing", tc.name, prev)
			}
			seen[oRev] = tc.name
		})
	}

	// Commits on an existing branch get its commit as parent, in both
	// tools, so a chain of three commits keeps the checksums equal.
	t.Run("ParentChain", func(t *testing.T) {
		oRepo := filepath.Join(t.TempDir(), "ostree")
		interopOstreeInit(t, oRepo)
		cRepo := filepath.Join(t.TempDir(), "cli")
		lRepo := filepath.Join(t.TempDir(), "lib")
		c := withMeta("version", "1")
		for i := 0; i < 3; i++ {
			c.Subject = fmt.Sprintf("commit %d", i)
			c.Time = c.Time.Add(time.Hour)
			oRev := interopOstreeCommit(t, oRepo, dir, c)
			if cRev := interopCLICommit(t, cli, cRepo, dir, c); cRev != oRev {
				interopExplainMismatch(t, "ostree", oRepo, oRev, "apt-ostree-factory commit", cRepo, cRev)
			}
			if lRev := interopLibCommit(t, lRepo, dir, c); lRev != oRev {
				interopExplainMismatch(t, "ostree", oRepo, oRev, "library", lRepo, lRev)
			}
		}
	})
}

// testOwnerOverride: --owner-uid/--owner-gid give ostree's checksums, both
// together and each alone.
func (s *interopSuite) testOwnerOverride(t *testing.T) {
	fx := s.getFixture(t)
	cli := s.getCLI(t)
	cases := []struct {
		name     string
		uid, gid *uint32
	}{
		{"UIDAndGID0", interopU32(0), interopU32(0)},
		{"UIDOnly", interopU32(4321), nil},
		{"GIDOnly", nil, interopU32(8765)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := interopFixtureCommit
			c.OwnerUID, c.OwnerGID = tc.uid, tc.gid
			oRepo := filepath.Join(t.TempDir(), "ostree")
			interopOstreeInit(t, oRepo)
			oRev := interopOstreeCommit(t, oRepo, fx.Dir, c)
			cRepo := filepath.Join(t.TempDir(), "cli")
			cRev := interopCLICommit(t, cli, cRepo, fx.Dir, c)
			if cRev != oRev {
				interopExplainMismatch(t, "ostree", oRepo, oRev, "apt-ostree-factory commit", cRepo, cRev)
			}
			// The library path is what the CLI runs; once is enough.
			if tc.name == cases[0].name {
				lRepo := filepath.Join(t.TempDir(), "lib")
				if lRev := interopLibCommit(t, lRepo, fx.Dir, c); lRev != oRev {
					interopExplainMismatch(t, "ostree", oRepo, oRev, "library", lRepo, lRev)
				}
			}
			if oRev == s.ostreeRev {
				t.Errorf("owner override did not change the commit")
			}
			// The overridden owners are really in the commit.
			out := interopRun(t, "ostree", "ls", "--repo="+oRepo, oRev, "/owned/user")
			f := strings.Fields(out)
			if len(f) < 3 || (tc.uid != nil && f[1] != strconv.Itoa(int(*tc.uid))) || (tc.gid != nil && f[2] != strconv.Itoa(int(*tc.gid))) {
				t.Errorf("ostree ls /owned/user: %q", out)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Criteria 3 and 4: ostree reads what we write.
// ---------------------------------------------------------------------------

func (s *interopSuite) testOstreeFsckOfOurRepo(t *testing.T) {
	repo, _ := s.getOurCommit(t)
	out := strings.TrimSpace(interopOstreeFsck(t, repo))
	t.Logf("ostree fsck: %s", out[strings.LastIndex(out, "\n")+1:])

	// Also a repository written through the library, with a parent chain.
	fx := s.getFixture(t)
	lRepo := filepath.Join(t.TempDir(), "lib")
	interopLibCommit(t, lRepo, fx.Dir, interopFixtureCommit)
	next := interopFixtureCommit
	next.Time = next.Time.Add(time.Minute)
	interopLibCommit(t, lRepo, fx.Dir, next)
	interopOstreeFsck(t, lRepo)
}

// testOstreeCheckoutOfOurCommit: `ostree checkout` (as root, so owners and
// xattrs are applied) of our commit reproduces the input tree.
func (s *interopSuite) testOstreeCheckoutOfOurCommit(t *testing.T) {
	fx := s.getFixture(t)
	repo, rev := s.getOurCommit(t)
	dest := filepath.Join(t.TempDir(), "co")
	interopRun(t, "ostree", "checkout", "--repo="+repo, rev, dest)
	interopCompareTrees(t, fx.Dir, dest, interopCompareOpts{Owners: true, Xattrs: true})
	if !fx.SymlinkUserXattr {
		t.Logf("user.* xattr on a symlink: not supported by this filesystem, not checked")
	}
}

// ---------------------------------------------------------------------------
// Criteria 5 and 6: we read what ostree writes.
// ---------------------------------------------------------------------------

// interopShow is the part of `ostree show` output compared with ReadCommit.
type interopShow struct {
	Date, Version, Subject, Body string
}

// interopParseShow parses `ostree show`/`ostree log` output for one commit:
//
//	commit CSUM
//	[Parent:  CSUM]
//	ContentChecksum:  CSUM
//	Date:  2024-05-01 12:34:56 +0000
//	[Version: V]
//	<blank>
//	    subject
//	[<blank>
//	    body lines, each indented by four spaces]
//	<blank>
func interopParseShow(out string) (interopShow, error) {
	var sh interopShow
	lines := strings.Split(out, "\n")
	i := 0
	for ; i < len(lines) && lines[i] != ""; i++ {
		if v, ok := strings.CutPrefix(lines[i], "Date:  "); ok {
			sh.Date = v
		}
		if v, ok := strings.CutPrefix(lines[i], "Version: "); ok {
			sh.Version = v
		}
	}
	if i+1 >= len(lines) || !strings.HasPrefix(lines[i+1], "    ") {
		return sh, fmt.Errorf("no subject line in %q", out)
	}
	sh.Subject = strings.TrimPrefix(lines[i+1], "    ")
	i += 2
	if i < len(lines) && lines[i] == "" && i+1 < len(lines) && strings.HasPrefix(lines[i+1], "    ") {
		var body []string
		for i++; i < len(lines) && strings.HasPrefix(lines[i], "    "); i++ {
			body = append(body, strings.TrimPrefix(lines[i], "    "))
		}
		sh.Body = strings.Join(body, "\n")
	}
	return sh, nil
}

// testReadOstreeCommit: ResolveRev and ReadCommit agree with `ostree
// rev-parse`, `ostree show` and `ostree ls -d -C`.
func (s *interopSuite) testReadOstreeCommit(t *testing.T) {
	repoPath, rev := s.getOstreeCommit(t)
	repo := interopOpen(t, repoPath)
	if repo.Mode() != ostree.ModeArchive {
		t.Errorf("mode %q, want archive-z2", repo.Mode())
	}
	c, err := repo.ResolveRev(interopFixtureCommit.Branch)
	if err != nil {
		t.Fatal(err)
	}
	if c.String() != rev {
		t.Errorf("ResolveRev(%s) = %s, ostree rev-parse says %s", interopFixtureCommit.Branch, c, rev)
	}
	cm, err := repo.ReadCommit(c)
	if err != nil {
		t.Fatal(err)
	}

	sh, err := interopParseShow(interopRun(t, "ostree", "show", "--repo="+repoPath, rev))
	if err != nil {
		t.Fatal(err)
	}
	if cm.Subject != sh.Subject || cm.Subject != interopFixtureCommit.Subject {
		t.Errorf("subject %q; ostree show: %q; committed: %q", cm.Subject, sh.Subject, interopFixtureCommit.Subject)
	}
	if cm.Body != sh.Body || cm.Body != interopFixtureCommit.Body {
		t.Errorf("body %q; ostree show: %q; committed: %q", cm.Body, sh.Body, interopFixtureCommit.Body)
	}
	if got := cm.Timestamp.UTC().Format("2006-01-02 15:04:05 -0700"); got != sh.Date || !cm.Timestamp.Equal(interopFixtureCommit.Time) {
		t.Errorf("timestamp %s; ostree show: %s; committed: %s", got, sh.Date, interopFixtureCommit.Time)
	}
	if !cm.Parent.IsZero() {
		t.Errorf("parent %s, want none", cm.Parent)
	}
	if v, _ := cm.Metadata.String("version"); v != sh.Version {
		t.Errorf("version %q; ostree show: %q", v, sh.Version)
	}

	// Metadata: every entry, in order, with the repeated key twice, and
	// ostree.ref-binding appended by ostree.
	var got []string
	for _, e := range cm.Metadata {
		got = append(got, e.Key+"="+gvariant.FormatVariant(e.Value))
	}
	var want []string
	for _, kv := range interopFixtureCommit.Metadata {
		want = append(want, kv[0]+"="+gvariant.Format(gvariant.MustParseType("s"), kv[1]))
	}
	want = append(want, "ostree.ref-binding=['"+interopFixtureCommit.Branch+"']")
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("metadata:\n  got  %q\n  want %q", got, want)
	}
	// Each key's value as ostree prints it (for a repeated key: the first).
	for _, e := range cm.Metadata {
		out := interopRun(t, "ostree", "show", "--repo="+repoPath, "--print-metadata-key="+e.Key, rev)
		first, _ := cm.Metadata.Get(e.Key)
		if strings.TrimSpace(out) != gvariant.FormatVariant(first) {
			t.Errorf("metadata %s: we format %s, ostree prints %s", e.Key, gvariant.FormatVariant(first), strings.TrimSpace(out))
		}
	}

	// Root dirtree and dirmeta, as `ostree ls -d -C REV /` prints them.
	f := strings.Fields(interopRun(t, "ostree", "ls", "--repo="+repoPath, "-d", "-C", rev, "/"))
	if len(f) < 7 || f[4] != cm.RootTree.String() || f[5] != cm.RootMeta.String() {
		t.Errorf("root tree/meta %s %s; ostree ls -d -C: %q", cm.RootTree, cm.RootMeta, f)
	}
}

// interopVariantCases are metadata values given to `ostree commit
// --add-metadata` in GVariant text format, so GLib serialises them: key,
// text, the type we must decode, and the Go value (nil: checked by the
// round trip only).
var interopVariantCases = []struct {
	key, text, sig string
	want           any
}{
	{"u", "uint32 42", "u", uint32(42)},
	{"i", "-7", "i", int32(-7)},
	{"x", "int64 -5000000000", "x", int64(-5000000000)},
	{"t", "uint64 18446744073709551615", "t", uint64(math.MaxUint64)},
	{"n", "int16 -3", "n", int16(-3)},
	{"q", "uint16 7", "q", uint16(7)},
	{"y", "byte 0x07", "y", byte(7)},
	{"b", "true", "b", true},
	{"d", "3.5", "d", 3.5},
	{"d2", "2.0", "d", 2.0},
	{"s", `"it's"`, "s", "it's"},
	{"s-escapes", `"a\tb\nc"`, "s", "a\tb\nc"},
	{"s-unicode", `"ünï ✓"`, "s", "ünï ✓"},
	{"o", `objectpath "/a/b"`, "o", "/a/b"},
	{"g", `signature "a{sv}"`, "g", "a{sv}"},
	{"au", "[uint32 1, 2, 3]", "au", []any{uint32(1), uint32(2), uint32(3)}},
	{"as", `["a", "b"]`, "as", []string{"a", "b"}},
	{"as-empty", "@as []", "as", []string{}},
	{"ay-bytestring", `b"bytes"`, "ay", []byte("bytes\x00")},
	{"ay", "[byte 1, 2, 255]", "ay", []byte{1, 2, 255}},
	{"aay", `[b"x", b"yz"]`, "aay", [][]byte{[]byte("x\x00"), []byte("yz\x00")}},
	{"tuple", `("a", 1, true)`, "(sib)", []any{"a", int32(1), true}},
	{"maybe", `just "x"`, "ms", "x"},
	{"maybe-nothing", "@ms nothing", "ms", nil},
	{"variant", `<"nested">`, "v", nil},
	{"dict", `{"k": <1>, "l": <"two">}`, "a{sv}", nil},
	{"dict-u", `{uint32 1: "one", 2: "two"}`, "a{us}", nil},
	{"nested", `[("a", [uint64 1]), ("b", @at [])]`, "a(sat)", nil},
}

// testMetadataVariants: commit metadata of many GVariant types, written by
// GLib (through ostree commit --add-metadata), decodes to the right values
// and re-encodes to the same commit bytes; `show --print-metadata-key`
// prints what ostree prints.
func (s *interopSuite) testMetadataVariants(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tree")
	b := &interopTreeBuilder{t: t, root: dir}
	b.dir(".", 0o755)
	b.file("f", []byte("f\n"), 0o644)
	repoPath := filepath.Join(t.TempDir(), "repo")
	interopOstreeInit(t, repoPath)
	args := []string{"commit", "--repo=" + repoPath, "--branch=variants", "--subject=variants", "--timestamp=@1600000000"}
	for _, vc := range interopVariantCases {
		args = append(args, "--add-metadata="+vc.key+"="+vc.text)
	}
	rev := interopLastChecksum(t, interopRun(t, "ostree", append(args, dir)...))
	repo := interopOpen(t, repoPath)
	c := interopParseChecksum(t, rev)
	cm, err := repo.ReadCommit(c)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("Decode", func(t *testing.T) {
		// Re-encoding the decoded commit must give back the exact bytes:
		// nothing lost, GLib's serialisation is normal form like ours.
		enc, err := ostree.EncodeCommit(cm)
		if err != nil {
			t.Fatal(err)
		}
		if got := ostree.Checksum(sha256.Sum256(enc)); got != c {
			t.Errorf("re-encoded commit hashes to %s, want %s", got, c)
		}
		for _, vc := range interopVariantCases {
			v, ok := cm.Metadata.Get(vc.key)
			if !ok {
				t.Errorf("metadata key %s missing", vc.key)
				continue
			}
			if v.Type.String() != vc.sig {
				t.Errorf("%s: type %s, want %s", vc.key, v.Type, vc.sig)
				continue
			}
			if vc.want != nil && !reflect.DeepEqual(v.Value, vc.want) {
				t.Errorf("%s: value %#v, want %#v", vc.key, v.Value, vc.want)
			}
			if vc.want == nil && vc.key == "maybe-nothing" && v.Value != nil {
				t.Errorf("%s: value %#v, want nothing", vc.key, v.Value)
			}
		}
	})
	// ostree show byte-swaps numbers by default (it assumes ostree's
	// big-endian convention); -B prints them as stored, as ours does.
	t.Run("PrintMetadataKey", func(t *testing.T) {
		cli := s.getCLI(t)
		var diffs []string
		for _, vc := range interopVariantCases {
			want := strings.TrimSpace(interopRun(t, "ostree", "show", "-B", "--repo="+repoPath, "--print-metadata-key="+vc.key, rev))
			got := strings.TrimSpace(interopRun(t, cli, "show", "--repo="+repoPath, "--print-metadata-key="+vc.key, rev))
			if got != want {
				diffs = append(diffs, fmt.Sprintf("  %-14s ostree %-32s ours %s", vc.key+":", want, got))
			}
		}
		if len(diffs) > 0 {
			t.Errorf("show --print-metadata-key differs from ostree show -B --print-metadata-key (g_variant_print) for %d of %d values:\n%s",
				len(diffs), len(interopVariantCases), strings.Join(diffs, "\n"))
		}
	})
}

// testWalkMatchesOstreeLs: Walk visits the entries `ostree ls -R` lists,
// with the same type, mode, owner, size and symlink target. Order is
// checked by LsMatchesOstreeLs.
func (s *interopSuite) testWalkMatchesOstreeLs(t *testing.T) {
	repoPath, rev := s.getOstreeCommit(t)
	repo := interopOpen(t, repoPath)
	c := interopParseChecksum(t, rev)
	for _, p := range []string{"/", "/many", "/order", "/owned/user", "/link-dangling"} {
		var got []string
		err := repo.Walk(c, p, true, func(e *ostree.TreeEntry) error {
			got = append(got, interopLsLine(e))
			return nil
		})
		if err != nil {
			t.Errorf("Walk %s: %v", p, err)
			continue
		}
		want := interopNormLines(interopRun(t, "ostree", "ls", "--repo="+repoPath, "-R", rev, p))
		sort.Strings(got)
		sort.Strings(want)
		if d := interopLineDiff(want, got, 15); d != "(identical)" {
			t.Errorf("Walk(%s, recursive) vs ostree ls -R %s (sorted; want = ostree):\n%s", p, p, d)
		}
	}
}

// testLsMatchesOstreeLs: `apt-ostree-factory ls` prints what `ostree ls`
// prints, line by line (whitespace normalised), order included.
func (s *interopSuite) testLsMatchesOstreeLs(t *testing.T) {
	repoPath, rev := s.getOstreeCommit(t)
	cli := s.getCLI(t)
	cases := []struct {
		name string
		args []string
	}{
		{"Root", nil},
		{"Recursive", []string{"-R"}},
		{"Directory", []string{"/order"}},
		{"File", []string{"/owned/user"}},
		{"Symlink", []string{"/link-relative"}},
		{"SeveralPaths", []string{"/bin", "/hello.txt"}},
		{"RecursiveSubdir", []string{"-R", "/order"}},
		{"Checksums", []string{"-C", "-R", "/bin"}},
		{"Xattrs", []string{"-X", "-R", "/xattr"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var opts, paths []string
			for _, a := range tc.args {
				if strings.HasPrefix(a, "-") {
					opts = append(opts, a)
				} else {
					paths = append(paths, a)
				}
			}
			args := append(append([]string{"ls", "--repo=" + repoPath}, opts...), rev)
			args = append(args, paths...)
			want := interopNormLines(interopRun(t, "ostree", args...))
			got := interopNormLines(interopRun(t, cli, args...))
			if d := interopLineDiff(want, got, 15); d != "(identical)" {
				if strings.Contains(d, "in a different order") {
					// The usual cause: ostree enumerates a directory's files
					// and then its subdirectories (OstreeRepoFile order), each
					// group sorted, recursing into a subdirectory right after
					// printing it.
					d += "  (ostree lists a directory's files first, then its subdirectories)\n"
				}
				t.Errorf("apt-ostree-factory %s\ndiffers from ostree (want = ostree, got = ours):\n%s", strings.Join(args, " "), d)
			}
		})
	}
}

// testCheckoutOfOstreeCommit: our Checkout of ostree's commit reproduces
// the input tree; by default owned by the invoking user, with
// Owners/Xattrs with the committed owners and xattrs.
func (s *interopSuite) testCheckoutOfOstreeCommit(t *testing.T) {
	fx := s.getFixture(t)
	repoPath, rev := s.getOstreeCommit(t)
	repo := interopOpen(t, repoPath)
	c := interopParseChecksum(t, rev)
	ctx := context.Background()

	t.Run("Default", func(t *testing.T) {
		dest := filepath.Join(t.TempDir(), "co")
		if err := repo.Checkout(ctx, c, dest, ostree.CheckoutOptions{}); err != nil {
			t.Fatal(err)
		}
		me := [2]uint32{uint32(os.Getuid()), uint32(os.Getgid())}
		interopCompareTrees(t, fx.Dir, dest, interopCompareOpts{Owner: &me})
	})
	t.Run("OwnersAndXattrs", func(t *testing.T) {
		dest := filepath.Join(t.TempDir(), "co")
		if err := repo.Checkout(ctx, c, dest, ostree.CheckoutOptions{Owners: true, Xattrs: true}); err != nil {
			t.Fatal(err)
		}
		interopCompareTrees(t, fx.Dir, dest, interopCompareOpts{Owners: true, Xattrs: true})
	})
	t.Run("Subpath", func(t *testing.T) {
		dest := filepath.Join(t.TempDir(), "co")
		if err := repo.Checkout(ctx, c, dest, ostree.CheckoutOptions{Subpath: "/owned", Owners: true, Xattrs: true}); err != nil {
			t.Fatal(err)
		}
		interopCompareTrees(t, filepath.Join(fx.Dir, "owned"), dest, interopCompareOpts{Owners: true, Xattrs: true})
	})
}

// interopFsckObjects extracts N from ostree fsck's "fsck objects (N/N)".
var interopFsckObjects = regexp.MustCompile(`fsck objects \((\d+)/(\d+)\)`)

// testVerifyOstreeRepo: Verify and `apt-ostree-factory fsck` find no
// problem in an ostree-written repository and count the objects ostree
// fsck counts.
func (s *interopSuite) testVerifyOstreeRepo(t *testing.T) {
	repoPath, _ := s.getOstreeCommit(t)
	repo := interopOpen(t, repoPath)
	rep, err := repo.Verify(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) > 0 {
		t.Errorf("Verify found %d problems in an ostree-written repository:\n%s", len(rep.Problems), strings.Join(rep.Problems, "\n"))
	}
	out := interopOstreeFsck(t, repoPath)
	if m := interopFsckObjects.FindAllStringSubmatch(out, -1); len(m) > 0 {
		total, _ := strconv.Atoi(m[len(m)-1][2])
		ours := rep.Commits + rep.DirTrees + rep.DirMetas + rep.Files
		if ours != total {
			t.Errorf("Verify saw %d objects (%d commits, %d dirtrees, %d dirmetas, %d files); ostree fsck checked %d",
				ours, rep.Commits, rep.DirTrees, rep.DirMetas, rep.Files, total)
		}
	} else {
		t.Logf("could not find the object count in ostree fsck output")
	}
	cliOut, cliErr, err := interopExec(t, s.getCLI(t), "fsck", "--repo="+repoPath)
	if err != nil || !strings.HasPrefix(cliOut, "Verified 1 commits") || strings.Contains(cliOut, "error") {
		t.Errorf("apt-ostree-factory fsck: %v\nstdout:\n%s\nstderr:\n%s", err, cliOut, cliErr)
	}
}

// testLogAndRefsOnOstreeRepo: `log` and `refs` on a repository with a
// parent chain and several refs, all made by ostree.
func (s *interopSuite) testLogAndRefsOnOstreeRepo(t *testing.T) {
	cli := s.getCLI(t)
	dir := filepath.Join(t.TempDir(), "tree")
	b := &interopTreeBuilder{t: t, root: dir}
	b.dir(".", 0o755)
	b.file("f", []byte("one\n"), 0o644)
	repo := filepath.Join(t.TempDir(), "repo")
	interopOstreeInit(t, repo)
	c1 := interopCommit{Branch: "os/main", Subject: "first", Body: "body of\nthe first commit", Time: time.Unix(1600000000, 0)}
	rev1 := interopOstreeCommit(t, repo, dir, c1)
	b.file("f", []byte("two\n"), 0o644)
	c2 := interopCommit{Branch: "os/main", Subject: "second", Time: time.Unix(1600003600, 0), Metadata: [][2]string{{"version", "2.0"}}}
	rev2 := interopOstreeCommit(t, repo, dir, c2)
	b.file("f", []byte("three\n"), 0o644)
	c3 := interopCommit{Branch: "os/main", Subject: "third", Body: "multi\n\nparagraph", Time: time.Unix(1600007200, 0)}
	rev3 := interopOstreeCommit(t, repo, dir, c3)
	interopRun(t, "ostree", "refs", "--repo="+repo, "--create=stable", rev2)
	interopRun(t, "ostree", "refs", "--repo="+repo, "--create=a/b/c", rev1)

	t.Run("Log", func(t *testing.T) {
		ostreeLog := interopRun(t, "ostree", "log", "--repo="+repo, "os/main")
		ours := interopRun(t, cli, "log", "--repo="+repo, "os/main")
		// Commits, newest first.
		re := regexp.MustCompile(`(?m)^commit ([0-9a-f]{64})$`)
		var got []string
		for _, m := range re.FindAllStringSubmatch(ours, -1) {
			got = append(got, m[1])
		}
		if want := []string{rev3, rev2, rev1}; strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("log lists commits %v, want %v\n%s", got, want, ours)
		}
		// The text, except ostree's ContentChecksum lines, which our log
		// does not print.
		var filtered []string
		for _, l := range strings.Split(ostreeLog, "\n") {
			if !strings.HasPrefix(l, "ContentChecksum:") {
				filtered = append(filtered, l)
			}
		}
		if ours != strings.Join(filtered, "\n") {
			t.Errorf("log differs from ostree log (without ContentChecksum lines; want = ostree):\n%s",
				interopLineDiff(filtered, strings.Split(ours, "\n"), 15))
		}
		// A ^ revision starts at the parent.
		if out := interopRun(t, cli, "log", "--repo="+repo, "os/main^"); !strings.HasPrefix(out, "commit "+rev2) {
			t.Errorf("log os/main^ starts with %q, want commit %s", strings.SplitN(out, "\n", 2)[0], rev2)
		}
	})
	t.Run("Refs", func(t *testing.T) {
		want := interopNormLines(interopRun(t, "ostree", "refs", "--repo="+repo))
		sort.Strings(want)
		got := interopNormLines(interopRun(t, cli, "refs", "--repo="+repo))
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("refs %q, ostree refs (sorted) %q", got, want)
		}
		withSums := interopNormLines(interopRun(t, cli, "refs", "--repo="+repo, "--checksums"))
		for _, l := range withSums {
			name, sum, _ := strings.Cut(l, " ")
			if want := strings.TrimSpace(interopRun(t, "ostree", "rev-parse", "--repo="+repo, name)); sum != want {
				t.Errorf("refs --checksums: %s -> %s, ostree rev-parse says %s", name, sum, want)
			}
		}
	})
	t.Run("Fsck", func(t *testing.T) {
		out, errOut, err := interopExec(t, cli, "fsck", "--repo="+repo)
		if err != nil || !strings.HasPrefix(out, "Verified 3 commits") {
			t.Errorf("apt-ostree-factory fsck: %v\n%s%s", err, out, errOut)
		}
	})
}

// ---------------------------------------------------------------------------
// One file of several hundred MB, both directions.
// ---------------------------------------------------------------------------

// interopBigFileSize is the size of the big file: large enough for many
// deflate blocks and buffer refills in both zlib and our flate.
const interopBigFileSize = 300<<20 + 4321

func (s *interopSuite) testBigFile(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the several-hundred-MB interop test in -short mode")
	}
	cli := s.getCLI(t)
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "tree")
	b := &interopTreeBuilder{t: t, root: dir}
	b.dir(".", 0o755)
	b.file("small", []byte("small file beside the big one\n"), 0o644)
	start := time.Now()
	f, err := os.OpenFile(b.p("big.bin"), os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	err = interopWriteMixed(f, interopBigFileSize, 42)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	b.chmod("big.bin", 0o644)
	t.Logf("wrote %d MiB in %.1fs", interopBigFileSize>>20, time.Since(start).Seconds())

	c := interopCommit{Branch: "big", Subject: "big file", Body: "300 MB", Time: time.Unix(1710000000, 0),
		Metadata: [][2]string{{"version", "big"}}}
	oRepo := filepath.Join(tmp, "ostree-repo")
	interopOstreeInit(t, oRepo)
	oRev := interopOstreeCommit(t, oRepo, dir, c)
	cRepo := filepath.Join(tmp, "cli-repo")
	start = time.Now()
	cRev := interopCLICommit(t, cli, cRepo, dir, c)
	t.Logf("apt-ostree-factory commit: %.1fs", time.Since(start).Seconds())
	if cRev != oRev {
		interopExplainMismatch(t, "ostree", oRepo, oRev, "apt-ostree-factory commit", cRepo, cRev)
	}
	lRepo := filepath.Join(tmp, "lib-repo")
	if lRev := interopLibCommit(t, lRepo, dir, c); lRev != oRev {
		interopExplainMismatch(t, "ostree", oRepo, oRev, "library", lRepo, lRev)
	}
	os.RemoveAll(lRepo)

	t.Run("OstreeFsckOfOurRepo", func(t *testing.T) {
		interopOstreeFsck(t, cRepo)
	})
	t.Run("OstreeCheckoutOfOurCommit", func(t *testing.T) {
		dest := filepath.Join(tmp, "ostree-checkout")
		interopRun(t, "ostree", "checkout", "--repo="+cRepo, cRev, dest)
		interopCompareTrees(t, dir, dest, interopCompareOpts{Owners: true, Xattrs: true})
		os.RemoveAll(dest)
	})
	t.Run("CheckoutOfOstreeCommit", func(t *testing.T) {
		repo := interopOpen(t, oRepo)
		dest := filepath.Join(tmp, "our-checkout")
		start := time.Now()
		if err := repo.Checkout(context.Background(), interopParseChecksum(t, oRev), dest, ostree.CheckoutOptions{Owners: true, Xattrs: true}); err != nil {
			t.Fatal(err)
		}
		t.Logf("Checkout: %.1fs", time.Since(start).Seconds())
		interopCompareTrees(t, dir, dest, interopCompareOpts{Owners: true, Xattrs: true})
		os.RemoveAll(dest)
	})
	t.Run("VerifyOstreeRepo", func(t *testing.T) {
		repo := interopOpen(t, oRepo)
		start := time.Now()
		rep, err := repo.Verify(context.Background(), 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("Verify: %.1fs", time.Since(start).Seconds())
		if len(rep.Problems) > 0 || rep.Files != 2 {
			t.Errorf("Verify: %d files, problems: %q", rep.Files, rep.Problems)
		}
	})
}
