package builder

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/apt-ostree/apt-ostree-factory/delta"
	"github.com/apt-ostree/apt-ostree-factory/ostree"
	"github.com/apt-ostree/apt-ostree-factory/signing"
)

// PublishOptions describe one publication of a repository.
type PublishOptions struct {
	Repo *ostree.Repo
	// Branches to publish deltas for (default: every branch).
	Branches []string
	// Keys sign the summary (summary.sig); nil publishes it unsigned.
	Keys []signing.Signer
	// Deltas generates, for each branch head, the static delta from its
	// parent (when the parent is in the repository) and, with Scratch,
	// from nothing; existing deltas are kept.
	Deltas  bool
	Scratch bool
	// Retain keeps this many commits per branch (head included) and
	// prunes older ones with the deltas that use them; 0 keeps all.
	Retain int
	// Now is the summary's last-modified time (default now).
	Now    time.Time
	Report Reporter
}

// PublishResult lists what a publication did.
type PublishResult struct {
	Deltas  []*delta.Result
	Pruned  []ostree.Checksum
	Summary []byte
}

// Publish makes a repository's current state visible to clients in the
// order that keeps a concurrent pull consistent: objects and deltas
// first (the build already wrote the objects and moved the refs), then
// the delta indexes, summary.sig and summary. With Retain it then drops
// commits beyond the retention count from the branch histories, the
// deltas that start or end at them, and objects nothing else reaches.
func Publish(ctx context.Context, o PublishOptions) (*PublishResult, error) {
	rep := o.Report
	if rep == nil {
		rep = discardReporter{}
	}
	repo := o.Repo
	refs, names, err := repo.ListRefs()
	if err != nil {
		return nil, err
	}
	branches := o.Branches
	if len(branches) == 0 {
		for _, n := range names {
			if !strings.Contains(n, ":") && !strings.HasPrefix(n, "ostree/") {
				branches = append(branches, n)
			}
		}
	}
	for _, b := range branches {
		if _, ok := refs[b]; !ok {
			return nil, fmt.Errorf("publish: no branch %s in %s", b, repo.Path())
		}
	}
	res := &PublishResult{}
	have := map[string]bool{}
	existing, err := repo.ListDeltas()
	if err != nil {
		return nil, err
	}
	for _, d := range existing {
		have[d.Name()] = true
	}
	if o.Deltas {
		for _, b := range branches {
			head := refs[b]
			cm, err := repo.ReadCommit(head)
			if err != nil {
				return nil, err
			}
			var froms []*ostree.Checksum
			if !cm.Parent.IsZero() {
				if ok, _ := repo.HasObject(cm.Parent, ostree.ObjectCommit); ok {
					p := cm.Parent
					froms = append(froms, &p)
				}
			}
			if o.Scratch {
				froms = append(froms, nil)
			}
			for _, from := range froms {
				name := ostree.Delta{From: from, To: head}.Name()
				if have[name] {
					continue
				}
				rep.Stage("delta")
				t0 := time.Now()
				dr, err := delta.Generate(ctx, repo, from, head, delta.DefaultOptions())
				if err != nil {
					return nil, fmt.Errorf("delta %s: %w", name, err)
				}
				rep.StageDone("delta", time.Since(t0), fmt.Sprintf("%s: %d parts, %d fallbacks, %.1f MB", name, dr.Parts, dr.Fallbacks, float64(dr.CompressedSize)/1e6))
				res.Deltas = append(res.Deltas, dr)
				have[name] = true
			}
		}
	}
	if o.Retain > 0 {
		pruned, err := pruneHistory(repo, branches, refs, o.Retain)
		if err != nil {
			return nil, err
		}
		res.Pruned = pruned
	}
	opts := ostree.SummaryOptions{LastModified: o.Now}
	if len(o.Keys) > 0 {
		opts.Sign = func(b []byte) ([]byte, error) { return signing.SignSummary(b, o.Keys...) }
	}
	if err := repo.Sync(); err != nil {
		return nil, err
	}
	if res.Summary, err = repo.UpdateSummary(opts); err != nil {
		return nil, err
	}
	return res, nil
}

// pruneHistory keeps retain commits of each branch and removes the older
// commits (with their detached metadata), every delta that starts or
// ends at a removed commit, and then every object that no kept commit,
// no ref and no entry of the per-.deb cache reaches. The kept commits'
// parents may then be absent, which ostree treats as a truncated history.
// It holds the repository's lock, so no build writes meanwhile.
func pruneHistory(repo *ostree.Repo, branches []string, refs map[string]ostree.Checksum, retain int) ([]ostree.Checksum, error) {
	unlock, err := repo.Lock(5 * time.Minute)
	if err != nil {
		return nil, err
	}
	defer unlock()
	keep := map[ostree.Checksum]bool{}
	for _, c := range refs {
		keep[c] = true
	}
	var seen []ostree.Checksum
	for _, b := range branches {
		c := refs[b]
		for i := 0; !c.IsZero(); i++ {
			cm, err := repo.ReadCommit(c)
			if errors.Is(err, ostree.ErrNotFound) {
				break
			}
			if err != nil {
				return nil, err
			}
			if i < retain {
				keep[c] = true
			}
			seen = append(seen, c)
			c = cm.Parent
		}
	}
	var drop []ostree.Checksum
	for _, c := range seen {
		if !keep[c] {
			drop = append(drop, c)
			keep[c] = true // listed once
		}
	}
	for _, c := range drop {
		delete(keep, c)
	}
	sort.Slice(drop, func(i, j int) bool { return drop[i].String() < drop[j].String() })
	deltas, err := repo.ListDeltas()
	if err != nil {
		return nil, err
	}
	dropped := map[ostree.Checksum]bool{}
	for _, c := range drop {
		dropped[c] = true
	}
	// Deltas first (they name the commits), then the commits.
	for _, d := range deltas {
		if dropped[d.To] || (d.From != nil && dropped[*d.From]) {
			if err := os.RemoveAll(filepath.Join(repo.Path(), ostree.DeltaDir(d.From, d.To))); err != nil {
				return nil, err
			}
		}
	}
	// Everything the kept commits and the per-.deb cache reach.
	reach := map[string]bool{}
	var tree func(dt, dm ostree.Checksum) error
	tree = func(dt, dm ostree.Checksum) error {
		reach[dm.String()+".dirmeta"] = true
		key := dt.String() + ".dirtree"
		if reach[key] {
			return nil
		}
		reach[key] = true
		t, err := repo.ReadDirTree(dt)
		if err != nil {
			return err
		}
		for _, f := range t.Files {
			reach[f.Checksum.String()+".filez"] = true
		}
		for _, d := range t.Dirs {
			if err := tree(d.Tree, d.Meta); err != nil {
				return err
			}
		}
		return nil
	}
	roots := []ostree.Checksum{}
	for c := range keep {
		roots = append(roots, c)
	}
	cacheEntries, err := os.ReadDir(filepath.Join(repo.Path(), DebCacheDir))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for _, e := range cacheEntries {
		if c, err := CachedCommit(repo, e.Name()); err == nil {
			roots = append(roots, c)
		}
	}
	for _, c := range roots {
		cm, err := repo.ReadCommit(c)
		if err != nil {
			return nil, err
		}
		reach[c.String()+".commit"] = true
		reach[c.String()+".commitmeta"] = true
		if err := tree(cm.RootTree, cm.RootMeta); err != nil {
			return nil, err
		}
	}
	objects := filepath.Join(repo.Path(), "objects")
	fanout, err := os.ReadDir(objects)
	if err != nil {
		return nil, err
	}
	for _, d := range fanout {
		if !d.IsDir() || len(d.Name()) != 2 {
			continue
		}
		files, err := os.ReadDir(filepath.Join(objects, d.Name()))
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			if !reach[d.Name()+f.Name()] {
				if err := os.Remove(filepath.Join(objects, d.Name(), f.Name())); err != nil {
					return nil, err
				}
			}
		}
	}
	return drop, nil
}
