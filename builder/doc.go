// Package builder will run the build pipeline: unpack .debs into OSTree
// objects, run maintainer scripts in a sandbox, convert the tree to the
// OSTree layout and commit it. Not implemented yet (issue #4).
package builder
