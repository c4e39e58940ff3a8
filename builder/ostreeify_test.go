package builder

import (
	"strings"
	"testing"

	"github.com/apt-ostree/apt-ostree-factory/ostree"
)

// dpkgFixture merges two small packages and writes their dpkg database.
func dpkgFixture(t *testing.T) (*ostree.Repo, *Merger, []*DebTree) {
	t.Helper()
	repo := newRepo(t)
	base := testDeb{Package: "base", Version: "1.0", Comp: ".gz",
		Fields:  map[string]string{"Multi-Arch": "foreign"},
		Control: map[string]string{"conffiles": "/etc/base.conf\n", "postinst": "#!/bin/sh\nexit 0\n", "triggers": "interest-noawait /usr/share/base\ninterest ldconfig\n"},
		Entries: []ent{{Name: "./"}, {Name: "./etc/"}, file("etc/base.conf", "x=1\n"), {Name: "./usr/"}, {Name: "./usr/bin/"}, file("usr/bin/base", "#!/bin/sh\n"),
			{Name: "./var/"}, {Name: "./var/lib/"}, {Name: "./var/lib/base/"}, file("var/lib/base/state", "s\n"), {Name: "./var/log/"}, file("var/log/base.log", "log\n"),
			{Name: "./root/"}, file("root/.profile", "p\n"), {Name: "./boot/"}, file("boot/vmlinuz-6.1-test", "kernel"), file("boot/config-6.1-test", "cfg")}}
	lib := testDeb{Package: "libx", Version: "2.0", Comp: ".gz",
		Fields:  map[string]string{"Multi-Arch": "same", "Pre-Depends": "base", "Depends": "base (>= 1.0)"},
		Control: map[string]string{"preinst": "#!/bin/sh\nexit 0\n"},
		Entries: []ent{{Name: "./"}, {Name: "./usr/"}, {Name: "./usr/lib/"}, file("usr/lib/libx.so.2", "elf")}}
	trees := []*DebTree{unpackBytes(t, repo, lib.build(t)), unpackBytes(t, repo, base.build(t))}
	m := NewMerger(nil, MergeOptions{Architecture: "amd64"})
	mustMerge(t, m, trees...)
	if err := m.WriteDpkgDatabase(trees); err != nil {
		t.Fatal(err)
	}
	return repo, m, trees
}

func TestWriteDpkgDatabase(t *testing.T) {
	repo, m, trees := dpkgFixture(t)
	root := m.Root()
	if _, _, _, err := repo.WriteTree(t.Context(), root, ostree.WriteTreeOptions{}); err != nil {
		t.Fatal(err)
	}
	status := content(t, repo, root, "var/lib/dpkg/status")
	// Sorted by name; Status right after Package; Conffiles before Description.
	if !strings.HasPrefix(status, "Package: base\nStatus: install ok unpacked\n") {
		t.Errorf("status starts:\n%s", status)
	}
	if !strings.Contains(status, "Conffiles:\n /etc/base.conf newconffile\nDescription:") {
		t.Errorf("conffiles not recorded as new:\n%s", status)
	}
	if strings.Index(status, "Package: libx") < strings.Index(status, "Package: base") {
		t.Errorf("status not sorted")
	}
	if _, f := root.Lookup("etc/base.conf"); f != nil {
		t.Errorf("conffile still at its final name")
	}
	if got := content(t, repo, root, "etc/base.conf.dpkg-new"); got != "x=1\n" {
		t.Errorf("conffile.dpkg-new = %q", got)
	}
	if got := content(t, repo, root, "var/lib/dpkg/info/libx:amd64.list"); got != "/.\n/usr\n/usr/lib\n/usr/lib/libx.so.2\n" {
		t.Errorf("Multi-Arch: same list = %q", got)
	}
	if _, f := root.Lookup("var/lib/dpkg/info/base.postinst"); f == nil || f.Header.Mode&0o777 != 0o755 {
		t.Errorf("postinst missing or not executable: %+v", f)
	}
	if got := content(t, repo, root, "var/lib/dpkg/triggers/File"); got != "/usr/share/base base/noawait\n" {
		t.Errorf("triggers/File = %q", got)
	}
	if got := content(t, repo, root, "var/lib/dpkg/triggers/ldconfig"); got != "base\n" {
		t.Errorf("triggers/ldconfig = %q", got)
	}
	if got := TriggerNames(trees); strings.Join(got, " ") != "/usr/share/base ldconfig" {
		t.Errorf("TriggerNames = %v", got)
	}
	// libx pre-depends on base: base's preinst runs first.
	order := preinstOrder(trees)
	if order[0].Package != "base" || order[1].Package != "libx" {
		t.Errorf("preinst order %s, %s", order[0].Package, order[1].Package)
	}
	script := configureScript(trees, ConfigureOptions{Steps: []Step{{Name: "it's", Script: "true"}}})
	for _, want := range []string{"/var/lib/dpkg/info/libx:amd64.preinst install", "dpkg-trigger --no-await 'ldconfig'", "echo 'aof: it'\\''s'"} {
		if !strings.Contains(script, want) {
			t.Errorf("configure script lacks %q:\n%s", want, script)
		}
	}
}

func TestOSTreeify(t *testing.T) {
	repo, m, _ := dpkgFixture(t)
	root := m.Root()
	initrd := &ostree.MemFile{Header: ostree.FileHeader{FileMeta: ostree.FileMeta{Mode: ostree.ModeRegular | 0o644}, Size: 4}, Data: []byte("cpio")}
	res, err := OSTreeify(root, &Kernel{Version: "6.1-test", Initramfs: initrd})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := repo.WriteTree(t.Context(), root, ostree.WriteTreeOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := content(t, repo, root, "usr/lib/modules/6.1-test/vmlinuz"); got != "kernel" {
		t.Errorf("vmlinuz = %q", got)
	}
	if _, f := root.Lookup("usr/lib/modules/6.1-test/initramfs.img"); f != initrd {
		t.Errorf("initramfs not in place")
	}
	if got := content(t, repo, root, "usr/lib/modules/6.1-test/config"); got != "cfg" {
		t.Errorf("config = %q", got)
	}
	if d := root.Dirs["boot"]; d == nil || len(d.Files)+len(d.Dirs) != 0 {
		t.Errorf("/boot not empty")
	}
	if root.Dirs["etc"] != nil || !isDir(root, "usr/etc") {
		t.Errorf("/etc not moved to /usr/etc")
	}
	if _, f := root.Lookup("usr/etc/machine-id"); f == nil || len(f.Data) != 0 {
		t.Errorf("machine-id not empty")
	}
	if v := root.Dirs["var"]; v == nil || len(v.Files)+len(v.Dirs) != 0 {
		t.Errorf("/var not empty")
	}
	if !isDir(root, "usr/lib/sysimage/dpkg/info") {
		t.Errorf("dpkg database not under /usr/lib/sysimage/dpkg")
	}
	for link, target := range map[string]string{"home": "var/home", "root": "var/roothome", "opt": "var/opt", "srv": "var/srv", "mnt": "var/mnt", "media": "run/media", "usr/local": "../var/usrlocal", "ostree": "sysroot/ostree"} {
		if got := content(t, repo, root, link); got != "-> "+target {
			t.Errorf("/%s: %s, want -> %s", link, got, target)
		}
	}
	conf := content(t, repo, root, "usr/lib/tmpfiles.d/apt-ostree-var.conf")
	for _, want := range []string{
		"L /var/lib/dpkg - - - - ../../usr/lib/sysimage/dpkg\n",
		"d /var/lib/base 0755 0 0 -\n",
		"C /var/lib/base/state - - - - /usr/share/factory/var/lib/base/state\n",
		"d /var/roothome 0755 0 0 -\n", // the package's mode
		"C /var/roothome/.profile - - - - /usr/share/factory/var/roothome/.profile\n",
		"d /var/log 0755 0 0 -\n",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("tmpfiles.d lacks %q:\n%s", want, conf)
		}
	}
	if strings.Contains(conf, "base.log") {
		t.Errorf("build log kept:\n%s", conf)
	}
	if got := content(t, repo, root, "usr/share/factory/var/lib/base/state"); got != "s\n" {
		t.Errorf("factory copy = %q", got)
	}
	if res.VarEntries == 0 || len(res.Dropped) == 0 {
		t.Errorf("result %+v", res)
	}
	for _, d := range []string{"dev", "proc", "sys", "run", "tmp", "sysroot", "efi"} {
		if !isDir(root, d) {
			t.Errorf("/%s missing", d)
		}
	}
	if root.Dirs["tmp"].Meta.Mode&0o7777 != 0o1777 {
		t.Errorf("/tmp mode %o", root.Dirs["tmp"].Meta.Mode)
	}
	// The result commits.
	if _, err := repo.CommitTree(t.Context(), root, ostree.CommitOptions{Branch: "os"}); err != nil {
		t.Fatal(err)
	}
}
