package diskimage

import (
	"io"
	"sort"
	"strings"
	"testing"
)

func TestSeedFollowsTargetOstree(t *testing.T) {
	for _, tc := range []struct {
		version, entry string
		varNames       string
	}{
		{"2022.7-2+deb12u1", "ostree-1-testos.conf", ".ostree-selabeled lib lock log run tmp"},
		{"2025.2-1", "ostree-1.conf", ".ostree-selabeled"},
	} {
		repo, c := fixtureCommit(t, tc.version)
		s, err := Seed(Deployment{Repo: repo, Commit: c, Branch: "testos/x86_64", Remote: "origin", RemoteURL: "http://example.com/repo",
			Stateroot: "testos", KernelArgs: []string{"root=UUID=x", "rw"}})
		if err != nil {
			t.Fatal(err)
		}
		if s.EntryName != tc.entry {
			t.Errorf("%s: entry %s, want %s", tc.version, s.EntryName, tc.entry)
		}
		if s.Boot.Lookup("/loader.1/entries/"+tc.entry) == nil || s.Boot.Lookup("/loader").Target != "loader.1" {
			t.Errorf("%s: no loader.1/entries/%s behind the loader link", tc.version, tc.entry)
		}
		names := sortedNames(s.Var.Root)
		sort.Strings(names)
		if got := strings.Join(names, " "); got != tc.varNames {
			t.Errorf("%s: stateroot var has %q, want %q", tc.version, got, tc.varNames)
		}
		want := "title Test OS 1 1.0 (ostree:0)\nversion 1\noptions root=UUID=x rw ostree=/ostree/boot.1/testos/" + s.BootCsum + "/0\n" +
			"linux /ostree/testos-" + s.BootCsum + "/vmlinuz-6.1.0-test\ninitrd /ostree/testos-" + s.BootCsum + "/initramfs-6.1.0-test.img\n"
		if s.Entry != want {
			t.Errorf("%s: entry\n%s\nwant\n%s", tc.version, s.Entry, want)
		}
		origin := s.Root.Lookup("/ostree/deploy/testos/deploy/" + c.String() + ".0.origin")
		if origin == nil || origin.Size != int64(len("[origin]\nrefspec=origin:testos/x86_64\n")) {
			t.Errorf("%s: origin %+v", tc.version, origin)
		}
		if len(s.EFI) != 2 || s.EFI["BOOTX64.EFI"] == nil || s.EFI["drivers/ext4x64.efi"] == nil {
			t.Errorf("%s: EFI payload %v", tc.version, s.EFI)
		}
	}
}

func TestSeparateVarPartition(t *testing.T) {
	needTool(t, "e2fsck", "sgdisk")
	repo, c := fixtureCommit(t, "2025.2-1")
	im := testImage("withvar", "raw")
	v := im.Partitions[2]
	v.Role, v.Label = "var", "var"
	size := im.Partitions[0].Size
	v.Size = size
	im.Partitions = append(im.Partitions, v)
	res := writeTestImage(t, repo, c, im, t.TempDir())
	if o := run(t, "sgdisk", "-v", res.Path); !strings.Contains(o, "No problems found") {
		t.Errorf("sgdisk -v:\n%s", o)
	}
	var varUUID string
	for _, p := range res.Partitions {
		if p.Role == "var" {
			varUUID = p.FSUUID
			img := extract(t, res.Path, p)
			run(t, "e2fsck", "-fn", img)
			if o := run(t, "debugfs", "-R", "ls -p /", img); !strings.Contains(o, ".ostree-selabeled") {
				t.Errorf("var filesystem:\n%s", o)
			}
		}
	}
	if o := run(t, "sgdisk", "-i", "4", res.Path); !strings.Contains(o, "4D21B016-B534-45C2-A9FB-5C16E091FD2D") {
		t.Errorf("partition 4 is not of the var type:\n%s", o)
	}
	// The root filesystem's fstab mounts it.
	for _, p := range res.Partitions {
		if p.Role != "root" {
			continue
		}
		img := extract(t, res.Path, p)
		o := run(t, "debugfs", "-R", "cat /ostree/deploy/testos/deploy/"+c.String()+".0/etc/fstab", img)
		if !strings.Contains(o, "UUID="+varUUID+" /var ext4 defaults 0 2") {
			t.Errorf("fstab:\n%s", o)
		}
		if o := run(t, "debugfs", "-R", "ls -p /ostree/deploy/testos/var", img); strings.Contains(o, "selabeled") {
			t.Errorf("the root's stateroot var should be an empty mount point:\n%s", o)
		}
	}
}

// repoConfig is the seeded /ostree/repo/config.
func repoConfig(t *testing.T, s *Sysroot) []byte {
	t.Helper()
	cfg := s.Root.Lookup("/ostree/repo/config")
	if cfg == nil {
		t.Fatal("no /ostree/repo/config")
	}
	rc, err := cfg.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSeedTrustedKeys(t *testing.T) {
	repo, c := fixtureCommit(t, "2025.2-1")
	keyring := []byte("binary keyring bytes")
	for _, tc := range []struct {
		keys   []byte
		verify string
	}{{nil, "gpg-verify=false"}, {keyring, "gpg-verify=true"}} {
		s, err := Seed(Deployment{Repo: repo, Commit: c, Branch: "testos/x86_64", Remote: "origin", RemoteURL: "http://example.com/repo",
			Stateroot: "testos", TrustedKeys: tc.keys})
		if err != nil {
			t.Fatal(err)
		}
		b := repoConfig(t, s)
		if !strings.Contains(string(b), "[remote \"origin\"]\nurl=http://example.com/repo\n"+tc.verify+"\n") {
			t.Errorf("config:\n%s", b)
		}
		kr := s.Root.Lookup("/ostree/repo/origin.trustedkeys.gpg")
		if (kr != nil) != (tc.keys != nil) || (kr != nil && kr.Size != int64(len(keyring))) {
			t.Errorf("keyring %+v with keys %q", kr, tc.keys)
		}
	}
}

func TestSeedEd25519Keys(t *testing.T) {
	repo, c := fixtureCommit(t, "2025.2-1")
	keys := []byte("c2lnbmluZy1rZXktb25lLXB1YmxpYy1ieXRlcy0zMg==\n")
	for _, verify := range []bool{false, true} {
		s, err := Seed(Deployment{Repo: repo, Commit: c, Branch: "testos/x86_64", Remote: "origin", RemoteURL: "http://example.com/repo",
			Stateroot: "testos", Ed25519Keys: keys, Ed25519Verify: verify})
		if err != nil {
			t.Fatal(err)
		}
		b := repoConfig(t, s)
		want := "verification-ed25519-file=/ostree/repo/origin.ed25519\n"
		if verify {
			want += "sign-verify=true\n"
		}
		if !strings.Contains(string(b), "gpg-verify=false\n"+want) || strings.Contains(string(b), "sign-verify") != verify {
			t.Errorf("config with verify=%v:\n%s", verify, b)
		}
		if f := s.Root.Lookup("/ostree/repo/origin.ed25519"); f == nil || f.Size != int64(len(keys)) {
			t.Errorf("key file %+v", f)
		}
	}
}
