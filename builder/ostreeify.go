package builder

import (
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/apt-ostree/apt-ostree-factory/ostree"
)

// The OSTree layout (see ../shared/reference/boot-chain.md §3.1): what a
// deployment needs from the commit, and what ostree and systemd do with
// it on the device.
const (
	// DpkgDatabaseDir is where the dpkg database lives in the commit; a
	// tmpfiles.d link makes /var/lib/dpkg point at it, so `dpkg -l`
	// works on the booted (read-only /usr) system.
	DpkgDatabaseDir = "usr/lib/sysimage/dpkg"
	// FactoryDir holds /var's content from the build; tmpfiles.d copies
	// it into /var on first boot, as systemd's /usr/share/factory.
	FactoryDir  = "usr/share/factory"
	tmpfilesVar = "usr/lib/tmpfiles.d/apt-ostree-var.conf"
)

// varLinks are the top-level directories that live in /var on an OSTree
// system, and where.
var varLinks = []struct{ from, to, link string }{
	{"home", "var/home", "var/home"},
	{"root", "var/roothome", "var/roothome"},
	{"opt", "var/opt", "var/opt"},
	{"srv", "var/srv", "var/srv"},
	{"mnt", "var/mnt", "var/mnt"},
	{"usr/local", "var/usrlocal", "../var/usrlocal"},
}

// volatile /var content the commit does not carry: logs, caches and locks
// of the build.
var volatileVar = []string{
	"var/log/", "var/cache/apt/", "var/cache/ldconfig/", "var/lib/apt/lists/",
	"var/lib/dpkg/lock", "var/lib/dpkg/lock-frontend", "var/lib/dpkg/triggers/Lock",
	"var/lib/dpkg/status-old", "var/lib/dpkg/diversions-old", "var/lib/dpkg/statoverride-old",
	"var/lib/dpkg/available-old", "var/lib/dbus/machine-id", "var/tmp/",
}

// Kernel is the kernel a bootable commit carries.
type Kernel struct {
	Version   string          // "6.12.57+deb13-amd64"
	Initramfs *ostree.MemFile // the initramfs built for it
}

// OSTreeifyResult reports what the conversion did.
type OSTreeifyResult struct {
	VarEntries int      // tmpfiles.d lines for /var
	Dropped    []string // volatile or /boot files left out
}

// OSTreeify turns a configured Debian tree into an OSTree commit's tree:
// /etc to /usr/etc, /var content to tmpfiles.d (the commit's /var is
// empty), the dpkg database to /usr/lib/sysimage/dpkg, home, root, opt,
// srv, mnt, media and usr/local pointing into /var (or /run), the kernel
// and initramfs in /usr/lib/modules/$kver/, an empty /boot, and the
// mount points ostree and systemd need. kernel may be nil (no kernel: the
// commit is not bootable).
func OSTreeify(root *ostree.MemDir, kernel *Kernel) (*OSTreeifyResult, error) {
	res := &OSTreeifyResult{}
	dirMeta := ostree.FileMeta{Mode: ostree.ModeDir | 0o755}

	// The kernel: /boot/vmlinuz-$kver and friends move next to the modules.
	boot := root.Dirs["boot"]
	if kernel != nil {
		kver := kernel.Version
		modDir, err := root.MkdirAll("usr/lib/modules/"+kver, dirMeta)
		if err != nil {
			return nil, err
		}
		vmlinuz := modDir.Files["vmlinuz"]
		if boot != nil && boot.Files["vmlinuz-"+kver] != nil {
			vmlinuz = boot.Files["vmlinuz-"+kver]
		}
		if vmlinuz == nil || isSymlink(vmlinuz) {
			return nil, fmt.Errorf("kernel %s: no /boot/vmlinuz-%s or /usr/lib/modules/%s/vmlinuz in the tree", kver, kver, kver)
		}
		modDir.Files["vmlinuz"] = vmlinuz
		if boot != nil {
			for src, dst := range map[string]string{"config-" + kver: "config", "System.map-" + kver: "System.map"} {
				if f := boot.Files[src]; f != nil && modDir.Files[dst] == nil {
					modDir.Files[dst] = f
				}
			}
		}
		if kernel.Initramfs == nil {
			return nil, fmt.Errorf("kernel %s: no initramfs", kver)
		}
		modDir.Files["initramfs.img"] = kernel.Initramfs
	}
	// Links to the kernel that linux-base and the kernel hooks make.
	for _, n := range []string{"vmlinuz", "vmlinuz.old", "initrd.img", "initrd.img.old"} {
		if f := root.Files[n]; f != nil && isSymlink(f) {
			delete(root.Files, n)
		}
	}
	if boot != nil {
		for _, n := range sortedKeys(boot.Files) {
			res.Dropped = append(res.Dropped, "/boot/"+n)
		}
		for _, n := range sortedKeys(boot.Dirs) {
			res.Dropped = append(res.Dropped, "/boot/"+n+"/")
		}
		boot.Files = map[string]*ostree.MemFile{}
		boot.Dirs = map[string]*ostree.MemDir{}
	}

	// /etc -> /usr/etc.
	usr := root.Dirs["usr"]
	if usr == nil {
		return nil, fmt.Errorf("the tree has no /usr directory")
	}
	if _, ok := usr.Dirs["etc"]; ok {
		return nil, fmt.Errorf("the tree has /usr/etc already (ostree's place for /etc)")
	}
	if _, ok := usr.Files["etc"]; ok {
		return nil, fmt.Errorf("the tree has a file at /usr/etc (ostree's place for /etc)")
	}
	etc := root.Dirs["etc"]
	if etc == nil {
		return nil, fmt.Errorf("the tree has no /etc directory")
	}
	usr.Dirs["etc"] = etc
	delete(root.Dirs, "etc")
	// An empty machine-id: systemd makes one on first boot (a shared one
	// would make every device the same machine, and break reproducibility).
	etc.Files["machine-id"] = &ostree.MemFile{
		Header: ostree.FileHeader{FileMeta: ostree.FileMeta{Mode: ostree.ModeRegular | 0o444}},
		Data:   []byte{}, Origin: "empty /etc/machine-id",
	}

	// The dpkg database goes under /usr, kept queryable through a link.
	var tmpfiles []string
	if d, _ := root.Lookup("var/lib/dpkg"); d != nil {
		parent, _ := root.Lookup("var/lib")
		delete(parent.Dirs, "dpkg")
		sysimage, err := root.MkdirAll("usr/lib/sysimage", dirMeta)
		if err != nil {
			return nil, err
		}
		sysimage.Dirs["dpkg"] = d
		tmpfiles = append(tmpfiles, "L /var/lib/dpkg - - - - ../../"+DpkgDatabaseDir)
		for _, n := range []string{"lock", "lock-frontend", "status-old", "diversions-old", "statoverride-old", "available-old"} {
			delete(d.Files, n)
		}
		if tr := d.Dirs["triggers"]; tr != nil {
			delete(tr.Files, "Lock")
		}
	}

	// Directories that belong in /var move there, and become links.
	for _, l := range varLinks {
		parentPath, name := path.Split(l.from)
		parent := root
		if parentPath != "" {
			parent, _ = root.Lookup(parentPath)
		}
		if parent == nil {
			continue
		}
		meta := dirMeta
		if l.from == "root" {
			meta.Mode = ostree.ModeDir | 0o700
		}
		d := parent.Dirs[name]
		if d == nil {
			if f := parent.Files[name]; f != nil && !isSymlink(f) {
				return nil, fmt.Errorf("/%s is a file; it must be a directory or absent", l.from)
			}
			d = ostree.NewMemDir(meta)
		}
		delete(parent.Dirs, name)
		varDir, err := root.MkdirAll("var", dirMeta)
		if err != nil {
			return nil, err
		}
		if dst, taken := varDir.Dirs[path.Base(l.to)]; taken {
			// Both exist (FHS has /var/opt as well as /opt): the
			// package content of both ends up in one directory.
			for n, f := range d.Files {
				if _, clash := dst.Files[n]; clash || dst.Dirs[n] != nil {
					return nil, fmt.Errorf("/%s/%s and /%s/%s both exist; cannot move /%s into /%s", l.from, n, l.to, n, l.from, l.to)
				}
				dst.Files[n] = f
			}
			for n, sub := range d.Dirs {
				if _, clash := dst.Files[n]; clash || dst.Dirs[n] != nil {
					return nil, fmt.Errorf("/%s/%s and /%s/%s both exist; cannot move /%s into /%s", l.from, n, l.to, n, l.from, l.to)
				}
				dst.Dirs[n] = sub
			}
		} else {
			varDir.Dirs[path.Base(l.to)] = d
		}
		parent.Files[name] = symlinkFile(l.link)
	}
	root.Files["media"] = symlinkFile("run/media")
	delete(root.Dirs, "media")

	// /var becomes tmpfiles.d lines plus factory copies of its files.
	if v := root.Dirs["var"]; v != nil {
		var err error
		tmpfiles, err = varToTmpfiles(root, v, "var", tmpfiles, res)
		if err != nil {
			return nil, err
		}
		root.Dirs["var"] = ostree.NewMemDir(v.Meta)
	} else {
		root.Dirs["var"] = ostree.NewMemDir(dirMeta)
	}
	res.VarEntries = len(tmpfiles)
	sort.SliceStable(tmpfiles, func(i, j int) bool { return tmpfilesPath(tmpfiles[i]) < tmpfilesPath(tmpfiles[j]) })
	conf := "# /var of the image, made by apt-ostree-factory: OSTree commits carry no /var content.\n" +
		strings.Join(tmpfiles, "\n") + "\n"
	if _, err := root.MkdirAll(path.Dir(tmpfilesVar), dirMeta); err != nil {
		return nil, err
	}
	if err := root.AddFile(tmpfilesVar, &ostree.MemFile{
		Header: ostree.FileHeader{FileMeta: ostree.FileMeta{Mode: ostree.ModeRegular | 0o644}, Size: uint64(len(conf))},
		Data:   []byte(conf), Origin: "/" + tmpfilesVar,
	}); err != nil {
		return nil, err
	}

	// Mount points and the link ostree-prepare-root expects. /efi is where
	// systemd's gpt-auto-generator mounts the ESP of a systemd-boot system
	// whose /boot is taken; the deployment root is read-only, so the mount
	// point must come with the commit (bookworm's systemd fails the
	// automount otherwise).
	for _, d := range []struct {
		name string
		mode uint32
	}{{"dev", 0o755}, {"proc", 0o555}, {"sys", 0o555}, {"run", 0o755}, {"tmp", 0o1777}, {"sysroot", 0o755}, {"boot", 0o755}, {"efi", 0o755}} {
		old := root.Dirs[d.name]
		if old != nil {
			for _, n := range sortedKeys(old.Files) {
				if d.name != "boot" {
					res.Dropped = append(res.Dropped, "/"+d.name+"/"+n)
				}
			}
			for _, n := range sortedKeys(old.Dirs) {
				if d.name != "boot" {
					res.Dropped = append(res.Dropped, "/"+d.name+"/"+n+"/")
				}
			}
		}
		delete(root.Files, d.name)
		root.Dirs[d.name] = ostree.NewMemDir(ostree.FileMeta{Mode: ostree.ModeDir | d.mode})
	}
	delete(root.Dirs, "ostree")
	root.Files["ostree"] = symlinkFile("sysroot/ostree")
	return res, nil
}

func symlinkFile(target string) *ostree.MemFile {
	return &ostree.MemFile{
		Header: ostree.FileHeader{FileMeta: ostree.FileMeta{Mode: ostree.ModeSymlink | 0o777}, Symlink: target},
		Origin: "symlink to " + target,
	}
}

func tmpfilesPath(line string) string {
	f := strings.Fields(line)
	if len(f) < 2 {
		return line
	}
	return f[1]
}

func isVolatile(p string, dir bool) bool {
	for _, v := range volatileVar {
		if strings.HasSuffix(v, "/") {
			if strings.HasPrefix(p+"/", v) && !(dir && p+"/" == v) {
				return true
			}
		} else if p == v {
			return true
		}
	}
	return false
}

// varToTmpfiles lists d (at p, e.g. "var/lib") as tmpfiles.d lines and
// moves its files under FactoryDir.
func varToTmpfiles(root, d *ostree.MemDir, p string, lines []string, res *OSTreeifyResult) ([]string, error) {
	if strings.ContainsAny(p, " \t\n\\\"'") {
		return nil, fmt.Errorf("/%s: a /var path with blanks or quotes cannot be written to tmpfiles.d", p)
	}
	if p != "var" {
		lines = append(lines, fmt.Sprintf("d /%s %04o %d %d -", p, d.Meta.Mode&0o7777, d.Meta.UID, d.Meta.GID))
	}
	for _, name := range sortedKeys(d.Files) {
		f := d.Files[name]
		fp := p + "/" + name
		if isVolatile(fp, false) {
			res.Dropped = append(res.Dropped, "/"+fp)
			continue
		}
		if strings.ContainsAny(fp, " \t\n\\\"'") {
			return nil, fmt.Errorf("/%s: a /var path with blanks or quotes cannot be written to tmpfiles.d", fp)
		}
		if isSymlink(f) {
			lines = append(lines, fmt.Sprintf("L /%s - - - - %s", fp, f.Header.Symlink))
			continue
		}
		factory, err := root.MkdirAll(path.Join(FactoryDir, p), ostree.FileMeta{Mode: ostree.ModeDir | 0o755})
		if err != nil {
			return nil, err
		}
		factory.Files[name] = f
		lines = append(lines, fmt.Sprintf("C /%s - - - - /%s", fp, path.Join(FactoryDir, fp)))
	}
	for _, name := range sortedKeys(d.Dirs) {
		sp := p + "/" + name
		if isVolatile(sp, true) {
			res.Dropped = append(res.Dropped, "/"+sp+"/")
			continue
		}
		var err error
		if lines, err = varToTmpfiles(root, d.Dirs[name], sp, lines, res); err != nil {
			return nil, err
		}
	}
	return lines, nil
}
