package diskimage

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"pault.ag/go/debian/version"

	"github.com/apt-ostree/apt-ostree-factory/ostree"
)

// Deployment is what the image's OSTree sysroot is seeded with: one
// deployment of Commit from an archive repository, as `ostree admin
// init-fs`, `os-init`, `pull-local` and `admin deploy` of the target's
// ostree would leave it.
type Deployment struct {
	Repo   *ostree.Repo
	Commit ostree.Checksum
	// Branch is the ref devices follow; Remote and RemoteURL the remote
	// they pull it from. Without a URL no remote is configured and the
	// deployment follows the local branch.
	Branch    string
	Remote    string
	RemoteURL string
	// TrustedKeys is the binary public keyring that verifies the
	// remote's commits: with it the remote gets gpg-verify=true and the
	// keyring is installed as REPO/<remote>.trustedkeys.gpg, where
	// `ostree remote gpg-import` puts keys; without it gpg-verify=false.
	TrustedKeys []byte
	// Ed25519Keys are the Ed25519 public keys (base64, one per line) for
	// the remote: installed as REPO/<remote>.ed25519 and named by
	// verification-ed25519-file. Ed25519Verify sets sign-verify=true,
	// which only an ostree built with Ed25519 support can honour.
	Ed25519Keys   []byte
	Ed25519Verify bool
	Stateroot     string
	// KernelArgs are the boot entry's options before ostree=.
	KernelArgs []string
	// Fstab becomes the deployment's /etc/fstab (a local file in /etc:
	// ostree's 3-way merge carries it to later deployments).
	Fstab []byte
	// SeparateVar puts the stateroot's /var into Sysroot.Var instead of
	// the root filesystem (which keeps an empty mount point).
	SeparateVar bool
}

// BootPayloadDir is where the builder puts the boot chain's EFI binaries
// in the commit (taken from the target's systemd-boot-efi and refind
// packages without installing them).
const BootPayloadDir = "/usr/lib/apt-ostree/boot"

// Sysroot is the content of an image's filesystems.
type Sysroot struct {
	Root *Tree // the root filesystem: /ostree/repo, the deployment, /boot mount point
	Boot *Tree // the /boot filesystem (XBOOTLDR): kernels and boot entries
	Var  *Tree // the stateroot's /var when Deployment.SeparateVar

	KernelVersion string
	BootCsum      string
	Entry         string // the BLS entry's text
	EntryName     string // its file name
	// OstreeVersion is the target's ostree package version ("" when the
	// commit does not say); it selects version-dependent layout details.
	OstreeVersion string
	// EFI are the boot payload files (paths relative to BootPayloadDir).
	EFI map[string]*Inode
	// Objects is the number of objects in the sysroot's repository.
	Objects int
	// Time is the commit timestamp, used for every time the sysroot
	// invents.
	Time int64
}

// bootVersion/subBootVersion are what the first `ostree admin deploy` on
// a fresh sysroot picks (boot.1, boot.1.1), checked against ostree 2022.7.
const (
	bootVersion    = 1
	subBootVersion = 1
)

// Seed builds the sysroot for d.
func Seed(d Deployment) (*Sysroot, error) {
	r := d.Repo
	cm, err := r.ReadCommit(d.Commit)
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", d.Commit, err)
	}
	if d.Stateroot == "" {
		return nil, fmt.Errorf("no stateroot")
	}
	t := cm.Timestamp.Unix()
	s := &Sysroot{Time: t, EFI: map[string]*Inode{}}
	s.OstreeVersion = cm.Metadata.PackageVersion("ostree", "libostree-1-1")

	// The commit's objects.
	w := &commitWalker{repo: r, metaSeen: map[objKey]bool{}, content: map[ostree.Checksum]*Inode{}}
	if err := w.dir(cm.RootTree, cm.RootMeta, "/"); err != nil {
		return nil, err
	}
	if err := w.readHeaders(); err != nil {
		return nil, err
	}

	root := NewTree(0o755, 0, 0, t)
	s.Root = root
	// ostree admin init-fs.
	for _, dd := range []struct {
		p    string
		mode uint32
	}{{"boot", 0o755}, {"dev", 0o755}, {"home", 0o755}, {"proc", 0o755}, {"root", 0o700}, {"run", 0o755}, {"sys", 0o755}, {"tmp", 0o1777},
		{"ostree", 0o755}, {"ostree/deploy", 0o755}, {"ostree/repo", 0o755}} {
		if err := root.Add(dd.p, Dir(dd.mode, 0, 0, t)); err != nil {
			return nil, err
		}
	}

	// The bare repository.
	if err := s.seedRepo(d, w, cm); err != nil {
		return nil, err
	}

	// The stateroot and the deployment.
	sr := "/ostree/deploy/" + d.Stateroot
	for _, p := range []string{sr, sr + "/deploy", sr + "/var"} {
		if err := root.Add(p, Dir(0o755, 0, 0, t)); err != nil {
			return nil, err
		}
	}
	varTree := &Tree{Root: root.Lookup(sr + "/var")}
	if d.SeparateVar {
		varTree = NewTree(0o755, 0, 0, t)
	}
	s.Var = varTree
	if err := s.seedVar(varTree); err != nil {
		return nil, err
	}
	deployName := d.Commit.String() + ".0"
	deployDir := sr + "/deploy/" + deployName
	dep, err := w.deployment(t)
	if err != nil {
		return nil, err
	}
	if err := root.Add(deployDir, dep.Root); err != nil {
		return nil, err
	}
	if err := root.Add(deployDir+".origin", Bytes(0o644, []byte("[origin]\nrefspec="+refspec(d)+"\n"), t)); err != nil {
		return nil, err
	}
	if d.Fstab != nil {
		if _, err := dep.MkdirAll("/etc", 0o755, t); err != nil {
			return nil, err
		}
		if err := dep.Put("/etc/fstab", Bytes(0o644, d.Fstab, t)); err != nil {
			return nil, err
		}
	}

	// Kernel, boot checksum, boot entry.
	if err := s.seedBoot(d, dep, w, cm, deployName); err != nil {
		return nil, err
	}

	// The boot payload (systemd-boot, the ext4 driver).
	if p := dep.Lookup(BootPayloadDir); p != nil && p.Kind == KindDir {
		var collect func(prefix string, n *Inode)
		collect = func(prefix string, n *Inode) {
			for name, c := range n.Entries {
				switch c.Kind {
				case KindDir:
					collect(prefix+name+"/", c)
				case KindFile:
					s.EFI[prefix+name] = c
				}
			}
		}
		collect("", p)
	}
	return s, nil
}

func refspec(d Deployment) string {
	if d.RemoteURL == "" {
		return d.Branch
	}
	return d.Remote + ":" + d.Branch
}

// seedRepo writes /ostree/repo: config, objects, refs and the empty
// directories ostree keeps there.
func (s *Sysroot) seedRepo(d Deployment, w *commitWalker, cm *ostree.Commit) error {
	root, t := s.Root, s.Time
	repo := "/ostree/repo"
	var cfg bytes.Buffer
	cfg.WriteString("[core]\nrepo_version=1\nmode=bare\n")
	if d.RemoteURL != "" {
		verify := len(d.TrustedKeys) > 0
		fmt.Fprintf(&cfg, "\n[remote %q]\nurl=%s\ngpg-verify=%t\n", d.Remote, d.RemoteURL, verify)
		if verify {
			if err := root.Add(repo+"/"+d.Remote+".trustedkeys.gpg", Bytes(0o644, d.TrustedKeys, t)); err != nil {
				return err
			}
		}
		if len(d.Ed25519Keys) > 0 {
			// The path as the booted system sees it (/ostree is the
			// deployment's link to /sysroot/ostree).
			name := repo + "/" + d.Remote + ".ed25519"
			if err := root.Add(name, Bytes(0o644, d.Ed25519Keys, t)); err != nil {
				return err
			}
			fmt.Fprintf(&cfg, "verification-ed25519-file=%s\n", name)
			if d.Ed25519Verify {
				cfg.WriteString("sign-verify=true\n")
			}
		}
	}
	cfg.WriteString("\n[sysroot]\nbootloader=none\n")
	if err := root.Add(repo+"/config", Bytes(0o644, cfg.Bytes(), t)); err != nil {
		return err
	}
	lock := Bytes(0o640, nil, t)
	if err := root.Add(repo+"/.lock", lock); err != nil {
		return err
	}
	for _, p := range []string{"extensions", "objects", "refs", "refs/heads", "refs/mirrors", "refs/remotes", "state", "tmp", "tmp/cache"} {
		if err := root.Add(repo+"/"+p, Dir(0o755, 0, 0, t)); err != nil {
			return err
		}
	}
	// Objects: the commit, its detached metadata, dirtrees and dirmetas
	// (files as the archive stores them), and the content objects with
	// their owners, modes and xattrs (bare mode; mtime 0 as ostree sets).
	add := func(c ostree.Checksum, ext string, n *Inode) error {
		hexsum := c.String()
		dir := repo + "/objects/" + hexsum[:2]
		if root.Lookup(dir) == nil {
			if err := root.Add(dir, Dir(0o755, 0, 0, t)); err != nil {
				return err
			}
		}
		s.Objects++
		return root.Add(dir+"/"+hexsum[2:]+"."+ext, n)
	}
	metaFile := func(c ostree.Checksum, typ ostree.ObjectType) (*Inode, error) {
		p := metaObjectPath(d.Repo, c, typ)
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("object %s.%s: %w", c, typ, err)
		}
		return &Inode{Kind: KindFile, Mode: 0o644, Mtime: t, Size: st.Size(),
			Open: func() (io.ReadCloser, error) { return os.Open(p) }}, nil
	}
	cn, err := metaFile(d.Commit, ostree.ObjectCommit)
	if err != nil {
		return err
	}
	if err := add(d.Commit, "commit", cn); err != nil {
		return err
	}
	if p := metaObjectPath(d.Repo, d.Commit, ostree.ObjectCommitMeta); fileExists(p) {
		n, err := metaFile(d.Commit, ostree.ObjectCommitMeta)
		if err != nil {
			return err
		}
		if err := add(d.Commit, "commitmeta", n); err != nil {
			return err
		}
	}
	metas := make([]objKey, 0, len(w.metaSeen))
	for k := range w.metaSeen {
		metas = append(metas, k)
	}
	sort.Slice(metas, func(i, j int) bool {
		if metas[i].c != metas[j].c {
			return bytes.Compare(metas[i].c[:], metas[j].c[:]) < 0
		}
		return metas[i].t < metas[j].t
	})
	for _, k := range metas {
		n, err := metaFile(k.c, k.t)
		if err != nil {
			return err
		}
		if err := add(k.c, k.t.String(), n); err != nil {
			return err
		}
	}
	sums := make([]ostree.Checksum, 0, len(w.content))
	for c := range w.content {
		sums = append(sums, c)
	}
	sort.Slice(sums, func(i, j int) bool { return bytes.Compare(sums[i][:], sums[j][:]) < 0 })
	for _, c := range sums {
		if err := add(c, "file", w.content[c]); err != nil {
			return err
		}
	}
	// Refs: the branch as pulled from the remote (or a local branch), and
	// the deployment ref that keeps the commit from being pruned.
	ref := "refs/heads/" + d.Branch
	if d.RemoteURL != "" {
		ref = "refs/remotes/" + d.Remote + "/" + d.Branch
	}
	refs := []string{ref, fmt.Sprintf("refs/heads/ostree/%d/%d/0", bootVersion, subBootVersion)}
	for _, rp := range refs {
		if _, err := root.MkdirAll(path.Dir(repo+"/"+rp), 0o755, t); err != nil {
			return err
		}
		if err := root.Add(repo+"/"+rp, Bytes(0o644, []byte(d.Commit.String()+"\n"), t)); err != nil {
			return err
		}
	}
	return nil
}

// seedVar fills the stateroot's /var as os-init and the first deploy of
// the target's ostree leave it: ostree before 2024.3 pre-creates lib, log,
// tmp and the run/lock links; later versions copy the commit's (empty)
// /var. Both mark it as labelled.
func (s *Sysroot) seedVar(v *Tree) error {
	t := s.Time
	if s.OstreeVersion == "" || versionLess(s.OstreeVersion, "2024.3") {
		for _, e := range []struct {
			p string
			n *Inode
		}{{"lib", Dir(0o755, 0, 0, t)}, {"log", Dir(0o755, 0, 0, t)}, {"tmp", Dir(0o1777, 0, 0, t)},
			{"run", Symlink("../run", t)}, {"lock", Symlink("../run/lock", t)}} {
			if err := v.Add(e.p, e.n); err != nil {
				return err
			}
		}
	}
	return v.Add(".ostree-selabeled", Bytes(0o644, nil, t))
}

// seedBoot finds the kernel as ostree does (usr/lib/modules/$kver/vmlinuz
// and initramfs.img), computes the boot checksum, and writes /boot: the
// kernel directory, the boot entry, the loader symlink, and in the root
// filesystem the ostree/boot.N farm.
func (s *Sysroot) seedBoot(d Deployment, dep *Tree, w *commitWalker, cm *ostree.Commit, deployName string) error {
	t := s.Time
	mods := dep.Lookup("/usr/lib/modules")
	if mods == nil || mods.Kind != KindDir {
		return fmt.Errorf("commit %s has no /usr/lib/modules: it is not bootable (set kernel.package in the recipe)", d.Commit)
	}
	var kver string
	var vmlinuz, initrd *Inode
	for _, name := range sortedNames(mods) {
		dir := mods.Entries[name]
		if dir.Kind != KindDir {
			continue
		}
		if k := dir.Entries["vmlinuz"]; k != nil && k.Kind == KindFile {
			kver, vmlinuz = name, k
			initrd = dir.Entries["initramfs.img"]
			if initrd == nil {
				initrd = dir.Entries["initramfs"]
			}
			break
		}
	}
	if vmlinuz == nil {
		return fmt.Errorf("commit %s has no kernel (usr/lib/modules/*/vmlinuz): it is not bootable", d.Commit)
	}
	if initrd == nil || initrd.Kind != KindFile {
		return fmt.Errorf("commit %s has no initramfs for kernel %s (usr/lib/modules/%s/initramfs.img)", d.Commit, kver, kver)
	}
	h := sha256.New()
	for _, n := range []*Inode{vmlinuz, initrd} {
		rc, err := n.Open()
		if err != nil {
			return err
		}
		_, err = io.Copy(h, rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("reading kernel %s: %w", kver, err)
		}
	}
	bootcsum := hex.EncodeToString(h.Sum(nil))
	s.KernelVersion, s.BootCsum = kver, bootcsum

	boot := NewTree(0o755, 0, 0, t)
	s.Boot = boot
	kdir := "/ostree/" + d.Stateroot + "-" + bootcsum
	if _, err := boot.MkdirAll(kdir, 0o755, t); err != nil {
		return err
	}
	copyOf := func(n *Inode) *Inode {
		c := *n
		c.Mtime = t
		return &c
	}
	vmName, rdName := "vmlinuz-"+kver, "initramfs-"+kver+".img"
	if err := boot.Add(kdir+"/"+vmName, copyOf(vmlinuz)); err != nil {
		return err
	}
	if err := boot.Add(kdir+"/"+rdName, copyOf(initrd)); err != nil {
		return err
	}

	title := prettyName(dep)
	if v, ok := cm.Metadata.String("version"); ok && v != "" && !strings.Contains(title, v) {
		title += " " + v
	}
	title += " (ostree:0)"
	bootLink := fmt.Sprintf("/ostree/boot.%d/%s/%s/0", bootVersion, d.Stateroot, bootcsum)
	opts := append(append([]string{}, d.KernelArgs...), "ostree="+bootLink)
	s.Entry = fmt.Sprintf("title %s\nversion 1\noptions %s\nlinux %s/%s\ninitrd %s/%s\n",
		title, strings.Join(opts, " "), kdir, vmName, kdir, rdName)
	// ostree 2024.5 dropped the stateroot from entry names.
	s.EntryName = "ostree-1-" + d.Stateroot + ".conf"
	if s.OstreeVersion != "" && !versionLess(s.OstreeVersion, "2024.5") {
		s.EntryName = "ostree-1.conf"
	}
	loader := fmt.Sprintf("loader.%d", bootVersion)
	if _, err := boot.MkdirAll("/"+loader+"/entries", 0o755, t); err != nil {
		return err
	}
	for _, e := range []struct {
		p string
		n *Inode
	}{
		{"/" + loader + "/entries/" + s.EntryName, Bytes(0o644, []byte(s.Entry), t)},
		{"/loader", Symlink(loader, t)},
		{"/boot", Symlink(".", t)},
	} {
		if err := boot.Add(e.p, e.n); err != nil {
			return err
		}
	}

	// The boot symlink farm in the root filesystem.
	farm := fmt.Sprintf("/ostree/boot.%d.%d", bootVersion, subBootVersion)
	if _, err := s.Root.MkdirAll(farm+"/"+d.Stateroot+"/"+bootcsum, 0o755, t); err != nil {
		return err
	}
	for _, e := range []struct {
		p string
		n *Inode
	}{
		{farm + "/" + d.Stateroot + "/" + bootcsum + "/0", Symlink("../../../deploy/"+d.Stateroot+"/deploy/"+deployName, t)},
		{fmt.Sprintf("/ostree/boot.%d", bootVersion), Symlink(path.Base(farm), t)},
	} {
		if err := s.Root.Add(e.p, e.n); err != nil {
			return err
		}
	}
	return nil
}

// prettyName is os-release's PRETTY_NAME (else ID, else "Linux"), read
// from usr/lib/os-release or usr/etc/os-release of the deployment.
func prettyName(dep *Tree) string {
	for _, p := range []string{"/usr/lib/os-release", "/usr/etc/os-release"} {
		n := dep.Lookup(p)
		if n != nil && n.Kind == KindSymlink {
			n = dep.Lookup(path.Join(path.Dir(p), n.Target))
		}
		if n == nil || n.Kind != KindFile || n.Size > 1<<20 {
			continue
		}
		rc, err := n.Open()
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		vals := map[string]string{}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
			if !ok {
				continue
			}
			v = strings.Trim(v, `"'`)
			vals[k] = v
		}
		if v := vals["PRETTY_NAME"]; v != "" {
			return v
		}
		if v := vals["ID"]; v != "" {
			return v
		}
	}
	return "Linux"
}

// versionLess compares a Debian package version with an upstream one.
func versionLess(pkg, upstream string) bool {
	a, err1 := version.Parse(pkg)
	b, err2 := version.Parse(upstream)
	if err1 != nil || err2 != nil {
		return false
	}
	return version.Compare(a, b) < 0
}

func metaObjectPath(r *ostree.Repo, c ostree.Checksum, t ostree.ObjectType) string {
	h := c.String()
	return filepath.Join(r.Path(), "objects", h[:2], h[2:]+"."+t.String())
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

type objKey struct {
	c ostree.Checksum
	t ostree.ObjectType
}

// commitWalker collects a commit's objects and its tree.
type commitWalker struct {
	repo     *ostree.Repo
	metaSeen map[objKey]bool
	content  map[ostree.Checksum]*Inode // filled by readHeaders
	dirs     []walkedDir
}

type walkedDir struct {
	path       string
	tree, meta ostree.Checksum
	dt         *ostree.DirTree
	fm         ostree.FileMeta
}

func (w *commitWalker) dir(tree, meta ostree.Checksum, p string) error {
	w.metaSeen[objKey{tree, ostree.ObjectDirTree}] = true
	w.metaSeen[objKey{meta, ostree.ObjectDirMeta}] = true
	dt, err := w.repo.ReadDirTree(tree)
	if err != nil {
		return err
	}
	fm, err := w.repo.ReadDirMeta(meta)
	if err != nil {
		return err
	}
	w.dirs = append(w.dirs, walkedDir{path: p, tree: tree, meta: meta, dt: dt, fm: fm})
	for _, f := range dt.Files {
		w.content[f.Checksum] = nil
	}
	for _, sub := range dt.Dirs {
		if err := w.dir(sub.Tree, sub.Meta, path.Join(p, sub.Name)); err != nil {
			return err
		}
	}
	return nil
}

// readHeaders reads every content object's header, in parallel, and
// makes its inode: the object file of the bare repository, which the
// deployment hard-links.
func (w *commitWalker) readHeaders() error {
	sums := make([]ostree.Checksum, 0, len(w.content))
	for c := range w.content {
		sums = append(sums, c)
	}
	nodes := make([]*Inode, len(sums))
	errs := make([]error, len(sums))
	var wg sync.WaitGroup
	next := make(chan int)
	for g := 0; g < runtime.GOMAXPROCS(0); g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				nodes[i], errs[i] = w.objectInode(sums[i])
			}
		}()
	}
	for i := range sums {
		next <- i
	}
	close(next)
	wg.Wait()
	for i, c := range sums {
		if errs[i] != nil {
			return errs[i]
		}
		w.content[c] = nodes[i]
	}
	return nil
}

func (w *commitWalker) objectInode(c ostree.Checksum) (*Inode, error) {
	h, rc, err := w.repo.OpenContent(c)
	if err != nil {
		return nil, err
	}
	rc.Close()
	n := &Inode{Mode: h.Mode & ostree.ModePermMask, UID: h.UID, GID: h.GID, Xattrs: h.Xattrs}
	switch h.Mode & ostree.ModeTypeMask {
	case ostree.ModeRegular:
		n.Kind = KindFile
		n.Size = int64(h.Size)
		repo := w.repo
		n.Open = func() (io.ReadCloser, error) {
			_, rc, err := repo.OpenContent(c)
			return rc, err
		}
	case ostree.ModeSymlink:
		n.Kind = KindSymlink
		n.Target = h.Symlink
	default:
		return nil, fmt.Errorf("object %s.file: unsupported mode %o", c, h.Mode)
	}
	return n, nil
}

// deployment builds the checkout: directories from the dirmetas (mtime 0,
// as ostree checks them out), files and symlinks hard-linked to the
// repository's objects, /etc a copy of /usr/etc, and the root immutable.
func (w *commitWalker) deployment(t int64) (*Tree, error) {
	var tree *Tree
	for _, d := range w.dirs {
		n := Dir(d.fm.Mode&ostree.ModePermMask, d.fm.UID, d.fm.GID, 0)
		n.Xattrs = d.fm.Xattrs
		if d.path == "/" {
			n.Mtime, n.Immutable = t, true
			tree = &Tree{Root: n}
		} else if err := tree.Add(d.path, n); err != nil {
			return nil, err
		}
		for _, f := range d.dt.Files {
			if err := n.addEntry(f.Name, w.content[f.Checksum]); err != nil {
				return nil, fmt.Errorf("%s: %w", path.Join(d.path, f.Name), err)
			}
		}
	}
	if tree.Lookup("/etc") != nil {
		return nil, fmt.Errorf("the commit has /etc: ostree expects /usr/etc only")
	}
	if usrEtc := tree.Lookup("/usr/etc"); usrEtc != nil && usrEtc.Kind == KindDir {
		if err := tree.Add("/etc", copyTree(usrEtc, t)); err != nil {
			return nil, err
		}
	}
	return tree, nil
}

func (n *Inode) addEntry(name string, c *Inode) error {
	if _, dup := n.Entries[name]; dup {
		return fmt.Errorf("duplicate entry")
	}
	n.Entries[name] = c
	return nil
}

// copyTree copies a directory tree into new inodes (ostree copies /etc
// rather than linking it), with mtime t.
func copyTree(n *Inode, t int64) *Inode {
	c := *n
	c.Mtime = t
	if n.Kind == KindDir {
		c.Entries = make(map[string]*Inode, len(n.Entries))
		for name, e := range n.Entries {
			c.Entries[name] = copyTree(e, t)
		}
	}
	return &c
}
