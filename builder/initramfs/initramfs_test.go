package initramfs

import (
	"bytes"
	"debug/elf"
	"errors"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/u-root/u-root/pkg/cpio"
	"github.com/ulikunitz/xz"

	"github.com/apt-ostree/apt-ostree-factory/internal/testenv"
)

// requireTool skips the test when a host tool is missing, unless
// AOF_REQUIRE_TOOLS=1 says missing tools are failures.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	return testenv.Tool(t, name)
}

func writeFile(t *testing.T, p string, data []byte, perm os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, perm); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, p string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}

// hostFind finds a shared library on the host, independently of the code
// under test: the multiarch and plain system directories, symlinks
// resolved by the host.
func hostFind(t *testing.T, triplet, name string) string {
	t.Helper()
	for _, d := range []string{"/lib/" + triplet, "/usr/lib/" + triplet, "/lib64", "/usr/lib64", "/lib", "/usr/lib"} {
		p, err := filepath.EvalSymlinks(filepath.Join(d, name))
		if err == nil {
			return p
		}
	}
	t.Fatalf("host library %s not found", name)
	return ""
}

// fakeTarget is a synthetic merged-/usr target tree built from host ELF
// files.
type fakeTarget struct {
	root    string
	triplet string
	// files maps paths inside the target (regular files) to their contents.
	files map[string][]byte
	// links maps symlink paths inside the target to their targets.
	links map[string]string
}

func (f *fakeTarget) file(t *testing.T, p string, data []byte, perm os.FileMode) {
	t.Helper()
	writeFile(t, filepath.Join(f.root, p), data, perm)
	f.files[clean(p)] = data
}

func (f *fakeTarget) link(t *testing.T, target, p string) {
	t.Helper()
	symlink(t, target, filepath.Join(f.root, p))
	f.links[clean(p)] = target
}

// installHostELF copies the host ELF src to dst in the target with its
// program interpreter and libraries (recursively), every library at
// usr/lib/<triplet>/<name>. libc goes in under an unusual name behind an
// absolute symlink, which exists only inside the target: resolving it on
// the host would fail.
func (f *fakeTarget) installHostELF(t *testing.T, src, dst string, extra []byte) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	f.file(t, dst, append(data, extra...), 0o755)
	f.installDeps(t, src)
}

func (f *fakeTarget) installDeps(t *testing.T, src string) {
	t.Helper()
	ef, err := elf.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	for _, p := range ef.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		buf := make([]byte, p.Filesz)
		if _, err := p.ReadAt(buf, 0); err != nil {
			t.Fatal(err)
		}
		interp := string(bytes.TrimRight(buf, "\x00"))
		real := f.addLib(t, path.Base(interp), mustEval(t, interp))
		// The interpreter's own path, e.g. /lib64/ld-linux-x86-64.so.2,
		// becomes an absolute symlink to the copy in the multiarch dir.
		canon := clean(interp)
		for _, top := range []string{"bin/", "sbin/", "lib/", "lib64/"} {
			if strings.HasPrefix(canon, top) {
				canon = "usr/" + canon
			}
		}
		if canon != real {
			if _, err := os.Lstat(filepath.Join(f.root, canon)); errors.Is(err, os.ErrNotExist) {
				f.link(t, "/lib/"+f.triplet+"/"+path.Base(interp), canon)
			}
		}
	}
	libs, err := ef.ImportedLibraries()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range libs {
		dst := "usr/lib/" + f.triplet + "/" + l
		if _, ok := f.files[dst]; ok {
			continue
		}
		if _, ok := f.links[dst]; ok {
			continue
		}
		hostPath := hostFind(t, f.triplet, l)
		f.addLib(t, l, hostPath)
		f.installDeps(t, hostPath)
	}
}

func mustEval(t *testing.T, p string) string {
	t.Helper()
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// addLib installs a host library as usr/lib/<triplet>/<name>; libc.so.6
// becomes a symlink to an absolute path that only the target has.
func (f *fakeTarget) addLib(t *testing.T, name, hostPath string) string {
	t.Helper()
	data, err := os.ReadFile(hostPath)
	if err != nil {
		t.Fatal(err)
	}
	dir := "usr/lib/" + f.triplet
	if name == "libc.so.6" {
		f.file(t, dir+"/libc-aoftest.so", data, 0o755)
		f.link(t, "/usr/lib/"+f.triplet+"/libc-aoftest.so", dir+"/libc.so.6")
		return dir + "/libc-aoftest.so"
	}
	f.file(t, dir+"/"+name, data, 0o755)
	return dir + "/" + name
}

// newFakeTarget makes a target with merged-/usr symlinks, a fake busybox
// (the host's /bin/true followed by an applet name list), a stand-in
// ostree-prepare-root (the host's /bin/ls, for its library chain),
// os-release and the module files of the modules test.
func newFakeTarget(t *testing.T) *fakeTarget {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("needs Linux ELF files")
	}
	trueELF, err := elf.Open("/bin/true")
	if err != nil {
		t.Skipf("no host /bin/true ELF: %v", err)
	}
	trip := multiarch(trueELF)
	trueELF.Close()
	if len(trip) == 0 {
		t.Skip("unknown host architecture")
	}
	f := &fakeTarget{root: t.TempDir(), triplet: trip[0], files: map[string][]byte{}, links: map[string]string{}}
	f.link(t, "usr/bin", "bin")
	f.link(t, "usr/sbin", "sbin")
	f.link(t, "usr/lib", "lib")
	if err := os.MkdirAll(filepath.Join(f.root, "usr/lib64"), 0o755); err != nil {
		t.Fatal(err)
	}
	f.link(t, "usr/lib64", "lib64")
	var applets bytes.Buffer
	applets.WriteString("\x00")
	for _, a := range append(append([]string(nil), requiredApplets...), "setsid", "cttyhack", "modprobe", "ls") {
		applets.WriteString(a + "\x00")
	}
	f.installHostELF(t, "/bin/true", "usr/bin/busybox", applets.Bytes())
	f.installHostELF(t, mustEval(t, "/bin/ls"), "usr/lib/ostree/ostree-prepare-root", nil)
	f.file(t, "usr/lib/os-release", []byte("PRETTY_NAME=\"Test\"\nID=debian\n"), 0o644)
	f.link(t, "../usr/lib/os-release", "etc/os-release")
	return f
}

// moduleFixture writes modules of kernel kver: plain, xz, zstd and gzip
// files, builtins, aliases and softdeps. It returns the expected
// decompressed contents by initramfs path.
func moduleFixture(t *testing.T, root, kver string) map[string][]byte {
	t.Helper()
	dir := filepath.Join(root, "usr/lib/modules", kver)
	want := map[string][]byte{}
	mod := func(rel string) {
		name := modNameFromPath(rel)
		plain := []byte("\x7fELF fake module " + name + "\n" + strings.Repeat(name, 50))
		var data []byte
		switch {
		case strings.HasSuffix(rel, ".xz"):
			var b bytes.Buffer
			w, err := xz.NewWriter(&b)
			if err != nil {
				t.Fatal(err)
			}
			w.Write(plain)
			w.Close()
			data = b.Bytes()
		case strings.HasSuffix(rel, ".zst"):
			enc, err := zstd.NewWriter(nil)
			if err != nil {
				t.Fatal(err)
			}
			data = enc.EncodeAll(plain, nil)
			enc.Close()
		case strings.HasSuffix(rel, ".gz"):
			var b bytes.Buffer
			w := gzip.NewWriter(&b)
			w.Write(plain)
			w.Close()
			data = b.Bytes()
		default:
			data = plain
		}
		writeFile(t, filepath.Join(dir, rel), data, 0o644)
		want[path.Join("usr/lib/modules", kver, stripCompression(rel))] = plain
	}
	for _, m := range []string{
		"kernel/drivers/virtio/virtio.ko",
		"kernel/drivers/virtio/virtio_ring.ko.xz",
		"kernel/drivers/block/virtio_blk.ko.xz",
		"kernel/fs/ext4/ext4.ko.zst",
		"kernel/fs/jbd2/jbd2.ko.xz",
		"kernel/fs/mbcache.ko",
		"kernel/crypto/crc32c_generic.ko.xz",
		"kernel/drivers/usb/storage/usb-storage.ko",
		"kernel/drivers/usb/core/usbcore.ko",
		"extra/foo-bar.ko.gz",
		"extra/cyc_a.ko",
		"extra/cyc_b.ko",
	} {
		mod(m)
	}
	// A module nobody asks for must not be copied.
	writeFile(t, filepath.Join(dir, "kernel/extra/unused.ko"), []byte("\x7fELF unused"), 0o644)
	writeFile(t, filepath.Join(dir, "modules.dep"), []byte(`kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko.xz: kernel/drivers/virtio/virtio.ko
kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio_ring.ko.xz kernel/drivers/virtio/virtio.ko
kernel/fs/ext4/ext4.ko.zst: kernel/fs/jbd2/jbd2.ko.xz kernel/fs/mbcache.ko
kernel/fs/jbd2/jbd2.ko.xz:
kernel/fs/mbcache.ko:
kernel/crypto/crc32c_generic.ko.xz:
kernel/drivers/usb/storage/usb-storage.ko: kernel/drivers/usb/core/usbcore.ko
kernel/drivers/usb/core/usbcore.ko:
kernel/extra/unused.ko:
extra/foo-bar.ko.gz:
extra/cyc_a.ko:
extra/cyc_b.ko:
`), 0o644)
	writeFile(t, filepath.Join(dir, "modules.builtin"), []byte("kernel/drivers/virtio/virtio_pci.ko\nkernel/drivers/nvme/host/nvme.ko\n"), 0o644)
	writeFile(t, filepath.Join(dir, "modules.builtin.modinfo"), []byte("sd_mod.alias=scsi:t-0x00\x00sd_mod.license=GPL\x00"), 0o644)
	writeFile(t, filepath.Join(dir, "modules.alias"), []byte(`# Aliases extracted from modules themselves.
alias crypto-crc32c crc32c_generic
alias crc32c crc32c_generic
alias fs-ext4 ext4
alias virtio:d00000002v* virtio_blk
`), 0o644)
	writeFile(t, filepath.Join(dir, "modules.softdep"), []byte(`# Soft dependencies extracted from modules themselves.
softdep ext4 pre: crypto-crc32c
softdep jbd2 pre: crypto-crc32c
softdep cifs gcm
softdep cyc_a pre: cyc_b
softdep cyc_b pre: cyc-a
`), 0o644)
	return want
}

// readArchive gunzips and parses an initramfs with u-root's reader.
func readArchive(t *testing.T, img []byte) []cpio.Record {
	t.Helper()
	// gzip header: no FNAME/FCOMMENT/FEXTRA flags, MTIME 0.
	if len(img) < 10 || img[3] != 0 || !bytes.Equal(img[4:8], []byte{0, 0, 0, 0}) {
		t.Errorf("gzip header % x carries flags or a time stamp", img[:10])
	}
	zr, err := gzip.NewReader(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(raw)))
	if err != nil {
		t.Fatalf("u-root cpio reader: %v", err)
	}
	return recs
}

func recordData(t *testing.T, r cpio.Record) []byte {
	t.Helper()
	if r.ReaderAt == nil {
		return nil
	}
	b, err := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func build(t *testing.T, opts Options) ([]byte, *Result) {
	t.Helper()
	var b bytes.Buffer
	res, err := Build(&b, opts)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	if res.Size != int64(b.Len()) {
		t.Errorf("Result.Size %d, wrote %d", res.Size, b.Len())
	}
	return b.Bytes(), res
}

func TestBuildFakeTarget(t *testing.T) {
	f := newFakeTarget(t)
	const kver = "6.0.0-test"
	wantMods := moduleFixture(t, f.root, kver)
	// A library found only through ld.so.conf.d lands in LD_LIBRARY_PATH.
	writeFile(t, filepath.Join(f.root, "etc/ld.so.conf"), []byte("include /etc/ld.so.conf.d/*.conf\n"), 0o644)
	writeFile(t, filepath.Join(f.root, "etc/ld.so.conf.d/aof.conf"), []byte("# test\n/opt/aoflib\n"), 0o644)
	movedLib := ""
	for p := range f.files {
		base := path.Base(p)
		if path.Dir(p) == "usr/lib/"+f.triplet && !strings.HasPrefix(base, "libc") && !strings.HasPrefix(base, "ld-") && strings.HasPrefix(base, "lib") {
			if movedLib == "" || p < movedLib {
				movedLib = p
			}
		}
	}
	if movedLib != "" {
		dst := "opt/aoflib/" + path.Base(movedLib)
		if err := os.MkdirAll(filepath.Join(f.root, "opt/aoflib"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(f.root, movedLib), filepath.Join(f.root, dst)); err != nil {
			t.Fatal(err)
		}
		f.files[dst] = f.files[movedLib]
		delete(f.files, movedLib)
	}

	opts := Options{Root: f.root, Modules: []string{"foo_bar", "cyc-a"}, MTime: 1700000000}
	img, res := build(t, opts)

	if res.KernelVersion != kver {
		t.Errorf("KernelVersion %q, want %q (auto-detected)", res.KernelVersion, kver)
	}
	wantOrder := []string{"virtio", "virtio_ring", "virtio_blk", "usbcore", "usb_storage", "crc32c_generic", "mbcache", "jbd2", "ext4", "foo_bar", "cyc_b", "cyc_a"}
	if strings.Join(res.Modules, " ") != strings.Join(wantOrder, " ") {
		t.Errorf("module order\n got %v\nwant %v", res.Modules, wantOrder)
	}
	for _, m := range []string{"virtio_mmio", "ahci", "xhci_pci"} {
		if !contains(res.Missing, m) {
			t.Errorf("Missing %v lacks %s", res.Missing, m)
		}
	}
	for _, m := range []string{"virtio_pci", "nvme", "sd_mod"} {
		if contains(res.Missing, m) || !contains(res.Builtin, m) {
			t.Errorf("%s is built in: Missing %v Builtin %v", m, res.Missing, res.Builtin)
		}
	}
	if contains(res.Missing, "crc32c") || contains(res.Missing, "usb_storage") {
		t.Errorf("alias / dash-named module reported missing: %v", res.Missing)
	}

	recs := readArchive(t, img)
	if res.Files != len(recs) {
		t.Errorf("Result.Files %d, archive has %d records", res.Files, len(recs))
	}
	byName := map[string]cpio.Record{}
	seen := map[string]bool{}
	inos := map[uint64]bool{}
	for i, r := range recs {
		if seen[r.Name] {
			t.Errorf("duplicate record %q", r.Name)
		}
		seen[r.Name] = true
		byName[r.Name] = r
		if r.UID != 0 || r.GID != 0 {
			t.Errorf("%s: owner %d:%d", r.Name, r.UID, r.GID)
		}
		if r.MTime != uint64(opts.MTime) {
			t.Errorf("%s: mtime %d", r.Name, r.MTime)
		}
		if inos[r.Ino] || r.Ino == 0 {
			t.Errorf("%s: inode %d reused or zero", r.Name, r.Ino)
		}
		inos[r.Ino] = true
		if i == 0 {
			if r.Name != "." || r.Mode != cpio.S_IFDIR|0o755 {
				t.Errorf("first record %q mode %o, want \".\" 040755", r.Name, r.Mode)
			}
			continue
		}
		if r.Name == "." {
			t.Errorf("second \".\" record")
		}
		if d := path.Dir(r.Name); d != "." {
			pr, ok := byName[d]
			if !ok {
				t.Errorf("%s comes before its parent directory %s", r.Name, d)
			} else if pr.Mode&cpio.S_IFMT != cpio.S_IFDIR {
				t.Errorf("parent %s of %s is not a directory (mode %o)", d, r.Name, pr.Mode)
			}
		}
	}
	check := func(name string, mode uint64) cpio.Record {
		t.Helper()
		r, ok := byName[name]
		if !ok {
			t.Errorf("missing %s", name)
			return r
		}
		if r.Mode != mode {
			t.Errorf("%s: mode %o, want %o", name, r.Mode, mode)
		}
		return r
	}
	checkLink := func(name, target string) {
		t.Helper()
		r := check(name, cpio.S_IFLNK|0o777)
		if got := string(recordData(t, r)); r.Name != "" && got != target {
			t.Errorf("%s -> %q, want %q", name, got, target)
		}
	}
	check("dev/console", cpio.S_IFCHR|0o600)
	if r := byName["dev/console"]; r.Rmajor != 5 || r.Rminor != 1 {
		t.Errorf("dev/console is %d,%d", r.Rmajor, r.Rminor)
	}
	check("dev/null", cpio.S_IFCHR|0o666)
	for _, d := range []string{"dev", "proc", "sys", "run", "sysroot", "usr/bin", "usr/sbin", "usr/lib"} {
		check(d, cpio.S_IFDIR|0o755)
	}
	check("tmp", cpio.S_IFDIR|0o1777)
	checkLink("bin", "usr/bin")
	checkLink("sbin", "usr/sbin")
	checkLink("lib", "usr/lib")
	checkLink("lib64", "usr/lib64")
	if r := check("init", cpio.S_IFREG|0o755); !bytes.Equal(recordData(t, r), initScript) {
		t.Errorf("/init differs from init.sh")
	}
	checkLink("etc/os-release", "../usr/lib/os-release")
	check("etc/initrd-release", cpio.S_IFREG|0o644)
	checkLink("usr/bin/sh", "/usr/bin/busybox")
	checkLink("usr/sbin/switch_root", "/usr/bin/busybox")
	checkLink("usr/sbin/modprobe", "/usr/bin/busybox")
	if _, ok := byName["usr/bin/vi"]; ok {
		t.Errorf("symlink for an applet the fake busybox lacks")
	}
	// Every file of the ELF closure, byte for byte, and every symlink.
	for p, data := range f.files {
		if strings.HasPrefix(p, "usr/lib/modules/") || strings.HasPrefix(p, "etc/ld.so.conf") {
			continue
		}
		r, ok := byName[p]
		if !ok {
			t.Errorf("missing %s", p)
			continue
		}
		if !bytes.Equal(recordData(t, r), data) {
			t.Errorf("%s: contents differ", p)
		}
	}
	for p, target := range f.links {
		checkLink(p, target)
	}
	checkLink("usr/lib/"+f.triplet+"/libc.so.6", "/usr/lib/"+f.triplet+"/libc-aoftest.so")
	// Modules: decompressed, same relative paths, nothing unrequested.
	for p, data := range wantMods {
		r, ok := byName[p]
		if !ok {
			t.Errorf("missing module %s", p)
			continue
		}
		if !bytes.Equal(recordData(t, r), data) {
			t.Errorf("%s: not the decompressed module", p)
		}
	}
	if _, ok := byName["usr/lib/modules/"+kver+"/kernel/extra/unused.ko"]; ok {
		t.Errorf("unrequested module copied")
	}
	var list strings.Builder
	for _, m := range wantOrder {
		for p := range wantMods {
			if modNameFromPath(p) == m {
				list.WriteString(m + " " + p + "\n")
			}
		}
	}
	if got := string(recordData(t, byName["etc/aof-initramfs/modules"])); got != list.String() {
		t.Errorf("modules list\n got %q\nwant %q", got, list.String())
	}
	dep := string(recordData(t, byName["usr/lib/modules/"+kver+"/modules.dep"]))
	if !strings.Contains(dep, "kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko\n") || strings.Contains(dep, "unused") {
		t.Errorf("filtered modules.dep:\n%s", dep)
	}
	cfg := string(recordData(t, byName["etc/aof-initramfs/config"]))
	if !strings.Contains(cfg, "AOF_KVER='"+kver+"'") || !strings.Contains(cfg, "AOF_ROOTWAIT=30") {
		t.Errorf("config:\n%s", cfg)
	}
	if movedLib != "" && !strings.Contains(cfg, "AOF_LIBPATH='/opt/aoflib'") {
		t.Errorf("config lacks LD_LIBRARY_PATH for %s:\n%s", movedLib, cfg)
	}

	// Reproducible: same inputs, same bytes; another MTime, other bytes.
	img2, _ := build(t, opts)
	if !bytes.Equal(img, img2) {
		t.Errorf("two builds differ")
	}
	opts.MTime = 0
	img3, _ := build(t, opts)
	if bytes.Equal(img, img3) {
		t.Errorf("MTime had no effect")
	}
	for _, r := range readArchive(t, img3) {
		if r.MTime != 0 {
			t.Fatalf("%s: mtime %d with MTime 0", r.Name, r.MTime)
		}
	}

	t.Run("cpio-tool", func(t *testing.T) {
		requireTool(t, "cpio")
		zr, err := gzip.NewReader(bytes.NewReader(img))
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(zr)
		cmd := exec.Command("cpio", "-itv", "--quiet")
		cmd.Stdin = bytes.NewReader(raw)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("cpio -itv: %v\n%s", err, stderr.String())
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) != len(recs) {
			t.Errorf("cpio -itv lists %d entries, want %d\n%s", len(lines), len(recs), stderr.String())
		}
		for _, l := range lines {
			fields := strings.Fields(l)
			if len(fields) < 2 {
				continue
			}
			if strings.HasSuffix(l, " .") && fields[0] != "drwxr-xr-x" {
				t.Errorf("root directory listed as %q", l)
			}
			if fields[0] == "drwxrwxrwx" {
				t.Errorf("world-writable directory: %q", l)
			}
		}
		for _, want := range []string{"crw-------", "dev/console", "init", "usr/bin/busybox", "lib64 -> usr/lib64"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("cpio -itv output lacks %q", want)
			}
		}
	})
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestBuildErrors(t *testing.T) {
	t.Run("no-busybox", func(t *testing.T) {
		f := newFakeTarget(t)
		os.Remove(filepath.Join(f.root, "usr/bin/busybox"))
		_, err := Build(io.Discard, Options{Root: f.root})
		if err == nil || !strings.Contains(err.Error(), "`busybox` package") {
			t.Errorf("error %v, want one naming the busybox package", err)
		}
	})
	t.Run("no-prepare-root", func(t *testing.T) {
		f := newFakeTarget(t)
		os.Remove(filepath.Join(f.root, "usr/lib/ostree/ostree-prepare-root"))
		_, err := Build(io.Discard, Options{Root: f.root})
		if err == nil || !strings.Contains(err.Error(), "`ostree-boot` package") {
			t.Errorf("error %v, want one naming the ostree-boot package", err)
		}
	})
	t.Run("missing-library", func(t *testing.T) {
		f := newFakeTarget(t)
		os.Remove(filepath.Join(f.root, "usr/lib", f.triplet, "libc-aoftest.so"))
		_, err := Build(io.Discard, Options{Root: f.root})
		if err == nil || !strings.Contains(err.Error(), "libc.so.6") {
			t.Errorf("error %v, want one naming libc.so.6", err)
		}
	})
	t.Run("missing-requested-module", func(t *testing.T) {
		f := newFakeTarget(t)
		moduleFixture(t, f.root, "6.0.0-test")
		_, err := Build(io.Discard, Options{Root: f.root, Modules: []string{"foo-bar", "no_such_mod"}})
		if err == nil || !strings.Contains(err.Error(), "no_such_mod") || strings.Contains(err.Error(), "foo-bar") {
			t.Errorf("error %v, want one naming only no_such_mod", err)
		}
	})
	t.Run("several-kernels", func(t *testing.T) {
		f := newFakeTarget(t)
		moduleFixture(t, f.root, "6.0.0-a")
		moduleFixture(t, f.root, "6.0.0-b")
		if _, err := Build(io.Discard, Options{Root: f.root}); err == nil || !strings.Contains(err.Error(), "KernelVersion") {
			t.Errorf("error %v, want one asking for KernelVersion", err)
		}
		_, res := build(t, Options{Root: f.root, KernelVersion: "6.0.0-b"})
		if res.KernelVersion != "6.0.0-b" || len(res.Modules) == 0 {
			t.Errorf("result %+v", res)
		}
	})
	t.Run("no-modules", func(t *testing.T) {
		f := newFakeTarget(t)
		_, res := build(t, Options{Root: f.root})
		if res.KernelVersion != "" || len(res.Modules) != 0 || len(res.Missing) != len(DefaultModules) {
			t.Errorf("result %+v", res)
		}
		if _, err := Build(io.Discard, Options{Root: f.root, Modules: []string{"ext4"}}); err == nil {
			t.Errorf("requested module without kernel modules: no error")
		}
	})
}

// TestResolveConfined checks that symlinks are resolved inside the target.
func TestResolveConfined(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "usr/lib/real"), []byte("inside"), 0o644)
	symlink(t, "usr/lib", filepath.Join(root, "lib"))
	symlink(t, "/lib/real", filepath.Join(root, "etc/abs"))
	symlink(t, "../../../../../../lib/real", filepath.Join(root, "etc/dotdot"))
	symlink(t, "/etc/loop2", filepath.Join(root, "etc/loop1"))
	symlink(t, "/etc/loop1", filepath.Join(root, "etc/loop2"))
	tfs := &targetFS{root: root}
	for _, p := range []string{"etc/abs", "/etc/dotdot", "lib/real"} {
		r, err := tfs.resolve(p)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if r.canonical != "usr/lib/real" {
			t.Errorf("%s resolved to %s", p, r.canonical)
		}
	}
	if _, err := tfs.resolve("etc/loop1"); err == nil || !strings.Contains(err.Error(), "too many") {
		t.Errorf("symlink loop: %v", err)
	}
	if _, err := tfs.resolve("etc/nothing"); !isNotExist(err) {
		t.Errorf("missing file: %v", err)
	}
	tr := newTree()
	if _, err := tr.addSymlink("lib", "usr/lib"); err != nil {
		t.Fatal(err)
	}
	cp, err := tfs.copyInto(tr, "etc/abs")
	if err != nil {
		t.Fatal(err)
	}
	if cp != "usr/lib/real" || string(tr.entries["etc/abs"].data) != "/lib/real" || string(tr.entries["usr/lib/real"].data) != "inside" {
		t.Errorf("copyInto: %q %+v", cp, tr.entries)
	}
	if got, _ := tr.canon("lib/x/../real"); got != "usr/lib/real" {
		t.Errorf("tree canon: %q", got)
	}
}

func TestClosureOrderDeterministic(t *testing.T) {
	idx, err := parseModIndex(
		[]byte("a.ko: c.ko b.ko\nb.ko: c.ko\nc.ko:\nd-x.ko.xz: c.ko\n"),
		[]byte("kernel/e.ko\n"), nil,
		[]byte("alias pre-alias d_x\n"),
		[]byte("softdep a pre: pre-alias post: missing-thing\n"))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		order, missing, builtin := idx.closure([]string{"a", "e", "zz", "d_x"})
		if got := strings.Join(order, ","); got != "c,d_x,b,a" {
			t.Fatalf("order %s", got)
		}
		if strings.Join(missing, ",") != "zz" || strings.Join(builtin, ",") != "e" {
			t.Fatalf("missing %v builtin %v", missing, builtin)
		}
	}
}

func TestDecompressRejectsGarbage(t *testing.T) {
	if _, err := decompressModule("x.ko.xz", []byte("not xz")); err == nil {
		t.Error("garbage .xz accepted")
	}
	var b bytes.Buffer
	w, _ := xz.NewWriter(&b)
	w.Write([]byte("no elf here"))
	w.Close()
	if _, err := decompressModule("x.ko.xz", b.Bytes()); err == nil {
		t.Error("non-ELF module accepted")
	}
}

// busybox returns the host's busybox for the shell tests.
func busybox(t *testing.T) string {
	t.Helper()
	return requireTool(t, "busybox")
}

// runInit runs a snippet with the functions of init.sh defined.
func runInit(t *testing.T, snippet string) string {
	t.Helper()
	bb := busybox(t)
	script := filepath.Join(t.TempDir(), "init.sh")
	writeFile(t, script, initScript, 0o755)
	cmd := exec.Command(bb, "sh", "-c", ". \"$0\"; "+snippet, script)
	cmd.Env = append(os.Environ(), "AOF_INIT_LIBRARY=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("busybox sh: %v\n%s", err, out)
	}
	return string(out)
}

func TestInitScriptSyntax(t *testing.T) {
	bb := busybox(t)
	script := filepath.Join(t.TempDir(), "init")
	writeFile(t, script, initScript, 0o755)
	if out, err := exec.Command(bb, "sh", "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("busybox sh -n: %v\n%s", err, out)
	}
	if sh, err := exec.LookPath("dash"); err == nil {
		if out, err := exec.Command(sh, "-n", script).CombinedOutput(); err != nil {
			t.Fatalf("dash -n: %v\n%s", err, out)
		}
	}
}

func TestInitParseCmdline(t *testing.T) {
	out := runInit(t, `cmdline='BOOT_IMAGE=/x root=PARTUUID=AB-01 rootflags=discard ro ostree=/ostree/boot.1/debian/abc/0 init=/lib/systemd/systemd rootwait=7 rd.break=premount,preswitch ext4.foo=1 virtio-blk.queue_depth=4 virtio_blk.x=y *'
parse_cmdline
echo "root=$root flags=$rootflags mode=$rootmode ostree=$ostree init=$init wait=$rootwait break=$rdbreak"
echo "params=$(modparams virtio_blk | tr '\n' ' ')"`)
	want := "root=PARTUUID=AB-01 flags=discard mode=ro ostree=/ostree/boot.1/debian/abc/0 init=/lib/systemd/systemd wait=7 break= premount preswitch\nparams=queue_depth=4 x=y \n"
	if out != want {
		t.Errorf("got\n%q\nwant\n%q", out, want)
	}
	out = runInit(t, `AOF_ROOTWAIT=12; cmdline='root=/dev/vda rootwait=abc'; parse_cmdline; echo "$rootwait $init $rootmode"; cmdline='rootwait'; parse_cmdline; echo "$rootwait"`)
	if out != "12 /sbin/init rw\n-1\n" {
		t.Errorf("got %q", out)
	}
}

// TestInitPartUUID checks the GPT and MBR PARTUUID readers of /init
// against util-linux on disk images.
func TestInitPartUUID(t *testing.T) {
	sfdisk := requireTool(t, "sfdisk")
	busybox(t)
	dir := t.TempDir()
	gpt := filepath.Join(dir, "gpt.img")
	mbr := filepath.Join(dir, "mbr.img")
	for _, img := range []string{gpt, mbr} {
		if err := os.WriteFile(img, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(img, 8<<20); err != nil {
			t.Fatal(err)
		}
	}
	run := func(stdin string, args ...string) string {
		cmd := exec.Command(sfdisk, args...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("sfdisk %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	run("label: gpt\nsize=2MiB\nsize=2MiB, name=second\n", "--quiet", gpt)
	run("label: dos\nlabel-id: 0x1234abcd\nsize=2MiB\nsize=2MiB\n", "--quiet", mbr)
	want2 := strings.ToLower(run("", "--part-uuid", gpt, "2"))
	got := runInit(t, `part_uuid_of "`+gpt+`" 2 512; part_uuid_of "`+mbr+`" 2 512`)
	if got != want2+"\n1234abcd-02\n" {
		t.Errorf("part_uuid_of: got %q, want %q and 1234abcd-02", got, want2)
	}
}

func TestPrepareRootConf(t *testing.T) {
	for conf, want := range map[string]bool{
		"":                                     false,
		"[composefs]\nenabled = no\n":          false,
		"[composefs]\nenabled=maybe\n":         true,
		"[composefs]\nenabled = signed\n":      true,
		"[sysroot]\nenabled = yes\n":           false,
		"[composefs]\nenabled=yes\n[etc]\nx=1": true,
	} {
		if got := composefsEnabled([]byte(conf)); got != want {
			t.Errorf("composefsEnabled(%q) = %v", conf, got)
		}
	}
	f := newFakeTarget(t)
	moduleFixture(t, f.root, "6.0.0-test")
	writeFile(t, filepath.Join(f.root, "usr/lib/ostree/prepare-root.conf"), []byte("[composefs]\nenabled = no\n"), 0o644)
	writeFile(t, filepath.Join(f.root, "etc/ostree/prepare-root.conf"), []byte("[composefs]\nenabled = maybe\n"), 0o644)
	img, res := build(t, Options{Root: f.root})
	found := 0
	for _, r := range readArchive(t, img) {
		if r.Name == "usr/lib/ostree/prepare-root.conf" || r.Name == "etc/ostree/prepare-root.conf" {
			found++
		}
	}
	if found != 2 {
		t.Errorf("prepare-root.conf files copied: %d", found)
	}
	if !contains(res.Missing, "erofs") || !contains(res.Missing, "overlay") {
		t.Errorf("composefs modules not requested: missing %v", res.Missing)
	}
	// Without configuration, nothing is added and composefs stays off.
	os.Remove(filepath.Join(f.root, "usr/lib/ostree/prepare-root.conf"))
	os.Remove(filepath.Join(f.root, "etc/ostree/prepare-root.conf"))
	img, res = build(t, Options{Root: f.root})
	for _, r := range readArchive(t, img) {
		if strings.Contains(r.Name, "prepare-root.conf") {
			t.Errorf("unexpected %s", r.Name)
		}
	}
	if contains(res.Missing, "erofs") {
		t.Errorf("erofs requested without composefs")
	}
}

// TestDecompressKernelXZ decompresses a module compressed the way the
// kernel's build compresses modules (xz --check=crc32 --lzma2=dict=1MiB).
func TestDecompressKernelXZ(t *testing.T) {
	xzTool := requireTool(t, "xz")
	plain, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Skip(err)
	}
	cmd := exec.Command(xzTool, "--check=crc32", "--lzma2=dict=1MiB", "-c")
	cmd.Stdin = bytes.NewReader(plain)
	comp, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	got, err := decompressModule("true.ko.xz", comp)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, plain) {
		t.Error("round trip differs")
	}
	if zstdTool, err := exec.LookPath("zstd"); err == nil {
		cmd := exec.Command(zstdTool, "-q", "-c", "-T0", "--ultra", "-22")
		cmd.Stdin = bytes.NewReader(plain)
		comp, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		if got, err := decompressModule("true.ko.zst", comp); err != nil || !bytes.Equal(got, plain) {
			t.Errorf("zstd round trip: %v", err)
		}
	}
}
