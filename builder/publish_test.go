package builder

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apt-ostree/apt-ostree-factory/internal/testenv"
	"github.com/apt-ostree/apt-ostree-factory/ostree"
	"github.com/apt-ostree/apt-ostree-factory/ostree/gvariant"
	"github.com/apt-ostree/apt-ostree-factory/signing"
)

// publishFixture commits n versions of a small tree on a branch: each
// version changes one file and adds one, and v1 has a large file.
func publishFixture(t *testing.T, n int, key *signing.Key) (*ostree.Repo, []ostree.Checksum) {
	t.Helper()
	repo, err := ostree.Init(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	dirMeta := ostree.FileMeta{Mode: ostree.ModeDir | 0o755}
	big := make([]byte, 5<<20)
	rand.Read(big)
	var commits []ostree.Checksum
	for v := 1; v <= n; v++ {
		root := ostree.NewMemDir(dirMeta)
		root.MkdirAll("usr/bin", dirMeta)
		add := func(p string, data []byte) {
			root.AddFile(p, &ostree.MemFile{Header: ostree.FileHeader{FileMeta: ostree.FileMeta{Mode: ostree.ModeRegular | 0o755}, Size: uint64(len(data))}, Data: data})
		}
		add("usr/bin/tool", bytes.Repeat([]byte{byte(v)}, 100000))
		add("usr/bin/big", big)
		for i := 1; i <= v; i++ {
			add("usr/bin/added-"+string(rune('0'+i)), []byte(strings.Repeat("x", 1000*i)))
		}
		res, err := repo.CommitTree(context.Background(), root, ostree.CommitOptions{
			Branch: "test/x86_64", Timestamp: time.Unix(1763800000+int64(v)*3600, 0),
			Metadata: ostree.Metadata{{Key: "version", Value: gvariant.NewVariant("s", "v"+string(rune('0'+v)))}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if key != nil {
			if err := signing.SignCommit(repo, res.Checksum, key); err != nil {
				t.Fatal(err)
			}
		}
		commits = append(commits, res.Checksum)
	}
	return repo, commits
}

func ostreeRun(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command("ostree", args...).CombinedOutput()
	return string(out), err
}

// TestPublishPullWithDeltas: Debian's ostree, verifying commit and summary
// signatures, pulls the first version and then the update over HTTP; the
// update comes through the static delta (--require-static-deltas, and the
// server saw no loose content object). An altered delta part fails the
// pull.
func TestPublishPullWithDeltas(t *testing.T) {
	testenv.Tool(t, "ostree")
	testenv.Tool(t, "gpg")
	key, err := signing.GenerateKey("publisher", "p@example.org", time.Unix(1763800000, 0))
	if err != nil {
		t.Fatal(err)
	}
	var pub bytes.Buffer
	key.WritePublic(&pub, false)
	pubFile := filepath.Join(t.TempDir(), "pub.gpg")
	os.WriteFile(pubFile, pub.Bytes(), 0o644)

	repo, commits := publishFixture(t, 2, key)
	res, err := Publish(context.Background(), PublishOptions{Repo: repo, Keys: []signing.Signer{key}, Deltas: true, Scratch: true, Now: time.Unix(1763900000, 0)})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Deltas) != 2 {
		t.Fatalf("%d deltas, want v1→v2 and from scratch", len(res.Deltas))
	}
	srv := testenv.ServeDir(t, repo.Path())
	client := filepath.Join(t.TempDir(), "client")
	for _, args := range [][]string{
		{"init", "--repo=" + client, "--mode=bare-user"},
		{"remote", "add", "--repo=" + client, "--gpg-import=" + pubFile, "--set=gpg-verify-summary=true", "origin", srv.URL},
	} {
		if o, err := ostreeRun(t, args...); err != nil {
			t.Fatalf("%v %s", err, o)
		}
	}
	// The first version (its own commit, as a device that was imaged
	// with v1 has it).
	if o, err := ostreeRun(t, "pull", "--repo="+client, "origin", commits[0].String()); err != nil {
		t.Fatalf("pull v1: %v\n%s", err, o)
	}
	srv.Requests()
	if o, err := ostreeRun(t, "pull", "--repo="+client, "--require-static-deltas", "origin", "test/x86_64"); err != nil {
		t.Fatalf("update pull with --require-static-deltas: %v\n%s", err, o)
	}
	// The delta's superblock and part were fetched. (ostree 2022.7 may
	// also fetch a few loose objects while it applies parts: it scans the
	// new commit from the superblock before the parts are written.)
	gets := srv.Requests()
	var superblock, part, loose int
	for _, g := range gets {
		switch {
		case strings.HasPrefix(g, "/deltas/") && strings.HasSuffix(g, "/superblock"):
			superblock++
		case strings.HasPrefix(g, "/deltas/") && strings.HasSuffix(g, "/0"):
			part++
		case strings.HasSuffix(g, ".filez"):
			loose++
		}
	}
	if superblock != 1 || part != 1 {
		t.Errorf("the update did not come through the delta; requests:\n%s", strings.Join(gets, "\n"))
	}
	t.Logf("update: %d requests, superblock %d, parts %d, loose content objects %d", len(gets), superblock, part, loose)
	if o, err := ostreeRun(t, "fsck", "--repo="+client); err != nil {
		t.Errorf("fsck: %v\n%s", err, o)
	}
	if o, _ := ostreeRun(t, "rev-parse", "--repo="+client, "origin:test/x86_64"); strings.TrimSpace(o) != commits[1].String() {
		t.Errorf("client at %s, want %s", o, commits[1])
	}

	// An altered part of the v1→v2 delta.
	parts, _ := filepath.Glob(filepath.Join(repo.Path(), "deltas", "*", "*-*", "0"))
	if len(parts) != 1 {
		t.Fatalf("parts of the v1→v2 delta: %v", parts)
	}
	b, _ := os.ReadFile(parts[0])
	b[len(b)/2] ^= 0xff
	os.WriteFile(parts[0], b, 0o644)
	client2 := filepath.Join(t.TempDir(), "client2")
	ostreeRun(t, "init", "--repo="+client2, "--mode=bare-user")
	ostreeRun(t, "remote", "add", "--repo="+client2, "--gpg-import="+pubFile, "--set=gpg-verify-summary=true", "origin", srv.URL)
	if o, err := ostreeRun(t, "pull", "--repo="+client2, "origin", commits[0].String()); err != nil {
		t.Fatalf("pull v1: %v\n%s", err, o)
	}
	if o, err := ostreeRun(t, "pull", "--repo="+client2, "--require-static-deltas", "origin", "test/x86_64"); err == nil {
		t.Errorf("pull with an altered delta part succeeded:\n%s", o)
	} else {
		t.Logf("altered part: %s", strings.TrimSpace(o))
	}
}

// TestPublishRetain: with --retain 2 the oldest of three commits, the
// deltas that use it and the objects only it reached are pruned; ostree
// fsck still passes and the kept history pulls.
func TestPublishRetain(t *testing.T) {
	testenv.Tool(t, "ostree")
	repo, commits := publishFixture(t, 3, nil)
	// Deltas v1→v2 (kept until pruning), then v2→v3.
	if _, err := Publish(context.Background(), PublishOptions{Repo: repo, Deltas: true}); err != nil {
		t.Fatal(err)
	}
	onlyV1 := func() string { // the object of v1's usr/bin/tool
		var p string
		repo.Walk(commits[0], "/usr/bin/tool", false, func(e *ostree.TreeEntry) error {
			h := e.Checksum.String()
			p = filepath.Join(repo.Path(), "objects", h[:2], h[2:]+".filez")
			return nil
		})
		return p
	}()
	if _, err := os.Stat(onlyV1); err != nil {
		t.Fatal(err)
	}
	// A delta that starts at v1.
	if o, err := ostreeRun(t, "static-delta", "generate", "--repo="+repo.Path(), "--from="+commits[0].String(), "--to="+commits[2].String()); err != nil {
		t.Fatalf("%v %s", err, o)
	}
	res, err := Publish(context.Background(), PublishOptions{Repo: repo, Deltas: true, Retain: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Pruned) != 1 || res.Pruned[0] != commits[0] {
		t.Errorf("pruned %v, want v1 %s", res.Pruned, commits[0])
	}
	deltas, _ := repo.ListDeltas()
	for _, d := range deltas {
		if d.To == commits[0] || (d.From != nil && *d.From == commits[0]) {
			t.Errorf("delta %s survived", d.Name())
		}
	}
	if len(deltas) != 1 {
		t.Errorf("deltas left: %v (want v2→v3)", deltas)
	}
	if _, err := os.Stat(onlyV1); !os.IsNotExist(err) {
		t.Errorf("an object only v1 reached was kept: %v", err)
	}
	if o, err := ostreeRun(t, "fsck", "--repo="+repo.Path()); err != nil {
		t.Errorf("ostree fsck after pruning: %v\n%s", err, o)
	}
	if o, err := ostreeRun(t, "summary", "--view", "--repo="+repo.Path()); err != nil || strings.Contains(o, commits[0].String()) {
		t.Errorf("summary after pruning: %v\n%s", err, o)
	}
}
