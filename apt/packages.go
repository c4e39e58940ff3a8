package apt

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"pault.ag/go/debian/dependency"
	"pault.ag/go/debian/version"
)

// ParsePackages reads a Packages index (deb822 stanzas separated by blank
// lines) and returns its binary packages in file order, each pointing at
// idx. Only the fields the factory uses are kept; Description and the
// like are skipped without being copied.
//
// The scanner is written for speed (a whole Debian main index, ~63k
// stanzas, parses in a fraction of the time apt needs): it works on the
// index in memory, splits it at stanza boundaries into one chunk per CPU
// and copies only the values it keeps. Relation fields are parsed with
// pault.ag/go/debian/dependency and versions with
// pault.ag/go/debian/version. Identical relations (e.g. "libc6 (>= 2.34)",
// which thousands of packages carry) are parsed once per chunk and their
// Possibilities shared between the returned packages: treat the
// Dependency values as read-only.
//
// Errors name the index, the stanza's line and the package.
func ParsePackages(r io.Reader, idx *Index) ([]*Package, error) {
	data, err := readAllSized(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", indexName(idx), err)
	}
	chunks := splitStanzas(data, runtime.GOMAXPROCS(0))
	results := make([][]*Package, len(chunks))
	errs := make([]error, len(chunks))
	var wg sync.WaitGroup
	line := 0
	for i, c := range chunks {
		p := newPackagesParser(idx, c, line)
		line += bytes.Count(c, []byte{'\n'})
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = p.parse()
		}()
	}
	wg.Wait()
	n := 0
	for i := range chunks {
		if errs[i] != nil {
			return nil, errs[i]
		}
		n += len(results[i])
	}
	out := make([]*Package, 0, n)
	for _, r := range results {
		out = append(out, r...)
	}
	return out, nil
}

// readAllSized reads r to the end, allocating once when the size is known.
func readAllSized(r io.Reader) ([]byte, error) {
	size := -1
	switch r := r.(type) {
	case interface{ Len() int }: // bytes.Reader, bytes.Buffer, strings.Reader
		size = r.Len()
	case interface{ Stat() (os.FileInfo, error) }:
		if fi, err := r.Stat(); err == nil && fi.Mode().IsRegular() {
			size = int(fi.Size())
		}
	}
	if size < 0 {
		return io.ReadAll(r)
	}
	buf := make([]byte, size)
	n, err := io.ReadFull(r, buf)
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		return buf[:n], nil // shorter than announced (e.g. a file read from an offset)
	}
	if err != nil {
		return nil, err
	}
	// It may have grown: read the rest the slow way.
	rest, err := io.ReadAll(r)
	if len(rest) > 0 {
		buf = append(buf, rest...)
	}
	return buf, err
}

// splitStanzas cuts data into at most n chunks of similar size, each
// ending after a blank line, so that no stanza spans two chunks. Small
// inputs stay whole.
func splitStanzas(data []byte, n int) [][]byte {
	const minChunk = 1 << 20
	if n < 1 || len(data) < 2*minChunk {
		n = 1
	}
	if len(data)/n < minChunk {
		n = len(data) / minChunk
		if n < 1 {
			n = 1
		}
	}
	var chunks [][]byte
	for n > 1 && len(data) > 0 {
		cut := len(data) / n
		i := bytes.Index(data[cut:], []byte("\n\n"))
		if i < 0 {
			break
		}
		cut += i + 2
		chunks = append(chunks, data[:cut])
		data = data[cut:]
		n--
	}
	return append(chunks, data)
}

// indexName names an index in messages.
func indexName(idx *Index) string {
	if idx == nil {
		return "Packages"
	}
	var b strings.Builder
	if idx.Source != nil {
		b.WriteString(idx.Source.String())
		b.WriteByte(' ')
	}
	if idx.Component != "" {
		b.WriteString(idx.Component)
		b.WriteByte('/')
	}
	b.WriteString("binary-")
	if idx.Architecture != "" {
		b.WriteString(idx.Architecture)
	} else {
		b.WriteString("?")
	}
	b.WriteString(" Packages")
	return b.String()
}

type packagesParser struct {
	idx    *Index
	data   []byte // the rest of the chunk
	line   int    // number of the line last read
	rels   map[string]dependency.Relation
	archs  map[string]*dependency.Arch
	intern map[string]string
	out    []*Package

	// the stanza being assembled
	cur       *Package
	curLine   int
	have      uint32 // fields seen, to reject duplicates
	valField  string // relation field whose value may continue on the next lines
	valBuf    []byte
	valTarget *dependency.Dependency
}

func newPackagesParser(idx *Index, data []byte, firstLine int) *packagesParser {
	return &packagesParser{
		idx:    idx,
		data:   data,
		line:   firstLine,
		rels:   make(map[string]dependency.Relation, 1<<14),
		intern: make(map[string]string, 256),
		out:    make([]*Package, 0, bytes.Count(data, []byte("\nPackage:"))+1),
	}
}

const (
	fPackage uint32 = 1 << iota
	fVersion
	fArchitecture
	fMultiArch
	fEssential
	fPriority
	fSection
	fSource
	fFilename
	fSize
	fSHA256
	fInstalledSize
	fPreDepends
	fDepends
	fRecommends
	fConflicts
	fBreaks
	fProvides
	fReplaces
	fImportant
	fProtected
	fSuggests
	fEnhances

	fIgnored uint32 = 1 << 31 // a field the factory does not use
)

// readLine returns the next line without its line ending, or false at the
// end of the chunk.
func (p *packagesParser) readLine() ([]byte, bool) {
	if len(p.data) == 0 {
		return nil, false
	}
	var line []byte
	if i := bytes.IndexByte(p.data, '\n'); i >= 0 {
		line, p.data = p.data[:i], p.data[i+1:]
	} else {
		line, p.data = p.data, nil
	}
	p.line++
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, true
}

func (p *packagesParser) parse() ([]*Package, error) {
	for {
		line, ok := p.readLine()
		if !ok {
			break
		}
		if len(line) == 0 || isBlank(line) {
			if err := p.endStanza(); err != nil {
				return nil, err
			}
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if p.cur == nil {
				return nil, p.errorf("continuation line outside a stanza")
			}
			if p.valTarget != nil {
				p.valBuf = append(p.valBuf, ' ')
				p.valBuf = append(p.valBuf, bytes.TrimSpace(line)...)
			}
			continue
		}
		if line[0] == '#' {
			continue // deb822 comment
		}
		if err := p.flushValue(); err != nil {
			return nil, err
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return nil, p.errorf("malformed line %q: want \"Field: value\"", truncate(line))
		}
		if p.cur == nil {
			p.cur = &Package{Index: p.idx}
			p.curLine = p.line
			p.have = 0
		}
		if err := p.field(line[:colon], bytes.TrimSpace(line[colon+1:])); err != nil {
			return nil, err
		}
	}
	if err := p.endStanza(); err != nil {
		return nil, err
	}
	return p.out, nil
}

func isBlank(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' {
			return false
		}
	}
	return true
}

func truncate(b []byte) string {
	if len(b) > 60 {
		return string(b[:60]) + "..."
	}
	return string(b)
}

// errorf prefixes a message with the index, the stanza's first line and,
// when known, the package.
func (p *packagesParser) errorf(format string, args ...any) error {
	where := fmt.Sprintf("%s: line %d", indexName(p.idx), p.line)
	if p.cur != nil {
		where = fmt.Sprintf("%s: stanza at line %d", indexName(p.idx), p.curLine)
		if p.cur.Name != "" {
			where += " (package " + p.cur.Name + ")"
		}
	}
	return fmt.Errorf("%s: %s", where, fmt.Sprintf(format, args...))
}

func (p *packagesParser) once(bit uint32, key []byte) error {
	if p.have&bit != 0 {
		return p.errorf("duplicate field %s", key)
	}
	p.have |= bit
	return nil
}

func (p *packagesParser) internString(b []byte) string {
	if s, ok := p.intern[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(p.intern) < 4096 {
		p.intern[s] = s
	}
	return s
}

// field stores one "Key: value" line. Keys are matched exactly as Debian's
// archive writes them; deb822 keys are case-insensitive, so a key that
// matches nothing is retried in canonical case.
func (p *packagesParser) field(key, val []byte) error {
	bit := fieldBit(key)
	if bit == fIgnored {
		return nil
	}
	if bit == 0 {
		canon, known := canonicalField(key)
		if !known {
			return nil // a field the factory does not use
		}
		bit = fieldBits[canon]
		key = []byte(canon)
	}
	if err := p.once(bit, key); err != nil {
		return err
	}
	c := p.cur
	switch bit {
	case fPackage:
		if len(val) == 0 {
			return p.errorf("empty Package field")
		}
		c.Name = string(val)
	case fVersion:
		v, err := version.Parse(string(val))
		if err != nil {
			return p.errorf("bad Version %q: %v", val, err)
		}
		c.Version = v
	case fArchitecture:
		if len(val) == 0 {
			return p.errorf("empty Architecture field")
		}
		c.Architecture = p.internString(val)
	case fMultiArch:
		switch string(val) {
		case "same", "foreign", "allowed":
			c.MultiArch = p.internString(val)
		case "no", "":
			c.MultiArch = ""
		default:
			return p.errorf("unknown Multi-Arch value %q", val)
		}
	case fEssential:
		c.Essential = yesNo(val)
	case fImportant, fProtected:
		c.Important = c.Important || yesNo(val)
	case fPriority:
		c.Priority = p.internString(val)
	case fSection:
		c.Section = p.internString(val)
	case fSource:
		// "Source: name (version)" when the source version differs.
		if i := bytes.IndexByte(val, ' '); i >= 0 {
			val = val[:i]
		}
		c.SourcePackage = p.internString(val)
	case fFilename:
		c.Filename = string(val)
	case fSize:
		n, err := strconv.ParseInt(string(val), 10, 64)
		if err != nil || n < 0 {
			return p.errorf("bad Size %q", val)
		}
		c.Size = n
	case fInstalledSize:
		n, err := strconv.ParseInt(string(val), 10, 64)
		if err != nil || n < 0 {
			return p.errorf("bad Installed-Size %q", val)
		}
		c.InstalledSize = n
	case fSHA256:
		sum, ok := lowerHex(val)
		if !ok || len(val) != 64 {
			return p.errorf("bad SHA256 %q: want 64 hex digits", val)
		}
		c.SHA256 = sum
	case fPreDepends:
		return p.startRelation("Pre-Depends", &c.PreDepends, val)
	case fDepends:
		return p.startRelation("Depends", &c.Depends, val)
	case fRecommends:
		return p.startRelation("Recommends", &c.Recommends, val)
	case fSuggests:
		return p.startRelation("Suggests", &c.Suggests, val)
	case fEnhances:
		return p.startRelation("Enhances", &c.Enhances, val)
	case fConflicts:
		return p.startRelation("Conflicts", &c.Conflicts, val)
	case fBreaks:
		return p.startRelation("Breaks", &c.Breaks, val)
	case fProvides:
		return p.startRelation("Provides", &c.Provides, val)
	case fReplaces:
		return p.startRelation("Replaces", &c.Replaces, val)
	}
	return nil
}

// fieldBit is fieldBits[key] for keys as the archive spells them; a
// switch is faster than a map for this small set, and most keys miss.
func fieldBit(key []byte) uint32 {
	switch string(key) {
	case "Package":
		return fPackage
	case "Version":
		return fVersion
	case "Architecture":
		return fArchitecture
	case "Multi-Arch":
		return fMultiArch
	case "Essential":
		return fEssential
	case "Important":
		return fImportant
	case "Protected":
		return fProtected
	case "Priority":
		return fPriority
	case "Section":
		return fSection
	case "Source":
		return fSource
	case "Filename":
		return fFilename
	case "Size":
		return fSize
	case "SHA256":
		return fSHA256
	case "Installed-Size":
		return fInstalledSize
	case "Pre-Depends":
		return fPreDepends
	case "Depends":
		return fDepends
	case "Recommends":
		return fRecommends
	case "Suggests":
		return fSuggests
	case "Enhances":
		return fEnhances
	case "Conflicts":
		return fConflicts
	case "Breaks":
		return fBreaks
	case "Provides":
		return fProvides
	case "Replaces":
		return fReplaces
	// Frequent fields the factory ignores: answer before the
	// case-insensitive retry.
	case "Description", "Description-md5", "Maintainer", "Homepage", "MD5sum", "Tag", "Built-Using":
		return fIgnored
	}
	return 0
}

var fieldBits = map[string]uint32{
	"Package":        fPackage,
	"Version":        fVersion,
	"Architecture":   fArchitecture,
	"Multi-Arch":     fMultiArch,
	"Essential":      fEssential,
	"Important":      fImportant,
	"Protected":      fProtected,
	"Priority":       fPriority,
	"Section":        fSection,
	"Source":         fSource,
	"Filename":       fFilename,
	"Size":           fSize,
	"SHA256":         fSHA256,
	"Installed-Size": fInstalledSize,
	"Pre-Depends":    fPreDepends,
	"Depends":        fDepends,
	"Recommends":     fRecommends,
	"Suggests":       fSuggests,
	"Enhances":       fEnhances,
	"Conflicts":      fConflicts,
	"Breaks":         fBreaks,
	"Provides":       fProvides,
	"Replaces":       fReplaces,
}

var lowerFieldNames = func() map[string]string {
	m := make(map[string]string, len(fieldBits))
	for k := range fieldBits {
		m[strings.ToLower(k)] = k
	}
	return m
}()

// canonicalField maps a field name in any case to the spelling of
// fieldBits.
func canonicalField(key []byte) (string, bool) {
	var buf [32]byte
	if len(key) > len(buf) {
		return "", false
	}
	lower := buf[:len(key)]
	for i, c := range key {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		lower[i] = c
	}
	k, ok := lowerFieldNames[string(lower)]
	return k, ok
}

func yesNo(val []byte) bool {
	return strings.EqualFold(string(val), "yes")
}

// lowerHex returns b in lower case if it is all hex digits.
func lowerHex(b []byte) (string, bool) {
	var buf [64]byte
	if len(b) > len(buf) {
		return "", false
	}
	for i, c := range b {
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f':
		case c >= 'A' && c <= 'F':
			c += 'a' - 'A'
		default:
			return "", false
		}
		buf[i] = c
	}
	return string(buf[:len(b)]), true
}

// startRelation remembers a relation field; it is parsed once its
// continuation lines, if any, have been read.
func (p *packagesParser) startRelation(name string, target *dependency.Dependency, val []byte) error {
	p.valField = name
	p.valTarget = target
	p.valBuf = append(p.valBuf[:0], val...)
	return nil
}

func (p *packagesParser) flushValue() error {
	if p.valTarget == nil {
		return nil
	}
	target, name := p.valTarget, p.valField
	p.valTarget, p.valField = nil, ""
	d, err := p.relations(p.valBuf)
	if err != nil {
		return p.errorf("bad %s %q: %v", name, p.valBuf, err)
	}
	*target = d
	return nil
}

// relations parses a relation field one comma-separated relation at a
// time, so that the cache of parsed relations hits often. Relation fields
// have no commas inside a relation (versions, architecture lists and
// build profiles contain none).
func (p *packagesParser) relations(field []byte) (dependency.Dependency, error) {
	n := bytes.Count(field, []byte{','}) + 1
	d := dependency.Dependency{Relations: make([]dependency.Relation, 0, n)}
	for len(field) > 0 {
		var one []byte
		if i := bytes.IndexByte(field, ','); i >= 0 {
			one, field = field[:i], field[i+1:]
		} else {
			one, field = field, nil
		}
		one = bytes.TrimSpace(one)
		if len(one) == 0 {
			continue // e.g. a trailing comma, as dpkg tolerates
		}
		if r, ok := p.rels[string(one)]; ok {
			d.Relations = append(d.Relations, r)
			continue
		}
		s := string(one)
		r, ok := p.quickRelation(s)
		if !ok {
			parsed, err := parseRelations(s)
			if err != nil {
				return dependency.Dependency{}, err
			}
			if len(parsed.Relations) != 1 {
				return dependency.Dependency{}, fmt.Errorf("cannot parse relation %q", s)
			}
			r = parsed.Relations[0]
		}
		p.rels[s] = r
		d.Relations = append(d.Relations, r)
	}
	return d, nil
}

// emptyArchSet is what pault.ag's parser puts in Possibility.Architectures
// when a relation has no architecture list.
var emptyArchSet = &dependency.ArchSet{Architectures: []dependency.Arch{}}

// quickRelation parses the common shape of one relation in a Packages
// index, "name[:arch] [(op version)] [| ...]", into the same value
// dependency.Parse returns, several times faster. Anything else
// (architecture lists, build profiles, substitution variables, odd
// spacing or invalid input) returns false and goes to pault.ag's parser,
// which also produces the error messages.
func (p *packagesParser) quickRelation(s string) (dependency.Relation, bool) {
	n := strings.Count(s, "|") + 1
	r := dependency.Relation{Possibilities: make([]dependency.Possibility, 0, n)}
	for {
		s = strings.TrimLeft(s, " ")
		// name
		i := 0
		for i < len(s) && isNameByte(s[i]) {
			i++
		}
		if i == 0 || !plausiblePackageName(s[:i]) {
			return dependency.Relation{}, false
		}
		poss := dependency.Possibility{Name: s[:i], Architectures: emptyArchSet, StageSets: []dependency.StageSet{}}
		s = s[i:]
		if len(s) > 0 && s[0] == ':' {
			j := 1
			for j < len(s) && (isNameByte(s[j]) && s[j] != '.' && s[j] != '+') {
				j++
			}
			a, ok := p.arch(s[1:j])
			if !ok {
				return dependency.Relation{}, false
			}
			poss.Arch = a
			s = s[j:]
		}
		s = strings.TrimLeft(s, " ")
		if len(s) > 0 && s[0] == '(' {
			end := strings.IndexByte(s, ')')
			if end < 0 {
				return dependency.Relation{}, false
			}
			inner := strings.TrimLeft(s[1:end], " ")
			var op string
			switch {
			case strings.HasPrefix(inner, ">="), strings.HasPrefix(inner, "<="),
				strings.HasPrefix(inner, ">>"), strings.HasPrefix(inner, "<<"):
				op = inner[:2]
			case strings.HasPrefix(inner, "="):
				op = "="
			default:
				return dependency.Relation{}, false
			}
			num := strings.TrimLeft(inner[len(op):], " ")
			if num == "" || strings.ContainsAny(num, " \t") {
				// pault.ag keeps trailing spaces in Number; let it decide.
				return dependency.Relation{}, false
			}
			if _, err := version.Parse(num); err != nil {
				return dependency.Relation{}, false
			}
			poss.Version = &dependency.VersionRelation{Number: num, Operator: op}
			s = strings.TrimLeft(s[end+1:], " ")
		}
		r.Possibilities = append(r.Possibilities, poss)
		if s == "" {
			return r, true
		}
		if s[0] != '|' {
			return dependency.Relation{}, false
		}
		s = s[1:]
	}
}

func isNameByte(c byte) bool {
	return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '+' || 'A' <= c && c <= 'Z' || c == '_'
}

// arch returns the parsed architecture qualifier of a relation (":any",
// ":native", ":amd64"), parsed once per parser.
func (p *packagesParser) arch(name string) (*dependency.Arch, bool) {
	if name == "" {
		return nil, false
	}
	if p.archs == nil {
		p.archs = make(map[string]*dependency.Arch)
	}
	if a, ok := p.archs[name]; ok {
		return a, true
	}
	a, err := dependency.ParseArch(name)
	if err != nil {
		return nil, false
	}
	p.archs[name] = a
	return a, true
}

// parseRelations parses relations with pault.ag's parser and checks what
// it does not: a version relation needs a valid version, and names are
// package names.
func parseRelations(s string) (d dependency.Dependency, err error) {
	defer func() {
		// Be defensive: malformed input must be an error, never a crash.
		if r := recover(); r != nil {
			err = fmt.Errorf("unparsable relation: %v", r)
		}
	}()
	parsed, err := dependency.Parse(s)
	if err != nil {
		return dependency.Dependency{}, err
	}
	for _, rel := range parsed.Relations {
		if len(rel.Possibilities) == 0 {
			return dependency.Dependency{}, fmt.Errorf("empty alternative")
		}
		for _, poss := range rel.Possibilities {
			if poss.Substvar {
				return dependency.Dependency{}, fmt.Errorf("unexpanded substitution variable ${%s}", poss.Name)
			}
			if !plausiblePackageName(poss.Name) {
				return dependency.Dependency{}, fmt.Errorf("bad package name %q", poss.Name)
			}
			if poss.Version != nil {
				if _, err := version.Parse(poss.Version.Number); err != nil {
					return dependency.Dependency{}, fmt.Errorf("%s: bad version %q: %v", poss.Name, poss.Version.Number, err)
				}
			}
		}
	}
	return *parsed, nil
}

// plausiblePackageName is Debian policy's rule (lower case letters, digits,
// + - .; at least two characters, starting with an alphanumeric), relaxed
// to accept upper case, which apt tolerates.
func plausiblePackageName(s string) bool {
	if len(s) < 1 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c >= 'A' && c <= 'Z':
		case c == '+' || c == '-' || c == '.' || c == '_':
			if i == 0 {
				return false
			}
		default:
			return false
		}
	}
	return true
}

func (p *packagesParser) endStanza() error {
	if err := p.flushValue(); err != nil {
		return err
	}
	c := p.cur
	if c == nil {
		return nil
	}
	switch {
	case p.have&fPackage == 0:
		return p.errorf("stanza has no Package field")
	case p.have&fVersion == 0:
		return p.errorf("no Version field")
	case p.have&fArchitecture == 0:
		return p.errorf("no Architecture field")
	}
	if !plausiblePackageName(c.Name) {
		return p.errorf("bad package name %q", c.Name)
	}
	if c.SourcePackage == "" {
		c.SourcePackage = c.Name
	}
	if c.MultiArch == "same" && c.Architecture == "all" {
		// apt warns and ignores it: an arch:all package cannot be
		// co-installed with itself.
		c.MultiArch = ""
	}
	p.out = append(p.out, c)
	p.cur = nil
	return nil
}
