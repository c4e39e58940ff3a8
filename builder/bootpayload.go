package builder

import (
	"fmt"
	"sort"
	"strings"

	"github.com/apt-ostree/apt-ostree-factory/ostree"
)

// BootPayloadDir is where a commit carries the boot chain's EFI binaries
// for disk images (diskimage.BootPayloadDir), taken from the target's
// packages without installing them.
const BootPayloadDir = "usr/lib/apt-ostree/boot"

// bootFile is one EFI binary of the boot chain: the package member it is
// taken from and its name under BootPayloadDir, per UEFI architecture
// (x64, aa64).
type bootFile struct {
	pkg, member, name string
}

func bootFiles(efiArch string) []bootFile {
	return []bootFile{
		// systemd-boot, started by the firmware from the ESP's removable
		// media path.
		{"systemd-boot-efi", "usr/lib/systemd/boot/efi/systemd-boot" + efiArch + ".efi", "BOOT" + strings.ToUpper(efiArch) + ".EFI"},
		// rEFInd's ext4 driver: systemd-boot loads every driver in
		// \EFI\systemd\drivers\ and then reads /boot (ext4 XBOOTLDR).
		{"refind", "usr/share/refind/refind/drivers_" + efiArch + "/ext4_" + efiArch + ".efi", "drivers/ext4" + efiArch + ".efi"},
	}
}

// addBootPayload copies the boot chain's files from the unpacked boot
// packages into root at BootPayloadDir, with a SOURCES file naming the
// package versions they came from. It fails, naming the package and the
// member, when a file is missing.
func addBootPayload(root *ostree.MemDir, efiArch string, trees []*DebTree) error {
	byName := map[string]*DebTree{}
	for _, t := range trees {
		byName[t.Package] = t
	}
	dir, err := root.MkdirAll(BootPayloadDir, ostree.FileMeta{Mode: ostree.ModeDir | 0o755})
	if err != nil {
		return fmt.Errorf("%s: %w", BootPayloadDir, err)
	}
	var sources []string
	for _, bf := range bootFiles(efiArch) {
		t := byName[bf.pkg]
		if t == nil {
			return fmt.Errorf("boot package %s was not resolved (the lock file has no boot-package record for it: run resolve again)", bf.pkg)
		}
		_, f := t.Root.Lookup(bf.member)
		if f == nil || f.Header.Mode&ostree.ModeTypeMask != ostree.ModeRegular {
			return fmt.Errorf("boot package %s has no /%s: the disk image's boot chain needs it", t.ID(), bf.member)
		}
		if i := strings.LastIndex(bf.name, "/"); i > 0 {
			if _, err := dir.MkdirAll(bf.name[:i], ostree.FileMeta{Mode: ostree.ModeDir | 0o755}); err != nil {
				return fmt.Errorf("%s/%s: %w", BootPayloadDir, bf.name, err)
			}
		}
		// The object keeps the package's owner and mode: they are part
		// of its checksum.
		c := *f
		if err := dir.AddFile(bf.name, &c); err != nil {
			return fmt.Errorf("%s/%s: %w", BootPayloadDir, bf.name, err)
		}
		sources = append(sources, fmt.Sprintf("%s %s %s /%s", bf.name, t.Package, t.Version, bf.member))
	}
	sort.Strings(sources)
	text := "# file package version member: the boot chain's EFI binaries, for disk images\n" + strings.Join(sources, "\n") + "\n"
	return dir.AddFile("SOURCES", &ostree.MemFile{
		Header: ostree.FileHeader{FileMeta: ostree.FileMeta{Mode: ostree.ModeRegular | 0o644}, Size: uint64(len(text))},
		Data:   []byte(text), Origin: "boot payload SOURCES",
	})
}
