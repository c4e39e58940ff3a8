// Package builder is the build pipeline: it unpacks .debs into OSTree
// objects, merges them into one tree the way dpkg installs them, runs
// maintainer scripts in a sandbox, converts the tree to the OSTree layout
// and commits it.
//
// # Unpack
//
// Unpack streams a .deb's data.tar straight into content objects: each
// regular file is hashed and compressed in one pass as it comes out of the
// decompressor (small files are handed to a pool of workers, large ones are
// piped to one, so decompression and compression run on different cores),
// and nothing is written to a staging directory. Ownership, mode and
// extended attributes come from the tar headers and are data in the object
// headers; nothing on the host is ever chowned, so unpacking needs no
// privileges. The result is a DebTree: the package's files as an
// ostree.MemDir whose MemFiles carry only checksums, plus its control
// members and its file list in archive order.
//
// # Per-.deb cache
//
// UnpackCached records each unpacked .deb in the repository as a commit
// indexed by the .deb's SHA-256 (see debcache.go for the format), so a
// rebuild only unpacks the .debs that changed; the others are loaded back
// from their commits without reading the .deb.
//
// # Merge
//
// A Merger installs DebTrees into one tree following dpkg's rules for a
// fresh unpack (merge.go): shared directories, symlinks to directories
// followed (merged-/usr), conflicts checked against Replaces.
package builder

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/apt-ostree/apt-ostree-factory/ostree"
)

// DebTree is one unpacked .deb: its identity, its files as a tree of
// OSTree objects already stored in the repository, and its control
// members. It is a plain value: the same .deb gives the same DebTree
// whether it was unpacked now or loaded from the per-.deb cache.
type DebTree struct {
	Package      string
	Version      string
	Architecture string
	// SHA256 and Size identify the .deb file.
	SHA256 string
	Size   int64

	// Root holds the package's files with their ownership, modes and
	// xattrs. Every MemFile carries its object's Checksum (the object is
	// in the repository) and Header; hardlinked paths share one MemFile.
	// Directories the archive does not list are root-owned 0755.
	Root *ostree.MemDir
	// Files lists the archive's entries in archive order, as dpkg writes
	// them to info/<package>.list: "/." for the root, then absolute paths
	// without trailing slashes ("/usr", "/usr/bin/ls").
	Files []string
	// Skipped are entries of Files that are not in Root: device nodes and
	// FIFOs, which OSTree cannot store (see Warnings).
	Skipped []string
	// Control holds every file of control.tar by name: "control",
	// "md5sums", "conffiles", "preinst", "postinst", "prerm", "postrm",
	// "triggers", "shlibs", "symbols", "templates", "config", ...
	Control map[string][]byte
	// Conffiles lists the paths of the conffiles member.
	Conffiles []string
	// Warnings are things dpkg would have done that the tree cannot hold.
	Warnings []string

	fields map[string]string // parsed control file
}

// Field returns a field of the package's control file ("Replaces",
// "Multi-Arch", "Pre-Depends", ...), or "".
func (t *DebTree) Field(name string) string {
	if t.fields != nil {
		return t.fields[name]
	}
	// A DebTree made by hand: parse every time rather than cache, so that
	// Field stays safe to call from several goroutines.
	f, _ := parseControlFields(t.Control["control"])
	return f[name]
}

// ID names the package as apt does in messages: name:arch=version.
func (t *DebTree) ID() string {
	return t.Package + ":" + t.Architecture + "=" + t.Version
}

func (t *DebTree) String() string {
	return t.Package + " (" + t.Version + ", " + t.Architecture + ")"
}

// UnpackOptions tunes Unpack.
type UnpackOptions struct {
	// Origin names the .deb in errors until its control file is read
	// (a file name, a lock entry).
	Origin string
	// Workers hash and compress file content in parallel; 0 means
	// GOMAXPROCS.
	Workers int
}

// Content up to bufferedFileLimit is read into one of a fixed number of
// buffers and handed to a worker; larger files are piped to a worker as
// they are decompressed. Memory held for content is bounded by
// (2*workers+2) * bufferedFileLimit, whatever the package's size.
const bufferedFileLimit = 4 << 20

// Unpack reads a .deb from deb (sequentially, to its end) and stores its
// data.tar as content objects in repo. The .deb's SHA-256 is computed on
// the way; a reader that verifies content (apt.Cache.Open) reports
// corruption at the end, and Unpack then fails.
func Unpack(ctx context.Context, repo *ostree.Repo, deb io.Reader, opts UnpackOptions) (*DebTree, error) {
	origin := opts.Origin
	if origin == "" {
		origin = "package"
	}
	h := sha256.New()
	cr := &countingReader{r: io.TeeReader(deb, h)}
	t, err := unpack(ctx, repo, cr, opts)
	if err != nil {
		if t != nil && t.Package != "" {
			switch {
			case opts.Origin == "":
				origin = t.Package
			case !strings.Contains(opts.Origin, t.Package):
				origin = opts.Origin + " (" + t.Package + ")"
			}
		}
		return nil, fmt.Errorf("unpack %s: %w", origin, err)
	}
	t.SHA256 = hex.EncodeToString(h.Sum(nil))
	t.Size = cr.n
	return t, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// unpack returns the DebTree so far along with any error, so that errors
// can name the package once its control file was read.
func unpack(ctx context.Context, repo *ostree.Repo, r io.Reader, opts UnpackOptions) (*DebTree, error) {
	ar, err := newArReader(r)
	if err != nil {
		return nil, err
	}
	m, err := ar.next()
	if err != nil {
		return nil, fmt.Errorf("not a .deb: %w", noEOF(err))
	}
	if m.Name != "debian-binary" {
		return nil, fmt.Errorf("not a .deb: first member is %q, not debian-binary", m.Name)
	}
	ver, err := io.ReadAll(io.LimitReader(m.Data, 64))
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(string(ver), "2.") {
		return nil, fmt.Errorf("unsupported .deb format version %q", strings.TrimSpace(string(ver)))
	}

	t := &DebTree{}
	gotControl := false
	for {
		m, err := ar.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return t, err
		}
		if strings.HasPrefix(m.Name, "_") {
			continue
		}
		base, comp, ok := tarMember(m.Name)
		switch {
		case ok && base == "control" && !gotControl:
			if err := t.readControlMember(comp, m.Data); err != nil {
				return t, fmt.Errorf("%s: %w", m.Name, err)
			}
			gotControl = true
		case ok && base == "data" && gotControl:
			if err := t.readDataMember(ctx, repo, comp, m, opts.Workers); err != nil {
				return t, err
			}
			if err := ar.drain(); err != nil {
				return t, err
			}
			return t, nil
		default:
			return t, fmt.Errorf("unexpected member %q in the .deb (expected control.tar, then data.tar)", m.Name)
		}
	}
	if !gotControl {
		return t, errors.New("the .deb has no control.tar member")
	}
	return t, errors.New("the .deb has no data.tar member")
}

func (t *DebTree) readControlMember(comp string, r io.Reader) error {
	dr, err := decompress(comp, r)
	if err != nil {
		return err
	}
	defer dr.Close()
	members, err := readControl(dr)
	if err != nil {
		return err
	}
	if _, err := io.Copy(io.Discard, dr); err != nil {
		return err
	}
	fields, err := parseControlFields(members["control"])
	if err != nil {
		return fmt.Errorf("control file: %w", err)
	}
	t.Control = members
	t.fields = fields
	t.Package = fields["Package"]
	t.Version = fields["Version"]
	t.Architecture = fields["Architecture"]
	if t.Package == "" || t.Version == "" || t.Architecture == "" {
		return errors.New("control file lacks Package, Version or Architecture")
	}
	if cf, ok := members["conffiles"]; ok {
		t.Conffiles = parseConffiles(cf)
	}
	return nil
}

// externalXZMin is the size from which a data.tar.xz is worth a process.
var externalXZMin int64 = 4 << 20

func (t *DebTree) readDataMember(ctx context.Context, repo *ostree.Repo, comp string, m *arMember, workers int) error {
	dr, err := decompressWith(comp, m.Data, m.Size >= externalXZMin)
	if err != nil {
		return fmt.Errorf("data.tar%s: %w", comp, err)
	}
	defer dr.Close()
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	u := newUnpacker(ctx, repo, t, workers)
	err = u.run(tar.NewReader(dr))
	if err == nil {
		// The compressed stream may hold padding after the tar's end.
		if _, cerr := io.Copy(io.Discard, dr); cerr != nil {
			err = fmt.Errorf("data.tar%s: %w", comp, cerr)
		}
	}
	if werr := u.wait(); err == nil {
		err = werr
	}
	if err != nil {
		return err
	}
	sort.Strings(t.Skipped)
	return nil
}

// unpacker turns tar entries into a MemDir, feeding file content to
// workers that store it.
type unpacker struct {
	ctx    context.Context
	cancel context.CancelFunc
	repo   *ostree.Repo
	t      *DebTree

	files  map[string]*ostree.MemFile // archive path → file, for hardlinks
	listed map[string]bool            // paths already in t.Files

	jobs    chan storeJob
	buffers chan []byte
	wg      sync.WaitGroup
	errMu   sync.Mutex
	err     error
}

type storeJob struct {
	f    *ostree.MemFile
	path string
	data []byte         // buffered content (returned to buffers after use)
	pipe *io.PipeReader // streamed content
}

func newUnpacker(ctx context.Context, repo *ostree.Repo, t *DebTree, workers int) *unpacker {
	ctx, cancel := context.WithCancel(ctx)
	u := &unpacker{
		ctx: ctx, cancel: cancel, repo: repo, t: t,
		files:   map[string]*ostree.MemFile{},
		listed:  map[string]bool{},
		jobs:    make(chan storeJob, workers),
		buffers: make(chan []byte, 2*workers+2),
	}
	for range cap(u.buffers) {
		u.buffers <- nil
	}
	t.Root = ostree.NewMemDir(ostree.FileMeta{Mode: ostree.ModeDir | 0o755})
	for range workers {
		u.wg.Add(1)
		go u.worker()
	}
	return u
}

func (u *unpacker) fail(err error) {
	u.errMu.Lock()
	if u.err == nil {
		u.err = err
	}
	u.errMu.Unlock()
	u.cancel()
}

func (u *unpacker) firstErr() error {
	u.errMu.Lock()
	defer u.errMu.Unlock()
	return u.err
}

func (u *unpacker) worker() {
	defer u.wg.Done()
	for j := range u.jobs {
		if u.ctx.Err() != nil {
			u.finish(j, nil)
			continue
		}
		c, err := u.storeContent(j)
		if err != nil {
			err = fmt.Errorf("%s: storing content: %w", j.path, err)
			u.fail(err)
		} else {
			j.f.Checksum = c
		}
		u.finish(j, err)
	}
}

// storeContent writes a job's object. Buffered content is hashed first
// and compressed only when the object is new: a package's next version,
// or another package, often ships the same files, and hashing costs a few
// percent of compressing. Streamed content is hashed and compressed in one
// pass.
func (u *unpacker) storeContent(j storeJob) (ostree.Checksum, error) {
	switch {
	case j.pipe != nil:
		return u.repo.WriteContent(j.f.Header, j.pipe)
	case j.data == nil: // symlink
		return u.repo.WriteContent(j.f.Header, nil)
	}
	c, err := ostree.ContentChecksum(j.f.Header, &sliceReader{b: j.data})
	if err != nil {
		return c, err
	}
	if ok, err := u.repo.HasObject(c, ostree.ObjectFile); err != nil || ok {
		return c, err
	}
	return c, u.repo.WriteContentKnown(c, j.f.Header, &sliceReader{b: j.data})
}

func (u *unpacker) finish(j storeJob, err error) {
	if j.pipe != nil {
		if err == nil {
			err = u.stopped() // nil unless the job was skipped
		}
		// Unblocks the writer if the worker stopped early; harmless
		// after a complete read.
		j.pipe.CloseWithError(err)
	}
	if j.data != nil {
		u.buffers <- j.data[:0]
	}
}

// wait stops the workers and returns the first error any of them had.
func (u *unpacker) wait() error {
	close(u.jobs)
	u.wg.Wait()
	u.cancel()
	return u.firstErr()
}

func (u *unpacker) submit(j storeJob) error {
	select {
	case u.jobs <- j:
		return nil
	case <-u.ctx.Done():
		if j.data != nil {
			u.buffers <- j.data[:0]
		}
		return u.stopped()
	}
}

// stopped is the error to report once the context is done: a worker's
// failure, or the caller's cancellation.
func (u *unpacker) stopped() error {
	if err := u.firstErr(); err != nil {
		return err
	}
	return u.ctx.Err()
}

func (u *unpacker) run(tr *tar.Reader) error {
	for {
		if u.ctx.Err() != nil {
			return u.stopped()
		}
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("data.tar: %w", err)
		}
		if err := u.entry(tr, h); err != nil {
			if e := u.firstErr(); e != nil {
				return e
			}
			return err
		}
	}
}

// archivePath turns a tar member name into a path relative to the root,
// refusing names that could leave the tree. The root is "".
func archivePath(name string) (string, error) {
	if strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("%q: absolute path in the archive, refused", name)
	}
	var parts []string
	for _, p := range strings.Split(name, "/") {
		switch p {
		case "", ".":
			continue
		case "..":
			return "", fmt.Errorf("%q: path with a \"..\" component, refused", name)
		}
		if err := ostree.ValidName(p); err != nil {
			return "", fmt.Errorf("%q: %w", name, err)
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, "/"), nil
}

// listPath is p as dpkg lists it in info/<package>.list.
func listPath(p string) string {
	if p == "" {
		return "/."
	}
	return "/" + p
}

// treePath is the inverse of listPath.
func treePath(listed string) string {
	if listed == "/." {
		return ""
	}
	return strings.TrimPrefix(listed, "/")
}

func (u *unpacker) record(p string) {
	lp := listPath(p)
	if !u.listed[lp] {
		u.listed[lp] = true
		u.t.Files = append(u.t.Files, lp)
	}
}

func (u *unpacker) warn(format string, args ...any) {
	u.t.Warnings = append(u.t.Warnings, fmt.Sprintf(format, args...))
}

func (u *unpacker) entry(tr *tar.Reader, h *tar.Header) error {
	p, err := archivePath(h.Name)
	if err != nil {
		return err
	}
	meta, err := tarMeta(h)
	if err != nil {
		return fmt.Errorf("%s: %w", listPath(p), err)
	}
	switch h.Typeflag {
	case tar.TypeDir:
		d, err := u.mkdir(p)
		if err != nil {
			return err
		}
		meta.Mode |= ostree.ModeDir
		d.Meta = meta
		u.record(p)
		return nil
	case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse, tar.TypeCont:
		if p == "" {
			return fmt.Errorf("%q: a regular file as the root directory", h.Name)
		}
		if h.Size < 0 {
			return fmt.Errorf("%s: negative size", listPath(p))
		}
		meta.Mode |= ostree.ModeRegular
		f := &ostree.MemFile{Header: ostree.FileHeader{FileMeta: meta, Size: uint64(h.Size)}, Origin: u.t.Package + ":" + listPath(p)}
		if err := u.place(p, f); err != nil {
			return err
		}
		u.files[p] = f
		u.record(p)
		return u.store(tr, p, f)
	case tar.TypeSymlink:
		if p == "" {
			return fmt.Errorf("%q: a symlink as the root directory", h.Name)
		}
		if h.Linkname == "" {
			return fmt.Errorf("%s: symlink with an empty target", listPath(p))
		}
		// Symlink permissions mean nothing on Linux; lstat reports 0777,
		// which is what `ostree commit` of an extracted tree records.
		meta.Mode = ostree.ModeSymlink | 0o777
		f := &ostree.MemFile{Header: ostree.FileHeader{FileMeta: meta, Symlink: h.Linkname}, Origin: u.t.Package + ":" + listPath(p)}
		if err := u.place(p, f); err != nil {
			return err
		}
		u.files[p] = f
		u.record(p)
		return u.submit(storeJob{f: f, path: listPath(p)})
	case tar.TypeLink:
		target, err := archivePath(h.Linkname)
		if err != nil {
			return fmt.Errorf("%s: hardlink target %w", listPath(p), err)
		}
		f, ok := u.files[target]
		if !ok {
			return fmt.Errorf("%s: hardlink to %s, which is not an earlier file of the archive", listPath(p), listPath(target))
		}
		// A hardlink is the same inode: same content and metadata.
		if err := u.place(p, f); err != nil {
			return err
		}
		u.files[p] = f
		u.record(p)
		return nil
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		// OSTree stores only regular files, symlinks and directories: a
		// device node or FIFO cannot be part of a commit (on a booted
		// system /dev is devtmpfs anyway). dpkg would create it; we list
		// it for the package's file list, skip it and say so.
		kind := map[byte]string{tar.TypeChar: "character device", tar.TypeBlock: "block device", tar.TypeFifo: "FIFO"}[h.Typeflag]
		u.warn("%s: %s %s skipped: OSTree cannot store device nodes or FIFOs", u.t.Package, kind, listPath(p))
		u.t.Skipped = append(u.t.Skipped, listPath(p))
		u.record(p)
		return nil
	default:
		return fmt.Errorf("%s: unsupported tar entry type %q", listPath(p), h.Typeflag)
	}
}

// mkdir returns the directory at p in the package tree, creating it and
// missing parents (as implicit, root-owned 0755 directories).
func (u *unpacker) mkdir(p string) (*ostree.MemDir, error) {
	d := u.t.Root
	if p == "" {
		return d, nil
	}
	parts := strings.Split(p, "/")
	for i, name := range parts {
		if _, isFile := d.Files[name]; isFile {
			at := strings.Join(parts[:i+1], "/")
			if i == len(parts)-1 {
				return nil, fmt.Errorf("%s: the archive has both a directory and a file at this path", listPath(at))
			}
			return nil, fmt.Errorf("%s: goes through %s, which the archive ships as a non-directory (not supported)", listPath(p), listPath(at))
		}
		next, ok := d.Dirs[name]
		if !ok {
			next = ostree.NewMemDir(ostree.FileMeta{Mode: ostree.ModeDir | 0o755})
			d.Dirs[name] = next
		}
		d = next
	}
	return d, nil
}

// place puts a non-directory at p; a second entry for the same path
// replaces the first, as extracting the tar would.
func (u *unpacker) place(p string, f *ostree.MemFile) error {
	dir, name := "", p
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		dir, name = p[:i], p[i+1:]
	}
	d, err := u.mkdir(dir)
	if err != nil {
		return err
	}
	if _, ok := d.Dirs[name]; ok {
		return fmt.Errorf("%s: the archive has both a directory and a file at this path", listPath(p))
	}
	d.Files[name] = f
	return nil
}

// store hands f's content (the tar reader's current entry) to a worker.
func (u *unpacker) store(tr *tar.Reader, p string, f *ostree.MemFile) error {
	size := int64(f.Header.Size)
	if size <= bufferedFileLimit {
		var buf []byte
		select {
		case buf = <-u.buffers:
		case <-u.ctx.Done():
			return u.stopped()
		}
		if int64(cap(buf)) < size {
			buf = make([]byte, size, max(size, 64<<10))
		}
		buf = buf[:size]
		if _, err := io.ReadFull(tr, buf); err != nil {
			u.buffers <- buf[:0]
			return fmt.Errorf("%s: %w", listPath(p), noEOF(err))
		}
		if buf == nil {
			buf = []byte{}
		}
		return u.submit(storeJob{f: f, path: listPath(p), data: buf})
	}
	pr, pw := io.Pipe()
	if err := u.submit(storeJob{f: f, path: listPath(p), pipe: pr}); err != nil {
		pr.Close()
		return err
	}
	bp := copyBufPool.Get().(*[]byte)
	n, err := io.CopyBuffer(pw, ctxReader{u.ctx, io.LimitReader(tr, size)}, *bp)
	if err != nil && u.ctx.Err() != nil {
		err = u.stopped()
	}
	copyBufPool.Put(bp)
	if err == nil && n != size {
		err = fmt.Errorf("%s: %w", listPath(p), io.ErrUnexpectedEOF)
	}
	if err != nil {
		pw.CloseWithError(err)
		return err
	}
	return pw.Close()
}

// ctxReader stops a long copy when the context is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

var copyBufPool = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// sliceReader is a bytes.Reader without the seeking, so that WriteContent
// cannot take shortcuts that assume more than a stream.
type sliceReader struct{ b []byte }

func (s *sliceReader) Read(p []byte) (int, error) {
	if len(s.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.b)
	s.b = s.b[n:]
	return n, nil
}

// tarMeta returns the ownership, permission bits and xattrs of an entry.
// Owners are the numeric ids of the header: Debian packages only ship files
// owned by the statically allocated users and groups of base-passwd, whose
// ids are the same on every system, which is what dpkg's name lookup in the
// target would give too.
func tarMeta(h *tar.Header) (ostree.FileMeta, error) {
	if h.Uid < 0 || h.Uid > 1<<32-1 || h.Gid < 0 || h.Gid > 1<<32-1 {
		return ostree.FileMeta{}, fmt.Errorf("owner %d:%d out of range", h.Uid, h.Gid)
	}
	m := ostree.FileMeta{UID: uint32(h.Uid), GID: uint32(h.Gid), Mode: uint32(h.Mode) & ostree.ModePermMask}
	xs, err := tarXattrs(h)
	if err != nil {
		return ostree.FileMeta{}, err
	}
	m.Xattrs = xs
	return m, nil
}

// tarXattrs collects extended attributes from PAX records: GNU tar and
// star write SCHILY.xattr.<name> with the raw value; bsdtar writes
// LIBARCHIVE.xattr.<url-escaped name> with a base64 value. Empty values
// are left out, as `ostree commit` leaves them out, so that a tree
// unpacked here has the checksum of the same tree committed from disk.
func tarXattrs(h *tar.Header) ([]ostree.Xattr, error) {
	if len(h.PAXRecords) == 0 {
		return nil, nil
	}
	byName := map[string][]byte{}
	for k, v := range h.PAXRecords {
		if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			byName[name] = []byte(v)
		}
	}
	for k, v := range h.PAXRecords {
		enc, ok := strings.CutPrefix(k, "LIBARCHIVE.xattr.")
		if !ok {
			continue
		}
		name, err := url.QueryUnescape(enc)
		if err != nil {
			return nil, fmt.Errorf("PAX record %q: %w", k, err)
		}
		if _, dup := byName[name]; dup {
			continue
		}
		val, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			if val, err = base64.RawStdEncoding.DecodeString(v); err != nil {
				return nil, fmt.Errorf("PAX record %q: %w", k, err)
			}
		}
		byName[name] = val
	}
	var xs []ostree.Xattr
	for name, val := range byName {
		if len(val) == 0 {
			continue
		}
		if name == "" || strings.IndexByte(name, 0) >= 0 {
			return nil, fmt.Errorf("invalid xattr name %q", name)
		}
		xs = append(xs, ostree.Xattr{Name: name, Value: val})
	}
	sort.Slice(xs, func(i, j int) bool { return xs[i].Name < xs[j].Name })
	return xs, nil
}
