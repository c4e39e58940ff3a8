package ostree

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/apt-ostree/apt-ostree-factory/internal/atomicfile"
)

// Mode is a repository's storage mode.
type Mode string

const (
	ModeArchive Mode = "archive-z2"
	ModeBare    Mode = "bare"
	// ModeBareUser and ModeBareUserOnly are recognised on open; this package
	// reads and writes archive repositories.
	ModeBareUser     Mode = "bare-user"
	ModeBareUserOnly Mode = "bare-user-only"
)

// DefaultCompressionLevel is OSTree's default [archive] zlib-level.
const DefaultCompressionLevel = 6

// ErrNotFound reports a missing object or ref.
var ErrNotFound = errors.New("not found")

// Repo is an OSTree repository on disk.
type Repo struct {
	path  string
	mode  Mode
	level int

	dirsMu sync.Mutex
	dirs   map[string]bool // object fan-out dirs known to exist

	// anonTemp: objects are staged as O_TMPFILE and linked into place
	// through /proc/self/fd, which must be mounted.
	anonTemp bool
}

// Path returns the repository's directory.
func (r *Repo) Path() string { return r.path }

// Mode returns the repository's storage mode.
func (r *Repo) Mode() Mode { return r.mode }

// Init creates an archive-mode repository at path, or opens it when one
// exists there already. The directory layout matches `ostree init`; objects/
// is made last because its presence marks a complete repository.
func Init(path string) (*Repo, error) {
	if _, err := os.Stat(filepath.Join(path, "objects")); err == nil {
		return Open(path)
	}
	if err := os.MkdirAll(path, 0o775); err != nil {
		return nil, fmt.Errorf("init repository: %w", err)
	}
	// A writer killed while writing config leaves its temporary file.
	if stale, _ := filepath.Glob(filepath.Join(path, ".config.tmp-*")); len(stale) > 0 {
		for _, s := range stale {
			os.Remove(s)
		}
	}
	config := "[core]\nrepo_version=1\nmode=archive-z2\n"
	if err := atomicfile.WriteFile(filepath.Join(path, "config"), []byte(config), 0o644); err != nil {
		return nil, fmt.Errorf("init repository %s: %w", path, err)
	}
	for _, d := range []string{"tmp", "extensions", "state", "refs", "refs/heads", "refs/mirrors", "refs/remotes", "objects"} {
		if err := os.Mkdir(filepath.Join(path, d), 0o775); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("init repository %s: %w", path, err)
		}
	}
	return Open(path)
}

// Open opens an existing repository.
func Open(path string) (*Repo, error) {
	cfgPath := filepath.Join(path, "config")
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s is not an OSTree repository (no config file)", path)
		}
		return nil, err
	}
	kf, err := ParseKeyFile(cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfgPath, err)
	}
	if v, _ := kf.Get("core", "repo_version"); v != "1" {
		return nil, fmt.Errorf("%s: unsupported repo_version %q", cfgPath, v)
	}
	if _, ok := kf.Get("core", "archive"); ok {
		return nil, fmt.Errorf("%s: legacy key archive= is not supported", cfgPath)
	}
	mode := Mode("bare")
	if m, ok := kf.Get("core", "mode"); ok {
		mode = Mode(m)
	}
	switch mode {
	case "archive":
		mode = ModeArchive
	case ModeArchive, ModeBare, ModeBareUser, ModeBareUserOnly:
	default:
		return nil, fmt.Errorf("%s: unknown repository mode %q", cfgPath, mode)
	}
	level := DefaultCompressionLevel
	if s, ok := kf.Get("archive", "zlib-level"); ok {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 9 {
			return nil, fmt.Errorf("%s: invalid [archive] zlib-level %q", cfgPath, s)
		}
		level = n
	}
	if _, err := os.Stat(filepath.Join(path, "objects")); err != nil {
		return nil, fmt.Errorf("%s is not an OSTree repository: %w", path, err)
	}
	_, procErr := os.Stat("/proc/self/fd")
	return &Repo{path: path, mode: mode, level: level, dirs: map[string]bool{}, anonTemp: procErr == nil}, nil
}

func (r *Repo) requireArchive() error {
	if r.mode != ModeArchive {
		return fmt.Errorf("repository %s has mode %s; only archive-z2 repositories can be written and read here", r.path, r.mode)
	}
	return nil
}

// objectPath returns the path of an object file relative to the repository.
func (r *Repo) objectPath(c Checksum, t ObjectType) string {
	h := c.String()
	ext := t.String()
	if t == ObjectFile && r.mode == ModeArchive {
		ext = "filez"
	}
	return filepath.Join(r.path, "objects", h[:2], h[2:]+"."+ext)
}

// HasObject reports whether the object is present.
func (r *Repo) HasObject(c Checksum, t ObjectType) (bool, error) {
	_, err := os.Lstat(r.objectPath(c, t))
	if err == nil {
		return true, nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return false, err
}

// Lock takes the repository's write lock (an exclusive flock on .lock, the
// file OSTree locks), waiting up to timeout. The returned function releases it.
func (r *Repo) Lock(timeout time.Duration) (func(), error) {
	f, err := os.OpenFile(filepath.Join(r.path, ".lock"), os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock repository %s: %w", r.path, err)
	}
	deadline := time.Now().Add(timeout)
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock repository %s: %w", r.path, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("repository %s is locked by another writer (waited %s)", r.path, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.cleanStaleTemp()
	return func() {
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}

// tempPrefix marks this package's temporary files in tmp/.
const tempPrefix = "aof-tmp-"

// cleanStaleTemp removes our temporary files left by writers that died.
// It runs under the write lock, so no live writer of ours owns them.
func (r *Repo) cleanStaleTemp() {
	dir := filepath.Join(r.path, "tmp")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tempPrefix) {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// createTemp makes a temporary file in the repository's tmp/ directory, on
// the same filesystem as the objects so that rename is atomic.
func (r *Repo) createTemp() (*os.File, error) {
	var rnd [8]byte
	rand.Read(rnd[:])
	name := filepath.Join(r.path, "tmp", tempPrefix+hex.EncodeToString(rnd[:]))
	return os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL|unix.O_CLOEXEC, 0o600)
}

// tempObject is an object being written: an anonymous O_TMPFILE where the
// filesystem supports it (it vanishes by itself if the writer dies, and no
// name is created in a shared directory), else a named file in tmp/.
type tempObject struct {
	*os.File
	anonymous bool
}

func (r *Repo) createObjectTemp() (*tempObject, error) {
	if r.anonTemp {
		fd, err := unix.Open(filepath.Join(r.path, "tmp"), unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o644)
		if err == nil {
			return &tempObject{File: os.NewFile(uintptr(fd), filepath.Join(r.path, "tmp", "(anonymous)")), anonymous: true}, nil
		}
	}
	f, err := r.createTemp()
	if err != nil {
		return nil, err
	}
	return &tempObject{File: f}, nil
}

// discard drops an unfinished temporary object.
func (t *tempObject) discard() {
	t.Close()
	if !t.anonymous {
		os.Remove(t.Name())
	}
}

// installTemp makes a finished temporary object visible under its name and
// closes it. An object that appeared meanwhile is kept, not replaced.
func (r *Repo) installTemp(t *tempObject, c Checksum, typ ObjectType) error {
	if err := t.Chmod(0o644); err != nil {
		t.discard()
		return err
	}
	if !t.anonymous {
		if err := t.Close(); err != nil {
			os.Remove(t.Name())
			return err
		}
		if err := r.install(t.Name(), c, typ); err != nil {
			os.Remove(t.Name())
			return err
		}
		return nil
	}
	defer t.Close()
	dst := r.objectPath(c, typ)
	if err := r.ensureFanout(filepath.Dir(dst)); err != nil {
		return err
	}
	err := unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", t.Fd()), unix.AT_FDCWD, dst, unix.AT_SYMLINK_FOLLOW)
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return &fs.PathError{Op: "link", Path: dst, Err: err}
	}
	return nil
}

func (r *Repo) ensureFanout(dir string) error {
	r.dirsMu.Lock()
	known := r.dirs[dir]
	r.dirsMu.Unlock()
	if known {
		return nil
	}
	if err := os.Mkdir(dir, 0o775); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	r.dirsMu.Lock()
	r.dirs[dir] = true
	r.dirsMu.Unlock()
	return nil
}

// install renames a finished temporary file to the object's path.
func (r *Repo) install(tmp string, c Checksum, t ObjectType) error {
	dst := r.objectPath(c, t)
	dir := filepath.Dir(dst)
	if err := r.ensureFanout(dir); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// WriteMetadata stores a metadata object (dirtree, dirmeta, commit,
// commitmeta) and returns its checksum. Existing objects are not rewritten,
// except commitmeta, which is mutable detached metadata named by its commit.
func (r *Repo) WriteMetadata(t ObjectType, data []byte) (Checksum, error) {
	if !t.IsMeta() || t == ObjectCommitMeta {
		return Checksum{}, fmt.Errorf("WriteMetadata: %s is not a content-addressed metadata type", t)
	}
	c := Checksum(sha256.Sum256(data))
	return c, r.writeMetadataAt(c, t, data, false)
}

// WriteCommitMeta stores detached metadata for commit c, replacing any.
func (r *Repo) WriteCommitMeta(c Checksum, m Metadata) error {
	b, err := EncodeMetadata(m)
	if err != nil {
		return err
	}
	return r.writeMetadataAt(c, ObjectCommitMeta, b, true)
}

func (r *Repo) writeMetadataAt(c Checksum, t ObjectType, data []byte, replace bool) error {
	if err := r.requireArchive(); err != nil {
		return err
	}
	if !replace {
		if ok, err := r.HasObject(c, t); err != nil || ok {
			return err
		}
	}
	if !replace {
		f, err := r.createObjectTemp()
		if err != nil {
			return err
		}
		if _, err := f.Write(data); err != nil {
			f.discard()
			return fmt.Errorf("write %s.%s: %w", c, t, err)
		}
		if err := r.installTemp(f, c, t); err != nil {
			return fmt.Errorf("write %s.%s: %w", c, t, err)
		}
		return nil
	}
	f, err := r.createTemp()
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = r.install(f.Name(), c, t)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write %s.%s: %w", c, t, err)
	}
	return nil
}

// ReadMetadata returns a metadata object's bytes after checking that they
// hash to the object's name.
func (r *Repo) ReadMetadata(t ObjectType, c Checksum) ([]byte, error) {
	b, err := readSmallFile(r.objectPath(c, t))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("object %s.%s: %w", c, t, ErrNotFound)
		}
		return nil, fmt.Errorf("object %s.%s: %w", c, t, err)
	}
	if t != ObjectCommitMeta && sha256.Sum256(b) != c {
		return nil, fmt.Errorf("object %s.%s is corrupted: its content hashes to %x", c, t, sha256.Sum256(b))
	}
	return b, nil
}

// ReadCommit reads and parses a commit object.
func (r *Repo) ReadCommit(c Checksum) (*Commit, error) {
	b, err := r.ReadMetadata(ObjectCommit, c)
	if err != nil {
		return nil, err
	}
	cm, err := DecodeCommit(b)
	if err != nil {
		return nil, fmt.Errorf("object %s.commit: %w", c, err)
	}
	return cm, nil
}

// ReadDirTree reads and parses a dirtree object.
func (r *Repo) ReadDirTree(c Checksum) (*DirTree, error) {
	b, err := r.ReadMetadata(ObjectDirTree, c)
	if err != nil {
		return nil, err
	}
	t, err := DecodeDirTree(b)
	if err != nil {
		return nil, fmt.Errorf("object %s.dirtree: %w", c, err)
	}
	return t, nil
}

// ReadDirMeta reads and parses a dirmeta object.
func (r *Repo) ReadDirMeta(c Checksum) (FileMeta, error) {
	b, err := r.ReadMetadata(ObjectDirMeta, c)
	if err != nil {
		return FileMeta{}, err
	}
	m, err := DecodeDirMeta(b)
	if err != nil {
		return FileMeta{}, fmt.Errorf("object %s.dirmeta: %w", c, err)
	}
	return m, nil
}

// ReadCommitMeta reads a commit's detached metadata; a missing object gives
// nil metadata and no error.
func (r *Repo) ReadCommitMeta(c Checksum) (Metadata, error) {
	b, err := r.ReadMetadata(ObjectCommitMeta, c)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	m, err := DecodeMetadata(b)
	if err != nil {
		return nil, fmt.Errorf("object %s.commitmeta: %w", c, err)
	}
	return m, nil
}

// Sync flushes everything written so far to stable storage; callers do it
// before moving a ref, so a ref never points at objects lost in a crash.
func (r *Repo) Sync() error {
	d, err := os.Open(r.path)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := unix.Syncfs(int(d.Fd())); err != nil {
		return fmt.Errorf("sync repository %s: %w", r.path, err)
	}
	return nil
}

// KeyFile is a minimal GKeyFile (INI) reader for repository config and
// origin files: groups, key=value lines, # comments.
type KeyFile struct {
	groups []string
	values map[string]map[string]string
}

// ParseKeyFile parses GKeyFile text.
func ParseKeyFile(b []byte) (*KeyFile, error) {
	kf := &KeyFile{values: map[string]map[string]string{}}
	group := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#':
		case line[0] == '[':
			if !strings.HasSuffix(line, "]") {
				return nil, fmt.Errorf("line %d: malformed group header %q", n, line)
			}
			group = line[1 : len(line)-1]
			if _, ok := kf.values[group]; !ok {
				kf.groups = append(kf.groups, group)
				kf.values[group] = map[string]string{}
			}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || group == "" {
				return nil, fmt.Errorf("line %d: expected key=value in a group, got %q", n, line)
			}
			kf.values[group][strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return kf, sc.Err()
}

// Get returns a key's value.
func (kf *KeyFile) Get(group, key string) (string, bool) {
	v, ok := kf.values[group][key]
	return v, ok
}

// Groups returns the group names in file order.
func (kf *KeyFile) Groups() []string { return kf.groups }

var _ io.Reader = (*bytes.Reader)(nil)

// readSmallFile reads a whole file with four system calls (open, fstat,
// read, close). os.ReadFile takes about twice as many for a regular file
// (it also sets up the runtime's poller), which was most of the time of
// walking a commit's thousands of small dirtree objects.
func readSmallFile(path string) ([]byte, error) {
	fd, err := openRetry(path)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	b := make([]byte, st.Size)
	if _, err := io.ReadFull(fdReader(fd), b); err != nil {
		return nil, &fs.PathError{Op: "read", Path: path, Err: err}
	}
	return b, nil
}

func openRetry(path string) (int, error) {
	for {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			return fd, err
		}
	}
}
