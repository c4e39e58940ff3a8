package signing

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Ed25519SigsKey is the detached-metadata key OSTree keeps Ed25519 signatures
// under (aay: one 64-byte signature per element).
const Ed25519SigsKey = "ostree.sign.ed25519"

// Ed25519Key is an Ed25519 secret key for ostree's "ed25519" sign type.
type Ed25519Key struct {
	priv ed25519.PrivateKey
	// Source names where the key came from, for messages.
	Source string
}

// LoadEd25519Key reads a secret key in one of two forms: ostree's own
// (`ostree sign --keys-file`): base64 of the 64 bytes seed‖public key, on
// the first non-empty line; or a PKCS#8 PEM file as
// `openssl genpkey -algorithm ed25519` writes it.
func LoadEd25519Key(path string) (*Ed25519Key, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ed25519 key: %w", err)
	}
	if blk, _ := pem.Decode(data); blk != nil {
		if blk.Type != "PRIVATE KEY" {
			return nil, fmt.Errorf("ed25519 key %s: a PEM %q block, want an unencrypted PKCS#8 \"PRIVATE KEY\"", path, blk.Type)
		}
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("ed25519 key %s: %w", path, err)
		}
		priv, ok := k.(ed25519.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("ed25519 key %s: a %T key, not Ed25519", path, k)
		}
		return &Ed25519Key{priv: priv, Source: path}, nil
	}
	line := firstLine(data)
	raw, err := base64.StdEncoding.DecodeString(line)
	if err != nil {
		return nil, fmt.Errorf("ed25519 key %s: neither PEM nor base64: %v", path, err)
	}
	if len(raw) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("ed25519 key %s: %d bytes, want a %d-byte secret key (seed and public key; a public key cannot sign)", path, len(raw), ed25519.PrivateKeySize)
	}
	priv := ed25519.NewKeyFromSeed(raw[:ed25519.SeedSize])
	if !bytes.Equal(priv, raw) {
		return nil, fmt.Errorf("ed25519 key %s: the public half does not belong to the seed", path)
	}
	return &Ed25519Key{priv: priv, Source: path}, nil
}

// firstLine is the first non-empty, non-comment line, trimmed.
func firstLine(data []byte) string {
	for _, l := range strings.Split(string(data), "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "#") {
			return l
		}
	}
	return ""
}

// GenerateEd25519Key makes a new key.
func GenerateEd25519Key() (*Ed25519Key, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return &Ed25519Key{priv: priv, Source: "generated"}, nil
}

// Public is the public key in ostree's form: base64 of its 32 bytes (one
// line of a verification-ed25519-file, or verification-ed25519-key).
func (k *Ed25519Key) Public() string {
	return base64.StdEncoding.EncodeToString(k.priv.Public().(ed25519.PublicKey))
}

// WriteSecret writes the secret key in ostree's form (base64, one line).
func (k *Ed25519Key) WriteSecret(w io.Writer) error {
	_, err := fmt.Fprintln(w, base64.StdEncoding.EncodeToString(k.priv))
	return err
}

// Sign is a pure Ed25519 signature of data.
func (k *Ed25519Key) Sign(data []byte) ([]byte, error) {
	return ed25519.Sign(k.priv, data), nil
}

// MetadataKey is where ostree keeps this key type's signatures.
func (k *Ed25519Key) MetadataKey() string { return Ed25519SigsKey }

// ID names the key in messages: "ed25519:" and its public key.
func (k *Ed25519Key) ID() string { return "ed25519:" + k.Public() }

// Ed25519PublicKeys is a verification-ed25519-file for the keys in the
// given files (secret keys or public ones: base64, one per line).
func Ed25519PublicKeys(paths []string) ([]byte, error) {
	var buf bytes.Buffer
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("ed25519 key: %w", err)
		}
		line := firstLine(data)
		if raw, err := base64.StdEncoding.DecodeString(line); err == nil && len(raw) == ed25519.PublicKeySize {
			buf.WriteString(line + "\n")
			continue
		}
		k, err := LoadEd25519Key(p)
		if err != nil {
			return nil, err
		}
		buf.WriteString(k.Public() + "\n")
	}
	return buf.Bytes(), nil
}

// VerifyEd25519 reports whether sigs (the aay of ostree.sign.ed25519)
// hold a valid signature of data by one of pubs (base64 public keys, one
// per line as in a verification-ed25519-file).
func VerifyEd25519(data []byte, sigs [][]byte, pubs []byte) error {
	var keys []ed25519.PublicKey
	for _, l := range strings.Split(string(pubs), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(l)
		if err != nil || len(raw) != ed25519.PublicKeySize {
			return fmt.Errorf("not an ed25519 public key: %q", l)
		}
		keys = append(keys, raw)
	}
	if len(sigs) == 0 {
		return errors.New("no ed25519 signatures")
	}
	for _, s := range sigs {
		for _, k := range keys {
			if len(s) == ed25519.SignatureSize && ed25519.Verify(k, data, s) {
				return nil
			}
		}
	}
	return fmt.Errorf("none of %d ed25519 signatures is by a trusted key", len(sigs))
}
