package delta

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"math/bits"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"pault.ag/go/debian/version"

	"github.com/apt-ostree/apt-ostree-factory/internal/atomicfile"
	"github.com/apt-ostree/apt-ostree-factory/ostree"
	"github.com/apt-ostree/apt-ostree-factory/ostree/gvariant"
)

const (
	// DefaultMaxChunkSize is ostree's default max-chunk-size: 32 MB
	// (32×1000×1000 bytes) of uncompressed object data per part.
	DefaultMaxChunkSize = 32 * 1000 * 1000
	// DefaultMinFallbackSize is ostree's default min-fallback-size: new
	// regular files larger than 4 MB (4×1000×1000 bytes) are left out of the
	// parts and fetched as loose objects.
	DefaultMinFallbackSize = 4 * 1000 * 1000
	// DefaultMaxBsdiffSize bounds old and new file together: 32 MB, a
	// quarter of ostree's max-bsdiff-size, because the suffix array costs
	// 16 bytes per byte of the old file while it is sorted (about 300 MB
	// per worker at this bound).
	DefaultMaxBsdiffSize = 32 * 1000 * 1000
)

// Options control delta generation.
type Options struct {
	// MaxChunkSize is the uncompressed object data per part; 0 means
	// DefaultMaxChunkSize. An object larger than this gets a part of its own.
	MaxChunkSize int64
	// MinFallbackSize: new regular files larger than this become fallback
	// objects (fetched individually by clients). 0 means no fallbacks; use
	// DefaultMinFallbackSize (or DefaultOptions) for ostree's default.
	// Ignored (no fallbacks) when Inline is set.
	MinFallbackSize int64
	// Inline puts the parts inside the superblock's metadata, making the
	// superblock a self-contained file.
	Inline bool
	// Metadata is user metadata placed first in the superblock's a{sv}.
	Metadata ostree.Metadata
	// Time is the superblock's generation time (default now).
	Time time.Time
	// Workers bounds parallel part compression and object reads; 0 means
	// GOMAXPROCS.
	Workers int
	// DisableBsdiff carries modified files whole. By default (as ostree) a
	// regular file that replaces one of the same name and similar size is
	// sent as a bsdiff patch against the old one when that saves space.
	// Patched objects need a bare-family repository on the receiving side
	// (ostree pulls deltas only into those; `apply-offline` into an
	// archive repository needs this set).
	DisableBsdiff bool
	// MaxBsdiffSize bounds old+new size of a patched pair; 0 means
	// DefaultMaxBsdiffSize.
	MaxBsdiffSize int64
	// Level is the xz preset (1-9) for parts. 0 means 8 (ostree's) for
	// deltas from a commit and 1 for deltas from scratch, which are
	// large: xz's fast mode compresses the default recipe's scratch delta
	// in 19 s instead of 36 s (level 3) or 60 s (level 8), for 1-3% more
	// bytes. The dictionary is never larger than a part.
	Level int
	// CompressPacked xz-compresses files that hold compressed streams
	// (xz, zstd, gzip, bzip2) like the rest. By default they go into parts
	// whose xz stream stores them without compression: xz would spend
	// most of a delta's time on them for a gain of about 1%.
	CompressPacked bool
}

// DefaultOptions returns the options `ostree static-delta generate` uses by
// default (32 MB parts, 4 MB fallback threshold).
func DefaultOptions() Options {
	return Options{MaxChunkSize: DefaultMaxChunkSize, MinFallbackSize: DefaultMinFallbackSize}
}

// Result describes a generated delta.
type Result struct {
	// Name is the delta's directory name without the fan-out slash:
	// "<mb64 from>-<mb64 to>", or "<mb64 to>" from scratch.
	Name string
	// ID is the name ostree's CLI and summaries use: "FROMHEX-TOHEX" or "TOHEX".
	ID string
	// Dir is the directory holding superblock and parts (for a bundle: the
	// directory of the bundle file).
	Dir string
	// Path is the superblock (or bundle) file.
	Path      string
	Parts     int
	Fallbacks int
	// Objects is the number of objects carried in the parts; Patched of
	// them as bsdiff patches.
	Objects, Patched int
	// CompressedSize and UncompressedSize sum the parts' header sizes.
	CompressedSize, UncompressedSize int64
	// SuperblockSHA256 is the SHA-256 of the superblock file, as summaries
	// and delta indexes list it.
	SuperblockSHA256 ostree.Checksum
}

// mb64 is OSTree's "modified base64" of a checksum.
func mb64(c ostree.Checksum) string {
	s := base64.StdEncoding.EncodeToString(c[:])
	return strings.ReplaceAll(strings.TrimRight(s, "="), "/", "_")
}

// relDir is the delta's directory relative to the repository, with '/'
// separators ("deltas/XX/rest"), also used as the key prefix in superblocks.
func relDir(from *ostree.Checksum, to ostree.Checksum) string {
	t := mb64(to)
	if from == nil {
		return "deltas/" + t[:2] + "/" + t[2:]
	}
	f := mb64(*from)
	return "deltas/" + f[:2] + "/" + f[2:] + "-" + t
}

func deltaNames(from *ostree.Checksum, to ostree.Checksum) (name, id string) {
	if from == nil {
		return mb64(to), to.String()
	}
	return mb64(*from) + "-" + mb64(to), from.String() + "-" + to.String()
}

func (o *Options) fill() {
	if o.MaxChunkSize <= 0 {
		o.MaxChunkSize = DefaultMaxChunkSize
	}
	if o.MinFallbackSize < 0 || o.Inline {
		o.MinFallbackSize = 0
	}
	if o.Time.IsZero() {
		o.Time = time.Now()
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if o.Level < 0 || o.Level > 9 {
		o.Level = 0
	}
	if o.MaxBsdiffSize <= 0 {
		o.MaxBsdiffSize = DefaultMaxBsdiffSize
	}
}

// Generate writes repo/deltas/<path>/{superblock,0,1,...} for from→to
// (from == nil: from scratch). Files are written to temporary names and
// renamed into place, superblock last; an existing superblock for the same
// delta is removed first so that clients never pair it with new parts.
func Generate(ctx context.Context, repo *ostree.Repo, from *ostree.Checksum, to ostree.Checksum, opts Options) (*Result, error) {
	opts.fill()
	rel := relDir(from, to)
	dir := filepath.Join(repo.Path(), filepath.FromSlash(rel))
	if err := os.MkdirAll(dir, 0o775); err != nil {
		return nil, err
	}
	g, err := newGenerator(ctx, repo, from, to, opts)
	if err != nil {
		return nil, err
	}
	parts, err := g.compressParts(ctx, dir)
	if err != nil {
		return nil, err
	}
	defer removeParts(parts)
	sbPath := filepath.Join(dir, "superblock")
	if err := os.Remove(sbPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if !opts.Inline {
		for i, p := range parts {
			if err := os.Rename(p.path, filepath.Join(dir, strconv.Itoa(i))); err != nil {
				return nil, err
			}
			p.path = ""
		}
	}
	res, err := g.writeSuperblock(dir, sbPath, parts)
	if err != nil {
		return nil, err
	}
	removeStaleParts(dir, len(parts), opts.Inline)
	atomicfile.SyncDir(dir)
	return res, nil
}

// WriteBundle writes one self-contained file at path (inline parts, no
// fallbacks, the to-commit's detached metadata included as ostree does)
// that `ostree static-delta apply-offline` accepts.
func WriteBundle(ctx context.Context, repo *ostree.Repo, from *ostree.Checksum, to ostree.Checksum, path string, opts Options) (*Result, error) {
	opts.Inline = true
	opts.MinFallbackSize = 0
	opts.fill()
	dir := filepath.Dir(path)
	g, err := newGenerator(ctx, repo, from, to, opts)
	if err != nil {
		return nil, err
	}
	parts, err := g.compressParts(ctx, dir)
	if err != nil {
		return nil, err
	}
	defer removeParts(parts)
	res, err := g.writeSuperblock(dir, path, parts)
	if err != nil {
		return nil, err
	}
	atomicfile.SyncDir(dir)
	return res, nil
}

func removeParts(parts []*partFile) {
	for _, p := range parts {
		if p != nil && p.path != "" {
			os.Remove(p.path)
		}
	}
}

// removeStaleParts deletes part files beyond the new delta's last part
// (left by an earlier generation with more parts), and all of them for an
// inline delta.
func removeStaleParts(dir string, n int, inline bool) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		i, err := strconv.Atoi(e.Name())
		if err != nil || i < 0 || strconv.Itoa(i) != e.Name() {
			continue
		}
		if inline || i >= n {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// object is one object to carry in a part.
type object struct {
	name ostree.ObjectName
	meta []byte            // metadata objects: their bytes
	hdr  ostree.FileHeader // content objects
	// A patched content object: the bsdiff patch against source.
	patch  []byte
	source ostree.Checksum
	// packed: the content is already compressed (xz, zstd, gzip, bzip2
	// stream): it goes into a part that is stored, not xz-compressed.
	packed bool
	// machine is the ELF e_machine of an executable or library (0 for
	// other files): parts made mostly of x86 code get xz's x86 filter.
	machine uint16
	// base is a base name of the file in the to-commit (files of the
	// same name are kept in one part: see splitForCores).
	base string
}

// blobLen is the object's byte count in the part's payload blob.
func (o *object) blobLen() uint64 {
	switch {
	case o.name.Type.IsMeta():
		return uint64(len(o.meta))
	case o.patch != nil:
		return uint64(len(o.source) + len(o.patch))
	case o.hdr.Mode&ostree.ModeTypeMask == ostree.ModeSymlink:
		return uint64(len(o.hdr.Symlink))
	}
	return o.hdr.Size
}

type fallback struct {
	name                     ostree.ObjectName
	compressed, uncompressed uint64
}

type generator struct {
	// arm64OK: the to-commit's liblzma (from its package manifest) has
	// the ARM64 filter (the xz tool is asked only when a part needs it).
	arm64OK   bool
	repo      *ostree.Repo
	from      *ostree.Checksum
	to        ostree.Checksum
	opts      Options
	rel       string
	commit    []byte
	parts     []*partPlan
	fallbacks []fallback
}

func newGenerator(ctx context.Context, repo *ostree.Repo, from *ostree.Checksum, to ostree.Checksum, opts Options) (*generator, error) {
	if opts.Level == 0 {
		opts.Level = 8
		if from == nil {
			opts.Level = 1
		}
	}
	g := &generator{repo: repo, from: from, to: to, opts: opts, rel: relDir(from, to)}
	commit, err := repo.ReadMetadata(ostree.ObjectCommit, to)
	if err != nil {
		return nil, err
	}
	toCommit, err := ostree.DecodeCommit(commit)
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", to, err)
	}
	g.commit = commit
	g.arm64OK = liblzmaHasARM64(toCommit.Metadata)

	old := map[ostree.ObjectName]bool{}
	var oldTrees []dirRead // the source's dirtrees, for patches
	newNames := map[ostree.Checksum]string{}
	if from != nil {
		fc, err := repo.ReadCommit(*from)
		if err != nil {
			return nil, fmt.Errorf("from commit: %w", err)
		}
		if old, oldTrees, err = reachable(ctx, repo, fc.RootTree, fc.RootMeta, opts.Workers); err != nil {
			return nil, fmt.Errorf("from commit %s: %w", *from, err)
		}
	}

	// Walk the target, skipping subtrees the source has.
	var metas []*object
	var contents []ostree.Checksum
	seen := map[ostree.ObjectName]bool{}
	addMeta := func(c ostree.Checksum, t ostree.ObjectType) (bool, error) {
		n := ostree.ObjectName{Checksum: c, Type: t}
		if old[n] || seen[n] {
			return false, nil
		}
		seen[n] = true
		b, err := repo.ReadMetadata(t, c)
		if err != nil {
			return false, err
		}
		metas = append(metas, &object{name: n, meta: b})
		return true, nil
	}
	var walk func(tree, meta ostree.Checksum) error
	walk = func(tree, meta ostree.Checksum) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if _, err := addMeta(meta, ostree.ObjectDirMeta); err != nil {
			return err
		}
		isNew, err := addMeta(tree, ostree.ObjectDirTree)
		if err != nil || !isNew {
			return err
		}
		dt, err := ostree.DecodeDirTree(metas[len(metas)-1].meta)
		if err != nil {
			return fmt.Errorf("object %s.dirtree: %w", tree, err)
		}
		for _, f := range dt.Files {
			n := ostree.ObjectName{Checksum: f.Checksum, Type: ostree.ObjectFile}
			if old[n] || seen[n] {
				continue
			}
			seen[n] = true
			contents = append(contents, f.Checksum)
			newNames[f.Checksum] = f.Name
		}
		for _, d := range dt.Dirs {
			if err := walk(d.Tree, d.Meta); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(toCommit.RootTree, toCommit.RootMeta); err != nil {
		return nil, err
	}

	hdrs, peeks, err := readHeaders(ctx, repo, contents, opts.Workers)
	if err != nil {
		return nil, err
	}
	var regular, symlinks, stored []*object
	var objs []*object
	for i, c := range contents {
		objs = append(objs, &object{name: ostree.ObjectName{Checksum: c, Type: ostree.ObjectFile}, hdr: hdrs[i],
			packed: peeks[i].packed, machine: peeks[i].machine, base: newNames[c]})
	}
	var patched []*object
	if from != nil && !opts.DisableBsdiff {
		if patched, err = g.patch(ctx, objs, newNames, oldTrees); err != nil {
			return nil, err
		}
	}
	for _, o := range objs {
		c := o.name.Checksum
		if o.patch != nil {
			continue
		}
		if o.hdr.Mode&ostree.ModeTypeMask == ostree.ModeSymlink {
			symlinks = append(symlinks, o)
			continue
		}
		if opts.MinFallbackSize > 0 && o.hdr.Size > uint64(opts.MinFallbackSize) {
			st, err := os.Stat(contentPath(repo, c))
			if err != nil {
				return nil, err
			}
			g.fallbacks = append(g.fallbacks, fallback{name: o.name, compressed: uint64(st.Size()), uncompressed: o.hdr.Size})
			continue
		}
		if o.packed && !opts.CompressPacked {
			stored = append(stored, o)
			continue
		}
		regular = append(regular, o)
	}

	// Pack: metadata, patched files, regular files, symlinks (ostree's
	// order), then already-compressed files in parts stored as they are
	// (xz would spend most of the time and gain next to nothing); a new
	// part starts when the next object would push a non-empty part's blob
	// past MaxChunkSize. The first part exists even when there is nothing
	// to carry.
	cur := newPartPlan()
	g.parts = append(g.parts, cur)
	pack := func(stored bool, lists ...[]*object) error {
		for _, list := range lists {
			for _, o := range list {
				if cur == nil || len(cur.objects) > 0 && cur.blobLen+o.blobLen() > uint64(opts.MaxChunkSize) {
					cur = newPartPlan()
					cur.stored = stored
					g.parts = append(g.parts, cur)
				}
				if err := cur.add(o); err != nil {
					return err
				}
			}
		}
		return nil
	}
	xzLists := [][]*object{metas, patched, regular, symlinks}
	xzBytes := blobBytes(xzLists)
	var split []splitPart
	if xzBytes <= uint64(opts.MaxChunkSize) {
		split = splitForCores(xzLists, xzBytes, opts.Workers)
	}
	if split != nil {
		g.parts = g.parts[:0]
		for _, sp := range split {
			p := newPartPlan()
			p.fast, p.dictCap = sp.fast, sp.dict
			for _, o := range sp.objs {
				if err := p.add(o); err != nil {
					return nil, err
				}
			}
			g.parts = append(g.parts, p)
		}
	} else if err := pack(false, xzLists...); err != nil {
		return nil, err
	}
	cur = nil
	if err := pack(true, stored); err != nil {
		return nil, err
	}
	for _, p := range g.parts {
		if err := p.finish(); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// contentPath is the archive-mode path of a content object.
func contentPath(repo *ostree.Repo, c ostree.Checksum) string {
	h := c.String()
	return filepath.Join(repo.Path(), "objects", h[:2], h[2:]+".filez")
}

// dirRead is a dirtree object read from the repository.
type dirRead struct {
	sum ostree.Checksum
	dt  *ostree.DirTree
}

// reachable returns every dirtree, dirmeta and content object under a
// root, and the dirtrees read, in checksum order (so that what is built
// from them does not depend on scheduling). Dirtrees are read on up to
// workers goroutines.
func reachable(ctx context.Context, repo *ostree.Repo, tree, meta ostree.Checksum, workers int) (map[ostree.ObjectName]bool, []dirRead, error) {
	var (
		mu    sync.Mutex
		wg    sync.WaitGroup
		reads []dirRead
		errs  []error
		seen  = map[ostree.Checksum]bool{tree: true}
		sem   = make(chan struct{}, max(1, workers))
	)
	var visit func(c ostree.Checksum)
	visit = func(c ostree.Checksum) {
		defer wg.Done()
		if ctx.Err() != nil {
			return
		}
		sem <- struct{}{}
		dt, err := repo.ReadDirTree(c)
		<-sem
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			errs = append(errs, err)
			return
		}
		reads = append(reads, dirRead{c, dt})
		for _, d := range dt.Dirs {
			if !seen[d.Tree] {
				seen[d.Tree] = true
				wg.Add(1)
				go visit(d.Tree)
			}
		}
	}
	wg.Add(1)
	visit(tree)
	wg.Wait()
	if len(errs) > 0 {
		return nil, nil, errs[0]
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	sort.Slice(reads, func(i, j int) bool { return bytes.Compare(reads[i].sum[:], reads[j].sum[:]) < 0 })
	n := 1
	for _, r := range reads {
		n += 1 + len(r.dt.Files) + len(r.dt.Dirs)
	}
	set := make(map[ostree.ObjectName]bool, n)
	set[ostree.ObjectName{Checksum: meta, Type: ostree.ObjectDirMeta}] = true
	for _, r := range reads {
		set[ostree.ObjectName{Checksum: r.sum, Type: ostree.ObjectDirTree}] = true
		for _, f := range r.dt.Files {
			set[ostree.ObjectName{Checksum: f.Checksum, Type: ostree.ObjectFile}] = true
		}
		for _, d := range r.dt.Dirs {
			set[ostree.ObjectName{Checksum: d.Meta, Type: ostree.ObjectDirMeta}] = true
		}
	}
	return set, reads, nil
}

// compressedMagic are the first bytes of xz, zstd, gzip and bzip2
// streams.
var compressedMagic = [][]byte{{0xfd, '7', 'z', 'X', 'Z', 0}, {0x28, 0xb5, 0x2f, 0xfd}, {0x1f, 0x8b}, {'B', 'Z', 'h'}}

// packedMinSize: smaller compressed files stay in xz parts (their
// headers and names compress).
const packedMinSize = 16 << 10

// peek is what the first bytes of a regular file say.
type peek struct {
	packed  bool   // a compressed stream of at least packedMinSize
	machine uint16 // ELF e_machine, 0 if not ELF
}

// readHeaders reads the headers of content objects in parallel, and
// peeks at the first bytes of regular files.
func readHeaders(ctx context.Context, repo *ostree.Repo, sums []ostree.Checksum, workers int) ([]ostree.FileHeader, []peek, error) {
	out := make([]ostree.FileHeader, len(sums))
	peeks := make([]peek, len(sums))
	err := forEach(ctx, len(sums), workers, func(i int) error {
		// Only files large enough to matter are peeked at: a compressed
		// stream below packedMinSize stays in an xz part anyway, and
		// small executables hardly change how code a part is.
		var head [20]byte
		h, n, err := repo.ContentHeader(sums[i], func(h ostree.FileHeader) []byte {
			if h.Size < packedMinSize {
				return nil
			}
			return head[:]
		})
		if err != nil {
			return err
		}
		if h.Mode&ostree.ModeTypeMask == ostree.ModeRegular && n == len(head) {
			for _, m := range compressedMagic {
				if bytes.HasPrefix(head[:], m) && h.Size >= packedMinSize {
					peeks[i].packed = true
				}
			}
			// ELF, little-endian: e_machine at 18.
			if bytes.HasPrefix(head[:], []byte("\x7fELF")) && head[5] == 1 {
				peeks[i].machine = uint16(head[18]) | uint16(head[19])<<8
			}
		}
		out[i] = h
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return out, peeks, nil
}

// forEach calls f(0) ... f(n-1) on up to workers goroutines, stopping
// at the first error or when ctx ends; it returns that error.
func forEach(ctx context.Context, n, workers int, f func(i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, workers)
	var next int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= n {
					return
				}
				if err := ctx.Err(); err != nil {
					errs[w] = err
					return
				}
				if err := f(i); err != nil {
					errs[w] = err
					cancel()
					return
				}
			}
		}(w)
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return ctx.Err()
}

// superblockEntry is one {sv} of the superblock metadata; inline parts are
// taken from a file.
type superblockEntry struct {
	key   string
	value gvariant.Variant
	file  string
	size  int64
}

var (
	typePartHeaders = gvariant.MustParseType("a(uayttay)")
	typeFallbacks   = gvariant.MustParseType("a(yaytt)")
	typeSVEntry     = gvariant.MustParseType("{sv}")
	typeMetaDict    = gvariant.MustParseType("a{sv}")
)

// writeSuperblock assembles the superblock at path (via a temporary file in
// dir) and fills the result.
func (g *generator) writeSuperblock(dir, path string, parts []*partFile) (*Result, error) {
	var entries []superblockEntry
	for _, e := range g.opts.Metadata {
		entries = append(entries, superblockEntry{key: e.Key, value: e.Value})
	}
	entries = append(entries, superblockEntry{key: "ostree.endianness", value: gvariant.NewVariant("y", byte('l'))})
	if g.opts.Inline {
		for i, p := range parts {
			entries = append(entries, superblockEntry{key: g.rel + "/" + strconv.Itoa(i), file: p.path, size: p.size})
		}
	}
	cm, err := g.repo.ReadMetadata(ostree.ObjectCommitMeta, g.to)
	switch {
	case errors.Is(err, ostree.ErrNotFound):
	case err != nil:
		return nil, err
	default:
		v, err := gvariant.Decode(typeMetaDict, cm)
		if err != nil {
			return nil, fmt.Errorf("object %s.commitmeta: %w", g.to, err)
		}
		entries = append(entries, superblockEntry{key: g.rel + "/commitmeta", value: gvariant.Variant{Type: typeMetaDict, Value: v}})
	}

	res := &Result{Dir: dir, Path: path, Parts: len(parts), Fallbacks: len(g.fallbacks)}
	res.Name, res.ID = deltaNames(g.from, g.to)
	headers := make([]any, len(parts))
	for i, p := range parts {
		plan := g.parts[i]
		objs := make([]byte, 0, 33*len(plan.objects))
		for _, o := range plan.objects {
			if o.patch != nil {
				res.Patched++
			}
			objs = append(objs, byte(o.name.Type))
			objs = append(objs, o.name.Checksum[:]...)
		}
		headers[i] = []any{uint32(0), p.sum[:], uint64(p.size), plan.uncompressed, objs}
		res.Objects += len(plan.objects)
		res.CompressedSize += p.size
		res.UncompressedSize += int64(plan.uncompressed)
	}
	fbs := make([]any, len(g.fallbacks))
	for i, f := range g.fallbacks {
		fbs[i] = []any{byte(f.name.Type), f.name.Checksum[:], f.compressed, f.uncompressed}
	}
	hdrBytes, err := gvariant.Encode(typePartHeaders, headers)
	if err != nil {
		return nil, err
	}
	fbBytes, err := gvariant.Encode(typeFallbacks, fbs)
	if err != nil {
		return nil, err
	}
	var fromBytes []byte
	if g.from != nil {
		fromBytes = g.from[:]
	}
	r, err := superblockRope(entries, bits.ReverseBytes64(uint64(g.opts.Time.Unix())), fromBytes, g.to[:], g.commit, hdrBytes, fbBytes)
	if err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(dir, ".superblock-tmp-*")
	if err != nil {
		return nil, err
	}
	tmp := f.Name()
	h := sha256.New()
	err = r.writeTo(f, h)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return nil, err
	}
	h.Sum(res.SuperblockSHA256[:0])
	return res, nil
}

// liblzmaHasARM64 reports whether a commit's package manifest lists a
// liblzma5 of version 5.4 or later, whose decoder has the ARM64 filter.
func liblzmaHasARM64(md ostree.Metadata) bool {
	have, err1 := version.Parse(md.PackageVersion("liblzma5"))
	want, err2 := version.Parse("5.4.0")
	return err1 == nil && err2 == nil && version.Compare(have, want) >= 0
}
