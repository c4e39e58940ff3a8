package recipe

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Image is one disk image the build writes (outputs.images).
type Image struct {
	// Name is the output file's stem: NAME.raw or NAME.qcow2, next to a
	// NAME.FORMAT.sha256 checksum file (default: the recipe's name).
	Name string `yaml:"name"`
	// Format is "raw" (default, sparse) or "qcow2".
	Format string `yaml:"format"`
	// Size is the whole disk's size, or "fit" (default): the partitions'
	// sizes, with the root filesystem sized to its content plus FreeSpace.
	Size Size `yaml:"size"`
	// FreeSpace is the free space left on the root filesystem when Size
	// or the root partition's size is "fit" (default 1 GiB).
	FreeSpace *Size `yaml:"free-space"`
	// Partitions is the GPT layout in disk order (default: esp 256 MiB,
	// boot 512 MiB, root with the rest).
	Partitions []Partition `yaml:"partitions"`
	// KernelArguments are added after the recipe's kernel-arguments in the
	// image's boot entry.
	KernelArguments []string `yaml:"kernel-arguments"`
	// Bootloader is the boot chain: "systemd-boot" (the default and, for
	// now, the only one: systemd-boot on the ESP reading ostree's Boot
	// Loader Spec entries from an ext4 XBOOTLDR /boot through the ext4
	// UEFI driver of Debian's refind package).
	Bootloader string `yaml:"bootloader"`
}

// Partition is one GPT partition of an image.
type Partition struct {
	// Role is what the partition is for: "esp" (EFI system partition,
	// FAT32), "boot" (ext4 /boot, XBOOTLDR type: holds kernels and boot
	// entries), "root" (ext4, the OSTree sysroot) or "var" (ext4, mounted
	// on /var instead of the stateroot's /var directory).
	Role string `yaml:"role"`
	// Size is the partition's size; "fit" (root and var only) sizes it to
	// its content plus the image's free-space; omitted on one partition,
	// it takes what the image's size leaves (or means "fit" when the image
	// is sized to fit).
	Size *Size `yaml:"size"`
	// Label is the filesystem label and GPT partition name (default: the
	// role, "ESP" for the esp). At most 11 characters on the ESP, 16 on
	// ext4.
	Label string `yaml:"label"`
	// Filesystem is "vfat" for the esp and "ext4" for the others (the
	// only choices; the field exists to make a layout explicit).
	Filesystem string `yaml:"filesystem"`
}

// Size is a size in bytes, or "fit". In YAML: an integer (bytes) or a
// number with a unit: K, M, G, T and KiB, MiB, GiB, TiB are powers of
// 1024; KB, MB, GB, TB are powers of 1000.
type Size struct {
	Bytes int64
	Fit   bool
}

func (s Size) String() string {
	if s.Fit {
		return "fit"
	}
	return FormatBytes(s.Bytes)
}

// FormatBytes prints a size with the largest binary unit that divides it.
func FormatBytes(n int64) string {
	units := []string{"TiB", "GiB", "MiB", "KiB"}
	for i, u := range units {
		m := int64(1) << (10 * (4 - i))
		if n != 0 && n%m == 0 {
			return fmt.Sprintf("%d %s", n/m, u)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}

var sizeRe = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(i?B?)$`)

// ParseSize reads "fit", "4GiB", "512 MiB", "1G", "2000000000", "1.5GiB".
func ParseSize(v string) (Size, error) {
	v = strings.TrimSpace(v)
	if v == "fit" {
		return Size{Fit: true}, nil
	}
	m := sizeRe.FindStringSubmatch(v)
	if m == nil || (m[2] == "" && m[3] != "") || m[3] == "i" {
		return Size{}, fmt.Errorf("invalid size %q: use bytes or a number with K, M, G, T, KiB, MiB, GiB, TiB, KB, MB, GB, TB, or \"fit\"", v)
	}
	f, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return Size{}, fmt.Errorf("invalid size %q", v)
	}
	base := 1024.0
	if m[3] == "B" {
		base = 1000
	}
	mult := 1.0
	switch m[2] {
	case "K":
		mult = base
	case "M":
		mult = base * base
	case "G":
		mult = base * base * base
	case "T":
		mult = base * base * base * base
	}
	b := f * mult
	if b > 1<<62 {
		return Size{}, fmt.Errorf("invalid size %q: too large", v)
	}
	return Size{Bytes: int64(b)}, nil
}

// UnmarshalYAML reads a scalar size.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: invalid size: expected a size like 4GiB or \"fit\", not a list or mapping", n.Line)}}
	}
	v, err := ParseSize(n.Value)
	if err != nil {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %v", n.Line, err)}}
	}
	*s = v
	return nil
}

const (
	defaultESPSize   = 256 << 20
	defaultBootSize  = 512 << 20
	defaultFreeSpace = 1 << 30
)

var imageNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

func (r *Recipe) imageDefaults() {
	for i := range r.Outputs.Images {
		im := &r.Outputs.Images[i]
		if im.Name == "" {
			im.Name = r.Name
		}
		if im.Format == "" {
			im.Format = "raw"
		}
		if im.Size == (Size{}) {
			im.Size = Size{Fit: true}
		}
		if im.FreeSpace == nil {
			im.FreeSpace = &Size{Bytes: defaultFreeSpace}
		}
		if im.Bootloader == "" {
			im.Bootloader = "systemd-boot"
		}
		if len(im.Partitions) == 0 {
			esp, boot := Size{Bytes: defaultESPSize}, Size{Bytes: defaultBootSize}
			im.Partitions = []Partition{
				{Role: "esp", Size: &esp},
				{Role: "boot", Size: &boot},
				{Role: "root"},
			}
		}
		for j := range im.Partitions {
			p := &im.Partitions[j]
			if p.Label == "" {
				p.Label = p.Role
				if p.Role == "esp" {
					p.Label = "ESP"
				}
			}
			if p.Filesystem == "" {
				p.Filesystem = "ext4"
				if p.Role == "esp" {
					p.Filesystem = "vfat"
				}
			}
		}
	}
}

// checkImages validates outputs.images; add reports a problem at a path.
func (r *Recipe) checkImages(add func(path []any, format string, args ...any)) {
	if len(r.Outputs.Images) == 0 {
		return
	}
	if r.Kernel.Package == "" {
		add([]any{"outputs", "images"}, "outputs.images needs a kernel: set kernel.package (e.g. linux-image-%s)", r.Architecture)
	}
	if _, ok := EFIArch(r.Architecture); !ok {
		add([]any{"architecture"}, "disk images boot with UEFI on amd64 and arm64; architecture %q has no supported boot chain", r.Architecture)
	}
	names := map[string]int{}
	for i, im := range r.Outputs.Images {
		at := []any{"outputs", "images", i}
		if !imageNameRe.MatchString(im.Name) {
			add(append(at, "name"), "outputs.images[%d].name %q: use letters, digits, \".\", \"_\" and \"-\"", i, im.Name)
		}
		key := im.Name + "." + im.Format
		if j, dup := names[key]; dup {
			add(append(at, "name"), "outputs.images[%d] writes %s, like outputs.images[%d]: give one of them another name", i, key, j)
		}
		names[key] = i
		if im.Format != "raw" && im.Format != "qcow2" {
			add(append(at, "format"), "outputs.images[%d].format %q: use raw or qcow2", i, im.Format)
		}
		if im.Bootloader != "systemd-boot" {
			add(append(at, "bootloader"), "outputs.images[%d].bootloader %q: the supported boot chain is systemd-boot (GRUB cannot read ostree's boot entries on Debian)", i, im.Bootloader)
		}
		if im.FreeSpace != nil && im.FreeSpace.Fit {
			add(append(at, "free-space"), "outputs.images[%d].free-space cannot be \"fit\"", i)
		}
		if !im.Size.Fit && im.Size.Bytes < 64<<20 {
			add(append(at, "size"), "outputs.images[%d].size %s is too small for any bootable image", i, im.Size)
		}
		for j, a := range im.KernelArguments {
			if a == "" || strings.ContainsAny(a, " \t\n") {
				add(append(at, "kernel-arguments", j), "outputs.images[%d].kernel-arguments[%d] %q: one argument per entry, without spaces", i, j, a)
			} else if strings.HasPrefix(a, "ostree=") || strings.HasPrefix(a, "root=") {
				add(append(at, "kernel-arguments", j), "outputs.images[%d].kernel-arguments[%d] %q: the image sets %s itself", i, j, a, strings.SplitN(a, "=", 2)[0]+"=")
			}
		}
		roles := map[string]int{}
		unsized := -1
		for j, p := range im.Partitions {
			pat := append(append([]any{}, at...), "partitions", j)
			switch p.Role {
			case "esp", "boot", "root", "var":
			default:
				add(append(pat, "role"), "outputs.images[%d].partitions[%d].role %q: use esp, boot, root or var", i, j, p.Role)
				continue
			}
			if k, dup := roles[p.Role]; dup {
				add(append(pat, "role"), "outputs.images[%d].partitions[%d]: a second %s partition (the first is partitions[%d])", i, j, p.Role, k)
			}
			roles[p.Role] = j
			want := "ext4"
			if p.Role == "esp" {
				want = "vfat"
			}
			if p.Filesystem != want {
				add(append(pat, "filesystem"), "outputs.images[%d].partitions[%d].filesystem %q: the %s partition is %s", i, j, p.Filesystem, p.Role, want)
			}
			max := 16
			if p.Role == "esp" {
				max = 11
			}
			if len(p.Label) > max || strings.ContainsAny(p.Label, " \t\n/\"") || p.Label == "" {
				add(append(pat, "label"), "outputs.images[%d].partitions[%d].label %q: at most %d characters, no spaces, quotes or slashes", i, j, p.Label, max)
			}
			if p.Size == nil {
				if unsized >= 0 {
					add(append(pat, "size"), "outputs.images[%d].partitions[%d] has no size, like partitions[%d]: only one partition can take the rest of the disk", i, j, unsized)
				}
				unsized = j
				if p.Role == "esp" || p.Role == "boot" {
					add(pat, "outputs.images[%d].partitions[%d]: the %s partition needs a size", i, j, p.Role)
				}
			} else if p.Size.Fit {
				if p.Role == "esp" || p.Role == "boot" {
					add(append(pat, "size"), "outputs.images[%d].partitions[%d].size: \"fit\" is for root and var; give the %s partition a size", i, j, p.Role)
				}
			} else {
				min := int64(16 << 20)
				if p.Role == "esp" {
					min = 34 << 20 // the smallest FAT32 with a valid cluster count
				}
				if p.Size.Bytes < min {
					add(append(pat, "size"), "outputs.images[%d].partitions[%d].size %s: the %s partition needs at least %s", i, j, p.Size, p.Role, FormatBytes(min))
				}
			}
		}
		for _, need := range []string{"esp", "boot", "root"} {
			if _, ok := roles[need]; !ok {
				why := map[string]string{
					"esp":  "UEFI firmware starts the boot loader from it",
					"boot": "systemd-boot reads ostree's boot entries and kernels from an ext4 XBOOTLDR /boot (FAT cannot hold ostree's loader symlink)",
					"root": "it holds the OSTree sysroot",
				}[need]
				add(append(at, "partitions"), "outputs.images[%d].partitions: add a %s partition: %s", i, need, why)
			}
		}
	}
}

// EFIArch is the UEFI architecture suffix of a Debian architecture (x64,
// aa64) and whether disk images support it.
func EFIArch(debArch string) (string, bool) {
	switch debArch {
	case "amd64":
		return "x64", true
	case "arm64":
		return "aa64", true
	}
	return "", false
}

// BootPackages are the packages whose files the image's boot chain takes
// without installing them: systemd-boot's EFI binary and the ext4 UEFI
// driver from refind. Empty when the recipe writes no images.
func (r *Recipe) BootPackages() []string {
	if len(r.Outputs.Images) == 0 {
		return nil
	}
	return []string{"systemd-boot-efi", "refind"}
}
