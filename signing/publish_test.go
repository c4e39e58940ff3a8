package signing

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apt-ostree/apt-ostree-factory/internal/testenv"
	"github.com/apt-ostree/apt-ostree-factory/ostree"
)

// client makes a repository with a verifying remote for url.
func client(t *testing.T, url, pub string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "client")
	for _, args := range [][]string{
		{"init", "--repo=" + dst, "--mode=bare-user"},
		{"remote", "add", "--repo=" + dst, "--gpg-import=" + pub, "--set=gpg-verify-summary=true", "origin", url},
	} {
		if o, err := ostreeOut(args...); err != nil {
			t.Fatalf("ostree %v: %v %s", args, err, o)
		}
	}
	return dst
}

// TestPullSignedOverHTTP: Debian's ostree pulls a signed commit with a
// signed summary from our repository over HTTP, and refuses it when the
// summary signature is missing or by another key, or an object is altered.
func TestPullSignedOverHTTP(t *testing.T) {
	testenv.Tool(t, "ostree")
	testenv.Tool(t, "gpg")
	key, _ := GenerateKey("publisher", "p@example.org", time.Unix(1763800000, 0))
	other, _ := GenerateKey("intruder", "i@example.org", time.Unix(1763800000, 0))
	pub := writePub(t, key)
	// An Ed25519 signature next to the OpenPGP one (for clients built
	// with it) must not disturb Debian's ostree, which lacks the type.
	ed, _ := GenerateEd25519Key()
	repo, c := testCommit(t)
	if err := SignCommit(repo, c, key, ed); err != nil {
		t.Fatal(err)
	}
	publish := func(signers ...Signer) {
		t.Helper()
		opts := ostree.SummaryOptions{LastModified: time.Unix(1763800000, 0)}
		if len(signers) > 0 {
			opts.Sign = func(b []byte) ([]byte, error) { return SignSummary(b, signers...) }
		}
		if _, err := repo.UpdateSummary(opts); err != nil {
			t.Fatal(err)
		}
	}
	srv := testenv.ServeDir(t, repo.Path())
	pull := func() (string, error) {
		return ostreeOut("pull", "--repo="+client(t, srv.URL, pub), "origin", "test/x86_64")
	}

	publish(key, ed)
	if o, err := ostreeOut("summary", "--view", "--repo="+repo.Path()); err != nil || !strings.Contains(o, "* test/x86_64") || !strings.Contains(o, c.String()) {
		t.Errorf("ostree summary --view: %v\n%s", err, o)
	}
	summary, _ := os.ReadFile(filepath.Join(repo.Path(), "summary"))
	sigFile, _ := os.ReadFile(filepath.Join(repo.Path(), "summary.sig"))
	sigs, err := ostree.DecodeMetadata(sigFile)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := sigs.Get(Ed25519SigsKey); !ok {
		t.Errorf("summary.sig has no %s", Ed25519SigsKey)
	} else if err := VerifyEd25519(summary, v.Value.([][]byte), []byte(ed.Public())); err != nil {
		t.Errorf("summary.sig: %v", err)
	}
	if o, err := pull(); err != nil {
		t.Fatalf("pull of the signed repository failed: %v\n%s", err, o)
	}
	gets := strings.Join(srv.Requests(), " ")
	for _, want := range []string{"/summary.sig", "/summary", ".commitmeta"} {
		if !strings.Contains(gets, want) {
			t.Errorf("the client never fetched %s: %s", want, gets)
		}
	}

	refused := func(what, want string) {
		t.Helper()
		o, err := pull()
		if err == nil {
			t.Errorf("pull %s succeeded:\n%s", what, o)
			return
		}
		t.Logf("pull %s: %s", what, strings.TrimSpace(o))
		if !strings.Contains(o, want) {
			t.Errorf("pull %s failed without saying %q:\n%s", what, want, o)
		}
	}
	publish()
	refused("without summary.sig", "summary.sig")
	publish(other)
	refused("with a summary signed by another key", "public key not found")
	// The commit's own signature: removed, then made by another key.
	metaPath := func() string {
		h := c.String()
		return filepath.Join(repo.Path(), "objects", h[:2], h[2:]+".commitmeta")
	}()
	goodMeta, err := os.ReadFile(metaPath)
	if err != nil {
		t.Fatal(err)
	}
	publish(key)
	os.Remove(metaPath)
	refused("of a commit without signature", "no signatures found")
	if err := SignCommit(repo, c, other); err != nil {
		t.Fatal(err)
	}
	refused("of a commit signed by another key", "public key not found")
	os.WriteFile(metaPath, goodMeta, 0o644)
	if o, err := pull(); err != nil {
		t.Fatalf("pull after restoring the signature: %v\n%s", err, o)
	}
	// One altered content object.
	objs, _ := filepath.Glob(filepath.Join(repo.Path(), "objects", "*", "*.filez"))
	if len(objs) == 0 {
		t.Fatal("no content objects")
	}
	b, _ := os.ReadFile(objs[0])
	b[len(b)-1] ^= 0xff
	os.WriteFile(objs[0], b, 0o644)
	refused("with an altered object", "content object")
}
