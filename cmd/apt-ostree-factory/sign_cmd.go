package main

import (
	"context"
	"fmt"
	"io"

	"github.com/apt-ostree/apt-ostree-factory/signing"
)

func runSign(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("sign", "--repo REPO (--gpg-key FILE | --ed25519-key FILE)... [--passphrase-file FILE | --passphrase-env VAR] REV", stderr)
	repoPath := fs.String("repo", "", "OSTree repository holding the commit (required)")
	var keys, edKeys multiFlag
	fs.Var(&keys, "gpg-key", "OpenPGP secret key file, armored or binary (repeatable)")
	fs.Var(&edKeys, "ed25519-key", "Ed25519 secret key file: base64 of seed+public key (ostree's form) or PKCS#8 PEM (repeatable)")
	passFile := fs.String("passphrase-file", "", "file whose first line is the keys' passphrase")
	passEnv := fs.String("passphrase-env", "", "environment variable holding the keys' passphrase")
	pos, err := parseArgs(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if *repoPath == "" || len(keys)+len(edKeys) == 0 {
		return &usageError{"--repo and at least one --gpg-key or --ed25519-key are required"}
	}
	loaded, err := signing.Keys{GPG: keys, Ed25519: edKeys, Passphrase: signing.Passphrase{File: *passFile, Env: *passEnv}}.Load()
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
		fmt.Fprintf(stderr, "signed %s with %s\n", c, k.ID())
	}
	fmt.Fprintln(stdout, c)
	return nil
}
