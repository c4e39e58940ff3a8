package apt

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// Keyring is the set of OpenPGP public keys a source trusts to sign its
// Release files: the union of the files in its signed-by list.
type Keyring struct {
	// Files are the keyring files the keys came from, for messages.
	Files []string

	entities openpgp.EntityList
}

// LoadKeyring reads keyring files as apt's signed-by accepts them: binary
// OpenPGP keyrings (debian-archive-keyring.gpg, `gpg --export`) or
// ASCII-armored ones (`gpg --export --armor`, .asc). Errors name the file.
func LoadKeyring(paths ...string) (*Keyring, error) {
	if len(paths) == 0 {
		return nil, fmt.Errorf("no keyring given: a source needs signed-by")
	}
	kr := &Keyring{}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("keyring: %w", err)
		}
		el, err := parseKeyring(data)
		if err != nil {
			return nil, fmt.Errorf("keyring %s: %w", p, err)
		}
		kr.Files = append(kr.Files, p)
		kr.entities = append(kr.entities, el...)
	}
	return kr, nil
}

// ParseKeyring reads a keyring from memory; name is used in messages.
func ParseKeyring(name string, data []byte) (*Keyring, error) {
	el, err := parseKeyring(data)
	if err != nil {
		return nil, fmt.Errorf("keyring %s: %w", name, err)
	}
	return &Keyring{Files: []string{name}, entities: el}, nil
}

// Len is the number of keys (primary keys) in the keyring.
func (k *Keyring) Len() int { return len(k.entities) }

// KeyIDs lists the 16-hex-digit IDs of the primary keys, for messages.
func (k *Keyring) KeyIDs() []string {
	ids := make([]string, 0, len(k.entities))
	for _, e := range k.entities {
		ids = append(ids, e.PrimaryKey.KeyIdString())
	}
	return ids
}

// String names the keyring by its files.
func (k *Keyring) String() string { return strings.Join(k.Files, ", ") }

const armorPrefix = "-----BEGIN PGP "

// parseKeyring accepts binary or armored data. A keyring that yields no key
// is an error: an empty keyring would make every signature "unknown key",
// a confusing message for what is really a wrong file.
func parseKeyring(data []byte) (openpgp.EntityList, error) {
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	var el openpgp.EntityList
	var err error
	switch {
	case len(trimmed) == 0:
		return nil, fmt.Errorf("file is empty")
	case bytes.HasPrefix(trimmed, []byte(armorPrefix)):
		el, err = parseArmoredKeyring(trimmed)
	case isKeybox(data):
		return nil, fmt.Errorf("GnuPG keybox format (pubring.kbx) is not an OpenPGP keyring; export it with `gpg --export KEYID > file.gpg`")
	default:
		el, err = openpgp.ReadKeyRing(bytes.NewReader(data))
	}
	if err != nil {
		return nil, fmt.Errorf("not a usable OpenPGP keyring: %v", err)
	}
	if len(el) == 0 {
		return nil, fmt.Errorf("no OpenPGP public keys in file")
	}
	return el, nil
}

// parseArmoredKeyring reads every armored public key block in the file: .asc
// files made by concatenating exports are common.
func parseArmoredKeyring(data []byte) (openpgp.EntityList, error) {
	var el openpgp.EntityList
	blocks := bytes.Split(data, []byte(armorPrefix))
	for _, b := range blocks[1:] {
		block, err := armor.Decode(bytes.NewReader(append([]byte(armorPrefix), b...)))
		if err != nil {
			return nil, fmt.Errorf("bad ASCII armor: %v", err)
		}
		if block.Type != openpgp.PublicKeyType {
			return nil, fmt.Errorf("armored block is %q, want %q", block.Type, openpgp.PublicKeyType)
		}
		keys, err := openpgp.ReadKeyRing(block.Body)
		if err != nil {
			return nil, err
		}
		el = append(el, keys...)
	}
	return el, nil
}

// isKeybox recognises GnuPG's keybox file header ("KBXf" at offset 8), so
// users who point signed-by at ~/.gnupg/pubring.kbx get told what to do.
func isKeybox(data []byte) bool {
	return len(data) >= 12 && string(data[8:12]) == "KBXf"
}

// Signature verdicts, as gpgv reports them to apt.
const (
	SigGood      = "good"          // valid, by a usable key in the keyring
	SigBad       = "bad"           // by a keyring key, but the data or signature was altered
	SigNoPubKey  = "no public key" // the signing key is not in the keyring
	SigWorthless = "unusable"      // by a keyring key, but expired, revoked, weak or unsupported
)

// SignatureResult is the verdict on one signature of a file.
type SignatureResult struct {
	KeyID  string // issuer key ID, 16 hex digits
	Signer string // primary user ID of the key, when it is in the keyring
	Status string // one of the Sig* constants
	Reason string // why it is bad or unusable
}

func (r SignatureResult) String() string {
	return r.who() + ": " + r.Status + r.why()
}

// describe is String without the status, for lists already headed by it.
func (r SignatureResult) describe() string { return r.who() + r.why() }

func (r SignatureResult) who() string {
	if r.Signer != "" {
		return r.KeyID + " (" + r.Signer + ")"
	}
	return r.KeyID
}

func (r SignatureResult) why() string {
	if r.Reason != "" {
		return ": " + r.Reason
	}
	return ""
}

// Verification is the outcome of checking every signature on a file.
type Verification struct {
	Results []SignatureResult
}

// Good lists the key IDs of the valid signatures.
func (v *Verification) Good() []string { return v.keyIDs(SigGood) }

func (v *Verification) keyIDs(status string) []string {
	var ids []string
	for _, r := range v.Results {
		if r.Status == status {
			ids = append(ids, r.KeyID)
		}
	}
	return ids
}

// Errors a verification can end in; the returned error wraps one of them
// and says which keys and which keyring.
var (
	// ErrUnsigned: there is no signature at all.
	ErrUnsigned = errors.New("not signed")
	// ErrUnknownKey: signed, but by no usable key of the keyring.
	ErrUnknownKey = errors.New("not signed by a trusted key")
	// ErrBadSignature: a keyring key's signature does not match the data:
	// the file was modified after signing.
	ErrBadSignature = errors.New("bad signature")
)

// VerifyDetached checks every signature in sig (binary packets or ASCII
// armor, possibly several blocks) over signed. It decides as apt does with
// gpgv's verdicts: refused unless at least one signature is good, and
// refused if any signature by a keyring key is bad (a good signature next to
// a bad one means someone is playing games). Signatures by keys not in the
// keyring are ignored: Debian signs each InRelease with several keys, of
// which a given keyring holds only some. now decides key expiry.
func (k *Keyring) VerifyDetached(signed, sig []byte, now time.Time) (*Verification, error) {
	packets, err := signaturePackets(sig)
	if err != nil {
		return nil, err
	}
	if countSignatures(packets) == 0 {
		return nil, ErrUnsigned
	}
	cfg := &packet.Config{Time: func() time.Time { return now }}
	md, err := openpgp.VerifyDetachedSignatureReader(k.entities, bytes.NewReader(signed), bytes.NewReader(packets), cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: unreadable signature: %v", ErrBadSignature, err)
	}
	if _, err := io.Copy(io.Discard, md.UnverifiedBody); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	v := &Verification{}
	for _, c := range md.SignatureCandidates {
		v.Results = append(v.Results, judge(c, now, cfg))
	}
	return v, k.verdict(v)
}

// judge turns go-crypto's per-signature outcome into gpgv's categories.
// Only a failed cryptographic check is "bad"; a good signature by a key that
// has since expired or been revoked is "unusable", as gpgv's EXPKEYSIG and
// REVKEYSIG are to apt.
func judge(c *openpgp.SignatureCandidate, now time.Time, cfg *packet.Config) SignatureResult {
	r := SignatureResult{KeyID: fmt.Sprintf("%016X", c.IssuerKeyId)}
	if c.SignedByEntity == nil {
		r.Status = SigNoPubKey
		return r
	}
	r.Signer = primaryUserID(c.SignedByEntity, now)
	err := c.SignatureError
	var sigErr pgperrors.SignatureError
	switch {
	case err == nil:
		if _, ok := c.SignedByEntity.SigningKeyById(now, c.IssuerKeyId, cfg); !ok {
			r.Status, r.Reason = SigWorthless, "key expired, revoked or not for signing at "+now.UTC().Format(time.RFC3339)
			return r
		}
		r.Status = SigGood
	case errors.As(err, &sigErr) && !cfg.RejectMessageHashAlgorithm(c.HashAlgorithm):
		r.Status, r.Reason = SigBad, err.Error()
	default:
		r.Status, r.Reason = SigWorthless, err.Error()
	}
	return r
}

// verdict applies apt's rule to the per-signature results.
func (k *Keyring) verdict(v *Verification) error {
	var bad, worthless, unknown []string
	for _, r := range v.Results {
		switch r.Status {
		case SigBad:
			bad = append(bad, r.describe())
		case SigWorthless:
			worthless = append(worthless, r.describe())
		case SigNoPubKey:
			unknown = append(unknown, r.KeyID)
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w (content modified after signing?): %s", ErrBadSignature, strings.Join(bad, "; "))
	}
	if len(v.Good()) > 0 {
		return nil
	}
	msg := fmt.Sprintf("no valid signature by a key in %s", k)
	if len(unknown) > 0 {
		msg += fmt.Sprintf("; signed by unknown key(s) %s", strings.Join(unknown, ", "))
	}
	if len(worthless) > 0 {
		msg += "; unusable: " + strings.Join(worthless, "; ")
	}
	return fmt.Errorf("%w: %s", ErrUnknownKey, msg)
}

func primaryUserID(e *openpgp.Entity, now time.Time) string {
	if _, id := e.PrimaryIdentity(now, nil); id != nil {
		return id.Name
	}
	for name := range e.Identities {
		return name
	}
	return ""
}

// signaturePackets returns the binary packets of a detached signature,
// de-armoring every "PGP SIGNATURE" block if the data is armored (Debian's
// Release.gpg is armored; `gpg --detach-sign` without --armor is not).
func signaturePackets(sig []byte) ([]byte, error) {
	trimmed := bytes.TrimLeft(sig, " \t\r\n")
	if !bytes.HasPrefix(trimmed, []byte(armorPrefix)) {
		return sig, nil
	}
	var out bytes.Buffer
	for _, b := range bytes.Split(trimmed, []byte(armorPrefix))[1:] {
		block, err := armor.Decode(bytes.NewReader(append([]byte(armorPrefix), b...)))
		if err != nil {
			return nil, fmt.Errorf("%w: bad signature armor: %v", ErrBadSignature, err)
		}
		if block.Type != openpgp.SignatureType {
			return nil, fmt.Errorf("%w: armored block is %q, want %q", ErrBadSignature, block.Type, openpgp.SignatureType)
		}
		if _, err := io.Copy(&out, block.Body); err != nil {
			return nil, fmt.Errorf("%w: bad signature armor: %v", ErrBadSignature, err)
		}
	}
	return out.Bytes(), nil
}

// countSignatures counts signature packets, so that a signature file with
// none (empty, or holding only a key) is reported as unsigned rather than
// as a puzzling parser error.
func countSignatures(packets []byte) int {
	n := 0
	r := packet.NewReader(bytes.NewReader(packets))
	for {
		p, err := r.Next()
		if err == io.EOF {
			return n
		}
		if err != nil {
			// Unparseable packets: let the verifier report them as bad.
			return n + 1
		}
		if _, ok := p.(*packet.Signature); ok {
			n++
		}
	}
}
