package diskimage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apt-ostree/apt-ostree-factory/internal/testenv"
	"github.com/apt-ostree/apt-ostree-factory/ostree"
	"github.com/apt-ostree/apt-ostree-factory/ostree/gvariant"
	"github.com/apt-ostree/apt-ostree-factory/recipe"
)

// needTool skips (or fails under AOF_REQUIRE_TOOLS=1) without a tool.
func needTool(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		testenv.Tool(t, tool)
	}
}

// fixtureCommit commits a small bootable tree: a fake kernel and
// initramfs, /usr/etc with a shadow file, a setuid binary, symlinks, a
// hard link, xattrs and the boot payload.
func fixtureCommit(t *testing.T, ostreeVersion string) (*ostree.Repo, ostree.Checksum) {
	t.Helper()
	repo, err := ostree.Init(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	dirMeta := ostree.FileMeta{Mode: ostree.ModeDir | 0o755}
	root := ostree.NewMemDir(dirMeta)
	file := func(p string, mode, uid, gid uint32, data string, xattrs ...ostree.Xattr) *ostree.MemFile {
		d, _ := root.MkdirAll(filepath.Dir(p), dirMeta)
		_ = d
		f := &ostree.MemFile{Header: ostree.FileHeader{FileMeta: ostree.FileMeta{Mode: ostree.ModeRegular | mode, UID: uid, GID: gid, Xattrs: xattrs}, Size: uint64(len(data))}, Data: []byte(data)}
		if err := root.AddFile(p, f); err != nil {
			t.Fatal(err)
		}
		return f
	}
	link := func(p, target string) {
		root.MkdirAll(filepath.Dir(p), dirMeta)
		if err := root.AddFile(p, &ostree.MemFile{Header: ostree.FileHeader{FileMeta: ostree.FileMeta{Mode: ostree.ModeSymlink | 0o777}, Symlink: target}}); err != nil {
			t.Fatal(err)
		}
	}
	big := strings.Repeat("kernel image bytes ", 200000) // ~3.8 MB
	file("usr/lib/modules/6.1.0-test/vmlinuz", 0o644, 0, 0, big)
	file("usr/lib/modules/6.1.0-test/initramfs.img", 0o644, 0, 0, "initramfs")
	file("usr/lib/os-release", 0o644, 0, 0, "PRETTY_NAME=\"Test OS 1\"\nID=testos\n")
	link("usr/etc/os-release", "../lib/os-release")
	file("usr/etc/passwd", 0o644, 0, 0, "root:x:0:0:root:/root:/bin/sh\n")
	file("usr/etc/shadow", 0o640, 0, 42, "root:*:19000:0:99999:7:::\n")
	file("usr/bin/sudo", 0o4755, 0, 0, "#!/bin/sh\n")
	file("usr/bin/ping", 0o755, 0, 0, "ping", ostree.Xattr{Name: "security.capability", Value: []byte{1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}})
	f := file("usr/bin/gzip", 0o755, 0, 0, "gzip")
	if err := root.AddFile("usr/bin/gunzip", f); err != nil {
		t.Fatal(err)
	}
	file("usr/share/doc/big", 0o644, 1000, 1000, strings.Repeat("x", 300000))
	link("bin", "usr/bin")
	for _, d := range []string{"var", "sysroot", "boot", "dev", "proc", "sys", "run", "tmp"} {
		root.MkdirAll(d, dirMeta)
	}
	link("ostree", "sysroot/ostree")
	file("usr/lib/apt-ostree/boot/BOOTX64.EFI", 0o644, 0, 0, "MZ systemd-boot")
	file("usr/lib/apt-ostree/boot/drivers/ext4x64.efi", 0o644, 0, 0, "MZ ext4 driver")
	md := ostree.Metadata{
		{Key: "version", Value: gvariant.NewVariant("s", "1.0")},
		{Key: "apt-ostree.packages", Value: gvariant.NewVariant("a(sss)", []any{[]any{"ostree", ostreeVersion, "amd64"}})},
	}
	res, err := repo.CommitTree(context.Background(), root, ostree.CommitOptions{
		Branch: "testos/x86_64", Subject: "test", Timestamp: time.Unix(1763800000, 0), Metadata: md,
	})
	if err != nil {
		t.Fatal(err)
	}
	return repo, res.Checksum
}

func testImage(name, format string) recipe.Image {
	esp, boot := recipe.Size{Bytes: 64 << 20}, recipe.Size{Bytes: 64 << 20}
	free := recipe.Size{Bytes: 64 << 20}
	return recipe.Image{Name: name, Format: format, Size: recipe.Size{Fit: true}, FreeSpace: &free, Bootloader: "systemd-boot",
		Partitions: []recipe.Partition{
			{Role: "esp", Size: &esp, Label: "ESP", Filesystem: "vfat"},
			{Role: "boot", Size: &boot, Label: "boot", Filesystem: "ext4"},
			{Role: "root", Label: "root", Filesystem: "ext4"},
		}}
}

func writeTestImage(t *testing.T, repo *ostree.Repo, c ostree.Checksum, im recipe.Image, out string) *Result {
	t.Helper()
	res, err := Write(context.Background(), Options{
		Image: im, Architecture: "amd64", RecipeName: "test", KernelArgs: []string{"rw"},
		Deployment: Deployment{Repo: repo, Commit: c, Branch: "testos/x86_64", Remote: "origin", RemoteURL: "http://example.com/repo", Stateroot: "testos"},
		OutputDir:  out,
	})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// extract copies a partition to its own sparse file.
func extract(t *testing.T, img string, p PartitionResult) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), p.Role+".img")
	if err := ExtractPartition(img, p, dst); err != nil {
		t.Fatal(err)
	}
	return dst
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestImageCheckersAndReproducible(t *testing.T) {
	needTool(t, "sgdisk", "fsck.fat", "e2fsck", "qemu-img")
	repo, c := fixtureCommit(t, "2025.2-1")
	out := t.TempDir()
	res := writeTestImage(t, repo, c, testImage("disk", "raw"), out)
	t.Logf("%s: %d bytes, %d allocated, partitions %+v, times %v", res.Path, res.Size, res.Allocated, res.Partitions, res.Times)

	if o := run(t, "sgdisk", "-v", res.Path); !strings.Contains(o, "No problems found") {
		t.Errorf("sgdisk -v:\n%s", o)
	}
	info := run(t, "sgdisk", "-p", res.Path)
	for _, want := range []string{"EF00", "EA00", "8304"} {
		if !strings.Contains(info, want) {
			t.Errorf("sgdisk -p has no partition of type %s:\n%s", want, info)
		}
	}
	if res.Allocated > res.Size/2 {
		t.Errorf("not sparse: %d of %d bytes allocated", res.Allocated, res.Size)
	}
	for _, p := range res.Partitions {
		img := extract(t, res.Path, p)
		if p.Role == "esp" {
			if o := run(t, "fsck.fat", "-n", img); strings.Count(strings.TrimSpace(o), "\n") != 1 {
				t.Errorf("fsck.fat -n printed more than the version and the summary:\n%s", o)
			}
			if o := run(t, "minfo", "-i", img, "::"); !strings.Contains(o, "serial number: "+strings.ReplaceAll(p.FSUUID, "-", "")) {
				t.Errorf("ESP volume id %s not in minfo output:\n%s", p.FSUUID, o)
			}
			o := run(t, "mdir", "-i", img, "-/", "-b", "::/")
			for _, want := range []string{"::/EFI/BOOT/BOOTX64.EFI", "::/EFI/systemd/drivers/ext4x64.efi", "::/loader/loader.conf", "::/loader/entries/"} {
				if !strings.Contains(o, want+"\n") {
					t.Errorf("ESP has no %s:\n%s", want, o)
				}
			}
			if got := run(t, "mtype", "-i", img, "::/EFI/BOOT/BOOTX64.EFI"); got != "MZ systemd-boot" {
				t.Errorf("BOOTX64.EFI: %q", got)
			}
			continue
		}
		run(t, "e2fsck", "-fn", img)
		if o := run(t, "dumpe2fs", "-h", img); !strings.Contains(o, p.FSUUID) || !strings.Contains(o, "volume name:   "+p.Label) {
			t.Errorf("%s: dumpe2fs shows neither UUID %s nor label %s:\n%s", p.Role, p.FSUUID, p.Label, o)
		}
	}
	sum, _ := fileSHA256(res.Path)
	if sum != res.SHA256 {
		t.Errorf("checksum %s, file has %s", res.SHA256, sum)
	}
	if b, _ := os.ReadFile(res.Path + ".sha256"); string(b) != sum+"  disk.raw\n" {
		t.Errorf("checksum file: %q", b)
	}

	// Same inputs, another directory: the same bytes.
	res2 := writeTestImage(t, repo, c, testImage("disk", "raw"), t.TempDir())
	if res2.SHA256 != res.SHA256 {
		t.Errorf("not reproducible: %s then %s", res.SHA256, res2.SHA256)
	}

	// qcow2.
	q := writeTestImage(t, repo, c, testImage("disk", "qcow2"), out)
	if o := run(t, "qemu-img", "check", q.Path); !strings.Contains(o, "No errors") {
		t.Errorf("qemu-img check:\n%s", o)
	}
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "qcow2", res.Path, q.Path)
}

func fileSHA256(p string) (string, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return "", err
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:]), nil
}

func TestImageErrorsWriteNothing(t *testing.T) {
	repo, c := fixtureCommit(t, "2025.2-1")
	out := t.TempDir()
	small := testImage("small", "raw")
	small.Size = recipe.Size{Bytes: 132 << 20}
	tinyRoot := recipe.Size{Bytes: 1 << 20}
	tight := testImage("tight", "raw")
	tight.Partitions[2].Size = &tinyRoot
	for _, tc := range []struct {
		im   recipe.Image
		want string
	}{
		{small, "size 132 MiB is too small: the root partition gets"},
		{tight, "partitions[2] (root) is 1 MiB but its content needs"},
	} {
		_, err := Write(context.Background(), Options{Image: tc.im, Architecture: "amd64", RecipeName: "test",
			Deployment: Deployment{Repo: repo, Commit: c, Branch: "testos/x86_64", Stateroot: "testos"}, OutputDir: out})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.im.Name, err, tc.want)
		}
	}
	// A commit without the boot payload.
	noBoot, err := ostree.Init(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	root := ostree.NewMemDir(ostree.FileMeta{Mode: ostree.ModeDir | 0o755})
	root.MkdirAll("usr/lib/modules/6.1.0-test", ostree.FileMeta{Mode: ostree.ModeDir | 0o755})
	for _, n := range []string{"vmlinuz", "initramfs.img"} {
		root.AddFile("usr/lib/modules/6.1.0-test/"+n, &ostree.MemFile{Header: ostree.FileHeader{FileMeta: ostree.FileMeta{Mode: ostree.ModeRegular | 0o644}, Size: 1}, Data: []byte("k")})
	}
	cr, err := noBoot.CommitTree(context.Background(), root, ostree.CommitOptions{Branch: "x", Timestamp: time.Unix(1, 0)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Write(context.Background(), Options{Image: testImage("noboot", "raw"), Architecture: "amd64", RecipeName: "test",
		Deployment: Deployment{Repo: noBoot, Commit: cr.Checksum, Branch: "x", Stateroot: "testos"}, OutputDir: out})
	if err == nil || !strings.Contains(err.Error(), "usr/lib/apt-ostree/boot/BOOTX64.EFI") || !strings.Contains(err.Error(), "systemd-boot-efi, refind") {
		t.Errorf("no boot payload: %v", err)
	}
	entries, _ := os.ReadDir(out)
	if len(entries) != 0 {
		t.Errorf("failed writes left files: %v", entries)
	}
}

// TestSysrootMatchesOstreeAdminDeploy mounts the image's root and boot
// filesystems (root only, in the test) and compares them with what the
// host's `ostree admin` (2022.7) makes of the same commit; then `ostree
// admin status` and `ostree fsck` run on the image's sysroot.
func TestSysrootMatchesOstreeAdminDeploy(t *testing.T) {
	needTool(t, "ostree", "mount", "losetup")
	if os.Geteuid() != 0 {
		t.Skip("mounting the image's filesystems needs root")
	}
	repo, c := fixtureCommit(t, "2022.7-2")
	res := writeTestImage(t, repo, c, testImage("disk", "raw"), t.TempDir())
	parts := map[string]PartitionResult{}
	for _, p := range res.Partitions {
		parts[p.Role] = p
	}
	mnt := filepath.Join(t.TempDir(), "sysroot")
	os.MkdirAll(mnt, 0o755)
	mount := func(p PartitionResult, at string) {
		img := extract(t, res.Path, p)
		if o, err := exec.Command("timeout", "20", "mount", "-o", "loop", img, at).CombinedOutput(); err != nil {
			t.Skipf("cannot loop-mount here: %v %s", err, o)
		}
		t.Cleanup(func() { exec.Command("umount", at).Run() })
	}
	mount(parts["root"], mnt)
	mount(parts["boot"], filepath.Join(mnt, "boot"))

	// The oracle: the host's ostree on a plain directory.
	ref := t.TempDir()
	sh := func(args ...string) {
		t.Helper()
		run(t, "ostree", args...)
	}
	sh("admin", "init-fs", ref)
	sh("admin", "--sysroot="+ref, "os-init", "testos")
	sh("--repo="+ref+"/ostree/repo", "remote", "add", "--no-gpg-verify", "origin", "http://example.com/repo")
	sh("--repo="+ref+"/ostree/repo", "config", "set", "sysroot.bootloader", "none")
	sh("--repo="+ref+"/ostree/repo", "pull-local", repo.Path(), c.String())
	sh("--repo="+ref+"/ostree/repo", "refs", "--create=origin:testos/x86_64", c.String())
	// The same kernel arguments as the image's entry.
	var kargs []string
	for _, l := range strings.Split(res.Entry, "\n") {
		if strings.HasPrefix(l, "options ") {
			for _, a := range strings.Fields(strings.TrimPrefix(l, "options ")) {
				if !strings.HasPrefix(a, "ostree=") {
					kargs = append(kargs, "--karg="+a)
				}
			}
		}
	}
	sh(append([]string{"admin", "--sysroot=" + ref, "deploy", "--os=testos"}, append(kargs, "origin:testos/x86_64")...)...)
	t.Cleanup(func() { exec.Command("chattr", "-R", "-i", ref).Run() })

	want, got := listing(t, ref), listing(t, mnt)
	// Differences that are expected: the image's own fstab, lost+found of
	// the two filesystems, the hard links the oracle makes between its
	// build repository and /boot (one filesystem there, two here).
	delete(got, "/ostree/deploy/testos/deploy/"+c.String()+".0/etc/fstab")
	for _, p := range []string{"/lost+found", "/boot/lost+found"} {
		delete(got, p)
	}
	// The oracle's /boot is a directory of its root filesystem, so the
	// kernel and initramfs there are hard links of the repository's
	// objects: one link more than in the image, where /boot is its own
	// filesystem.
	bootDigests := map[string]bool{}
	for p, w := range want {
		if f := strings.Fields(w); strings.HasPrefix(p, "/boot/ostree/") && len(f) >= 4 {
			bootDigests[f[3]] = true
		}
	}
	for p, w := range want {
		if f := strings.Fields(w); len(f) == 5 && bootDigests[f[3]] && strings.HasPrefix(f[4], "nlink=") {
			var n int
			fmt.Sscanf(f[4], "nlink=%d", &n)
			f[4] = fmt.Sprintf("nlink=%d", n-1)
			want[p] = strings.Join(f, " ")
		}
	}
	for p, w := range want {
		g, ok := got[p]
		if !ok {
			t.Errorf("missing in the image: %s (%s)", p, w)
			continue
		}
		if g != w {
			t.Errorf("%s:\n image %s\n ostree %s", p, g, w)
		}
	}
	for p, g := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("extra in the image: %s (%s)", p, g)
		}
	}

	dep := "/ostree/deploy/testos/deploy/" + c.String() + ".0"
	for p, w := range map[string]string{
		dep + "/etc/shadow":   "-rw-r----- 0:42 ",
		dep + "/usr/bin/sudo": "urwxr-xr-x 0:0 ",
		dep + "/usr/bin/ping": "security.capability=0100000200200000",
	} {
		if !strings.Contains(got[p], w) {
			t.Errorf("%s: %q, want %q in it", p, got[p], w)
		}
	}
	if o := run(t, "lsattr", "-d", mnt+dep); !strings.Contains(strings.Fields(o)[0], "i") {
		t.Errorf("deployment root is not immutable: %s", o)
	}
	status := run(t, "ostree", "admin", "status", "--sysroot="+mnt)
	if !strings.Contains(status, "testos "+c.String()+".0") || !strings.Contains(status, "origin refspec: origin:testos/x86_64") {
		t.Errorf("ostree admin status:\n%s", status)
	}
	run(t, "ostree", "fsck", "--repo="+mnt+"/ostree/repo")
}

// listing describes every path of a sysroot: type, mode, owner, size,
// link target, xattrs, content digest; link counts for files and
// symlinks, since hard links matter to ostree.
func listing(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(p, root)
		if rel == "" {
			rel = "/"
		}
		st := fi.Sys().(*syscall.Stat_t)
		desc := fmt.Sprintf("%v %d:%d", fi.Mode(), st.Uid, st.Gid)
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			desc += " -> " + target
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s := sha256.Sum256(b)
			desc += fmt.Sprintf(" %d %x", len(b), s[:6])
			if strings.Contains(rel, "/ostree/repo/objects/") && strings.HasSuffix(rel, ".file") || strings.Contains(rel, "/deploy/") {
				desc += fmt.Sprintf(" nlink=%d", st.Nlink)
			}
		}
		if x := xattrs(p); x != "" {
			desc += " " + x
		}
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func xattrs(p string) string {
	buf := make([]byte, 4096)
	n, err := syscall.Listxattr(p, buf)
	if err != nil || n <= 0 {
		return ""
	}
	var parts []string
	for _, name := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		v := make([]byte, 4096)
		m, err := syscall.Getxattr(p, name, v)
		if err == nil {
			parts = append(parts, fmt.Sprintf("%s=%x", name, v[:m]))
		}
	}
	return strings.Join(parts, ",")
}

func TestReadPartitions(t *testing.T) {
	repo, c := fixtureCommit(t, "2025.2-1")
	res := writeTestImage(t, repo, c, testImage("disk", "raw"), t.TempDir())
	got, err := ReadPartitions(res.Path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(res.Partitions) {
		t.Fatalf("%d partitions read, %d written", len(got), len(res.Partitions))
	}
	for i, g := range got {
		w := res.Partitions[i]
		if g.Role != w.Role || g.Label != w.Label || g.Start != w.Start || g.Size != w.Size || !strings.EqualFold(g.PartitionGUID, w.PartitionGUID) {
			t.Errorf("partition %d: read %+v, wrote %+v", i, g, w)
		}
	}
}
