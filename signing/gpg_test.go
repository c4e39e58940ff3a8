package signing

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"

	"github.com/apt-ostree/apt-ostree-factory/internal/testenv"
	"github.com/apt-ostree/apt-ostree-factory/ostree"
)

func testCommit(t *testing.T) (*ostree.Repo, ostree.Checksum) {
	t.Helper()
	repo, err := ostree.Init(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	root := ostree.NewMemDir(ostree.FileMeta{Mode: ostree.ModeDir | 0o755})
	root.AddFile("hello", &ostree.MemFile{Header: ostree.FileHeader{FileMeta: ostree.FileMeta{Mode: ostree.ModeRegular | 0o644}, Size: 6}, Data: []byte("hello\n")})
	res, err := repo.CommitTree(context.Background(), root, ostree.CommitOptions{Branch: "test/x86_64", Timestamp: time.Unix(1763800000, 0)})
	if err != nil {
		t.Fatal(err)
	}
	return repo, res.Checksum
}

func writePub(t *testing.T, k *Key) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pub.gpg")
	var buf bytes.Buffer
	if err := k.WritePublic(&buf, false); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func ostreeOut(args ...string) (string, error) {
	out, err := exec.Command("ostree", args...).CombinedOutput()
	return string(out), err
}

// TestSignedCommitVerifiesWithOstree: Debian's ostree (GnuPG 2.2 via
// gpgme) accepts our signature with the right key and refuses the commit
// with another key or without a signature.
func TestSignedCommitVerifiesWithOstree(t *testing.T) {
	testenv.Tool(t, "ostree")
	testenv.Tool(t, "gpg")
	key, err := GenerateKey("apt-ostree-factory test", "test@example.org", time.Unix(1763800000, 0))
	if err != nil {
		t.Fatal(err)
	}
	other, err := GenerateKey("someone else", "other@example.org", time.Unix(1763800000, 0))
	if err != nil {
		t.Fatal(err)
	}
	repo, c := testCommit(t)
	unsignedRepo, uc := testCommit(t)
	if err := SignCommit(repo, c, key); err != nil {
		t.Fatal(err)
	}
	// Signing again keeps the first signature.
	if err := SignCommit(repo, c, key); err != nil {
		t.Fatal(err)
	}
	md, err := repo.ReadCommitMeta(c)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := md.Get(GPGSigsKey); len(v.Value.([][]byte)) != 2 {
		t.Errorf("%d signatures after signing twice", len(v.Value.([][]byte)))
	}

	pull := func(src string, rev ostree.Checksum, pub string) (string, error) {
		dst := filepath.Join(t.TempDir(), "dst")
		if o, err := ostreeOut("init", "--repo="+dst, "--mode=archive"); err != nil {
			t.Fatalf("%v %s", err, o)
		}
		if o, err := ostreeOut("remote", "add", "--repo="+dst, "--gpg-import="+pub, "origin", "file://"+src); err != nil {
			t.Fatalf("%v %s", err, o)
		}
		return ostreeOut("pull-local", "--repo="+dst, "--remote=origin", "--gpg-verify", src, rev.String())
	}
	if o, err := pull(repo.Path(), c, writePub(t, key)); err != nil {
		t.Errorf("pull-local --gpg-verify with our key failed: %v\n%s", err, o)
	}
	if o, err := ostreeOut("remote", "add", "--repo="+repo.Path(), "--gpg-import="+writePub(t, key), "origin", "http://example.org/repo"); err != nil {
		t.Fatalf("%v %s", err, o)
	}
	if o, _ := ostreeOut("show", "--repo="+repo.Path(), "--gpg-verify-remote=origin", c.String()); !strings.Contains(o, "Good signature") || !strings.Contains(o, key.Fingerprint()[24:]) {
		t.Errorf("ostree show --gpg-verify-remote:\n%s", o)
	}
	if o, err := pull(repo.Path(), c, writePub(t, other)); err == nil {
		t.Errorf("pull-local --gpg-verify with another key succeeded:\n%s", o)
	}
	if o, err := pull(unsignedRepo.Path(), uc, writePub(t, key)); err == nil || !strings.Contains(strings.ToLower(o), "signature") {
		t.Errorf("pull-local --gpg-verify of an unsigned commit: %v\n%s", err, o)
	}
}

func TestLoadKeyPassphrase(t *testing.T) {
	key, err := GenerateKey("k", "k@example.org", time.Unix(1763800000, 0))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := key.entity.EncryptPrivateKeys([]byte("s3cret"), nil); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	aw, _ := armor.Encode(&buf, "PGP PRIVATE KEY BLOCK", nil)
	if err := key.entity.SerializePrivateWithoutSigning(aw, nil); err != nil {
		t.Fatal(err)
	}
	aw.Close()
	keyFile := filepath.Join(dir, "key.asc")
	os.WriteFile(keyFile, buf.Bytes(), 0o600)
	os.WriteFile(filepath.Join(dir, "pass"), []byte("s3cret\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "wrong"), []byte("nope\n"), 0o600)

	if _, err := LoadKey(keyFile, Passphrase{}); err == nil || !strings.Contains(err.Error(), "protected by a passphrase") {
		t.Errorf("no passphrase: %v", err)
	}
	if _, err := LoadKey(keyFile, Passphrase{File: filepath.Join(dir, "wrong")}); err == nil || !strings.Contains(err.Error(), "wrong passphrase") {
		t.Errorf("wrong passphrase: %v", err)
	}
	k, err := LoadKey(keyFile, Passphrase{File: filepath.Join(dir, "pass")})
	if err != nil {
		t.Fatal(err)
	}
	if k.Fingerprint() != key.Fingerprint() {
		t.Errorf("fingerprint %s, want %s", k.Fingerprint(), key.Fingerprint())
	}
	if _, err := k.Sign([]byte("x")); err != nil {
		t.Errorf("sign with the unlocked key: %v", err)
	}
	t.Setenv("AOF_TEST_PASS", "s3cret")
	if _, err := LoadKey(keyFile, Passphrase{Env: "AOF_TEST_PASS"}); err != nil {
		t.Errorf("passphrase from the environment: %v", err)
	}
	if _, err := LoadKey(keyFile, Passphrase{Env: "AOF_TEST_UNSET_VAR"}); err == nil || !strings.Contains(err.Error(), "AOF_TEST_UNSET_VAR is not set") {
		t.Errorf("unset variable: %v", err)
	}
	// A public key only.
	pub := writePub(t, key)
	if _, err := LoadKey(pub, Passphrase{}); err == nil || !strings.Contains(err.Error(), "holds no secret key") {
		t.Errorf("public key: %v", err)
	}
}
