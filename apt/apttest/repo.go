package apttest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/apt-ostree/apt-ostree-factory/apt"
	"github.com/klauspost/compress/gzip"
	"github.com/ulikunitz/xz"
)

// Repo is a synthetic archive under Dir: pool/ and dists/<Suite>/. Fill it
// with AddStanza/AddDeb, set the fields, call Publish; break it afterwards
// with Tamper or Corrupt. Zero-valued fields get working defaults.
type Repo struct {
	Dir                                     string
	Suite, Codename, Origin, Label, Version string
	// Architectures and Components of the Release; nil means those of the
	// indexes added.
	Architectures, Components []string
	// Date defaults to an hour ago; a zero ValidUntil writes no field.
	Date, ValidUntil time.Time
	// Signers sign InRelease and Release.gpg; none means unsigned: no
	// InRelease and no Release.gpg, only Release.
	Signers []*Key
	// BadSigners add signatures that do not match the content.
	BadSigners []*Key
	// NoInRelease publishes only Release + Release.gpg.
	NoInRelease bool
	// AcquireByHash announces by-hash and writes by-hash copies.
	AcquireByHash bool
	// Compressions of the Packages files: nil means "", ".gz", ".xz".
	Compressions []string
	// Fields are extra Release lines, e.g. "No-Support-for-Architecture-all: Packages".
	Fields []string

	indexes map[string][]string // "comp/arch" -> stanzas
}

// NewRepo returns a repository in dir, suite "stable" (codename
// "apttest"), signed by keys.
func NewRepo(dir string, keys ...*Key) *Repo {
	return &Repo{Dir: dir, Suite: "stable", Codename: "apttest", Origin: "apttest", Label: "apttest", Signers: keys}
}

// NewSigned is the common case: a fresh key, its binary keyring written to
// dir/keyring.gpg, and a Repo in dir/archive signed by it. It returns the
// Repo and the keyring's path (for Source).
func NewSigned(dir string) (*Repo, string, error) {
	key, err := NewKey("apttest archive")
	if err != nil {
		return nil, "", err
	}
	keyring := filepath.Join(dir, "keyring.gpg")
	if err := WriteKeyring(keyring, false, key); err != nil {
		return nil, "", err
	}
	return NewRepo(filepath.Join(dir, "archive"), key), keyring, nil
}

// URI is the archive root as a file:// URL.
func (r *Repo) URI() string { return "file://" + r.Dir }

// Source describes the repository as an apt.Source for comps (default
// "main") trusting the given keyring files.
func (r *Repo) Source(keyrings []string, comps ...string) *apt.Source {
	if len(comps) == 0 {
		comps = []string{"main"}
	}
	return &apt.Source{URI: r.URI(), Suite: r.Suite, Components: comps, SignedBy: keyrings}
}

// DistPath is the path of a file under dists/<Suite>/.
func (r *Repo) DistPath(rel string) string {
	return filepath.Join(r.Dir, "dists", r.Suite, filepath.FromSlash(rel))
}

// AddIndex makes comp/binary-arch/Packages exist even if it stays empty.
func (r *Repo) AddIndex(comp, arch string) {
	if r.indexes == nil {
		r.indexes = map[string][]string{}
	}
	key := comp + "/" + arch
	if _, ok := r.indexes[key]; !ok {
		r.indexes[key] = nil
	}
}

// AddStanza appends a Packages stanza (text without the blank separator
// line) to comp/binary-arch/Packages.
func (r *Repo) AddStanza(comp, arch, stanza string) {
	r.AddIndex(comp, arch)
	key := comp + "/" + arch
	r.indexes[key] = append(r.indexes[key], strings.TrimRight(stanza, "\n")+"\n")
}

// AddDeb builds d, stores it in the pool and lists it in the Packages of
// comp for each of archs (default: the package's own architecture; list
// the native architectures too for arch:all packages in archives that
// repeat them, as Debian does). It returns the stanza.
func (r *Repo) AddDeb(comp string, d Deb, archs ...string) (string, error) {
	deb, err := d.Build()
	if err != nil {
		return "", err
	}
	name := d.Filename(comp)
	p := filepath.Join(r.Dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(p, deb, 0o644); err != nil {
		return "", err
	}
	if len(archs) == 0 {
		archs = []string{d.arch()}
	}
	stanza := d.Stanza(name, deb)
	for _, a := range archs {
		r.AddStanza(comp, a, stanza)
	}
	return stanza, nil
}

// Publish writes the indexes and the Release files.
func (r *Repo) Publish() error {
	entries, err := r.writeIndexes()
	if err != nil {
		return err
	}
	release := r.releaseText(entries)
	if err := r.WriteDist("Release", release); err != nil {
		return err
	}
	if r.Codename != "" && r.Codename != r.Suite {
		link := filepath.Join(r.Dir, "dists", r.Codename)
		os.Remove(link)
		if err := os.Symlink(r.Suite, link); err != nil {
			return err
		}
	}
	if len(r.Signers)+len(r.BadSigners) == 0 {
		return nil
	}
	return r.sign(release)
}

// sign writes Release.gpg (armored, like dak's) and InRelease.
func (r *Repo) sign(release []byte) error {
	sigs, err := DetachSign(release, false, r.Signers...)
	if err != nil {
		return err
	}
	bad, err := DetachSign(append(release, "tampered\n"...), false, r.BadSigners...)
	if err != nil {
		return err
	}
	armored, err := ArmorSignature(append(sigs, bad...))
	if err != nil {
		return err
	}
	if err := r.WriteDist("Release.gpg", armored); err != nil {
		return err
	}
	if r.NoInRelease {
		return nil
	}
	in, err := ClearSign(release, r.Signers, r.BadSigners...)
	if err != nil {
		return err
	}
	return r.WriteDist("InRelease", in)
}

// WriteDist writes a file under dists/<Suite>/, for tests that craft their own.
func (r *Repo) WriteDist(rel string, data []byte) error {
	p := r.DistPath(rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, data, 0o644)
}

// releaseEntry is one line of the SHA256 list.
type releaseEntry struct {
	path string
	size int
	sum  string
}

// writeIndexes writes every Packages file in every compression (and the
// by-hash copies) and returns their checksum lines.
func (r *Repo) writeIndexes() ([]releaseEntry, error) {
	comps := r.Compressions
	if comps == nil {
		comps = []string{"", ".gz", ".xz"}
	}
	var entries []releaseEntry
	for _, key := range sortedIndexKeys(r.indexes) {
		comp, arch, _ := strings.Cut(key, "/")
		text := []byte(strings.Join(r.indexes[key], "\n"))
		for _, ext := range comps {
			data, err := compress(text, ext)
			if err != nil {
				return nil, err
			}
			rel := fmt.Sprintf("%s/binary-%s/Packages%s", comp, arch, ext)
			e, err := r.writeIndexFile(rel, data)
			if err != nil {
				return nil, err
			}
			entries = append(entries, e)
		}
	}
	return entries, nil
}

func (r *Repo) writeIndexFile(rel string, data []byte) (releaseEntry, error) {
	sum := sha256.Sum256(data)
	e := releaseEntry{path: rel, size: len(data), sum: hex.EncodeToString(sum[:])}
	if err := r.WriteDist(rel, data); err != nil {
		return e, err
	}
	if r.AcquireByHash {
		byHash := filepath.ToSlash(filepath.Join(filepath.Dir(rel), "by-hash", "SHA256", e.sum))
		if err := r.WriteDist(byHash, data); err != nil {
			return e, err
		}
	}
	return e, nil
}

func compress(data []byte, ext string) ([]byte, error) {
	var b bytes.Buffer
	switch ext {
	case "":
		return data, nil
	case ".gz":
		w := gzip.NewWriter(&b)
		if _, err := w.Write(data); err != nil {
			return nil, err
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
	case ".xz":
		w, err := xz.NewWriter(&b)
		if err != nil {
			return nil, err
		}
		if _, err := w.Write(data); err != nil {
			return nil, err
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("apttest: unsupported compression %q", ext)
	}
	return b.Bytes(), nil
}

// releaseText renders the Release file as dak lays it out.
func (r *Repo) releaseText(entries []releaseEntry) []byte {
	var b strings.Builder
	field := func(k, v string) {
		if v != "" {
			fmt.Fprintf(&b, "%s: %s\n", k, v)
		}
	}
	date := r.Date
	if date.IsZero() {
		date = time.Now().Add(-time.Hour)
	}
	field("Origin", r.Origin)
	field("Label", r.Label)
	field("Suite", r.Suite)
	field("Version", r.Version)
	field("Codename", r.Codename)
	field("Date", date.UTC().Format(time.RFC1123))
	if !r.ValidUntil.IsZero() {
		field("Valid-Until", r.ValidUntil.UTC().Format(time.RFC1123))
	}
	if r.AcquireByHash {
		field("Acquire-By-Hash", "yes")
	}
	archs, comps := r.indexArchsComps()
	field("Architectures", strings.Join(archs, " "))
	field("Components", strings.Join(comps, " "))
	field("Description", "apttest synthetic archive")
	for _, f := range r.Fields {
		b.WriteString(strings.TrimRight(f, "\n") + "\n")
	}
	b.WriteString("SHA256:\n")
	for _, e := range entries {
		fmt.Fprintf(&b, " %s %16d %s\n", e.sum, e.size, e.path)
	}
	return []byte(b.String())
}

// indexArchsComps returns the configured lists, or those of the indexes.
func (r *Repo) indexArchsComps() (archs, comps []string) {
	if r.Architectures != nil && r.Components != nil {
		return r.Architectures, r.Components
	}
	seenA, seenC := map[string]bool{}, map[string]bool{}
	for key := range r.indexes {
		comp, arch, _ := strings.Cut(key, "/")
		if !seenA[arch] {
			seenA[arch] = true
			archs = append(archs, arch)
		}
		if !seenC[comp] {
			seenC[comp] = true
			comps = append(comps, comp)
		}
	}
	sort.Strings(archs)
	sort.Strings(comps)
	if r.Architectures != nil {
		archs = r.Architectures
	}
	if r.Components != nil {
		comps = r.Components
	}
	return archs, comps
}

func sortedIndexKeys(m map[string][]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Tamper replaces the first occurrence of old by new in a file under
// dists/<Suite>/ (e.g. a field of the signed part of InRelease).
func (r *Repo) Tamper(rel, old, new string) error {
	p := r.DistPath(rel)
	data, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	if !bytes.Contains(data, []byte(old)) {
		return fmt.Errorf("apttest: %s does not contain %q", p, old)
	}
	return os.WriteFile(p, bytes.Replace(data, []byte(old), []byte(new), 1), 0o644)
}

// Corrupt flips one bit in the middle of a file under dists/<Suite>/
// (size unchanged, checksum wrong).
func (r *Repo) Corrupt(rel string) error {
	p := r.DistPath(rel)
	data, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	if len(data) == 0 {
		return fmt.Errorf("apttest: %s is empty", p)
	}
	data[len(data)/2] ^= 0x01
	return os.WriteFile(p, data, 0o644)
}
