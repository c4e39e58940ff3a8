package builder

import (
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/apt-ostree/apt-ostree-factory/ostree"
	"pault.ag/go/debian/dependency"
)

// Step is shell code the configure sandbox runs as root with the image as
// its root directory, after the packages are configured.
type Step struct {
	Name   string // in messages: "user admin", "script setup.sh"
	Script string // run by /bin/sh -e
}

// ConfigureOptions tunes Configure.
type ConfigureOptions struct {
	Hostname string // the sandbox's host name (no host name leaks in)
	// SourceDateEpoch is exported to every script, so tools that honour
	// it (useradd's last-change day, for example) give the same result.
	SourceDateEpoch int64
	// Steps run after `dpkg --configure -a` and the triggers, in order.
	Steps []Step
	// WorkDir is where the tree is checked out (default os.TempDir()).
	WorkDir string
	// Log receives the output of the maintainer scripts and steps.
	Log io.Writer
	// Hook, when set, runs in the worker on the configured tree (a
	// directory) before it is removed; its result is returned in
	// ConfigureResult.HookResult. The initramfs is built this way,
	// because an unprivileged build cannot read the tree from outside
	// the user namespace.
	Hook *HookRequest
	// Persist, when set, is a directory kept between builds: the tree is
	// configured in Persist/root and left there (see incremental.go).
	Persist string
	// base, with Persist, configures incrementally on the tree kept there.
	base *incrementalBase
}

// ConfigureResult is the configured tree.
type ConfigureResult struct {
	Root *ostree.MemDir
	// Tree and Meta are the configured tree's checksums (before the
	// initramfs and the OSTree conversion).
	Tree, Meta ostree.Checksum
	// Incremental: the packages were configured on a kept tree; Changed
	// is how many entries of it were written or removed first.
	Incremental bool
	Changed     int
	Reused      int // files taken from the checkout unchanged, not read again
	Read        int // files added or changed by the scripts
	HookResult  *HookResult
	Steps       []StageTime // checkout, scripts, read back, initramfs
	Duration    time.Duration
}

// Configure runs the packages' maintainer scripts on a merged tree that
// holds the dpkg database of WriteDpkgDatabase: the preinst of every
// package ("install"), in dependency order, then `dpkg --configure -a`,
// then every registered trigger once, then the steps. It returns the tree
// as the scripts left it, with ownership, modes and xattrs.
func Configure(ctx context.Context, repo *ostree.Repo, root *ostree.MemDir, debs []*DebTree, opts ConfigureOptions) (*ConfigureResult, error) {
	start := time.Now()
	if err := SandboxCheck(); err != nil {
		return nil, err
	}
	input := root
	if opts.base != nil {
		input = opts.base.input
	}
	tree, meta, _, err := repo.WriteTree(ctx, input, ostree.WriteTreeOptions{})
	if err != nil {
		return nil, fmt.Errorf("configure: store the merged tree: %w", err)
	}
	log := opts.Log
	if log == nil {
		log = io.Discard
	}
	workDir := opts.WorkDir
	if workDir == "" {
		workDir = os.TempDir()
	}
	tail := &tailWriter{max: 40, maxCauses: 20}
	job := &sandboxJob{
		Repo:     repo.Path(),
		Tree:     tree.String(),
		Meta:     meta.String(),
		WorkDir:  workDir,
		Hostname: opts.Hostname,
		Script:   configureScript(debs, opts),
		Env:      sandboxEnv(opts),
		Hook:     opts.Hook,
		Persist:  opts.Persist,
	}
	if opts.base != nil {
		job.BaseTree, job.BaseMeta = opts.base.tree.String(), opts.base.meta.String()
	}
	res, err := runJob(ctx, job, io.MultiWriter(log, tail))
	if err != nil {
		return nil, explainFailure(err, tail.causes, tail.lines())
	}
	newTree, err1 := ostree.ParseChecksum(res.Tree)
	newMeta, err2 := ostree.ParseChecksum(res.Meta)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("configure: bad result from the sandbox: %q %q", res.Tree, res.Meta)
	}
	l := treeLoader{repo: repo, metas: map[ostree.Checksum]ostree.FileMeta{}, headers: map[ostree.Checksum]ostree.FileHeader{}}
	seedHeaders(input, l.headers)
	out, err := l.dir(newTree, newMeta, "/")
	if err != nil {
		return nil, fmt.Errorf("configure: read back the configured tree: %w", err)
	}
	return &ConfigureResult{Root: out, Tree: newTree, Meta: newMeta, Reused: res.Reused, Read: res.Read, HookResult: res.Hook,
		Steps: res.Steps, Incremental: opts.base != nil, Changed: res.Changed, Duration: time.Since(start)}, nil
}

func seedHeaders(d *ostree.MemDir, into map[ostree.Checksum]ostree.FileHeader) {
	for _, f := range d.Files {
		if !f.Checksum.IsZero() {
			into[f.Checksum] = f.Header
		}
	}
	for _, sub := range d.Dirs {
		seedHeaders(sub, into)
	}
}

// explainFailure puts the lines that name the cause (dpkg's "error
// processing package", the failing step) in front of the log's tail.
func explainFailure(err error, causes, tail []string) error {
	msg := fmt.Sprintf("configure: %v", err)
	if len(causes) > 0 {
		msg += "\n  " + strings.Join(causes, "\n  ")
	}
	if len(tail) > 0 {
		msg += "\nlast lines of the log:\n  " + strings.Join(tail, "\n  ")
	}
	return fmt.Errorf("%s", msg)
}

// isCause reports whether a log line says why configuring failed.
func isCause(l string) bool {
	return strings.HasPrefix(l, "dpkg: error") || strings.Contains(l, "subprocess returned error exit status") ||
		strings.HasPrefix(l, "dpkg: dependency problems") || strings.HasPrefix(l, "aof: ") && strings.Contains(l, "fail") ||
		strings.HasPrefix(l, "configure sandbox:")
}

// tailWriter keeps the last lines of the log, and every line that names
// a cause of failure.
type tailWriter struct {
	max, maxCauses int
	buf, causes    []string
	part           string
}

func (t *tailWriter) Write(p []byte) (int, error) {
	s := t.part + string(p)
	parts := strings.Split(s, "\n")
	t.part = parts[len(parts)-1]
	for _, l := range parts[:len(parts)-1] {
		if isCause(l) && len(t.causes) < t.maxCauses {
			t.causes = append(t.causes, l)
		}
		t.buf = append(t.buf, l)
		if len(t.buf) > t.max {
			t.buf = t.buf[1:]
		}
	}
	return len(p), nil
}

func (t *tailWriter) lines() []string {
	if t.part != "" {
		return append(t.buf, t.part)
	}
	return t.buf
}

func sandboxEnv(opts ConfigureOptions) []string {
	return []string{
		"PATH=/run/aof/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root",
		"LC_ALL=C.UTF-8",
		"LANG=C.UTF-8",
		"TZ=UTC",
		"DEBIAN_FRONTEND=noninteractive",
		"DEBCONF_NONINTERACTIVE_SEEN=true",
		"DEBCONF_NOWARNINGS=yes",
		// Kernel hooks: the factory builds the initramfs itself.
		"INITRD=No",
		"SOURCE_DATE_EPOCH=" + strconv.FormatInt(opts.SourceDateEpoch, 10),
		"DPKG_ADMINDIR=/var/lib/dpkg",
	}
}

// shellQuote quotes s for /bin/sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// configureScript is the whole configure stage as one shell script, so
// the sandbox is set up once.
func configureScript(debs []*DebTree, opts ConfigureOptions) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("set -e")
	w("umask 022")
	// Services are never started at build time: invoke-rc.d and
	// deb-systemd-invoke ask policy-rc.d, which refuses everything.
	// Initramfs generators are replaced by no-ops on the sandbox's /run:
	// the factory builds the initramfs.
	w("mkdir -p /run/aof/bin")
	w("for t in update-initramfs mkinitramfs dracut; do printf '#!/bin/sh\\necho \"apt-ostree-factory: $0 skipped: the factory builds the initramfs\" >&2\\nexit 0\\n' > /run/aof/bin/$t; chmod 755 /run/aof/bin/$t; done")
	w("if [ -e /usr/sbin/policy-rc.d ]; then echo 'aof: /usr/sbin/policy-rc.d exists in the image; it will be replaced for the build' >&2; mv /usr/sbin/policy-rc.d /run/aof/policy-rc.d.image; fi")
	w("printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d")
	dpkgVersion := ""
	for _, t := range debs {
		if t.Package == "dpkg" {
			dpkgVersion = t.Version
		}
	}
	preinst, triggers, steps := debs, TriggerNames(debs), opts.Steps
	if opts.base != nil {
		// Incremental: only the new packages are installed; the steps ran
		// on the kept tree already.
		preinst, triggers, steps = opts.base.newDebs, incrementalTriggers(debs, opts.base.newDebs), nil
	}
	for _, t := range preinstOrder(preinst) {
		if _, ok := t.Control["preinst"]; !ok {
			continue
		}
		name := infoName(t)
		w("echo 'aof: preinst install %s'", name)
		w("DPKG_MAINTSCRIPT_PACKAGE=%s DPKG_MAINTSCRIPT_PACKAGE_REFCOUNT=1 DPKG_MAINTSCRIPT_ARCH=%s DPKG_MAINTSCRIPT_NAME=preinst DPKG_MAINTSCRIPT_DEBUG=0 DPKG_RUNNING_VERSION=%s DPKG_ROOT= \\",
			shellQuote(t.Package), shellQuote(t.Architecture), shellQuote(dpkgVersion))
		w("  /var/lib/dpkg/info/%s.preinst install || { echo 'aof: preinst of %s failed (exit '$?')' >&2; exit 1; }", name, name)
	}
	w("echo 'aof: dpkg --configure -a'")
	w("dpkg --force-unsafe-io --force-confdef --force-confold --configure -a || { echo 'aof: dpkg --configure -a failed' >&2; exit 1; }")
	if len(triggers) > 0 {
		w("echo 'aof: activating %d triggers'", len(triggers))
		for _, tr := range triggers {
			w("dpkg-trigger --no-await %s", shellQuote(tr))
		}
		w("dpkg --force-unsafe-io --triggers-only --pending || { echo 'aof: processing triggers failed' >&2; exit 1; }")
	}
	w("rm -f /usr/sbin/policy-rc.d")
	w("if [ -e /run/aof/policy-rc.d.image ]; then mv /run/aof/policy-rc.d.image /usr/sbin/policy-rc.d; fi")
	w("printf '#!/bin/sh\\nexit 101\\n' > /run/aof/bin/policy-rc.d; chmod 755 /run/aof/bin/policy-rc.d")
	w(`audit=$(dpkg --audit 2>&1 || true); if [ -n "$audit" ]; then echo "aof: dpkg --audit reports:" >&2; echo "$audit" >&2; exit 1; fi`)
	for _, s := range steps {
		w("echo %s", shellQuote("aof: "+s.Name))
		// Each step runs in a subshell of its own with -e, so a failure
		// names the step.
		w("( set -e")
		w("%s", s.Script)
		w(") || { echo %s >&2; exit 1; }", shellQuote("aof: "+s.Name+" failed"))
	}
	return b.String()
}

// preinstOrder orders packages so that each comes after what it
// Pre-Depends on, then Depends on (as apt orders unpacks), ties by name.
func preinstOrder(debs []*DebTree) []*DebTree {
	byName := map[string]*DebTree{}
	provides := map[string]*DebTree{}
	names := make([]string, 0, len(debs))
	for _, t := range debs {
		byName[t.Package] = t
		names = append(names, t.Package)
		if rel, err := dependency.Parse(t.Field("Provides")); err == nil && t.Field("Provides") != "" {
			for _, p := range rel.GetAllPossibilities() {
				if _, ok := provides[p.Name]; !ok {
					provides[p.Name] = t
				}
			}
		}
	}
	sort.Strings(names)
	state := map[string]int{} // 1 visiting, 2 done
	var out []*DebTree
	var visit func(name string)
	visit = func(name string) {
		if state[name] != 0 {
			return
		}
		state[name] = 1
		t := byName[name]
		for _, field := range []string{"Pre-Depends", "Depends"} {
			rel, err := dependency.Parse(t.Field(field))
			if err != nil || t.Field(field) == "" {
				continue
			}
			for _, or := range rel.Relations {
				for _, p := range or.Possibilities {
					dep := byName[p.Name]
					if dep == nil {
						dep = provides[p.Name]
					}
					if dep != nil {
						visit(dep.Package)
						break
					}
				}
			}
		}
		state[name] = 2
		out = append(out, t)
	}
	for _, n := range names {
		visit(n)
	}
	return out
}

// sandboxJob is what the worker does; it travels to a worker in a user
// namespace as JSON.
type sandboxJob struct {
	Repo       string
	Tree, Meta string
	WorkDir    string
	Hostname   string
	Script     string
	Env        []string
	Hook       *HookRequest `json:",omitempty"`
	// Persist: configure in Persist/root and keep it; BaseTree/BaseMeta:
	// Persist/root holds that tree, to be updated rather than checked out.
	Persist            string `json:",omitempty"`
	BaseTree, BaseMeta string `json:",omitempty"`
}

type sandboxResult struct {
	Tree, Meta   string
	Reused, Read int
	Changed      int
	// Steps is how long each part of the worker took, in order.
	Steps []StageTime
	Hook  *HookResult `json:",omitempty"`
	Error string      `json:",omitempty"`
}

type checkedOut struct {
	sum   ostree.Checksum
	ino   uint64
	size  int64
	ctime unix.Timespec
	mtime unix.Timespec
}

func (j *sandboxJob) run(ctx context.Context, log io.Writer) (*sandboxResult, error) {
	repo, err := ostree.Open(j.Repo)
	if err != nil {
		return nil, err
	}
	tree, err1 := ostree.ParseChecksum(j.Tree)
	meta, err2 := ostree.ParseChecksum(j.Meta)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("configure sandbox: bad job checksums")
	}
	res := &sandboxResult{}
	last := time.Now()
	step := func(name string) {
		res.Steps = append(res.Steps, StageTime{name, time.Since(last)})
		last = time.Now()
	}
	coOpts := ostree.CheckoutOptions{Owners: true, Xattrs: true}
	var root string
	done := false // the run succeeded
	switch {
	case j.Persist == "":
		parent, err := os.MkdirTemp(j.WorkDir, "aof-configure-")
		if err != nil {
			return nil, fmt.Errorf("configure sandbox: %w", err)
		}
		defer removeTree(parent)
		root = filepath.Join(parent, "root")
		if err := repo.CheckoutDirTree(ctx, tree, meta, root, coOpts); err != nil {
			return nil, fmt.Errorf("configure sandbox: check out the tree: %w", err)
		}
	default:
		// The kept tree: removed on any failure, so that no later build
		// starts from a half-configured one.
		root = filepath.Join(j.Persist, "root")
		defer func() {
			if !done {
				removeTree(root)
			}
		}()
		if j.BaseTree != "" {
			bt, err1 := ostree.ParseChecksum(j.BaseTree)
			bm, err2 := ostree.ParseChecksum(j.BaseMeta)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("configure sandbox: bad job checksums")
			}
			n, err := repo.CheckoutUpdate(ctx, bt, bm, tree, meta, root, coOpts)
			if err != nil {
				return nil, fmt.Errorf("configure sandbox: update the kept tree: %w", err)
			}
			res.Changed = n
		} else {
			removeTree(root)
			// Half-made checkouts of killed builds (only this namespace
			// may remove them after an unprivileged build).
			if stale, _ := filepath.Glob(filepath.Join(j.Persist, ".root.checkout-*")); len(stale) > 0 {
				for _, d := range stale {
					removeTree(d)
				}
			}
			if err := repo.CheckoutDirTree(ctx, tree, meta, root, coOpts); err != nil {
				return nil, fmt.Errorf("configure sandbox: check out the tree: %w", err)
			}
		}
	}
	known := map[string]checkedOut{}
	if err := recordCheckout(repo, tree, root, "/", known); err != nil {
		return nil, err
	}
	if j.BaseTree != "" {
		step("update kept tree")
	} else {
		step("checkout")
	}
	if err := runChroot(ctx, root, j.Hostname, j.Script, j.Env, log); err != nil {
		return nil, fmt.Errorf("configure sandbox: the configure script failed: %w", err)
	}
	step("scripts")
	mem, err := ostree.ReadDir(root, ostree.DirOptions{Known: func(rel string, st *unix.Stat_t) (ostree.Checksum, bool) {
		k, ok := known[rel]
		if ok && k.ino == st.Ino && k.size == st.Size && k.ctime == st.Ctim && k.mtime == st.Mtim {
			res.Reused++
			return k.sum, true
		}
		res.Read++
		return ostree.Checksum{}, false
	}})
	if err != nil {
		return nil, fmt.Errorf("configure sandbox: read back the tree: %w", err)
	}
	newTree, newMeta, _, err := repo.WriteTree(ctx, mem, ostree.WriteTreeOptions{})
	if err != nil {
		return nil, fmt.Errorf("configure sandbox: store the configured tree: %w", err)
	}
	res.Tree, res.Meta = newTree.String(), newMeta.String()
	step("read back")
	if j.Hook != nil {
		hr, err := runHook(ctx, repo, root, j.Hook)
		if err != nil {
			return nil, err
		}
		res.Hook = hr
		step("initramfs")
	}
	if j.Persist != "" {
		// A later build trusts the kept tree to be what was read back:
		// it must survive a crash (dpkg ran with --force-unsafe-io).
		if err := syncfs(root); err != nil {
			return nil, fmt.Errorf("configure sandbox: sync the kept tree: %w", err)
		}
	}
	done = true
	return res, nil
}

// recordCheckout notes, for every regular file checked out, the inode
// data that any change by a script would alter (ctime moves on every
// write, chmod, chown and xattr change; a replaced file has a new inode).
func recordCheckout(repo *ostree.Repo, tree ostree.Checksum, dir, rel string, into map[string]checkedOut) error {
	dt, err := repo.ReadDirTree(tree)
	if err != nil {
		return err
	}
	for _, f := range dt.Files {
		var st unix.Stat_t
		p := filepath.Join(dir, f.Name)
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if st.Mode&syscall.S_IFMT == syscall.S_IFREG {
			into[path.Join(rel, f.Name)] = checkedOut{f.Checksum, st.Ino, st.Size, st.Ctim, st.Mtim}
		}
	}
	for _, d := range dt.Dirs {
		if err := recordCheckout(repo, d.Tree, filepath.Join(dir, d.Name), path.Join(rel, d.Name), into); err != nil {
			return err
		}
	}
	return nil
}

func syncfs(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}

// removeTree deletes a directory tree that may hold read-only directories.
func removeTree(dir string) {
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(p, 0o700)
		}
		return nil
	})
	os.RemoveAll(dir)
}
