package recipe

import (
	"strings"
	"testing"
)

const imageBase = `name: img
sources:
  - uri: http://deb.debian.org/debian
    suite: trixie
    signed-by: [/usr/share/keyrings/debian-archive-keyring.gpg]
kernel:
  package: linux-image-amd64
`

func TestImageDefaults(t *testing.T) {
	r, err := Parse([]byte(imageBase+"outputs:\n  images:\n    - {}\n    - {name: vm, format: qcow2, size: 8GiB, free-space: 2G}\n"), "/x/r.yaml")
	if err != nil {
		t.Fatal(err)
	}
	im := r.Outputs.Images[0]
	if im.Name != "img" || im.Format != "raw" || !im.Size.Fit || im.FreeSpace.Bytes != 1<<30 || im.Bootloader != "systemd-boot" {
		t.Errorf("defaults: %+v", im)
	}
	var got []string
	for _, p := range im.Partitions {
		s := "rest"
		if p.Size != nil {
			s = p.Size.String()
		}
		got = append(got, p.Role+":"+p.Label+":"+p.Filesystem+":"+s)
	}
	if w := "esp:ESP:vfat:256 MiB boot:boot:ext4:512 MiB root:root:ext4:rest"; strings.Join(got, " ") != w {
		t.Errorf("default layout %v, want %s", got, w)
	}
	vm := r.Outputs.Images[1]
	if vm.Size.Bytes != 8<<30 || vm.FreeSpace.Bytes != 2<<30 || vm.Format != "qcow2" {
		t.Errorf("vm: %+v", vm)
	}
	if bp := r.BootPackages(); strings.Join(bp, " ") != "systemd-boot-efi refind" {
		t.Errorf("boot packages %v", bp)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"1024": 1024, "4GiB": 4 << 30, "4G": 4 << 30, "512 MiB": 512 << 20, "1.5GiB": 3 << 29, "2GB": 2e9, "10KB": 10000, "3T": 3 << 40,
	} {
		s, err := ParseSize(in)
		if err != nil || s.Bytes != want || s.Fit {
			t.Errorf("ParseSize(%q) = %+v, %v; want %d", in, s, err, want)
		}
	}
	for _, bad := range []string{"", "G", "4Gi", "4 gib", "-1G", "4XB", "fits"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
}

func TestImageValidation(t *testing.T) {
	cases := []struct{ name, yaml, want string }{
		{"format", "    - format: vmdk\n", `10: outputs.images[0].format "vmdk": use raw or qcow2`},
		{"bootloader", "    - bootloader: grub\n", `10: outputs.images[0].bootloader "grub": the supported boot chain is systemd-boot (GRUB cannot read ostree's boot entries on Debian)`},
		{"size", "    - size: 4 parsecs\n", `10: invalid size "4 parsecs": use bytes or a number with K, M, G, T, KiB, MiB, GiB, TiB, KB, MB, GB, TB, or "fit"`},
		{"tiny", "    - size: 10M\n", `10: outputs.images[0].size 10 MiB is too small for any bootable image`},
		{"no boot", "    - partitions:\n        - {role: esp, size: 100M}\n        - {role: root}\n",
			`10: outputs.images[0].partitions: add a boot partition: systemd-boot reads ostree's boot entries and kernels from an ext4 XBOOTLDR /boot (FAT cannot hold ostree's loader symlink)`},
		{"role", "    - partitions:\n        - {role: swap, size: 1G}\n        - {role: esp, size: 100M}\n        - {role: boot, size: 100M}\n        - {role: root}\n",
			`11: outputs.images[0].partitions[0].role "swap": use esp, boot, root or var`},
		{"two rests", "    - partitions:\n        - {role: esp, size: 100M}\n        - {role: boot, size: 100M}\n        - {role: root}\n        - {role: var}\n",
			`14: outputs.images[0].partitions[3] has no size, like partitions[2]: only one partition can take the rest of the disk`},
		{"esp fs", "    - partitions:\n        - {role: esp, size: 100M, filesystem: ext4}\n        - {role: boot, size: 100M}\n        - {role: root}\n",
			`11: outputs.images[0].partitions[0].filesystem "ext4": the esp partition is vfat`},
		{"small esp", "    - partitions:\n        - {role: esp, size: 20M}\n        - {role: boot, size: 100M}\n        - {role: root}\n",
			`11: outputs.images[0].partitions[0].size 20 MiB: the esp partition needs at least 34 MiB`},
		{"label", "    - partitions:\n        - {role: esp, size: 100M, label: EFISYSTEMPART}\n        - {role: boot, size: 100M}\n        - {role: root}\n",
			`11: outputs.images[0].partitions[0].label "EFISYSTEMPART": at most 11 characters, no spaces, quotes or slashes`},
		{"karg", "    - kernel-arguments: [quiet, root=/dev/sda]\n", `10: outputs.images[0].kernel-arguments[1] "root=/dev/sda": the image sets root= itself`},
		{"duplicate", "    - {name: a}\n    - {name: a}\n", `11: outputs.images[1] writes a.raw, like outputs.images[0]: give one of them another name`},
		{"unknown key", "    - {name: a, colour: red}\n", `10: unknown key "colour" in outputs.images[0]`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(imageBase+"outputs:\n  images:\n"+c.yaml), "r.yaml")
			if err == nil {
				t.Fatal("accepted")
			}
			if got := err.Error(); got != "r.yaml:"+c.want {
				t.Errorf("\n got %s\nwant r.yaml:%s", got, c.want)
			}
		})
	}
	_, err := Parse([]byte(strings.Replace(imageBase, "kernel:\n  package: linux-image-amd64\n", "architecture: armhf\n", 1)+"outputs:\n  images: [{}]\n"), "r.yaml")
	if err == nil || !strings.Contains(err.Error(), "needs a kernel") || !strings.Contains(err.Error(), `architecture "armhf" has no supported boot chain`) {
		t.Errorf("armhf without kernel: %v", err)
	}
}
