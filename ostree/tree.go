package ostree

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// MemDir is a directory of an in-memory tree to commit. Ownership, mode and
// xattrs are data here: nothing on the host needs to carry them.
type MemDir struct {
	Meta  FileMeta
	Dirs  map[string]*MemDir
	Files map[string]*MemFile
}

// NewMemDir returns an empty directory with the given metadata.
func NewMemDir(meta FileMeta) *MemDir {
	return &MemDir{Meta: meta, Dirs: map[string]*MemDir{}, Files: map[string]*MemFile{}}
}

// MemFile is a regular file or symlink of an in-memory tree. Its content
// comes from exactly one of: Checksum (an object already in the repository),
// Data, or Open (re-openable content, read up to twice). Hardlinked paths
// share one *MemFile, so its content is stored once.
type MemFile struct {
	Header   FileHeader
	Checksum Checksum
	Data     []byte
	Open     func() (io.ReadCloser, error)
	// Origin names the file in errors (a host path, a package member).
	Origin string
}

// Lookup returns the entry at a slash-separated path relative to d.
func (d *MemDir) Lookup(p string) (*MemDir, *MemFile) {
	cur := d
	parts := splitPath(p)
	for i, name := range parts {
		if i == len(parts)-1 {
			if f, ok := cur.Files[name]; ok {
				return nil, f
			}
		}
		next, ok := cur.Dirs[name]
		if !ok {
			return nil, nil
		}
		cur = next
	}
	return cur, nil
}

func splitPath(p string) []string {
	p = strings.Trim(path.Clean("/"+p), "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

// MkdirAll returns the directory at p, creating missing ones with meta.
func (d *MemDir) MkdirAll(p string, meta FileMeta) (*MemDir, error) {
	cur := d
	for _, name := range splitPath(p) {
		if err := ValidName(name); err != nil {
			return nil, err
		}
		if _, isFile := cur.Files[name]; isFile {
			return nil, fmt.Errorf("%s: %q is a file, not a directory", p, name)
		}
		next, ok := cur.Dirs[name]
		if !ok {
			next = NewMemDir(meta)
			cur.Dirs[name] = next
		}
		cur = next
	}
	return cur, nil
}

// AddFile puts f at p, replacing a file there; the parent must exist.
func (d *MemDir) AddFile(p string, f *MemFile) error {
	parts := splitPath(p)
	if len(parts) == 0 {
		return fmt.Errorf("cannot add a file at the root")
	}
	dir := d
	if len(parts) > 1 {
		pd, _ := d.Lookup(strings.Join(parts[:len(parts)-1], "/"))
		if pd == nil {
			return fmt.Errorf("%s: parent directory does not exist", p)
		}
		dir = pd
	}
	name := parts[len(parts)-1]
	if err := ValidName(name); err != nil {
		return err
	}
	if _, ok := dir.Dirs[name]; ok {
		return fmt.Errorf("%s: a directory exists there", p)
	}
	dir.Files[name] = f
	return nil
}

// DirOptions controls how a host directory is read into a MemDir.
type DirOptions struct {
	OwnerUID, OwnerGID *uint32 // override the owner of every entry, as ostree --owner-uid/--owner-gid
	NoXattrs           bool    // ignore extended attributes
	// Known, when set, is asked for each regular file (path relative to
	// the root, starting with "/"); when it returns true the file is
	// taken to be that content object, already in the repository, and is
	// not read again. Callers use it for trees they checked out
	// themselves and whose inodes did not change since.
	Known func(rel string, st *unix.Stat_t) (Checksum, bool)
}

type inodeKey struct{ dev, ino uint64 }

// ReadDir builds an in-memory tree from a directory on disk, taking owner,
// mode and xattrs from lstat and the filesystem, as `ostree commit DIR`
// does. File content is read later, when the tree is written.
func ReadDir(root string, opts DirOptions) (*MemDir, error) {
	links := map[inodeKey]*MemFile{}
	meta, st, err := hostMeta(root, opts)
	if err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil, fmt.Errorf("%s: not a directory", root)
	}
	d := NewMemDir(meta)
	if err := readDirInto(d, root, "/", opts, links); err != nil {
		return nil, err
	}
	return d, nil
}

func readDirInto(d *MemDir, dir, rel string, opts DirOptions, links map[inodeKey]*MemFile) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	sort.Strings(names)
	for _, name := range names {
		p := filepath.Join(dir, name)
		if err := ValidName(name); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		meta, st, err := hostMeta(p, opts)
		if err != nil {
			return err
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			sub := NewMemDir(meta)
			d.Dirs[name] = sub
			if err := readDirInto(sub, p, path.Join(rel, name), opts, links); err != nil {
				return err
			}
		case unix.S_IFREG:
			key := inodeKey{uint64(st.Dev), st.Ino}
			if st.Nlink > 1 {
				if mf, ok := links[key]; ok {
					d.Files[name] = mf
					continue
				}
			}
			mf := &MemFile{Header: FileHeader{FileMeta: meta, Size: uint64(st.Size)}, Origin: p, Open: openFile(p)}
			if opts.Known != nil {
				if sum, ok := opts.Known(path.Join(rel, name), st); ok {
					mf.Checksum, mf.Open = sum, nil
				}
			}
			if st.Nlink > 1 {
				links[key] = mf
			}
			d.Files[name] = mf
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			d.Files[name] = &MemFile{Header: FileHeader{FileMeta: meta, Symlink: target}, Origin: p}
		default:
			return fmt.Errorf("%s: unsupported file type %#o (OSTree stores only regular files, symlinks and directories)", p, st.Mode&unix.S_IFMT)
		}
	}
	return nil
}

func openFile(p string) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) {
		return os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
}

func hostMeta(p string, opts DirOptions) (FileMeta, *unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return FileMeta{}, nil, &fs.PathError{Op: "lstat", Path: p, Err: err}
	}
	m := FileMeta{UID: st.Uid, GID: st.Gid, Mode: st.Mode}
	if opts.OwnerUID != nil {
		m.UID = *opts.OwnerUID
	}
	if opts.OwnerGID != nil {
		m.GID = *opts.OwnerGID
	}
	if !opts.NoXattrs {
		xs, err := readXattrs(p)
		if err != nil {
			return FileMeta{}, nil, err
		}
		m.Xattrs = xs
	}
	return m, &st, nil
}

// readXattrs lists all extended attributes of p without following symlinks.
func readXattrs(p string) ([]Xattr, error) {
	buf := make([]byte, 1024)
	var n int
	var err error
	for {
		n, err = unix.Llistxattr(p, buf)
		if errors.Is(err, unix.ERANGE) {
			buf = make([]byte, len(buf)*4)
			continue
		}
		break
	}
	if errors.Is(err, unix.ENOTSUP) {
		return nil, nil
	}
	if err != nil {
		return nil, &fs.PathError{Op: "llistxattr", Path: p, Err: err}
	}
	var out []Xattr
	for _, name := range bytes.Split(buf[:n], []byte{0}) {
		if len(name) == 0 {
			continue
		}
		val, err := getXattr(p, string(name))
		if err != nil {
			return nil, err
		}
		if len(val) == 0 {
			// ostree commit leaves out xattrs with empty values; so do we,
			// or the checksums would differ.
			continue
		}
		out = append(out, Xattr{Name: string(name), Value: val})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func getXattr(p, name string) ([]byte, error) {
	size := 256
	for {
		buf := make([]byte, size)
		n, err := unix.Lgetxattr(p, name, buf)
		if errors.Is(err, unix.ERANGE) {
			size *= 4
			if size > 64<<20 {
				return nil, &fs.PathError{Op: "lgetxattr " + name, Path: p, Err: err}
			}
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "lgetxattr " + name, Path: p, Err: err}
		}
		return buf[:n], nil
	}
}
