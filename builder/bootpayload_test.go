package builder

import (
	"strings"
	"testing"

	"github.com/apt-ostree/apt-ostree-factory/ostree"
)

func debTreeWith(pkg, version string, files map[string]string) *DebTree {
	dirMeta := ostree.FileMeta{Mode: ostree.ModeDir | 0o755}
	root := ostree.NewMemDir(dirMeta)
	for p, data := range files {
		dir := p[:strings.LastIndex(p, "/")]
		root.MkdirAll(dir, dirMeta)
		root.AddFile(p, &ostree.MemFile{Header: ostree.FileHeader{FileMeta: ostree.FileMeta{Mode: ostree.ModeRegular | 0o644}, Size: uint64(len(data))}, Data: []byte(data)})
	}
	return &DebTree{Package: pkg, Version: version, Architecture: "amd64", Root: root}
}

func TestAddBootPayload(t *testing.T) {
	sdboot := debTreeWith("systemd-boot-efi", "257-1", map[string]string{"usr/lib/systemd/boot/efi/systemd-bootx64.efi": "MZ sd"})
	refind := debTreeWith("refind", "0.14-1", map[string]string{"usr/share/refind/refind/drivers_x64/ext4_x64.efi": "MZ ext4"})
	root := ostree.NewMemDir(ostree.FileMeta{Mode: ostree.ModeDir | 0o755})
	if err := addBootPayload(root, "x64", []*DebTree{sdboot, refind}); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{
		"usr/lib/apt-ostree/boot/BOOTX64.EFI":         "MZ sd",
		"usr/lib/apt-ostree/boot/drivers/ext4x64.efi": "MZ ext4",
	} {
		_, f := root.Lookup(p)
		if f == nil || string(f.Data) != want {
			t.Errorf("%s: %+v", p, f)
		}
	}
	_, src := root.Lookup("usr/lib/apt-ostree/boot/SOURCES")
	if src == nil || !strings.Contains(string(src.Data), "BOOTX64.EFI systemd-boot-efi 257-1 /usr/lib/systemd/boot/efi/systemd-bootx64.efi") {
		t.Errorf("SOURCES: %+v", src)
	}

	// A boot package without the member, and a missing boot package.
	empty := debTreeWith("refind", "0.14-1", map[string]string{"usr/share/doc/refind/README": "x"})
	err := addBootPayload(ostree.NewMemDir(ostree.FileMeta{Mode: ostree.ModeDir | 0o755}), "x64", []*DebTree{sdboot, empty})
	if err == nil || !strings.Contains(err.Error(), "boot package refind:amd64=0.14-1 has no /usr/share/refind/refind/drivers_x64/ext4_x64.efi") {
		t.Errorf("missing member: %v", err)
	}
	err = addBootPayload(ostree.NewMemDir(ostree.FileMeta{Mode: ostree.ModeDir | 0o755}), "x64", []*DebTree{sdboot})
	if err == nil || !strings.Contains(err.Error(), "boot package refind was not resolved") {
		t.Errorf("missing package: %v", err)
	}
}
