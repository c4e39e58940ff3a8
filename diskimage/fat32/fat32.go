// Package fat32 writes a FAT32 filesystem (such as an EFI System
// Partition) into a region of a sparse, pre-zeroed file.
//
// It is create-only and deterministic: the tree is built in memory with
// Mkdir and AddFile and written once by WriteTo; the same inputs give the
// same bytes, whatever the order of the calls.
//
// # Format
//
// 512-byte sectors, 32 reserved sectors (boot sector at 0, FSInfo at 1,
// their backups at 6 and 7), two FATs sized exactly for the cluster
// count, media 0xF8, the root directory at cluster 2. Directories and then
// files are allocated contiguously, in a depth-first walk of the tree with
// the entries of each directory sorted by name. Names that are not plain
// upper-case 8.3 names get VFAT long-name entries and a generated short
// name (NAME~1.EXT).
//
// The cluster size follows the table of Microsoft's FAT specification,
// which mkfs.fat also uses for FAT32:
//
//	partition size       cluster size
//	≤ 260 MiB            512 B
//	≤ 8 GiB              4 KiB
//	≤ 16 GiB             8 KiB
//	≤ 32 GiB             16 KiB
//	> 32 GiB (≤ 2 TiB)   32 KiB
//
// FAT32 needs at least 65525 clusters, so the smallest filesystem is
// 66581 sectors (34089472 bytes, about 32.5 MiB).
//
// The FAT size is the smallest that holds an entry for every cluster. When
// the sectors left over after the last whole cluster would let fsck count
// a cluster that the FAT has no entry for, the BPB's total sector count is
// made that much smaller than the partition (by at most one cluster and
// one sector).
package fat32

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// Options are the filesystem's identifiers.
type Options struct {
	// Label is the volume label: up to 11 characters, upper-cased and
	// space-padded; it is written in the boot sector and as the root
	// directory's volume-label entry. Empty means no label ("NO NAME").
	Label string
	// VolumeID is the volume serial number (BS_VolID).
	VolumeID uint32
	// Time is the timestamp of every directory entry, written from its
	// UTC fields and clamped to 1980-01-01..2107-12-31.
	Time time.Time
	// HiddenSectors is BPB_HiddSec: the partition's start LBA (or 0).
	HiddenSectors uint32
}

// FS is a FAT32 filesystem being built.
type FS struct {
	size     int64
	opts     Options
	label    [11]byte
	hasLabel bool
	geo      geometry
	root     *node
}

type node struct {
	name     string // the long name as given
	dir      bool
	parent   *node
	children []*node
	index    map[string]*node // by foldName
	size     int64
	open     func() (io.ReadCloser, error)

	// Set by layout.
	short     [11]byte
	lfn       []uint16 // UTF-16 name when long-name entries are written
	cluster   uint32
	nclusters uint32
}

const (
	sectorSize      = 512
	reservedSectors = 32
	numFATs         = 2
	minClusters     = 65525
	maxClusters     = 0x0FFFFFF5 // cluster numbers 2..0x0FFFFFF6
	maxFileSize     = 0xFFFFFFFF
	maxDirEntries   = 65536
	maxNameUTF16    = 255
)

// MinFSSize is the smallest size New accepts: 65525 clusters of 512 bytes.
const MinFSSize = (reservedSectors + numFATs*((minClusters+2+127)/128) + minClusters) * sectorSize

// New starts a filesystem of size bytes (the partition size; a trailing
// partial sector is ignored). It fails if the size is too small for FAT32
// or larger than 2 TiB, or if the label is not valid.
func New(size int64, opts Options) (*FS, error) {
	f := &FS{size: size, opts: opts, root: &node{dir: true, index: map[string]*node{}}}
	lab, err := volumeLabel(opts.Label)
	if err != nil {
		return nil, err
	}
	f.label, f.hasLabel = lab, strings.TrimSpace(opts.Label) != ""
	if size < 0 {
		return nil, fmt.Errorf("fat32: negative size %d", size)
	}
	geo, err := geometryFor(uint64(size) / sectorSize)
	if err != nil {
		return nil, err
	}
	f.geo = geo
	return f, nil
}

// Mkdir creates the directory p ("/EFI/BOOT") and any missing parents.
// It is a no-op if the directory exists; it fails if p or a parent is a
// file.
func (f *FS) Mkdir(p string) error {
	parts, err := splitPath(p)
	if err != nil {
		return err
	}
	_, err = f.mkdirs(p, parts)
	return err
}

// AddFile adds a regular file of size bytes at p, creating missing parent
// directories. open is called by WriteTo and must yield exactly size
// bytes. It fails if p already exists (names compare case-insensitively).
func (f *FS) AddFile(p string, size int64, open func() (io.ReadCloser, error)) error {
	parts, err := splitPath(p)
	if err != nil {
		return err
	}
	if len(parts) == 0 {
		return fmt.Errorf("fat32: %q: not a file path", p)
	}
	if size < 0 || size > maxFileSize {
		return fmt.Errorf("fat32: %s: size %d out of range for FAT32 (0..%d)", p, size, int64(maxFileSize))
	}
	if open == nil {
		return fmt.Errorf("fat32: %s: nil open function", p)
	}
	// Check the whole path before creating anything.
	d := f.root
	for i, name := range parts {
		c := d.index[foldName(name)]
		if c == nil {
			break
		}
		if i == len(parts)-1 {
			return fmt.Errorf("fat32: %s: already exists", p)
		}
		if !c.dir {
			return fmt.Errorf("fat32: %s: %s is a file", p, "/"+strings.Join(parts[:i+1], "/"))
		}
		d = c
	}
	d, err = f.mkdirs(p, parts[:len(parts)-1])
	if err != nil {
		return err
	}
	d.add(&node{name: parts[len(parts)-1], size: size, open: open})
	return nil
}

func (f *FS) mkdirs(p string, parts []string) (*node, error) {
	d := f.root
	for i, name := range parts {
		c := d.index[foldName(name)]
		if c != nil && !c.dir {
			return nil, fmt.Errorf("fat32: %s: %s is a file", p, "/"+strings.Join(parts[:i+1], "/"))
		}
		if c == nil {
			// Nothing below a missing directory exists, so nothing
			// after this point can fail.
			c = &node{name: name, dir: true, index: map[string]*node{}}
			d.add(c)
		}
		d = c
	}
	return d, nil
}

func (d *node) add(c *node) {
	c.parent = d
	d.children = append(d.children, c)
	d.index[foldName(c.name)] = c
}

// splitPath splits a slash-separated path into validated names.
func splitPath(p string) ([]string, error) {
	var parts []string
	for _, s := range strings.Split(p, "/") {
		if s == "" {
			continue
		}
		if err := checkLongName(s); err != nil {
			return nil, fmt.Errorf("fat32: %q: %w", p, err)
		}
		parts = append(parts, s)
	}
	return parts, nil
}

// checkLongName reports whether s can be a VFAT long name.
func checkLongName(s string) error {
	if s == "." || s == ".." {
		return fmt.Errorf("name %q not allowed", s)
	}
	if !utf8.ValidString(s) {
		return errors.New("name is not valid UTF-8")
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7F || strings.ContainsRune(`"*/:<>?\|`, r) {
			return fmt.Errorf("name %q contains %q, not allowed in FAT names", s, r)
		}
	}
	if strings.HasSuffix(s, ".") || strings.HasSuffix(s, " ") {
		return fmt.Errorf("name %q ends with a period or space", s)
	}
	if n := len(utf16.Encode([]rune(s))); n > maxNameUTF16 {
		return fmt.Errorf("name %q is %d UTF-16 units long (max %d)", s, n, maxNameUTF16)
	}
	return nil
}

// foldName is the key under which names compare case-insensitively.
func foldName(s string) string { return strings.ToUpper(s) }

// volumeLabel validates and pads a volume label.
func volumeLabel(s string) ([11]byte, error) {
	var b [11]byte
	s = strings.TrimRight(s, " ")
	if s == "" {
		copy(b[:], "NO NAME    ")
		return b, nil
	}
	if len(s) > 11 {
		return b, fmt.Errorf("fat32: volume label %q is longer than 11 characters", s)
	}
	if s[0] == ' ' {
		return b, fmt.Errorf("fat32: volume label %q starts with a space", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		if c != ' ' && !shortChar(c) {
			return b, fmt.Errorf("fat32: volume label %q: character %q not allowed", s, s[i])
		}
		b[i] = c
	}
	for i := len(s); i < 11; i++ {
		b[i] = ' '
	}
	return b, nil
}

// shortChar reports whether c may appear in a short (8.3) name.
func shortChar(c byte) bool {
	switch {
	case 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("$%'-_@~`!(){}^#&", c) >= 0
}

// sortedChildren returns d's children sorted by name, for a layout that
// does not depend on the order of the calls.
func (d *node) sortedChildren() []*node {
	c := append([]*node(nil), d.children...)
	sort.Slice(c, func(i, j int) bool {
		a, b := foldName(c[i].name), foldName(c[j].name)
		if a != b {
			return a < b
		}
		return c[i].name < c[j].name
	})
	return c
}

func (n *node) path() string {
	if n.parent == nil {
		return "/"
	}
	var parts []string
	for ; n.parent != nil; n = n.parent {
		parts = append(parts, n.name)
	}
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return "/" + strings.Join(parts, "/")
}
