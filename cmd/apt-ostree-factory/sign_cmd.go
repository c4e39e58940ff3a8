package main

import (
	"context"
	"fmt"
	"io"

	"github.com/apt-ostree/apt-ostree-factory/signing"
)

func runSign(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("sign", "--repo REPO --gpg-key FILE [--gpg-key FILE]... [--passphrase-file FILE | --passphrase-env VAR] REV", stderr)
	repoPath := fs.String("repo", "", "OSTree repository holding the commit (required)")
	var keys multiFlag
	fs.Var(&keys, "gpg-key", "OpenPGP secret key file, armored or binary (repeatable)")
	passFile := fs.String("passphrase-file", "", "file whose first line is the keys' passphrase")
	passEnv := fs.String("passphrase-env", "", "environment variable holding the keys' passphrase")
	pos, err := parseArgs(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if *repoPath == "" || len(keys) == 0 {
		return &usageError{"--repo and at least one --gpg-key are required"}
	}
	loaded, err := signing.LoadKeys(keys, signing.Passphrase{File: *passFile, Env: *passEnv})
	if err != nil {
		return err
	}
	repo, c, err := openRev(*repoPath, pos[0])
	if err != nil {
		return err
	}
	if err := signing.SignCommit(repo, c, loaded...); err != nil {
		return err
	}
	for _, k := range loaded {
		fmt.Fprintf(stderr, "signed %s with %s\n", c, k.Fingerprint())
	}
	fmt.Fprintln(stdout, c)
	return nil
}
