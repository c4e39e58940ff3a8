package qemutests

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apt-ostree/apt-ostree-factory/builder"
	"github.com/apt-ostree/apt-ostree-factory/internal/testenv"
	"github.com/apt-ostree/apt-ostree-factory/recipe"
	"github.com/apt-ostree/apt-ostree-factory/signing"
)

// The scenarios of `make qemu-test`: images of the default recipe (plus a
// test agent) booted under QEMU with OVMF, driven by a script on a second
// disk, checked on the serial console.
//
//	AOF_QEMU_SCENARIOS=1    run them (root; needs the Debian archive)
//	AOF_QEMU_TIMEOUT=SECS   the time limit of each boot (default 300)
//	AOF_QEMU_LOGS=DIR       where console logs are kept (default $TMPDIR/aof-qemu-logs)

const (
	ovmfCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
	// The update channel of the test images: the repository on the test
	// disk, mounted by the agent.
	testRemoteURL = "file:///run/aoftest/repo"
)

// agentScript is the test recipe's script: a oneshot unit that mounts the
// disk labelled AOFTEST and runs its run.sh with the output on the
// console. No "${" or "$$": the recipe would substitute them.
const agentScript = `scripts:
  - name: aof-test-agent
    run: |
      mkdir -p /usr/libexec /etc/systemd/system/multi-user.target.wants
      cat >/usr/libexec/aof-test-agent <<'EOF'
      #!/bin/sh
      # Runs the test disk's run.sh (apt-ostree-factory QEMU scenarios).
      exec >/dev/console 2>&1
      echo "AOF-AGENT-START"
      mkdir -p /run/aoftest
      if ! mount -o ro LABEL=AOFTEST /run/aoftest; then
        echo "AOF-AGENT-NO-TEST-DISK"
        exit 0
      fi
      sh /run/aoftest/run.sh
      echo "AOF-AGENT-EXIT=$?"
      EOF
      chmod 0755 /usr/libexec/aof-test-agent
      cat >/etc/systemd/system/aof-test-agent.service <<'EOF'
      [Unit]
      Description=apt-ostree-factory QEMU test agent
      After=local-fs.target systemd-tmpfiles-setup.service systemd-user-sessions.service

      [Service]
      Type=oneshot
      ExecStart=/usr/libexec/aof-test-agent

      [Install]
      WantedBy=multi-user.target
      EOF
      ln -sf ../aof-test-agent.service /etc/systemd/system/multi-user.target.wants/aof-test-agent.service
      ln -sf /dev/null /etc/systemd/system/systemd-firstboot.service
`

// factsScript prints what every phase checks, prefixed AOF-P<phase>-.
const factsScript = `
fact() { echo "AOF-P$PHASE-$1=$2"; }
fact BOOTED "$(ostree admin status 2>/dev/null | sed -n 's/^\* [^ ]* \([0-9a-f]*\)\.[0-9]*$/\1/p')"
fact VERSION "$(ostree admin status 2>/dev/null | sed -n '/^\*/,/Version/s/^ *Version: //p' | head -n 1)"
fact OSTREE_BOOTED "$(test -e /run/ostree-booted && echo yes || echo no)"
fact USR_RO "$(touch /usr/.aof-rw 2>/dev/null && echo no || echo yes)"
fact ETC_RW "$(touch /etc/.aof-rw 2>/dev/null && rm -f /etc/.aof-rw && echo yes || echo no)"
fact DPKG_II "$(dpkg -l 2>/dev/null | grep -c '^ii')"
fact FAILED "$(systemctl --failed --no-legend --plain 2>/dev/null | awk '{print $1}' | tr '\n' ' ')"
fact BOOT_MOUNT "$(findmnt -n -o FSTYPE /boot 2>/dev/null)"
ostree admin status 2>&1 | sed "s/^/AOF-P$PHASE-STATUS: /"
`

// phaseScript wraps the scenario's phases: the phase number lives in
// /var (which must persist), each phase ends with a reboot or poweroff.
func phaseScript(phases ...string) string {
	var b strings.Builder
	b.WriteString("#!/bin/sh\nmkdir -p /var/lib/aoftest\nPHASE=$(cat /var/lib/aoftest/phase 2>/dev/null || echo 0)\necho \"AOF-PHASE=$PHASE\"\n")
	b.WriteString(factsScript)
	b.WriteString("next() { echo $((PHASE + 1)) > /var/lib/aoftest/phase; sync; echo \"AOF-P$PHASE-END\"; systemctl reboot --no-block; exit 0; }\n")
	b.WriteString("case $PHASE in\n")
	for i, p := range phases {
		fmt.Fprintf(&b, "%d)\n%s\n;;\n", i, p)
	}
	b.WriteString("*) echo AOF-UNEXPECTED-PHASE ;;\nesac\necho AOF-SCENARIO-DONE\nsystemctl poweroff --no-block\n")
	return b.String()
}

func needScenarios(t *testing.T) {
	if os.Getenv("AOF_QEMU_SCENARIOS") != "1" {
		t.Skip("set AOF_QEMU_SCENARIOS=1 (make qemu-test) to build images and boot them in QEMU")
	}
	if os.Geteuid() != 0 {
		t.Skip("the scenarios need root (build sandbox, mkfs.ext4 -d of the test disk)")
	}
	for _, tool := range []string{"qemu-system-x86_64", "mkfs.ext4", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed (scripts/install-test-deps.sh installs it)", tool)
		}
	}
	for _, f := range []string{ovmfCode, ovmfVars} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("UEFI firmware %s is needed (apt-get install ovmf)", f)
		}
	}
}

// testImages builds versions of the default recipe (with the agent and
// the test remote) into one repository, each with its image. Built once
// per test binary run.
type testBuild struct {
	repo   string
	commit string
	image  string
	kernel string
}

var (
	buildsMu sync.Mutex
	builds   = map[string]*testBuild{}
	workDir  string
)

func work(t *testing.T) string {
	t.Helper()
	if workDir == "" {
		d, err := os.MkdirTemp("", "aof-qemu-scenarios-")
		if err != nil {
			t.Fatal(err)
		}
		workDir = d
	}
	return workDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if workDir != "" {
		os.RemoveAll(workDir)
	}
	os.Exit(code)
}

// build builds version v ("v1", "v2") of the default recipe with the
// test agent; v2 adds the hello package. Versions share one repository, so
// v2's parent is v1.
func build(t *testing.T, v string) *testBuild {
	t.Helper()
	return buildRecipe(t, "trixie-minimal", v)
}

// buildRecipe builds version v of recipes/NAME.yaml with the test agent.
func buildRecipe(t *testing.T, name, v string) *testBuild {
	t.Helper()
	buildsMu.Lock()
	defer buildsMu.Unlock()
	key := name + "/" + v
	if b := builds[key]; b != nil {
		return b
	}
	if v == "v2" && builds[name+"/v1"] == nil {
		buildsMu.Unlock()
		buildRecipe(t, name, "v1")
		buildsMu.Lock()
	}
	root := testenv.ModuleRoot(t)
	data, err := os.ReadFile(filepath.Join(root, "recipes", name+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	text = strings.Replace(text, "  version: ${VERSION}\n", "  version: ${VERSION}\n  remote:\n    url: "+testRemoteURL+"\n", 1)
	// The raw image only.
	if i := strings.Index(text, "    # The same disk as qcow2"); i > 0 {
		text = text[:i]
	}
	if v == "v2" {
		text = strings.Replace(text, "packages:\n", "packages:\n  - hello\n", 1)
	}
	dir := work(t)
	// Every test commit is signed; the images verify their updates.
	keyFile := filepath.Join(dir, "signing-key.asc")
	if _, err := os.Stat(keyFile); err != nil {
		key, err := signing.GenerateKey("apt-ostree-factory QEMU tests", "qemu-tests@example.org", time.Unix(1763800000, 0))
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := key.WriteSecret(&buf); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keyFile, buf.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// An Ed25519 key too: the image names its public key for the remote
	// (Debian's ostree, built without Ed25519, must still upgrade).
	edFile := filepath.Join(dir, "signing-key.ed25519")
	if _, err := os.Stat(edFile); err != nil {
		key, err := signing.GenerateEd25519Key()
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		key.WriteSecret(&buf)
		if err := os.WriteFile(edFile, buf.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	text += "signing:\n  gpg-keys: [" + keyFile + "]\n  ed25519-keys: [" + edFile + "]\n"
	path := filepath.Join(dir, name+"-"+v+".yaml")
	if err := os.WriteFile(path, []byte(text+agentScript), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := recipe.LoadWith(path, recipe.Options{Vars: map[string]string{"MIRROR": testenv.DebianMirror(t), "VERSION": v}})
	if err != nil {
		t.Fatal(err)
	}
	epoch := int64(1763800000)
	if v == "v2" {
		epoch += 3600
	}
	out := filepath.Join(dir, "images-"+name+"-"+v)
	t0 := time.Now()
	res, err := builder.Build(context.Background(), builder.BuildOptions{
		Recipe: r, Repo: filepath.Join(dir, "repo-"+name), CacheDir: filepath.Join(os.TempDir(), "aof-test-cache"),
		OutputDir: out, SourceDateEpoch: &epoch,
	})
	if err != nil {
		t.Fatalf("building %s %s: %v", name, v, err)
	}
	if len(res.Images) != 1 {
		t.Fatalf("%s: %d images", v, len(res.Images))
	}
	b := &testBuild{repo: res.Repo, commit: res.Commit.String(), image: res.Images[0].Path}
	// The commit's kernel, for the KVM probe.
	b.kernel = filepath.Join(dir, "vmlinuz-"+name+"-"+v)
	cmd := exec.Command("sh", "-c", `ostree cat --repo="$1" "$2" "/usr/lib/modules/$3/vmlinuz" > "$4"`, "sh", res.Repo, b.commit, res.KernelVersion, b.kernel)
	if o, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ostree cat: %v %s", err, o)
	}
	t.Logf("built %s %s: commit %s, image %s in %v", name, v, b.commit, b.image, time.Since(t0).Round(time.Second))
	builds[key] = b
	return b
}

// testDisk makes the AOFTEST disk: run.sh and, if repo is set, a copy of
// the repository for the guest to pull from.
func testDisk(t *testing.T, name, script, repo string) string {
	t.Helper()
	extra := map[string]string{}
	if repo != "" {
		extra["repo"] = repo
	}
	return testDiskWith(t, name, script, extra)
}

// testDiskWith makes the AOFTEST disk with run.sh and copies of the
// given files or directories (name on the disk → path).
func testDiskWith(t *testing.T, name, script string, extra map[string]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "content")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "run.sh"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	size := "64M"
	for dst, src := range extra {
		if o, err := exec.Command("cp", "-a", src, filepath.Join(dir, dst)).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v %s", err, o)
		}
		size = "2G"
	}
	img := filepath.Join(t.TempDir(), name+".img")
	if o, err := exec.Command("mkfs.ext4", "-q", "-F", "-L", "AOFTEST", "-d", dir, img, size).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v %s", err, o)
	}
	return img
}

// logPath is where a scenario's console log is written and kept.
func logPath(t *testing.T, name string) string {
	dir := os.Getenv("AOF_QEMU_LOGS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "aof-qemu-logs")
	}
	os.MkdirAll(dir, 0o755)
	return filepath.Join(dir, fmt.Sprintf("%s-%s.log", name, time.Now().Format("20060102-150405")))
}

// guest is one QEMU run of an image with a test disk, through reboots,
// until the script says AOF-SCENARIO-DONE (or a boot fails).
func guest(t *testing.T, name, image, disk, probeKernel string, boots int, per time.Duration) (*Result, error) {
	t.Helper()
	log := logPath(t, name)
	var markers []string
	for i := 0; i < boots; i++ {
		markers = append(markers, fmt.Sprintf("AOF-PHASE=%d", i), fmt.Sprintf("AOF-P%d-END", i))
	}
	res, err := VM{
		Firmware: ovmfCode, FirmwareVars: ovmfVars, Disks: []string{image, disk}, Snapshot: true,
		ProbeKernel: probeKernel, MemoryMB: 1536, Timeout: per * time.Duration(boots), Log: log,
		AllowReboot: true, Markers: markers, Done: "AOF-SCENARIO-DONE", Grace: 90 * time.Second,
		FailMarkers: []string{
			"@image_start: Error", // systemd-boot could not start the entry (e.g. "Error preparing initrd: Not found")
			"Shell> ",             // the firmware found nothing to boot and started the UEFI shell
			"Kernel panic - not syncing", "initramfs: emergency", "AOF-AGENT-NO-TEST-DISK", "AOF-UNEXPECTED-PHASE",
		},
	}.Run()
	if err != nil {
		return nil, err
	}
	// Boot times: from the start (or the previous phase's end) to each
	// phase's start.
	var prev time.Duration
	var times []string
	for i := 0; i < boots; i++ {
		at, ok := res.At[fmt.Sprintf("AOF-PHASE=%d", i)]
		if !ok {
			break
		}
		times = append(times, fmt.Sprintf("boot %d: %v", i+1, (at-prev).Round(time.Second)))
		if end, ok := res.At[fmt.Sprintf("AOF-P%d-END", i)]; ok {
			prev = end
		}
	}
	t.Logf("%s (%s, %d vCPU): %s; total %v; console log %s", name, res.Accel, res.CPUs, strings.Join(times, ", "), res.Took.Round(time.Second), log)
	switch {
	case res.Failed != "":
		return res, fmt.Errorf("%s: the boot failed (%q on the console); serial log: %s\n%s", name, res.Failed, log, tail(res.Console, 40))
	case res.TimedOut:
		return res, fmt.Errorf("%s: no AOF-SCENARIO-DONE within %v; serial log: %s\n%s", name, per*time.Duration(boots), log, tail(res.Console, 40))
	case res.ExitErr != nil:
		return res, fmt.Errorf("%s: QEMU: %v; serial log: %s", name, res.ExitErr, log)
	}
	return res, nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// facts reads AOF-P<n>-KEY=value lines.
type facts map[string]string

func parseFacts(console string) facts {
	f := facts{}
	re := regexp.MustCompile(`AOF-(P\d+-[A-Z_]+)=(.*)`)
	for _, l := range strings.Split(console, "\n") {
		if m := re.FindStringSubmatch(strings.TrimRight(l, "\r")); m != nil {
			f[m[1]] = strings.TrimSpace(m[2])
		}
	}
	return f
}

func (f facts) expect(t *testing.T, key, want string) {
	t.Helper()
	if got := f[key]; got != want {
		t.Errorf("%s = %q, want %q", key, got, want)
	}
}

// checkHealthy checks what every phase of every scenario must show.
func (f facts) checkHealthy(t *testing.T, phase int, commit string) {
	t.Helper()
	p := fmt.Sprintf("P%d-", phase)
	f.expect(t, p+"BOOTED", commit)
	f.expect(t, p+"OSTREE_BOOTED", "yes")
	f.expect(t, p+"USR_RO", "yes")
	f.expect(t, p+"ETC_RW", "yes")
	f.expect(t, p+"FAILED", "")
	f.expect(t, p+"BOOT_MOUNT", "ext4")
	if n := f[p+"DPKG_II"]; n == "" || n == "0" {
		t.Errorf("%sDPKG_II = %q: dpkg -l lists nothing", p, n)
	}
}
