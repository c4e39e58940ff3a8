package fat32

import (
	"context"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf16"
)

// efiApp is a minimal x86-64 PE32+ EFI application that prints msg on
// ConOut and returns EFI_LOAD_ERROR, so that the boot manager goes on to
// the next boot option, the UEFI shell.
func efiApp(msg string) []byte {
	img := make([]byte, 0x400)
	le := binary.LittleEndian
	copy(img, "MZ")
	le.PutUint32(img[0x3C:], 0x40)
	copy(img[0x40:], "PE\x00\x00")
	coff := img[0x44:]
	le.PutUint16(coff[0:], 0x8664) // x86-64
	le.PutUint16(coff[2:], 1)      // sections
	le.PutUint16(coff[16:], 0xF0)  // optional header size
	le.PutUint16(coff[18:], 0x22)  // executable, large address aware
	opt := img[0x58:]
	le.PutUint16(opt[0:], 0x20B) // PE32+
	le.PutUint32(opt[4:], 0x200) // size of code
	le.PutUint32(opt[16:], 0x1000)
	le.PutUint32(opt[20:], 0x1000)
	le.PutUint64(opt[24:], 0x10000000) // image base
	le.PutUint32(opt[32:], 0x1000)     // section alignment
	le.PutUint32(opt[36:], 0x200)      // file alignment
	le.PutUint32(opt[56:], 0x2000)     // size of image
	le.PutUint32(opt[60:], 0x200)      // size of headers
	le.PutUint16(opt[68:], 10)         // EFI application
	le.PutUint64(opt[72:], 0x10000)
	le.PutUint64(opt[80:], 0x10000)
	le.PutUint32(opt[108:], 16) // data directories
	sec := img[0x58+0xF0:]
	copy(sec, ".text")
	le.PutUint32(sec[8:], 0x200)
	le.PutUint32(sec[12:], 0x1000)
	le.PutUint32(sec[16:], 0x200)
	le.PutUint32(sec[20:], 0x200)
	le.PutUint32(sec[36:], 0x60000020) // code, execute, read
	code := []byte{
		0x48, 0x83, 0xEC, 0x28, // sub rsp, 40
		0x48, 0x8B, 0x4A, 0x40, // mov rcx, [rdx+64] (SystemTable->ConOut)
		0x48, 0x8D, 0x15, 33, 0, 0, 0, // lea rdx, [rip+33] (msg at 48)
		0xFF, 0x51, 0x08, // call [rcx+8] (OutputString)
		0x48, 0x83, 0xC4, 0x28, // add rsp, 40
		0x48, 0xB8, 1, 0, 0, 0, 0, 0, 0, 0x80, // mov rax, EFI_LOAD_ERROR
		0xC3, // ret
	}
	copy(img[0x200:], code)
	for i, u := range utf16.Encode([]rune(msg)) {
		le.PutUint16(img[0x200+48+2*i:], u)
	}
	return img
}

// TestOVMF boots OVMF (QEMU, TCG) on a disk whose MBR partition 1 (type
// 0xEF, at LBA 2048) is the ESP: the firmware runs \EFI\BOOT\BOOTX64.EFI,
// then its UEFI shell runs \startup.nsh, which reads files through the
// firmware's FAT driver (as systemd-boot does).
func TestOVMF(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	needTool(t, "qemu-system-x86_64")
	code, vars := "/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"
	for _, p := range []string{code, vars} {
		if _, err := os.Stat(p); err != nil {
			if os.Getenv("AOF_REQUIRE_TOOLS") == "1" {
				t.Fatal(err)
			}
			t.Skip(err)
		}
	}
	const start, size = 2048, 64 * mb
	f, err := New(size, Options{Label: "ESP", VolumeID: 1, Time: testTime, HiddenSectors: start})
	if err != nil {
		t.Fatal(err)
	}
	files, dirs := espTree()
	files[0].data = efiApp("\r\nFAT32-BOOTX64-OK\r\n")
	files = append(files, testFile{"/startup.nsh", []byte(strings.Join([]string{
		"echo STARTUP-BEGIN",
		"type fs0:\\loader\\loader.conf",
		"ls fs0:\\EFI\\systemd\\drivers\\",
		`type "fs0:\EFI\Linux\Some Long Mixed-Case Name (v1.2.3).conf"`,
		"type fs0:\\many\\file-with-a-longer-name-099.txt",
		"echo STARTUP-END",
		"reset -s",
		"",
	}, "\r\n"))})
	addTree(t, f, files, dirs)
	disk := newImage(t, start*512+size)
	if err := writeImage(t, f, disk, start*512); err != nil {
		t.Fatal(err)
	}
	var mbr [512]byte
	p := mbr[446:]
	copy(p[1:4], []byte{0xFE, 0xFF, 0xFF})
	p[4] = 0xEF
	copy(p[5:8], []byte{0xFE, 0xFF, 0xFF})
	binary.LittleEndian.PutUint32(p[8:], start)
	binary.LittleEndian.PutUint32(p[12:], size/512)
	mbr[510], mbr[511] = 0x55, 0xAA
	fh, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = fh.WriteAt(mbr[:], 0)
	fh.Close()
	if err != nil {
		t.Fatal(err)
	}
	varsCopy := filepath.Join(t.TempDir(), "vars.fd")
	b, err := os.ReadFile(vars)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(varsCopy, b, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", "-machine", "q35,accel=tcg", "-m", "256",
		"-display", "none", "-serial", "stdio", "-no-reboot", "-net", "none",
		"-drive", "if=pflash,format=raw,readonly=on,file="+code,
		"-drive", "if=pflash,format=raw,file="+varsCopy,
		"-drive", "format=raw,if=virtio,file="+disk)
	t0 := time.Now()
	raw, err := cmd.CombinedOutput()
	out := regexp.MustCompile(`\x1b\[[0-9;]*[A-Za-z]`).ReplaceAllString(string(raw), "")
	if err != nil {
		t.Fatalf("qemu: %v\n%s", err, out)
	}
	t.Logf("OVMF run took %v", time.Since(t0).Round(time.Second))
	for _, want := range []string{
		"FAT32-BOOTX64-OK",
		"STARTUP-BEGIN",
		"timeout 3",
		"console-mode keep",
		"ext4x64.efi",
		"307,200",
		"title Some",
		"file 99",
		"STARTUP-END",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the OVMF output lacks %q", want)
		}
	}
	if t.Failed() || testing.Verbose() {
		i := strings.Index(out, "FAT32-BOOTX64-OK")
		if i < 0 {
			i = max(0, len(out)-4000)
		}
		t.Logf("OVMF output:\n%s", out[i:])
	}
}
