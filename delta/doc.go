// Package delta generates OSTree static deltas and offline bundles from an
// archive-z2 repository, in the format `ostree pull` and `ostree static-delta
// apply-offline` consume (see the shared ostree-format reference, §4).
//
// A delta carries every object reachable from the target commit that is not
// reachable from the source commit (dirtrees and dirmetas first, then
// regular files, then symlinks), minus the target commit itself, which is
// embedded in the superblock. Objects are written whole with
// open-splice-and-close ('S') operations, which clients apply to archive and
// bare repositories alike; bsdiff and rollsum encodings of modified files are
// not generated. Parts are xz-compressed in parallel, and the output is
// deterministic for a given Options.Time.
//
// Show decodes a superblock (or bundle) and its parts, replaying their
// operations to check every object they produce.
package delta
