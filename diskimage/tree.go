package diskimage

import (
	"fmt"
	"io"
	"path"
	"sort"
	"strings"

	"github.com/apt-ostree/apt-ostree-factory/ostree"
)

// Kind is the type of a tree inode.
type Kind byte

const (
	KindDir Kind = iota
	KindFile
	KindSymlink
)

// Inode is one file, directory or symlink of a filesystem to be written.
// A file or symlink listed in several directories is one inode with
// several names (a hard link), as OSTree's bare repository and the
// deployment checkout share their files.
type Inode struct {
	Kind   Kind
	Mode   uint32 // permission bits (07777)
	UID    uint32
	GID    uint32
	Mtime  int64
	Xattrs []ostree.Xattr
	// Immutable sets the inode's immutable flag (ostree marks deployment
	// roots so).
	Immutable bool

	// Files.
	Size int64
	Open func() (io.ReadCloser, error)
	// Symlinks.
	Target string
	// Directories: entries by name.
	Entries map[string]*Inode
}

// Tree is a filesystem tree built in memory; file contents are read only
// when the filesystem is written.
type Tree struct {
	Root *Inode
}

// NewTree makes a tree whose root directory has the given metadata.
func NewTree(mode, uid, gid uint32, mtime int64) *Tree {
	return &Tree{Root: &Inode{Kind: KindDir, Mode: mode, UID: uid, GID: gid, Mtime: mtime, Entries: map[string]*Inode{}}}
}

// Lookup returns the inode at p (absolute, "/" is the root), or nil.
func (t *Tree) Lookup(p string) *Inode {
	n := t.Root
	for _, name := range splitTreePath(p) {
		if n == nil || n.Kind != KindDir {
			return nil
		}
		n = n.Entries[name]
	}
	return n
}

func splitTreePath(p string) []string {
	p = strings.Trim(path.Clean("/"+p), "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

// Add puts n at p, whose parent directory must exist. Adding a name that
// exists is an error.
func (t *Tree) Add(p string, n *Inode) error {
	dir, name := path.Split(path.Clean("/" + p))
	parent := t.Lookup(dir)
	if parent == nil || parent.Kind != KindDir {
		return fmt.Errorf("%s: parent directory %s does not exist", p, dir)
	}
	if name == "" {
		return fmt.Errorf("%s: cannot add the root", p)
	}
	if _, dup := parent.Entries[name]; dup {
		return fmt.Errorf("%s: already exists", p)
	}
	if n.Kind == KindDir && n.Entries == nil {
		n.Entries = map[string]*Inode{}
	}
	parent.Entries[name] = n
	return nil
}

// Put is Add that replaces an existing non-directory entry.
func (t *Tree) Put(p string, n *Inode) error {
	dir, name := path.Split(path.Clean("/" + p))
	if parent := t.Lookup(dir); parent != nil && parent.Kind == KindDir {
		if old := parent.Entries[name]; old != nil && old.Kind != KindDir {
			delete(parent.Entries, name)
		}
	}
	return t.Add(p, n)
}

// Dir makes a directory inode.
func Dir(mode, uid, gid uint32, mtime int64) *Inode {
	return &Inode{Kind: KindDir, Mode: mode, UID: uid, GID: gid, Mtime: mtime, Entries: map[string]*Inode{}}
}

// Symlink makes a symlink inode owned by root.
func Symlink(target string, mtime int64) *Inode {
	return &Inode{Kind: KindSymlink, Mode: 0o777, Target: target, Mtime: mtime}
}

// Bytes makes a regular file inode owned by root with the given content.
func Bytes(mode uint32, content []byte, mtime int64) *Inode {
	return &Inode{Kind: KindFile, Mode: mode, Mtime: mtime, Size: int64(len(content)),
		Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(string(content))), nil }}
}

// MkdirAll creates the directories of p that are missing, with the given
// metadata.
func (t *Tree) MkdirAll(p string, mode uint32, mtime int64) (*Inode, error) {
	n := t.Root
	cur := ""
	for _, name := range splitTreePath(p) {
		cur += "/" + name
		next := n.Entries[name]
		if next == nil {
			next = Dir(mode, 0, 0, mtime)
			n.Entries[name] = next
		} else if next.Kind != KindDir {
			return nil, fmt.Errorf("%s: not a directory", cur)
		}
		n = next
	}
	return n, nil
}

// Walk visits every name in the tree (directories before their entries,
// entries sorted by name); an inode with several names is visited once
// per name.
func (t *Tree) Walk(fn func(p string, n *Inode) error) error {
	var walk func(p string, n *Inode) error
	walk = func(p string, n *Inode) error {
		if err := fn(p, n); err != nil {
			return err
		}
		if n.Kind != KindDir {
			return nil
		}
		for _, name := range sortedNames(n) {
			if err := walk(path.Join(p, name), n.Entries[name]); err != nil {
				return err
			}
		}
		return nil
	}
	return walk("/", t.Root)
}

func sortedNames(n *Inode) []string {
	names := make([]string, 0, len(n.Entries))
	for name := range n.Entries {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}
