package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/apt-ostree/apt-ostree-factory/apt"
	"github.com/apt-ostree/apt-ostree-factory/recipe"
)

type aptFlags struct {
	cacheDir *string
	offline  *bool
}

func addAptFlags(fs *flag.FlagSet) aptFlags {
	return aptFlags{
		cacheDir: fs.String("cache-dir", "", "cache for verified indexes and .debs (default: $XDG_CACHE_HOME/apt-ostree-factory)"),
		offline:  fs.Bool("offline", false, "never touch the network; fail if something is not cached"),
	}
}

func (f aptFlags) cache() (string, error) {
	if *f.cacheDir != "" {
		return *f.cacheDir, nil
	}
	return apt.DefaultCacheDir()
}

// defaultLockPath puts the lock beside the recipe: demo.yaml -> demo.lock.
func defaultLockPath(recipePath string) string {
	ext := filepath.Ext(recipePath)
	return strings.TrimSuffix(recipePath, ext) + ".lock"
}

func resolveRecipe(ctx context.Context, r *recipe.Recipe, f aptFlags, stderr io.Writer) (*apt.Lock, *apt.Solution, error) {
	cacheDir, err := f.cache()
	if err != nil {
		return nil, nil, err
	}
	start := time.Now()
	lock, sol, err := apt.Resolve(ctx, apt.ResolveOptions{
		Sources:  r.Sources,
		Request:  r.AptRequest(),
		CacheDir: cacheDir,
		Opener:   &apt.Transport{Offline: *f.offline},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", r.Path, err)
	}
	fmt.Fprintf(stderr, "resolved %d packages in %.1fs\n", len(lock.Packages), time.Since(start).Seconds())
	return lock, sol, nil
}

func runResolve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("resolve", "RECIPE [--lock=FILE] [--list] [--offline] [--cache-dir=DIR]", stderr)
	lockPath := fs.String("lock", "", "lock file to write (default: the recipe's path with .lock)")
	list := fs.Bool("list", false, "print the resolved set on stdout as 'name version arch', sorted by name")
	af := addAptFlags(fs)
	pos, err := parseArgs(fs, args, 1, 1)
	if err != nil {
		return err
	}
	r, err := recipe.Load(pos[0])
	if err != nil {
		return err
	}
	lock, _, err := resolveRecipe(ctx, r, af, stderr)
	if err != nil {
		return err
	}
	out := *lockPath
	if out == "" {
		out = defaultLockPath(pos[0])
	}
	if err := lock.WriteFile(out); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "wrote %s\n", out)
	if *list {
		for _, p := range lock.Packages {
			fmt.Fprintf(stdout, "%s %s %s\n", p.Name, p.Version, p.Architecture)
		}
	}
	return nil
}

func runFetch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("fetch", "RECIPE|LOCKFILE [--offline] [--cache-dir=DIR]", stderr)
	af := addAptFlags(fs)
	pos, err := parseArgs(fs, args, 1, 1)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(pos[0])
	if err != nil {
		return err
	}
	var lock *apt.Lock
	if apt.IsLockFile(data) {
		if lock, err = apt.ReadLockFile(pos[0]); err != nil {
			return err
		}
	} else {
		r, err := recipe.Parse(data, pos[0])
		if err != nil {
			return err
		}
		if lock, _, err = resolveRecipe(ctx, r, af, stderr); err != nil {
			return err
		}
	}
	cacheDir, err := af.cache()
	if err != nil {
		return err
	}
	cache := apt.DebCache(cacheDir)
	cache.Offline = *af.offline
	items := lock.CacheItems()
	missing := cache.Missing(items)
	var total int64
	for _, it := range missing {
		total += it.Size
	}
	fmt.Fprintf(stderr, "%d packages, %d to download (%.1f MB) into %s\n", len(items), len(missing), float64(total)/1e6, cache.Dir)
	start := time.Now()
	err = cache.Fetch(ctx, items, &apt.Transport{Offline: *af.offline}, progressPrinter(stderr, "download"))
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "all %d packages verified in the cache (%.1fs)\n", len(items), time.Since(start).Seconds())
	return nil
}

// progressPrinter renders byte progress as a line per 10% step; the TTY
// progress bar arrives with the build's progress output.
func progressPrinter(w io.Writer, what string) func(done, total int64) {
	last := int64(-1)
	return func(done, total int64) {
		if total <= 0 {
			return
		}
		step := done * 10 / total
		if step != last {
			last = step
			fmt.Fprintf(w, "%s: %3d%% (%.1f of %.1f MB)\n", what, step*10, float64(done)/1e6, float64(total)/1e6)
		}
	}
}
