package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/apt-ostree/apt-ostree-factory/builder"
	"github.com/apt-ostree/apt-ostree-factory/delta"
	"github.com/apt-ostree/apt-ostree-factory/ostree"
	"github.com/apt-ostree/apt-ostree-factory/signing"
)

func runPublish(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("publish", "--repo REPO [--branch B]... [--gpg-key FILE]... [--ed25519-key FILE]... [--passphrase-file FILE | --passphrase-env VAR] [--no-deltas] [--scratch-deltas] [--retain N]", stderr)
	repoPath := fs.String("repo", "", "the archive repository devices pull from (required)")
	var branches, keys, edKeys multiFlag
	fs.Var(&branches, "branch", "publish deltas for this branch only (repeatable; default every branch)")
	fs.Var(&keys, "gpg-key", "OpenPGP secret key that signs the summary (repeatable; default: the summary is not signed)")
	fs.Var(&edKeys, "ed25519-key", "Ed25519 secret key that signs the summary too (repeatable)")
	passFile := fs.String("passphrase-file", "", "file whose first line is the keys' passphrase")
	passEnv := fs.String("passphrase-env", "", "environment variable holding the keys' passphrase")
	noDeltas := fs.Bool("no-deltas", false, "do not generate static deltas from each head's parent")
	scratch := fs.Bool("scratch-deltas", false, "also generate a static delta from nothing to each head")
	retain := fs.Int("retain", 0, "keep this many commits per branch and prune older ones with their deltas (0: keep all)")
	if _, err := parseArgs(fs, args, 0, 0); err != nil {
		return err
	}
	if *repoPath == "" {
		return &usageError{"--repo is required"}
	}
	if *retain < 0 {
		return &usageError{"--retain must be 0 or more"}
	}
	loaded, err := signing.Keys{GPG: keys, Ed25519: edKeys, Passphrase: signing.Passphrase{File: *passFile, Env: *passEnv}}.Load()
	if err != nil {
		return err
	}
	repo, err := openRepo(*repoPath)
	if err != nil {
		return err
	}
	opts := builder.PublishOptions{Repo: repo, Branches: branches, Keys: loaded, Deltas: !*noDeltas, Scratch: *scratch, Retain: *retain}
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			opts.Now = time.Unix(n, 0)
		}
	}
	rep := newReporter(stderr, false, false)
	opts.Report = rep
	res, err := builder.Publish(ctx, opts)
	rep.finish()
	if err != nil {
		return err
	}
	for _, d := range res.Deltas {
		fmt.Fprintf(stderr, "delta %s: %d parts, %d fallbacks, %.1f MB\n", d.Name, d.Parts, d.Fallbacks, float64(d.CompressedSize)/1e6)
	}
	for _, c := range res.Pruned {
		fmt.Fprintf(stderr, "pruned commit %s\n", c)
	}
	signed := "unsigned"
	if len(loaded) > 0 {
		signed = "signed"
	}
	fmt.Fprintf(stderr, "summary updated (%d bytes, %s)\n", len(res.Summary), signed)
	return nil
}

func runDelta(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "generate" {
		return &usageError{"usage: delta generate --repo REPO [--from REV | --empty] [--to REV] [--bundle FILE]"}
	}
	fs := newFlags("delta generate", "--repo REPO [--from REV | --empty] [--to REV] [--bundle FILE]", stderr)
	repoPath := fs.String("repo", "", "archive repository (required)")
	fromRev := fs.String("from", "", "the commit devices have (default: the parent of --to)")
	toRev := fs.String("to", "", "the commit devices get (required)")
	empty := fs.Bool("empty", false, "from nothing (a delta every device can apply)")
	bundle := fs.String("bundle", "", "write one self-contained file for `ostree static-delta apply-offline` (USB updates) instead of into the repository")
	noBsdiff := fs.Bool("no-bsdiff", false, "send modified files whole instead of as bsdiff patches (needed to apply the delta into an archive repository)")
	if _, err := parseArgs(fs, args[1:], 0, 0); err != nil {
		return err
	}
	if *repoPath == "" || *toRev == "" {
		return &usageError{"--repo and --to are required"}
	}
	if *empty && *fromRev != "" {
		return &usageError{"--from and --empty exclude each other"}
	}
	repo, to, err := openRev(*repoPath, *toRev)
	if err != nil {
		return err
	}
	var from *ostree.Checksum
	if !*empty {
		if *fromRev != "" {
			c, err := repo.ResolveRev(*fromRev)
			if err != nil {
				return err
			}
			from = &c
		} else {
			cm, err := repo.ReadCommit(to)
			if err != nil {
				return err
			}
			if cm.Parent.IsZero() {
				return fmt.Errorf("%s has no parent: give --from or --empty", to)
			}
			p := cm.Parent
			from = &p
		}
	}
	var res *delta.Result
	if *bundle != "" {
		res, err = delta.WriteBundle(ctx, repo, from, to, *bundle, delta.Options{DisableBsdiff: *noBsdiff})
	} else {
		opts := delta.DefaultOptions()
		opts.DisableBsdiff = *noBsdiff
		res, err = delta.Generate(ctx, repo, from, to, opts)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "delta %s: %d objects (%d as bsdiff patches) in %d parts, %d fallbacks, %.1f MB (%.1f MB uncompressed)\n",
		res.Name, res.Objects, res.Patched, res.Parts, res.Fallbacks, float64(res.CompressedSize)/1e6, float64(res.UncompressedSize)/1e6)
	if *bundle != "" {
		fmt.Fprintln(stdout, *bundle)
	} else {
		fmt.Fprintln(stdout, res.Name)
	}
	return nil
}
