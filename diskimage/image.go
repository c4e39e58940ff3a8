package diskimage

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/apt-ostree/apt-ostree-factory/diskimage/ext4"
	"github.com/apt-ostree/apt-ostree-factory/diskimage/fat32"
	"github.com/apt-ostree/apt-ostree-factory/diskimage/qcow2"
	"github.com/apt-ostree/apt-ostree-factory/ostree"
	"github.com/apt-ostree/apt-ostree-factory/recipe"
)

// Options is one image to write from one commit.
type Options struct {
	// Image is the recipe's description (defaults applied by the recipe
	// package).
	Image recipe.Image
	// Index is the image's position in outputs.images (for messages).
	Index int
	// Architecture is the Debian architecture (amd64, arm64).
	Architecture string
	// RecipeName, with Image.Name and the commit, seeds every UUID.
	RecipeName string
	// KernelArgs are the recipe's kernel arguments (the image's own are
	// in Image).
	KernelArgs []string
	Deployment Deployment
	// OutputDir receives NAME.FORMAT and NAME.FORMAT.sha256.
	OutputDir string
	// Log receives progress lines; nil discards them.
	Log func(format string, args ...any)
}

// Partition types (Discoverable Partitions Specification).
const (
	typeESP      = gpt.EFISystemPartition
	typeXBOOTLDR = gpt.LinuxExtendedBoot
	typeVar      = gpt.Type("4D21B016-B534-45C2-A9FB-5C16E091FD2D")
)

func rootType(arch string) gpt.Type {
	if arch == "arm64" {
		return gpt.LinuxRootArm64
	}
	return gpt.LinuxRootX86_64
}

const (
	mib        = int64(1) << 20
	sectorSize = 512
)

// PartitionResult describes one written partition.
type PartitionResult struct {
	Role, Label   string
	Start, Size   int64 // bytes
	TypeGUID      string
	PartitionGUID string
	FSUUID        string
	Used          int64 // bytes of content the filesystem needed (MinSize)
}

// Result is a written image.
type Result struct {
	Path       string
	Format     string
	Size       int64 // virtual size of the disk
	FileSize   int64 // bytes of the output file
	Allocated  int64 // bytes allocated on the host (st_blocks)
	SHA256     string
	Partitions []PartitionResult
	Commit     ostree.Checksum
	Kernel     string
	BootCsum   string
	Entry      string
	Times      map[string]time.Duration
}

// plannedPart is a partition with its filesystem ready to write.
type plannedPart struct {
	spec  recipe.Partition
	res   PartitionResult
	fs    *ext4.FS // nil for the ESP
	esp   []espFile
	fatID uint32
}

type espFile struct {
	path string
	n    *Inode
}

// Write assembles the image: it seeds the sysroot, lays out the
// partitions, checks that everything fits, and only then writes a
// temporary file in OutputDir that is renamed into place with its
// checksum file. Nothing is left behind on failure.
func Write(ctx context.Context, o Options) (*Result, error) {
	logf := o.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	im := o.Image
	where := fmt.Sprintf("outputs.images[%d] (%s)", o.Index, im.Name)
	efiArch, ok := recipe.EFIArch(o.Architecture)
	if !ok {
		return nil, fmt.Errorf("%s: architecture %s has no supported UEFI boot chain", where, o.Architecture)
	}
	res := &Result{Format: im.Format, Commit: o.Deployment.Commit, Times: map[string]time.Duration{}}
	t0 := time.Now()

	ids := newIDs(o.RecipeName, im.Name, o.Deployment.Commit)
	var varPart *recipe.Partition
	for i := range im.Partitions {
		if im.Partitions[i].Role == "var" {
			varPart = &im.Partitions[i]
		}
	}
	fsUUID := func(role string) string { return uuidString(ids.uuid("fs-uuid", role)) }

	// Kernel command line and fstab name the filesystems by UUID.
	d := o.Deployment
	d.KernelArgs = append(append([]string{"root=UUID=" + fsUUID("root")}, o.KernelArgs...), im.KernelArguments...)
	fstab := fmt.Sprintf("# Written by apt-ostree-factory for the image %s.\nUUID=%s / ext4 defaults 0 1\nUUID=%s /boot ext4 defaults 0 2\n",
		im.Name, fsUUID("root"), fsUUID("boot"))
	if varPart != nil {
		fstab += fmt.Sprintf("UUID=%s /var ext4 defaults 0 2\n", fsUUID("var"))
	}
	d.Fstab = []byte(fstab)
	d.SeparateVar = varPart != nil
	sys, err := Seed(d)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	res.Kernel, res.BootCsum, res.Entry = sys.KernelVersion, sys.BootCsum, sys.Entry

	// The ESP's files, from the commit's boot payload.
	upper := strings.ToUpper(efiArch)
	var esp []espFile
	for _, f := range []struct{ src, dst string }{
		{"BOOT" + upper + ".EFI", "/EFI/BOOT/BOOT" + upper + ".EFI"},
		{"drivers/ext4" + efiArch + ".efi", "/EFI/systemd/drivers/ext4" + efiArch + ".efi"},
	} {
		n := sys.EFI[f.src]
		if n == nil {
			return nil, fmt.Errorf("%s: commit %s has no %s/%s: build the commit from a recipe that lists outputs.images, so that the boot packages (systemd-boot-efi, refind) are resolved and their EFI binaries added", where, d.Commit, BootPayloadDir, f.src)
		}
		esp = append(esp, espFile{f.dst, n})
	}
	esp = append(esp, espFile{"/loader/loader.conf", Bytes(0o644, []byte("timeout 3\nconsole-mode keep\neditor no\n"), sys.Time)})
	res.Times["seed"] = time.Since(t0)

	// Filesystems and their sizes.
	t1 := time.Now()
	var parts []*plannedPart
	for _, p := range im.Partitions {
		pp := &plannedPart{spec: p}
		pp.res = PartitionResult{Role: p.Role, Label: p.Label, PartitionGUID: uuidString(ids.uuid("partition", p.Role))}
		switch p.Role {
		case "esp":
			pp.res.TypeGUID = string(typeESP)
			pp.esp = esp
			pp.res.Used, err = espMinSize(esp)
			u := ids.uuid("fs-uuid", "esp")
			pp.fatID = binary.LittleEndian.Uint32(u[:4])
			pp.res.FSUUID = fmt.Sprintf("%04X-%04X", pp.fatID>>16, pp.fatID&0xffff)
		case "boot":
			pp.res.TypeGUID = string(typeXBOOTLDR)
			pp.fs, err = newExt4(sys.Boot, p.Label, ids, "boot", sys.Time)
		case "root":
			pp.res.TypeGUID = string(rootType(o.Architecture))
			pp.fs, err = newExt4(sys.Root, p.Label, ids, "root", sys.Time)
		case "var":
			pp.res.TypeGUID = string(typeVar)
			pp.fs, err = newExt4(sys.Var, p.Label, ids, "var", sys.Time)
		default:
			return nil, fmt.Errorf("%s: unknown partition role %q", where, p.Role)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %s filesystem: %w", where, p.Role, err)
		}
		if pp.fs != nil {
			pp.res.FSUUID = fsUUID(p.Role)
			pp.res.Used = pp.fs.MinSize()
		}
		parts = append(parts, pp)
	}
	size, err := layout(parts, im, where)
	if err != nil {
		return nil, err
	}
	res.Size = size
	res.Times["plan"] = time.Since(t1)
	logf("image %s: %s disk, %s", im.Name, recipe.FormatBytes(size), describe(parts))

	// Write: a temporary raw file in the output directory.
	if err := os.MkdirAll(o.OutputDir, 0o755); err != nil {
		return nil, err
	}
	final := filepath.Join(o.OutputDir, im.Name+"."+im.Format)
	tmpRaw, err := os.CreateTemp(o.OutputDir, "."+im.Name+".raw.tmp-")
	if err != nil {
		return nil, err
	}
	cleanup := []string{tmpRaw.Name()}
	defer func() {
		for _, p := range cleanup {
			os.Remove(p)
		}
	}()
	t2 := time.Now()
	if err := writeRaw(tmpRaw, size, parts, ids, sys); err != nil {
		tmpRaw.Close()
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	res.Times["write"] = time.Since(t2)
	out := tmpRaw
	if im.Format == "qcow2" {
		t3 := time.Now()
		q, err := os.CreateTemp(o.OutputDir, "."+im.Name+".qcow2.tmp-")
		if err != nil {
			tmpRaw.Close()
			return nil, err
		}
		cleanup = append(cleanup, q.Name())
		if err := qcow2.Convert(q, tmpRaw, qcow2.Options{}); err != nil {
			tmpRaw.Close()
			q.Close()
			return nil, fmt.Errorf("%s: qcow2: %w", where, err)
		}
		tmpRaw.Close()
		out = q
		res.Times["qcow2"] = time.Since(t3)
	}
	t4 := time.Now()
	sum, err := hashFile(out)
	if err != nil {
		out.Close()
		return nil, err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return nil, err
	}
	st, err := out.Stat()
	if err != nil {
		out.Close()
		return nil, err
	}
	if err := out.Close(); err != nil {
		return nil, err
	}
	res.SHA256 = sum
	res.FileSize = st.Size()
	res.Allocated = allocated(st)
	if err := os.Chmod(out.Name(), 0o644); err != nil {
		return nil, err
	}
	if err := os.Rename(out.Name(), final); err != nil {
		return nil, err
	}
	sumFile := final + ".sha256"
	tmpSum := sumFile + ".tmp"
	if err := os.WriteFile(tmpSum, []byte(sum+"  "+filepath.Base(final)+"\n"), 0o644); err != nil {
		return nil, err
	}
	if err := os.Rename(tmpSum, sumFile); err != nil {
		os.Remove(tmpSum)
		return nil, err
	}
	res.Times["checksum"] = time.Since(t4)
	res.Path = final
	for _, pp := range parts {
		res.Partitions = append(res.Partitions, pp.res)
	}
	return res, nil
}

func describe(parts []*plannedPart) string {
	var s []string
	for _, p := range parts {
		s = append(s, fmt.Sprintf("%s %s", p.res.Role, recipe.FormatBytes(p.res.Size)))
	}
	return strings.Join(s, ", ")
}

// newExt4 loads a tree into an ext4 filesystem description.
func newExt4(t *Tree, label string, ids ids, role string, mtime int64) (*ext4.FS, error) {
	var seed [16]byte
	copy(seed[:], ids.uuid("hash-seed", role))
	var u [16]byte
	copy(u[:], ids.uuid("fs-uuid", role))
	f := ext4.New(ext4.Options{Label: label, UUID: u, HashSeed: seed, Time: mtime})
	if err := loadTree(f, t); err != nil {
		return nil, err
	}
	return f, nil
}

// loadTree adds t to f, names sorted, hard links kept.
func loadTree(f *ext4.FS, t *Tree) error {
	nodes := map[*Inode]*ext4.Node{}
	meta := func(n *Inode) ext4.Meta {
		m := ext4.Meta{Mode: n.Mode, UID: n.UID, GID: n.GID, Mtime: n.Mtime}
		for _, x := range n.Xattrs {
			m.Xattrs = append(m.Xattrs, ext4.Xattr{Name: x.Name, Value: x.Value})
		}
		if n.Immutable {
			m.Flags |= ext4.FlagImmutable
		}
		return m
	}
	f.SetMeta(f.Root(), meta(t.Root))
	var walk func(p string, dir *ext4.Node, n *Inode) error
	walk = func(p string, dir *ext4.Node, n *Inode) error {
		for _, name := range sortedNames(n) {
			c := n.Entries[name]
			cp := p + "/" + name
			if prev, ok := nodes[c]; ok && c.Kind != KindDir {
				if err := f.Link(dir, name, prev); err != nil {
					return fmt.Errorf("%s: %w", cp, err)
				}
				continue
			}
			var node *ext4.Node
			var err error
			switch c.Kind {
			case KindDir:
				node, err = f.Mkdir(dir, name, meta(c))
				if err == nil {
					err = walk(cp, node, c)
				}
			case KindFile:
				node, err = f.Create(dir, name, meta(c), c.Size, c.Open)
			case KindSymlink:
				node, err = f.Symlink(dir, name, meta(c), c.Target)
			}
			if err != nil {
				return fmt.Errorf("%s: %w", cp, err)
			}
			nodes[c] = node
		}
		return nil
	}
	return walk("", f.Root(), t.Root)
}

// layout places the partitions 1 MiB-aligned from 1 MiB on, sizes the
// ones that fit their content or take the rest, and checks that every
// filesystem fits, before anything is written. It returns the disk size.
func layout(parts []*plannedPart, im recipe.Image, where string) (int64, error) {
	free := int64(0)
	if im.FreeSpace != nil {
		free = im.FreeSpace.Bytes
	}
	roundUp := func(n int64) int64 { return (n + mib - 1) / mib * mib }
	rest := -1
	fixed := int64(0)
	for i, p := range parts {
		switch {
		case p.spec.Size == nil && !im.Size.Fit:
			rest = i
			continue
		case p.spec.Size == nil || p.spec.Size.Fit:
			p.res.Size = roundUp(p.res.Used + free)
		default:
			p.res.Size = roundUp(p.spec.Size.Bytes)
		}
		fixed += p.res.Size
	}
	// 1 MiB before the first partition (protective MBR, GPT) and 1 MiB
	// after the last (backup GPT).
	overhead := 2 * mib
	size := fixed + overhead
	if im.Size.Fit {
		if rest >= 0 {
			return 0, fmt.Errorf("%s: internal error: a partition without size in a fitted image", where)
		}
	} else {
		size = roundUp(im.Size.Bytes)
		if rest >= 0 {
			p := parts[rest]
			p.res.Size = size - fixed - overhead
			if p.res.Size < p.res.Used {
				return 0, fmt.Errorf("%s: size %s is too small: the %s partition gets %s but its content needs %s (the other partitions take %s); make the image at least %s or use size: fit",
					where, recipe.FormatBytes(im.Size.Bytes), p.spec.Role, mb(p.res.Size), mb(p.res.Used), mb(fixed), mb(roundUp(fixed+overhead+p.res.Used)))
			}
		} else if fixed+overhead > size {
			return 0, fmt.Errorf("%s: size %s is too small: the partitions need %s; make the image at least %s or use size: fit",
				where, recipe.FormatBytes(im.Size.Bytes), mb(fixed), mb(fixed+overhead))
		}
	}
	for i, p := range parts {
		if p.res.Used > p.res.Size {
			return 0, fmt.Errorf("%s: partitions[%d] (%s) is %s but its content needs %s: set outputs.images[].partitions[%d].size to at least %s",
				where, i, p.spec.Role, mb(p.res.Size), mb(p.res.Used), i, mb(roundUp(p.res.Used)))
		}
		if p.spec.Role == "esp" && p.res.Size < 34*mib {
			return 0, fmt.Errorf("%s: the ESP must be at least 34 MiB (FAT32)", where)
		}
	}
	start := mib
	for _, p := range parts {
		p.res.Start = start
		start += p.res.Size
	}
	if start+mib > size {
		size = start + mib
	}
	return size, nil
}

func mb(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/float64(mib)) }

// writeRaw writes the GPT, the ESP and the ext4 filesystems into f.
func writeRaw(f *os.File, size int64, parts []*plannedPart, ids ids, sys *Sysroot) error {
	if err := f.Truncate(size); err != nil {
		return err
	}
	table := &gpt.Table{
		LogicalSectorSize:  sectorSize,
		PhysicalSectorSize: sectorSize,
		ProtectiveMBR:      true,
		GUID:               uuidString(ids.uuid("disk", "")),
	}
	for i, p := range parts {
		table.Partitions = append(table.Partitions, &gpt.Partition{
			Index: i + 1,
			Start: uint64(p.res.Start / sectorSize),
			End:   uint64((p.res.Start+p.res.Size)/sectorSize - 1),
			Size:  uint64(p.res.Size),
			Type:  gpt.Type(p.res.TypeGUID),
			Name:  p.spec.Label,
			GUID:  p.res.PartitionGUID,
		})
	}
	dsk, err := diskfs.OpenBackend(file.New(f, false), diskfs.WithOpenMode(diskfs.ReadWrite), diskfs.WithSectorSize(diskfs.SectorSize512))
	if err != nil {
		return fmt.Errorf("partition table: %w", err)
	}
	if err := dsk.Partition(table); err != nil {
		return fmt.Errorf("partition table: %w", err)
	}
	for _, p := range parts {
		if p.fs != nil {
			if err := p.fs.WriteTo(f, p.res.Start, p.res.Size); err != nil {
				return fmt.Errorf("%s filesystem: %w", p.spec.Role, err)
			}
			continue
		}
		if err := writeESP(p, f, sys.Time); err != nil {
			return fmt.Errorf("ESP: %w", err)
		}
	}
	return nil
}

// espMinSize is the smallest FAT32 that holds the ESP's files.
func espMinSize(files []espFile) (int64, error) {
	fs, err := fat32.New(fat32.MinFSSize, fat32.Options{})
	if err != nil {
		return 0, err
	}
	if err := fs.Mkdir("/loader/entries"); err != nil {
		return 0, err
	}
	for _, e := range files {
		if err := fs.AddFile(e.path, e.n.Size, e.n.Open); err != nil {
			return 0, fmt.Errorf("%s: %w", e.path, err)
		}
	}
	return fs.MinSize(), nil
}

// writeESP makes the FAT32 ESP and copies the boot files.
func writeESP(p *plannedPart, f *os.File, mtime int64) error {
	fs, err := fat32.New(p.res.Size, fat32.Options{Label: p.spec.Label, VolumeID: p.fatID,
		Time: time.Unix(mtime, 0).UTC(), HiddenSectors: uint32(p.res.Start / sectorSize)})
	if err != nil {
		return err
	}
	if err := fs.Mkdir("/loader/entries"); err != nil {
		return err
	}
	for _, e := range p.esp {
		if err := fs.AddFile(e.path, e.n.Size, e.n.Open); err != nil {
			return fmt.Errorf("%s: %w", e.path, err)
		}
	}
	return fs.WriteTo(f, p.res.Start)
}

// ids derives every identifier of an image from the recipe name, the
// image name and the commit, so the same inputs give the same bytes.
type ids struct{ seed [32]byte }

func newIDs(recipeName, imageName string, commit ostree.Checksum) ids {
	return ids{seed: sha256.Sum256([]byte("apt-ostree-factory image\x00" + recipeName + "\x00" + imageName + "\x00" + commit.String()))}
}

// uuid is a random-looking (version 4, RFC 4122 variant) UUID for a
// purpose and a partition role.
func (i ids) uuid(kind, role string) []byte {
	h := sha256.Sum256(append(i.seed[:], []byte("\x00"+kind+"\x00"+role)...))
	u := h[:16]
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}

func uuidString(u []byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// hashFile is the SHA-256 of a file's bytes; holes are hashed as zeros
// without being read.
func hashFile(f *os.File) (string, error) {
	h := sha256.New()
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	if err := sparseRead(f, h); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
