package delta

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/apt-ostree/apt-ostree-factory/ostree"
)

// patchPair is a new regular file and the old file it is patched from.
type patchPair struct {
	obj    *object
	source ostree.Checksum
}

// skipPatch names files whose content is compressed: a binary diff of
// two compressed streams saves nothing.
func skipPatch(name string) bool {
	for _, ext := range []string{".xz", ".bz2", ".gz", ".zst", ".lz4", ".lzma", ".zip", ".deb", ".png", ".jpg"} {
		if strings.HasSuffix(name, ext) {
			return true
		}
	}
	return false
}

// stem is a file name up to its first dot ("libfoo.so.1.2" → "libfoo"),
// how ostree pairs renamed versions of a file.
func stem(name string) string {
	s, _, _ := strings.Cut(name, ".")
	return s
}

// patch finds, for each new regular file, an old file of the same name
// (or, failing that, the same stem) whose size is within 30% of it,
// computes bsdiff patches in parallel, and keeps those that save at least
// half the file. Objects that get a patch have it set and are returned in
// their original order.
func (g *generator) patch(ctx context.Context, objs []*object, newNames map[ostree.Checksum]string, oldTrees []dirRead) ([]*object, error) {
	// The source's files under the names and stems of the new files, in
	// the order of oldTrees.
	wantName, wantStem := map[string]bool{}, map[string]bool{}
	for _, o := range objs {
		if name := newNames[o.name.Checksum]; name != "" {
			wantName[name] = true
			wantStem[stem(name)] = true
		}
	}
	oldNames, oldStems := map[string][]ostree.Checksum{}, map[string][]ostree.Checksum{}
	for _, r := range oldTrees {
		for _, f := range r.dt.Files {
			if wantName[f.Name] {
				oldNames[f.Name] = append(oldNames[f.Name], f.Checksum)
			}
			if s := stem(f.Name); s != "" && wantStem[s] {
				oldStems[s] = append(oldStems[s], f.Checksum)
			}
		}
	}
	// Sizes of the candidate old files, read once.
	oldHdr := map[ostree.Checksum]*ostree.FileHeader{}
	header := func(c ostree.Checksum) (*ostree.FileHeader, error) {
		if h, ok := oldHdr[c]; ok {
			return h, nil
		}
		h, _, err := g.repo.ContentHeader(c, nil)
		if err != nil {
			return nil, fmt.Errorf("source object %s: %w", c, err)
		}
		oldHdr[c] = &h
		return &h, nil
	}
	var pairs []patchPair
	for _, o := range objs {
		if o.hdr.Mode&ostree.ModeTypeMask != ostree.ModeRegular || o.hdr.Size == 0 {
			continue
		}
		name := newNames[o.name.Checksum]
		if skipPatch(name) {
			continue
		}
		cands := oldNames[name]
		if len(cands) == 0 {
			cands = oldStems[stem(name)]
		}
		if len(cands) > 64 { // a common name (e.g. "index.html"): unlikely to be a version of this file
			continue
		}
		var best *ostree.Checksum
		var bestDiff uint64
		for _, c := range cands {
			h, err := header(c)
			if err != nil {
				return nil, err
			}
			if h.Mode&ostree.ModeTypeMask != ostree.ModeRegular || h.Size == 0 {
				continue
			}
			if int64(h.Size+o.hdr.Size) > g.opts.MaxBsdiffSize {
				continue
			}
			lo, hi := o.hdr.Size*7/10, o.hdr.Size*13/10
			if h.Size < lo || h.Size > hi {
				continue
			}
			d := max(h.Size, o.hdr.Size) - min(h.Size, o.hdr.Size)
			if best == nil || d < bestDiff {
				best, bestDiff = &c, d
			}
		}
		if best != nil {
			pairs = append(pairs, patchPair{obj: o, source: *best})
		}
	}
	if len(pairs) == 0 {
		return nil, nil
	}
	// Largest first, so the workers finish together.
	order := make([]int, len(pairs))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return pairs[order[a]].obj.hdr.Size > pairs[order[b]].obj.hdr.Size })
	if err := forEach(ctx, len(order), g.opts.Workers, func(k int) error { return g.patchOne(pairs[order[k]]) }); err != nil {
		return nil, err
	}
	var out []*object
	for _, p := range pairs {
		if p.obj.patch != nil {
			out = append(out, p.obj)
		}
	}
	return out, nil
}

// readAll reads a content object's data (checksum verified at EOF).
func readAll(repo *ostree.Repo, c ostree.Checksum) ([]byte, error) {
	h, rc, err := repo.OpenContent(c)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b := make([]byte, h.Size)
	if _, err := io.ReadFull(rc, b); err != nil {
		return nil, fmt.Errorf("object %s: %w", c, err)
	}
	if _, err := io.Copy(io.Discard, rc); err != nil {
		return nil, fmt.Errorf("object %s: %w", c, err)
	}
	return b, nil
}

func (g *generator) patchOne(p patchPair) error {
	old, err := readAll(g.repo, p.source)
	if err != nil {
		return err
	}
	nw, err := readAll(g.repo, p.obj.name.Checksum)
	if err != nil {
		return err
	}
	patch, st := bsdiff(old, nw)
	if st.significant*2 > len(nw) {
		return nil // mostly new bytes: the plain file compresses as well
	}
	if got, ok := bspatch(old, patch, len(nw)); !ok || !bytes.Equal(got, nw) {
		return fmt.Errorf("object %s: the bsdiff patch against %s does not reproduce it", p.obj.name.Checksum, p.source)
	}
	p.obj.patch, p.obj.source = patch, p.source
	return nil
}
