package builder

import (
	"fmt"
	"sort"

	"github.com/apt-ostree/apt-ostree-factory/ostree"
)

// DiffCommits lists up to max paths whose entries differ between two
// commits of a repository (content, mode, owner, xattrs or type), then
// differences of the commit objects themselves: what a failed
// reproducibility check needs to show.
func DiffCommits(repoPath string, a, b ostree.Checksum, max int) ([]string, error) {
	repo, err := ostree.Open(repoPath)
	if err != nil {
		return nil, err
	}
	entries := func(c ostree.Checksum) (map[string]string, error) {
		out := map[string]string{}
		err := repo.Walk(c, "/", true, func(e *ostree.TreeEntry) error {
			out[e.Path] = fmt.Sprintf("%o %d:%d %s %s %v", e.Meta.Mode, e.Meta.UID, e.Meta.GID, e.Checksum, e.Symlink, e.Meta.Xattrs)
			return nil
		})
		return out, err
	}
	ea, err := entries(a)
	if err != nil {
		return nil, err
	}
	eb, err := entries(b)
	if err != nil {
		return nil, err
	}
	var diff []string
	for p, va := range ea {
		vb, ok := eb[p]
		switch {
		case !ok:
			diff = append(diff, "only in the first: "+p)
		case va != vb:
			diff = append(diff, "differs: "+p)
		}
	}
	for p := range eb {
		if _, ok := ea[p]; !ok {
			diff = append(diff, "only in the second: "+p)
		}
	}
	sort.Strings(diff)
	ca, err1 := repo.ReadCommit(a)
	cb, err2 := repo.ReadCommit(b)
	if err1 == nil && err2 == nil {
		if ca.Parent != cb.Parent {
			diff = append(diff, "commit parents differ")
		}
		if !ca.Timestamp.Equal(cb.Timestamp) {
			diff = append(diff, "commit timestamps differ")
		}
		if len(diff) == 0 {
			diff = append(diff, "commit metadata differs")
		}
	}
	if len(diff) > max {
		diff = append(diff[:max], fmt.Sprintf("... and %d more", len(diff)-max))
	}
	return diff, nil
}
