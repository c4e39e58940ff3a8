package ostree

import (
	"context"
	"encoding/hex"
	"testing"
	"time"
)

// The worked example of ostree-format.md §2.8, produced by ostree 2022.7:
// hello (0644), link -> hello, sub/x (0755), committed with
// --owner-uid=0 --owner-gid=0 --no-xattrs -b test -s subj -m body at 2020-01-01.
func exampleTree() *MemDir {
	dirMeta := FileMeta{Mode: ModeDir | 0o755}
	root := NewMemDir(dirMeta)
	root.Files["hello"] = &MemFile{Header: FileHeader{FileMeta: FileMeta{Mode: ModeRegular | 0o644}, Size: 6}, Data: []byte("hello\n")}
	root.Files["link"] = &MemFile{Header: FileHeader{FileMeta: FileMeta{Mode: ModeSymlink | 0o777}, Symlink: "hello"}}
	sub := NewMemDir(dirMeta)
	sub.Files["x"] = &MemFile{Header: FileHeader{FileMeta: FileMeta{Mode: ModeRegular | 0o755}, Size: 1}, Data: []byte("x")}
	root.Dirs["sub"] = sub
	return root
}

func TestKnownCommitChecksum(t *testing.T) {
	repo, err := Init(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	res, err := repo.CommitTree(context.Background(), exampleTree(), CommitOptions{
		Branch: "test", Subject: "subj", Body: "body",
		Timestamp: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"commit":    "defe4c578434aae15825027dbb6b485022ae10da84cac8f9640897fd8e7abba3",
		"root tree": "602f453ee41f3d12af2adcc8247b69b2dbcfd2ed195736e1ed5d3359b6b47c1b",
		"root meta": "446a0ef11b7cc167f3b603e585c7eeeeb675faa412d5ec73f62988eb0b6c5488",
	}
	got := map[string]string{
		"commit":    res.Checksum.String(),
		"root tree": res.Commit.RootTree.String(),
		"root meta": res.Commit.RootMeta.String(),
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: got %s want %s", k, got[k], w)
		}
	}
	// The .filez of "hello" must carry the archive header of the example.
	h, rc, err := repo.OpenContent(mustChecksum(t, "44f778e59f0a4748d6b0c90a47347212a231c4ad1e8f7ea5c5dffc7749153a6b"))
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	ah, _ := h.archiveHeader()
	if hex.EncodeToString(ah) != "0000001a0000000000000000000000060000000000000000000081a4000000000019" {
		t.Errorf("archive header %x", ah)
	}
	if ref, err := repo.ReadRef("test"); err != nil || ref != res.Checksum {
		t.Errorf("ref: %v %v", ref, err)
	}
}

func mustChecksum(t *testing.T, s string) Checksum {
	t.Helper()
	c, err := ParseChecksum(s)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
