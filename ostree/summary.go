package ostree

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"math/bits"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/apt-ostree/apt-ostree-factory/internal/atomicfile"
	"github.com/apt-ostree/apt-ostree-factory/ostree/gvariant"
)

var typeSummary = gvariant.MustParseType("(a(s(taya{sv}))a{sv})")

// DeltaDir is the directory of a static delta under the repository:
// deltas/<from mb64 split after 2>-<to mb64>, or deltas/<to split> from
// scratch (OSTree's "modified base64": standard base64 without the
// trailing "=", "/" replaced by "_").
func DeltaDir(from *Checksum, to Checksum) string {
	t := mb64(to)
	if from == nil {
		return filepath.Join("deltas", t[:2], t[2:])
	}
	f := mb64(*from)
	return filepath.Join("deltas", f[:2], f[2:]+"-"+t)
}

func mb64(c Checksum) string {
	s := base64.StdEncoding.EncodeToString(c[:])
	return strings.ReplaceAll(strings.TrimRight(s, "="), "/", "_")
}

func fromMb64(s string) (Checksum, error) {
	b, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(s, "_", "/") + "=")
	if err != nil || len(b) != 32 {
		return Checksum{}, fmt.Errorf("%q is not a modified-base64 checksum", s)
	}
	var c Checksum
	copy(c[:], b)
	return c, nil
}

// Delta is a static delta found in a repository.
type Delta struct {
	From       *Checksum
	To         Checksum
	Superblock Checksum // SHA-256 of the superblock file
}

// Name is the delta's name as summaries list it: FROMHEX-TOHEX or TOHEX.
func (d Delta) Name() string {
	if d.From == nil {
		return d.To.String()
	}
	return d.From.String() + "-" + d.To.String()
}

// ListDeltas finds the static deltas under REPO/deltas (those with a
// superblock), sorted by name.
func (r *Repo) ListDeltas() ([]Delta, error) {
	root := filepath.Join(r.path, "deltas")
	prefixes, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Delta
	for _, p := range prefixes {
		if !p.IsDir() || len(p.Name()) != 2 {
			continue
		}
		rests, err := os.ReadDir(filepath.Join(root, p.Name()))
		if err != nil {
			return nil, err
		}
		for _, rest := range rests {
			sb := filepath.Join(root, p.Name(), rest.Name(), "superblock")
			data, err := os.ReadFile(sb)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, err
			}
			var d Delta
			name := p.Name() + rest.Name()
			if f, t, ok := strings.Cut(name, "-"); ok {
				fc, err1 := fromMb64(f)
				tc, err2 := fromMb64(t)
				if err1 != nil || err2 != nil {
					continue
				}
				d.From, d.To = &fc, tc
			} else {
				tc, err := fromMb64(name)
				if err != nil {
					continue
				}
				d.To = tc
			}
			d.Superblock = sha256.Sum256(data)
			out = append(out, d)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out, nil
}

// SummaryOptions control UpdateSummary.
type SummaryOptions struct {
	// LastModified is ostree.summary.last-modified (default now).
	LastModified time.Time
	// Sign, when set, returns the summary.sig content (an a{sv} such as
	// {"ostree.gpgsigs": aay}) for the summary bytes.
	Sign func(summary []byte) ([]byte, error)
}

// UpdateSummary writes the delta indexes, then summary.sig and summary
// (each to a temporary file renamed into place), listing the branches
// (refs/heads), their commits' size, timestamp and version, and the
// static deltas. Objects, deltas and refs must already be in place.
func (r *Repo) UpdateSummary(opts SummaryOptions) ([]byte, error) {
	if err := r.requireArchive(); err != nil {
		return nil, err
	}
	refs, names, err := r.ListRefs()
	if err != nil {
		return nil, err
	}
	var entries []any
	sort.Strings(names)
	for _, name := range names {
		if strings.Contains(name, ":") {
			continue // remote refs are not published
		}
		c := refs[name]
		data, err := r.ReadMetadata(ObjectCommit, c)
		if err != nil {
			return nil, fmt.Errorf("ref %s: %w", name, err)
		}
		cm, err := DecodeCommit(data)
		if err != nil {
			return nil, fmt.Errorf("ref %s: %w", name, err)
		}
		meta := []gvariant.DictEntry{{Key: "ostree.commit.timestamp", Value: gvariant.NewVariant("t", bits.ReverseBytes64(uint64(cm.Timestamp.Unix())))}}
		if v, ok := cm.Metadata.String("version"); ok {
			meta = append(meta, gvariant.DictEntry{Key: "ostree.commit.version", Value: gvariant.NewVariant("s", v)})
		}
		entries = append(entries, []any{name, []any{uint64(len(data)), c[:], meta}})
	}
	deltas, err := r.ListDeltas()
	if err != nil {
		return nil, err
	}
	// Delta indexes: every delta to a commit, by target.
	byTarget := map[Checksum][]gvariant.DictEntry{}
	var deltaList []gvariant.DictEntry
	for _, d := range deltas {
		sb := d.Superblock
		e := gvariant.DictEntry{Key: d.Name(), Value: gvariant.NewVariant("ay", sb[:])}
		deltaList = append(deltaList, e)
		byTarget[d.To] = append(byTarget[d.To], e)
	}
	for to, list := range byTarget {
		idx, err := gvariant.Encode(typeMetadataDict, []gvariant.DictEntry{{Key: "ostree.static-deltas", Value: gvariant.NewVariant("a{sv}", list)}})
		if err != nil {
			return nil, err
		}
		t := mb64(to)
		p := filepath.Join(r.path, "delta-indexes", t[:2], t[2:]+".index")
		if err := os.MkdirAll(filepath.Dir(p), 0o775); err != nil {
			return nil, err
		}
		if err := atomicfile.WriteFile(p, idx, 0o644); err != nil {
			return nil, err
		}
	}
	lm := opts.LastModified
	if lm.IsZero() {
		lm = time.Now()
	}
	extra := []gvariant.DictEntry{
		{Key: "ostree.summary.indexed-deltas", Value: gvariant.NewVariant("b", true)},
		{Key: "ostree.summary.last-modified", Value: gvariant.NewVariant("t", bits.ReverseBytes64(uint64(lm.Unix())))},
		{Key: "ostree.summary.mode", Value: gvariant.NewVariant("s", string(r.mode))},
		{Key: "ostree.summary.tombstone-commits", Value: gvariant.NewVariant("b", false)},
	}
	if len(deltaList) > 0 {
		extra = append(extra, gvariant.DictEntry{Key: "ostree.static-deltas", Value: gvariant.NewVariant("a{sv}", deltaList)})
	}
	if entries == nil {
		entries = []any{}
	}
	summary, err := gvariant.Encode(typeSummary, []any{entries, extra})
	if err != nil {
		return nil, err
	}
	// summary.sig first: a client that reads the new summary finds its
	// signature; one that still reads the old summary with the new
	// signature fails verification and retries, it never trusts a mix.
	sigPath := filepath.Join(r.path, "summary.sig")
	if opts.Sign != nil {
		sig, err := opts.Sign(summary)
		if err != nil {
			return nil, err
		}
		if err := atomicfile.WriteFile(sigPath, sig, 0o644); err != nil {
			return nil, err
		}
	} else if err := os.Remove(sigPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err := atomicfile.WriteFile(filepath.Join(r.path, "summary"), summary, 0o644); err != nil {
		return nil, err
	}
	return summary, nil
}

// SummaryRefs decodes a summary's ref list.
func SummaryRefs(b []byte) (map[string]Checksum, error) {
	v, err := gvariant.Decode(typeSummary, b)
	if err != nil {
		return nil, err
	}
	out := map[string]Checksum{}
	for _, e := range v.([]any)[0].([]any) {
		t := e.([]any)
		inner := t[1].([]any)
		var c Checksum
		copy(c[:], inner[1].([]byte))
		out[t[0].(string)] = c
	}
	return out, nil
}
