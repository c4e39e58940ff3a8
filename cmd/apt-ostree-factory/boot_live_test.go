package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/apt-ostree/apt-ostree-factory/internal/testenv"
	qemutests "github.com/apt-ostree/apt-ostree-factory/qemu-tests"
)

// The live boot test: build the default recipe (plus a unit that reports
// facts on the console and powers off), deploy the commit with the host's
// ostree into a sysroot the way an image would be seeded, and boot it in
// QEMU with the kernel and initramfs the factory put into the commit.
//
//	AOF_NETWORK_TESTS=1 AOF_QEMU_TESTS=1   run it (root only)
//	AOF_QEMU_TIMEOUT=SECS                  the boot's time limit (default 360)
//	AOF_QEMU_KEEP=1                        keep the work directory (disk, console log)

// bootCheckScript is the recipe's inline script: it installs
// /usr/libexec/aof-boot-check and a oneshot unit in /etc (so /usr/etc),
// masks systemd-firstboot (empty machine-id: it would prompt on the console)
// and writes /etc/fstab. No "${" or "$$" in it: the recipe would substitute
// them.
const bootCheckScript = `scripts:
  - name: boot-check
    run: |
      mkdir -p /usr/libexec /etc/systemd/system/multi-user.target.wants
      cat >/usr/libexec/aof-boot-check <<'EOF'
      #!/bin/sh
      # Facts for the live boot test, on the console; then power off.
      exec >/dev/console 2>&1
      echo "AOF-BOOT-OK"
      if test -e /run/ostree-booted; then echo "AOF-OSTREE-BOOTED=yes"; else echo "AOF-OSTREE-BOOTED=no"; fi
      echo "AOF-HOSTNAME=$(hostname 2>/dev/null || uname -n)"
      echo "AOF-DPKG-II=$(dpkg -l | grep -c '^ii')"
      echo "AOF-CMDLINE=$(cat /proc/cmdline)"
      ostree admin status 2>&1 | head -n 8 | sed 's/^/AOF-STATUS: /'
      findmnt / 2>&1 | sed 's/^/AOF-FINDMNT-ROOT: /'
      findmnt /usr 2>&1 | sed 's/^/AOF-FINDMNT-USR: /'
      systemctl --failed --no-legend --plain 2>&1 | sed 's/^/AOF-FAILED: /'
      echo "AOF-BOOT-DONE"
      systemctl poweroff --no-block || poweroff -f
      EOF
      chmod 0755 /usr/libexec/aof-boot-check
      cat >/etc/systemd/system/aof-boot-check.service <<'EOF'
      [Unit]
      Description=apt-ostree-factory live boot check
      After=local-fs.target systemd-tmpfiles-setup.service

      [Service]
      Type=oneshot
      ExecStart=/usr/libexec/aof-boot-check

      [Install]
      WantedBy=multi-user.target
      EOF
      ln -sf ../aof-boot-check.service /etc/systemd/system/multi-user.target.wants/aof-boot-check.service
      ln -sf /dev/null /etc/systemd/system/systemd-firstboot.service
      echo 'LABEL=root / ext4 defaults 0 1' >/etc/fstab
`

func TestLiveBootBuiltCommit(t *testing.T) {
	if os.Getenv("AOF_NETWORK_TESTS") != "1" || os.Getenv("AOF_QEMU_TESTS") != "1" {
		t.Skip("set AOF_NETWORK_TESTS=1 and AOF_QEMU_TESTS=1 to build from the Debian archive and boot the commit in QEMU")
	}
	if os.Geteuid() != 0 {
		t.Skip("the live boot test needs root (build sandbox, ostree admin deploy, mkfs.ext4 -d of a root-owned sysroot)")
	}
	for _, tool := range []string{"qemu-system-x86_64", "ostree", "mkfs.ext4", "chattr"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed (apt-get install qemu-system-x86 ostree e2fsprogs): %v", tool, err)
		}
	}
	t0 := time.Now()
	root := testenv.ModuleRoot(t)
	c := &cli{t: t, mirror: testenv.DebianMirror(t), cacheDir: filepath.Join(os.TempDir(), "aof-test-cache")}
	t.Setenv("SOURCE_DATE_EPOCH", "1763800000")

	// Not t.TempDir: ostree admin deploy makes the deployment immutable.
	work, err := os.MkdirTemp("", "aof-boot-live-")
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv("AOF_QEMU_KEEP") == "1" {
		t.Logf("work directory kept: %s", work)
	} else {
		t.Cleanup(func() { removeDeployments(t, work) })
	}

	// 1. Build.
	data, err := os.ReadFile(filepath.Join(root, "recipes", "trixie-minimal.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	if !strings.HasSuffix(text, "\n") {
		text += "\n"
	}
	recipePath := filepath.Join(work, "boot-check.yaml")
	if err := os.WriteFile(recipePath, []byte(text+bootCheckScript), 0o644); err != nil {
		t.Fatal(err)
	}
	repo := filepath.Join(work, "repo")
	lockPath := filepath.Join(work, "boot-check.lock")
	commit, stderr, code := c.build(recipePath, "--repo", repo, "--write-lock", lockPath)
	if code != 0 {
		t.Fatalf("build failed (%d):\n%s", code, stderr)
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(commit) {
		t.Fatalf("build printed no commit checksum: %q\n%s", commit, stderr)
	}
	t.Logf("build: %s\n%s", commit, lastLines(stderr, 20))
	lockText, err := os.ReadFile(lockPath)
	if err != nil {
		t.Fatal(err)
	}
	lockPackages := 0
	for _, l := range strings.Split(string(lockText), "\n") {
		if strings.HasPrefix(l, "package ") {
			lockPackages++
		}
	}
	if lockPackages == 0 {
		t.Fatalf("no package lines in %s", lockPath)
	}

	// 2. Sysroot, seeded with the host's ostree as an image builder would.
	const ref = "origin:debian/trixie/x86_64"
	sysroot := filepath.Join(work, "sysroot")
	srepo := filepath.Join(sysroot, "ostree", "repo")
	if err := os.MkdirAll(sysroot, 0o755); err != nil {
		t.Fatal(err)
	}
	ostreeCmd(t, "admin", "init-fs", sysroot)
	ostreeCmd(t, "admin", "--sysroot="+sysroot, "os-init", "debian")
	ostreeCmd(t, "--repo="+srepo, "remote", "add", "--no-gpg-verify", "origin", "file:///run/aof-no-updates")
	ostreeCmd(t, "--repo="+srepo, "config", "set", "sysroot.bootloader", "none")
	ostreeCmd(t, "--repo="+srepo, "pull-local", repo, commit)
	ostreeCmd(t, "--repo="+srepo, "refs", "--create="+ref, commit)
	ostreeCmd(t, "admin", "--sysroot="+sysroot, "deploy", "--os=debian",
		"--karg=root=LABEL=root", "--karg=rw", "--karg=console=ttyS0", ref)
	entries, _ := filepath.Glob(filepath.Join(sysroot, "boot", "loader", "entries", "*.conf"))
	if len(entries) != 1 {
		t.Fatalf("boot entries after deploy: %v", entries)
	}
	entry, err := os.ReadFile(entries[0])
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]string{}
	for _, l := range strings.Split(string(entry), "\n") {
		if k, v, ok := strings.Cut(l, " "); ok {
			keys[k] = strings.TrimSpace(v)
		}
	}
	options := keys["options"]
	if !strings.Contains(options, "ostree=/ostree/boot.") || keys["linux"] == "" || keys["initrd"] == "" {
		t.Fatalf("boot entry %s lacks options with ostree=, linux or initrd:\n%s", entries[0], entry)
	}
	// BLS paths are relative to the file system holding /boot; here that
	// is the root file system, so they may or may not carry /boot.
	fromEntry := func(p, dest string) {
		t.Helper()
		var b []byte
		var err error
		for _, cand := range []string{filepath.Join(sysroot, "boot", p), filepath.Join(sysroot, p)} {
			if b, err = os.ReadFile(cand); err == nil {
				break
			}
		}
		if err != nil {
			t.Fatalf("%s of the boot entry not found under %s/boot: %v", p, sysroot, err)
		}
		if err := os.WriteFile(dest, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	kernel := filepath.Join(work, "vmlinuz")
	initrd := filepath.Join(work, "initramfs.img")
	fromEntry(keys["linux"], kernel)
	fromEntry(keys["initrd"], initrd)
	t.Logf("boot entry %s:\n%s", filepath.Base(entries[0]), strings.TrimSpace(string(entry)))

	// 3. Disk: the sysroot as an unpartitioned ext4 labelled root.
	disk := filepath.Join(work, "disk.img")
	f, err := os.Create(disk)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(3 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-L", "root", "-d", sysroot, disk, "3G").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	removeDeployments(t, sysroot) // the disk has it all now
	t.Logf("built, deployed and made the disk in %v", time.Since(t0).Round(time.Second))

	timeout := qemutests.TimeoutFromEnv(360 * time.Second)
	_, why := qemutests.KVMUsable(kernel)
	t.Log(why)
	logPath := filepath.Join(work, "console.log")
	res, err := qemutests.VM{
		Kernel: kernel, Initrd: initrd, Disks: []string{disk}, MemoryMB: 1536, Timeout: timeout, Log: logPath,
		Append: options + " panic=-1", Markers: []string{"AOF-BOOT-OK"}, Done: "AOF-BOOT-DONE",
	}.Run()
	if err != nil {
		t.Fatal(err)
	}
	if res.TimedOut {
		t.Errorf("QEMU timed out after %v without AOF-BOOT-DONE (console log %s)", timeout, logPath)
	}
	out := res.Console
	t.Logf("boot (%s): AOF-BOOT-OK after %v, marker AOF-BOOT-DONE after %v, QEMU ended after %v (powered off: %v)",
		res.Accel, res.At["AOF-BOOT-OK"].Round(time.Second), res.At["AOF-BOOT-DONE"].Round(time.Second),
		res.Took.Round(time.Second), res.PoweredOff)

	// 4. What the unit reported.
	var facts []string
	for _, l := range strings.Split(out, "\n") {
		if i := strings.Index(l, "AOF-"); i >= 0 {
			facts = append(facts, l[i:])
		}
	}
	t.Logf("console facts:\n%s", strings.Join(facts, "\n"))
	fact := func(re string) (string, bool) {
		m := regexp.MustCompile(re).FindStringSubmatch(out)
		if m == nil {
			return "", false
		}
		return m[1], true
	}
	if !strings.Contains(out, "AOF-BOOT-OK") {
		t.Errorf("the console never showed AOF-BOOT-OK: the boot did not reach multi-user.target")
	}
	if v, ok := fact(`AOF-OSTREE-BOOTED=(\w+)`); v != "yes" {
		t.Errorf("/run/ostree-booted: %q (reported: %v)", v, ok)
	}
	if v, ok := fact(`AOF-DPKG-II=(\d+)`); v != fmt.Sprint(lockPackages) {
		t.Errorf("dpkg -l lists %q installed packages (reported: %v), the lock has %d", v, ok, lockPackages)
	}
	if v, ok := fact(`AOF-HOSTNAME=(\S+)`); v != "debian" {
		t.Errorf("hostname %q (reported: %v), want debian", v, ok)
	}
	if !regexp.MustCompile(`AOF-STATUS: \* debian ` + commit + `\.0`).MatchString(out) {
		t.Errorf("ostree admin status does not show the deployment of %s as booted (\"* debian %s.0\")", commit, commit)
	}
	if !regexp.MustCompile(`AOF-FINDMNT-ROOT: .*\[/ostree/deploy/debian/deploy/` + commit + `\.0\]`).MatchString(out) {
		t.Errorf("findmnt / does not show the deployment directory as /")
	}
	if !res.PoweredOff {
		t.Errorf("the VM did not power off by itself")
	}
	if t.Failed() {
		t.Logf("console (last 120 lines, all in %s):\n%s", logPath, lastLines(out, 120))
	}
	t.Logf("live boot test total: %v", time.Since(t0).Round(time.Second))
}

// removeDeployments deletes a directory holding an OSTree sysroot.
func removeDeployments(t *testing.T, dir string) {
	t.Helper()
	if err := qemutests.RemoveSysroot(dir); err != nil {
		t.Errorf("removing %s: %v", dir, err)
	}
}
