package apt

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path"
	"sort"
	"strconv"
	"strings"

	"pault.ag/go/debian/version"
)

// LockFormat is the lock file format version this package writes and reads.
const LockFormat = 1

// Lock pins the exact set of packages a build installs and the archive
// states they were resolved against. `resolve` writes it; a build given a
// lock file installs exactly these packages, fetched by SHA-256.
//
// # Lock file format
//
// A lock file is UTF-8 text, one record per line, fields separated by
// spaces. Lines starting with '#' and blank lines are comments. Records
// are sorted (sources by URI then suite, packages and boot packages by
// name then architecture) and every package is one line, so that a change
// to one package is a one-line diff:
//
//	# apt-ostree-factory lock file: every package pinned by SHA-256.
//	lock-format 1
//
//	# source ID URI SUITE INRELEASE-SHA256
//	source trixie http://deb.debian.org/debian trixie 3b0e4c1c…
//	source trixie-security http://security.debian.org/debian-security trixie-security 9d2f07aa…
//
//	# package NAME VERSION ARCH SOURCE-ID SIZE SHA256 FILENAME
//	package base-files 13.8+deb13u1 amd64 trixie 73248 0c5b4e9d… pool/main/b/base-files/base-files_13.8+deb13u1_amd64.deb
//	package libc6 2.41-12 amd64 trixie-security 2850580 a6e1f2c8… pool/updates/main/g/glibc/libc6_2.41-12_amd64.deb
//
//	# boot-package NAME VERSION ARCH SOURCE-ID SIZE SHA256 FILENAME (files for the disk image, not installed)
//	boot-package systemd-boot-efi 257.8-1~deb13u2 amd64 trixie 134320 5f1d83e2… pool/main/s/systemd/systemd-boot-efi_257.8-1~deb13u2_amd64.deb
//
// (digests shortened here; in a file they are 64 lowercase hex digits).
//
//   - "lock-format N" is the first record. Readers refuse formats they do
//     not know.
//   - "source ID URI SUITE INRELEASE-SHA256": an archive the packages were
//     resolved against, and the SHA-256 of the InRelease (or Release) file
//     that was verified. ID is a short name that package records refer to;
//     writers derive it from the suite ("trixie"), qualified by the
//     archive's host when two sources share a suite ("trixie@deb.debian.org").
//     IDs are a property of the file only: they are not kept in Lock.
//   - "package NAME VERSION ARCH SOURCE-ID SIZE SHA256 FILENAME": a binary
//     package, its .deb's size in bytes and SHA-256, and its path relative
//     to the source's URI (the Filename field of the Packages index). The
//     .deb is downloaded from URI + "/" + FILENAME. A NAME and ARCH pair
//     appears at most once.
//   - "boot-package NAME VERSION ARCH SOURCE-ID SIZE SHA256 FILENAME", the
//     same fields as "package": a package whose .deb the build downloads
//     only to take files from it for the disk image (a UEFI boot loader,
//     a file system driver), never installed into the tree and not part
//     of the dependency resolution. A NAME and ARCH pair appears at most
//     once among boot packages (a package may be both installed and a
//     boot package). The block, comment line included, is only written
//     when there are boot packages, so a lock without any is byte for
//     byte what earlier versions wrote, and has the same Digest.
//
// None of the fields can contain spaces (Debian names, versions and pool
// paths never do); writers refuse values that would. Readers accept
// records in any order, extra spaces and comments, and report every
// problem as "file:line: ..."; writers always produce the canonical form
// above, whose SHA-256 is the lock's Digest.
type Lock struct {
	Sources  []LockSource
	Packages []LockedPackage
	// BootPackages are pinned like Packages but not installed: the build
	// extracts chosen files from them (see the boot-package record). Their
	// sources are among Sources too.
	BootPackages []LockedPackage
}

// LockSource is one archive state a lock was resolved against.
type LockSource struct {
	URI   string
	Suite string
	// ReleaseSHA256 is the SHA-256 of the verified InRelease (or Release)
	// file, lowercase hex.
	ReleaseSHA256 string
}

func (s LockSource) String() string { return s.URI + " " + s.Suite }

// LockedPackage is one pinned package. URI and Suite name its source, which
// must be one of the lock's Sources.
type LockedPackage struct {
	Name         string
	Version      string
	Architecture string
	SHA256       string // lowercase hex
	Size         int64  // bytes
	Filename     string // relative to URI
	URI          string
	Suite        string
}

// ID names the package in messages like Package.ID: name:arch=version.
func (lp LockedPackage) ID() string {
	return lp.Name + ":" + lp.Architecture + "=" + lp.Version
}

// URL is where the .deb is downloaded from: the source URI, "/", Filename.
func (lp LockedPackage) URL() string {
	return strings.TrimSuffix(lp.URI, "/") + "/" + strings.TrimPrefix(lp.Filename, "/")
}

// LockFromPackages pins pkgs, as the solver returns them. Each package's
// source is taken from pkg.Index.Source and its InRelease digest from
// pkg.Index.ReleaseSHA256. Sources that contributed no package are not
// listed; a caller that wants them recorded appends them to Sources.
// Identical packages given twice are listed once. The result is sorted; it
// is not validated here (a package without an Index, for example, is
// reported by Validate, WriteTo and Marshal).
func LockFromPackages(pkgs []*Package) *Lock {
	l := &Lock{}
	seenSrc := map[LockSource]bool{}
	seenPkg := map[LockedPackage]bool{}
	for _, p := range pkgs {
		if p == nil {
			continue
		}
		lp, src, ok := lockedPackage(p)
		if ok && !seenSrc[src] {
			seenSrc[src] = true
			l.Sources = append(l.Sources, src)
		}
		if !seenPkg[lp] {
			seenPkg[lp] = true
			l.Packages = append(l.Packages, lp)
		}
	}
	l.Sort()
	return l
}

// lockedPackage pins p; src is its source, ok false when p has no Index
// or Source.
func lockedPackage(p *Package) (lp LockedPackage, src LockSource, ok bool) {
	lp = LockedPackage{
		Name:         p.Name,
		Version:      p.Version.String(),
		Architecture: p.Architecture,
		SHA256:       p.SHA256,
		Size:         p.Size,
		Filename:     p.Filename,
	}
	if p.Index == nil || p.Index.Source == nil {
		return lp, LockSource{}, false
	}
	lp.URI, lp.Suite = p.Index.Source.URI, p.Index.Source.Suite
	return lp, LockSource{URI: lp.URI, Suite: lp.Suite, ReleaseSHA256: p.Index.ReleaseSHA256}, true
}

// AddBootPackages pins pkgs (as BootCandidates returns them) as boot
// packages: downloaded and locked, not installed. Each package's source
// is added to Sources unless a source with the same URI and suite is
// already listed, so a source that contributed only boot packages is
// recorded too. Identical packages, also ones already in BootPackages,
// are listed once. The result is sorted; like LockFromPackages it is not
// validated here.
func (l *Lock) AddBootPackages(pkgs []*Package) {
	haveSrc := map[[2]string]bool{}
	for _, s := range l.Sources {
		haveSrc[[2]string{s.URI, s.Suite}] = true
	}
	seenPkg := map[LockedPackage]bool{}
	for _, lp := range l.BootPackages {
		seenPkg[lp] = true
	}
	for _, p := range pkgs {
		if p == nil {
			continue
		}
		lp, src, ok := lockedPackage(p)
		if k := [2]string{src.URI, src.Suite}; ok && !haveSrc[k] {
			haveSrc[k] = true
			l.Sources = append(l.Sources, src)
		}
		if !seenPkg[lp] {
			seenPkg[lp] = true
			l.BootPackages = append(l.BootPackages, lp)
		}
	}
	l.Sort()
}

// Sort puts sources in (URI, suite) order and packages and boot packages
// in (name, architecture) order, the order they are written in.
func (l *Lock) Sort() {
	sort.SliceStable(l.Sources, func(i, j int) bool {
		a, b := l.Sources[i], l.Sources[j]
		if a.URI != b.URI {
			return a.URI < b.URI
		}
		if a.Suite != b.Suite {
			return a.Suite < b.Suite
		}
		return a.ReleaseSHA256 < b.ReleaseSHA256
	})
	sort.SliceStable(l.Packages, func(i, j int) bool {
		return lessLocked(l.Packages[i], l.Packages[j])
	})
	sort.SliceStable(l.BootPackages, func(i, j int) bool {
		return lessLocked(l.BootPackages[i], l.BootPackages[j])
	})
}

func lessLocked(a, b LockedPackage) bool {
	for _, c := range [...][2]string{
		{a.Name, b.Name}, {a.Architecture, b.Architecture}, {a.Version, b.Version},
		{a.URI, b.URI}, {a.Suite, b.Suite}, {a.SHA256, b.SHA256}, {a.Filename, b.Filename},
	} {
		if c[0] != c[1] {
			return c[0] < c[1]
		}
	}
	return a.Size < b.Size
}

// Validate reports everything wrong with l that would make its file
// unreadable or its packages unfetchable: malformed names, versions,
// digests or filenames, a package or boot package whose source is not
// listed, a source or a name:arch listed twice (among packages, or among
// boot packages).
func (l *Lock) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	srcs := map[[2]string]bool{}
	for _, s := range l.Sources {
		if err := checkSourceURI(s.URI); err != nil {
			bad("source %q: %v", s.String(), err)
		}
		if err := checkToken("suite", s.Suite); err != nil {
			bad("source %q: %v", s.String(), err)
		}
		if !isSHA256(s.ReleaseSHA256) {
			bad("source %s: InRelease SHA-256 %q is not 64 lowercase hex digits", s, s.ReleaseSHA256)
		}
		k := [2]string{s.URI, s.Suite}
		if srcs[k] {
			bad("source %s is listed twice (two different InRelease digests?)", s)
		}
		srcs[k] = true
	}
	pkgs := map[[2]string]bool{}
	for _, p := range l.Packages {
		if err := p.validate(); err != nil {
			errs = append(errs, err)
		}
		if p.URI == "" && p.Suite == "" {
			bad("package %s has no source (no Index in the solver's result?)", p.ID())
		} else if !srcs[[2]string{p.URI, p.Suite}] {
			bad("package %s comes from %s %s, which is not among the lock's sources", p.ID(), p.URI, p.Suite)
		}
		k := [2]string{p.Name, p.Architecture}
		if pkgs[k] {
			bad("package %s:%s is listed twice", p.Name, p.Architecture)
		}
		pkgs[k] = true
	}
	boot := map[[2]string]bool{}
	for _, p := range l.BootPackages {
		if err := p.validate(); err != nil {
			errs = append(errs, fmt.Errorf("boot %w", err))
		}
		if p.URI == "" && p.Suite == "" {
			bad("boot package %s has no source (no Index?)", p.ID())
		} else if !srcs[[2]string{p.URI, p.Suite}] {
			bad("boot package %s comes from %s %s, which is not among the lock's sources", p.ID(), p.URI, p.Suite)
		}
		k := [2]string{p.Name, p.Architecture}
		if boot[k] {
			bad("boot package %s:%s is listed twice", p.Name, p.Architecture)
		}
		boot[k] = true
	}
	return errors.Join(errs...)
}

// validate checks the package's own fields (not its source reference).
func (lp LockedPackage) validate() error {
	var errs []string
	if !validPackageName(lp.Name) {
		errs = append(errs, fmt.Sprintf("invalid package name %q", lp.Name))
	}
	if err := checkToken("version", lp.Version); err != nil {
		errs = append(errs, err.Error())
	} else if _, err := version.Parse(lp.Version); err != nil {
		errs = append(errs, fmt.Sprintf("invalid version %q: %v", lp.Version, err))
	}
	if !validArch(lp.Architecture) {
		errs = append(errs, fmt.Sprintf("invalid architecture %q", lp.Architecture))
	}
	if !isSHA256(lp.SHA256) {
		errs = append(errs, fmt.Sprintf("SHA-256 %q is not 64 lowercase hex digits", lp.SHA256))
	}
	if lp.Size <= 0 {
		errs = append(errs, fmt.Sprintf("size %d is not a positive number of bytes", lp.Size))
	}
	if err := checkFilename(lp.Filename); err != nil {
		errs = append(errs, err.Error())
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("package %s: %s", lp.ID(), strings.Join(errs, "; "))
}

// Marshal returns the lock file, after Validate.
func (l *Lock) Marshal() ([]byte, error) {
	if err := l.Validate(); err != nil {
		return nil, fmt.Errorf("invalid lock: %w", err)
	}
	return l.canonical(), nil
}

// WriteTo writes the lock file to w, after Validate.
func (l *Lock) WriteTo(w io.Writer) (int64, error) {
	b, err := l.Marshal()
	if err != nil {
		return 0, err
	}
	n, err := w.Write(b)
	return int64(n), err
}

// Digest is the SHA-256 (lowercase hex) of the lock's canonical
// serialization, the bytes Marshal writes: equal locks have equal digests
// whatever order their slices are in, and comments or spacing in a parsed
// file do not count. Builds record it in commit metadata.
func (l *Lock) Digest() string {
	sum := sha256.Sum256(l.canonical())
	return hex.EncodeToString(sum[:])
}

// canonical serializes a sorted copy of l without validating it.
func (l *Lock) canonical() []byte {
	c := Lock{
		Sources:      append([]LockSource(nil), l.Sources...),
		Packages:     append([]LockedPackage(nil), l.Packages...),
		BootPackages: append([]LockedPackage(nil), l.BootPackages...),
	}
	c.Sort()
	ids := sourceIDs(c.Sources)
	var b bytes.Buffer
	b.WriteString("# apt-ostree-factory lock file: every package pinned by SHA-256.\n")
	fmt.Fprintf(&b, "lock-format %d\n", LockFormat)
	b.WriteString("\n# source ID URI SUITE INRELEASE-SHA256\n")
	for _, s := range c.Sources {
		fmt.Fprintf(&b, "source %s %s %s %s\n", ids[[2]string{s.URI, s.Suite}], s.URI, s.Suite, s.ReleaseSHA256)
	}
	writePkgs := func(record string, pkgs []LockedPackage) {
		for _, p := range pkgs {
			id, ok := ids[[2]string{p.URI, p.Suite}]
			if !ok {
				id = "?"
			}
			fmt.Fprintf(&b, "%s %s %s %s %s %d %s %s\n", record, p.Name, p.Version, p.Architecture, id, p.Size, p.SHA256, p.Filename)
		}
	}
	b.WriteString("\n# package NAME VERSION ARCH SOURCE-ID SIZE SHA256 FILENAME\n")
	writePkgs("package", c.Packages)
	// Written only when there are boot packages: a lock without them keeps
	// the bytes (and Digest) it had before boot packages existed.
	if len(c.BootPackages) > 0 {
		b.WriteString("\n# boot-package NAME VERSION ARCH SOURCE-ID SIZE SHA256 FILENAME (files for the disk image, not installed)\n")
		writePkgs("boot-package", c.BootPackages)
	}
	return b.Bytes()
}

// sourceIDs names each (URI, suite) of sorted srcs: the suite, or
// suite@host when suites collide, with -N appended if that still collides.
func sourceIDs(srcs []LockSource) map[[2]string]string {
	keys := make([][2]string, 0, len(srcs))
	seen := map[[2]string]bool{}
	for _, s := range srcs {
		k := [2]string{s.URI, s.Suite}
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	names := make([]string, len(keys))
	count := map[string]int{}
	for i, k := range keys {
		names[i] = sanitizeID(k[1])
		count[names[i]]++
	}
	for i, k := range keys {
		if count[names[i]] > 1 {
			host := "local"
			if u, err := url.Parse(k[0]); err == nil && u.Host != "" {
				host = u.Host
			}
			names[i] = sanitizeID(names[i] + "@" + host)
		}
	}
	used := map[string]bool{}
	ids := map[[2]string]string{}
	for i, k := range keys {
		name := names[i]
		for n := 2; used[name]; n++ {
			name = fmt.Sprintf("%s-%d", names[i], n)
		}
		used[name] = true
		ids[k] = name
	}
	return ids
}

func sanitizeID(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !isIDChar(c) {
			b[i] = '_'
		}
	}
	if len(b) == 0 || !isAlnum(b[0]) {
		b = append([]byte("s"), b...)
	}
	return string(b)
}

func isIDChar(c byte) bool {
	return isAlnum(c) || strings.IndexByte("._+~@:-", c) >= 0
}

func validSourceID(s string) bool {
	if s == "" || !isAlnum(s[0]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isIDChar(s[i]) {
			return false
		}
	}
	return true
}

// ParseLock reads a lock file. name is used in errors, which have the form
// "name:line: problem"; all problems found are reported, joined.
func ParseLock(r io.Reader, name string) (*Lock, error) {
	type lineErr struct {
		line int
		err  error
	}
	var errs []lineErr
	const maxErrs = 20
	bad := func(line int, format string, args ...any) {
		if len(errs) < maxErrs {
			errs = append(errs, lineErr{line, fmt.Errorf("%s:%d: %s", name, line, fmt.Sprintf(format, args...))})
		}
	}
	joined := func() error {
		sort.SliceStable(errs, func(i, j int) bool { return errs[i].line < errs[j].line })
		list := make([]error, len(errs))
		for i, e := range errs {
			list[i] = e.err
		}
		return errors.Join(list...)
	}
	type srcRec struct {
		src  LockSource
		line int
	}
	type pkgRec struct {
		ref  string
		line int
		boot bool
		i    int // index in Packages or BootPackages
	}
	l := &Lock{}
	srcByID := map[string]srcRec{}
	srcByKey := map[[2]string]int{}
	pkgByKey := map[[2]string]int{}
	bootByKey := map[[2]string]int{}
	var pkgRecs []pkgRec
	sawFormat := false

	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		text := strings.TrimSpace(sc.Text())
		if text == "" || text[0] == '#' {
			continue
		}
		f := strings.Fields(text)
		if !sawFormat {
			if f[0] != "lock-format" {
				bad(lineNo, "expected \"lock-format %d\" before any other record, found %q", LockFormat, f[0])
				return nil, joined()
			}
			if len(f) != 2 {
				bad(lineNo, "lock-format takes one field, the format number")
				return nil, joined()
			}
			v, err := strconv.Atoi(f[1])
			if err != nil || v != LockFormat {
				bad(lineNo, "unsupported lock format %q: this version reads format %d", f[1], LockFormat)
				return nil, joined()
			}
			sawFormat = true
			continue
		}
		switch f[0] {
		case "lock-format":
			bad(lineNo, "lock-format given twice")
		case "source":
			if len(f) != 5 {
				bad(lineNo, "source record has %d fields, want 5: source ID URI SUITE INRELEASE-SHA256", len(f))
				continue
			}
			id, s := f[1], LockSource{URI: f[2], Suite: f[3], ReleaseSHA256: f[4]}
			ok := true
			if !validSourceID(id) {
				bad(lineNo, "invalid source ID %q", id)
				ok = false
			}
			if err := checkSourceURI(s.URI); err != nil {
				bad(lineNo, "source %s: %v", id, err)
				ok = false
			}
			if !isSHA256(s.ReleaseSHA256) {
				bad(lineNo, "source %s: InRelease SHA-256 %q is not 64 lowercase hex digits", id, s.ReleaseSHA256)
				ok = false
			}
			if prev, dup := srcByID[id]; dup {
				bad(lineNo, "source ID %s already defined on line %d", id, prev.line)
				continue
			}
			k := [2]string{s.URI, s.Suite}
			if prev, dup := srcByKey[k]; dup {
				bad(lineNo, "source %s is already listed on line %d", s, prev)
				continue
			}
			srcByID[id] = srcRec{s, lineNo}
			srcByKey[k] = lineNo
			if ok {
				l.Sources = append(l.Sources, s)
			}
		case "package", "boot-package":
			boot := f[0] == "boot-package"
			what, byKey := "package", pkgByKey
			if boot {
				what, byKey = "boot package", bootByKey
			}
			if len(f) != 8 {
				bad(lineNo, "%s record has %d fields, want 8: %s NAME VERSION ARCH SOURCE-ID SIZE SHA256 FILENAME", f[0], len(f), f[0])
				continue
			}
			p := LockedPackage{Name: f[1], Version: f[2], Architecture: f[3], SHA256: f[6], Filename: f[7]}
			size, err := strconv.ParseInt(f[5], 10, 64)
			if err != nil {
				bad(lineNo, "%s %s: size %q is not a number", what, p.ID(), f[5])
				continue
			}
			p.Size = size
			if err := p.validate(); err != nil {
				if boot {
					bad(lineNo, "boot %v", err)
				} else {
					bad(lineNo, "%v", err)
				}
				continue
			}
			k := [2]string{p.Name, p.Architecture}
			if prev, dup := byKey[k]; dup {
				bad(lineNo, "%s %s:%s is already listed on line %d", what, p.Name, p.Architecture, prev)
				continue
			}
			byKey[k] = lineNo
			if boot {
				pkgRecs = append(pkgRecs, pkgRec{f[4], lineNo, true, len(l.BootPackages)})
				l.BootPackages = append(l.BootPackages, p)
			} else {
				pkgRecs = append(pkgRecs, pkgRec{f[4], lineNo, false, len(l.Packages)})
				l.Packages = append(l.Packages, p)
			}
		default:
			bad(lineNo, "unknown record %q (want source, package or boot-package)", f[0])
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s:%d: %w", name, lineNo+1, err)
	}
	if !sawFormat {
		bad(max(lineNo, 1), "no \"lock-format %d\" record: not a lock file", LockFormat)
	}
	for _, rec := range pkgRecs {
		var p *LockedPackage
		what := "package"
		if rec.boot {
			p, what = &l.BootPackages[rec.i], "boot package"
		} else {
			p = &l.Packages[rec.i]
		}
		s, ok := srcByID[rec.ref]
		if !ok {
			bad(rec.line, "%s %s refers to source %q, which no source record defines", what, p.ID(), rec.ref)
			continue
		}
		p.URI, p.Suite = s.src.URI, s.src.Suite
	}
	if len(errs) > 0 {
		return nil, joined()
	}
	return l, nil
}

func isSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// validPackageName follows Debian Policy 5.6.1: lowercase letters, digits,
// '+', '-', '.', at least two characters, starting alphanumeric.
func validPackageName(s string) bool {
	if len(s) < 2 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case '0' <= c && c <= '9', 'a' <= c && c <= 'z':
		case i > 0 && (c == '+' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return true
}

func validArch(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || c == '-') {
			return false
		}
	}
	return true
}

// checkToken refuses empty values and values a space-separated record
// cannot hold.
func checkToken(what, s string) error {
	if s == "" {
		return fmt.Errorf("empty %s", what)
	}
	if strings.IndexFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
		return fmt.Errorf("%s %q contains spaces or control characters", what, s)
	}
	return nil
}

func checkSourceURI(s string) error {
	if err := checkToken("URI", s); err != nil {
		return err
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("invalid URI %q: %v", s, err)
	}
	switch u.Scheme {
	case "http", "https", "file":
	default:
		return fmt.Errorf("URI %q: scheme must be http, https or file", s)
	}
	return nil
}

// checkFilename accepts a clean relative path inside the archive.
func checkFilename(s string) error {
	if err := checkToken("filename", s); err != nil {
		return err
	}
	if strings.HasPrefix(s, "/") || path.Clean(s) != s || s == "." || s == ".." || strings.HasPrefix(s, "../") {
		return fmt.Errorf("filename %q is not a clean path relative to the archive root", s)
	}
	return nil
}
