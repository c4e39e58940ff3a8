// Package signing signs OSTree commits and summaries with OpenPGP:
// detached signatures stored as ostree.gpgsigs in the commit's detached
// metadata, which Debian's ostree (GnuPG 2.2 through gpgme) verifies on
// pull; and with Ed25519 (ostree.sign.ed25519, 64-byte signatures over the
// same bytes; keys in ostree's base64 form or PKCS#8 PEM), for ostree
// builds that have that sign type (Debian's do not). Keys are
// read from armored or binary secret keyrings, optionally protected by a
// passphrase that comes from a file or an environment variable, never from
// the command line. Generated keys are v4 EdDSA (Ed25519) keys, the kind
// GnuPG 2.2 accepts.
package signing
