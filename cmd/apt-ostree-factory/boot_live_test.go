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
// facts on the console and powers off) into its disk image, and boot that
// image in QEMU through UEFI firmware (OVMF): systemd-boot on the ESP, the
// kernel from the ext4 /boot, the root from the seeded OSTree sysroot.
//
//	AOF_NETWORK_TESTS=1 AOF_QEMU_TESTS=1   run it (root only)
//	AOF_QEMU_TIMEOUT=SECS                  the boot's time limit (default 420)
//	AOF_QEMU_KEEP=1                        keep the work directory (image, console log)

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
      findmnt /boot 2>&1 | sed 's/^/AOF-FINDMNT-BOOT: /'
      if touch /usr/aof-rw-test 2>/dev/null; then echo "AOF-USR-RO=no"; else echo "AOF-USR-RO=yes"; fi
      if touch /etc/aof-rw-test 2>/dev/null; then echo "AOF-ETC-RW=yes"; else echo "AOF-ETC-RW=no"; fi
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
`

func TestLiveBootImage(t *testing.T) {
	if os.Getenv("AOF_NETWORK_TESTS") != "1" || os.Getenv("AOF_QEMU_TESTS") != "1" {
		t.Skip("set AOF_NETWORK_TESTS=1 and AOF_QEMU_TESTS=1 to build from the Debian archive and boot the image in QEMU")
	}
	if os.Geteuid() != 0 {
		t.Skip("the live boot test needs root (the build sandbox)")
	}
	for _, tool := range []string{"qemu-system-x86_64", "ostree"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed (scripts/install-test-deps.sh installs it): %v", tool, err)
		}
	}
	const ovmfCode, ovmfVars = "/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"
	for _, f := range []string{ovmfCode, ovmfVars} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("UEFI firmware %s is needed (apt-get install ovmf): %v", f, err)
		}
	}
	t0 := time.Now()
	root := testenv.ModuleRoot(t)
	c := &cli{t: t, mirror: testenv.DebianMirror(t), cacheDir: filepath.Join(os.TempDir(), "aof-test-cache")}
	t.Setenv("SOURCE_DATE_EPOCH", "1763800000")
	work := t.TempDir()
	if os.Getenv("AOF_QEMU_KEEP") == "1" {
		var err error
		if work, err = os.MkdirTemp("", "aof-boot-live-"); err != nil {
			t.Fatal(err)
		}
		t.Logf("work directory kept: %s", work)
	}

	// 1. Build the commit and its image.
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
	outDir := filepath.Join(work, "out")
	commit, stderr, code := c.build(recipePath, "--repo", repo, "--write-lock", lockPath, "--output-dir", outDir)
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
	image := filepath.Join(outDir, "trixie-minimal.raw")
	if _, err := os.Stat(image + ".sha256"); err != nil {
		t.Fatal(err)
	}
	// The KVM probe boots the commit's kernel directly.
	kver := strings.Trim(strings.TrimSpace(ostreeCmd(t, "show", "--repo="+repo, "--print-metadata-key=ostree.linux", commit)), "'")
	kernel := filepath.Join(work, "vmlinuz")
	if out, err := exec.Command("sh", "-c", `ostree cat --repo="$1" "$2" "/usr/lib/modules/$3/vmlinuz" > "$4"`, "sh", repo, commit, kver, kernel).CombinedOutput(); err != nil {
		t.Fatalf("ostree cat vmlinuz: %v %s", err, out)
	}
	_, why := qemutests.KVMUsable(kernel)
	t.Log(why)
	t.Logf("built the commit and the image in %v", time.Since(t0).Round(time.Second))

	// 2. Boot the image copy-on-write.
	timeout := qemutests.TimeoutFromEnv(420 * time.Second)
	logPath := filepath.Join(work, "console.log")
	res, err := qemutests.VM{
		Firmware: ovmfCode, FirmwareVars: ovmfVars, Disks: []string{image}, Snapshot: true, ProbeKernel: kernel,
		MemoryMB: 1536, Timeout: timeout, Log: logPath,
		Markers: []string{"EFI stub", "AOF-BOOT-OK"}, Done: "AOF-BOOT-DONE",
	}.Run()
	if err != nil {
		t.Fatal(err)
	}
	if res.TimedOut {
		t.Errorf("QEMU timed out after %v without AOF-BOOT-DONE (console log %s)", timeout, logPath)
	}
	out := res.Console
	t.Logf("boot (%s): kernel started after %v, AOF-BOOT-OK after %v, AOF-BOOT-DONE after %v, QEMU ended after %v (powered off: %v)",
		res.Accel, res.At["EFI stub"].Round(time.Second), res.At["AOF-BOOT-OK"].Round(time.Second), res.At["AOF-BOOT-DONE"].Round(time.Second),
		res.Took.Round(time.Second), res.PoweredOff)

	// 3. What the firmware, the boot loader and the unit reported.
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
	if !strings.Contains(out, "Debian GNU/Linux 13 (trixie) dev (ostree:0)") {
		t.Errorf("systemd-boot's menu did not show the deployment's entry")
	}
	if !regexp.MustCompile(`Command line: .*root=UUID=[0-9a-f-]+ .*ostree=/ostree/boot\.1/debian/[0-9a-f]{64}/0`).MatchString(out) {
		t.Errorf("the kernel command line lacks root=UUID= or ostree=")
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
	if v, _ := fact(`AOF-USR-RO=(\w+)`); v != "yes" {
		t.Errorf("/usr is writable")
	}
	if v, _ := fact(`AOF-ETC-RW=(\w+)`); v != "yes" {
		t.Errorf("/etc is not writable")
	}
	if !regexp.MustCompile(`AOF-STATUS: \* debian ` + commit + `\.0`).MatchString(out) {
		t.Errorf("ostree admin status does not show the deployment of %s as booted (\"* debian %s.0\")", commit, commit)
	}
	if !regexp.MustCompile(`AOF-FINDMNT-ROOT: .*\[/ostree/deploy/debian/deploy/` + commit + `\.0\]`).MatchString(out) {
		t.Errorf("findmnt / does not show the deployment directory as /")
	}
	if !regexp.MustCompile(`AOF-FINDMNT-BOOT: /boot +/dev/vda2 +ext4`).MatchString(out) {
		t.Errorf("/boot is not the image's ext4 boot partition")
	}
	if failed := regexp.MustCompile(`AOF-FAILED: (\S.*)`).FindAllStringSubmatch(out, -1); len(failed) > 0 {
		t.Errorf("failed units: %v", failed)
	}
	if !res.PoweredOff {
		t.Errorf("the VM did not power off by itself")
	}
	// The boot ran copy-on-write: the image still has its checksum.
	check := exec.Command("sha256sum", "--check", "--quiet", filepath.Base(image)+".sha256")
	check.Dir = outDir
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("the image changed during the boot: %v %s", err, out)
	}
	if t.Failed() {
		t.Logf("console (last 120 lines, all in %s):\n%s", logPath, lastLines(out, 120))
	}
	t.Logf("live boot test total: %v", time.Since(t0).Round(time.Second))
}
