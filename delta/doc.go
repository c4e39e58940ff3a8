// Package delta generates OSTree static deltas and offline bundles from an
// archive-z2 repository, in the format `ostree pull` and `ostree static-delta
// apply-offline` consume (see the shared ostree-format reference, §4).
//
// A delta carries every object reachable from the target commit that is not
// reachable from the source commit (dirtrees and dirmetas first, then
// regular files, then symlinks), minus the target commit itself, which is
// embedded in the superblock, then already-compressed files in parts whose
// xz stream stores them. Objects are written whole with open-splice-and-close
// ('S') operations, except modified regular files that a bsdiff patch
// against their previous version carries more cheaply (set-read-source,
// open, bspatch, close: bare-family receivers only, as ostree's own);
// rollsum encodings are not generated. Parts are xz-compressed in parallel
// (the x86 filter for parts of x86 code), and the output is deterministic
// for a given Options.Time.
//
// Show decodes a superblock (or bundle) and its parts, replaying their
// operations to check every object they produce.
package delta
