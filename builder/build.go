package builder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/apt-ostree/apt-ostree-factory/apt"
	"github.com/apt-ostree/apt-ostree-factory/diskimage"
	"github.com/apt-ostree/apt-ostree-factory/ostree"
	"github.com/apt-ostree/apt-ostree-factory/ostree/gvariant"
	"github.com/apt-ostree/apt-ostree-factory/recipe"
	"github.com/apt-ostree/apt-ostree-factory/signing"
)

// Reporter receives the build's progress. Methods may be called from
// several goroutines at once.
type Reporter interface {
	// Stage starts a stage ("resolve", "fetch", "unpack", ...).
	Stage(name string)
	// Progress reports done of total units in the current stage.
	Progress(done, total int64)
	// Logf reports one line.
	Logf(format string, args ...any)
	// StageDone ends the current stage with a one-line summary.
	StageDone(name string, took time.Duration, summary string)
	// Output receives the configure sandbox's output (maintainer scripts).
	Output() io.Writer
}

// BuildOptions are the inputs of Build besides the recipe.
type BuildOptions struct {
	Recipe *recipe.Recipe
	// Repo is the OSTree archive repository to commit into; "" means the
	// recipe's ostree.repository, else ./build/repo. Created when missing.
	Repo string
	// CacheDir holds indexes and .debs (apt.DefaultCacheDir() if "").
	CacheDir string
	// Lock, when set, is installed instead of resolving the recipe.
	Lock *apt.Lock
	// LockPath, when set, receives the lock of the build.
	LockPath string
	// Offline opens no socket: the lock (or cached indexes) and the
	// cache must hold everything.
	Offline bool
	// SourceDateEpoch is the commit's timestamp and what scripts see; nil
	// means now.
	SourceDateEpoch *int64
	// WorkDir holds the configure stage's checkout (default $TMPDIR).
	WorkDir string
	// Parent overrides the commit's parent; NoRef leaves the branch alone
	// (a rebuild to compare, for --verify-reproducible).
	Parent *ostree.Checksum
	NoRef  bool
	// OutputDir receives the recipe's disk images ("." if empty);
	// NoImages skips them.
	OutputDir string
	NoImages  bool
	// Incremental keeps the configured tree in the cache directory and,
	// when this build only adds packages to the last --incremental build
	// of the branch, configures just those on it (see incremental.go).
	// The result is what installing the new packages on the earlier
	// image gives; it need not equal a from-scratch build of the lock.
	Incremental bool
	Report      Reporter
}

// StageTime is how long a stage took.
type StageTime struct {
	Name     string
	Duration time.Duration
}

// BuildResult describes a finished build.
type BuildResult struct {
	Repo          string
	Branch        string
	Commit        ostree.Checksum
	Parent        ostree.Checksum // zero without parent
	Timestamp     time.Time
	Lock          *apt.Lock
	Unpacked      int // .debs unpacked in this build
	FromCache     int // .debs taken from the per-.deb cache
	KernelVersion string
	Images        []*diskimage.Result
	Files         int
	ContentBytes  int64
	Stages        []StageTime
	Warnings      []string
}

// IncrementalFromKey is the commit metadata key an incremental build sets
// to the commit whose configured tree it was configured on.
const IncrementalFromKey = "aof.incremental-from"

// DefaultRepo is where builds go when neither the recipe nor the caller
// names a repository.
const DefaultRepo = "build/repo"

// Build runs the whole pipeline for a recipe: resolve (or take the given
// lock), fetch, unpack (per-.deb cache), merge, write the dpkg database,
// configure in the sandbox, convert to the OSTree layout with kernel and
// initramfs, and commit. The branch moves only when the commit is
// complete; on any error the repository's branches are as they were.
func Build(ctx context.Context, opts BuildOptions) (res *BuildResult, err error) {
	r := opts.Recipe
	rep := opts.Report
	if rep == nil {
		rep = discardReporter{}
	}
	res = &BuildResult{}
	stage := func(name string) func(summary string, args ...any) {
		rep.Stage(name)
		start := time.Now()
		return func(summary string, args ...any) {
			d := time.Since(start)
			res.Stages = append(res.Stages, StageTime{name, d})
			rep.StageDone(name, d, fmt.Sprintf(summary, args...))
		}
	}
	if opts.Recipe == nil {
		return nil, errors.New("build: no recipe")
	}
	if opts.Incremental && opts.NoRef {
		return nil, errors.New("build: an incremental build cannot be a reproducibility check")
	}
	// Signing keys are unlocked first: a wrong passphrase should not cost
	// a whole build.
	keys, err := signing.Keys{GPG: r.Signing.GPGKeys, Ed25519: r.Signing.Ed25519Keys,
		Passphrase: signing.Passphrase{File: r.Signing.PassphraseFile, Env: r.Signing.PassphraseEnv}}.Load()
	if err != nil {
		return nil, fmt.Errorf("%s: signing: %w", r.Path, err)
	}
	repoPath := opts.Repo
	if repoPath == "" {
		repoPath = r.OSTree.Repository
	}
	if repoPath == "" {
		repoPath = DefaultRepo
	}
	res.Repo = repoPath
	res.Branch = r.OSTree.Branch
	if err := ostree.ValidateRef(res.Branch); err != nil {
		return nil, fmt.Errorf("%s: ostree.branch: %w", r.Path, err)
	}
	if err := SandboxCheck(); err != nil {
		return nil, err
	}
	cacheDir := opts.CacheDir
	if cacheDir == "" {
		if cacheDir, err = apt.DefaultCacheDir(); err != nil {
			return nil, err
		}
	}
	now := time.Now()
	epoch := now.Unix()
	if opts.SourceDateEpoch != nil {
		epoch = *opts.SourceDateEpoch
	}
	res.Timestamp = time.Unix(epoch, 0).UTC()

	// Resolve.
	lock := opts.Lock
	if lock == nil {
		done := stage("resolve")
		lock, _, err = apt.Resolve(ctx, apt.ResolveOptions{
			Sources: r.Sources, Request: r.AptRequest(), CacheDir: cacheDir,
			Opener: &apt.Transport{Offline: opts.Offline},
		})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r.Path, err)
		}
		done("%d packages", len(lock.Packages))
	} else {
		for _, p := range lock.Packages {
			if p.Architecture != r.Architecture && p.Architecture != "all" {
				return nil, fmt.Errorf("the lock file pins %s, but the recipe builds %s", p.ID(), r.Architecture)
			}
		}
	}
	res.Lock = lock
	if opts.LockPath != "" {
		if err := lock.WriteFile(opts.LockPath); err != nil {
			return nil, err
		}
	}

	// Fetch.
	done := stage("fetch")
	cache := apt.DebCache(cacheDir)
	cache.Offline = opts.Offline
	items := lock.CacheItems()
	missing := cache.Missing(items)
	if err := cache.Fetch(ctx, items, &apt.Transport{Offline: opts.Offline}, func(d, t int64) { rep.Progress(d, t) }); err != nil {
		return nil, err
	}
	done("%d packages, %d downloaded", len(items), len(missing))

	// The repository, created when missing. Writers take its lock
	// themselves (objects are idempotent; refs move under the lock).
	repo, err := openOrInit(repoPath)
	if err != nil {
		return nil, err
	}

	// Unpack.
	done = stage("unpack")
	var n int64
	trees, cached, err := UnpackAllCachedNotify(ctx, repo, cache, lock.Packages, 0, func(i int, t *DebTree, fromCache bool, took time.Duration) {
		if !fromCache {
			rep.Logf("unpacked %s (%.2fs)", t.ID(), took.Seconds())
		}
		rep.Progress(atomic.AddInt64(&n, 1), int64(len(lock.Packages)))
	})
	if err != nil {
		return nil, err
	}
	res.Unpacked, res.FromCache = len(trees)-cached, cached
	done("%d unpacked, %d from the per-.deb cache", res.Unpacked, res.FromCache)

	// Merge and write the dpkg database.
	done = stage("merge")
	m := NewMerger(nil, MergeOptions{Architecture: r.Architecture})
	if needsMergedUsrSeed(trees) {
		if err := m.SeedMergedUsr(r.Architecture); err != nil {
			return nil, err
		}
	}
	for _, t := range trees {
		if err := m.Merge(t); err != nil {
			return nil, err
		}
	}
	for _, w := range m.Warnings() {
		res.Warnings = append(res.Warnings, w)
		rep.Logf("warning: %s", w)
	}
	if err := m.WriteDpkgDatabase(trees); err != nil {
		return nil, err
	}
	if err := addRecipeFiles(m.Root(), r); err != nil {
		return nil, err
	}
	done("%d packages", len(trees))

	// Configure.
	done = stage("configure")
	steps, err := recipeSteps(r)
	if err != nil {
		return nil, err
	}
	var hook *HookRequest
	if r.Kernel.Package != "" {
		// The initramfs carries no build time: its bytes depend on its
		// content only, so an update that changes neither the kernel nor
		// the initramfs content keeps the boot checksum (no new kernel
		// directory in /boot, nothing for the delta to carry).
		hook = &HookRequest{Initramfs: &InitramfsRequest{Modules: r.Kernel.Modules, MTime: 0}}
	}
	confOpts := ConfigureOptions{
		Hostname: r.Hostname, SourceDateEpoch: epoch,
		Steps: steps, WorkDir: opts.WorkDir, Log: rep.Output(), Hook: hook,
	}
	var persist *persistDir
	var persistKey string
	var mergedTree, mergedMeta ostree.Checksum
	if opts.Incremental {
		if persist, err = openPersist(cacheDir, repoPath, res.Branch); err != nil {
			rep.Logf("incremental: %v; configuring from scratch and keeping nothing", err)
			persist = nil
		}
		defer persist.close()
	}
	if persist != nil {
		persistKey = scriptKey(confOpts, sandboxIdentity())
		if mergedTree, mergedMeta, _, err = repo.WriteTree(ctx, m.Root(), ostree.WriteTreeOptions{}); err != nil {
			return nil, fmt.Errorf("configure: store the merged tree: %w", err)
		}
		st, reason := persist.readState()
		var base *incrementalBase
		if st != nil {
			base, reason = planIncremental(repo, st, persistKey, m.Root(), trees)
		}
		if base == nil {
			rep.Logf("incremental: configuring from scratch: %s", reason)
		} else {
			rep.Logf("incremental: configuring %d new package(s) on the tree kept from commit %s", len(base.newDebs), base.from.Commit)
			confOpts.base = base
		}
		if err := persist.clearState(); err != nil {
			return nil, fmt.Errorf("incremental: %w", err)
		}
		confOpts.Persist = persist.path
	}
	cres, err := Configure(ctx, repo, m.Root(), trees, confOpts)
	if err != nil {
		return nil, err
	}
	summary := fmt.Sprintf("%d files changed or added by scripts, %d unchanged", cres.Read, cres.Reused)
	if cres.Incremental {
		summary = fmt.Sprintf("incremental (%d new packages, %d entries of the kept tree updated): %s", len(confOpts.base.newDebs), cres.Changed, summary)
	}
	var parts []string
	for _, s := range cres.Steps {
		parts = append(parts, fmt.Sprintf("%s %.1fs", s.Name, s.Duration.Seconds()))
	}
	rep.Logf("configure: %s", strings.Join(parts, ", "))
	var kernel *Kernel
	if hr := cres.HookResult; hr != nil && hr.Initramfs != "" {
		sum, err := ostree.ParseChecksum(hr.Initramfs)
		if err != nil {
			return nil, err
		}
		kernel = &Kernel{Version: hr.KernelVersion, Initramfs: &ostree.MemFile{
			Header:   ostree.FileHeader{FileMeta: ostree.FileMeta{Mode: ostree.ModeRegular | 0o644}, Size: uint64(hr.InitramfsSize)},
			Checksum: sum, Origin: "initramfs for " + hr.KernelVersion,
		}}
		res.KernelVersion = hr.KernelVersion
		summary += fmt.Sprintf("; initramfs for %s: %.1f MB, %d modules", hr.KernelVersion, float64(hr.InitramfsSize)/1e6, len(hr.Modules))
		if len(hr.Missing) > 0 {
			rep.Logf("initramfs: modules not in kernel %s: %s", hr.KernelVersion, strings.Join(hr.Missing, " "))
		}
	}
	done("%s", summary)

	// OSTree layout.
	done = stage("ostreeify")
	ores, err := OSTreeify(cres.Root, kernel)
	if err != nil {
		return nil, err
	}
	done("%d /var entries in tmpfiles.d, %d volatile paths left out", ores.VarEntries, len(ores.Dropped))

	// The boot chain's EFI binaries, for disk images.
	if bp := r.BootPackages(); len(bp) > 0 {
		efiArch, _ := recipe.EFIArch(r.Architecture)
		bootTrees, _, err := UnpackAllCachedNotify(ctx, repo, cache, lock.BootPackages, 0, func(i int, t *DebTree, fromCache bool, took time.Duration) {
			if !fromCache {
				rep.Logf("unpacked boot package %s (%.2fs)", t.ID(), took.Seconds())
			}
		})
		if err != nil {
			return nil, err
		}
		if err := addBootPayload(cres.Root, efiArch, bootTrees); err != nil {
			return nil, err
		}
	}

	// Commit.
	done = stage("commit")
	md := commitMetadata(r, lock, res.KernelVersion)
	if b := confOpts.base; b != nil && b.from.Commit != "" {
		// The commit's content depends on the earlier build it was
		// configured on: say which.
		md = append(md, ostree.MetadataEntry{Key: IncrementalFromKey, Value: gvariant.NewVariant("s", b.from.Commit)})
	}
	copts := ostree.CommitOptions{
		Branch:    res.Branch,
		Subject:   commitSubject(r, lock),
		Timestamp: res.Timestamp,
		Metadata:  md,
		Parent:    opts.Parent,
		WriteOptions: ostree.WriteTreeOptions{Progress: func(d, t int) {
			rep.Progress(int64(d), int64(t))
		}},
	}
	if opts.NoRef {
		// A rebuild to compare: the branch stays where it is, and the
		// ref binding names it as the real build's commit does.
		copts.Branch = ""
		copts.Orphan = opts.Parent == nil
		copts.NoBindings = true
		copts.Metadata = append(copts.Metadata, ostree.MetadataEntry{Key: "ostree.ref-binding", Value: gvariant.NewVariant("as", []string{res.Branch})})
	}
	images := !opts.NoRef && !opts.NoImages && len(r.Outputs.Images) > 0
	deferRef := !opts.NoRef && (images || len(keys) > 0)
	if deferRef {
		// Signatures and images are made before the branch moves, so that
		// a failure leaves the branch where it was.
		if err := unboundCommit(repo, &copts); err != nil {
			return nil, err
		}
	}
	cr, err := repo.CommitTree(ctx, cres.Root, copts)
	if err != nil {
		return nil, err
	}
	res.Commit = cr.Checksum
	res.Parent = cr.Commit.Parent
	res.Files, res.ContentBytes = cr.Stats.Files, cr.Stats.ContentBytes
	done("%s on %s", res.Commit, res.Branch)

	if len(keys) > 0 && !opts.NoRef {
		done = stage("sign")
		if err := signing.SignCommit(repo, res.Commit, keys...); err != nil {
			return nil, err
		}
		var fps []string
		for _, k := range keys {
			fps = append(fps, k.ID())
		}
		done("signed by %s", strings.Join(fps, ", "))
	}
	if images {
		done = stage("image")
		res.Images, err = WriteImages(ctx, ImageOptions{Recipe: r, Repo: repo, Commit: res.Commit, OutputDir: opts.OutputDir, Report: rep})
		if err != nil {
			return nil, err
		}
		var names []string
		for _, im := range res.Images {
			names = append(names, filepath.Base(im.Path))
		}
		done("%s", strings.Join(names, ", "))
	}
	if deferRef {
		if err := repo.Sync(); err != nil {
			return nil, err
		}
		if err := repo.WriteRef(res.Branch, res.Commit); err != nil {
			return nil, err
		}
	}
	// The kept tree becomes something to build upon only now that the
	// build has succeeded and the branch points at its commit.
	if persist != nil {
		if err := keepIncremental(persist, persistKey, mergedTree, mergedMeta, cres, trees, res.Commit); err != nil {
			w := fmt.Sprintf("incremental: the configured tree is not kept for the next build: %v", err)
			res.Warnings = append(res.Warnings, w)
			rep.Logf("warning: %s", w)
		}
	}
	return res, nil
}

// unboundCommit turns commit options for a branch into ones that write
// the same commit (same parent, same ref binding) without moving the
// branch.
func unboundCommit(repo *ostree.Repo, copts *ostree.CommitOptions) error {
	if copts.Parent == nil && !copts.Orphan {
		p, err := repo.ReadRef(copts.Branch)
		switch {
		case err == nil:
			copts.Parent = &p
		case errors.Is(err, ostree.ErrNotFound):
			copts.Orphan = true
		default:
			return err
		}
	}
	if !copts.NoBindings {
		copts.NoBindings = true
		copts.Metadata = append(append(ostree.Metadata{}, copts.Metadata...), ostree.MetadataEntry{Key: "ostree.ref-binding", Value: gvariant.NewVariant("as", []string{copts.Branch})})
	}
	copts.Branch = ""
	return nil
}

type discardReporter struct{}

func (discardReporter) Stage(string)                            {}
func (discardReporter) Progress(int64, int64)                   {}
func (discardReporter) Logf(string, ...any)                     {}
func (discardReporter) StageDone(string, time.Duration, string) {}
func (discardReporter) Output() io.Writer                       { return io.Discard }

func openOrInit(p string) (*ostree.Repo, error) {
	if _, err := os.Stat(filepath.Join(p, "config")); err == nil {
		return ostree.Open(p)
	}
	if entries, err := os.ReadDir(p); err == nil && len(entries) > 0 {
		return nil, fmt.Errorf("%s exists and is not an OSTree repository", p)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return nil, err
	}
	return ostree.Init(p)
}

// needsMergedUsrSeed reports whether the packages leave merged-/usr to the
// installer (bookworm: debootstrap and mmdebstrap make /bin, /lib, ...
// links first), rather than shipping the links in base-files (trixie).
func needsMergedUsrSeed(trees []*DebTree) bool {
	for _, t := range trees {
		if t.Package == "base-files" {
			f := t.Root.Files["bin"]
			return f == nil || !isSymlink(f)
		}
	}
	return true
}

// commitSubject is the recipe's subject, or "<name> <version>".
func commitSubject(r *recipe.Recipe, lock *apt.Lock) string {
	if r.OSTree.Subject != "" {
		return r.OSTree.Subject
	}
	s := r.Name
	if r.OSTree.Version != "" {
		s += " " + r.OSTree.Version
	}
	return fmt.Sprintf("%s (%d packages)", s, len(lock.Packages))
}

// commitMetadata: version, the recipe's extra keys in order, then
// ostree.bootable/ostree.linux, the lock digest and the package manifest.
func commitMetadata(r *recipe.Recipe, lock *apt.Lock, kver string) ostree.Metadata {
	var md ostree.Metadata
	if r.OSTree.Version != "" {
		md = append(md, ostree.MetadataEntry{Key: "version", Value: gvariant.NewVariant("s", r.OSTree.Version)})
	}
	for _, kv := range r.OSTree.Metadata {
		md = append(md, ostree.MetadataEntry{Key: kv.Key, Value: gvariant.NewVariant("s", kv.Value)})
	}
	if kver != "" {
		md = append(md,
			ostree.MetadataEntry{Key: "ostree.bootable", Value: gvariant.NewVariant("b", true)},
			ostree.MetadataEntry{Key: "ostree.linux", Value: gvariant.NewVariant("s", kver)},
		)
	}
	manifest := make([]any, 0, len(lock.Packages))
	for _, p := range lock.Packages {
		manifest = append(manifest, []any{p.Name, p.Version, p.Architecture})
	}
	md = append(md,
		ostree.MetadataEntry{Key: "apt-ostree.lock-digest", Value: gvariant.NewVariant("s", lock.Digest())},
		ostree.MetadataEntry{Key: ostree.PackagesKey, Value: gvariant.NewVariant("a(sss)", manifest)},
		ostree.MetadataEntry{Key: "apt-ostree.recipe", Value: gvariant.NewVariant("s", r.Name)},
	)
	return md
}

// addRecipeFiles puts the recipe's files and directories into the tree
// (root-owned; recipeSteps sets the owners once users exist).
func addRecipeFiles(root *ostree.MemDir, r *recipe.Recipe) error {
	dirMeta := ostree.FileMeta{Mode: ostree.ModeDir | 0o755}
	for _, d := range r.Directories {
		p := strings.TrimPrefix(d.Path, "/")
		dir, err := root.MkdirAll(p, dirMeta)
		if err != nil {
			return fmt.Errorf("%s: directories: %s: %w", r.Path, d.Path, err)
		}
		mode := uint32(0o755)
		if d.Mode != nil {
			mode = uint32(*d.Mode)
		}
		dir.Meta.Mode = ostree.ModeDir | mode
	}
	zero := uint32(0)
	for _, f := range r.Files {
		dest := strings.TrimPrefix(path.Clean(f.Destination), "/")
		fi, err := os.Lstat(f.Source)
		if err != nil {
			return fmt.Errorf("%s: files: %w", r.Path, err)
		}
		parent, name := path.Split(dest)
		pd, err := root.MkdirAll(parent, dirMeta)
		if err != nil {
			return fmt.Errorf("%s: files: %s: %w", r.Path, f.Destination, err)
		}
		if fi.IsDir() {
			sub, err := ostree.ReadDir(f.Source, ostree.DirOptions{OwnerUID: &zero, OwnerGID: &zero, NoXattrs: true})
			if err != nil {
				return fmt.Errorf("%s: files: %w", r.Path, err)
			}
			if f.Mode != nil {
				sub.Meta.Mode = ostree.ModeDir | uint32(*f.Mode)
			}
			delete(pd.Files, name)
			pd.Dirs[name] = sub
			continue
		}
		one, err := ostree.ReadDir(filepath.Dir(f.Source), ostree.DirOptions{OwnerUID: &zero, OwnerGID: &zero, NoXattrs: true})
		if err != nil {
			return fmt.Errorf("%s: files: %w", r.Path, err)
		}
		mf := one.Files[filepath.Base(f.Source)]
		if mf == nil {
			return fmt.Errorf("%s: files: %s is not a regular file, symlink or directory", r.Path, f.Source)
		}
		if f.Mode != nil {
			mf.Header.Mode = mf.Header.Mode&ostree.ModeTypeMask | uint32(*f.Mode)
		}
		if _, isDir := pd.Dirs[name]; isDir {
			return fmt.Errorf("%s: files: %s: a directory of the image is there", r.Path, f.Destination)
		}
		pd.Files[name] = mf
	}
	return nil
}

// recipeSteps turns hostname, groups, users, file owners and scripts into
// configure steps, in that order.
func recipeSteps(r *recipe.Recipe) ([]Step, error) {
	var steps []Step
	steps = append(steps, Step{Name: "hostname " + r.Hostname, Script: fmt.Sprintf("echo %s > /etc/hostname", shellQuote(r.Hostname))})
	for _, g := range r.Groups {
		args := []string{"groupadd"}
		if g.System {
			args = append(args, "--system")
		}
		if g.GID != nil {
			args = append(args, "--gid", fmt.Sprint(*g.GID))
		}
		args = append(args, g.Name)
		steps = append(steps, Step{Name: "group " + g.Name, Script: quoteArgs(args)})
	}
	for _, u := range r.Users {
		args := []string{"useradd"}
		if u.System {
			args = append(args, "--system")
		} else {
			args = append(args, "--create-home")
		}
		if u.UID != nil {
			args = append(args, "--uid", fmt.Sprint(*u.UID))
		}
		group := u.Group
		if group == "" {
			group = u.Name
		}
		script := ""
		if group == u.Name {
			// The user's own group: made unless the recipe made it.
			script = fmt.Sprintf("if getent group %s >/dev/null; then g=--gid; else g=--user-group; fi\n", shellQuote(group))
		}
		if len(u.Groups) > 0 {
			args = append(args, "--groups", strings.Join(u.Groups, ","))
		}
		if u.Comment != "" {
			args = append(args, "--comment", u.Comment)
		}
		if u.Home != "" {
			args = append(args, "--home-dir", u.Home)
		}
		if u.Shell != "" {
			args = append(args, "--shell", u.Shell)
		}
		if u.PasswordHash != "" {
			args = append(args, "--password", u.PasswordHash)
		}
		if group == u.Name {
			script += quoteArgs(args) + ` $g $( [ "$g" = --gid ] && echo ` + shellQuote(group) + ` ) ` + shellQuote(u.Name)
		} else {
			script += quoteArgs(append(args, "--gid", group, u.Name))
		}
		steps = append(steps, Step{Name: "user " + u.Name, Script: script})
	}
	var owners []string
	for _, d := range r.Directories {
		if d.Owner != "" && d.Owner != "root:root" && d.Owner != "0:0" {
			owners = append(owners, fmt.Sprintf("chown %s %s", shellQuote(d.Owner), shellQuote(d.Path)))
		}
	}
	for _, f := range r.Files {
		if f.Owner != "" && f.Owner != "root:root" && f.Owner != "0:0" {
			owners = append(owners, fmt.Sprintf("chown -hR %s %s", shellQuote(f.Owner), shellQuote(f.Destination)))
		}
	}
	if len(owners) > 0 {
		steps = append(steps, Step{Name: "owners of files and directories", Script: strings.Join(owners, "\n")})
	}
	for i, s := range r.Scripts {
		name := s.Name
		if name == "" {
			name = fmt.Sprintf("scripts[%d]", i)
		}
		body := s.Run
		if s.Path != "" {
			b, err := os.ReadFile(s.Path)
			if err != nil {
				return nil, fmt.Errorf("%s: scripts[%d]: %w", r.Path, i, err)
			}
			body = string(b)
		}
		delim := "AOF_SCRIPT_END"
		for strings.Contains(body, delim) {
			delim += "_"
		}
		f := fmt.Sprintf("/run/aof/script-%d", i)
		script := fmt.Sprintf("cat > %s <<'%s'\n%s\n%s\nchmod 700 %s\n", f, delim, strings.TrimSuffix(body, "\n"), delim, f)
		if strings.HasPrefix(body, "#!") {
			script += f
		} else {
			script += "sh -e " + f
		}
		steps = append(steps, Step{Name: "script " + name, Script: script})
	}
	return steps, nil
}

func quoteArgs(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = shellQuote(a)
	}
	return strings.Join(q, " ")
}
