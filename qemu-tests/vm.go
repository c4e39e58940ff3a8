package qemutests

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// VM is an x86_64 QEMU machine (q35, no network, serial console on
// stdio) booted directly from a kernel and an initramfs.
type VM struct {
	// Accel is the QEMU accelerator; "" means KVM when KVMUsable says so,
	// else TCG.
	Accel string
	// CPUs is the number of virtual CPUs; 0 means 2 under KVM and 1 under
	// TCG. Two vCPUs under multi-threaded TCG (QEMU 7.2) failed in CI: an
	// "Oops: int3" while the kernel patched its own text (the other vCPU
	// ran the stale breakpoint) and a machine that never came back from a
	// guest reboot. One vCPU has neither; boots take about a fifth
	// longer (make qemu-test: 17 min instead of 15 on two cores).
	CPUs           int
	Kernel, Initrd string
	Append         string // kernel command line
	// Firmware boots through UEFI firmware instead of -kernel: the code
	// image (e.g. OVMF_CODE_4M.fd, read-only) and a variables template
	// that is copied for the run, so the template is never changed.
	Firmware, FirmwareVars string
	// Snapshot attaches the disks copy-on-write: the guest's writes go to
	// temporary files and the images under test are never modified.
	Snapshot bool
	// DiskFormat is the format of Disks (default raw).
	DiskFormat string
	// ProbeKernel is a kernel for the KVM probe when Kernel is empty.
	ProbeKernel string
	// AllowReboot lets the guest reboot within the run (QEMU otherwise
	// exits on a reboot); disks attached with Snapshot keep the guest's
	// writes across those reboots.
	AllowReboot bool
	// FailMarkers end the run at once when seen: the boot has failed and
	// waiting for the timeout would only delay the report.
	FailMarkers []string
	Disks       []string // raw images, attached as virtio disks in order
	MemoryMB    int      // default 1024
	// Log receives a copy of the console ("" for none).
	Log string
	// Timeout bounds the whole run.
	Timeout time.Duration
	// Markers are console strings whose first sighting is timed in
	// Result.At ("reboot: Power down" always is).
	Markers []string
	// StopAt kills QEMU as soon as a console line contains it.
	StopAt string
	// Done is a marker after which the guest powers off by itself; QEMU is
	// killed Grace (default one minute) after it if it has not.
	Done  string
	Grace time.Duration
}

// Result is what a run showed.
type Result struct {
	Accel      string
	CPUs       int
	Console    string
	Took       time.Duration
	At         map[string]time.Duration // first sighting of each marker
	PoweredOff bool                     // the guest powered off (-no-reboot)
	TimedOut   bool                     // Timeout passed first
	ExitErr    error                    // QEMU's exit status, if not zero
	Failed     string                   // the FailMarker that ended the run
}

// powerDown is what Linux prints when it powers the machine off.
const powerDown = "reboot: Power down"

// Run boots the VM and returns when QEMU exits, StopAt is seen, the Done
// grace passes or the timeout does.
func (vm VM) Run() (*Result, error) {
	accel := vm.Accel
	if accel == "" {
		accel = "tcg,thread=multi"
		probe := vm.Kernel
		if probe == "" {
			probe = vm.ProbeKernel
		}
		if ok, _ := KVMUsable(probe); probe != "" && ok {
			accel = "kvm"
		}
	}
	cpus := vm.CPUs
	if cpus == 0 {
		cpus = 1
		if accel == "kvm" {
			cpus = 2
		}
	}
	mem := vm.MemoryMB
	if mem == 0 {
		mem = 1024
	}
	grace := vm.Grace
	if grace == 0 {
		grace = time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), vm.Timeout)
	defer cancel()
	args := []string{"-accel", accel, "-machine", "q35", "-cpu", "max", "-m", fmt.Sprint(mem), "-smp", fmt.Sprint(cpus),
		"-nographic", "-nic", "none"}
	if !vm.AllowReboot {
		args = append(args, "-no-reboot")
	}
	if vm.Kernel != "" {
		args = append(args, "-kernel", vm.Kernel, "-initrd", vm.Initrd, "-append", vm.Append)
	}
	if vm.Firmware != "" {
		vars, err := os.CreateTemp("", "aof-efivars-*.fd")
		if err != nil {
			return nil, err
		}
		defer os.Remove(vars.Name())
		tmpl, err := os.ReadFile(vm.FirmwareVars)
		if err == nil {
			_, err = vars.Write(tmpl)
		}
		vars.Close()
		if err != nil {
			return nil, fmt.Errorf("firmware variables: %w", err)
		}
		args = append(args, "-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+vm.Firmware,
			"-drive", "if=pflash,format=raw,unit=1,file="+vars.Name())
	}
	format := vm.DiskFormat
	if format == "" {
		format = "raw"
	}
	for _, d := range vm.Disks {
		drive := "file=" + d + ",if=virtio,format=" + format
		if vm.Snapshot {
			drive += ",snapshot=on"
		}
		args = append(args, "-drive", drive)
	}
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	cmd.WaitDelay = 10 * time.Second
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	var logf io.Writer = io.Discard
	if vm.Log != "" {
		f, err := os.Create(vm.Log)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		logf = f
	}
	res := &Result{Accel: accel, CPUs: cpus, At: map[string]time.Duration{}}
	markers := append([]string{powerDown}, vm.Markers...)
	if vm.Done != "" {
		markers = append(markers, vm.Done)
	}
	if vm.StopAt != "" {
		markers = append(markers, vm.StopAt)
	}
	markers = append(markers, vm.FailMarkers...)
	failing := map[string]bool{}
	for _, m := range vm.FailMarkers {
		failing[m] = true
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("qemu-system-x86_64: %w", err)
	}
	var (
		mu  sync.Mutex
		out strings.Builder
	)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
		for sc.Scan() {
			line := strings.TrimRight(sc.Text(), "\r")
			fmt.Fprintln(logf, line)
			mu.Lock()
			out.WriteString(line + "\n")
			for _, m := range markers {
				if _, seen := res.At[m]; !seen && strings.Contains(line, m) {
					res.At[m] = time.Since(start)
					if failing[m] {
						res.Failed = m
						cancel()
					}
					switch m {
					case vm.StopAt:
						cancel()
					case vm.Done:
						time.AfterFunc(grace, cancel)
					}
				}
			}
			mu.Unlock()
		}
		io.Copy(io.Discard, pr)
	}()
	err := cmd.Wait()
	pw.Close()
	<-readDone
	res.Took = time.Since(start)
	res.Console = out.String()
	_, res.PoweredOff = res.At[powerDown]
	_, stopped := res.At[vm.StopAt]
	_, done := res.At[vm.Done]
	res.TimedOut = ctx.Err() == context.DeadlineExceeded && !(vm.StopAt != "" && stopped) && !(vm.Done != "" && done)
	if err != nil && ctx.Err() == nil && res.Failed == "" {
		res.ExitErr = err
	}
	return res, nil
}

var kvmOnce struct {
	sync.Once
	ok  bool
	why string
}

// KVMUsable reports whether KVM answers: a kernel without a root file
// system must reach its panic within seconds. The probe runs once per
// process; why says what it saw.
func KVMUsable(kernel string) (ok bool, why string) {
	kvmOnce.Do(func() {
		if _, err := os.Stat("/dev/kvm"); err != nil {
			kvmOnce.why = "no /dev/kvm"
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "qemu-system-x86_64", "-accel", "kvm", "-machine", "q35", "-m", "256",
			"-nographic", "-no-reboot", "-nic", "none", "-kernel", kernel,
			"-append", "console=ttyS0 panic=-1 root=/dev/nonexistent")
		cmd.WaitDelay = 5 * time.Second
		out, _ := cmd.CombinedOutput()
		kvmOnce.ok = ctx.Err() == nil && bytes.Contains(out, []byte("Kernel panic"))
		if kvmOnce.ok {
			kvmOnce.why = "KVM probe answered"
		} else {
			kvmOnce.why = "KVM probe did not answer within 8 s: using TCG"
		}
	})
	return kvmOnce.ok, kvmOnce.why
}

// RemoveSysroot deletes a directory holding an OSTree sysroot (at its top
// or one level down): `ostree admin deploy` makes deployment roots
// immutable (chattr +i), which os.RemoveAll cannot undo.
func RemoveSysroot(dir string) error {
	var deploys []string
	for _, pat := range []string{"ostree/deploy/*/deploy/*.0", "*/ostree/deploy/*/deploy/*.0"} {
		m, _ := filepath.Glob(filepath.Join(dir, pat))
		deploys = append(deploys, m...)
	}
	for _, d := range deploys {
		if out, err := exec.Command("chattr", "-i", d).CombinedOutput(); err != nil {
			return fmt.Errorf("chattr -i %s: %v %s", d, err, out)
		}
	}
	return os.RemoveAll(dir)
}

// TimeoutFromEnv is AOF_QEMU_TIMEOUT (seconds) when set to a positive
// number, else def: slow machines give boots more time without a code
// change.
func TimeoutFromEnv(def time.Duration) time.Duration {
	var n int
	if _, err := fmt.Sscan(os.Getenv("AOF_QEMU_TIMEOUT"), &n); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	return def
}
