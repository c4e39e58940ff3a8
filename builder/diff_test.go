package builder

import (
	"strings"
	"testing"

	"github.com/apt-ostree/apt-ostree-factory/ostree"
)

func TestDiffCommits(t *testing.T) {
	repo := newRepo(t)
	commit := func(files map[string]string) ostree.Checksum {
		root := ostree.NewMemDir(ostree.FileMeta{Mode: ostree.ModeDir | 0o755})
		for name, body := range files {
			root.Files[name] = &ostree.MemFile{Header: ostree.FileHeader{FileMeta: ostree.FileMeta{Mode: ostree.ModeRegular | 0o644}, Size: uint64(len(body))}, Data: []byte(body)}
		}
		cr, err := repo.CommitTree(t.Context(), root, ostree.CommitOptions{Orphan: true})
		if err != nil {
			t.Fatal(err)
		}
		return cr.Checksum
	}
	a := commit(map[string]string{"same": "x", "changed": "1", "gone": "g"})
	b := commit(map[string]string{"same": "x", "changed": "2", "new": "n"})
	diff, err := DiffCommits(repo.Path(), a, b, 10)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(diff, "\n")
	for _, want := range []string{"differs: /changed", "only in the first: /gone", "only in the second: /new"} {
		if !strings.Contains(got, want) {
			t.Errorf("diff lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "/same") {
		t.Errorf("unchanged file listed:\n%s", got)
	}
	if diff, _ := DiffCommits(repo.Path(), a, b, 1); len(diff) != 2 || !strings.HasPrefix(diff[1], "... and ") {
		t.Errorf("max not applied: %v", diff)
	}
}
