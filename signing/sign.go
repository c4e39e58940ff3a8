package signing

import (
	"errors"

	"github.com/apt-ostree/apt-ostree-factory/ostree"
	"github.com/apt-ostree/apt-ostree-factory/ostree/gvariant"
)

// Signer is a secret key of one of ostree's signature types: OpenPGP
// (*Key, "ostree.gpgsigs") or Ed25519 (*Ed25519Key,
// "ostree.sign.ed25519").
type Signer interface {
	// MetadataKey is the detached-metadata key the signatures go under.
	MetadataKey() string
	// Sign returns a detached signature of data.
	Sign(data []byte) ([]byte, error)
	// ID names the key in messages.
	ID() string
}

// Keys are the signing keys a recipe or command line names.
type Keys struct {
	GPG        []string // OpenPGP secret key files
	Ed25519    []string // Ed25519 secret key files
	Passphrase Passphrase
}

// Load unlocks every key, OpenPGP keys first.
func (k Keys) Load() ([]Signer, error) {
	gpg, err := LoadKeys(k.GPG, k.Passphrase)
	if err != nil {
		return nil, err
	}
	var out []Signer
	for _, g := range gpg {
		out = append(out, g)
	}
	for _, p := range k.Ed25519 {
		e, err := LoadEd25519Key(p)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// sign adds one signature per signer of data to md, after the
// signatures already there.
func sign(md ostree.Metadata, data []byte, signers []Signer) (ostree.Metadata, error) {
	for _, s := range signers {
		sig, err := s.Sign(data)
		if err != nil {
			return nil, err
		}
		key := s.MetadataKey()
		var sigs [][]byte
		if v, ok := md.Get(key); ok {
			if old, ok := v.Value.([][]byte); ok {
				sigs = old
			}
		}
		md.Set(key, gvariant.NewVariant("aay", append(sigs, sig)))
	}
	return md, nil
}

// SignCommit adds a signature of the commit object by each signer to its
// detached metadata (ostree.gpgsigs, ostree.sign.ed25519), keeping the
// signatures and keys already there. The commit checksum does not change.
func SignCommit(repo *ostree.Repo, commit ostree.Checksum, signers ...Signer) error {
	data, err := repo.ReadMetadata(ostree.ObjectCommit, commit)
	if err != nil {
		return err
	}
	md, err := repo.ReadCommitMeta(commit)
	if err != nil && !errors.Is(err, ostree.ErrNotFound) {
		return err
	}
	if md, err = sign(md, data, signers); err != nil {
		return err
	}
	return repo.WriteCommitMeta(commit, md)
}

// SignSummary returns summary.sig for a summary: a{sv} with one detached
// signature per signer over the summary's bytes, under the key of its
// type.
func SignSummary(summary []byte, signers ...Signer) ([]byte, error) {
	md, err := sign(nil, summary, signers)
	if err != nil {
		return nil, err
	}
	return ostree.EncodeMetadata(md)
}
