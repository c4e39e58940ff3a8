package builder

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// The configure sandbox runs shell code as root with an image tree as its
// root directory. Three processes take part, all of them this program
// started again through /proc/self/exe (the re-exec pattern: Go cannot run
// code between fork and exec):
//
//   - the build process, running as any user;
//   - the worker, which checks the tree out, runs the chroot stage, reads
//     the result back into the repository and removes the tree. As root it
//     is the build process itself. As an ordinary user it is a child in a
//     new user namespace whose ids map to the user's subordinate range
//     (/etc/subuid, /etc/subgid, set up with newuidmap/newgidmap), so the
//     files it checks out carry the image's owners as the kernel sees them
//     inside the namespace, and nothing is chowned on the host;
//   - the chroot stage: PID 1 of new PID, mount, UTS, IPC and network
//     namespaces. It mounts /proc, a minimal /dev (bind mounts of the
//     host's null, zero, full, random, urandom, tty), tmpfs on /run and
//     /tmp, chroots and execs /bin/sh. When it exits, its mounts and any
//     process a script left behind are gone with the namespaces.
const (
	stageEnv = "AOF_SANDBOX_STAGE"
	jobEnv   = "AOF_SANDBOX_JOB"
	rootEnv  = "AOF_SANDBOX_ROOT"
	hostEnv  = "AOF_SANDBOX_HOSTNAME"
)

func init() {
	switch os.Getenv(stageEnv) {
	case "":
		return
	case "userns":
		os.Exit(usernsStage())
	case "worker":
		os.Exit(workerStage())
	case "chroot":
		os.Exit(chrootStage())
	default:
		fmt.Fprintf(os.Stderr, "unknown %s=%q\n", stageEnv, os.Getenv(stageEnv))
		os.Exit(2)
	}
}

// idRange is one line of /etc/subuid or /etc/subgid.
type idRange struct{ Start, Count uint32 }

// sandboxIDs are the subordinate ids an unprivileged build maps to ids
// 1..Count inside its user namespace (id 0 is the user itself).
type sandboxIDs struct {
	UID, GID       int
	SubUID, SubGID idRange
}

// minSubIDs is what an image needs: Debian's system and dynamic ids, and
// nobody (65534).
const minSubIDs = 65536

// SandboxCheck reports whether the configure sandbox can run here, and
// if not, what is missing, in words a user can act on.
func SandboxCheck() error {
	if os.Geteuid() == 0 {
		return nil
	}
	_, err := lookupSubIDs()
	return err
}

func lookupSubIDs() (*sandboxIDs, error) {
	u, err := user.Current()
	if err != nil {
		return nil, fmt.Errorf("configure sandbox: cannot look up the current user: %w", err)
	}
	ids := &sandboxIDs{UID: os.Getuid(), GID: os.Getgid()}
	var missing []string
	for _, tool := range []string{"newuidmap", "newgidmap"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool+" is not installed (Debian package uidmap)")
		}
	}
	for _, f := range []struct {
		file string
		dst  *idRange
	}{{"/etc/subuid", &ids.SubUID}, {"/etc/subgid", &ids.SubGID}} {
		r, err := findSubIDs(f.file, u.Username, u.Uid)
		if err != nil {
			missing = append(missing, err.Error())
			continue
		}
		*f.dst = r
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("configure sandbox: running as %s (uid %s) without root, and the user namespace it needs is not available:\n  - %s\n"+
			"Either run as root, or give the user a range of at least %d subordinate ids, e.g.\n"+
			"  usermod --add-subuids 100000-165535 --add-subgids 100000-165535 %s\nand install the uidmap package",
			u.Username, u.Uid, strings.Join(missing, "\n  - "), minSubIDs, u.Username)
	}
	return ids, nil
}

func findSubIDs(file, name, uid string) (idRange, error) {
	f, err := os.Open(file)
	if err != nil {
		return idRange{}, fmt.Errorf("%s: %v", file, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.Split(strings.TrimSpace(sc.Text()), ":")
		if len(parts) != 3 || (parts[0] != name && parts[0] != uid) {
			continue
		}
		start, err1 := strconv.ParseUint(parts[1], 10, 32)
		count, err2 := strconv.ParseUint(parts[2], 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		if count < minSubIDs {
			return idRange{}, fmt.Errorf("%s: the range for %s has %d ids, fewer than %d", file, name, count, minSubIDs)
		}
		return idRange{uint32(start), minSubIDs}, nil
	}
	return idRange{}, fmt.Errorf("%s has no range for %s", file, name)
}

// runJob runs a sandbox job: in this process as root, otherwise in a
// worker in a new user namespace. Output of the scripts goes to log.
func runJob(ctx context.Context, job *sandboxJob, log io.Writer) (*sandboxResult, error) {
	if os.Geteuid() == 0 {
		return job.run(ctx, log)
	}
	ids, err := lookupSubIDs()
	if err != nil {
		return nil, err
	}
	data, err := json.Marshal(job)
	if err != nil {
		return nil, err
	}
	rd, wr, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "/proc/self/exe")
	cmd.Env = append(os.Environ(), stageEnv+"=userns", jobEnv+"="+string(data))
	cmd.Stdin = nil
	cmd.Stdout = &out
	cmd.Stderr = log
	cmd.ExtraFiles = []*os.File{rd}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		rd.Close()
		wr.Close()
		return nil, fmt.Errorf("configure sandbox: cannot create a user namespace: %w", err)
	}
	rd.Close()
	pid := strconv.Itoa(cmd.Process.Pid)
	mapErr := func() error {
		for _, m := range []struct {
			tool   string
			own    int
			subids idRange
		}{{"newuidmap", ids.UID, ids.SubUID}, {"newgidmap", ids.GID, ids.SubGID}} {
			args := []string{pid, "0", strconv.Itoa(m.own), "1", "1", strconv.FormatUint(uint64(m.subids.Start), 10), strconv.FormatUint(uint64(m.subids.Count), 10)}
			if b, err := exec.Command(m.tool, args...).CombinedOutput(); err != nil {
				return fmt.Errorf("configure sandbox: %s %s: %v: %s", m.tool, strings.Join(args, " "), err, strings.TrimSpace(string(b)))
			}
		}
		return nil
	}()
	if mapErr == nil {
		_, mapErr = wr.Write([]byte{1})
	}
	wr.Close()
	waitErr := cmd.Wait()
	if mapErr != nil {
		return nil, mapErr
	}
	var res sandboxResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil || (waitErr != nil && res.Error == "") {
		if waitErr != nil {
			return nil, fmt.Errorf("configure sandbox: worker: %w", waitErr)
		}
		return nil, fmt.Errorf("configure sandbox: worker gave no result: %v", err)
	}
	if res.Error != "" {
		return nil, errors.New(res.Error)
	}
	return &res, nil
}

// usernsStage waits until the parent has written the id maps, then
// executes the worker afresh: only an exec as uid 0 of the namespace
// grants the capabilities there.
func usernsStage() int {
	f := os.NewFile(3, "sync")
	var b [1]byte
	if n, _ := f.Read(b[:]); n != 1 {
		return 1 // the parent failed to map ids and said so
	}
	f.Close()
	env := replaceEnv(os.Environ(), stageEnv, "worker")
	err := syscall.Exec("/proc/self/exe", []string{os.Args[0]}, env)
	fmt.Fprintf(os.Stderr, "configure sandbox: exec worker: %v\n", err)
	return 1
}

func workerStage() int {
	var job sandboxJob
	if err := json.Unmarshal([]byte(os.Getenv(jobEnv)), &job); err != nil {
		fmt.Fprintf(os.Stderr, "configure sandbox: bad job: %v\n", err)
		return 2
	}
	res, err := job.run(context.Background(), os.Stderr)
	if err != nil {
		res = &sandboxResult{Error: err.Error()}
	}
	json.NewEncoder(os.Stdout).Encode(res)
	if err != nil {
		return 1
	}
	return 0
}

func replaceEnv(env []string, key, value string) []string {
	out := env[:0:0]
	for _, e := range env {
		if !strings.HasPrefix(e, key+"=") {
			out = append(out, e)
		}
	}
	return append(out, key+"="+value)
}

// runChroot runs script with /bin/sh -e as root in a chroot of root,
// inside fresh namespaces; the script's output goes to log.
func runChroot(ctx context.Context, root, hostname, script string, env []string, log io.Writer) error {
	cmd := exec.CommandContext(ctx, "/proc/self/exe")
	cmd.Env = append([]string{stageEnv + "=chroot", rootEnv + "=" + root, hostEnv + "=" + hostname}, env...)
	cmd.Stdin = strings.NewReader(script)
	cmd.Stdout = log
	cmd.Stderr = log
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC | syscall.CLONE_NEWNET,
		Pdeathsig:  syscall.SIGKILL,
	}
	return cmd.Run()
}

// chrootStage is PID 1 of the sandbox's namespaces: it prepares the
// mounts, then becomes the shell that runs the script read from stdin.
func chrootStage() int {
	root := os.Getenv(rootEnv)
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "configure sandbox: "+format+"\n", args...)
		return 1
	}
	if root == "" {
		return fail("no root directory")
	}
	// Nothing mounted here may reach the host's mount namespace.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fail("make mounts private: %v", err)
	}
	if h := os.Getenv(hostEnv); h != "" {
		if err := unix.Sethostname([]byte(h)); err != nil {
			return fail("sethostname: %v", err)
		}
	}
	must := func(err error, what string) bool {
		if err != nil {
			fmt.Fprintf(os.Stderr, "configure sandbox: %s: %v\n", what, err)
			return false
		}
		return true
	}
	mkdir := func(p string, mode os.FileMode) error {
		fi, err := os.Lstat(p)
		if err == nil {
			if fi.IsDir() {
				return nil
			}
			return fmt.Errorf("%s exists and is not a directory", p)
		}
		return os.Mkdir(p, mode)
	}
	for _, m := range []struct {
		dir, fstype, opts string
		mode              os.FileMode
		flags             uintptr
	}{
		{"proc", "proc", "", 0o555, unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{"dev", "tmpfs", "mode=0755,size=1m", 0o755, unix.MS_NOSUID | unix.MS_NOEXEC},
		{"run", "tmpfs", "mode=0755", 0o755, unix.MS_NOSUID | unix.MS_NODEV},
		{"tmp", "tmpfs", "mode=1777", 0o1777, unix.MS_NOSUID | unix.MS_NODEV},
	} {
		p := filepath.Join(root, m.dir)
		if !must(mkdir(p, m.mode), "mkdir "+p) || !must(unix.Mount(m.fstype, p, m.fstype, m.flags, m.opts), "mount "+m.fstype+" on "+p) {
			return 1
		}
	}
	dev := filepath.Join(root, "dev")
	for _, n := range []string{"null", "zero", "full", "random", "urandom", "tty"} {
		p := filepath.Join(dev, n)
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o666)
		if !must(err, "create "+p) {
			return 1
		}
		f.Close()
		if !must(unix.Mount("/dev/"+n, p, "", unix.MS_BIND, ""), "bind /dev/"+n) {
			return 1
		}
	}
	for name, target := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		if !must(os.Symlink(target, filepath.Join(dev, name)), "symlink /dev/"+name) {
			return 1
		}
	}
	for _, d := range []string{"pts", "shm"} {
		if !must(os.Mkdir(filepath.Join(dev, d), 0o755), "mkdir /dev/"+d) {
			return 1
		}
	}
	// The script goes to a file on the sandbox's /run: maintainer scripts
	// must not find it on their standard input.
	script, err := io.ReadAll(os.Stdin)
	if !must(err, "read script") || !must(os.WriteFile(filepath.Join(root, "run", "aof-sandbox.sh"), script, 0o700), "write script") {
		return 1
	}
	null, err := os.Open("/dev/null")
	if !must(err, "open /dev/null") || !must(unix.Dup2(int(null.Fd()), 0), "stdin") {
		return 1
	}
	if !must(unix.Chroot(root), "chroot "+root) || !must(os.Chdir("/"), "chdir /") {
		return 1
	}
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "AOF_SANDBOX_") {
			env = append(env, e)
		}
	}
	err = syscall.Exec("/bin/sh", []string{"sh", "-e", "/run/aof-sandbox.sh"}, env)
	return fail("exec /bin/sh in the image: %v (is the shell package configured?)", err)
}
