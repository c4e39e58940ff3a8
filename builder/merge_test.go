package builder

import (
	"archive/tar"
	"io"
	"strings"
	"testing"

	"github.com/apt-ostree/apt-ostree-factory/ostree"
)

// pkg unpacks a test package with the given fields and entries (parents
// must be listed, as dpkg-deb lists them).
func pkg(t *testing.T, repo *ostree.Repo, name, version string, fields map[string]string, entries ...ent) *DebTree {
	t.Helper()
	return pkgArch(t, repo, name, version, "amd64", fields, entries...)
}

func pkgArch(t *testing.T, repo *ostree.Repo, name, version, arch string, fields map[string]string, entries ...ent) *DebTree {
	t.Helper()
	d := testDeb{Package: name, Version: version, Arch: arch, Fields: fields, Comp: ".gz", Entries: append([]ent{{Name: "./"}}, entries...)}
	return unpackBytes(t, repo, d.build(t))
}

func dirs(names ...string) []ent {
	var out []ent
	for _, n := range names {
		out = append(out, ent{Name: "./" + n + "/"})
	}
	return out
}

func file(name, body string) ent { return ent{Name: "./" + name, Body: body} }

func symlink(name, target string) ent {
	return ent{Name: "./" + name, Type: tar.TypeSymlink, Link: target}
}

func with(es []ent, more ...ent) []ent { return append(append([]ent{}, es...), more...) }

func mustMerge(t *testing.T, m *Merger, trees ...*DebTree) {
	t.Helper()
	for _, tr := range trees {
		if err := m.Merge(tr); err != nil {
			t.Fatal(err)
		}
	}
}

func content(t *testing.T, repo *ostree.Repo, root *ostree.MemDir, p string) string {
	t.Helper()
	d, f := root.Lookup(p)
	if f == nil {
		t.Fatalf("%s: not a file in the tree (dir %v)", p, d != nil)
	}
	if isSymlink(f) {
		return "-> " + f.Header.Symlink
	}
	_, rc, err := repo.OpenContent(f.Checksum)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func isDir(root *ostree.MemDir, p string) bool {
	d, _ := root.Lookup(p)
	return d != nil
}

// trixie: base-files ships the merged-/usr symlinks; a package that still
// ships ./bin, ./lib and ./lib64 paths lands in /usr.
func TestMergeMergedUsrFromBaseFiles(t *testing.T) {
	repo := newRepo(t)
	baseFiles := pkg(t, repo, "base-files", "13.8", nil, with(dirs("etc", "usr", "usr/bin", "usr/lib", "usr/lib64", "usr/sbin"),
		file("usr/lib/os-release", "ID=debian\n"),
		symlink("bin", "usr/bin"), symlink("lib", "usr/lib"), symlink("lib64", "usr/lib64"), symlink("sbin", "usr/sbin"))...)
	old := pkg(t, repo, "oldstyle", "1", nil, with(dirs("bin", "lib", "lib/x86_64-linux-gnu", "lib64", "sbin", "usr", "usr/bin"),
		file("bin/sh", "#!shell"),
		file("lib/x86_64-linux-gnu/libfoo.so.1", "ELF"),
		symlink("lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
		file("sbin/init", "init"),
		file("usr/bin/env", "env"))...)
	m := NewMerger(nil, MergeOptions{Architecture: "amd64"})
	mustMerge(t, m, baseFiles, old)
	root := m.Root()
	for _, l := range []string{"bin", "lib", "lib64", "sbin"} {
		if got := content(t, repo, root, l); got != "-> usr/"+l {
			t.Errorf("/%s: %s", l, got)
		}
	}
	for p, want := range map[string]string{
		"usr/bin/sh":                           "#!shell",
		"usr/lib/x86_64-linux-gnu/libfoo.so.1": "ELF",
		"usr/lib64/ld-linux-x86-64.so.2":       "-> /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
		"usr/sbin/init":                        "init",
		"usr/bin/env":                          "env",
	} {
		if got := content(t, repo, root, p); got != want {
			t.Errorf("%s: %q, want %q", p, got, want)
		}
	}
	if owner, listed := m.Owner("/usr/bin/sh"); owner != old || listed != "/bin/sh" {
		t.Errorf("owner of /usr/bin/sh: %v %s", owner, listed)
	}
	if w := m.Warnings(); len(w) != 0 {
		t.Errorf("warnings %q", w)
	}
	commitTree(t, repo, root, "trixie")
	ostreeFsck(t, repo)
}

// bookworm: base-files ships real /bin and /lib directories; the builder
// seeds the links first, as debootstrap does, and they survive.
func TestMergeSeededMergedUsr(t *testing.T) {
	repo := newRepo(t)
	baseFiles := pkg(t, repo, "base-files", "12.4", nil, dirs("bin", "boot", "etc", "lib", "root", "sbin", "usr", "usr/bin", "usr/lib", "usr/sbin")...)
	coreutils := pkg(t, repo, "coreutils", "9.1", nil, with(dirs("bin", "usr", "usr/bin"), file("bin/ls", "ls"), file("usr/bin/sort", "sort"))...)
	libc := pkg(t, repo, "libc6", "2.36", nil, with(dirs("lib", "lib/x86_64-linux-gnu", "lib64"),
		file("lib/x86_64-linux-gnu/libc.so.6", "libc"),
		symlink("lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"))...)
	m := NewMerger(nil, MergeOptions{Architecture: "amd64"})
	if err := m.SeedMergedUsr("amd64"); err != nil {
		t.Fatal(err)
	}
	mustMerge(t, m, baseFiles, coreutils, libc)
	root := m.Root()
	for _, l := range MergedUsrDirs("amd64") {
		if got := content(t, repo, root, l); got != "-> usr/"+l {
			t.Errorf("/%s: %s", l, got)
		}
		if !isDir(root, "usr/"+l) {
			t.Errorf("/usr/%s is not a directory", l)
		}
	}
	for p, want := range map[string]string{
		"usr/bin/ls":                         "ls",
		"usr/bin/sort":                       "sort",
		"usr/lib/x86_64-linux-gnu/libc.so.6": "libc",
		"usr/lib64/ld-linux-x86-64.so.2":     "-> /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
	} {
		if got := content(t, repo, root, p); got != want {
			t.Errorf("%s: %q, want %q", p, got, want)
		}
	}
	if !isDir(root, "boot") || !isDir(root, "root") {
		t.Error("base-files directories missing")
	}
	commitTree(t, repo, root, "bookworm")
	ostreeFsck(t, repo)

	// Seeding refuses a tree that already has content where a link goes.
	m2 := NewMerger(nil, MergeOptions{})
	mustMerge(t, m2, coreutils)
	if err := m2.SeedMergedUsr("amd64"); err == nil || !strings.Contains(err.Error(), "/bin") {
		t.Errorf("seeding over a populated /bin: %v", err)
	}
}

func TestMergeDirectoryMetadata(t *testing.T) {
	repo := newRepo(t)
	a := pkg(t, repo, "a", "1", nil,
		ent{Name: "./var/"}, ent{Name: "./var/mail/", Mode: 0o2775, GID: 8},
		ent{Name: "./usr/share/a/"}, file("usr/share/a/f", "a")) // no ./usr/ nor ./usr/share/ entries
	b := pkg(t, repo, "b", "1", nil,
		ent{Name: "./var/"}, ent{Name: "./var/mail/", Mode: 0o755},
		ent{Name: "./usr/", Mode: 0o711, GID: 3}, ent{Name: "./usr/share/"})
	m := NewMerger(nil, MergeOptions{})
	mustMerge(t, m, a, b)
	root := m.Root()
	mail, _ := root.Lookup("var/mail")
	if mail.Meta.Mode != ostree.ModeDir|0o2775 || mail.Meta.GID != 8 {
		t.Errorf("/var/mail: %o %d:%d; the first package's metadata should stay", mail.Meta.Mode, mail.Meta.UID, mail.Meta.GID)
	}
	// /usr was created as a parent of a's files; b is the first to list it.
	usr, _ := root.Lookup("usr")
	if usr.Meta.Mode != ostree.ModeDir|0o711 || usr.Meta.GID != 3 {
		t.Errorf("/usr: %o %d:%d; the first listed metadata should apply", usr.Meta.Mode, usr.Meta.UID, usr.Meta.GID)
	}
}

func TestMergeFileConflicts(t *testing.T) {
	repo := newRepo(t)
	base := dirs("usr", "usr/bin")
	a := pkg(t, repo, "a", "1.0-1", nil, with(base, file("usr/bin/tool", "from a"))...)
	b := pkg(t, repo, "b", "1", nil, with(base, file("usr/bin/tool", "from b"))...)
	bReplaces := pkg(t, repo, "b", "2", map[string]string{"Replaces": "a (<< 1.0-2)"}, with(base, file("usr/bin/tool", "from b2"))...)
	bReplacesNewer := pkg(t, repo, "b", "3", map[string]string{"Replaces": "a (<< 1.0)"}, with(base, file("usr/bin/tool", "from b3"))...)
	aReplacesB := pkg(t, repo, "a", "1.0-5", map[string]string{"Replaces": "b"}, with(base, file("usr/bin/tool", "from a5"))...)

	t.Run("no-replaces", func(t *testing.T) {
		m := NewMerger(nil, MergeOptions{})
		mustMerge(t, m, a)
		err := m.Merge(b)
		if err == nil {
			t.Fatal("no conflict")
		}
		for _, s := range []string{"b (1, amd64)", "a (1.0-1, amd64)", "/usr/bin/tool"} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error lacks %q: %v", s, err)
			}
		}
		t.Log(err)
	})
	t.Run("replaces", func(t *testing.T) {
		m := NewMerger(nil, MergeOptions{})
		mustMerge(t, m, a, bReplaces)
		if got := content(t, repo, m.Root(), "usr/bin/tool"); got != "from b2" {
			t.Errorf("tool: %q", got)
		}
		r := m.Replacements()
		if len(r) != 1 || r[0].Winner != bReplaces || r[0].Loser != a || r[0].Path != "/usr/bin/tool" || r[0].KeptOlderFile {
			t.Errorf("replacements %+v", r)
		}
	})
	t.Run("replaces-other-version", func(t *testing.T) {
		m := NewMerger(nil, MergeOptions{})
		mustMerge(t, m, a)
		if err := m.Merge(bReplacesNewer); err == nil {
			t.Error("Replaces: a (<< 1.0) let b replace a 1.0-1")
		}
	})
	t.Run("earlier-replaces-later", func(t *testing.T) {
		m := NewMerger(nil, MergeOptions{})
		mustMerge(t, m, aReplacesB, b)
		if got := content(t, repo, m.Root(), "usr/bin/tool"); got != "from a5" {
			t.Errorf("tool: %q", got)
		}
		if r := m.Replacements(); len(r) != 1 || !r[0].KeptOlderFile || r[0].Winner != aReplacesB {
			t.Errorf("replacements %+v", r)
		}
	})
	t.Run("callback", func(t *testing.T) {
		m := NewMerger(nil, MergeOptions{Replaces: func(newer, older *DebTree) bool { return newer.Package == "b" }})
		mustMerge(t, m, a, b)
		if got := content(t, repo, m.Root(), "usr/bin/tool"); got != "from b" {
			t.Errorf("tool: %q", got)
		}
	})
	t.Run("same-package-twice", func(t *testing.T) {
		m := NewMerger(nil, MergeOptions{})
		mustMerge(t, m, a, a)
	})
}

func TestMergeMultiArchSame(t *testing.T) {
	repo := newRepo(t)
	ma := map[string]string{"Multi-Arch": "same"}
	doc := with(dirs("usr", "usr/share", "usr/share/doc", "usr/share/doc/libfoo1"), file("usr/share/doc/libfoo1/copyright", "GPL"))
	amd64 := pkgArch(t, repo, "libfoo1", "1", "amd64", ma, with(doc, dirs("usr/lib", "usr/lib/x86_64-linux-gnu")...)...)
	i386 := pkgArch(t, repo, "libfoo1", "1", "i386", ma, with(doc, dirs("usr/lib", "usr/lib/i386-linux-gnu")...)...)
	i386Diff := pkgArch(t, repo, "libfoo1", "2", "i386", ma, with(dirs("usr", "usr/share", "usr/share/doc", "usr/share/doc/libfoo1"), file("usr/share/doc/libfoo1/copyright", "MIT"))...)
	m := NewMerger(nil, MergeOptions{Architecture: "amd64"})
	mustMerge(t, m, amd64, i386)
	m = NewMerger(nil, MergeOptions{Architecture: "amd64"})
	mustMerge(t, m, amd64)
	if err := m.Merge(i386Diff); err == nil || !strings.Contains(err.Error(), "shared") {
		t.Errorf("differing shared file: %v", err)
	}
}

func TestMergeFileDirectoryConflicts(t *testing.T) {
	repo := newRepo(t)
	aDir := pkg(t, repo, "a", "1", nil, with(dirs("usr", "usr/share", "usr/share/x"), file("usr/share/x/f", "f"))...)
	bFile := pkg(t, repo, "b", "1", nil, with(dirs("usr", "usr/share"), file("usr/share/x", "x"))...)
	bFileReplaces := pkg(t, repo, "b", "2", map[string]string{"Replaces": "a"}, with(dirs("usr", "usr/share"), file("usr/share/x", "x"))...)
	cFile := pkg(t, repo, "c", "1", nil, with(dirs("opt"), file("opt/y", "y"))...)
	dDir := pkg(t, repo, "d", "1", nil, dirs("opt", "opt/y")...)
	dDirReplaces := pkg(t, repo, "d", "2", map[string]string{"Replaces": "c"}, with(dirs("opt", "opt/y"), file("opt/y/z", "z"))...)
	eLink := pkg(t, repo, "e", "1", nil, with(dirs("usr", "usr/share"), symlink("usr/share/x", "elsewhere"))...)

	for name, tc := range map[string]struct {
		first, second *DebTree
		want          []string // in the error; none: merges
	}{
		"file-over-directory":          {aDir, bFile, []string{"b (1, amd64)", "a (1, amd64)", "/usr/share/x", "directory"}},
		"file-over-directory-replaces": {aDir, bFileReplaces, []string{"b (2, amd64)", "/usr/share/x", "directory"}},
		"directory-over-file":          {cFile, dDir, []string{"d (1, amd64)", "c (1, amd64)", "/opt/y"}},
		"directory-over-file-replaces": {cFile, dDirReplaces, nil},
		"symlink-over-directory":       {aDir, eLink, nil},
	} {
		t.Run(name, func(t *testing.T) {
			m := NewMerger(nil, MergeOptions{})
			mustMerge(t, m, tc.first)
			err := m.Merge(tc.second)
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("merged")
			}
			for _, s := range tc.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error lacks %q: %v", s, err)
				}
			}
			t.Log(err)
		})
	}

	// dpkg keeps a directory that a later package ships as a symlink.
	m := NewMerger(nil, MergeOptions{})
	mustMerge(t, m, aDir, eLink)
	if !isDir(m.Root(), "usr/share/x") || len(m.Warnings()) != 1 || !strings.Contains(m.Warnings()[0], "e (1, amd64)") {
		t.Errorf("symlink over a directory: dir %v, warnings %q", isDir(m.Root(), "usr/share/x"), m.Warnings())
	}
	// With Replaces, a directory takes the place of the other package's file.
	m = NewMerger(nil, MergeOptions{})
	mustMerge(t, m, cFile, dDirReplaces)
	if got := content(t, repo, m.Root(), "opt/y/z"); got != "z" {
		t.Errorf("opt/y/z: %q", got)
	}
}

func TestMergeSymlinkResolution(t *testing.T) {
	repo := newRepo(t)
	links := pkg(t, repo, "links", "1", nil, with(dirs("etc", "usr", "usr/share", "usr/share/alt", "opt"),
		symlink("etc/alt", "/usr/share/alt"),   // absolute: resolved in the tree, not on the host
		symlink("opt/up", "../../../../../.."), // ".." stops at the tree's root
		symlink("opt/loop1", "loop2"), symlink("opt/loop2", "loop1"),
		file("opt/plain", "plain"),
		symlink("opt/dangling", "/nonexistent"))...)
	m := NewMerger(nil, MergeOptions{})
	mustMerge(t, m, links)
	user := pkg(t, repo, "user", "1", nil, with(dirs("etc", "etc/alt", "opt", "opt/up", "opt/up/srv"),
		file("etc/alt/conf", "conf"),
		file("opt/up/srv/inside", "inside"))...)
	mustMerge(t, m, user)
	root := m.Root()
	if got := content(t, repo, root, "usr/share/alt/conf"); got != "conf" {
		t.Errorf("through an absolute symlink: %q", got)
	}
	if got := content(t, repo, root, "srv/inside"); got != "inside" {
		t.Errorf("through a symlink climbing above the root: %q", got)
	}
	for name, e := range map[string][]ent{
		"loop":         with(dirs("opt"), file("opt/loop1/x", "x")),
		"through-file": with(dirs("opt"), file("opt/plain/x", "x")),
		"dangling-dir": dirs("opt", "opt/dangling"),
	} {
		t.Run(name, func(t *testing.T) {
			bad := pkg(t, repo, "bad-"+name, "1", nil, e...)
			err := m.Merge(bad)
			if err == nil {
				t.Fatal("merged")
			}
			if !strings.Contains(err.Error(), "bad-"+name) {
				t.Errorf("error does not name the package: %v", err)
			}
			t.Log(err)
		})
	}
}

// Two packages that reach one file through different names: dpkg does not
// notice (its database compares names); the later package wins, with a
// warning.
func TestMergeAliasedPaths(t *testing.T) {
	repo := newRepo(t)
	a := pkg(t, repo, "a", "1", nil, with(dirs("bin"), file("bin/foo", "a"))...)
	b := pkg(t, repo, "b", "1", nil, with(dirs("usr", "usr/bin"), file("usr/bin/foo", "b"))...)
	m := NewMerger(nil, MergeOptions{})
	if err := m.SeedMergedUsr("arm64"); err != nil {
		t.Fatal(err)
	}
	mustMerge(t, m, a, b)
	if got := content(t, repo, m.Root(), "usr/bin/foo"); got != "b" {
		t.Errorf("usr/bin/foo: %q", got)
	}
	if w := m.Warnings(); len(w) != 1 || !strings.Contains(w[0], "/bin/foo") {
		t.Errorf("warnings %q", w)
	}
}

func TestDebReplaces(t *testing.T) {
	mk := func(name, version, arch, replaces, multiArch string) *DebTree {
		c := "Package: " + name + "\nVersion: " + version + "\nArchitecture: " + arch + "\n"
		if replaces != "" {
			c += "Replaces: " + replaces + "\n"
		}
		if multiArch != "" {
			c += "Multi-Arch: " + multiArch + "\n"
		}
		return &DebTree{Package: name, Version: version, Architecture: arch, Control: map[string][]byte{"control": []byte(c)}}
	}
	old := mk("old", "1.2-1", "amd64", "", "")
	oldI386 := mk("old", "1.2-1", "i386", "", "")
	oldForeign := mk("old", "1.2-1", "i386", "", "foreign")
	oldAll := mk("old", "1.2-1", "all", "", "")
	for _, tc := range []struct {
		newer *DebTree
		older *DebTree
		want  bool
	}{
		{mk("new", "1", "amd64", "", ""), old, false},
		{mk("new", "1", "amd64", "old", ""), old, true},
		{mk("new", "1", "amd64", "other, old (<< 1.3)", ""), old, true},
		{mk("new", "1", "amd64", "old (<< 1.2-1)", ""), old, false},
		{mk("new", "1", "amd64", "old (<= 1.2-1)", ""), old, true},
		{mk("new", "1", "amd64", "old (>= 2)", ""), old, false},
		{mk("new", "1", "amd64", "old-doc", ""), old, false},
		{mk("new", "1", "amd64", "old", ""), oldI386, false},
		{mk("new", "1", "amd64", "old:any", ""), oldI386, true},
		{mk("new", "1", "amd64", "old:i386", ""), oldI386, true},
		{mk("new", "1", "amd64", "old", ""), oldForeign, true},
		{mk("new", "1", "amd64", "old", ""), oldAll, true},
		{mk("new", "1", "all", "old", ""), old, true},
	} {
		if got := debReplaces(tc.newer, tc.older, "amd64"); got != tc.want {
			t.Errorf("%s Replaces %q vs %s: %v, want %v", tc.newer.ID(), tc.newer.Field("Replaces"), tc.older.ID(), got, tc.want)
		}
	}
}

// A file list from a tampered cache entry cannot reach outside the tree.
func TestMergeRefusesBadListedPaths(t *testing.T) {
	repo := newRepo(t)
	good := pkg(t, repo, "p", "1", nil, with(dirs("etc"), file("etc/f", "f"))...)
	for _, bad := range []string{"/../etc/f", "/etc/../etc/f", "etc/f", "/etc//f", "/etc/f/"} {
		tr := *good
		tr.Files = []string{"/.", "/etc", bad}
		m := NewMerger(nil, MergeOptions{})
		if err := m.Merge(&tr); err == nil || !strings.Contains(err.Error(), "p (1, amd64)") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
