// Package apttest builds small, real APT archives on disk for tests:
// throwaway OpenPGP keys and keyrings, Packages indexes in every
// compression, Release files with correct checksums, clearsigned InRelease
// and detached Release.gpg, minimal valid .deb files, and a file:// Opener.
// It can also produce the broken archives the verifier must refuse
// (tampered, unsigned, signed by a stranger, expired, not yet valid,
// checksum mismatch).
package apttest

import (
	"bytes"
	"crypto"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// Key is a throwaway OpenPGP signing key, v4, in a form GnuPG 2.2 (and
// therefore apt's gpgv on bookworm) accepts.
type Key struct {
	Entity *openpgp.Entity
}

// keyEpoch backdates key creation so that signatures made "now" are never
// older than the key, whatever the clock resolution.
var keyEpoch = time.Now().Add(-24 * time.Hour).Truncate(time.Second)

// NewKey generates an Ed25519 key in the legacy EdDSA encoding (algorithm
// 22), the one GnuPG 2.2 understands; RFC 9580's Ed25519 (27) it rejects.
func NewKey(name string) (*Key, error) {
	return newKey(name, &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA, Time: func() time.Time { return keyEpoch }})
}

// NewRSAKey generates an RSA key of the given size (e.g. 2048), like the
// archive keys of Debian and Ubuntu.
func NewRSAKey(name string, bits int) (*Key, error) {
	return newKey(name, &packet.Config{Algorithm: packet.PubKeyAlgoRSA, RSABits: bits, Time: func() time.Time { return keyEpoch }})
}

func newKey(name string, cfg *packet.Config) (*Key, error) {
	email := strings.ToLower(strings.ReplaceAll(name, " ", ".")) + "@example.invalid"
	e, err := openpgp.NewEntity(name, "apttest", email, cfg)
	if err != nil {
		return nil, fmt.Errorf("apttest: generating key %q: %w", name, err)
	}
	return &Key{Entity: e}, nil
}

// KeyID is the 16-hex-digit key ID of the signing key, as apt prints it.
func (k *Key) KeyID() string {
	sk, ok := k.Entity.SigningKey(time.Now())
	if !ok {
		return k.Entity.PrimaryKey.KeyIdString()
	}
	return sk.PublicKey.KeyIdString()
}

// Fingerprint of the primary key, uppercase hex.
func (k *Key) Fingerprint() string {
	return fmt.Sprintf("%X", k.Entity.PrimaryKey.Fingerprint)
}

// Keyring returns the public keys of keys as one keyring, binary or
// ASCII-armored.
func Keyring(armored bool, keys ...*Key) ([]byte, error) {
	var buf bytes.Buffer
	var w interface {
		Write([]byte) (int, error)
	} = &buf
	var aw interface{ Close() error }
	if armored {
		a, err := armor.Encode(&buf, openpgp.PublicKeyType, nil)
		if err != nil {
			return nil, err
		}
		w, aw = a, a
	}
	for _, k := range keys {
		if err := k.Entity.Serialize(w); err != nil {
			return nil, fmt.Errorf("apttest: serializing key: %w", err)
		}
	}
	if aw != nil {
		if err := aw.Close(); err != nil {
			return nil, err
		}
		buf.WriteByte('\n')
	}
	return buf.Bytes(), nil
}

// WriteKeyring writes the public keys of keys to path (see Keyring).
func WriteKeyring(path string, armored bool, keys ...*Key) error {
	data, err := Keyring(armored, keys...)
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

// SecretKey returns the armored secret key, unprotected, for importing into
// GnuPG in interoperability tests.
func (k *Key) SecretKey() ([]byte, error) {
	var buf bytes.Buffer
	a, err := armor.Encode(&buf, openpgp.PrivateKeyType, nil)
	if err != nil {
		return nil, err
	}
	if err := k.Entity.SerializePrivate(a, nil); err != nil {
		return nil, err
	}
	if err := a.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// signConfig signs with SHA-256 at the current time, as dak does.
func signConfig() *packet.Config {
	return &packet.Config{DefaultHash: crypto.SHA256}
}

// DetachSign returns the binary detached signatures of data by each key,
// concatenated (several signatures in one file, as apt accepts). text
// selects signature type 0x01 (canonical text), used for clearsigning.
func DetachSign(data []byte, text bool, keys ...*Key) ([]byte, error) {
	var buf bytes.Buffer
	for _, k := range keys {
		sign := openpgp.DetachSign
		if text {
			sign = openpgp.DetachSignText
		}
		if err := sign(&buf, k.Entity, bytes.NewReader(data), signConfig()); err != nil {
			return nil, fmt.Errorf("apttest: signing with %s: %w", k.KeyID(), err)
		}
	}
	return buf.Bytes(), nil
}

// ArmorSignature wraps binary signature packets in one "PGP SIGNATURE"
// armor block, as Release.gpg and InRelease carry them.
func ArmorSignature(packets []byte) ([]byte, error) {
	var buf bytes.Buffer
	a, err := armor.Encode(&buf, openpgp.SignatureType, nil)
	if err != nil {
		return nil, err
	}
	if _, err := a.Write(packets); err != nil {
		return nil, err
	}
	if err := a.Close(); err != nil {
		return nil, err
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

// ClearSign produces an InRelease-style clearsigned document of content,
// signed by every key, following RFC 4880's cleartext framework: lines
// starting with a dash are escaped, the signature covers the lines with
// trailing blanks removed, joined by CRLF, without the final line break.
// Signatures by keys in bad are made over different content, for testing
// how a bad signature next to good ones is judged.
func ClearSign(content []byte, keys []*Key, bad ...*Key) ([]byte, error) {
	lines := strings.Split(strings.TrimSuffix(string(content), "\n"), "\n")
	canon := make([]string, len(lines))
	var body strings.Builder
	for i, l := range lines {
		canon[i] = strings.TrimRight(l, " \t\r")
		if strings.HasPrefix(l, "-") {
			body.WriteString("- ")
		}
		body.WriteString(l)
		body.WriteByte('\n')
	}
	signed := []byte(strings.Join(canon, "\r\n"))
	sigs, err := DetachSign(signed, true, keys...)
	if err != nil {
		return nil, err
	}
	badSigs, err := DetachSign(append(signed, " tampered"...), true, bad...)
	if err != nil {
		return nil, err
	}
	armored, err := ArmorSignature(append(sigs, badSigs...))
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	out.WriteString("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n")
	out.WriteString(body.String())
	out.Write(armored)
	return out.Bytes(), nil
}
