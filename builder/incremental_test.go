package builder

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apt-ostree/apt-ostree-factory/ostree"
)

func memFile(data string) *ostree.MemFile {
	return &ostree.MemFile{Header: ostree.FileHeader{FileMeta: ostree.FileMeta{Mode: ostree.ModeRegular | 0o644}, Size: uint64(len(data))}, Data: []byte(data)}
}

func putPath(t *testing.T, root *ostree.MemDir, p, data string) {
	t.Helper()
	d, err := root.MkdirAll(filepath.Dir(p), ostree.FileMeta{Mode: ostree.ModeDir | 0o755})
	if err != nil {
		t.Fatal(err)
	}
	d.Files[filepath.Base(p)] = memFile(data)
}

// TestPlanIncremental: the kept configured tree plus what the merged tree
// gained (files of a new package, its status stanza and trigger
// interests) is the incremental input; removed packages, changed recipe
// settings and changed files mean a from-scratch configure.
func TestPlanIncremental(t *testing.T) {
	ctx := context.Background()
	repo, err := ostree.Init(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const stanzaA = "Package: a\nStatus: install ok unpacked\nArchitecture: amd64\nVersion: 1\n"
	const stanzaB = "Package: b\nStatus: install ok unpacked\nArchitecture: amd64\nVersion: 2\n"
	merged := func(withB bool, aData string) *ostree.MemDir {
		root := ostree.NewMemDir(ostree.FileMeta{Mode: ostree.ModeDir | 0o755})
		putPath(t, root, "usr/bin/a", aData)
		status, trig := stanzaA, "/usr/share/a a\n"
		if withB {
			putPath(t, root, "usr/bin/b", "b")
			putPath(t, root, "usr/share/b/doc", "doc")
			status += "\n" + stanzaB
			trig += "/usr/share/b b/noawait\n"
		}
		putPath(t, root, "var/lib/dpkg/status", status)
		putPath(t, root, "var/lib/dpkg/triggers/File", trig)
		if _, err := root.MkdirAll("var/lock", ostree.FileMeta{Mode: ostree.ModeDir | 0o755}); err != nil {
			t.Fatal(err)
		}
		return root
	}
	write := func(d *ostree.MemDir) (ostree.Checksum, ostree.Checksum) {
		tr, m, _, err := repo.WriteTree(ctx, d, ostree.WriteTreeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tr, m
	}
	prev := merged(false, "a")
	prevTree, prevMeta := write(prev)
	// The configured tree: dpkg rewrote status, a script added a file
	// and replaced /var/lock by a symlink.
	conf := merged(false, "a")
	putPath(t, conf, "var/lib/dpkg/status", "Package: a\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1\n")
	putPath(t, conf, "etc/by-script", "x")
	delete(conf.Dirs["var"].Dirs, "lock")
	conf.Dirs["var"].Files["lock"] = &ostree.MemFile{Header: ostree.FileHeader{FileMeta: ostree.FileMeta{Mode: ostree.ModeSymlink | 0o777}, Symlink: "/run/lock"}}
	confTree, confMeta := write(conf)

	a := &DebTree{Package: "a", Version: "1", Architecture: "amd64", Files: []string{"/usr/bin/a"}}
	b := &DebTree{Package: "b", Version: "2", Architecture: "amd64", Files: []string{"/usr/bin/b", "/usr/share/b", "/usr/share/b/doc"},
		Control: map[string][]byte{"triggers": []byte("interest-noawait /usr/share/b\nactivate-noawait ldconfig\n")}}
	key := scriptKey(ConfigureOptions{Hostname: "h"}, "root")
	if key == scriptKey(ConfigureOptions{Hostname: "h"}, "uid 1000 gid 1000 subuid 100000+65536 subgid 100000+65536") {
		t.Error("the state key does not depend on who builds")
	}
	st := &configuredState{Format: incrementalFormat, ScriptKey: key, Merged: prevTree.String(), MergedMeta: prevMeta.String(),
		Configured: confTree.String(), ConfiguredMeta: confMeta.String(), Packages: []string{a.ID()}, Commit: "c"}

	cur := merged(true, "a")
	write(cur)
	base, reason := planIncremental(repo, st, key, cur, []*DebTree{a, b})
	if base == nil {
		t.Fatalf("planIncremental: %q", reason)
	}
	if len(base.newDebs) != 1 || base.newDebs[0] != b {
		t.Errorf("new packages %v, want b", base.newDebs)
	}
	read := func(p string) string {
		t.Helper()
		_, f := base.input.Lookup(p)
		if f == nil {
			t.Fatalf("%s missing from the incremental input", p)
		}
		if f.Data != nil {
			return string(f.Data)
		}
		_, rc, err := repo.OpenContent(f.Checksum)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		var sb strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := rc.Read(buf)
			sb.Write(buf[:n])
			if err != nil {
				break
			}
		}
		return sb.String()
	}
	if got, want := read("var/lib/dpkg/status"), "Package: a\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1\n\n"+stanzaB; got != want {
		t.Errorf("status:\n%s\nwant:\n%s", got, want)
	}
	if got, want := read("var/lib/dpkg/triggers/File"), "/usr/share/a a\n/usr/share/b b/noawait\n"; got != want {
		t.Errorf("triggers/File %q, want %q", got, want)
	}
	read("usr/bin/b")
	read("usr/share/b/doc")
	read("etc/by-script")
	if _, f := base.input.Lookup("var/lock"); f == nil || f.Header.Symlink != "/run/lock" {
		t.Errorf("the configured tree's /var/lock symlink was not kept")
	}
	if got := strings.Join(incrementalTriggers([]*DebTree{a, b}, base.newDebs), " "); got != "/usr/share/b ldconfig" {
		t.Errorf("triggers %q", got)
	}

	statusChanged := merged(true, "a")
	putPath(t, statusChanged, "var/lib/dpkg/status", strings.Replace(stanzaA, "Version: 1", "Version: 1.1", 1)+"\n"+stanzaB)
	// Reasons for a from-scratch configure.
	for _, tc := range []struct {
		name  string
		st    func(configuredState) *configuredState
		cur   *ostree.MemDir
		debs  []*DebTree
		words string
	}{
		{"objects gone", func(s configuredState) *configuredState { s.Configured = prevMeta.String(); return &s }, cur, []*DebTree{a, b}, "no longer holds"},
		{"recipe settings", func(s configuredState) *configuredState { s.ScriptKey = "other"; return &s }, cur, []*DebTree{a, b}, "host name, users"},
		{"package removed", func(s configuredState) *configuredState { return &s }, cur, []*DebTree{b}, "package a:amd64=1 was removed"},
		{"file changed", func(s configuredState) *configuredState { return &s }, merged(true, "A"), []*DebTree{a, b}, "/usr/bin/a changed"},
		{"format", func(s configuredState) *configuredState { s.Format = 0; return &s }, cur, []*DebTree{a, b}, "another version"},
		{"status entry changed", func(s configuredState) *configuredState { return &s }, statusChanged, []*DebTree{a, b}, "status entry of a:amd64 changed"},
	} {
		write(tc.cur)
		base, reason := planIncremental(repo, tc.st(*st), key, tc.cur, tc.debs)
		if base != nil || !strings.Contains(reason, tc.words) {
			t.Errorf("%s: base %v, reason %q; want a reason with %q", tc.name, base != nil, reason, tc.words)
		}
	}
}

// TestPersistDir: one build at a time holds a branch's kept tree; the
// state is gone once cleared, so a build that dies leaves nothing to
// build upon.
func TestPersistDir(t *testing.T) {
	cache := t.TempDir()
	p, err := openPersist(cache, "repo", "os/x86_64")
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	if _, err := openPersist(cache, "repo", "os/x86_64"); err != errPersistBusy {
		t.Errorf("second holder: %v, want errPersistBusy", err)
	}
	other, err := openPersist(cache, "repo", "os/aarch64")
	if err != nil {
		t.Fatalf("another branch: %v", err)
	}
	other.close()
	if st, why := p.readState(); st != nil || !strings.Contains(why, "no configured tree kept") {
		t.Errorf("state before any build: %v %q", st, why)
	}
	st := &configuredState{Format: incrementalFormat, Packages: []string{"a:amd64=1"}, Commit: "c"}
	if err := p.writeState(st); err != nil {
		t.Fatal(err)
	}
	if got, _ := p.readState(); got == nil || got.Commit != "c" || len(got.Packages) != 1 {
		t.Errorf("read back %+v", got)
	}
	if err := p.clearState(); err != nil {
		t.Fatal(err)
	}
	if st, _ := p.readState(); st != nil {
		t.Error("state survives clearState")
	}
}
