package ostree

import (
	"fmt"
	"path"
	"sort"
)

// TreeEntry is one path of a committed tree, as listed by Walk.
type TreeEntry struct {
	Path     string // absolute within the commit, e.g. "/usr/bin/sh"
	Meta     FileMeta
	Size     uint64 // content size of regular files
	Symlink  string
	Checksum Checksum // content object, or dirtree for directories
	MetaSum  Checksum // dirmeta, for directories
}

// IsDir reports whether the entry is a directory.
func (e *TreeEntry) IsDir() bool { return e.Meta.Mode&ModeTypeMask == ModeDir }

// Walk visits the entry at p in commit c and, if it is a directory, its
// children (all descendants when recursive) in `ostree ls` order: a
// directory's files sorted by name, then its subdirectories, each followed
// by its contents. Content objects are opened to read their headers.
func (r *Repo) Walk(c Checksum, p string, recursive bool, fn func(*TreeEntry) error) error {
	p = path.Clean("/" + p)
	tree, meta, file, err := r.lookup(c, p)
	if err != nil {
		return err
	}
	if file != nil {
		e, err := r.fileEntry(p, *file)
		if err != nil {
			return err
		}
		return fn(e)
	}
	return r.walkDir(p, tree, meta, true, recursive, fn)
}

func (r *Repo) fileEntry(p string, c Checksum) (*TreeEntry, error) {
	h, rc, err := r.OpenContent(c)
	if err != nil {
		return nil, err
	}
	rc.Close()
	return &TreeEntry{Path: p, Meta: h.FileMeta, Size: h.Size, Symlink: h.Symlink, Checksum: c}, nil
}

func (r *Repo) walkDir(p string, tree, meta Checksum, top, recursive bool, fn func(*TreeEntry) error) error {
	m, err := r.ReadDirMeta(meta)
	if err != nil {
		return err
	}
	if err := fn(&TreeEntry{Path: p, Meta: m, Checksum: tree, MetaSum: meta}); err != nil {
		return err
	}
	if !top && !recursive {
		return nil
	}
	dt, err := r.ReadDirTree(tree)
	if err != nil {
		return err
	}
	// Files first, then subdirectories (each followed by its contents), as
	// ostree ls prints them.
	for _, f := range dt.Files {
		e, err := r.fileEntry(path.Join(p, f.Name), f.Checksum)
		if err != nil {
			return err
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	for _, d := range dt.Dirs {
		if err := r.walkDir(path.Join(p, d.Name), d.Tree, d.Meta, false, recursive, fn); err != nil {
			return err
		}
	}
	return nil
}

// lookup finds path p (absolute, clean) in commit c: a directory's dirtree
// and dirmeta, or a file's content checksum (file non-nil). Dirtrees are
// sorted, so entries are found by binary search.
func (r *Repo) lookup(c Checksum, p string) (tree, meta Checksum, file *Checksum, err error) {
	cm, err := r.ReadCommit(c)
	if err != nil {
		return tree, meta, nil, err
	}
	tree, meta = cm.RootTree, cm.RootMeta
	for _, name := range splitPath(p) {
		if file != nil {
			return tree, meta, nil, fmt.Errorf("%s: not a directory in commit %s", p, c)
		}
		dt, err := r.ReadDirTree(tree)
		if err != nil {
			return tree, meta, nil, err
		}
		if i := sort.Search(len(dt.Dirs), func(i int) bool { return dt.Dirs[i].Name >= name }); i < len(dt.Dirs) && dt.Dirs[i].Name == name {
			tree, meta = dt.Dirs[i].Tree, dt.Dirs[i].Meta
			continue
		}
		if i := sort.Search(len(dt.Files), func(i int) bool { return dt.Files[i].Name >= name }); i < len(dt.Files) && dt.Files[i].Name == name {
			file = &dt.Files[i].Checksum
			continue
		}
		return tree, meta, nil, fmt.Errorf("%s: no such file or directory in commit %s", p, c)
	}
	return tree, meta, file, nil
}
