package builder

import (
	"fmt"
	"strings"

	"github.com/apt-ostree/apt-ostree-factory/ostree"
	"pault.ag/go/debian/dependency"
	"pault.ag/go/debian/version"
)

// Merger installs unpacked packages into one tree, one after the other, as
// dpkg unpacks them into a new root (dpkg's tarobject, src/main/archives.c):
//
//   - Paths are resolved in the tree built so far: a symlink met on the way
//     to an entry is followed, with chroot semantics (absolute targets start
//     at the tree's root, ".." stops there). This is what puts a bookworm
//     package's ./bin/sh into usr/bin/sh under merged-/usr, whether the
//     links came from SeedMergedUsr or from trixie's base-files.
//   - A directory entry where a directory already is (or a symlink that
//     resolves to one) changes nothing: the first package's metadata stays,
//     as dpkg does not touch existing directories. Directories that no
//     package listed yet (created as parents) take the first listed
//     metadata.
//   - A symlink entry where a real directory is keeps the directory, as dpkg
//     does; Warnings say so. A symlink entry where a symlink to
//     the same directory is changes nothing.
//   - A regular file or symlink where another package's non-directory is
//     is a conflict, unless the new package Replaces the old one (the new
//     file wins), or the old one Replaces the new one (the old file stays),
//     or both are instances of one Multi-Arch: same package with identical
//     content. Two packages that reach the same file through different
//     paths (/bin/x and /usr/bin/x through the /bin symlink) are not seen by
//     dpkg, whose database compares names: the later one wins, with a
//     warning.
//   - A regular file where a directory is, is refused, even with Replaces
//     (where dpkg would move the whole directory, other packages' files
//     included, out of the way). A directory where another package's
//     non-directory is, is refused unless the directory's package Replaces
//     the other one.
//   - Device nodes and FIFOs were left out by Unpack (DebTree.Skipped).
//
// Entry names were checked by Unpack (no "..", no absolute names) and are
// checked again here (a tree loaded from the cache is data on disk), so no
// entry can leave the tree; symlinks cannot make it leave either, as they
// are resolved inside it.
//
// Merged trees share MemFiles with the DebTrees (hardlinks stay hardlinks);
// directories are the Merger's own. When Merge fails the tree is left
// half-merged: the build is expected to stop there.
type Merger struct {
	root      *ostree.MemDir
	opts      MergeOptions
	implicit  map[*ostree.MemDir]bool
	owners    map[string]owner
	dirOwners map[string]*DebTree
	warnings  []string
	replaced  []Replacement
}

// MergeOptions tunes a Merger.
type MergeOptions struct {
	// Replaces reports whether newer's files may replace older's, as the
	// Replaces field does. Nil means DebReplaces.
	Replaces func(newer, older *DebTree) bool
	// Architecture is the native architecture, which "all" packages count
	// as when Replaces relations are matched; "" matches any.
	Architecture string
}

type owner struct {
	pkg  *DebTree
	path string // as pkg lists it
}

// Replacement records a file that two packages ship, where one Replaces the
// other. The configure stage drops Path from the loser's file list, as dpkg
// does.
type Replacement struct {
	Path          string // resolved, e.g. "/usr/bin/foo"
	Winner, Loser *DebTree
	WinnerListed  string // the path as each package lists it
	LoserListed   string
	KeptOlderFile bool // the earlier package Replaces the later one
}

// NewMerger returns a Merger that installs into root; a nil root starts
// an empty tree. Entries already in root belong to no package.
func NewMerger(root *ostree.MemDir, opts MergeOptions) *Merger {
	m := &Merger{
		root: root, opts: opts,
		implicit:  map[*ostree.MemDir]bool{},
		owners:    map[string]owner{},
		dirOwners: map[string]*DebTree{},
	}
	if m.root == nil {
		m.root = ostree.NewMemDir(ostree.FileMeta{Mode: ostree.ModeDir | 0o755})
		m.implicit[m.root] = true
	}
	if m.opts.Replaces == nil {
		arch := opts.Architecture
		m.opts.Replaces = func(newer, older *DebTree) bool { return debReplaces(newer, older, arch) }
	}
	return m
}

// Root is the merged tree.
func (m *Merger) Root() *ostree.MemDir { return m.root }

// Warnings lists what was merged differently from what the packages ask
// for (all of it the way dpkg does it).
func (m *Merger) Warnings() []string { return m.warnings }

// Replacements lists the files taken over through Replaces.
func (m *Merger) Replacements() []Replacement { return m.replaced }

// Owner returns the package whose file or symlink is at p (a resolved
// path such as "/usr/bin/ls") and the path that package lists for it.
func (m *Merger) Owner(p string) (*DebTree, string) {
	o, ok := m.owners[p]
	if !ok {
		return nil, ""
	}
	return o.pkg, o.path
}

// MergedUsrDirs lists the top-level directories that debootstrap makes
// symlinks into /usr on a merged-/usr system of the architecture
// (debootstrap's setup_merged_usr).
func MergedUsrDirs(arch string) []string {
	dirs := []string{"bin", "sbin", "lib"}
	switch {
	case strings.HasPrefix(arch, "hurd-"):
		return nil
	case arch == "amd64", arch == "x32":
		dirs = append(dirs, "lib32", "lib64", "libx32")
	case arch == "i386":
		dirs = append(dirs, "lib64", "libx32")
	case arch == "mips", arch == "mipsel":
		dirs = append(dirs, "lib32", "lib64")
	case strings.HasPrefix(arch, "mips64"), strings.HasPrefix(arch, "mipsn32"):
		dirs = append(dirs, "lib32", "lib64", "libo32")
	case arch == "powerpc", arch == "ppc64el", arch == "sparc":
		dirs = append(dirs, "lib64")
	case arch == "ppc64", arch == "sparc64":
		dirs = append(dirs, "lib32", "lib64")
	case arch == "s390x":
		dirs = append(dirs, "lib32")
	}
	return dirs
}

// SeedMergedUsr creates the merged-/usr layout before any package is
// merged, as debootstrap does for bookworm: /usr/<dir> directories and
// /<dir> -> usr/<dir> symlinks for MergedUsrDirs(arch), owned by no
// package. From trixie on, base-files ships the links itself (bin, lib,
// lib64, sbin on amd64: fewer than debootstrap's set); merge base-files
// before any package that lists a path under /bin, /lib or /sbin instead
// of seeding, or such a path makes a real directory there, which dpkg and
// Merge then keep (with a warning).
func (m *Merger) SeedMergedUsr(arch string) error {
	usr, err := m.walk(m.top(), []string{"usr"}, true, new(int))
	if err != nil {
		return fmt.Errorf("merged-/usr: %w", err)
	}
	for _, d := range MergedUsrDirs(arch) {
		if _, err := m.walk(usr, []string{d}, true, new(int)); err != nil {
			return fmt.Errorf("merged-/usr: %w", err)
		}
		if sub, ok := m.root.Dirs[d]; ok {
			if len(sub.Dirs) > 0 || len(sub.Files) > 0 {
				return fmt.Errorf("merged-/usr: /%s is already a non-empty directory", d)
			}
			delete(m.root.Dirs, d)
		}
		if f, ok := m.root.Files[d]; ok && (!isSymlink(f) || strings.TrimSuffix(f.Header.Symlink, "/") != "usr/"+d) {
			return fmt.Errorf("merged-/usr: /%s is already a %s", d, kind(f))
		}
		m.root.Files[d] = &ostree.MemFile{
			Header: ostree.FileHeader{FileMeta: ostree.FileMeta{Mode: ostree.ModeSymlink | 0o777}, Symlink: "usr/" + d},
			Origin: "merged-/usr link /" + d,
		}
	}
	return nil
}

// Merge installs t's entries in archive order.
func (m *Merger) Merge(t *DebTree) error {
	skipped := make(map[string]bool, len(t.Skipped))
	for _, s := range t.Skipped {
		skipped[s] = true
	}
	for _, lp := range t.Files {
		if skipped[lp] {
			continue
		}
		// Unpack refused names that leave the tree; a tree loaded from the
		// cache is data on disk, so check again.
		p, err := archivePath(treePath(lp))
		if err != nil || listPath(p) != lp {
			return fmt.Errorf("merge %s: %s: not a canonical path inside the tree, refused", t, lp)
		}
		d, f := t.Root.Lookup(p)
		switch {
		case d != nil:
			err = m.mergeDir(t, lp, p, d.Meta)
		case f != nil:
			err = m.mergeFile(t, lp, p, f)
		default:
			err = fmt.Errorf("listed in the package but missing from its tree (damaged cache entry?)")
		}
		if err != nil {
			return fmt.Errorf("merge %s: %s: %w", t, lp, err)
		}
	}
	return nil
}

func (m *Merger) warn(format string, args ...any) {
	m.warnings = append(m.warnings, fmt.Sprintf(format, args...))
}

func (m *Merger) mergeDir(t *DebTree, lp, p string, meta ostree.FileMeta) error {
	if p == "" {
		if m.implicit[m.root] {
			m.root.Meta = meta
			delete(m.implicit, m.root)
			m.dirOwners["/"] = t
		}
		return nil
	}
	parent, name := splitParent(p)
	c, err := m.walk(m.top(), parent, true, new(int))
	if err != nil {
		return err
	}
	d := c.dir()
	at := c.path(name)
	if sub, ok := d.Dirs[name]; ok {
		if m.implicit[sub] {
			sub.Meta = meta
			delete(m.implicit, sub)
		}
		if m.dirOwners[at] == nil {
			m.dirOwners[at] = t
		}
		return nil
	}
	if f, ok := d.Files[name]; ok {
		if isSymlink(f) {
			if _, err := m.walk(c, []string{name}, false, new(int)); err == nil {
				return nil // a symlink to a directory: dpkg keeps it
			}
		}
		o, owned := m.owners[at]
		switch {
		case !owned || o.pkg == t:
		case m.opts.Replaces(t, o.pkg):
			m.replaced = append(m.replaced, Replacement{Path: at, Winner: t, Loser: o.pkg, WinnerListed: lp, LoserListed: o.path})
		default:
			return fmt.Errorf("trying to overwrite %s, which is a %s in package %s, with a directory", at, kind(f), o.pkg)
		}
		delete(d.Files, name)
		delete(m.owners, at)
	}
	d.Dirs[name] = ostree.NewMemDir(meta)
	m.dirOwners[at] = t
	return nil
}

func (m *Merger) mergeFile(t *DebTree, lp, p string, f *ostree.MemFile) error {
	parent, name := splitParent(p)
	c, err := m.walk(m.top(), parent, true, new(int))
	if err != nil {
		return err
	}
	d := c.dir()
	at := c.path(name)
	if _, ok := d.Dirs[name]; ok {
		if isSymlink(f) {
			m.warn("%s: symlink %s -> %s not installed: %s is a directory, which dpkg keeps", t, lp, f.Header.Symlink, at)
			return nil
		}
		by := "no package"
		if o := m.dirOwners[at]; o != nil {
			by = "package " + o.String()
		}
		return fmt.Errorf("trying to overwrite directory %s (from %s) with a %s", at, by, kind(f))
	}
	if old, ok := d.Files[name]; ok {
		if isSymlink(f) && isSymlink(old) && m.sameDirectory(c, old, f) {
			if _, owned := m.owners[at]; !owned {
				m.owners[at] = owner{t, lp}
			}
			return nil
		}
		o, owned := m.owners[at]
		switch {
		case !owned || o.pkg == t:
		case o.pkg.Package == t.Package && t.Field("Multi-Arch") == "same" && o.pkg.Field("Multi-Arch") == "same":
			if !sameFile(old, f) {
				return fmt.Errorf("trying to overwrite shared %s, which is different from other instances of package %s", at, t.Package)
			}
			return nil
		case o.path != lp:
			m.warn("%s: %s replaces %s of %s (the same file through a symlink; dpkg does not notice)", t, lp, o.path, o.pkg)
		case m.opts.Replaces(t, o.pkg):
			m.replaced = append(m.replaced, Replacement{Path: at, Winner: t, Loser: o.pkg, WinnerListed: lp, LoserListed: o.path})
		case m.opts.Replaces(o.pkg, t):
			m.replaced = append(m.replaced, Replacement{Path: at, Winner: o.pkg, Loser: t, WinnerListed: o.path, LoserListed: lp, KeptOlderFile: true})
			return nil
		default:
			return fmt.Errorf("trying to overwrite %s, which is also in package %s", at, o.pkg)
		}
	}
	d.Files[name] = f
	m.owners[at] = owner{t, lp}
	return nil
}

// sameDirectory reports whether two symlinks in the directory at c resolve
// to the same existing directory (dpkg's linktosameexistingdir).
func (m *Merger) sameDirectory(c cursor, a, b *ostree.MemFile) bool {
	da, errA := m.walkTarget(c, a.Header.Symlink)
	db, errB := m.walkTarget(c, b.Header.Symlink)
	return errA == nil && errB == nil && da.dir() == db.dir()
}

func (m *Merger) walkTarget(c cursor, target string) (cursor, error) {
	if strings.HasPrefix(target, "/") {
		c = m.top()
	}
	return m.walk(c, strings.Split(target, "/"), false, new(int))
}

func isSymlink(f *ostree.MemFile) bool {
	return f.Header.Mode&ostree.ModeTypeMask == ostree.ModeSymlink
}

func kind(f *ostree.MemFile) string {
	if isSymlink(f) {
		return "symlink"
	}
	return "file"
}

func sameFile(a, b *ostree.MemFile) bool {
	if a == b {
		return true
	}
	if a.Checksum.IsZero() || b.Checksum.IsZero() {
		return false
	}
	return a.Checksum == b.Checksum
}

func splitParent(p string) ([]string, string) {
	parts := strings.Split(p, "/")
	return parts[:len(parts)-1], parts[len(parts)-1]
}

// cursor is a position in the tree: the chain of directories from the root.
type cursor struct {
	dirs  []*ostree.MemDir
	names []string
}

func (m *Merger) top() cursor { return cursor{dirs: []*ostree.MemDir{m.root}} }

func (c cursor) dir() *ostree.MemDir { return c.dirs[len(c.dirs)-1] }

func (c cursor) push(name string, d *ostree.MemDir) cursor {
	return cursor{
		dirs:  append(c.dirs[:len(c.dirs):len(c.dirs)], d),
		names: append(c.names[:len(c.names):len(c.names)], name),
	}
}

func (c cursor) pop() cursor {
	if len(c.names) == 0 {
		return c // ".." of the root is the root
	}
	return cursor{dirs: c.dirs[:len(c.dirs)-1], names: c.names[:len(c.names)-1]}
}

func (c cursor) path(name string) string {
	if len(c.names) == 0 {
		return "/" + name
	}
	return "/" + strings.Join(c.names, "/") + "/" + name
}

// maxSymlinkHops is Linux's limit on symlinks followed in one lookup.
const maxSymlinkHops = 40

// walk resolves comps as directories from c, following symlinks. With
// create, missing directories are made (root-owned 0755 until a package
// lists them), as `mkdir -p` would through the same symlinks.
func (m *Merger) walk(c cursor, comps []string, create bool, hops *int) (cursor, error) {
	for len(comps) > 0 {
		name := comps[0]
		comps = comps[1:]
		switch name {
		case "", ".":
			continue
		case "..":
			c = c.pop()
			continue
		}
		d := c.dir()
		if sub, ok := d.Dirs[name]; ok {
			c = c.push(name, sub)
			continue
		}
		if f, ok := d.Files[name]; ok {
			if !isSymlink(f) {
				return c, fmt.Errorf("%s is a file, not a directory", c.path(name))
			}
			*hops++
			if *hops > maxSymlinkHops {
				return c, fmt.Errorf("%s: too many levels of symbolic links", c.path(name))
			}
			target := f.Header.Symlink
			if strings.HasPrefix(target, "/") {
				c = m.top()
			}
			comps = append(strings.Split(target, "/"), comps...)
			continue
		}
		if !create {
			return c, fmt.Errorf("%s does not exist", c.path(name))
		}
		sub := ostree.NewMemDir(ostree.FileMeta{Mode: ostree.ModeDir | 0o755})
		m.implicit[sub] = true
		d.Dirs[name] = sub
		c = c.push(name, sub)
	}
	return c, nil
}

// DebReplaces reports whether newer's Replaces field names older, as dpkg's
// does_replace: by package name (not by virtual packages), with version
// and architecture qualifiers; "all" packages count as the architecture
// of the other one.
func DebReplaces(newer, older *DebTree) bool { return debReplaces(newer, older, "") }

func debReplaces(newer, older *DebTree, native string) bool {
	field := newer.Field("Replaces")
	if field == "" {
		return false
	}
	dep, err := dependency.Parse(field)
	if err != nil {
		return false
	}
	for _, rel := range dep.Relations {
		for _, poss := range rel.Possibilities {
			if poss.Name != older.Package {
				continue
			}
			if !replacesArch(newer, older, poss, native) {
				continue
			}
			if poss.Version != nil {
				v, err := version.Parse(older.Version)
				if err != nil || !poss.Version.SatisfiedBy(v) {
					continue
				}
			}
			return true
		}
	}
	return false
}

// replacesArch is dpkg's deparchsatisfied for a Replaces relation.
func replacesArch(newer, older *DebTree, poss dependency.Possibility, native string) bool {
	qual := ""
	if poss.Arch != nil {
		qual = poss.Arch.String()
	}
	if qual == "" && older.Field("Multi-Arch") == "foreign" {
		return true
	}
	if qual == "any" {
		return true
	}
	want := qual
	if want == "" {
		want = newer.Architecture
	}
	norm := func(a string) string {
		if a == "all" {
			return native
		}
		return a
	}
	want, have := norm(want), norm(older.Architecture)
	if want == "" || have == "" {
		return true // "all" without a known native architecture
	}
	return want == have
}
