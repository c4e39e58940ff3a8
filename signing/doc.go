// Package signing signs OSTree commits with OpenPGP: detached signatures
// stored as ostree.gpgsigs in the commit's detached metadata, which
// Debian's ostree (GnuPG 2.2 through gpgme) verifies on pull. Keys are
// read from armored or binary secret keyrings, optionally protected by a
// passphrase that comes from a file or an environment variable, never from
// the command line. Generated keys are v4 EdDSA (Ed25519) keys, the kind
// GnuPG 2.2 accepts.
package signing
