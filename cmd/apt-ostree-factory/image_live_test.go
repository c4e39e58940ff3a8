package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/apt-ostree/apt-ostree-factory/diskimage"
)

// checkImage runs the checkers of issue #5's acceptance on a raw image of
// the default recipe and its qcow2 twin: qemu-img check and compare,
// sgdisk, fsck.fat, e2fsck, sparseness; then it mounts
// the root and boot filesystems (loop devices, in the test only) and asks
// Debian's ostree for the sysroot's status and the repository's fsck, and
// compares owners and modes of sample files with the commit.
func checkImage(t *testing.T, image, repo, commit string) {
	t.Helper()
	runOK := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if o := runOK("sgdisk", "-v", image); !strings.Contains(o, "No problems found") {
		t.Errorf("sgdisk -v:\n%s", o)
	}
	st, err := os.Stat(image)
	if err != nil {
		t.Fatal(err)
	}
	alloc := st.Sys().(*syscall.Stat_t).Blocks * 512
	t.Logf("%s: %d MiB apparent, %d MiB allocated", image, st.Size()>>20, alloc>>20)
	if alloc > st.Size()/2 {
		t.Errorf("the image is not sparse: %d of %d bytes allocated", alloc, st.Size())
	}
	// The qcow2 twin of the raw image.
	if q := strings.TrimSuffix(image, ".raw") + ".qcow2"; true {
		if o := runOK("qemu-img", "check", q); !strings.Contains(o, "No errors were found") {
			t.Errorf("qemu-img check %s:\n%s", q, o)
		}
		runOK("qemu-img", "compare", "-f", "raw", "-F", "qcow2", image, q)
	}
	parts, err := diskimage.ReadPartitions(image)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for _, p := range parts {
		f := filepath.Join(t.TempDir(), p.Role+".img")
		if err := diskimage.ExtractPartition(image, p, f); err != nil {
			t.Fatal(err)
		}
		files[p.Role] = f
		switch p.Role {
		case "esp":
			o := runOK("fsck.fat", "-n", f)
			if strings.Count(strings.TrimSpace(o), "\n") != 1 {
				t.Errorf("fsck.fat -n on the ESP printed more than the version and summary:\n%s", o)
			}
		case "boot", "root":
			runOK("e2fsck", "-fn", f)
		default:
			t.Errorf("unexpected partition %+v", p)
		}
	}
	if len(files) != 3 {
		t.Fatalf("partitions: %+v", parts)
	}

	mnt := filepath.Join(t.TempDir(), "sysroot")
	os.MkdirAll(mnt, 0o755)
	mount := func(img, at string) {
		if o, err := exec.Command("timeout", "30", "mount", "-o", "loop,ro", img, at).CombinedOutput(); err != nil {
			t.Fatalf("mount %s: %v %s", img, err, o)
		}
		t.Cleanup(func() { exec.Command("umount", at).Run() })
	}
	mount(files["root"], mnt)
	mount(files["boot"], filepath.Join(mnt, "boot"))
	status := runOK("ostree", "admin", "status", "--sysroot="+mnt)
	t.Logf("ostree admin status --sysroot:\n%s", status)
	if !regexp.MustCompile(`(?m)^  debian ` + commit + `\.0\b`).MatchString(status) {
		t.Errorf("admin status does not list the deployment of %s first", commit)
	}
	runOK("ostree", "fsck", "--repo="+filepath.Join(mnt, "ostree", "repo"))

	dep := filepath.Join(mnt, "ostree", "deploy", "debian", "deploy", commit+".0")
	for _, p := range []string{"/usr/bin/su", "/usr/bin/passwd", "/usr/sbin/unix_chkpwd", "/usr/etc/shadow", "/usr/bin/bash"} {
		ls := strings.Fields(ostreeCmd(t, "ls", "--repo="+repo, commit, p))
		if len(ls) < 4 {
			t.Errorf("ostree ls %s: %v", p, ls)
			continue
		}
		want := fmt.Sprintf("%s %s:%s", ls[0], ls[1], ls[2])
		fi, err := os.Lstat(dep + p)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		s := fi.Sys().(*syscall.Stat_t)
		got := fmt.Sprintf("-%05o %d:%d", s.Mode&0o7777, s.Uid, s.Gid)
		if got != want {
			t.Errorf("%s in the image: %s, in the commit: %s", p, got, want)
		}
	}
	// /etc is a copy of /usr/etc plus the image's fstab.
	if fi, err := os.Stat(dep + "/etc/shadow"); err != nil || fi.Mode().Perm() != 0o640 || fi.Sys().(*syscall.Stat_t).Gid != 42 {
		t.Errorf("/etc/shadow in the deployment: %v %v", fi, err)
	}
	if b, err := os.ReadFile(dep + "/etc/fstab"); err != nil || !bytes.Contains(b, []byte(" /boot ext4 ")) {
		t.Errorf("fstab: %q %v", b, err)
	}
}
