package main

import (
	"context"
	"fmt"
	"io"

	"github.com/apt-ostree/apt-ostree-factory/builder"
	"github.com/apt-ostree/apt-ostree-factory/recipe"
)

func runImage(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("image", "--recipe RECIPE [--repo DIR] [--ref REF] [--set KEY=VALUE]... [--output-dir DIR] [--name NAME]... [--quiet]", stderr)
	recipePath := fs.String("recipe", "", "recipe whose outputs.images describe the images (required)")
	repoPath := fs.String("repo", "", "OSTree archive repository holding the commit (default: the recipe's ostree.repository, else ./build/repo)")
	ref := fs.String("ref", "", "commit or ref to put in the images (default: the recipe's ostree.branch)")
	var sets, names multiFlag
	fs.Var(&sets, "set", "set a recipe variable ${KEY} (repeatable)")
	fs.Var(&names, "name", "write only the image with this outputs.images[].name (repeatable)")
	outDir := fs.String("output-dir", ".", "directory for NAME.raw / NAME.qcow2 and their .sha256 files")
	quiet := fs.Bool("quiet", false, "print only errors and the image paths")
	if _, err := parseArgs(fs, args, 0, 0); err != nil {
		return err
	}
	if *recipePath == "" {
		return &usageError{"--recipe is required"}
	}
	vars, err := recipe.ParseSet(sets)
	if err != nil {
		return &usageError{err.Error()}
	}
	r, err := recipe.LoadWith(*recipePath, recipe.Options{Vars: vars})
	if err != nil {
		return err
	}
	rp := *repoPath
	if rp == "" {
		rp = r.OSTree.Repository
	}
	if rp == "" {
		rp = builder.DefaultRepo
	}
	rev := *ref
	if rev == "" {
		rev = r.OSTree.Branch
	}
	repo, commit, err := openRev(rp, rev)
	if err != nil {
		return err
	}
	rep := newReporter(stderr, *quiet, false)
	rep.Stage("image")
	results, err := builder.WriteImages(ctx, builder.ImageOptions{
		Recipe: r, Repo: repo, Commit: commit, OutputDir: *outDir, Only: names, Report: rep,
	})
	rep.finish()
	for _, res := range results {
		if !*quiet {
			fmt.Fprintln(stderr, builder.ImageSummary(res))
		}
		fmt.Fprintln(stdout, res.Path)
	}
	return err
}
