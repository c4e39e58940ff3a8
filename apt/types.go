// Package apt is the factory's APT client: it turns "these packages from
// these archives" into an exact, verified set of .debs without running apt
// and without root. Archive metadata is verified (InRelease signatures,
// Valid-Until, index checksums) before use; the solver follows apt's rules
// for a fresh install; the result is a Lock that pins every package by
// SHA-256, and .debs live in a content-addressed cache.
//
// The package is split by job: sources and archive metadata (source.go,
// release.go, index.go), the solver (solver.go), lock files (lock.go) and
// the .deb cache (cache.go).
package apt

import (
	"context"
	"fmt"
	"io"

	"pault.ag/go/debian/dependency"
	"pault.ag/go/debian/version"
)

// DefaultPriority is the pin priority of a source that names none, as
// apt's default for archives that are not NotAutomatic.
const DefaultPriority = 500

// Source is one archive to install from, as a sources.list entry with its
// signing keyring.
type Source struct {
	// URI is the archive root: http://, https:// or file://.
	URI string `yaml:"uri"`
	// Suite is the distribution, e.g. "trixie" or "bookworm-updates".
	Suite string `yaml:"suite"`
	// Components, e.g. ["main"].
	Components []string `yaml:"components"`
	// Architectures to read indexes for; empty means the build architecture
	// (arch "all" packages are always read).
	Architectures []string `yaml:"architectures,omitempty"`
	// SignedBy lists keyring files (binary or ASCII-armored OpenPGP) that
	// may sign the suite's InRelease. Required: there is no unsigned mode.
	SignedBy []string `yaml:"signed-by"`
	// Priority is the pin priority: the candidate version of a package
	// comes from the highest-priority source that has it. 0 means
	// DefaultPriority.
	Priority int `yaml:"priority,omitempty"`
}

// String names the source in messages, like a sources.list line.
func (s *Source) String() string {
	return fmt.Sprintf("%s %s", s.URI, s.Suite)
}

// EffectivePriority returns Priority or DefaultPriority.
func (s *Source) EffectivePriority() int {
	if s.Priority == 0 {
		return DefaultPriority
	}
	return s.Priority
}

// Index is one verified Packages index: a component and architecture of a
// source's suite.
type Index struct {
	Source       *Source
	Component    string
	Architecture string
	// ReleaseSHA256 is the SHA-256 of the InRelease (or Release) file the
	// index was verified against; the lock file records it.
	ReleaseSHA256 string
}

// Package is one binary package stanza of a Packages index.
type Package struct {
	Name          string
	Version       version.Version
	Architecture  string // e.g. amd64, arm64, all
	MultiArch     string // "", "same", "foreign" or "allowed"
	Essential     bool
	Important     bool   // "Important: yes" or "Protected: yes"; apt prefers such providers
	Priority      string // required, important, standard, optional, extra
	Section       string
	SourcePackage string // the source package's name (Source field, or Name)
	PreDepends    dependency.Dependency
	Depends       dependency.Dependency
	Recommends    dependency.Dependency
	Suggests      dependency.Dependency // never installed; apt's package order counts them
	Enhances      dependency.Dependency // likewise
	Conflicts     dependency.Dependency
	Breaks        dependency.Dependency
	Provides      dependency.Dependency
	Replaces      dependency.Dependency
	Filename      string // path of the .deb relative to the source URI
	Size          int64
	SHA256        string // lowercase hex
	InstalledSize int64  // KiB
	Index         *Index // where the stanza came from
}

// ID names the package uniquely: name:arch=version.
func (p *Package) ID() string {
	return fmt.Sprintf("%s:%s=%s", p.Name, p.Architecture, p.Version)
}

// Opener opens a URL for reading. Implementations handle http://, https://
// and file:// (see Transport); tests substitute their own.
type Opener interface {
	Open(ctx context.Context, url string) (io.ReadCloser, error)
}
