package initramfs

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// DefaultModules are loaded (with their dependencies and softdeps) when the
// kernel has them as modules: disk controllers of PCs, VMs and ARM boards,
// USB storage, SD/MMC, ext4 and crc32c (ext4's metadata checksums), and a
// USB keyboard for the emergency shell. Names absent from a kernel (ata_piix
// on arm64, say) are reported in Result.Missing but are no error.
var DefaultModules = []string{
	"virtio_pci", "virtio_mmio", "virtio_blk", "virtio_scsi",
	"sd_mod", "ahci", "ata_piix", "nvme",
	"xhci_pci", "xhci_plat_hcd", "ehci_pci", "ehci_platform",
	"usb_storage", "uas",
	"mmc_block", "sdhci_pci", "sdhci_acpi",
	"crc32c_generic", "crc32c", "ext4",
	"usbhid", "hid_generic",
}

// normModName makes '-' and '_' equivalent, as kmod does.
func normModName(s string) string { return strings.ReplaceAll(s, "-", "_") }

// modNameFromPath turns "kernel/fs/ext4/ext4.ko.xz" into "ext4".
func modNameFromPath(p string) string {
	b := path.Base(p)
	if i := strings.Index(b, ".ko"); i >= 0 {
		b = b[:i]
	}
	return normModName(b)
}

// stripCompression turns "x.ko.xz" into "x.ko".
func stripCompression(p string) string {
	for _, s := range []string{".xz", ".zst", ".gz"} {
		if strings.HasSuffix(p, ".ko"+s) {
			return strings.TrimSuffix(p, s)
		}
	}
	return p
}

// modIndex is what the kernel's depmod files say about its modules.
type modIndex struct {
	paths   map[string]string   // name -> path relative to the modules dir
	deps    map[string][]string // name -> dependency names, modules.dep order
	builtin map[string]bool
	aliases map[string][]string // normalized alias -> module names (file order)
	pre     map[string][]string // softdep pre: names or aliases
	post    map[string][]string // softdep post: names or aliases
	// aliasLines keeps modules.alias lines per module, for the filtered
	// copy in the initramfs.
	aliasLines map[string][]string
}

func parseModIndex(dep, builtin, builtinModinfo, alias, softdep []byte) (*modIndex, error) {
	m := &modIndex{
		paths:      map[string]string{},
		deps:       map[string][]string{},
		builtin:    map[string]bool{},
		aliases:    map[string][]string{},
		pre:        map[string][]string{},
		post:       map[string][]string{},
		aliasLines: map[string][]string{},
	}
	sc := bufio.NewScanner(bytes.NewReader(dep))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		mod, rest, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("modules.dep: malformed line %q", line)
		}
		name := modNameFromPath(mod)
		if _, dup := m.paths[name]; dup {
			continue // depmod lists the first (highest priority) one first
		}
		m.paths[name] = strings.TrimSpace(mod)
		var ds []string
		for _, d := range strings.Fields(rest) {
			ds = append(ds, modNameFromPath(d))
		}
		m.deps[name] = ds
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("modules.dep: %w", err)
	}
	for _, line := range strings.Split(string(builtin), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			m.builtin[modNameFromPath(line)] = true
		}
	}
	// modules.builtin.modinfo: NUL-separated "module.key=value" strings;
	// aliases of built-in code live there.
	for _, rec := range bytes.Split(builtinModinfo, []byte{0}) {
		k, v, ok := strings.Cut(string(rec), "=")
		if !ok {
			continue
		}
		mod, key, ok := strings.Cut(k, ".")
		if !ok || key != "alias" {
			continue
		}
		mod = normModName(mod)
		m.builtin[mod] = true
		m.addAlias(v, mod)
	}
	for _, line := range strings.Split(string(alias), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "alias" {
			continue
		}
		mod := normModName(f[2])
		m.addAlias(f[1], mod)
		m.aliasLines[mod] = append(m.aliasLines[mod], strings.TrimSpace(line))
	}
	for _, line := range strings.Split(string(softdep), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "softdep" {
			continue
		}
		mod := normModName(f[1])
		var dst map[string][]string
		for _, w := range f[2:] {
			switch w {
			case "pre:":
				dst = m.pre
			case "post:":
				dst = m.post
			default:
				if dst != nil { // words before pre:/post: are ignored, as kmod does
					dst[mod] = append(dst[mod], w)
				}
			}
		}
	}
	return m, nil
}

func (m *modIndex) addAlias(alias, mod string) {
	a := normModName(alias)
	for _, x := range m.aliases[a] {
		if x == mod {
			return
		}
	}
	m.aliases[a] = append(m.aliases[a], mod)
}

// lookup resolves a module name or alias. It returns the loadable modules
// it stands for; builtin is true when the kernel has it built in.
func (m *modIndex) lookup(name string) (mods []string, builtin bool) {
	n := normModName(name)
	if _, ok := m.paths[n]; ok {
		return []string{n}, false
	}
	if m.builtin[n] {
		return nil, true
	}
	for _, t := range m.aliases[n] {
		if _, ok := m.paths[t]; ok {
			mods = append(mods, t)
		} else if m.builtin[t] {
			builtin = true
		}
	}
	return mods, builtin
}

// closure computes the load order of roots: for every module its softdep
// "pre:" modules first, then its dependencies (deepest first), then the
// module, then its softdep "post:" modules. The order depends only on the
// inputs. missing lists the roots that are neither modules, built in, nor
// aliases of either; builtin lists roots that are built in.
func (m *modIndex) closure(roots []string) (order, missing, builtin []string) {
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(n string)
	visitName := func(name string) {
		mods, _ := m.lookup(name)
		for _, x := range mods {
			visit(x)
		}
	}
	visit = func(n string) {
		if state[n] != 0 {
			return
		}
		state[n] = 1
		for _, s := range m.pre[n] {
			visitName(s)
		}
		ds := m.deps[n]
		for i := len(ds) - 1; i >= 0; i-- {
			if _, ok := m.paths[ds[i]]; ok {
				visit(ds[i])
			}
		}
		state[n] = 2
		order = append(order, n)
		for _, s := range m.post[n] {
			visitName(s)
		}
	}
	seenRoot := map[string]bool{}
	for _, r := range roots {
		key := normModName(r)
		if seenRoot[key] {
			continue
		}
		seenRoot[key] = true
		mods, bi := m.lookup(r)
		if len(mods) == 0 {
			if bi {
				builtin = append(builtin, r)
			} else {
				missing = append(missing, r)
			}
			continue
		}
		for _, x := range mods {
			visit(x)
		}
	}
	return order, missing, builtin
}

// filteredDep renders modules.dep for the modules in order only, with the
// uncompressed paths, so busybox modprobe works in the initramfs.
func (m *modIndex) filteredDep(order []string) []byte {
	in := map[string]bool{}
	for _, n := range order {
		in[n] = true
	}
	names := append([]string(nil), order...)
	sort.Slice(names, func(i, j int) bool { return m.paths[names[i]] < m.paths[names[j]] })
	var b bytes.Buffer
	for _, n := range names {
		b.WriteString(stripCompression(m.paths[n]))
		b.WriteString(":")
		for _, d := range m.deps[n] {
			if in[d] {
				b.WriteString(" ")
				b.WriteString(stripCompression(m.paths[d]))
			}
		}
		b.WriteString("\n")
	}
	return b.Bytes()
}

// filteredAlias renders the modules.alias lines of the modules in order.
func (m *modIndex) filteredAlias(order []string) []byte {
	names := append([]string(nil), order...)
	sort.Strings(names)
	var b bytes.Buffer
	for _, n := range names {
		for _, l := range m.aliasLines[n] {
			b.WriteString(l)
			b.WriteString("\n")
		}
	}
	return b.Bytes()
}

// maxModuleSize bounds a decompressed module (the largest Debian modules
// are around 20 MiB).
const maxModuleSize = 256 << 20

// decompressModule returns the plain ELF object of a module file.
func decompressModule(name string, data []byte) ([]byte, error) {
	var r io.Reader
	switch {
	case strings.HasSuffix(name, ".ko"):
		return data, nil
	case strings.HasSuffix(name, ".ko.xz"):
		xr, err := xz.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		r = xr
	case strings.HasSuffix(name, ".ko.zst"):
		zr, err := zstd.NewReader(bytes.NewReader(data), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(name, ".ko.gz"):
		gr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		r = gr
	default:
		return nil, fmt.Errorf("%s: unknown module file suffix", name)
	}
	out, err := io.ReadAll(io.LimitReader(r, maxModuleSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: decompressing: %w", name, err)
	}
	if len(out) > maxModuleSize {
		return nil, fmt.Errorf("%s: decompressed module larger than %d bytes", name, maxModuleSize)
	}
	if !bytes.HasPrefix(out, []byte("\x7fELF")) {
		return nil, fmt.Errorf("%s: decompressed data is not an ELF object", name)
	}
	return out, nil
}
