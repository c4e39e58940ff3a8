// Package ext4 writes ext4 filesystem images from an in-memory tree, without
// root privileges, loop devices or mounts.
//
// It is a create-only writer: the caller describes a tree (directories,
// regular files whose contents are streamed from callbacks, symlinks, hard
// links, exact ownership, modes, xattrs and inode flags), then WriteTo lays it
// out in a given number of bytes and writes it through an io.WriterAt. The
// output is a pure function of the tree and the Options: the same input gives
// the same bytes, whatever order siblings were added in.
//
// # Format
//
// Block size 4096, 256-byte inodes (i_extra_isize 32), 32768 blocks per
// group, 32-bit block numbers (no 64bit feature, so at most 16 TiB),
// sparse_super backups, no resize inode, no flex_bg, no checksums
// (no metadata_csum, no uninit_bg). Features: ext_attr, dir_index (hash seed
// and half_md4 are recorded; directories are written linear, which is valid),
// has_journal (optional), filetype, extents, sparse_super, large_file,
// huge_file, dir_nlink, extra_isize.
//
// # Layout rules
//
// Inode numbers: 1..10 are reserved (2 = root, 8 = journal), 11 is
// lost+found, user inodes start at 12. They are assigned by walking the tree
// from the root: all entries of a directory, in bytewise name order, get
// consecutive numbers (an inode reached again through a hard link keeps its
// first number), then the subdirectories are walked in name order. So the
// entries of one directory sit next to each other in the inode table, and
// the numbering does not depend on the order of the calls.
//
// Blocks: everything is packed towards the start of the filesystem by a single
// cursor that moves forward through the data area of each group (a group is
// [superblock backup + group descriptors], block bitmap, inode bitmap, inode
// table, data). The journal is allocated first, then, in inode number order,
// each inode's data blocks (directory blocks, file contents or a slow
// symlink's target), then its extent tree blocks (if it has more than 4
// extents), then its external xattr block (if its xattrs do not fit in the
// inode). File data is therefore contiguous except where it crosses a group's
// metadata, and the used blocks and inodes of every group are a prefix of the
// group, which keeps the image compact and sparse.
//
// Journal: JournalBytes < 0 means none; 0 picks mke2fs' default for the
// filesystem size: 4 MiB below 128 MiB, 16 MiB below 1 GiB, 32 MiB below
// 2 GiB, 64 MiB below 16 GiB, 128 MiB below 32 GiB, 256 MiB below 64 GiB,
// 512 MiB below 128 GiB, 1 GiB above. An explicit size is rounded up to whole
// blocks and to at least 4 MiB (1024 blocks, the JBD2 minimum).
//
// A journal larger than the data area of one group (about 126 MiB, so the
// defaults from 16 GiB up) cannot be physically contiguous without flex_bg;
// it is then mapped by several extents, which the kernel and e2fsck accept.
//
// Xattrs are stored in the inode body (92 bytes after i_extra_isize) if
// they all fit, else all in one external block (not shared between inodes),
// else split between the two; entries are sorted by (name index, name
// length, name) in both places.
//
// # Size
//
// MinSize searches for the smallest block count whose layout fits (the
// inode count and default journal grow with the size, so the search is done
// per journal size tier). WriteTo with less fails before writing anything.
//
// # Not supported
//
// Device nodes, FIFOs and sockets; sharing identical xattr blocks; htree
// directories (all directories are linear, as mke2fs -d writes them); the
// 64bit, flex_bg, metadata_csum and inline_data features.
//
// The FS methods are not safe for concurrent use; only the open callbacks of
// files are called concurrently (from WriteTo's workers).
package ext4

import (
	"errors"
	"fmt"
	"io"
	"strings"
)

const (
	blockSize      = 4096
	inodeSize      = 256
	extraIsize     = 32
	blocksPerGroup = 32768
	inodesPerBlock = blockSize / inodeSize
	maxIPG         = blockSize * 8 // one inode bitmap block
	rootIno        = 2
	journalIno     = 8
	lostFoundIno   = 11
	firstIno       = 11
	maxLinks       = 65000 // EXT4_LINK_MAX
	maxBlocks      = 1<<32 - 1
	maxNameLen     = 255
	maxSymlinkLen  = blockSize - 1
)

// FlagImmutable is the inode's immutable flag (chattr +i).
const FlagImmutable = 0x10

// Inode flags a caller may set through Meta.Flags: secrm, unrm, sync,
// immutable, append, nodump, noatime, journal_data, notail, dirsync, topdir,
// projinherit. Everything else either describes the on-disk representation
// (extents, inline data, huge file, ...) which the writer owns, or needs a
// feature this writer does not enable.
const userFlags = 0x1 | 0x2 | 0x8 | 0x10 | 0x20 | 0x40 | 0x80 | 0x4000 | 0x8000 | 0x10000 | 0x20000 | 0x20000000

// Options controls the filesystem-wide parameters. The zero value is usable.
type Options struct {
	Label    string   // volume label, at most 16 bytes
	UUID     [16]byte // filesystem UUID (s_uuid)
	HashSeed [16]byte // s_hash_seed for dir_index; if all zero one is derived from UUID
	Time     int64    // Unix seconds for every timestamp the writer invents
	// InodeRatio is bytes per inode (default 16384). The inode count is the
	// larger of size/InodeRatio and the inodes the tree needs plus a margin
	// of 256 + 1/16 of them.
	InodeRatio int64
	// ReservedPercent of blocks reserved for root: 0 means the default 5,
	// a negative value means none.
	ReservedPercent int
	// JournalBytes: 0 = default size for the filesystem size (see the package
	// documentation), -1 (any negative) = no journal.
	JournalBytes int64
}

// Xattr is one extended attribute with its full name ("user.x",
// "security.capability", "system.posix_acl_access", ...). POSIX ACLs may be
// given in the xattr format returned by getxattr(2) (version 2); they are
// converted to ext4's on-disk ACL format.
type Xattr struct {
	Name  string
	Value []byte
}

// Meta is the metadata of one inode.
type Meta struct {
	Mode     uint32 // permission bits 0o7777; the file type comes from the call
	UID, GID uint32
	Mtime    int64 // seconds; atime, ctime and crtime get the same value
	Xattrs   []Xattr
	Flags    uint32 // extra inode flags, e.g. FlagImmutable
}

type kind uint8

const (
	kindDir kind = iota + 1
	kindFile
	kindSymlink
)

// Node is a directory, regular file or symlink of an FS. A node with several
// names (hard links) is one Node.
type Node struct {
	fs     *FS
	kind   kind
	name   string // first name, for messages
	parent *Node  // first parent, for messages and ".."
	meta   Meta
	xattrs xattrPlacement

	// directories
	children map[string]*Node
	sorted   []string // names in on-disk order; nil when stale
	ndirs    int      // subdirectories, for the link count

	// files
	size int64
	open func() (io.ReadCloser, error)

	// symlinks
	target string

	nlink int // names pointing at a non-directory

	// computed by prepare
	ino  uint32
	nblk uint64 // data blocks (directory blocks, file contents, slow symlink)
}

// FS is a filesystem being described. Create it with New.
type FS struct {
	opts      Options
	root      *Node
	lostFound *Node
	nodes     []*Node // every node, for resetting computed fields
	err       error   // deferred error from New or SetMeta
	prep      *prepared
}

// New returns an empty filesystem holding only the root directory (mode
// 0755, root:root) and lost+found (mode 0700, root:root, 16 KiB). Invalid
// options are reported by WriteTo.
func New(opts Options) *FS {
	f := &FS{opts: opts}
	if len(opts.Label) > 16 {
		f.err = fmt.Errorf("ext4: label %q is %d bytes, at most 16 allowed", opts.Label, len(opts.Label))
	}
	if opts.InodeRatio != 0 && (opts.InodeRatio < 1024 || opts.InodeRatio > 1<<26) {
		f.setErr(fmt.Errorf("ext4: inode ratio %d out of range [1024, 64 MiB]", opts.InodeRatio))
	}
	if opts.ReservedPercent > 50 {
		f.setErr(fmt.Errorf("ext4: reserved percent %d above 50", opts.ReservedPercent))
	}
	if opts.JournalBytes > maxJournalBlocks*blockSize {
		f.setErr(fmt.Errorf("ext4: journal of %d bytes is above the limit of %d blocks", opts.JournalBytes, maxJournalBlocks))
	}
	f.root = f.newNode(kindDir, "", nil, Meta{Mode: 0o755, Mtime: opts.Time})
	f.lostFound = f.newNode(kindDir, "lost+found", f.root, Meta{Mode: 0o700, Mtime: opts.Time})
	f.root.children["lost+found"] = f.lostFound
	f.root.ndirs = 1
	return f
}

func (f *FS) setErr(err error) {
	if f.err == nil {
		f.err = err
	}
}

func (f *FS) newNode(k kind, name string, parent *Node, m Meta) *Node {
	n := &Node{fs: f, kind: k, name: name, parent: parent, meta: m}
	if k == kindDir {
		n.children = make(map[string]*Node)
	} else {
		n.nlink = 1
	}
	f.nodes = append(f.nodes, n)
	f.prep = nil
	return n
}

// Root returns the root directory.
func (f *FS) Root() *Node { return f.root }

// SetMeta replaces the metadata of n (any node, including the root and
// lost+found). An invalid Meta is reported by WriteTo.
func (f *FS) SetMeta(n *Node, m Meta) {
	if err := f.checkNode(n, "SetMeta"); err != nil {
		f.setErr(err)
		return
	}
	xp, err := checkMeta(n.path(), m)
	if err != nil {
		f.setErr(err)
		return
	}
	n.meta, n.xattrs = m, xp
	f.prep = nil
}

// Mkdir adds a directory.
func (f *FS) Mkdir(parent *Node, name string, m Meta) (*Node, error) {
	xp, err := f.checkNew(parent, name, m)
	if err != nil {
		return nil, err
	}
	n := f.newNode(kindDir, name, parent, m)
	n.xattrs = xp
	f.attach(parent, name, n)
	parent.ndirs++
	return n, nil
}

// Create adds a regular file of size bytes. open is called at most once,
// during WriteTo and possibly concurrently with other files' open, and must
// yield exactly size bytes. It is not called for empty files and may be nil
// then.
func (f *FS) Create(parent *Node, name string, m Meta, size int64, open func() (io.ReadCloser, error)) (*Node, error) {
	xp, err := f.checkNew(parent, name, m)
	if err != nil {
		return nil, err
	}
	p := joinPath(parent.path(), name)
	if size < 0 || size > maxFileSize {
		return nil, fmt.Errorf("ext4: %s: file size %d out of range", p, size)
	}
	if size > 0 && open == nil {
		return nil, fmt.Errorf("ext4: %s: no content for %d bytes", p, size)
	}
	n := f.newNode(kindFile, name, parent, m)
	n.xattrs, n.size, n.open = xp, size, open
	f.attach(parent, name, n)
	return n, nil
}

// maxFileSize keeps the last logical block number within 32 bits.
const maxFileSize = (1<<32 - 1) * blockSize

// Symlink adds a symbolic link. Targets shorter than 60 bytes are stored in
// the inode (fast symlink), longer ones (up to 4095 bytes) in one block.
func (f *FS) Symlink(parent *Node, name string, m Meta, target string) (*Node, error) {
	xp, err := f.checkNew(parent, name, m)
	if err != nil {
		return nil, err
	}
	p := joinPath(parent.path(), name)
	if target == "" || len(target) > maxSymlinkLen || strings.IndexByte(target, 0) >= 0 {
		return nil, fmt.Errorf("ext4: %s: invalid symlink target (empty, longer than %d bytes or containing NUL)", p, maxSymlinkLen)
	}
	n := f.newNode(kindSymlink, name, parent, m)
	n.xattrs, n.target = xp, target
	f.attach(parent, name, n)
	return n, nil
}

// Link adds name in parent as another hard link to target, which must be a
// regular file or a symlink of this FS.
func (f *FS) Link(parent *Node, name string, target *Node) error {
	if err := f.checkNode(target, "Link"); err != nil {
		return err
	}
	p := joinPath(parent.path(), name)
	if target.kind == kindDir {
		return fmt.Errorf("ext4: %s: cannot hard link to directory %s", p, target.path())
	}
	if target.nlink >= maxLinks {
		return fmt.Errorf("ext4: %s: %s already has %d links", p, target.path(), target.nlink)
	}
	if err := f.checkEntry(parent, name); err != nil {
		return err
	}
	target.nlink++
	f.attach(parent, name, target)
	return nil
}

// Lookup returns the entry name of directory parent, or nil.
func (f *FS) Lookup(parent *Node, name string) *Node {
	if parent == nil || parent.kind != kindDir {
		return nil
	}
	return parent.children[name]
}

func (f *FS) attach(parent *Node, name string, n *Node) {
	parent.children[name] = n
	parent.sorted = nil
	f.prep = nil
}

func (f *FS) checkNode(n *Node, op string) error {
	if n == nil {
		return fmt.Errorf("ext4: %s: nil node", op)
	}
	if n.fs != f {
		return fmt.Errorf("ext4: %s: %s belongs to another filesystem", op, n.path())
	}
	return nil
}

func (f *FS) checkNew(parent *Node, name string, m Meta) (xattrPlacement, error) {
	if err := f.checkEntry(parent, name); err != nil {
		return xattrPlacement{}, err
	}
	return checkMeta(joinPath(parent.path(), name), m)
}

// checkEntry validates a new directory entry name in parent.
func (f *FS) checkEntry(parent *Node, name string) error {
	if err := f.checkNode(parent, "add entry"); err != nil {
		return err
	}
	p := joinPath(parent.path(), name)
	if parent.kind != kindDir {
		return fmt.Errorf("ext4: %s: parent %s is not a directory", p, parent.path())
	}
	switch {
	case name == "":
		return fmt.Errorf("ext4: %s: empty name", p)
	case name == "." || name == "..":
		return fmt.Errorf("ext4: %s: invalid name %q", p, name)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("ext4: %s: name contains '/' or NUL", p)
	case len(name) > maxNameLen:
		return fmt.Errorf("ext4: %s: name is %d bytes, at most %d allowed", p, len(name), maxNameLen)
	}
	if _, ok := parent.children[name]; ok {
		return fmt.Errorf("ext4: %s: already exists", p)
	}
	return nil
}

func checkMeta(p string, m Meta) (xattrPlacement, error) {
	if m.Flags&^userFlags != 0 {
		return xattrPlacement{}, fmt.Errorf("ext4: %s: unsupported inode flags %#x", p, m.Flags&^userFlags)
	}
	xp, err := placeXattrs(m.Xattrs)
	if err != nil {
		return xattrPlacement{}, fmt.Errorf("ext4: %s: %w", p, err)
	}
	return xp, nil
}

// path is the node's first path, for messages.
func (n *Node) path() string {
	if n == nil {
		return "<nil>"
	}
	if n.parent == nil {
		return "/"
	}
	return joinPath(n.parent.path(), n.name)
}

func joinPath(dir, name string) string {
	if dir == "/" {
		return "/" + name
	}
	return dir + "/" + name
}

// errTooSmall marks layout failures that more space would fix.
var errTooSmall = errors.New("ext4: filesystem too small")
