package signing

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// GPGSigsKey is the detached-metadata key OSTree keeps OpenPGP signatures
// under (aay: one binary signature packet per element).
const GPGSigsKey = "ostree.gpgsigs"

// Key is an OpenPGP secret key that can sign.
type Key struct {
	entity *openpgp.Entity
	// Source names where the key came from, for messages.
	Source string
}

// Passphrase says where a key's passphrase comes from: a file (its first
// line) or an environment variable. Both empty: no passphrase.
type Passphrase struct {
	File string
	Env  string
}

func (p Passphrase) read() ([]byte, error) {
	switch {
	case p.File != "" && p.Env != "":
		return nil, errors.New("give the passphrase in a file or in an environment variable, not both")
	case p.File != "":
		b, err := os.ReadFile(p.File)
		if err != nil {
			return nil, fmt.Errorf("passphrase file: %w", err)
		}
		line, _, _ := strings.Cut(string(b), "\n")
		return []byte(strings.TrimRight(line, "\r")), nil
	case p.Env != "":
		v, ok := os.LookupEnv(p.Env)
		if !ok {
			return nil, fmt.Errorf("passphrase variable %s is not set", p.Env)
		}
		return []byte(v), nil
	}
	return nil, nil
}

// LoadKey reads a secret key (armored or binary; the first key of a
// keyring that has a secret signing key) and unlocks it.
func LoadKey(path string, pass Passphrase) (*Key, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	list, err := readEntities(path)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: not an OpenPGP key: %w", path, err)
	}
	for _, e := range list {
		if e.PrivateKey == nil {
			continue
		}
		if e.PrivateKey.Encrypted {
			pw, err := pass.read()
			if err != nil {
				return nil, fmt.Errorf("signing key %s: %w", path, err)
			}
			if pw == nil {
				return nil, fmt.Errorf("signing key %s is protected by a passphrase: give it in a file or an environment variable", path)
			}
			if err := e.DecryptPrivateKeys(pw); err != nil {
				return nil, fmt.Errorf("signing key %s: wrong passphrase: %w", path, err)
			}
		}
		return &Key{entity: e, Source: path}, nil
	}
	return nil, fmt.Errorf("signing key %s holds no secret key (export it with gpg --export-secret-keys)", path)
}

// GenerateKey makes a new Ed25519 (v4 EdDSA) key, for tests and first
// setups.
func GenerateKey(name, email string, created time.Time) (*Key, error) {
	cfg := &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA, Curve: packet.Curve25519, Time: func() time.Time { return created }}
	e, err := openpgp.NewEntity(name, "", email, cfg)
	if err != nil {
		return nil, err
	}
	return &Key{entity: e, Source: "generated"}, nil
}

// MetadataKey is where ostree keeps this key type's signatures.
func (k *Key) MetadataKey() string { return GPGSigsKey }

// ID names the key in messages: its fingerprint.
func (k *Key) ID() string { return k.Fingerprint() }

// Fingerprint is the key's fingerprint in upper-case hex.
func (k *Key) Fingerprint() string {
	return strings.ToUpper(fmt.Sprintf("%x", k.entity.PrimaryKey.Fingerprint))
}

// WritePublic writes the public key (binary, as ostree's
// <remote>.trustedkeys.gpg keyrings hold it) or armored.
func (k *Key) WritePublic(w io.Writer, armored bool) error {
	if !armored {
		return k.entity.Serialize(w)
	}
	aw, err := armor.Encode(w, openpgp.PublicKeyType, nil)
	if err != nil {
		return err
	}
	if err := k.entity.Serialize(aw); err != nil {
		return err
	}
	return aw.Close()
}

// WriteSecret writes the (unlocked) secret key, armored.
func (k *Key) WriteSecret(w io.Writer) error {
	aw, err := armor.Encode(w, openpgp.PrivateKeyType, nil)
	if err != nil {
		return err
	}
	if err := k.entity.SerializePrivate(aw, nil); err != nil {
		return err
	}
	return aw.Close()
}

// Sign makes a detached binary signature of data.
func (k *Key) Sign(data []byte) ([]byte, error) {
	var buf bytes.Buffer
	cfg := &packet.Config{DefaultHash: crypto.SHA512}
	if err := openpgp.DetachSign(&buf, k.entity, bytes.NewReader(data), cfg); err != nil {
		return nil, fmt.Errorf("signing with %s: %w", k.Fingerprint(), err)
	}
	return buf.Bytes(), nil
}

// readEntities reads an armored or binary keyring.
func readEntities(path string) (openpgp.EntityList, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if bytes.Contains(data[:min(len(data), 100)], []byte("-----BEGIN PGP")) {
		return openpgp.ReadArmoredKeyRing(bytes.NewReader(data))
	}
	return openpgp.ReadKeyRing(bytes.NewReader(data))
}

// PublicKeyring is the binary public keyring of the keys in the given
// files (secret or public; no passphrase needed), as ostree keeps it in
// REPO/<remote>.trustedkeys.gpg.
func PublicKeyring(paths []string) ([]byte, error) {
	var buf bytes.Buffer
	for _, p := range paths {
		list, err := readEntities(p)
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", p, err)
		}
		for _, e := range list {
			if err := e.Serialize(&buf); err != nil {
				return nil, fmt.Errorf("key %s: %w", p, err)
			}
		}
	}
	return buf.Bytes(), nil
}

// LoadKeys loads every key of a recipe's signing section with one
// passphrase source.
func LoadKeys(paths []string, pass Passphrase) ([]*Key, error) {
	var keys []*Key
	for _, p := range paths {
		k, err := LoadKey(p, pass)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}
