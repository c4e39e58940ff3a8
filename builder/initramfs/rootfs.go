package initramfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// targetFS reads files of the target tree. Every path is interpreted inside
// the tree: absolute symlink targets are relative to the tree's root and ".."
// never leaves it, whatever the host has at the same place.
type targetFS struct {
	root string
}

// resolved is one step of a resolution: a symlink met on the way (canonical
// location and its target), or the final object.
type resolved struct {
	canonical string      // path inside the tree, no symlinks in it
	links     [][2]string // symlinks met, in order: {canonical path, target}
	info      fs.FileInfo // lstat of the final object
}

// resolve follows p inside the tree. It fails with an error wrapping
// fs.ErrNotExist when some component is missing.
func (t *targetFS) resolve(p string) (*resolved, error) {
	todo := splitRaw(p)
	var cur []string
	var links [][2]string
	hops := 0
	var info fs.FileInfo
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		if c == ".." {
			if len(cur) > 0 {
				cur = cur[:len(cur)-1]
			}
			info = nil
			continue
		}
		cand := strings.Join(append(append([]string(nil), cur...), c), "/")
		fi, err := os.Lstat(filepath.Join(t.root, filepath.FromSlash(cand)))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("/%s: %w", cand, fs.ErrNotExist)
			}
			return nil, err
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			hops++
			if hops > maxSymlinkHops {
				return nil, fmt.Errorf("/%s: too many levels of symbolic links", p)
			}
			target, err := os.Readlink(filepath.Join(t.root, filepath.FromSlash(cand)))
			if err != nil {
				return nil, err
			}
			links = append(links, [2]string{cand, target})
			if strings.HasPrefix(target, "/") {
				cur = nil
			}
			todo = append(splitRaw(target), todo...)
			info = nil
			continue
		}
		if !fi.IsDir() && len(todo) > 0 {
			return nil, fmt.Errorf("/%s: not a directory", cand)
		}
		cur = append(cur, c)
		info = fi
	}
	canonical := strings.Join(cur, "/")
	if info == nil {
		fi, err := os.Lstat(filepath.Join(t.root, filepath.FromSlash(canonical)))
		if err != nil {
			return nil, err
		}
		info = fi
	}
	return &resolved{canonical: canonical, links: links, info: info}, nil
}

// exists reports whether p resolves to an object in the tree.
func (t *targetFS) exists(p string) bool {
	_, err := t.resolve(p)
	return err == nil
}

// isSymlink reports whether p itself (not followed) is a symlink, and its target.
func (t *targetFS) isSymlink(p string) (string, bool) {
	full := filepath.Join(t.root, filepath.FromSlash(clean(p)))
	fi, err := os.Lstat(full)
	if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		return "", false
	}
	target, err := os.Readlink(full)
	if err != nil {
		return "", false
	}
	return target, true
}

// readFile reads a file of the tree, following symlinks inside it.
func (t *targetFS) readFile(p string) ([]byte, error) {
	r, err := t.resolve(p)
	if err != nil {
		return nil, err
	}
	if !r.info.Mode().IsRegular() {
		return nil, fmt.Errorf("/%s: not a regular file", r.canonical)
	}
	return os.ReadFile(filepath.Join(t.root, filepath.FromSlash(r.canonical)))
}

// copyInto adds p of the target to the initramfs at the same path: every
// symlink met on the way is recreated, then the final regular file. It
// returns the canonical path of the file.
func (t *targetFS) copyInto(tr *tree, p string) (string, error) {
	r, err := t.resolve(p)
	if err != nil {
		return "", err
	}
	for _, l := range r.links {
		if _, err := tr.addSymlink(l[0], l[1]); err != nil {
			return "", err
		}
	}
	switch {
	case r.info.Mode().IsRegular():
		data, err := os.ReadFile(filepath.Join(t.root, filepath.FromSlash(r.canonical)))
		if err != nil {
			return "", err
		}
		if _, err := tr.addFile(r.canonical, uint64(r.info.Mode().Perm()), data); err != nil {
			return "", err
		}
	case r.info.IsDir():
		if _, err := tr.mkdirAll(r.canonical, 0o755); err != nil {
			return "", err
		}
	default:
		return "", fmt.Errorf("/%s: unsupported file type %v", r.canonical, r.info.Mode().Type())
	}
	return r.canonical, nil
}

// readDir lists the names in a directory of the tree (canonical path).
func readDir(root, canonical string) ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(root, filepath.FromSlash(canonical)))
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names, nil
}
