package ostree

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// CheckoutOptions controls Checkout.
type CheckoutOptions struct {
	Subpath string // check out only this directory of the commit ("" or "/" for all)
	// Owners applies uid/gid from the commit (requires privilege). By
	// default files belong to the invoking user and only modes are kept.
	Owners bool
	// Xattrs applies extended attributes from the commit.
	Xattrs  bool
	Workers int
}

// Checkout writes the tree of commit c to dest, which must not exist. It
// builds the tree beside dest and renames it into place, so a failure
// leaves nothing at dest.
func (r *Repo) Checkout(ctx context.Context, c Checksum, dest string, opts CheckoutOptions) error {
	if err := r.requireArchive(); err != nil {
		return err
	}
	if _, err := os.Lstat(dest); err == nil {
		return fmt.Errorf("checkout destination %s already exists", dest)
	}
	sub := path.Clean("/" + opts.Subpath)
	tree, meta, file, err := r.lookup(c, sub)
	if err != nil {
		return err
	}
	if file != nil {
		return fmt.Errorf("commit %s: %s is not a directory", c, sub)
	}
	return r.checkoutDir(ctx, tree, meta, dest, opts)
}

// CheckoutDirTree writes the directory tree with the given dirtree and
// dirmeta checksums to dest, which must not exist, like Checkout.
func (r *Repo) CheckoutDirTree(ctx context.Context, tree, meta Checksum, dest string, opts CheckoutOptions) error {
	if err := r.requireArchive(); err != nil {
		return err
	}
	if _, err := os.Lstat(dest); err == nil {
		return fmt.Errorf("checkout destination %s already exists", dest)
	}
	return r.checkoutDir(ctx, tree, meta, dest, opts)
}

func (r *Repo) checkoutDir(ctx context.Context, tree, meta Checksum, dest string, opts CheckoutOptions) error {
	parent := filepath.Dir(filepath.Clean(dest))
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dest)+".checkout-")
	if err != nil {
		return err
	}
	co := &checkouter{repo: r, opts: opts}
	err = co.run(ctx, tree, meta, tmp)
	if err == nil {
		err = os.Rename(tmp, dest)
	}
	if err != nil {
		makeWritable(tmp)
		os.RemoveAll(tmp)
		return err
	}
	return nil
}

// makeWritable lets RemoveAll clean a half-made checkout with read-only dirs.
func makeWritable(dir string) {
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(p, 0o700)
		}
		return nil
	})
}

type checkouter struct {
	repo *Repo
	opts CheckoutOptions
}

type fileJob struct {
	sum  Checksum
	dest string
}

type dirFix struct {
	path string
	meta FileMeta
	// existing: the directory was there before (CheckoutUpdate), so
	// extended attributes meta lacks are removed.
	existing bool
}

func (co *checkouter) run(ctx context.Context, tree, meta Checksum, root string) error {
	var files []fileJob
	var dirs []dirFix
	if err := co.walk(tree, meta, root, true, &files, &dirs); err != nil {
		return err
	}
	return co.write(ctx, files, dirs)
}

// CheckoutUpdate turns dest, a checkout of the directory tree (fromTree,
// fromMeta), into a checkout of (toTree, toMeta): it writes the files that
// are new or differ, removes what to lacks, and fixes directory metadata,
// leaving subtrees whose checksums are equal untouched. It returns the
// number of entries written or removed. On error dest is in between and
// should be discarded.
func (r *Repo) CheckoutUpdate(ctx context.Context, fromTree, fromMeta, toTree, toMeta Checksum, dest string, opts CheckoutOptions) (int, error) {
	if err := r.requireArchive(); err != nil {
		return 0, err
	}
	if fi, err := os.Lstat(dest); err != nil {
		return 0, err
	} else if !fi.IsDir() {
		return 0, fmt.Errorf("checkout update: %s is not a directory", dest)
	}
	co := &checkouter{repo: r, opts: opts}
	var files []fileJob
	var dirs []dirFix
	removed := 0
	var update func(ft, fm, tt, tm Checksum, dir string) error
	update = func(ft, fm, tt, tm Checksum, dir string) error {
		if ft == tt && fm == tm {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if fm != tm {
			m, err := r.ReadDirMeta(tm)
			if err != nil {
				return err
			}
			dirs = append(dirs, dirFix{dir, m, true})
		}
		if ft == tt {
			return nil
		}
		from, err := r.ReadDirTree(ft)
		if err != nil {
			return err
		}
		to, err := r.ReadDirTree(tt)
		if err != nil {
			return err
		}
		oldFiles := map[string]Checksum{}
		for _, f := range from.Files {
			oldFiles[f.Name] = f.Checksum
		}
		oldDirs := map[string]DirTreeDir{}
		for _, d := range from.Dirs {
			oldDirs[d.Name] = d
		}
		keep := map[string]bool{}
		// remove deletes an entry of the old tree (a replaced one is
		// counted as written, a vanished one by the caller).
		remove := func(name string) error {
			p := filepath.Join(dir, name)
			if _, isDir := oldDirs[name]; isDir {
				makeWritable(p)
				return os.RemoveAll(p)
			}
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			return nil
		}
		for _, f := range to.Files {
			keep[f.Name] = true
			if c, ok := oldFiles[f.Name]; ok && c == f.Checksum {
				continue
			}
			if _, ok := oldFiles[f.Name]; ok || oldDirs[f.Name].Name != "" {
				if err := remove(f.Name); err != nil {
					return err
				}
			}
			files = append(files, fileJob{f.Checksum, filepath.Join(dir, f.Name)})
		}
		for _, d := range to.Dirs {
			keep[d.Name] = true
			if od, ok := oldDirs[d.Name]; ok {
				if err := update(od.Tree, od.Meta, d.Tree, d.Meta, filepath.Join(dir, d.Name)); err != nil {
					return err
				}
				continue
			}
			if _, ok := oldFiles[d.Name]; ok {
				if err := remove(d.Name); err != nil {
					return err
				}
			}
			if err := co.walk(d.Tree, d.Meta, filepath.Join(dir, d.Name), false, &files, &dirs); err != nil {
				return err
			}
		}
		for _, f := range from.Files {
			if !keep[f.Name] {
				removed++
				if err := remove(f.Name); err != nil {
					return err
				}
			}
		}
		for _, d := range from.Dirs {
			if !keep[d.Name] {
				removed++
				if err := remove(d.Name); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := update(fromTree, fromMeta, toTree, toMeta, dest); err != nil {
		return 0, err
	}
	return len(files) + removed, co.write(ctx, files, dirs)
}

// write writes the files in parallel, then applies the directories'
// metadata.
func (co *checkouter) write(ctx context.Context, files []fileJob, dirs []dirFix) error {
	workers := co.opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	jobs := make(chan fileJob)
	errc := make(chan error, workers)
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				if err := co.writeFile(j); err != nil {
					errc <- err
					cancel()
					return
				}
			}
		}()
	}
feed:
	for _, j := range files {
		select {
		case jobs <- j:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// Directory modes last, deepest first, so read-only dirs were writable
	// while being filled.
	for i := len(dirs) - 1; i >= 0; i-- {
		if dirs[i].existing && co.opts.Xattrs {
			if err := removeOtherXattrs(dirs[i].path, dirs[i].meta.Xattrs); err != nil {
				return err
			}
		}
		if err := co.applyMeta(dirs[i].path, dirs[i].meta, false); err != nil {
			return err
		}
	}
	return nil
}

func (co *checkouter) walk(tree, meta Checksum, dir string, isRoot bool, files *[]fileJob, dirs *[]dirFix) error {
	m, err := co.repo.ReadDirMeta(meta)
	if err != nil {
		return err
	}
	if !isRoot {
		if err := os.Mkdir(dir, 0o700); err != nil {
			return err
		}
	}
	*dirs = append(*dirs, dirFix{dir, m, false})
	dt, err := co.repo.ReadDirTree(tree)
	if err != nil {
		return err
	}
	for _, f := range dt.Files {
		*files = append(*files, fileJob{f.Checksum, filepath.Join(dir, f.Name)})
	}
	for _, d := range dt.Dirs {
		if err := co.walk(d.Tree, d.Meta, filepath.Join(dir, d.Name), false, files, dirs); err != nil {
			return err
		}
	}
	return nil
}

func (co *checkouter) writeFile(j fileJob) error {
	h, rc, err := co.repo.OpenContent(j.sum)
	if err != nil {
		return err
	}
	defer rc.Close()
	if h.Mode&ModeTypeMask == ModeSymlink {
		if _, err := io.Copy(io.Discard, rc); err != nil { // verifies the checksum
			return err
		}
		if err := os.Symlink(h.Symlink, j.dest); err != nil {
			return err
		}
		return co.applyMeta(j.dest, h.FileMeta, true)
	}
	f, err := os.OpenFile(j.dest, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	bp := copyBufPool.Get().(*[]byte)
	_, err = io.CopyBuffer(f, rc, *bp)
	copyBufPool.Put(bp)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%s: %w", j.dest, err)
	}
	return co.applyMeta(j.dest, h.FileMeta, false)
}

func (co *checkouter) applyMeta(p string, m FileMeta, symlink bool) error {
	if co.opts.Owners {
		if err := os.Lchown(p, int(m.UID), int(m.GID)); err != nil {
			return err
		}
	}
	if co.opts.Xattrs {
		for _, x := range m.Xattrs {
			if err := unix.Lsetxattr(p, x.Name, x.Value, 0); err != nil {
				return &fs.PathError{Op: "lsetxattr " + x.Name, Path: p, Err: err}
			}
		}
	}
	if symlink {
		return nil
	}
	// chmod after chown: chown clears setuid/setgid bits.
	if err := os.Chmod(p, fileModeFromUnix(m.Mode)); err != nil {
		return err
	}
	return nil
}

// removeOtherXattrs removes the extended attributes of p not named in keep.
func removeOtherXattrs(p string, keep []Xattr) error {
	have, err := readXattrs(p)
	if err != nil {
		return err
	}
	wanted := map[string]bool{}
	for _, x := range keep {
		wanted[x.Name] = true
	}
	for _, x := range have {
		n := x.Name
		if wanted[n] {
			continue
		}
		if err := unix.Lremovexattr(p, n); err != nil && err != unix.ENODATA {
			return &fs.PathError{Op: "lremovexattr " + n, Path: p, Err: err}
		}
	}
	return nil
}

func fileModeFromUnix(m uint32) os.FileMode {
	mode := os.FileMode(m & 0o777)
	if m&unix.S_ISUID != 0 {
		mode |= os.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		mode |= os.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		mode |= os.ModeSticky
	}
	return mode
}
