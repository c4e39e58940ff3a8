// Package apt will be the APT repository client: InRelease verification,
// Packages indexes, the dependency solver, lock files and the .deb cache.
// Not implemented yet (issue #3).
package apt
