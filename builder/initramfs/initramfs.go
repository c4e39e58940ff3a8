// Package initramfs builds, in pure Go and without root, the initramfs that
// boots a Debian OSTree deployment: a gzip-compressed newc cpio made only
// from files of the target image tree (busybox, ostree-prepare-root, their
// shared libraries, kernel modules) plus a generated /init shell script.
//
// # How ostree-prepare-root is used (facts from the ostree sources)
//
// Read in ostreedev/ostree at v2022.7 (Debian bookworm) and v2025.2 (Debian
// trixie): src/switchroot/ostree-prepare-root.c, src/switchroot/ostree-mount-util.h,
// src/switchroot/ostree-system-generator.c, src/libostree/ostree-impl-system-generator.c
// (2025.2), src/libotcore/otcore-prepare-root.c and otcore.h (2025.2),
// src/boot/ostree-prepare-root.service and src/boot/dracut/module-setup.sh.
//
//   - Invocation: "ostree-prepare-root /sysroot", not as PID 1 (as PID 1 it
//     assumes there is no initramfs, uses "/" and execs /sbin/init itself; in
//     2025.2 that mode moved to a separate static binary). The argument is the
//     mount point of the physical root file system, already mounted.
//   - Input: the ostree= argument of /proc/cmdline, so /proc must be mounted
//     (2022.7 mounts it itself if /proc/cmdline is missing, 2025.2 fails);
//     2025.2 also honours androidboot.slot_suffix. ostree= names the
//     /ostree/boot.N/... symlink, which must resolve under the argument.
//     It reads <sysroot>/ostree/repo/config for [sysroot] readonly=true.
//     Neither version reads /dev or /sys.
//   - 2025.2 reads prepare-root.conf from the initramfs only
//     (/usr/lib/ostree/prepare-root.conf, then /etc/ostree/prepare-root.conf,
//     the later file replacing the earlier), never from the deployment. With no
//     file the composefs default is "no" (also in current upstream), so a
//     commit without composefs data boots; Debian's 2025.2 is even built without
//     composefs ("enabled=yes" fails with "support is not compiled in";
//     "maybe" falls back to the bind mount when the deployment has no
//     .ostree.cfs). Like dracut's 98ostree module, Build copies the target's
//     prepare-root.conf files (and /etc/ostree/initramfs-root-binding.key) when
//     present and writes none otherwise. 2022.7 has no configuration file.
//   - What it does: makes "/" MS_PRIVATE recursively; bind-mounts the
//     deployment (2022.7: onto itself; 2025.2: onto a new /sysroot.tmp in the
//     initramfs, so the initramfs root must be writable); bind-mounts
//     <sysroot>/boot onto the deployment's /boot when /boot/loader is a symlink
//     on the physical root; makes /usr a read-only bind mount (or the overlay
//     of "ostree admin unlock"); with sysroot.readonly adds writable /etc and
//     stateroot /var bind mounts. /var itself is NOT mounted when ostree is
//     built with systemd (Debian): ostree-system-generator writes var.mount in
//     the real root (unless /run/ostree/initramfs-mount-var exists). Finally it
//     MS_MOVEs the physical root to <deployment>/sysroot and the deployment onto
//     the argument, so afterwards /sysroot is the deployment and
//     /sysroot/sysroot the physical root, and exits 0.
//   - /run: 2022.7 creates /run/ostree-booted (ignoring errors). 2025.2 creates
//     /run/ostree and /run/ostree/.private (fatal if that fails or they exist)
//     and writes /run/ostree-booted (a GVariant a{sv}; fatal on error), so /run
//     must be a fresh writable tmpfs. In the real root, 2025.2's
//     ostree-system-generator does nothing unless /run/ostree exists: without
//     carrying /run over, var.mount and ostree-remount are not set up.
//   - Afterwards the init must switch root into the argument. busybox
//     switch_root does not move mounts, so /init moves /run, /sys, /dev and
//     /proc into /sysroot first (mount -o move), keeping /run/ostree-booted.
//     systemd then finds /run already mounted and leaves it alone.
//
// # The /init script
//
// See init.sh: it mounts /proc, /sys, devtmpfs and a tmpfs /run, parses
// root=, rootfstype=, rootflags=, ro/rw, rootwait[=N], ostree=, init=,
// rd.break[=premount|preostree|preswitch], aof.debug, insmods the modules in
// the computed order, waits for the root device (LABEL=, UUID= with busybox
// findfs/blkid; PARTUUID= by reading GPT/MBR tables with dd and od;
// PARTLABEL= from sysfs; /dev paths; MAJ:MIN), mounts it on /sysroot, runs
// ostree-prepare-root, moves the API mounts and execs switch_root. Every
// failure prints a message on the console and starts an emergency shell that
// is restarted when it exits, so PID 1 never dies.
package initramfs

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
)

//go:embed init.sh
var initScript []byte

// Options says what to build.
type Options struct {
	// Root is the target tree: a configured Debian root file system on disk.
	Root string
	// KernelVersion selects Root/usr/lib/modules/<KernelVersion>. Empty
	// means the only directory there (an error if there are several); no
	// directory at all means no modules.
	KernelVersion string
	// Modules are loaded besides DefaultModules (names or aliases; '-' and
	// '_' are equivalent). Each must be a module or built into the kernel.
	Modules []string
	// MTime is the modification time of every entry (SOURCE_DATE_EPOCH
	// style; 0 by default).
	MTime int64
	// RootWait is how long /init waits for the root device, in seconds
	// (default 30; rootwait / rootwait=N on the command line override it).
	RootWait int
}

// Result describes what was built.
type Result struct {
	Size          int64    // bytes written (compressed)
	Files         int      // cpio entries, "." included, trailer excluded
	KernelVersion string   // modules directory used ("" when none)
	Modules       []string // module names, in load order
	Builtin       []string // requested modules that are built into the kernel
	Missing       []string // requested modules neither found nor built in
}

// Applets of busybox get a symlink in /usr/bin (or /usr/sbin) when the target's
// busybox has them. The first group is what /init needs.
var (
	requiredApplets = []string{
		"sh", "mount", "mkdir", "insmod", "switch_root", "sleep", "cat",
		"grep", "tr", "dd", "od", "readlink", "basename", "findfs", "blkid",
		"uname", "wc",
	}
	optionalApplets = []string{
		"setsid", "cttyhack", "umount", "ls", "ln", "rm", "cp", "mv", "dmesg",
		"ps", "kill", "lsmod", "modprobe", "rmmod", "reboot", "poweroff",
		"halt", "vi", "less", "head", "tail", "sed", "awk", "chroot", "stat",
		"df", "du", "find", "env", "printf", "test", "[", "true", "false",
		"echo", "hexdump", "losetup", "sync", "ip", "hostname", "clear",
		"blockdev", "fsck", "dirname", "realpath", "uptime", "free", "lsscsi",
	}
	sbinApplets = map[string]bool{
		"modprobe": true, "insmod": true, "rmmod": true, "lsmod": true,
		"switch_root": true, "reboot": true, "poweroff": true, "halt": true,
		"findfs": true, "blkid": true, "losetup": true, "chroot": true,
		"blockdev": true, "fsck": true, "ip": true,
	}
)

// Build writes the initramfs for opts to w.
func Build(w io.Writer, opts Options) (*Result, error) {
	if opts.Root == "" {
		return nil, errors.New("initramfs: Options.Root is empty")
	}
	if opts.MTime < 0 || opts.MTime > 1<<32-1 {
		return nil, fmt.Errorf("initramfs: MTime %d does not fit a newc header", opts.MTime)
	}
	rootWait := opts.RootWait
	if rootWait <= 0 {
		rootWait = 30
	}
	tfs := &targetFS{root: opts.Root}
	if !tfs.exists("") {
		return nil, fmt.Errorf("initramfs: target tree %s does not exist", opts.Root)
	}
	tr := newTree()
	res := &Result{}

	// Merged-/usr symlinks first, so that everything below lands at the
	// same canonical paths as in the target.
	for _, d := range []string{"bin", "sbin", "lib", "lib32", "lib64", "libx32"} {
		if target, ok := tfs.isSymlink(d); ok {
			if _, err := tr.addSymlink(d, target); err != nil {
				return nil, err
			}
		}
	}
	for _, d := range []string{"dev", "proc", "sys", "run", "sysroot", "tmp", "etc", "usr/bin", "usr/sbin", "usr/lib", "bin", "sbin", "lib"} {
		mode := uint64(0o755)
		if d == "tmp" {
			mode = 0o1777
		}
		if _, err := tr.mkdirAll(d, mode); err != nil {
			return nil, err
		}
	}
	if _, err := tr.addCharDev("dev/console", 0o600, 5, 1); err != nil {
		return nil, err
	}
	if _, err := tr.addCharDev("dev/null", 0o666, 1, 3); err != nil {
		return nil, err
	}

	elfs := newELFResolver(tfs, tr)

	// busybox.
	bbPath := ""
	for _, p := range []string{"usr/bin/busybox", "bin/busybox", "usr/sbin/busybox", "sbin/busybox"} {
		if r, err := tfs.resolve(p); err == nil && r.info.Mode().IsRegular() {
			bbPath = "/" + p
			break
		}
	}
	if bbPath == "" {
		return nil, errors.New("initramfs: busybox not found in the target (/usr/bin/busybox or /bin/busybox): add the `busybox` package to the image")
	}
	if err := elfs.add(bbPath); err != nil {
		return nil, fmt.Errorf("initramfs: busybox: %w", err)
	}
	bbData, err := tfs.readFile(bbPath)
	if err != nil {
		return nil, err
	}
	for _, a := range requiredApplets {
		if !hasApplet(bbData, a) {
			return nil, fmt.Errorf("initramfs: the target's busybox (%s) has no %q applet, which /init needs", bbPath, a)
		}
	}
	for _, a := range append(append([]string(nil), requiredApplets...), optionalApplets...) {
		if !hasApplet(bbData, a) {
			continue
		}
		dir := "usr/bin/"
		if sbinApplets[a] {
			dir = "usr/sbin/"
		}
		if p, _ := tr.canon(dir + a); tr.entries[p] != nil {
			continue // e.g. busybox itself lives there
		}
		if _, err := tr.addSymlink(dir+a, bbPath); err != nil {
			return nil, err
		}
	}

	// ostree-prepare-root.
	const prepareRoot = "/usr/lib/ostree/ostree-prepare-root"
	if !tfs.exists(prepareRoot) {
		return nil, fmt.Errorf("initramfs: %s not found in the target: add the `ostree-boot` package to the image", prepareRoot)
	}
	if err := elfs.add(prepareRoot); err != nil {
		return nil, fmt.Errorf("initramfs: ostree-prepare-root: %w", err)
	}
	// Like dracut's 98ostree: the configuration files and the composefs
	// signature key go into the initramfs, which is the only place 2025.2
	// reads them from. The last file wins, as in ostree.
	composefs := false
	for _, p := range []string{"usr/lib/ostree/prepare-root.conf", "etc/ostree/prepare-root.conf", "etc/ostree/initramfs-root-binding.key"} {
		if r, err := tfs.resolve(p); err == nil && r.info.Mode().IsRegular() {
			if _, err := tfs.copyInto(tr, p); err != nil {
				return nil, err
			}
			if strings.HasSuffix(p, ".conf") {
				data, err := tfs.readFile(p)
				if err != nil {
					return nil, err
				}
				composefs = composefsEnabled(data)
			}
		}
	}
	var extraModules []string
	if composefs {
		// composefs mounts an EROFS image (through a loop device on
		// older kernels) under an overlayfs.
		extraModules = []string{"erofs", "overlay", "loop"}
	}

	// os-release and initrd-release.
	osRelease := []byte("NAME=\"Debian GNU/Linux\"\nID=debian\n")
	for _, p := range []string{"etc/os-release", "usr/lib/os-release"} {
		if data, err := tfs.readFile(p); err == nil {
			if _, err := tfs.copyInto(tr, p); err != nil {
				return nil, err
			}
			osRelease = data
			break
		}
	}
	if _, err := tr.addFile("etc/initrd-release", 0o644, osRelease); err != nil {
		return nil, err
	}
	if _, err := tr.addSymlink("etc/mtab", "../proc/self/mounts"); err != nil {
		return nil, err
	}

	// Kernel modules.
	modList, err := addModules(tfs, tr, opts, extraModules, res)
	if err != nil {
		return nil, err
	}

	// /init and its configuration.
	if _, err := tr.addFile("init", 0o755, initScript); err != nil {
		return nil, err
	}
	var cfg strings.Builder
	cfg.WriteString("# generated by apt-ostree-factory builder/initramfs\n")
	fmt.Fprintf(&cfg, "AOF_KVER=%s\n", shellQuote(res.KernelVersion))
	fmt.Fprintf(&cfg, "AOF_ROOTWAIT=%d\n", rootWait)
	fmt.Fprintf(&cfg, "AOF_PREPARE_ROOT=%s\n", shellQuote(prepareRoot))
	fmt.Fprintf(&cfg, "AOF_LIBPATH=%s\n", shellQuote(elfs.libraryPath()))
	fmt.Fprintf(&cfg, "AOF_MODULES=%s\n", shellQuote("/etc/aof-initramfs/modules"))
	if _, err := tr.addFile("etc/aof-initramfs/config", 0o644, []byte(cfg.String())); err != nil {
		return nil, err
	}
	if _, err := tr.addFile("etc/aof-initramfs/modules", 0o644, modList); err != nil {
		return nil, err
	}

	recs := tr.records(opts.MTime)
	n, err := writeGzipCpio(w, recs)
	if err != nil {
		return nil, fmt.Errorf("initramfs: writing: %w", err)
	}
	res.Size = n
	res.Files = len(recs)
	return res, nil
}

// addModules copies the module closure into the tree and returns the
// contents of /etc/aof-initramfs/modules ("name path" lines in load order).
func addModules(tfs *targetFS, tr *tree, opts Options, extra []string, res *Result) ([]byte, error) {
	kver := opts.KernelVersion
	if strings.ContainsAny(kver, "/") || kver == "." || kver == ".." {
		return nil, fmt.Errorf("initramfs: bad kernel version %q", kver)
	}
	base := ""
	for _, b := range []string{"usr/lib/modules", "lib/modules"} {
		if tfs.exists(b) {
			base = b
			break
		}
	}
	if kver == "" && base != "" {
		r, err := tfs.resolve(base)
		if err != nil {
			return nil, err
		}
		ents, err := readDirNames(tfs, r.canonical)
		if err != nil {
			return nil, err
		}
		var cands []string
		for _, e := range ents {
			if tfs.exists(path.Join(base, e, "modules.dep")) {
				cands = append(cands, e)
			}
		}
		switch len(cands) {
		case 0:
		case 1:
			kver = cands[0]
		default:
			return nil, fmt.Errorf("initramfs: several kernels in /%s (%s): set Options.KernelVersion", base, strings.Join(cands, ", "))
		}
	}
	requested := append(append(append([]string(nil), DefaultModules...), extra...), opts.Modules...)
	if kver == "" {
		if len(opts.Modules) > 0 {
			return nil, fmt.Errorf("initramfs: modules %s requested, but the target has no kernel modules", strings.Join(opts.Modules, ", "))
		}
		res.Missing = append(res.Missing, DefaultModules...)
		return nil, nil
	}
	res.KernelVersion = kver
	dir := path.Join(base, kver)
	if base == "" || !tfs.exists(path.Join(dir, "modules.dep")) {
		return nil, fmt.Errorf("initramfs: no /usr/lib/modules/%s/modules.dep in the target (is the kernel package installed and depmod run?)", kver)
	}
	read := func(name string, required bool) ([]byte, error) {
		data, err := tfs.readFile(path.Join(dir, name))
		if err != nil && (required || !isNotExist(err)) {
			return nil, fmt.Errorf("initramfs: %w", err)
		}
		return data, nil
	}
	var files [5][]byte
	var err error
	for i, n := range []string{"modules.dep", "modules.builtin", "modules.builtin.modinfo", "modules.alias", "modules.softdep"} {
		if files[i], err = read(n, i == 0); err != nil {
			return nil, err
		}
	}
	idx, err := parseModIndex(files[0], files[1], files[2], files[3], files[4])
	if err != nil {
		return nil, fmt.Errorf("initramfs: /%s/%w", dir, err)
	}
	order, missing, builtin := idx.closure(requested)
	res.Modules = order
	res.Missing = missing
	res.Builtin = builtin
	var bad []string
	for _, m := range opts.Modules {
		for _, x := range missing {
			if x == m {
				bad = append(bad, m)
			}
		}
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("initramfs: modules not found for kernel %s (neither in modules.dep nor built in): %s", kver, strings.Join(bad, ", "))
	}

	outDir := path.Join("lib/modules", kver)
	if base == "usr/lib/modules" {
		outDir = path.Join("usr/lib/modules", kver)
	}
	var list strings.Builder
	for _, name := range order {
		rel := idx.paths[name]
		raw, err := tfs.readFile(path.Join(dir, rel))
		if err != nil {
			return nil, fmt.Errorf("initramfs: module %s: %w", name, err)
		}
		data, err := decompressModule(rel, raw)
		if err != nil {
			return nil, fmt.Errorf("initramfs: module %w", err)
		}
		out := path.Join(outDir, stripCompression(rel))
		cp, err := tr.addFile(out, 0o644, data)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&list, "%s %s\n", name, cp)
	}
	// Metadata for busybox modprobe (the kernel's request_module calls
	// /sbin/modprobe), restricted to the modules present.
	if _, err := tr.addFile(path.Join(outDir, "modules.dep"), 0o644, idx.filteredDep(order)); err != nil {
		return nil, err
	}
	if _, err := tr.addFile(path.Join(outDir, "modules.alias"), 0o644, idx.filteredAlias(order)); err != nil {
		return nil, err
	}
	if _, err := tr.addFile(path.Join(outDir, "modules.builtin"), 0o644, files[1]); err != nil {
		return nil, err
	}
	return []byte(list.String()), nil
}

// composefsEnabled reports whether a prepare-root.conf turns composefs on
// (any [composefs] enabled= value but a false one; ostree's default is off).
func composefsEnabled(conf []byte) bool {
	section := ""
	enabled := false
	for _, line := range strings.Split(string(conf), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		if line[0] == '[' {
			section = strings.TrimSpace(strings.Trim(line, "[]"))
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section != "composefs" || strings.TrimSpace(k) != "enabled" {
			continue
		}
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "", "no", "false", "0":
			enabled = false
		default:
			enabled = true
		}
	}
	return enabled
}

// hasApplet reports whether a busybox binary lists applet name: busybox
// keeps its applet names as one NUL-separated string.
func hasApplet(bb []byte, name string) bool {
	return bytes.Contains(bb, []byte("\x00"+name+"\x00"))
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// readDirNames lists a directory of the target, sorted.
func readDirNames(tfs *targetFS, canonical string) ([]string, error) {
	ents, err := readDir(tfs.root, canonical)
	if err != nil {
		return nil, err
	}
	sort.Strings(ents)
	return ents, nil
}
