package qemutests

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/apt-ostree/apt-ostree-factory/delta"
	"github.com/apt-ostree/apt-ostree-factory/diskimage"
	"github.com/apt-ostree/apt-ostree-factory/ostree"
)

func perBoot() time.Duration { return TimeoutFromEnv(300 * time.Second) }

// TestScenarioBoot: the image reaches multi-user with the expected
// deployment booted, /usr read-only, /etc writable, nothing failed, dpkg
// working, /boot mounted; /var survives a reboot.
func TestScenarioBoot(t *testing.T) {
	needScenarios(t)
	v1 := build(t, "v1")
	script := phaseScript(
		`echo aof-token > /var/lib/aoftest/persist; next`,
		`fact VAR_PERSISTED "$(cat /var/lib/aoftest/persist 2>/dev/null)"`,
	)
	res, err := guest(t, "boot", v1.image, testDisk(t, "boot", script, ""), v1.kernel, 2, perBoot())
	if err != nil {
		t.Fatal(err)
	}
	// What the firmware and systemd-boot showed before the kernel.
	for _, want := range []string{"Debian GNU/Linux 13 (trixie) v1 (ostree:0)", "EFI stub: Loaded initrd"} {
		if !strings.Contains(res.Console, want) {
			t.Errorf("the console never showed %q", want)
		}
	}
	if !regexp.MustCompile(`Command line: .*root=UUID=[0-9a-f-]{36} rw console=ttyS0 ostree=/ostree/boot\.1/debian/[0-9a-f]{64}/0`).MatchString(res.Console) {
		t.Errorf("the kernel command line lacks root=UUID=, the recipe's arguments or ostree=")
	}
	f := parseFacts(res.Console)
	f.checkHealthy(t, 0, v1.commit)
	f.checkHealthy(t, 1, v1.commit)
	f.expect(t, "P0-VERSION", "v1")
	f.expect(t, "P1-VAR_PERSISTED", "aof-token")
}

// TestScenarioUpgrade: v1 boots, upgrades to v2 (hello added, version
// bumped; signed, and verified by the guest against the key the image
// carries) from a repository on a second disk, keeps a local /etc change
// through the 3-way merge, rolls back with `ostree admin set-default 1`,
// and then upgrades again with a staged deployment.
func TestScenarioUpgrade(t *testing.T) {
	needScenarios(t)
	v1 := build(t, "v1")
	v2 := build(t, "v2")
	script := phaseScript(
		`echo aof-local-edit >> /etc/motd
fact GPG_VERIFY "$(sed -n 's/^gpg-verify=//p' /ostree/repo/config)"
ostree admin upgrade; fact UPGRADE_RC $?
fact GOOD_SIGNATURES "$(ostree show --gpg-verify-remote=origin "$(ostree rev-parse origin:debian/trixie/x86_64)" | grep -c 'Good signature')"
next`,
		`fact HELLO "$(hello 2>&1)"
fact MOTD_KEPT "$(grep -c aof-local-edit /etc/motd)"
ostree admin set-default 1; fact SET_DEFAULT_RC $?
next`,
		`fact HELLO "$(command -v hello || echo none)"
ostree admin undeploy 1; fact UNDEPLOY_RC $?
ostree admin upgrade --stage; fact STAGE_RC $?
fact STAGED "$(ostree admin status | grep -c staged)"
next`,
		`fact HELLO "$(hello 2>&1)"
fact MOTD_KEPT "$(grep -c aof-local-edit /etc/motd)"`,
	)
	res, err := guest(t, "upgrade", v1.image, testDisk(t, "upgrade", script, v2.repo), v1.kernel, 4, perBoot())
	if err != nil {
		t.Fatal(err)
	}
	f := parseFacts(res.Console)
	f.checkHealthy(t, 0, v1.commit)
	f.expect(t, "P0-GPG_VERIFY", "true")
	f.expect(t, "P0-UPGRADE_RC", "0")
	f.expect(t, "P0-GOOD_SIGNATURES", "1")
	f.checkHealthy(t, 1, v2.commit)
	f.expect(t, "P1-VERSION", "v2")
	f.expect(t, "P1-HELLO", "Hello, world!")
	f.expect(t, "P1-MOTD_KEPT", "1")
	f.expect(t, "P1-SET_DEFAULT_RC", "0")
	f.checkHealthy(t, 2, v1.commit)
	f.expect(t, "P2-VERSION", "v1")
	f.expect(t, "P2-HELLO", "none")
	f.expect(t, "P2-UNDEPLOY_RC", "0")
	f.expect(t, "P2-STAGE_RC", "0")
	f.expect(t, "P2-STAGED", "1")
	f.checkHealthy(t, 3, v2.commit)
	f.expect(t, "P3-HELLO", "Hello, world!")
	f.expect(t, "P3-MOTD_KEPT", "1")
}

// TestScenarioBootBookworm: the bookworm recipe's image, whose ostree is
// 2022.7 (boot entries named ostree-N-<stateroot>.conf, os-init's /var
// directories), boots and reboots the same way.
func TestScenarioBootBookworm(t *testing.T) {
	needScenarios(t)
	b := buildRecipe(t, "bookworm-minimal", "v1")
	script := phaseScript(
		`fact ENTRIES "$(ls /boot/loader/entries)"
echo aof-token > /var/lib/aoftest/persist; next`,
		`fact VAR_PERSISTED "$(cat /var/lib/aoftest/persist 2>/dev/null)"`,
	)
	res, err := guest(t, "boot-bookworm", b.image, testDisk(t, "bookworm", script, ""), b.kernel, 2, perBoot())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(res.Console, "Debian GNU/Linux 12 (bookworm) v1 (ostree:0)") {
		t.Errorf("systemd-boot's menu did not show the bookworm entry")
	}
	f := parseFacts(res.Console)
	f.checkHealthy(t, 0, b.commit)
	f.checkHealthy(t, 1, b.commit)
	f.expect(t, "P0-ENTRIES", "ostree-1-debian.conf")
	f.expect(t, "P1-VAR_PERSISTED", "aof-token")
}

// TestScenarioBrokenBoot: an image whose initramfs was removed from /boot
// must fail the boot scenario with a message naming the serial log,
// within its time limit.
func TestScenarioBrokenBoot(t *testing.T) {
	needScenarios(t)
	v1 := build(t, "v1")
	broken := filepath.Join(t.TempDir(), "broken.raw")
	if o, err := exec.Command("cp", "--sparse=always", v1.image, broken).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, o)
	}
	parts, err := diskimage.ReadPartitions(broken)
	if err != nil {
		t.Fatal(err)
	}
	var boot *diskimage.PartitionResult
	for i := range parts {
		if parts[i].Role == "boot" {
			boot = &parts[i]
		}
	}
	if boot == nil {
		t.Fatal("no boot partition")
	}
	bootImg := filepath.Join(t.TempDir(), "boot.img")
	if err := diskimage.ExtractPartition(broken, *boot, bootImg); err != nil {
		t.Fatal(err)
	}
	ls, err := exec.Command("debugfs", "-R", "ls -p /ostree", bootImg).Output()
	if err != nil {
		t.Fatal(err)
	}
	var kdir string
	for _, l := range strings.Split(string(ls), "\n") {
		if f := strings.Split(l, "/"); len(f) > 5 && strings.HasPrefix(f[5], "debian-") {
			kdir = f[5]
		}
	}
	if kdir == "" {
		t.Fatalf("no kernel directory in /boot/ostree:\n%s", ls)
	}
	files, _ := exec.Command("debugfs", "-R", "ls -p /ostree/"+kdir, bootImg).Output()
	removed := false
	for _, l := range strings.Split(string(files), "\n") {
		if f := strings.Split(l, "/"); len(f) > 5 && strings.HasPrefix(f[5], "initramfs-") {
			if o, err := exec.Command("debugfs", "-w", "-R", "rm /ostree/"+kdir+"/"+f[5], bootImg).CombinedOutput(); err != nil {
				t.Fatalf("debugfs rm: %v %s", err, o)
			}
			removed = true
		}
	}
	if !removed {
		t.Fatalf("no initramfs in /ostree/%s:\n%s", kdir, files)
	}
	if err := diskimage.ReplacePartition(broken, *boot, bootImg); err != nil {
		t.Fatal(err)
	}

	limit := 150 * time.Second
	t0 := time.Now()
	_, err = guest(t, "broken-boot", broken, testDisk(t, "broken", phaseScript(`true`), ""), v1.kernel, 1, limit)
	took := time.Since(t0)
	if err == nil {
		t.Fatal("the boot of an image without initramfs passed")
	}
	t.Logf("failed as it should, after %v: %v", took.Round(time.Second), firstLine(err.Error()))
	if !strings.Contains(err.Error(), "serial log: ") || !strings.Contains(err.Error(), "aof-qemu-logs") {
		t.Errorf("the failure does not point at the serial log: %v", firstLine(err.Error()))
	}
	if !strings.Contains(err.Error(), "Error preparing initrd") && !strings.Contains(err.Error(), "@image_start: Error") {
		t.Errorf("the failure does not say systemd-boot could not load the initrd: %v", firstLine(err.Error()))
	}
	if took > limit+60*time.Second {
		t.Errorf("the failed boot took %v, the limit is %v", took, limit)
	}
}

func firstLine(s string) string { return strings.SplitN(s, "\n", 2)[0] }

// TestScenarioOfflineBundle: the USB-stick update. v1 boots with a disk
// holding the v1→v2 bundle, imports it with `ostree static-delta
// apply-offline`, deploys v2 and reboots into it.
func TestScenarioOfflineBundle(t *testing.T) {
	needScenarios(t)
	v1 := build(t, "v1")
	v2 := build(t, "v2")
	repo, err := ostree.Open(v2.repo)
	if err != nil {
		t.Fatal(err)
	}
	from, err := ostree.ParseChecksum(v1.commit)
	if err != nil {
		t.Fatal(err)
	}
	to, _ := ostree.ParseChecksum(v2.commit)
	dir := filepath.Join(t.TempDir(), "bundle")
	os.MkdirAll(dir, 0o755)
	bundle := filepath.Join(dir, "update.delta")
	res, err := delta.WriteBundle(context.Background(), repo, &from, to, bundle, delta.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("bundle v1→v2: %.1f MB", float64(res.CompressedSize)/1e6)
	script := phaseScript(
		`ostree static-delta apply-offline /run/aoftest/update.delta; fact APPLY_RC $?
ostree admin deploy --os=debian `+v2.commit+`; fact DEPLOY_RC $?
next`,
		`fact HELLO "$(hello 2>&1)"`,
	)
	disk := testDiskWith(t, "offline", script, map[string]string{"update.delta": bundle})
	out, err := guest(t, "offline-bundle", v1.image, disk, v1.kernel, 2, perBoot())
	if err != nil {
		t.Fatal(err)
	}
	f := parseFacts(out.Console)
	f.checkHealthy(t, 0, v1.commit)
	f.expect(t, "P0-APPLY_RC", "0")
	f.expect(t, "P0-DEPLOY_RC", "0")
	f.checkHealthy(t, 1, v2.commit)
	f.expect(t, "P1-HELLO", "Hello, world!")
}
