package apt

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"pault.ag/go/debian/control"
)

// ErrNotFound is what an Opener returns (wrapped) when the URL does not
// exist: HTTP 404 or 410, a missing file. It is the only failure on which
// FetchRelease falls back from InRelease to Release + Release.gpg, and on
// which indexes fall back from by-hash to the plain name: a network error
// or a 5xx must never silently turn into fetching something else.
var ErrNotFound = errors.New("not found")

// Reasons a Release file is refused besides its signature (see keyring.go
// for ErrUnsigned, ErrUnknownKey, ErrBadSignature). Returned errors wrap
// one of these and name the URL and the source.
var (
	ErrExpired          = errors.New("Release file expired")
	ErrNotYetValid      = errors.New("Release file not valid yet")
	ErrWrongSuite       = errors.New("Release file is for another suite")
	ErrMalformedRelease = errors.New("malformed Release file")
)

// MaxDateSkew is how far in the future a Release's Date may lie before it
// is refused as "not valid yet": apt's Acquire::Max-FutureTime default.
// A Date far ahead means a clock or a mirror is wrong, and accepting it
// would let a replayed future file pin us past its real validity.
const MaxDateSkew = 10 * time.Second

// maxReleaseSize bounds how much of an (In)Release file we read before the
// signature is checked: Debian's is 150 KB, Ubuntu's 250 KB.
const maxReleaseSize = 32 << 20

// ReleaseFile is one entry of a Release file's SHA256 list.
type ReleaseFile struct {
	Path   string // relative to dists/<suite>/, e.g. main/binary-amd64/Packages.xz
	Size   int64
	SHA256 string // lowercase hex
}

// Release is a verified InRelease (or Release + Release.gpg) of one source.
// Every field comes from the signed content only.
type Release struct {
	Source *Source
	// URL the file was fetched from: .../InRelease, or .../Release when
	// the archive has no InRelease.
	URL string
	// SHA256 of the fetched file exactly as downloaded (the whole InRelease,
	// or the Release); the lock file records it.
	SHA256 string
	// Signatures are the verdicts on every signature on the file.
	Signatures []SignatureResult

	Origin, Label, Suite, Version, Codename, Description string

	Date       time.Time
	ValidUntil time.Time // zero when the file has no Valid-Until
	// Architectures and Components as listed; Components may carry a
	// prefix (security archives once used "updates/main").
	Architectures, Components []string
	AcquireByHash             bool
	// NoSupportForArchitectureAll lists index types (normally "Packages")
	// whose arch:all entries are repeated in every architecture's index,
	// so binary-all must not be read for them.
	NoSupportForArchitectureAll []string
	// NotAutomatic and ButAutomaticUpgrades set apt's default pin (1 or
	// 100 instead of 500), as for experimental and backports.
	NotAutomatic, ButAutomaticUpgrades bool
	// Files is the SHA256 list, by path.
	Files map[string]ReleaseFile
}

// File returns the SHA256 entry for path.
func (r *Release) File(path string) (ReleaseFile, bool) {
	f, ok := r.Files[path]
	return f, ok
}

// HasComponent reports whether the Release lists the component, accepting
// the "updates/main" style for "main" as apt does.
func (r *Release) HasComponent(comp string) bool {
	for _, c := range r.Components {
		if c == comp || c[strings.LastIndexByte(c, '/')+1:] == comp {
			return true
		}
	}
	return false
}

// HasArchitecture reports whether the Release lists arch. A Release
// without an Architectures field supports every architecture (apt's rule).
func (r *Release) HasArchitecture(arch string) bool {
	return len(r.Architectures) == 0 || slices.Contains(r.Architectures, arch)
}

// FetchRelease fetches and verifies the Release file of src's suite. It
// tries dists/<suite>/InRelease and, only if that does not exist, Release
// with its detached Release.gpg. The file is refused when it is unsigned,
// signed by no key of src.SignedBy, carries a bad signature, has expired
// (Valid-Until before now), is dated more than MaxDateSkew after now, or
// names a suite and codename other than src.Suite. A zero now means
// time.Now().
func FetchRelease(ctx context.Context, opener Opener, src *Source, now time.Time) (*Release, error) {
	if now.IsZero() {
		now = time.Now()
	}
	if strings.HasSuffix(src.Suite, "/") || src.Suite == "" {
		return nil, fmt.Errorf("source %q: flat repositories (suite %q) are not supported: give a suite under dists/", src.String(), src.Suite)
	}
	kr, err := LoadKeyring(src.SignedBy...)
	if err != nil {
		return nil, fmt.Errorf("source %q: %w", src.String(), err)
	}
	base := distsURL(src)
	rel, err := fetchInRelease(ctx, opener, base+"InRelease", kr, now)
	if errors.Is(err, ErrNotFound) {
		rel, err = fetchDetached(ctx, opener, base+"Release", kr, now)
	}
	if err != nil {
		return nil, fmt.Errorf("source %q: %w", src.String(), err)
	}
	rel.Source = src
	if err := rel.Check(src.Suite, now); err != nil {
		return nil, fmt.Errorf("source %q: %s: %w", src.String(), rel.URL, err)
	}
	return rel, nil
}

// distsURL is the suite's directory, with a trailing slash.
func distsURL(src *Source) string {
	return strings.TrimRight(src.URI, "/") + "/dists/" + src.Suite + "/"
}

// fetchInRelease gets and verifies a clearsigned InRelease.
func fetchInRelease(ctx context.Context, opener Opener, url string, kr *Keyring, now time.Time) (*Release, error) {
	data, err := fetchSmall(ctx, opener, url, maxReleaseSize)
	if err != nil {
		return nil, err
	}
	rel, err := VerifyInRelease(data, kr, now)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	rel.URL = url
	return rel, nil
}

// VerifyInRelease checks the signatures of a clearsigned InRelease against
// the keyring and parses its signed content. It does not check dates or
// the suite: see Check.
func VerifyInRelease(data []byte, kr *Keyring, now time.Time) (*Release, error) {
	content, canonical, sig, err := splitClearSigned(data)
	if err != nil {
		return nil, err
	}
	v, err := kr.VerifyDetached(canonical, sig, now)
	if err != nil {
		return nil, err
	}
	return newRelease(data, content, v)
}

// VerifyRelease checks a Release file against its detached signature
// (Release.gpg) and parses it. It does not check dates or the suite.
func VerifyRelease(data, sig []byte, kr *Keyring, now time.Time) (*Release, error) {
	v, err := kr.VerifyDetached(data, sig, now)
	if err != nil {
		return nil, err
	}
	return newRelease(data, data, v)
}

// fetchDetached gets Release and Release.gpg and verifies the pair. A
// Release without Release.gpg is unsigned, and refused.
func fetchDetached(ctx context.Context, opener Opener, url string, kr *Keyring, now time.Time) (*Release, error) {
	data, err := fetchSmall(ctx, opener, url, maxReleaseSize)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("neither InRelease nor Release exists (wrong URI or suite?): %w", err)
	}
	if err != nil {
		return nil, err
	}
	sig, err := fetchSmall(ctx, opener, url+".gpg", 1<<20)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%s: no InRelease and no Release.gpg: %w", url, ErrUnsigned)
	}
	if err != nil {
		return nil, err
	}
	v, err := kr.VerifyDetached(data, sig, now)
	if err != nil {
		return nil, fmt.Errorf("%s.gpg: %w", url, err)
	}
	rel, err := newRelease(data, data, v)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	rel.URL = url
	return rel, nil
}

// newRelease parses the verified content and records the digest of the
// file as fetched.
func newRelease(raw, content []byte, v *Verification) (*Release, error) {
	rel, err := ParseRelease(content)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(raw)
	rel.SHA256 = hex.EncodeToString(sum[:])
	rel.Signatures = v.Results
	return rel, nil
}

// fetchSmall reads a whole file of bounded size.
func fetchSmall(ctx context.Context, opener Opener, url string, limit int64) ([]byte, error) {
	rc, err := opener.Open(ctx, url)
	if err != nil {
		return nil, err // Openers name the URL in their errors
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes, refusing to read it", url, limit)
	}
	return data, nil
}

// Check enforces validity in time (Valid-Until, Date) and that the file is
// for the requested suite, by its Suite or its Codename.
func (r *Release) Check(suite string, now time.Time) error {
	if !r.ValidUntil.IsZero() && now.After(r.ValidUntil) {
		return fmt.Errorf("%w since %s (%s ago): the mirror is stale or the file is replayed",
			ErrExpired, r.ValidUntil.UTC().Format(time.RFC1123), now.Sub(r.ValidUntil).Round(time.Second))
	}
	if !r.Date.IsZero() && r.Date.Sub(now) > MaxDateSkew {
		return fmt.Errorf("%w: its Date %s is %s in the future (check the clock)",
			ErrNotYetValid, r.Date.UTC().Format(time.RFC1123), r.Date.Sub(now).Round(time.Second))
	}
	// apt only warns here; a factory must not build from a suite other
	// than the one the recipe names (e.g. a mirror serving "testing" under
	// the stable codename).
	if suite != r.Suite && suite != r.Codename {
		return fmt.Errorf("%w: it is for suite %q (codename %q), not %q", ErrWrongSuite, r.Suite, r.Codename, suite)
	}
	return nil
}

// splitClearSigned splits an InRelease into its signed content (as parsed:
// dash-unescaped lines ending in \n), the canonical form the signature
// covers (trailing blanks stripped, CRLF, no final line break) and the
// armored signature blocks. It is as strict as apt's SplitClearSignedFile:
// nothing before the header, no header other than Hash, no unescaped line
// starting with a dash, and nothing but signatures after the text. Both
// outputs come from the same lines, so what is parsed is what was signed.
func splitClearSigned(data []byte) (content, canonical, sig []byte, err error) {
	lines := splitLines(data)
	const begin = "-----BEGIN PGP SIGNED MESSAGE-----"
	if len(lines) == 0 || lines[0] != begin {
		if slices.Contains(lines, begin) {
			return nil, nil, nil, fmt.Errorf("%w: text before the signed message block", ErrBadSignature)
		}
		return nil, nil, nil, fmt.Errorf("%w: InRelease is not clearsigned", ErrUnsigned)
	}
	i := 1
	for ; i < len(lines) && lines[i] != ""; i++ {
		if !strings.HasPrefix(lines[i], "Hash:") {
			return nil, nil, nil, fmt.Errorf("%w: unexpected armor header %q", ErrBadSignature, lines[i])
		}
	}
	var text []string
	for i++; ; i++ {
		if i >= len(lines) {
			return nil, nil, nil, fmt.Errorf("%w: clearsigned text without signature", ErrUnsigned)
		}
		l := lines[i]
		if l == "-----BEGIN PGP SIGNATURE-----" {
			break
		}
		if strings.HasPrefix(l, "-") {
			if !strings.HasPrefix(l, "- ") {
				return nil, nil, nil, fmt.Errorf("%w: unexpected line starting with a dash in signed text: %.60q", ErrBadSignature, l)
			}
			l = l[2:]
		}
		text = append(text, strings.TrimRight(l, " \t"))
	}
	sig, err = signatureBlocks(lines[i:])
	if err != nil {
		return nil, nil, nil, err
	}
	canonical = []byte(strings.Join(text, "\r\n"))
	content = []byte(strings.Join(text, "\n") + "\n")
	return content, canonical, sig, nil
}

// signatureBlocks checks that lines hold only armored signature blocks
// (and blank lines between them) and returns them as text.
func signatureBlocks(lines []string) ([]byte, error) {
	var buf bytes.Buffer
	open := false
	for _, l := range lines {
		switch {
		case !open && l == "":
			continue
		case !open && l == "-----BEGIN PGP SIGNATURE-----":
			open = true
		case !open:
			return nil, fmt.Errorf("%w: unsigned text after the signature: %.60q", ErrBadSignature, l)
		case l == "-----END PGP SIGNATURE-----":
			open = false
		case strings.HasPrefix(l, "-"):
			return nil, fmt.Errorf("%w: unexpected line in signature block: %.60q", ErrBadSignature, l)
		}
		buf.WriteString(l)
		buf.WriteByte('\n')
	}
	if open {
		return nil, fmt.Errorf("%w: signature block is not closed", ErrBadSignature)
	}
	return buf.Bytes(), nil
}

// splitLines splits at \n and drops one \r before it, as OpenPGP's
// cleartext framework reads lines. A final line break ends the last line
// rather than starting an empty one.
func splitLines(data []byte) []string {
	s := strings.TrimSuffix(string(data), "\n")
	if s == "" {
		return nil
	}
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimSuffix(l, "\r")
	}
	return lines
}

// ParseRelease parses the fields of a Release file's (already verified)
// content. Unknown fields are ignored; a malformed date, size or checksum
// line is an error, as it is for apt.
func ParseRelease(content []byte) (*Release, error) {
	// A clearsigned document inside the content would make the control
	// parser strip and skip its own (unverified) signature framing.
	if bytes.HasPrefix(content, []byte("-")) {
		return nil, fmt.Errorf("%w: content starts with a dash", ErrMalformedRelease)
	}
	pr, err := control.NewParagraphReader(bytes.NewReader(content), nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedRelease, err)
	}
	para, err := pr.Next()
	if err != nil {
		if err == io.EOF {
			return nil, fmt.Errorf("%w: no fields", ErrMalformedRelease)
		}
		return nil, fmt.Errorf("%w: %v", ErrMalformedRelease, err)
	}
	f, err := fieldMap(para)
	if err != nil {
		return nil, err
	}
	return releaseFromFields(f)
}

// fieldMap indexes fields case-insensitively (Debian field names are) and
// refuses duplicates, which would leave the meaning up to the parser.
func fieldMap(p *control.Paragraph) (map[string]string, error) {
	f := make(map[string]string, len(p.Order))
	for _, k := range p.Order {
		lk := strings.ToLower(k)
		if _, dup := f[lk]; dup {
			return nil, fmt.Errorf("%w: field %s appears twice", ErrMalformedRelease, k)
		}
		f[lk] = p.Values[k]
	}
	return f, nil
}

func releaseFromFields(f map[string]string) (*Release, error) {
	r := &Release{
		Origin:                      f["origin"],
		Label:                       f["label"],
		Suite:                       f["suite"],
		Version:                     f["version"],
		Codename:                    f["codename"],
		Description:                 f["description"],
		Architectures:               strings.Fields(f["architectures"]),
		Components:                  strings.Fields(f["components"]),
		AcquireByHash:               yes(f["acquire-by-hash"]),
		NoSupportForArchitectureAll: strings.Fields(f["no-support-for-architecture-all"]),
		NotAutomatic:                yes(f["notautomatic"]),
		ButAutomaticUpgrades:        yes(f["butautomaticupgrades"]),
	}
	var err error
	if r.Date, err = optionalTime(f, "date"); err != nil {
		return nil, err
	}
	if r.ValidUntil, err = optionalTime(f, "valid-until"); err != nil {
		return nil, err
	}
	if r.Files, err = parseChecksums(f["sha256"]); err != nil {
		return nil, err
	}
	if len(r.Files) == 0 {
		// apt needs a strong hash to authenticate indexes; SHA256 is the
		// one every archive has carried since 2008.
		return nil, fmt.Errorf("%w: no SHA256 checksums", ErrMalformedRelease)
	}
	return r, nil
}

func yes(v string) bool { return strings.EqualFold(strings.TrimSpace(v), "yes") }

func optionalTime(f map[string]string, key string) (time.Time, error) {
	v, ok := f[key]
	if !ok || v == "" {
		return time.Time{}, nil
	}
	t, err := ParseReleaseTime(v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: field %s: %v", ErrMalformedRelease, key, err)
	}
	return t, nil
}

// ParseReleaseTime parses the RFC 1123 dates of Release files ("Sat, 11 Jul
// 2026 10:16:37 UTC"). Like apt it accepts only UTC or GMT, or a numeric
// offset: a named zone such as CET would silently parse as UTC in Go.
func ParseReleaseTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	// Numeric offsets first: the MST layout would also take "+0000" as a
	// zone name.
	for _, layout := range []string{time.RFC1123Z, "Mon, 2 Jan 2006 15:04:05 -0700"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	for _, layout := range []string{time.RFC1123, "Mon, 2 Jan 2006 15:04:05 MST"} {
		if t, err := time.Parse(layout, s); err == nil {
			if name, _ := t.Zone(); name != "UTC" && name != "GMT" {
				return time.Time{}, fmt.Errorf("date %q: time zone must be UTC", s)
			}
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("date %q is not in RFC 1123 form", s)
}

// parseChecksums reads "sha256 size path" lines.
func parseChecksums(v string) (map[string]ReleaseFile, error) {
	files := make(map[string]ReleaseFile)
	for _, line := range strings.Split(v, "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if len(fields) != 3 {
			return nil, fmt.Errorf("%w: SHA256 line %q: want \"checksum size path\"", ErrMalformedRelease, line)
		}
		sum, path := strings.ToLower(fields[0]), fields[2]
		size, err := strconv.ParseInt(fields[1], 10, 64)
		if err != nil || size < 0 {
			return nil, fmt.Errorf("%w: SHA256 line %q: bad size", ErrMalformedRelease, line)
		}
		if b, err := hex.DecodeString(sum); err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("%w: SHA256 line %q: bad checksum", ErrMalformedRelease, line)
		}
		if _, dup := files[path]; dup {
			return nil, fmt.Errorf("%w: SHA256 lists %s twice", ErrMalformedRelease, path)
		}
		files[path] = ReleaseFile{Path: path, Size: size, SHA256: sum}
	}
	return files, nil
}
