package ostree

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/bits"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/apt-ostree/apt-ostree-factory/ostree/gvariant"
)

// File type bits of a mode, as in struct stat.
const (
	ModeTypeMask = 0o170000
	ModeDir      = 0o040000
	ModeRegular  = 0o100000
	ModeSymlink  = 0o120000
	ModePermMask = 0o7777
)

var (
	typeDirMeta      = gvariant.MustParseType("(uuua(ayay))")
	typeDirTree      = gvariant.MustParseType("(a(say)a(sayay))")
	typeCommit       = gvariant.MustParseType("(a{sv}aya(say)sstayay)")
	typeFileHeader   = gvariant.MustParseType("(uuuusa(ayay))")
	typeArchiveHdr   = gvariant.MustParseType("(tuuuusa(ayay))")
	typeMetadataDict = gvariant.MustParseType("a{sv}")
	typeXattrs       = gvariant.MustParseType("a(ayay)")
)

// Xattr is one extended attribute. Name is without the trailing NUL that
// OSTree stores.
type Xattr struct {
	Name  string
	Value []byte
}

// FileMeta is the ownership, mode and extended attributes of a file or
// directory. Mode includes the file type bits.
type FileMeta struct {
	UID, GID uint32
	Mode     uint32
	Xattrs   []Xattr
}

func be32(x uint32) uint32 { return bits.ReverseBytes32(x) }

// sortedXattrs returns xattrs sorted by name, rejecting duplicates and names
// OSTree cannot store.
func sortedXattrs(xs []Xattr) ([]Xattr, error) {
	if len(xs) == 0 {
		return nil, nil
	}
	out := append([]Xattr(nil), xs...)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	for i, x := range out {
		if x.Name == "" || strings.IndexByte(x.Name, 0) >= 0 {
			return nil, fmt.Errorf("invalid xattr name %q", x.Name)
		}
		if i > 0 && out[i-1].Name == x.Name {
			return nil, fmt.Errorf("duplicate xattr %q", x.Name)
		}
	}
	return out, nil
}

func xattrsValue(xs []Xattr) ([]any, error) {
	sorted, err := sortedXattrs(xs)
	if err != nil {
		return nil, err
	}
	v := make([]any, len(sorted))
	for i, x := range sorted {
		name := make([]byte, len(x.Name)+1)
		copy(name, x.Name)
		val := x.Value
		if val == nil {
			val = []byte{}
		}
		v[i] = []any{name, val}
	}
	return v, nil
}

// EncodeXattrs serialises an xattr list (a(ayay), names NUL-terminated,
// sorted by name) as content headers and static-delta parts carry it.
func EncodeXattrs(xs []Xattr) ([]byte, error) {
	v, err := xattrsValue(xs)
	if err != nil {
		return nil, err
	}
	return gvariant.Encode(typeXattrs, v)
}

func xattrsFromValue(v any) ([]Xattr, error) {
	list := v.([]any)
	if len(list) == 0 {
		return nil, nil
	}
	out := make([]Xattr, len(list))
	for i, e := range list {
		pair := e.([]any)
		name := pair[0].([]byte)
		if len(name) < 2 || name[len(name)-1] != 0 || bytes.IndexByte(name[:len(name)-1], 0) >= 0 {
			return nil, fmt.Errorf("invalid xattr name %q", name)
		}
		out[i] = Xattr{Name: string(name[:len(name)-1]), Value: pair[1].([]byte)}
	}
	return out, nil
}

// EncodeDirMeta serialises a directory's metadata object.
func EncodeDirMeta(m FileMeta) ([]byte, error) {
	if m.Mode&ModeTypeMask != ModeDir || m.Mode&^(ModeTypeMask|ModePermMask) != 0 {
		return nil, fmt.Errorf("invalid directory mode %#o", m.Mode)
	}
	xs, err := xattrsValue(m.Xattrs)
	if err != nil {
		return nil, err
	}
	return gvariant.Encode(typeDirMeta, []any{be32(m.UID), be32(m.GID), be32(m.Mode), xs})
}

// DecodeDirMeta parses a dirmeta object.
func DecodeDirMeta(b []byte) (FileMeta, error) {
	v, err := gvariant.Decode(typeDirMeta, b)
	if err != nil {
		return FileMeta{}, err
	}
	f := v.([]any)
	m := FileMeta{UID: be32(f[0].(uint32)), GID: be32(f[1].(uint32)), Mode: be32(f[2].(uint32))}
	if m.Xattrs, err = xattrsFromValue(f[3]); err != nil {
		return FileMeta{}, err
	}
	if m.Mode&ModeTypeMask != ModeDir || m.Mode&^(ModeTypeMask|ModePermMask) != 0 {
		return FileMeta{}, fmt.Errorf("invalid directory mode %#o", m.Mode)
	}
	return m, nil
}

// FileHeader describes a content object: metadata plus, for symlinks, the target.
type FileHeader struct {
	FileMeta
	Symlink string // target, when Mode is a symlink
	Size    uint64 // content size of regular files (not hashed; stored in archive headers)
}

func (h *FileHeader) validate() error {
	switch h.Mode & ModeTypeMask {
	case ModeRegular:
		if h.Symlink != "" {
			return fmt.Errorf("regular file with a symlink target")
		}
	case ModeSymlink:
		if h.Symlink == "" {
			return fmt.Errorf("symlink with an empty target")
		}
		if h.Size != 0 {
			return fmt.Errorf("symlink with content size %d", h.Size)
		}
	default:
		return fmt.Errorf("unsupported file mode %#o: only regular files and symlinks can be stored", h.Mode)
	}
	if h.Mode&^(ModeTypeMask|ModePermMask) != 0 {
		return fmt.Errorf("invalid file mode %#o", h.Mode)
	}
	if strings.IndexByte(h.Symlink, 0) >= 0 || !utf8.ValidString(h.Symlink) {
		return fmt.Errorf("symlink target %q cannot be stored", h.Symlink)
	}
	return nil
}

// checksumHeader returns the size-prefixed header that starts the content
// checksum stream: BE32 length, 4 zero bytes, (uuuusa(ayay)).
func (h *FileHeader) checksumHeader() ([]byte, error) {
	if err := h.validate(); err != nil {
		return nil, err
	}
	xs, err := xattrsValue(h.Xattrs)
	if err != nil {
		return nil, err
	}
	b, err := gvariant.AppendEncode(make([]byte, 8, 64), typeFileHeader,
		[]any{be32(h.UID), be32(h.GID), be32(h.Mode), uint32(0), h.Symlink, xs})
	if err != nil {
		return nil, err
	}
	binary.BigEndian.PutUint32(b[0:4], uint32(len(b)-8))
	return b, nil
}

// archiveHeader returns the header of an archive-mode .filez object.
func (h *FileHeader) archiveHeader() ([]byte, error) {
	if err := h.validate(); err != nil {
		return nil, err
	}
	xs, err := xattrsValue(h.Xattrs)
	if err != nil {
		return nil, err
	}
	b, err := gvariant.AppendEncode(make([]byte, 8, 72), typeArchiveHdr,
		[]any{bits.ReverseBytes64(h.Size), be32(h.UID), be32(h.GID), be32(h.Mode), uint32(0), h.Symlink, xs})
	if err != nil {
		return nil, err
	}
	binary.BigEndian.PutUint32(b[0:4], uint32(len(b)-8))
	return b, nil
}

// parseArchiveHeader reads the header at the start of a .filez object and
// returns it with the number of bytes it occupies.
func parseArchiveHeader(b []byte) (FileHeader, int, error) {
	if len(b) < 8 {
		return FileHeader{}, 0, fmt.Errorf("truncated file header")
	}
	n := int(binary.BigEndian.Uint32(b[0:4]))
	if binary.BigEndian.Uint32(b[4:8]) != 0 {
		return FileHeader{}, 0, fmt.Errorf("non-zero padding after the header length")
	}
	if n > len(b)-8 || n > 1<<20 {
		return FileHeader{}, 0, fmt.Errorf("file header length %d out of range", n)
	}
	v, err := gvariant.Decode(typeArchiveHdr, b[8:8+n])
	if err != nil {
		return FileHeader{}, 0, err
	}
	f := v.([]any)
	h := FileHeader{
		Size:     bits.ReverseBytes64(f[0].(uint64)),
		FileMeta: FileMeta{UID: be32(f[1].(uint32)), GID: be32(f[2].(uint32)), Mode: be32(f[3].(uint32))},
		Symlink:  f[5].(string),
	}
	if rdev := f[4].(uint32); rdev != 0 {
		return FileHeader{}, 0, fmt.Errorf("invalid rdev %d", be32(rdev))
	}
	if h.Xattrs, err = xattrsFromValue(f[6]); err != nil {
		return FileHeader{}, 0, err
	}
	if err := h.validate(); err != nil {
		return FileHeader{}, 0, err
	}
	return h, 8 + n, nil
}

// DirTreeFile is a file entry of a directory tree.
type DirTreeFile struct {
	Name     string
	Checksum Checksum
}

// DirTreeDir is a subdirectory entry of a directory tree.
type DirTreeDir struct {
	Name string
	Tree Checksum
	Meta Checksum
}

// DirTree lists a directory's entries. Encoding sorts both lists by name,
// bytewise, as OSTree's lookups require.
type DirTree struct {
	Files []DirTreeFile
	Dirs  []DirTreeDir
}

// ValidName reports whether name can be a directory entry in OSTree.
func ValidName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("invalid file name %q", name)
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("file name %q is not valid UTF-8, which OSTree cannot store", name)
	}
	return nil
}

// EncodeDirTree serialises a dirtree object.
func EncodeDirTree(t *DirTree) ([]byte, error) {
	files := append([]DirTreeFile(nil), t.Files...)
	dirs := append([]DirTreeDir(nil), t.Dirs...)
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	sort.Slice(dirs, func(i, j int) bool { return dirs[i].Name < dirs[j].Name })
	fv := make([]any, len(files))
	for i := range files {
		if err := ValidName(files[i].Name); err != nil {
			return nil, err
		}
		if i > 0 && files[i-1].Name == files[i].Name {
			return nil, fmt.Errorf("duplicate entry %q", files[i].Name)
		}
		fv[i] = []any{files[i].Name, files[i].Checksum[:]}
	}
	dv := make([]any, len(dirs))
	for i := range dirs {
		if err := ValidName(dirs[i].Name); err != nil {
			return nil, err
		}
		if i > 0 && dirs[i-1].Name == dirs[i].Name {
			return nil, fmt.Errorf("duplicate entry %q", dirs[i].Name)
		}
		dv[i] = []any{dirs[i].Name, dirs[i].Tree[:], dirs[i].Meta[:]}
	}
	return gvariant.Encode(typeDirTree, []any{fv, dv})
}

// DecodeDirTree parses a dirtree object.
func DecodeDirTree(b []byte) (*DirTree, error) {
	v, err := gvariant.Decode(typeDirTree, b)
	if err != nil {
		return nil, err
	}
	f := v.([]any)
	t := &DirTree{}
	for _, e := range f[0].([]any) {
		p := e.([]any)
		c, err := checksumFromBytes(p[1].([]byte))
		if err != nil {
			return nil, err
		}
		name := p[0].(string)
		if err := ValidName(name); err != nil {
			return nil, err
		}
		t.Files = append(t.Files, DirTreeFile{Name: name, Checksum: c})
	}
	for _, e := range f[1].([]any) {
		p := e.([]any)
		tc, err := checksumFromBytes(p[1].([]byte))
		if err != nil {
			return nil, err
		}
		mc, err := checksumFromBytes(p[2].([]byte))
		if err != nil {
			return nil, err
		}
		name := p[0].(string)
		if err := ValidName(name); err != nil {
			return nil, err
		}
		t.Dirs = append(t.Dirs, DirTreeDir{Name: name, Tree: tc, Meta: mc})
	}
	return t, nil
}

// MetadataEntry is one key of a commit's (or detached) metadata.
type MetadataEntry struct {
	Key   string
	Value gvariant.Variant
}

// Metadata is an ordered a{sv}. Order is part of the serialised bytes and
// therefore of a commit's checksum.
type Metadata []MetadataEntry

// Get returns the value of key, if present.
func (m Metadata) Get(key string) (gvariant.Variant, bool) {
	for _, e := range m {
		if e.Key == key {
			return e.Value, true
		}
	}
	return gvariant.Variant{}, false
}

// String returns the value of a string-typed key.
func (m Metadata) String(key string) (string, bool) {
	v, ok := m.Get(key)
	if !ok {
		return "", false
	}
	s, ok := v.Value.(string)
	return s, ok
}

// Set replaces key's value, or appends it.
func (m *Metadata) Set(key string, v gvariant.Variant) {
	for i := range *m {
		if (*m)[i].Key == key {
			(*m)[i].Value = v
			return
		}
	}
	*m = append(*m, MetadataEntry{Key: key, Value: v})
}

func (m Metadata) value() []gvariant.DictEntry {
	out := make([]gvariant.DictEntry, len(m))
	for i, e := range m {
		out[i] = gvariant.DictEntry{Key: e.Key, Value: e.Value}
	}
	return out
}

func metadataFromValue(v any) (Metadata, error) {
	entries := v.([]gvariant.DictEntry)
	m := make(Metadata, len(entries))
	for i, e := range entries {
		k := e.Key.(string)
		if k == "" {
			return nil, fmt.Errorf("empty metadata key")
		}
		m[i] = MetadataEntry{Key: k, Value: e.Value.(gvariant.Variant)}
	}
	return m, nil
}

// EncodeMetadata serialises an a{sv} (detached metadata, summary.sig).
func EncodeMetadata(m Metadata) ([]byte, error) {
	return gvariant.Encode(typeMetadataDict, m.value())
}

// DecodeMetadata parses an a{sv}.
func DecodeMetadata(b []byte) (Metadata, error) {
	v, err := gvariant.Decode(typeMetadataDict, b)
	if err != nil {
		return nil, err
	}
	return metadataFromValue(v)
}

// RelatedObject is an entry of a commit's related-objects list (unused by
// current OSTree, kept so commits read back re-serialise identically).
type RelatedObject struct {
	Name     string
	Checksum []byte
}

// Commit is a commit object.
type Commit struct {
	Metadata  Metadata
	Parent    Checksum // zero for a commit without parent
	Related   []RelatedObject
	Subject   string
	Body      string
	Timestamp time.Time // whole seconds, UTC
	RootTree  Checksum
	RootMeta  Checksum
}

// EncodeCommit serialises a commit object.
func EncodeCommit(c *Commit) ([]byte, error) {
	var parent []byte
	if !c.Parent.IsZero() {
		parent = c.Parent[:]
	}
	rel := make([]any, len(c.Related))
	for i, r := range c.Related {
		rel[i] = []any{r.Name, r.Checksum}
	}
	ts := c.Timestamp.Unix()
	if ts < 0 {
		return nil, fmt.Errorf("commit timestamp %v before 1970", c.Timestamp)
	}
	return gvariant.Encode(typeCommit, []any{
		c.Metadata.value(), parent, rel, c.Subject, c.Body,
		bits.ReverseBytes64(uint64(ts)), c.RootTree[:], c.RootMeta[:],
	})
}

// DecodeCommit parses a commit object.
func DecodeCommit(b []byte) (*Commit, error) {
	v, err := gvariant.Decode(typeCommit, b)
	if err != nil {
		return nil, err
	}
	f := v.([]any)
	c := &Commit{Subject: f[3].(string), Body: f[4].(string)}
	if c.Metadata, err = metadataFromValue(f[0]); err != nil {
		return nil, err
	}
	if p := f[1].([]byte); len(p) != 0 {
		if c.Parent, err = checksumFromBytes(p); err != nil {
			return nil, fmt.Errorf("parent: %w", err)
		}
	}
	for _, r := range f[2].([]any) {
		p := r.([]any)
		c.Related = append(c.Related, RelatedObject{Name: p[0].(string), Checksum: p[1].([]byte)})
	}
	c.Timestamp = time.Unix(int64(bits.ReverseBytes64(f[5].(uint64))), 0).UTC()
	if c.RootTree, err = checksumFromBytes(f[6].([]byte)); err != nil {
		return nil, fmt.Errorf("root tree: %w", err)
	}
	if c.RootMeta, err = checksumFromBytes(f[7].([]byte)); err != nil {
		return nil, fmt.Errorf("root dirmeta: %w", err)
	}
	return c, nil
}
