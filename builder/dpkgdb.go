package builder

import (
	"bufio"
	"bytes"
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/apt-ostree/apt-ostree-factory/ostree"
)

// The dpkg database the builder writes is the one `dpkg --unpack` would
// have left for every package of a fresh install: each package "install
// ok unpacked", its control members under info/, its file list, its
// conffiles as <name>.dpkg-new with the "newconffile" hash, and the
// trigger interests registered. `dpkg --configure -a` in the configure
// sandbox then does the rest, as it does after an unpack.
const (
	dpkgAdminDir   = "var/lib/dpkg"
	newConffileExt = ".dpkg-new"
	// newConffileHash is what dpkg records for a conffile that was
	// unpacked but not configured yet.
	newConffileHash = "newconffile"
)

// infoMembers are the control.tar members dpkg keeps under info/ (its
// "control member" list; control, md5sums's sibling "conffiles" included).
var infoMembers = []string{
	"preinst", "postinst", "prerm", "postrm", "config", "templates",
	"conffiles", "md5sums", "shlibs", "symbols", "triggers",
}

// infoName is the prefix of a package's files under info/: "pkg", or
// "pkg:arch" for Multi-Arch: same packages (dpkg's pkg_infodb naming).
func infoName(t *DebTree) string {
	if t.Field("Multi-Arch") == "same" {
		return t.Package + ":" + t.Architecture
	}
	return t.Package
}

// WriteDpkgDatabase adds the dpkg database for the merged packages to the
// merger's tree (var/lib/dpkg) and moves each package's conffiles to
// <name>.dpkg-new, as dpkg's unpack does. Packages are recorded in the
// order given (dpkg sorts the status file itself when it rewrites it).
func (m *Merger) WriteDpkgDatabase(debs []*DebTree) error {
	root := m.Root()
	dirMeta := ostree.FileMeta{Mode: ostree.ModeDir | 0o755}
	for _, d := range []string{"info", "updates", "triggers", "alternatives", "parts"} {
		if _, err := root.MkdirAll(path.Join(dpkgAdminDir, d), dirMeta); err != nil {
			return err
		}
	}
	losers := map[*DebTree]map[string]bool{}
	for _, r := range m.Replacements() {
		if losers[r.Loser] == nil {
			losers[r.Loser] = map[string]bool{}
		}
		losers[r.Loser][r.LoserListed] = true
	}

	sorted := append([]*DebTree(nil), debs...)
	sort.SliceStable(sorted, func(i, j int) bool {
		if sorted[i].Package != sorted[j].Package {
			return sorted[i].Package < sorted[j].Package
		}
		return sorted[i].Architecture < sorted[j].Architecture
	})

	var status bytes.Buffer
	fileTriggers := map[string][]string{} // path -> interested packages
	named := map[string][]string{}        // trigger name -> interested packages
	for _, t := range sorted {
		name := infoName(t)
		info := path.Join(dpkgAdminDir, "info")
		add := func(suffix string, data []byte, mode uint32) error {
			return root.AddFile(path.Join(info, name+"."+suffix), &ostree.MemFile{
				Header: ostree.FileHeader{FileMeta: ostree.FileMeta{Mode: ostree.ModeRegular | mode}, Size: uint64(len(data))},
				Data:   data, Origin: t.String() + " dpkg info " + suffix,
			})
		}
		// .list: the archive's entries minus files another package took over.
		var list bytes.Buffer
		for _, lp := range t.Files {
			if losers[t][lp] {
				continue
			}
			list.WriteString(lp)
			list.WriteByte('\n')
		}
		if err := add("list", list.Bytes(), 0o644); err != nil {
			return err
		}
		for _, member := range infoMembers {
			data, ok := t.Control[member]
			if !ok {
				continue
			}
			mode := uint32(0o644)
			switch member {
			case "preinst", "postinst", "prerm", "postrm", "config":
				mode = 0o755
			}
			if err := add(member, data, mode); err != nil {
				return err
			}
		}

		var conffiles []string
		for _, cf := range t.Conffiles {
			moved, err := m.renameOwned(t, cf, newConffileExt)
			if err != nil {
				return fmt.Errorf("%s: conffile %s: %w", t, cf, err)
			}
			if moved {
				conffiles = append(conffiles, cf)
			}
		}
		if err := writeStatusStanza(&status, t, conffiles); err != nil {
			return err
		}

		for _, in := range triggerInterests(t) {
			who := name
			if in.noawait {
				who += "/noawait"
			}
			if strings.HasPrefix(in.trigger, "/") {
				fileTriggers[in.trigger] = append(fileTriggers[in.trigger], who)
			} else {
				named[in.trigger] = append(named[in.trigger], who)
			}
		}
	}

	files := map[string][]byte{
		"status": status.Bytes(),
		// dpkg ≥ 1.16 database layout (multiarch-aware info/ names).
		"info/format":  []byte("1\n"),
		"diversions":   {},
		"statoverride": {},
	}
	if len(fileTriggers) > 0 {
		var b bytes.Buffer
		for _, p := range sortedKeys(fileTriggers) {
			for _, who := range fileTriggers[p] {
				fmt.Fprintf(&b, "%s %s\n", p, who)
			}
		}
		files["triggers/File"] = b.Bytes()
	}
	for trig, who := range named {
		if strings.Contains(trig, "/") {
			continue
		}
		files["triggers/"+trig] = []byte(strings.Join(who, "\n") + "\n")
	}
	for _, name := range sortedKeys(files) {
		data := files[name]
		p := path.Join(dpkgAdminDir, name)
		if err := root.AddFile(p, &ostree.MemFile{
			Header: ostree.FileHeader{FileMeta: ostree.FileMeta{Mode: ostree.ModeRegular | 0o644}, Size: uint64(len(data))},
			Data:   data, Origin: "dpkg database " + name,
		}); err != nil {
			return err
		}
	}
	return nil
}

// TriggerNames lists every trigger the database registers an interest in
// (file triggers as their paths), sorted: the configure stage activates
// them all once, as a fresh install's unpacks would have.
func TriggerNames(debs []*DebTree) []string {
	seen := map[string]bool{}
	for _, t := range debs {
		for _, in := range triggerInterests(t) {
			seen[in.trigger] = true
		}
	}
	return sortedKeys(seen)
}

// triggerInterest is an "interest" directive of a package's triggers
// control member: a trigger name, or a path for a file trigger.
type triggerInterest struct {
	trigger string
	noawait bool
}

// triggerInterests reads the interest, interest-await and interest-noawait
// directives of t's triggers member (activate* directives register
// nothing).
func triggerInterests(t *DebTree) []triggerInterest {
	var out []triggerInterest
	for _, line := range strings.Split(string(t.Control["triggers"]), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		switch f[0] {
		case "interest", "interest-await":
			out = append(out, triggerInterest{f[1], false})
		case "interest-noawait":
			out = append(out, triggerInterest{f[1], true})
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// writeStatusStanza writes t's control file as a status entry: Package,
// then "Status: install ok unpacked", then the other fields as the
// control file has them, with Conffiles before Description.
func writeStatusStanza(w *bytes.Buffer, t *DebTree, conffiles []string) error {
	fields, err := orderedFields(t.Control["control"])
	if err != nil {
		return fmt.Errorf("%s: control file: %w", t, err)
	}
	var cf strings.Builder
	if len(conffiles) > 0 {
		cf.WriteString("Conffiles:\n")
		for _, c := range conffiles {
			fmt.Fprintf(&cf, " %s %s\n", c, newConffileHash)
		}
	}
	wroteCF := false
	for _, f := range fields {
		switch f.name {
		case "Status", "Conffiles", "Config-Version", "Triggers-Pending", "Triggers-Awaited":
			continue // never in a .deb's control file; dpkg's own
		case "Description":
			w.WriteString(cf.String())
			wroteCF = true
		}
		w.WriteString(f.raw)
		if f.name == "Package" {
			w.WriteString("Status: install ok unpacked\n")
		}
	}
	if !wroteCF {
		w.WriteString(cf.String())
	}
	w.WriteByte('\n')
	return nil
}

type rawField struct {
	name string
	raw  string // "Name: value\n" plus continuation lines
}

func orderedFields(b []byte) ([]rawField, error) {
	var out []rawField
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			if len(out) > 0 {
				break // a control file is one paragraph
			}
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if len(out) == 0 {
				return nil, fmt.Errorf("continuation line before any field")
			}
			out[len(out)-1].raw += line + "\n"
			continue
		}
		i := strings.IndexByte(line, ':')
		if i <= 0 {
			return nil, fmt.Errorf("malformed line %q", line)
		}
		out = append(out, rawField{name: line[:i], raw: line + "\n"})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 || out[0].name != "Package" {
		return nil, fmt.Errorf("does not start with a Package field")
	}
	return out, nil
}

// renameOwned renames the file t installed at the listed path lp to
// lp+suffix. It reports false when the file is not t's any more (another
// package replaced it) or was never installed.
func (m *Merger) renameOwned(t *DebTree, lp, suffix string) (bool, error) {
	p, err := archivePath(treePath(lp))
	if err != nil || p == "" {
		return false, fmt.Errorf("not a path inside the tree")
	}
	parent, name := splitParent(p)
	c, err := m.walk(m.top(), parent, false, new(int))
	if err != nil {
		return false, nil
	}
	at := c.path(name)
	o, ok := m.owners[at]
	if !ok || o.pkg != t {
		return false, nil
	}
	d := c.dir()
	f, ok := d.Files[name]
	if !ok {
		return false, nil
	}
	if _, clash := d.Files[name+suffix]; clash {
		return false, fmt.Errorf("%s%s exists already", at, suffix)
	}
	delete(d.Files, name)
	d.Files[name+suffix] = f
	delete(m.owners, at)
	m.owners[at+suffix] = o
	return true, nil
}
