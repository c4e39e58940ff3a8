package signing

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apt-ostree/apt-ostree-factory/internal/testenv"
)

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestEd25519KeyForms(t *testing.T) {
	k, err := GenerateEd25519Key()
	if err != nil {
		t.Fatal(err)
	}
	var sec bytes.Buffer
	k.WriteSecret(&sec)
	// ostree's form, with a comment line before it.
	p := writeFile(t, "ostree.key", append([]byte("# signing key\n"), sec.Bytes()...))
	got, err := LoadEd25519Key(p)
	if err != nil {
		t.Fatal(err)
	}
	if got.Public() != k.Public() {
		t.Errorf("public key %s after loading, want %s", got.Public(), k.Public())
	}
	// PKCS#8 PEM.
	der, err := x509.MarshalPKCS8PrivateKey(k.priv)
	if err != nil {
		t.Fatal(err)
	}
	pp := writeFile(t, "key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	if got, err := LoadEd25519Key(pp); err != nil || got.Public() != k.Public() {
		t.Errorf("PEM key: %v (%v)", err, got)
	}
	// The public-key file of both forms.
	pubs, err := Ed25519PublicKeys([]string{p, pp, writeFile(t, "pub", []byte(k.Public()+"\n"))})
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Repeat(k.Public()+"\n", 3); string(pubs) != want {
		t.Errorf("public keys file %q, want %q", pubs, want)
	}

	bad := func(name string, data []byte, want string) {
		t.Helper()
		p := writeFile(t, name, data)
		_, err := LoadEd25519Key(p)
		if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one naming the file and saying %q", name, err, want)
		}
	}
	bad("public-only", []byte(k.Public()+"\n"), "a public key cannot sign")
	bad("garbage", []byte("not a key\n"), "neither PEM nor base64")
	mixed := append([]byte{}, k.priv...)
	other, _ := GenerateEd25519Key()
	copy(mixed[32:], other.priv[32:])
	bad("mismatched", []byte(base64.StdEncoding.EncodeToString(mixed)), "does not belong to the seed")
	bad("rsa.pem", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: []byte{1}}), "PKCS#8")
	if _, err := LoadEd25519Key(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing key file loaded")
	}
}

// TestEd25519OpenSSLKey: a key made by `openssl genpkey -algorithm
// ed25519` loads, and its public key is the one openssl derives.
func TestEd25519OpenSSLKey(t *testing.T) {
	testenv.Tool(t, "openssl")
	p := filepath.Join(t.TempDir(), "k.pem")
	if out, err := exec.Command("openssl", "genpkey", "-algorithm", "ed25519", "-out", p).CombinedOutput(); err != nil {
		t.Fatalf("openssl genpkey: %v %s", err, out)
	}
	k, err := LoadEd25519Key(p)
	if err != nil {
		t.Fatal(err)
	}
	der, err := exec.Command("openssl", "pkey", "-in", p, "-pubout", "-outform", "DER").Output()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		t.Fatal(err)
	}
	if want := base64.StdEncoding.EncodeToString(pub.(ed25519.PublicKey)); k.Public() != want {
		t.Errorf("public key %s, openssl says %s", k.Public(), want)
	}
}

// TestSignCommitBothTypes: one SignCommit call with an OpenPGP and an
// Ed25519 key leaves both signature lists; ostree reads the Ed25519
// signature where it looks for it, and it verifies against the commit
// bytes with the public key only.
func TestSignCommitBothTypes(t *testing.T) {
	gk, err := GenerateKey("publisher", "p@example.org", time.Unix(1763800000, 0))
	if err != nil {
		t.Fatal(err)
	}
	ek, _ := GenerateEd25519Key()
	other, _ := GenerateEd25519Key()
	repo, c := testCommit(t)
	if err := SignCommit(repo, c, gk, ek); err != nil {
		t.Fatal(err)
	}
	md, err := repo.ReadCommitMeta(c)
	if err != nil {
		t.Fatal(err)
	}
	gv, ok1 := md.Get(GPGSigsKey)
	ev, ok2 := md.Get(Ed25519SigsKey)
	if !ok1 || !ok2 || len(gv.Value.([][]byte)) != 1 || len(ev.Value.([][]byte)) != 1 {
		t.Fatalf("detached metadata %v", md)
	}
	sigs := ev.Value.([][]byte)
	commitBytes, err := os.ReadFile(filepath.Join(repo.Path(), "objects", c.String()[:2], c.String()[2:]+".commit"))
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyEd25519(commitBytes, sigs, []byte(ek.Public()+"\n")); err != nil {
		t.Errorf("our signature does not verify: %v", err)
	}
	if err := VerifyEd25519(commitBytes, sigs, []byte(other.Public()+"\n")); err == nil {
		t.Error("the signature verified with another key")
	}
	if err := VerifyEd25519(append(commitBytes, 0), sigs, []byte(ek.Public()+"\n")); err == nil {
		t.Error("the signature verified over other bytes")
	}
	// ostree itself decodes the detached metadata and finds the signature.
	testenv.Tool(t, "ostree")
	{
		out, err := ostreeOut("show", "--repo="+repo.Path(), "--print-detached-metadata-key="+Ed25519SigsKey, c.String())
		if err != nil {
			t.Fatalf("ostree show: %v %s", err, out)
		}
		// GVariant text: [[byte 0x73, 0xb0, ...]]
		shown := strings.NewReplacer("[", "", "]", "", "byte", "", "0x", "", ",", "", " ", "", "\n", "").Replace(out)
		if shown != hex.EncodeToString(sigs[0]) {
			t.Errorf("ostree shows %s, want the signature %x", out, sigs[0])
		}
	}
}
