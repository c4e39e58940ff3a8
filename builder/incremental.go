package builder

// Incremental configuration (`build --incremental`). A build with it keeps
// its configured tree on disk in the cache directory, with a record of
// what went into it. The next --incremental build of the same branch,
// when it only adds packages, brings that directory up to date (the new
// packages' files and dpkg database entries), runs only the new packages'
// preinsts, `dpkg --configure -a` and the triggers they activate, and
// reads back what changed: no full checkout, no re-run of every
// maintainer script. The price: the result is what `apt install` of the
// new packages on the previous image gives, which need not be byte for
// byte what a from-scratch build of the same lock gives. Builds without
// --incremental never use this state.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/apt-ostree/apt-ostree-factory/internal/atomicfile"
	"github.com/apt-ostree/apt-ostree-factory/ostree"
)

// incrementalFormat changes whenever what the builder writes into the
// configured tree changes, so that state from another version is not
// built upon.
const incrementalFormat = 1

// configuredState describes the configured tree kept in a persistDir.
type configuredState struct {
	Format int
	// ScriptKey digests what configuring depends on besides the
	// packages (host name, recipe steps, initramfs request).
	ScriptKey string
	// Merged/MergedMeta: the tree configuring started from (packages,
	// dpkg database, recipe files); Configured/ConfiguredMeta: the tree
	// in root/ after configuring.
	Merged, MergedMeta         string
	Configured, ConfiguredMeta string
	Packages                   []string // DebTree.ID of every package
	Commit                     string   // the commit made from it
}

// persistDir is <cache>/configured/<key>: state.json, root/ and a lock
// file held for the whole build.
type persistDir struct {
	path string
	lock *os.File
}

var errPersistBusy = errors.New("another --incremental build of this branch holds its configured tree")

// KeptTreeDir is where `build --incremental` keeps the configured tree of
// a repository's branch under a cache directory.
func KeptTreeDir(cacheDir, repoPath, branch string) (string, error) {
	return persistPath(cacheDir, repoPath, branch)
}

func persistPath(cacheDir, repoPath, branch string) (string, error) {
	abs, err := filepath.Abs(repoPath)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(abs + "\x00" + branch))
	return filepath.Join(cacheDir, "configured", hex.EncodeToString(sum[:8])), nil
}

func openPersist(cacheDir, repoPath, branch string) (*persistDir, error) {
	p, err := persistPath(cacheDir, repoPath, branch)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(p, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(p, "lock"), os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, errPersistBusy
		}
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return &persistDir{path: p, lock: f}, nil
}

func (p *persistDir) close() {
	if p != nil && p.lock != nil {
		p.lock.Close()
	}
}

func (p *persistDir) statePath() string { return filepath.Join(p.path, "state.json") }

// readState returns the kept state, or nil and why there is none.
func (p *persistDir) readState() (*configuredState, string) {
	b, err := os.ReadFile(p.statePath())
	if errors.Is(err, os.ErrNotExist) {
		return nil, "no configured tree kept by an earlier --incremental build of this branch"
	}
	if err != nil {
		return nil, fmt.Sprintf("cannot read the kept state: %v", err)
	}
	var st configuredState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Sprintf("the kept state %s is damaged: %v", p.statePath(), err)
	}
	return &st, ""
}

// clearState marks root/ as not matching any state: set before the
// directory is touched, so a build that dies halfway leaves nothing to
// build upon.
func (p *persistDir) clearState() error {
	if err := os.Remove(p.statePath()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	atomicfile.SyncDir(p.path)
	return nil
}

func (p *persistDir) writeState(st *configuredState) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(p.statePath(), append(b, '\n'), 0o644)
}

// scriptKey digests the inputs of the configure stage other than the
// packages, and who runs it (identity: the kept files' owners on disk
// depend on the user and its subordinate id ranges).
func scriptKey(opts ConfigureOptions, identity string) string {
	b, _ := json.Marshal(struct {
		Format   int
		Hostname string
		Steps    []Step
		Hook     *HookRequest
		Identity string
	}{incrementalFormat, opts.Hostname, opts.Steps, opts.Hook, identity})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// sandboxIdentity names how the sandbox maps ids: root, or the user and
// its subuid and subgid ranges.
func sandboxIdentity() string {
	if os.Geteuid() == 0 {
		return "root"
	}
	ids, err := lookupSubIDs()
	if err != nil {
		return fmt.Sprintf("uid %d: %v", os.Geteuid(), err)
	}
	return fmt.Sprintf("uid %d gid %d subuid %d+%d subgid %d+%d", ids.UID, ids.GID, ids.SubUID.Start, ids.SubUID.Count, ids.SubGID.Start, ids.SubGID.Count)
}

// incrementalBase is what an incremental configure starts from.
type incrementalBase struct {
	from       *configuredState
	tree, meta ostree.Checksum // the configured tree in root/
	newDebs    []*DebTree      // packages the earlier build did not have
	input      *ostree.MemDir  // the configured tree plus the new packages
}

// dpkgAggregates are database files that hold every package's entries:
// adding packages changes them, and their new entries are added to the
// configured tree's versions of them.
func isDpkgAggregate(p string) bool {
	return p == dpkgAdminDir+"/status" || strings.HasPrefix(p, dpkgAdminDir+"/triggers/") && !strings.Contains(strings.TrimPrefix(p, dpkgAdminDir+"/triggers/"), "/")
}

// planIncremental decides whether this build can configure on top of the
// kept tree (state st): the configure inputs besides packages are the
// same, no package was removed or changed, the merged tree only gained
// paths (besides the dpkg database's aggregate files), and the kept
// tree's objects can be read. It returns nil and the reason when not.
func planIncremental(repo *ostree.Repo, st *configuredState, key string, merged *ostree.MemDir, debs []*DebTree) (*incrementalBase, string) {
	base, reason, err := planIncrementalErr(repo, st, key, merged, debs)
	if err != nil {
		return nil, fmt.Sprintf("cannot use the kept tree: %v", err)
	}
	return base, reason
}

func planIncrementalErr(repo *ostree.Repo, st *configuredState, key string, merged *ostree.MemDir, debs []*DebTree) (*incrementalBase, string, error) {
	switch {
	case st.Format != incrementalFormat:
		return nil, "the kept configured tree was made by another version of the factory", nil
	case st.ScriptKey != key:
		return nil, "the host name, users, groups, scripts or kernel settings of the recipe, or the user building, changed", nil
	}
	parse := func(s string) (ostree.Checksum, bool) {
		c, err := ostree.ParseChecksum(s)
		return c, err == nil
	}
	prevTree, ok1 := parse(st.Merged)
	prevMeta, ok2 := parse(st.MergedMeta)
	confTree, ok3 := parse(st.Configured)
	confMeta, ok4 := parse(st.ConfiguredMeta)
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return nil, "the kept state is damaged", nil
	}
	have := map[string]bool{}
	for _, t := range debs {
		have[t.ID()] = true
	}
	old := map[string]bool{}
	for _, id := range st.Packages {
		old[id] = true
		if !have[id] {
			return nil, fmt.Sprintf("package %s was removed or changed version", id), nil
		}
	}
	var newDebs []*DebTree
	for _, t := range debs {
		if !old[t.ID()] {
			newDebs = append(newDebs, t)
		}
	}
	for _, c := range []struct {
		sum ostree.Checksum
		typ ostree.ObjectType
	}{{prevTree, ostree.ObjectDirTree}, {prevMeta, ostree.ObjectDirMeta}, {confTree, ostree.ObjectDirTree}, {confMeta, ostree.ObjectDirMeta}} {
		if ok, err := repo.HasObject(c.sum, c.typ); err != nil {
			return nil, "", err
		} else if !ok {
			return nil, "the repository no longer holds the kept tree's objects", nil
		}
	}
	l := treeLoader{repo: repo, metas: map[ostree.Checksum]ostree.FileMeta{}, headers: map[ostree.Checksum]ostree.FileHeader{}}
	seedHeaders(merged, l.headers)
	conf, err := l.dir(confTree, confMeta, "/")
	if err != nil {
		return nil, "", fmt.Errorf("load the kept configured tree: %w", err)
	}
	d := &treeDiff{repo: repo, aggregates: map[string][2]*ostree.MemFile{}}
	if reason, err := d.additions(prevTree, prevMeta, merged, "/", conf); err != nil || reason != "" {
		return nil, reason, err
	}
	for _, p := range sortedKeys(d.aggregates) {
		files := d.aggregates[p]
		if reason, err := addAggregateEntries(repo, conf, p, files[0], files[1]); err != nil || reason != "" {
			return nil, reason, err
		}
	}
	return &incrementalBase{from: st, tree: confTree, meta: confMeta, newDebs: newDebs, input: conf}, "", nil
}

type treeDiff struct {
	repo *ostree.Repo
	// aggregates: dpkg database files that changed, old and new version.
	aggregates map[string][2]*ostree.MemFile
}

// additions compares the earlier merged tree (tree, meta in the
// repository) with this build's (cur) at path at, and adds what cur has
// in addition to into (the configured tree; nil where scripts replaced
// the directory). Any other difference is a reason not to build
// incrementally.
func (d *treeDiff) additions(tree, meta ostree.Checksum, cur *ostree.MemDir, at string, into *ostree.MemDir) (string, error) {
	m, err := d.repo.ReadDirMeta(meta)
	if err != nil {
		return "", err
	}
	if !sameMeta(m, cur.Meta) {
		return fmt.Sprintf("%s changed owner, mode or xattrs", at), nil
	}
	dt, err := d.repo.ReadDirTree(tree)
	if err != nil {
		return "", err
	}
	seen := map[string]bool{}
	for _, f := range dt.Files {
		seen[f.Name] = true
		p := path.Join(at, f.Name)
		nf, ok := cur.Files[f.Name]
		if !ok {
			return fmt.Sprintf("%s was removed", p), nil
		}
		if nf.Checksum == f.Checksum {
			continue
		}
		rel := strings.TrimPrefix(p, "/")
		if !isDpkgAggregate(rel) {
			return fmt.Sprintf("%s changed", p), nil
		}
		d.aggregates[rel] = [2]*ostree.MemFile{{Checksum: f.Checksum}, nf}
	}
	for _, sub := range dt.Dirs {
		seen[sub.Name] = true
		p := path.Join(at, sub.Name)
		nd, ok := cur.Dirs[sub.Name]
		if !ok {
			return fmt.Sprintf("%s was removed", p), nil
		}
		var target *ostree.MemDir
		if into != nil {
			target = into.Dirs[sub.Name]
		}
		if reason, err := d.additions(sub.Tree, sub.Meta, nd, p, target); err != nil || reason != "" {
			return reason, err
		}
	}
	added := ostree.NewMemDir(cur.Meta)
	for name, f := range cur.Files {
		if !seen[name] {
			added.Files[name] = f
		}
	}
	for name, sd := range cur.Dirs {
		if !seen[name] {
			added.Dirs[name] = sd
		}
	}
	if len(added.Files)+len(added.Dirs) == 0 {
		return "", nil
	}
	if into == nil {
		return fmt.Sprintf("%s gained entries, but it is no longer a directory in the configured tree", at), nil
	}
	return mergeEntries(into, added, at), nil
}

// mergeEntries adds src's entries to dst (the directory at path at of
// the configured tree), merging into directories that scripts of the
// earlier build made already; an entry dst has as a file is a reason not
// to build incrementally.
func mergeEntries(dst, src *ostree.MemDir, at string) string {
	for _, n := range sortedKeys(src.Files) {
		if dst.Files[n] != nil || dst.Dirs[n] != nil {
			return fmt.Sprintf("new path %s exists in the configured tree already", path.Join(at, n))
		}
		dst.Files[n] = src.Files[n]
	}
	for _, n := range sortedKeys(src.Dirs) {
		switch {
		case dst.Files[n] != nil:
			return fmt.Sprintf("new directory %s is a file in the configured tree", path.Join(at, n))
		case dst.Dirs[n] == nil:
			dst.Dirs[n] = src.Dirs[n]
		default:
			if r := mergeEntries(dst.Dirs[n], src.Dirs[n], path.Join(at, n)); r != "" {
				return r
			}
		}
	}
	return ""
}

func sameMeta(a, b ostree.FileMeta) bool {
	if a.UID != b.UID || a.GID != b.GID || a.Mode != b.Mode || len(a.Xattrs) != len(b.Xattrs) {
		return false
	}
	for i := range a.Xattrs {
		if a.Xattrs[i].Name != b.Xattrs[i].Name || !bytes.Equal(a.Xattrs[i].Value, b.Xattrs[i].Value) {
			return false
		}
	}
	return true
}

// addAggregateEntries adds to the configured tree's version of a dpkg
// database file (rel, relative to /) the entries this build's merged
// version has beyond the earlier merged version: new status stanzas (as
// "unpacked", the state dpkg --configure picks up), new trigger interest
// lines. An entry of an earlier package that changed or went away is a
// reason not to build incrementally.
func addAggregateEntries(repo *ostree.Repo, conf *ostree.MemDir, rel string, old, cur *ostree.MemFile) (string, error) {
	read := func(f *ostree.MemFile) ([]byte, error) {
		if f.Data != nil {
			return f.Data, nil
		}
		_, rc, err := repo.OpenContent(f.Checksum)
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		var b bytes.Buffer
		_, err = b.ReadFrom(rc)
		return b.Bytes(), err
	}
	oldData, err := read(old)
	if err != nil {
		return "", err
	}
	curData, err := read(cur)
	if err != nil {
		return "", err
	}
	_, file := conf.Lookup(rel)
	var confData []byte
	header := cur.Header
	if file != nil {
		if confData, err = read(file); err != nil {
			return "", err
		}
		header = file.Header
	}
	var add []string
	if rel == dpkgAdminDir+"/status" {
		known := map[string]string{}
		for _, s := range stanzas(oldData) {
			known[stanzaKey(s)] = s
		}
		seen := map[string]bool{}
		for _, s := range stanzas(curData) {
			k := stanzaKey(s)
			seen[k] = true
			switch was, ok := known[k]; {
			case !ok:
				add = append(add, s+"\n")
			case was != s:
				return fmt.Sprintf("the dpkg status entry of %s changed", k), nil
			}
		}
		for k := range known {
			if !seen[k] {
				return fmt.Sprintf("the dpkg status entry of %s went away", k), nil
			}
		}
		data := bytes.TrimRight(confData, "\n")
		if len(data) > 0 {
			data = append(data, '\n', '\n')
		}
		data = append(data, strings.Join(add, "\n")...)
		return "", putFile(conf, rel, header, data)
	}
	known := map[string]bool{}
	for _, l := range strings.Split(string(oldData), "\n") {
		known[l] = true
	}
	now := map[string]bool{}
	for _, l := range strings.Split(string(curData), "\n") {
		now[l] = true
	}
	for _, l := range strings.Split(string(oldData), "\n") {
		if l != "" && !now[l] {
			return fmt.Sprintf("%s lost the line %q", rel, l), nil
		}
	}
	present := map[string]bool{}
	for _, l := range strings.Split(string(confData), "\n") {
		present[l] = true
	}
	data := append([]byte(nil), confData...)
	if len(data) > 0 && data[len(data)-1] != '\n' {
		data = append(data, '\n')
	}
	for _, l := range strings.Split(string(curData), "\n") {
		if l != "" && !known[l] && !present[l] {
			data = append(data, l+"\n"...)
		}
	}
	return "", putFile(conf, rel, header, data)
}

func putFile(root *ostree.MemDir, rel string, h ostree.FileHeader, data []byte) error {
	h.Size = uint64(len(data))
	dir, name := path.Split(rel)
	d, err := root.MkdirAll(dir, ostree.FileMeta{Mode: ostree.ModeDir | 0o755})
	if err != nil {
		return err
	}
	d.Files[name] = &ostree.MemFile{Header: h, Data: data, Origin: "dpkg database " + rel}
	return nil
}

// stanzas splits a dpkg status file into its paragraphs (without the
// blank lines between them).
func stanzas(b []byte) []string {
	var out []string
	for _, s := range strings.Split(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n\n") {
		if s = strings.Trim(s, "\n"); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func stanzaKey(s string) string {
	var pkg, arch string
	for _, l := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(l, "Package:"); ok {
			pkg = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(l, "Architecture:"); ok {
			arch = strings.TrimSpace(v)
		}
	}
	return pkg + ":" + arch
}

// incrementalTriggers are the triggers an install of newDebs on the kept
// tree activates: the file triggers (of any package) whose path holds a
// file of a new package, the named triggers new packages activate, and
// every interest the new packages register (as a fresh install would have
// activated them).
func incrementalTriggers(all, newDebs []*DebTree) []string {
	seen := map[string]bool{}
	var fileInterests []string
	for _, t := range all {
		for _, in := range triggerInterests(t) {
			if strings.HasPrefix(in.trigger, "/") {
				fileInterests = append(fileInterests, in.trigger)
			}
		}
	}
	for _, t := range newDebs {
		for _, in := range triggerInterests(t) {
			seen[in.trigger] = true
		}
		for _, line := range strings.Split(string(t.Control["triggers"]), "\n") {
			f := strings.Fields(line)
			if len(f) == 2 && strings.HasPrefix(f[0], "activate") {
				seen[f[1]] = true
			}
		}
		for _, p := range t.Files {
			for _, in := range fileInterests {
				if p == in || strings.HasPrefix(p, strings.TrimSuffix(in, "/")+"/") {
					seen[in] = true
				}
			}
		}
	}
	out := sortedKeys(seen)
	sort.Strings(out)
	return out
}

// keepIncremental records the configured tree in p after a build.
func keepIncremental(p *persistDir, key string, mergedTree, mergedMeta ostree.Checksum, cres *ConfigureResult, debs []*DebTree, commit ostree.Checksum) error {
	ids := make([]string, 0, len(debs))
	for _, t := range debs {
		ids = append(ids, t.ID())
	}
	sort.Strings(ids)
	return p.writeState(&configuredState{
		Format: incrementalFormat, ScriptKey: key,
		Merged: mergedTree.String(), MergedMeta: mergedMeta.String(),
		Configured: cres.Tree.String(), ConfiguredMeta: cres.Meta.String(),
		Packages: ids, Commit: commit.String(),
	})
}
