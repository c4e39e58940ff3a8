// Package signing will sign commits and summaries with OpenPGP
// (ostree.gpgsigs) and ed25519 (ostree.sign.ed25519). Not implemented yet
// (issue #7).
package signing
