package initramfs

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	qemutests "github.com/apt-ostree/apt-ostree-factory/qemu-tests"
)

// The QEMU smoke test boots an OSTree deployment of a real Debian tree with
// an initramfs from Build. It is slow (a few minutes under TCG) and needs
// root, network access to the Debian archive (unless the tree already has
// busybox and ostree-boot), ostree, e2fsprogs, fdisk and qemu-system-x86, so
// it only runs with AOF_QEMU_TESTS=1.
//
//	AOF_QEMU_TESTS=1       run it
//	AOF_QEMU_TREE=DIR      the Debian amd64 tree (default: the newest
//	                       .cache/bench/tree-bookworm-amd64-* of the repository)
//	AOF_QEMU_DEBS=DIR      .debs to unpack into the copy instead of
//	                       "apt-get download busybox ostree-boot" (needed when
//	                       the tree's suite differs from the host's apt sources)
//	AOF_QEMU_TIMEOUT=SECS  per boot (default 600)
//	AOF_QEMU_KEEP=1        keep the work directory (disk image, logs)

// smokeScript runs as a systemd oneshot unit in the booted deployment.
const smokeScript = `#!/bin/sh
exec >/dev/console 2>&1
echo "AOF-CMDLINE: $(cat /proc/cmdline)"
awk '$5 == "/" || $5 == "/var" || $5 == "/usr" || $5 == "/sysroot" || $5 == "/run" { print "AOF-MOUNT: " $4 " " $5 " " $6 }' /proc/self/mountinfo
if touch /usr/.aof-smoke 2>/dev/null; then echo AOF-USR-WRITABLE; else echo AOF-USR-RO; fi
test -e /run/ostree-booted && echo AOF-OSTREE-BOOTED
echo AOF-SMOKE-DONE
systemctl --no-block poweroff
`

const smokeUnit = `[Unit]
Description=apt-ostree-factory initramfs smoke marker
After=local-fs.target

[Service]
Type=oneshot
ExecStart=/bin/sh /usr/libexec/aof-smoke

[Install]
WantedBy=multi-user.target
`

func run(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

func findBenchTree(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("AOF_QEMU_TREE"); d != "" {
		return d
	}
	matches, _ := filepath.Glob("../../.cache/bench/tree-bookworm-amd64-*")
	var dirs []string
	for _, m := range matches {
		if fi, err := os.Stat(m); err == nil && fi.IsDir() {
			if _, err := os.Stat(m + ".done"); err == nil {
				dirs = append(dirs, m)
			}
		}
	}
	if len(dirs) == 0 {
		t.Skip("no Debian tree to boot: set AOF_QEMU_TREE=DIR or build .cache/bench/tree-bookworm-amd64-* (the live boot of a built commit is cmd/apt-ostree-factory's TestLiveBootBuiltCommit)")
	}
	sort.Strings(dirs)
	d, err := filepath.Abs(dirs[len(dirs)-1])
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// unpackDebs extracts .debs into tree, keeping its merged-/usr symlinks
// (plain "dpkg-deb -x" would replace /bin -> usr/bin by a directory).
func unpackDebs(t *testing.T, tree string, debs []string) {
	t.Helper()
	for _, d := range debs {
		deb := exec.Command("dpkg-deb", "--fsys-tarfile", d)
		tar := exec.Command("tar", "-x", "--keep-directory-symlink", "-C", tree)
		pipe, err := deb.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		tar.Stdin = pipe
		var errb bytes.Buffer
		deb.Stderr, tar.Stderr = &errb, &errb
		if err := tar.Start(); err != nil {
			t.Fatal(err)
		}
		if err := deb.Run(); err != nil {
			t.Fatalf("dpkg-deb %s: %v\n%s", d, err, errb.String())
		}
		if err := tar.Wait(); err != nil {
			t.Fatalf("tar for %s: %v\n%s", d, err, errb.String())
		}
	}
}

func TestQEMUBootOSTree(t *testing.T) {
	if os.Getenv("AOF_QEMU_TESTS") != "1" {
		t.Skip("slow; set AOF_QEMU_TESTS=1 to boot an OSTree deployment in QEMU")
	}
	src := findBenchTree(t) // skips when there is no tree
	if os.Geteuid() != 0 {
		t.Fatal("the QEMU smoke test needs root (copying a root-owned tree, mkfs.ext4 -d)")
	}
	for _, tool := range []string{"qemu-system-x86_64", "ostree", "mkfs.ext4", "sfdisk", "dpkg-deb", "tar", "cp"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required: %v (apt-get install qemu-system-x86 ostree e2fsprogs fdisk)", tool, err)
		}
	}
	t0 := time.Now()
	work, err := os.MkdirTemp("", "aof-initramfs-qemu-")
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv("AOF_QEMU_KEEP") == "1" {
		t.Logf("work directory kept: %s", work)
	} else {
		t.Cleanup(func() { removeSysroot(t, work) })
	}
	tree := filepath.Join(work, "tree")
	run(t, "", "cp", "-a", src, tree)

	// busybox and ostree-boot, unless the tree has them.
	tfs := &targetFS{root: tree}
	var want []string
	if !tfs.exists("usr/bin/busybox") && !tfs.exists("bin/busybox") {
		want = append(want, "busybox")
	}
	if !tfs.exists("usr/lib/ostree/ostree-prepare-root") {
		want = append(want, "ostree-boot")
	}
	if len(want) > 0 {
		debDir := os.Getenv("AOF_QEMU_DEBS")
		if debDir == "" {
			debDir = filepath.Join(work, "debs")
			if err := os.MkdirAll(debDir, 0o755); err != nil {
				t.Fatal(err)
			}
			run(t, debDir, "apt-get", append([]string{"download"}, want...)...)
		}
		debs, _ := filepath.Glob(filepath.Join(debDir, "*.deb"))
		if len(debs) == 0 {
			t.Fatalf("no .debs in %s", debDir)
		}
		unpackDebs(t, tree, debs)
	}

	// The initramfs, built from the tree itself.
	var img bytes.Buffer
	res, err := Build(&img, Options{Root: tree})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	t.Logf("initramfs: %d bytes, %d entries, kernel %s, modules %v, missing %v", res.Size, res.Files, res.KernelVersion, res.Modules, res.Missing)
	kver := res.KernelVersion
	initrd := filepath.Join(work, "initramfs.img")
	kernel := filepath.Join(work, "vmlinuz")
	mustWrite := func(p string, data []byte, perm os.FileMode) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, perm); err != nil {
			t.Fatal(err)
		}
	}
	mustWrite(initrd, img.Bytes(), 0o644)
	vmlinuz, err := os.ReadFile(filepath.Join(tree, "boot", "vmlinuz-"+kver))
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(kernel, vmlinuz, 0o644)
	modDir := filepath.Join(tree, "usr/lib/modules", kver)
	mustWrite(filepath.Join(modDir, "vmlinuz"), vmlinuz, 0o644)
	mustWrite(filepath.Join(modDir, "initramfs.img"), img.Bytes(), 0o644)

	// OSTree layout.
	T := func(p string) string { return filepath.Join(tree, p) }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	clearDir := func(p string) {
		ents, _ := os.ReadDir(T(p))
		for _, e := range ents {
			must(os.RemoveAll(filepath.Join(T(p), e.Name())))
		}
	}
	for _, p := range []string{"boot", "dev", "proc", "sys", "run", "tmp", "var"} {
		clearDir(p)
	}
	for _, p := range []string{"initrd.img", "initrd.img.old", "vmlinuz", "vmlinuz.old", "home", "root", "opt", "srv", "mnt", "media", "usr/local"} {
		must(os.RemoveAll(T(p)))
	}
	must(os.Rename(T("etc"), T("usr/etc")))
	for link, target := range map[string]string{
		"home": "var/home", "root": "var/roothome", "opt": "var/opt", "srv": "var/srv",
		"mnt": "var/mnt", "media": "run/media", "usr/local": "../var/usrlocal", "ostree": "sysroot/ostree",
		"usr/etc/systemd/system/systemd-firstboot.service":                 "/dev/null",
		"usr/etc/systemd/system/multi-user.target.wants/aof-smoke.service": "/usr/lib/systemd/system/aof-smoke.service",
	} {
		must(os.MkdirAll(filepath.Dir(T(link)), 0o755))
		os.Remove(T(link))
		must(os.Symlink(target, T(link)))
	}
	must(os.MkdirAll(T("sysroot"), 0o755))
	must(os.Chmod(T("tmp"), 0o1777))
	mustWrite(T("usr/etc/fstab"), []byte("# root is mounted by the initramfs\n"), 0o644)
	mustWrite(T("usr/lib/tmpfiles.d/aof-var.conf"), []byte("d /var/home 0755 root root -\nd /var/roothome 0700 root root -\nd /var/opt 0755 root root -\nd /var/srv 0755 root root -\nd /var/mnt 0755 root root -\nd /var/usrlocal 0755 root root -\n"), 0o644)
	mustWrite(T("usr/libexec/aof-smoke"), []byte(smokeScript), 0o755)
	mustWrite(T("usr/lib/systemd/system/aof-smoke.service"), []byte(smokeUnit), 0o644)

	// Sysroot, commit, deploy.
	sysroot := filepath.Join(work, "sysroot")
	repo := filepath.Join(sysroot, "ostree/repo")
	must(os.MkdirAll(sysroot, 0o755))
	run(t, "", "ostree", "admin", "init-fs", sysroot)
	run(t, "", "ostree", "admin", "--sysroot="+sysroot, "os-init", "debian")
	run(t, "", "ostree", "--repo="+repo, "config", "set", "sysroot.bootloader", "none")
	run(t, "", "ostree", "--repo="+repo, "commit", "-b", "debian/smoke", "--tree=dir="+tree, "--no-xattrs", "-s", "initramfs smoke")
	run(t, "", "ostree", "admin", "--sysroot="+sysroot, "deploy", "--os=debian",
		"--karg=root=LABEL=root", "--karg=rw", "--karg=console=ttyS0", "debian/smoke")
	entries, _ := filepath.Glob(filepath.Join(sysroot, "boot/loader/entries/*.conf"))
	if len(entries) != 1 {
		t.Fatalf("boot entries: %v", entries)
	}
	entry, err := os.ReadFile(entries[0])
	must(err)
	options := ""
	for _, l := range strings.Split(string(entry), "\n") {
		if v, ok := strings.CutPrefix(l, "options "); ok {
			options = strings.TrimSpace(v)
		}
	}
	if !strings.Contains(options, "ostree=/ostree/boot.") {
		t.Fatalf("no ostree= in the boot entry:\n%s", entry)
	}
	must(os.RemoveAll(tree)) // free the space before the disk image

	// A GPT disk with the root file system in partition 1.
	disk := filepath.Join(work, "disk.img")
	f, err := os.Create(disk)
	must(err)
	must(f.Truncate(3 << 30))
	f.Close()
	sf := exec.Command("sfdisk", "--quiet", disk)
	sf.Stdin = strings.NewReader("label: gpt\nstart=2048, size=2900MiB, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name=aofroot\n")
	if out, err := sf.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	run(t, "", "mkfs.ext4", "-q", "-L", "root", "-E", "offset=1048576", "-d", sysroot, disk, "2900M")
	partUUID := strings.ToLower(strings.TrimSpace(run(t, "", "sfdisk", "--part-uuid", disk, "1")))
	removeSysroot(t, sysroot)
	t.Logf("prepared in %v: options %q, PARTUUID %s", time.Since(t0).Round(time.Second), options, partUUID)

	timeout := qemutests.TimeoutFromEnv(600 * time.Second)
	_, why := qemutests.KVMUsable(kernel)
	t.Log(why)
	boot := func(t *testing.T, logPath, appendLine, stopAt string) (string, string, time.Duration) {
		t.Helper()
		res, err := qemutests.VM{Kernel: kernel, Initrd: initrd, Disks: []string{disk}, Timeout: timeout,
			Log: logPath, Append: appendLine, StopAt: stopAt}.Run()
		if err != nil {
			t.Fatal(err)
		}
		if res.TimedOut {
			t.Errorf("QEMU timed out after %v (log %s)", timeout, logPath)
		} else if res.ExitErr != nil && stopAt == "" {
			t.Logf("QEMU exited: %v", res.ExitErr)
		}
		return res.Console, res.Accel, res.Took
	}
	rootRe := regexp.MustCompile(`root=\S+`)
	mountRe := func(src, mnt string) *regexp.Regexp {
		return regexp.MustCompile(`AOF-MOUNT: ` + regexp.QuoteMeta(src) + ` ` + regexp.QuoteMeta(mnt) + ` `)
	}

	for _, tc := range []struct{ name, root string }{
		{"label", "root=LABEL=root"},
		{"partuuid", "root=PARTUUID=" + partUUID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			appendLine := rootRe.ReplaceAllString(options, tc.root) + " panic=-1"
			out, accel, took := boot(t, filepath.Join(work, "console-"+tc.name+".log"), appendLine, "")
			t.Logf("boot %s (%s): %v", tc.name, accel, took.Round(time.Second))
			for _, want := range []string{
				"initramfs: root device " + strings.TrimPrefix(tc.root, "root=") + " is /dev/vda1",
				"running ostree-prepare-root /sysroot",
				"switching root to /sysroot",
				"Welcome to ",
				"AOF-OSTREE-BOOTED",
				"AOF-USR-RO",
				"AOF-SMOKE-DONE",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("console lacks %q", want)
				}
			}
			for _, re := range []*regexp.Regexp{
				regexp.MustCompile(`AOF-MOUNT: /ostree/deploy/debian/deploy/[0-9a-f]{64}\.0 / `),
				mountRe("/ostree/deploy/debian/var", "/var"),
				mountRe("/", "/sysroot"),
			} {
				if !re.MatchString(out) {
					t.Errorf("console lacks a line matching %s", re)
				}
			}
			if t.Failed() {
				t.Logf("console:\n%s", tail(out, 80))
			}
		})
	}

	t.Run("emergency", func(t *testing.T) {
		appendLine := rootRe.ReplaceAllString(options, "root=LABEL=does-not-exist") + " rootwait=3 panic=-1"
		out, accel, took := boot(t, filepath.Join(work, "console-emergency.log"), appendLine, "starting an emergency shell")
		t.Logf("boot emergency (%s): %v", accel, took.Round(time.Second))
		if !strings.Contains(out, "initramfs: ERROR: root device LABEL=does-not-exist did not appear within 3s") || strings.Contains(out, "Kernel panic") {
			t.Errorf("no emergency shell:\n%s", tail(out, 40))
		}
	})
	t.Logf("QEMU smoke test total: %v", time.Since(t0).Round(time.Second))
}

// removeSysroot deletes a directory holding an OSTree sysroot.
func removeSysroot(t *testing.T, dir string) {
	t.Helper()
	if err := qemutests.RemoveSysroot(dir); err != nil {
		t.Errorf("removing %s: %v", dir, err)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
