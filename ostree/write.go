package ostree

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apt-ostree/apt-ostree-factory/ostree/gvariant"
)

// smallFileLimit: content up to this size is read once into memory, hashed,
// and compressed only if the object is new. Larger files are hashed in a
// first pass and re-read to compress, so unchanged large files cost no
// compression and no memory.
const smallFileLimit = 1 << 20

var smallBufPool = sync.Pool{New: func() any { b := make([]byte, smallFileLimit); return &b }}

// WriteStats counts what a tree write did.
type WriteStats struct {
	Files          int   // distinct content objects in the tree
	FilesWritten   int   // content objects newly stored
	ContentBytes   int64 // uncompressed bytes of distinct content
	MetadataObject int   // dirtree + dirmeta objects referenced
}

// WriteTreeOptions tunes WriteTree.
type WriteTreeOptions struct {
	Workers  int                   // parallel workers; 0 means GOMAXPROCS
	Progress func(done, total int) // called after each content object (from worker goroutines)
}

// WriteTree stores every object of an in-memory tree and returns the root
// dirtree and dirmeta checksums. Content objects are hashed and compressed
// in parallel; objects already in the repository are not rewritten. Each
// MemFile's Checksum is filled in.
func (r *Repo) WriteTree(ctx context.Context, root *MemDir, opts WriteTreeOptions) (tree, meta Checksum, stats WriteStats, err error) {
	if err := r.requireArchive(); err != nil {
		return tree, meta, stats, err
	}
	var jobs []*MemFile
	seen := map[*MemFile]bool{}
	var collect func(d *MemDir)
	collect = func(d *MemDir) {
		for _, f := range d.Files {
			if !seen[f] {
				seen[f] = true
				jobs = append(jobs, f)
			}
		}
		for _, sub := range d.Dirs {
			collect(sub)
		}
	}
	collect(root)

	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next     atomic.Int64
		done     atomic.Int64
		written  atomic.Int64
		bytesIn  atomic.Int64
		firstErr error
		errOnce  sync.Once
		wg       sync.WaitGroup
		inflight sync.Map // Checksum -> struct{}: one writer per new object
	)
	// Large files first, so the longest jobs do not start last.
	sort.SliceStable(jobs, func(i, j int) bool { return jobs[i].Header.Size > jobs[j].Header.Size })
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(jobs) {
					return
				}
				f := jobs[i]
				wrote, err := r.storeFile(f, &inflight)
				if err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
				if wrote {
					written.Add(1)
				}
				bytesIn.Add(int64(f.Header.Size))
				n := int(done.Add(1))
				if opts.Progress != nil {
					opts.Progress(n, len(jobs))
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return tree, meta, stats, firstErr
	}
	if err := ctx.Err(); err != nil {
		return tree, meta, stats, err
	}
	stats.Files = len(jobs)
	stats.FilesWritten = int(written.Load())
	stats.ContentBytes = bytesIn.Load()

	mw := metaWriter{repo: r, dirmetas: map[string]Checksum{}, seen: map[Checksum]bool{}}
	tree, meta, err = mw.writeDir(root, "/")
	stats.MetadataObject = len(mw.seen)
	return tree, meta, stats, err
}

// storeFile computes f's checksum and stores its object if it is new.
func (r *Repo) storeFile(f *MemFile, inflight *sync.Map) (bool, error) {
	h := f.Header
	origin := f.Origin
	if origin == "" {
		origin = "file"
	}
	if h.Mode&ModeTypeMask != ModeRegular {
		h.Size = 0
		c, err := ContentChecksum(h, nil)
		if err != nil {
			return false, fmt.Errorf("%s: %w", origin, err)
		}
		f.Checksum = c
		return r.storeIfNew(c, inflight, func() error { return r.WriteContentKnown(c, h, bytes.NewReader(nil)) })
	}
	if !f.Checksum.IsZero() && f.Data == nil && f.Open == nil {
		ok, err := r.HasObject(f.Checksum, ObjectFile)
		if err != nil {
			return false, err
		}
		if !ok {
			return false, fmt.Errorf("%s: content object %s is not in the repository", origin, f.Checksum)
		}
		return false, nil
	}
	data := f.Data
	if data == nil && f.Open == nil && h.Size == 0 {
		data = []byte{}
	}
	if data == nil && f.Open != nil && h.Size <= smallFileLimit {
		rc, err := f.Open()
		if err != nil {
			return false, err
		}
		bp := smallBufPool.Get().(*[]byte)
		defer smallBufPool.Put(bp)
		data = (*bp)[:h.Size]
		_, err = io.ReadFull(rc, data)
		if err == nil {
			var one [1]byte
			if k, _ := rc.Read(one[:]); k != 0 {
				err = fmt.Errorf("file grew while being read")
			}
		}
		rc.Close()
		if err != nil {
			return false, fmt.Errorf("%s: %w", origin, err)
		}
	}
	if data != nil {
		if uint64(len(data)) != h.Size {
			return false, fmt.Errorf("%s: %d bytes of data, header says %d", origin, len(data), h.Size)
		}
		c, err := ContentChecksum(h, bytes.NewReader(data))
		if err != nil {
			return false, fmt.Errorf("%s: %w", origin, err)
		}
		f.Checksum = c
		return r.storeIfNew(c, inflight, func() error { return r.WriteContentKnown(c, h, bytes.NewReader(data)) })
	}
	if f.Open == nil {
		return false, fmt.Errorf("%s: regular file without content", origin)
	}
	rc, err := f.Open()
	if err != nil {
		return false, err
	}
	c, err := ContentChecksum(h, rc)
	rc.Close()
	if err != nil {
		return false, fmt.Errorf("%s: %w", origin, err)
	}
	f.Checksum = c
	return r.storeIfNew(c, inflight, func() error {
		rc, err := f.Open()
		if err != nil {
			return err
		}
		defer rc.Close()
		if err := r.WriteContentKnown(c, h, rc); err != nil {
			return fmt.Errorf("%s: %w", origin, err)
		}
		return nil
	})
}

func (r *Repo) storeIfNew(c Checksum, inflight *sync.Map, write func() error) (bool, error) {
	if _, busy := inflight.LoadOrStore(c, struct{}{}); busy {
		return false, nil
	}
	ok, err := r.HasObject(c, ObjectFile)
	if err != nil || ok {
		return false, err
	}
	return true, write()
}

type metaWriter struct {
	repo     *Repo
	dirmetas map[string]Checksum
	seen     map[Checksum]bool
}

func (mw *metaWriter) writeDir(d *MemDir, at string) (Checksum, Checksum, error) {
	dm, err := EncodeDirMeta(d.Meta)
	if err != nil {
		return Checksum{}, Checksum{}, fmt.Errorf("directory %s: %w", at, err)
	}
	metaSum, ok := mw.dirmetas[string(dm)]
	if !ok {
		if metaSum, err = mw.repo.WriteMetadata(ObjectDirMeta, dm); err != nil {
			return Checksum{}, Checksum{}, err
		}
		mw.dirmetas[string(dm)] = metaSum
		mw.seen[metaSum] = true
	}
	var dt DirTree
	for name, f := range d.Files {
		if _, dup := d.Dirs[name]; dup {
			return Checksum{}, Checksum{}, fmt.Errorf("%s%s is both a file and a directory", at, name)
		}
		dt.Files = append(dt.Files, DirTreeFile{Name: name, Checksum: f.Checksum})
	}
	for name, sub := range d.Dirs {
		tc, mc, err := mw.writeDir(sub, at+name+"/")
		if err != nil {
			return Checksum{}, Checksum{}, err
		}
		dt.Dirs = append(dt.Dirs, DirTreeDir{Name: name, Tree: tc, Meta: mc})
	}
	b, err := EncodeDirTree(&dt)
	if err != nil {
		return Checksum{}, Checksum{}, fmt.Errorf("directory %s: %w", at, err)
	}
	treeSum := Checksum(sha256.Sum256(b))
	if !mw.seen[treeSum] {
		if _, err := mw.repo.WriteMetadata(ObjectDirTree, b); err != nil {
			return Checksum{}, Checksum{}, err
		}
		mw.seen[treeSum] = true
	}
	return treeSum, metaSum, nil
}

// CommitOptions describes a commit to make on a branch.
type CommitOptions struct {
	Branch    string // ref to move; may be empty to write an unreferenced commit
	Subject   string
	Body      string
	Timestamp time.Time // zero means now
	Metadata  Metadata  // entries in this order, before any bindings
	// Parent is the parent commit; when nil the branch's current commit is
	// used (as `ostree commit -b` does). Orphan makes a commit without parent.
	Parent *Checksum
	Orphan bool
	// NoBindings leaves out ostree.ref-binding, which `ostree commit`
	// otherwise adds (listing the branch, or empty without one).
	NoBindings   bool
	LockTimeout  time.Duration // default 5 minutes, as ostree's lock-timeout-secs
	WriteOptions WriteTreeOptions
}

// CommitResult reports a finished commit.
type CommitResult struct {
	Checksum Checksum
	Commit   *Commit
	Stats    WriteStats
}

// CommitTree writes root and a commit object for it, then moves the branch.
// It holds the repository's write lock throughout, flushes all objects to
// disk before the ref moves, and leaves refs untouched on any error.
func (r *Repo) CommitTree(ctx context.Context, root *MemDir, opts CommitOptions) (*CommitResult, error) {
	if opts.Branch != "" {
		if err := ValidateRef(opts.Branch); err != nil {
			return nil, err
		}
	}
	timeout := opts.LockTimeout
	if timeout == 0 {
		timeout = 5 * time.Minute
	}
	unlock, err := r.Lock(timeout)
	if err != nil {
		return nil, err
	}
	defer unlock()

	var parent Checksum
	switch {
	case opts.Orphan:
	case opts.Parent != nil:
		parent = *opts.Parent
	case opts.Branch != "":
		p, err := r.ReadRef(opts.Branch)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return nil, err
		}
		parent = p
	}
	if !parent.IsZero() {
		if ok, err := r.HasObject(parent, ObjectCommit); err != nil {
			return nil, err
		} else if !ok {
			return nil, fmt.Errorf("parent commit %s is not in the repository", parent)
		}
	}

	tree, meta, stats, err := r.WriteTree(ctx, root, opts.WriteOptions)
	if err != nil {
		return nil, err
	}
	md := append(Metadata(nil), opts.Metadata...)
	if !opts.NoBindings {
		// As ostree commit: always appended (after user metadata, even if
		// the user supplied the key), an empty list when there is no branch.
		bound := []string{}
		if opts.Branch != "" {
			bound = []string{opts.Branch}
		}
		md = append(md, MetadataEntry{Key: "ostree.ref-binding", Value: gvariant.NewVariant("as", bound)})
	}
	ts := opts.Timestamp
	if ts.IsZero() {
		ts = time.Now()
	}
	c := &Commit{
		Metadata:  md,
		Parent:    parent,
		Subject:   opts.Subject,
		Body:      opts.Body,
		Timestamp: time.Unix(ts.Unix(), 0).UTC(),
		RootTree:  tree,
		RootMeta:  meta,
	}
	b, err := EncodeCommit(c)
	if err != nil {
		return nil, err
	}
	sum, err := r.WriteMetadata(ObjectCommit, b)
	if err != nil {
		return nil, err
	}
	if err := r.Sync(); err != nil {
		return nil, err
	}
	if opts.Branch != "" {
		if err := r.WriteRef(opts.Branch, sum); err != nil {
			return nil, err
		}
	}
	return &CommitResult{Checksum: sum, Commit: c, Stats: stats}, nil
}
