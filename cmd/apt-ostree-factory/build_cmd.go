package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/apt-ostree/apt-ostree-factory/apt"
	"github.com/apt-ostree/apt-ostree-factory/builder"
	"github.com/apt-ostree/apt-ostree-factory/recipe"
)

func runBuild(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("build", "RECIPE [--set KEY=VALUE]... [--repo DIR] [--lock FILE] [--write-lock FILE] [--offline] [--output-dir DIR] [--no-images] [--verify-reproducible | --incremental] [--quiet|--verbose]", stderr)
	var sets multiFlag
	fs.Var(&sets, "set", "set a recipe variable ${KEY} (repeatable)")
	repo := fs.String("repo", "", "OSTree archive repository to commit into (default: the recipe's ostree.repository, else ./build/repo)")
	lockIn := fs.String("lock", "", "install exactly this lock file instead of resolving (works --offline)")
	lockOut := fs.String("write-lock", "", "write the build's lock file here")
	workDir := fs.String("work-dir", "", "where the configure stage checks the tree out (default $TMPDIR)")
	outDir := fs.String("output-dir", ".", "directory for the recipe's disk images (outputs.images) and their .sha256 files")
	noImages := fs.Bool("no-images", false, "commit only: skip the recipe's outputs.images")
	verify := fs.Bool("verify-reproducible", false, "build a second time and fail unless the commit checksum is the same")
	incremental := fs.Bool("incremental", false, "keep the configured tree in the cache directory; when the last --incremental build of this branch had a subset of this build's packages (same versions, same recipe otherwise), configure only the added packages on it. Faster, but the commit is what installing them on the earlier image gives, not necessarily what a from-scratch build makes (its metadata names the earlier commit)")
	quiet := fs.Bool("quiet", false, "print only errors and the commit checksum")
	verbose := fs.Bool("verbose", false, "show the output of maintainer scripts and recipe scripts")
	af := addAptFlags(fs)
	pos, err := parseArgs(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if *incremental && *verify {
		return &usageError{"--incremental and --verify-reproducible exclude each other: reproducibility is checked on from-scratch builds"}
	}
	vars, err := recipe.ParseSet(sets)
	if err != nil {
		return &usageError{err.Error()}
	}
	r, err := recipe.LoadWith(pos[0], recipe.Options{Vars: vars})
	if err != nil {
		return err
	}
	cacheDir, err := af.cache()
	if err != nil {
		return err
	}
	opts := builder.BuildOptions{
		Recipe: r, Repo: *repo, CacheDir: cacheDir, LockPath: *lockOut,
		Offline: *af.offline, WorkDir: *workDir, OutputDir: *outDir, NoImages: *noImages,
		Incremental: *incremental,
	}
	if *lockIn != "" {
		if opts.Lock, err = apt.ReadLockFile(*lockIn); err != nil {
			return err
		}
	}
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return &usageError{fmt.Sprintf("SOURCE_DATE_EPOCH=%q is not a number of seconds", s)}
		}
		opts.SourceDateEpoch = &n
	}
	rep := newReporter(stderr, *quiet, *verbose)
	opts.Report = rep
	start := time.Now()
	res, err := builder.Build(ctx, opts)
	rep.finish()
	if err != nil {
		return err
	}
	if !*quiet {
		printSummary(stderr, res, time.Since(start))
	}
	if *verify {
		if !*quiet {
			fmt.Fprintf(stderr, "\nverify-reproducible: building again with the same lock and SOURCE_DATE_EPOCH=%d\n", res.Timestamp.Unix())
		}
		epoch := res.Timestamp.Unix()
		again := opts
		again.Lock, again.LockPath, again.SourceDateEpoch = res.Lock, "", &epoch
		again.NoRef = true
		if res.Parent.IsZero() {
			again.Parent = nil
		} else {
			p := res.Parent
			again.Parent = &p
		}
		rep2 := newReporter(stderr, *quiet, *verbose)
		again.Report = rep2
		res2, err := builder.Build(ctx, again)
		rep2.finish()
		if err != nil {
			return fmt.Errorf("verify-reproducible: second build: %w", err)
		}
		if res2.Commit != res.Commit {
			diff, derr := builder.DiffCommits(res.Repo, res.Commit, res2.Commit, 30)
			if derr != nil {
				diff = []string{derr.Error()}
			}
			return fmt.Errorf("verify-reproducible: NOT reproducible: %s then %s; differences:\n  %s", res.Commit, res2.Commit, strings.Join(diff, "\n  "))
		}
		if !*quiet {
			fmt.Fprintf(stderr, "verify-reproducible: the second build gave the same commit %s\n", res2.Commit)
		}
	}
	fmt.Fprintln(stdout, res.Commit)
	return nil
}

func printSummary(w io.Writer, res *builder.BuildResult, total time.Duration) {
	fmt.Fprintf(w, "\ncommit    %s\n", res.Commit)
	parent := "no parent"
	if !res.Parent.IsZero() {
		parent = "parent " + res.Parent.String()
	}
	fmt.Fprintf(w, "branch    %s (%s) in %s\n", res.Branch, parent, res.Repo)
	fmt.Fprintf(w, "packages  %d (%d unpacked, %d from the per-.deb cache), lock digest %s\n", len(res.Lock.Packages), res.Unpacked, res.FromCache, res.Lock.Digest())
	if res.KernelVersion != "" {
		fmt.Fprintf(w, "kernel    %s (bootable)\n", res.KernelVersion)
	} else {
		fmt.Fprintf(w, "kernel    none (not bootable)\n")
	}
	fmt.Fprintf(w, "content   %d files, %.1f MB\n", res.Files, float64(res.ContentBytes)/1e6)
	var parts []string
	for _, s := range res.Stages {
		parts = append(parts, fmt.Sprintf("%s %.1fs", s.Name, s.Duration.Seconds()))
	}
	fmt.Fprintf(w, "time      %s; total %.1fs\n", strings.Join(parts, ", "), total.Seconds())
	for _, im := range res.Images {
		fmt.Fprintf(w, "image     %s\n", builder.ImageSummary(im))
	}
	if len(res.Warnings) > 0 {
		fmt.Fprintf(w, "warnings  %d (listed above)\n", len(res.Warnings))
	}
}

// reporter prints stages as a progress line on a terminal and as plain
// lines otherwise.
type reporter struct {
	mu      sync.Mutex
	w       io.Writer
	tty     bool
	quiet   bool
	verbose bool
	stage   string
	shown   bool // a progress line is on screen
	last    time.Time
	lastPct int64
}

func newReporter(w io.Writer, quiet, verbose bool) *reporter {
	r := &reporter{w: w, quiet: quiet, verbose: verbose, lastPct: -1}
	if f, ok := w.(*os.File); ok {
		if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
			r.tty = true
		}
	}
	return r
}

func (r *reporter) clear() {
	if r.shown {
		fmt.Fprint(r.w, "\r\033[K")
		r.shown = false
	}
}

func (r *reporter) Stage(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stage, r.lastPct = name, -1
	if r.quiet {
		return
	}
	if r.tty {
		r.clear()
		fmt.Fprintf(r.w, "%-10s ...", name)
		r.shown = true
		return
	}
	fmt.Fprintf(r.w, "==> %s\n", name)
}

func (r *reporter) Progress(done, total int64) {
	if total <= 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.quiet {
		return
	}
	pct := done * 100 / total
	if r.tty {
		if time.Since(r.last) < 100*time.Millisecond && done != total {
			return
		}
		r.last = time.Now()
		const width = 30
		fill := int(done * width / total)
		r.clear()
		fmt.Fprintf(r.w, "%-10s [%s%s] %3d%%", r.stage, strings.Repeat("#", fill), strings.Repeat(".", width-fill), pct)
		r.shown = true
		return
	}
	// Plain logs: a line per 25%.
	if q := pct / 25; q != r.lastPct/25 || r.lastPct < 0 {
		if pct > 0 {
			fmt.Fprintf(r.w, "    %s: %d%%\n", r.stage, q*25)
		}
		r.lastPct = pct
	}
}

func (r *reporter) Logf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.quiet {
		return
	}
	r.clear()
	fmt.Fprintf(r.w, "    "+format+"\n", args...)
}

func (r *reporter) StageDone(name string, took time.Duration, summary string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.quiet {
		return
	}
	r.clear()
	fmt.Fprintf(r.w, "%-10s %5.1fs  %s\n", name, took.Seconds(), summary)
}

func (r *reporter) Output() io.Writer {
	if !r.verbose {
		return io.Discard
	}
	return writerFunc(func(p []byte) (int, error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.clear()
		return r.w.Write(p)
	})
}

func (r *reporter) finish() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.clear()
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
