// Package delta will generate OSTree static deltas (superblock, xz parts,
// bsdiff) and offline bundles. Not implemented yet (issue #7).
package delta
