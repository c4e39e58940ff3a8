package recipe

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// fixture makes a recipe directory with the files full refers to and
// returns the recipe's path.
func fixture(t *testing.T, text string) string {
	t.Helper()
	dir := t.TempDir()
	for _, p := range []string{"files/motd", "files/etc-tree/a.conf", "scripts/setup.sh"} {
		p = filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "r.yaml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

const full = `name: appliance
variables:
  SUITE: trixie
  REC: "false"
architecture: arm64
sources:
  - uri: http://deb.example.org/debian
    suite: ${SUITE}
    signed-by: [keys/archive.gpg]
packages: [systemd-sysv]
recommends: ${REC}
kernel:
  package: linux-image-arm64
  modules: [virtio_net, virtio-blk]
hostname: box.example.org
groups:
  - name: wheel2
    gid: 1500
    system: true
users:
  - name: admin
    uid: 1000
    groups: [wheel2, sudo]
    comment: Administrator
    password-hash: $y$j9T$abc$def
  - name: svc
    system: true
    group: wheel2
    home: /var/lib/svc/
    shell: /usr/sbin/nologin
files:
  - source: files/motd
    destination: /etc//motd
    mode: 0644
    owner: admin:wheel2
  - source: files/etc-tree
    destination: /etc/app/
    mode: "0o750"
directories:
  - path: /var/lib/app
    owner: "1000:1500"
  - path: /srv/data
    mode: 700
scripts:
  - path: scripts/setup.sh
  - name: greet
    run: echo hello > /etc/greeting
  - run: "true"
kernel-arguments: [quiet, console=ttyAMA0]
ostree:
  repository: out/repo
  subject: Appliance build
  version: "1.2"
  metadata:
    zeta: last-but-first
    alpha: "1"
    mid: 2
  remote:
    url: https://updates.example.org/repo
`

func TestFullRecipe(t *testing.T) {
	path := fixture(t, full)
	dir := filepath.Dir(path)
	r, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if r.Dir != dir || r.Path != path {
		t.Errorf("Dir %q Path %q", r.Dir, r.Path)
	}
	if want := map[string]string{"SUITE": "trixie", "REC": "false"}; !reflect.DeepEqual(r.Variables, want) {
		t.Errorf("Variables %v", r.Variables)
	}
	if r.Sources[0].Suite != "trixie" || r.Recommends {
		t.Errorf("substitution: suite %q recommends %v", r.Sources[0].Suite, r.Recommends)
	}
	if r.Sources[0].SignedBy[0] != filepath.Join(dir, "keys/archive.gpg") {
		t.Errorf("signed-by %q", r.Sources[0].SignedBy[0])
	}
	if !reflect.DeepEqual(r.Kernel, Kernel{Package: "linux-image-arm64", Modules: []string{"virtio_net", "virtio-blk"}}) {
		t.Errorf("Kernel %+v", r.Kernel)
	}
	if r.Hostname != "box.example.org" {
		t.Errorf("Hostname %q", r.Hostname)
	}
	gid := uint32(1500)
	if want := []Group{{Name: "wheel2", GID: &gid, System: true}}; !reflect.DeepEqual(r.Groups, want) {
		t.Errorf("Groups %+v", r.Groups)
	}
	uid := uint32(1000)
	wantUsers := []User{
		{Name: "admin", UID: &uid, Group: "admin", Groups: []string{"wheel2", "sudo"}, Comment: "Administrator",
			Home: "/home/admin", Shell: "/bin/bash", PasswordHash: "$y$j9T$abc$def"},
		{Name: "svc", System: true, Group: "wheel2", Home: "/var/lib/svc", Shell: "/usr/sbin/nologin"},
	}
	if !reflect.DeepEqual(r.Users, wantUsers) {
		t.Errorf("Users\n got %+v\nwant %+v", r.Users, wantUsers)
	}
	m644, m750 := Mode(0o644), Mode(0o750)
	wantFiles := []File{
		{Source: filepath.Join(dir, "files/motd"), Destination: "/etc/motd", Mode: &m644, Owner: "admin:wheel2"},
		{Source: filepath.Join(dir, "files/etc-tree"), Destination: "/etc/app", Mode: &m750, Owner: "root:root"},
	}
	if !reflect.DeepEqual(r.Files, wantFiles) {
		t.Errorf("Files\n got %+v\nwant %+v", r.Files, wantFiles)
	}
	m755, m700 := Mode(0o755), Mode(0o700)
	wantDirs := []Directory{
		{Path: "/var/lib/app", Mode: &m755, Owner: "1000:1500"},
		{Path: "/srv/data", Mode: &m700, Owner: "root:root"},
	}
	if !reflect.DeepEqual(r.Directories, wantDirs) {
		t.Errorf("Directories\n got %+v\nwant %+v", r.Directories, wantDirs)
	}
	wantScripts := []Script{
		{Name: "setup.sh", Path: filepath.Join(dir, "scripts/setup.sh")},
		{Name: "greet", Run: "echo hello > /etc/greeting"},
		{Name: "scripts[2]", Run: "true"},
	}
	if !reflect.DeepEqual(r.Scripts, wantScripts) {
		t.Errorf("Scripts\n got %+v\nwant %+v", r.Scripts, wantScripts)
	}
	if !reflect.DeepEqual(r.KernelArguments, []string{"quiet", "console=ttyAMA0"}) {
		t.Errorf("KernelArguments %q", r.KernelArguments)
	}
	wantOSTree := OSTree{
		Repository: filepath.Join(dir, "out/repo"),
		Branch:     "debian/trixie/aarch64",
		Stateroot:  "debian",
		Subject:    "Appliance build",
		Version:    "1.2",
		Metadata:   Metadata{{"zeta", "last-but-first"}, {"alpha", "1"}, {"mid", "2"}},
		Remote:     Remote{Name: "origin", URL: "https://updates.example.org/repo"},
	}
	if !reflect.DeepEqual(r.OSTree, wantOSTree) {
		t.Errorf("OSTree\n got %+v\nwant %+v", r.OSTree, wantOSTree)
	}
	if v, ok := r.OSTree.Metadata.Get("mid"); !ok || v != "2" {
		t.Errorf("Metadata.Get(mid) = %q, %v", v, ok)
	}
	if r.Outputs.Repository == nil || !*r.Outputs.Repository || len(r.Outputs.Images) != 0 {
		t.Errorf("Outputs %+v", r.Outputs)
	}
	req := r.AptRequest()
	if want := []string{"systemd-sysv", "linux-image-arm64", "busybox", "ostree-boot"}; !reflect.DeepEqual(req.Packages, want) {
		t.Errorf("AptRequest packages %q, want %q", req.Packages, want)
	}
	if !reflect.DeepEqual(r.Packages, []string{"systemd-sysv"}) {
		t.Errorf("AptRequest changed Packages: %q", r.Packages)
	}
}

func TestDefaults(t *testing.T) {
	r, err := Parse([]byte(good+"users: [{name: alice}]\nfiles: []\n"), "/x/demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if r.Hostname != "debian" || r.OSTree.Branch != "debian/trixie/aarch64" || r.OSTree.Stateroot != "debian" ||
		r.OSTree.Remote.Name != "origin" || r.OSTree.Repository != "" || r.OSTree.Subject != "" || r.Dir != "/x" {
		t.Errorf("defaults: %+v", r)
	}
	u := r.Users[0]
	if u.Home != "/home/alice" || u.Shell != "/bin/bash" || u.Group != "alice" || u.UID != nil || u.PasswordHash != "" {
		t.Errorf("user defaults: %+v", u)
	}
	if r.Outputs.Repository == nil || !*r.Outputs.Repository {
		t.Errorf("outputs.repository default: %v", r.Outputs.Repository)
	}
	if r.Kernel.Package != "" || r.KernelPackages() != nil {
		t.Errorf("kernel: %+v", r.Kernel)
	}
	if got := r.AptRequest().Packages; !reflect.DeepEqual(got, []string{"systemd-sysv", "udev"}) {
		t.Errorf("AptRequest without kernel: %q", got)
	}
}

func TestKernelPackagesNotDuplicated(t *testing.T) {
	y := strings.Replace(good, "packages: [systemd-sysv, udev]", "packages: [busybox=1:1.36, linux-image-arm64]", 1) +
		"kernel: {package: linux-image-arm64}\n"
	r, err := Parse([]byte(y), "/x/r.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.AptRequest().Packages, []string{"busybox=1:1.36", "linux-image-arm64", "ostree-boot"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestOSTreeArch(t *testing.T) {
	for deb, want := range map[string]string{
		"amd64": "x86_64", "arm64": "aarch64", "i386": "x86", "armhf": "armhf", "ppc64el": "ppc64le",
		"riscv64": "riscv64", "s390x": "s390x", "mips64el": "mips64el",
	} {
		if got := (&Recipe{Architecture: deb}).OSTreeArch(); got != want {
			t.Errorf("OSTreeArch(%s) = %q, want %q", deb, got, want)
		}
	}
	r, err := Parse([]byte(strings.Replace(good, "arm64", "ppc64el", 1)), "/x/r.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if r.OSTree.Branch != "debian/trixie/ppc64le" {
		t.Errorf("branch %q", r.OSTree.Branch)
	}
}

// base is a valid recipe of 6 lines; cases append to it from line 7.
const base = `name: demo
sources:
  - uri: http://deb.example.org/debian
    suite: trixie
    signed-by: [/k.gpg]
packages: [udev]
`

// wantErrors parses text and checks the error is exactly the lines want
// (each prefixed with "r.yaml:").
func wantErrors(t *testing.T, name, text string, opts Options, want ...string) {
	t.Helper()
	path := fixture(t, text)
	_, err := LoadWith(path, opts)
	if err == nil {
		t.Errorf("%s: accepted", name)
		return
	}
	got := strings.ReplaceAll(err.Error(), path, "r.yaml")
	for i := range want {
		want[i] = "r.yaml:" + want[i]
	}
	if w := strings.Join(want, "\n"); got != w {
		t.Errorf("%s:\n got %s\nwant %s", name, got, w)
	}
}

func TestValidationErrors(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"hostname", "hostname: -bad.example\n",
			[]string{`7: hostname "-bad.example": use labels of letters, digits and "-" (not at either end) separated by "."`}},
		{"hostname label", "hostname: " + strings.Repeat("a", 64) + ".org\n",
			[]string{`7: hostname "` + strings.Repeat("a", 64) + `.org": label "` + strings.Repeat("a", 64) + `" is longer than 63 characters`}},
		{"user name", "users:\n  - name: ok\n  - name: Bad\n",
			[]string{`9: users[1].name "Bad": must match ^[a-z_][a-z0-9_-]*$ and have at most 32 characters`}},
		{"user name too long", "users:\n  - name: " + strings.Repeat("u", 33) + "\n",
			[]string{`8: users[0].name "` + strings.Repeat("u", 33) + `": must match ^[a-z_][a-z0-9_-]*$ and have at most 32 characters`}},
		{"user missing name", "users:\n  - name: ok\n  - uid: 5\n",
			[]string{`9: users[1]: missing required field "name"`}},
		{"duplicate user", "users:\n  - name: ok\n  - name: ok\n",
			[]string{`9: users[1].name "ok": already defined by users[0]`}},
		{"duplicate uid", "users:\n  - {name: a, uid: 1001}\n  - {name: b, uid: 1001}\n",
			[]string{`9: users[1].uid 1001: already used by users[0]`}},
		{"duplicate group", "groups:\n  - name: g\n  - name: g\n",
			[]string{`9: groups[1].name "g": already defined by groups[0]`}},
		{"bad group", "groups:\n  - name: 9g\n",
			[]string{`8: groups[0].name "9g": must match ^[a-z_][a-z0-9_-]*$ and have at most 32 characters`}},
		{"bad supplementary group", "users:\n  - name: a\n    groups: [ok, \"no way\"]\n",
			[]string{`9: users[0].groups[1] "no way": must match ^[a-z_][a-z0-9_-]*$ and have at most 32 characters`}},
		{"relative home", "users:\n  - name: a\n    home: home/a\n",
			[]string{`9: users[0].home "home/a": must be an absolute path`}},
		{"relative shell", "users:\n  - name: a\n    shell: bash\n",
			[]string{`9: users[0].shell "bash": must be an absolute path`}},
		{"plain password", "users:\n  - name: a\n    password-hash: hunter2\n",
			[]string{`9: users[0].password-hash: not a crypt(3) hash as in /etc/shadow (like $y$... or $6$...; make one with mkpasswd); leave it out for a locked account`}},
		{"uid type", "users:\n  - name: a\n    uid: -1\n",
			[]string{"9: wrong type: expected an integer from 0 to 4294967295, got a YAML int (-1)"}},
		{"kernel module", "kernel:\n  package: linux-image-amd64\n  modules: [ok, virtio_net.ko]\n",
			[]string{`9: kernel.modules[1]: invalid module name "virtio_net.ko" (letters, digits, _ and -, without .ko)`}},
		{"modules without kernel", "kernel:\n  modules: [ok]\n",
			[]string{`8: kernel.modules is set but kernel.package is not (no kernel, no initramfs)`}},
		{"kernel excluded", "excludes: [busybox]\nkernel: {package: linux-image-amd64}\n",
			[]string{`7: excludes "busybox": a recipe with kernel.package needs linux-image-amd64, busybox, ostree-boot`}},
		{"kernel argument whitespace", "kernel-arguments:\n  - quiet\n  - \"root=a b\"\n",
			[]string{`9: kernel-arguments[1] "root=a b" contains whitespace: write one argument per entry (values with spaces are not supported)`}},
		{"kernel argument empty", "kernel-arguments: [quiet, \"\"]\n",
			[]string{`7: kernel-arguments[1] is empty`}},
		{"ed25519 key missing", "signing:\n  ed25519-keys: [keys/nope]\n",
			[]string{`8: signing.ed25519-keys[0] r.yaml-dir/keys/nope: no such file or directory (relative paths are relative to the recipe's directory)`}},
		{"ed25519 verify without keys", "signing:\n  ed25519-verify: true\n",
			[]string{`8: signing.ed25519-verify without ed25519-keys`}},
		{"file source missing", "files:\n  - source: files/motd\n    destination: /etc/motd\n  - source: files/nope\n    destination: /etc/nope\n",
			[]string{`10: files[1].source r.yaml-dir/files/nope: no such file or directory (relative paths are relative to the recipe's directory)`}},
		{"file required", "files:\n  - mode: 0644\n",
			[]string{`8: files[0]: missing required field "source"`, `8: files[0]: missing required field "destination"`}},
		{"file destination relative", "files:\n  - source: files/motd\n    destination: etc/motd\n",
			[]string{`9: files[0].destination "etc/motd": must be an absolute path in the image`}},
		{"file destination root", "files:\n  - source: files/etc-tree\n    destination: /etc/..//\n",
			[]string{`9: files[0].destination "/etc/..//": must not contain ".." in the image`}},
		{"file destination slash", "files:\n  - source: files/etc-tree\n    destination: /\n",
			[]string{`9: files[0].destination "/": must not be the root directory`}},
		{"file under usr/etc", "files:\n  - source: files/motd\n    destination: /usr/etc/motd\n",
			[]string{`9: files[0].destination "/usr/etc/motd": use /etc (the builder moves /etc to /usr/etc in the commit)`}},
		{"file under proc", "files:\n  - source: files/motd\n    destination: /proc/x\n",
			[]string{`9: files[0].destination "/proc/x": /proc is a runtime file system; its content is not part of the image`}},
		{"file owner", "files:\n  - source: files/motd\n    destination: /etc/motd\n    owner: root\n",
			[]string{`10: files[0].owner "root": expected user:group or uid:gid`}},
		{"mode too big", "files:\n  - source: files/motd\n    destination: /etc/motd\n    mode: 17777\n",
			[]string{`10: invalid mode "17777": larger than 07777`}},
		{"mode not octal", "directories:\n  - path: /srv\n    mode: 0x1ff\n",
			[]string{`9: invalid mode "0x1ff": expected octal digits like 0644`}},
		{"mode digits 8", "directories:\n  - path: /srv\n    mode: \"0680\"\n",
			[]string{`9: invalid mode "0680": expected octal digits like 0644`}},
		{"directory relative", "directories:\n  - path: srv\n",
			[]string{`8: directories[0].path "srv": must be an absolute path in the image`}},
		{"directory missing path", "directories:\n  - mode: 0700\n",
			[]string{`8: directories[0]: missing required field "path"`}},
		{"directory owner", "directories:\n  - path: /srv\n    owner: \"a:B\"\n",
			[]string{`9: directories[0].owner "a:B": "B" is neither a number nor a valid user or group name`}},
		{"script neither", "scripts:\n  - name: x\n",
			[]string{`8: scripts[0]: one of "path" or "run" is required`}},
		{"script both", "scripts:\n  - run: \"true\"\n  - path: scripts/setup.sh\n    run: \"true\"\n",
			[]string{`9: scripts[1]: set only one of "path" and "run"`}},
		{"script missing", "scripts:\n  - path: scripts/nope.sh\n",
			[]string{`8: scripts[0].path r.yaml-dir/scripts/nope.sh: no such file or directory (relative paths are relative to the recipe's directory)`}},
		{"script directory", "scripts:\n  - path: scripts\n",
			[]string{`8: scripts[0].path r.yaml-dir/scripts: not a regular file`}},
		{"branch", "ostree:\n  branch: debian//trixie\n",
			[]string{`8: ostree.branch "debian//trixie": not a valid ostree ref (letters, digits, ".", "_" and "-" in parts separated by single "/")`}},
		{"branch trailing slash", "ostree:\n  branch: debian/\n",
			[]string{`8: ostree.branch "debian/": not a valid ostree ref (letters, digits, ".", "_" and "-" in parts separated by single "/")`}},
		{"stateroot", "ostree:\n  stateroot: a/b\n",
			[]string{`8: ostree.stateroot "a/b": use letters, digits, ".", "_" and "-"`}},
		{"metadata reserved", "ostree:\n  metadata:\n    a: b\n    ostree.linux: x\n    version: \"2\"\n",
			[]string{`10: ostree.metadata "ostree.linux": keys starting with "ostree." are reserved for ostree`,
				`11: ostree.metadata "version": set it with ostree.version`}},
		{"metadata duplicate", "ostree:\n  metadata:\n    a: b\n    a: c\n",
			[]string{`10: mapping key "a" already defined at line 9`}},
		{"metadata list value", "ostree:\n  metadata:\n    a: [b]\n",
			[]string{`9: metadata "a": expected a string, not a list or mapping`}},
		{"remote url", "ostree:\n  remote:\n    name: origin\n    url: ftp://x/repo\n",
			[]string{`10: ostree.remote.url "ftp://x/repo": must be an http://, https:// or file:// URL`}},
		{"remote name", "ostree:\n  remote: {name: \"a b\"}\n",
			[]string{`8: ostree.remote.name "a b": use letters, digits, ".", "_" and "-"`}},
		{"images", "outputs:\n  repository: true\n  images:\n    - format: raw\n",
			[]string{"9: outputs.images needs a kernel: set kernel.package (e.g. linux-image-amd64)"}},
		{"no output", "outputs:\n  repository: false\n",
			[]string{"8: outputs.repository is false and there are no images: the build would produce nothing"}},
		{"unknown key in users[1]", "users:\n  - name: a\n    shell: /bin/sh\n  - name: b\n    shel: /bin/sh\n",
			[]string{`11: unknown key "shel" in users[1]`}},
		{"unknown keys and wrong types together", "kernel:\n  pakage: x\nhostname: [a]\nostree:\n  remote:\n    nam: x\n",
			[]string{`8: unknown key "pakage" in kernel`, `9: wrong type: expected a string, got a YAML seq`,
				`12: unknown key "nam" in ostree.remote`}},
		{"unknown key in merged mapping", "x-common: &c {system: true, sistem: true}\nusers:\n  - <<: *c\n    name: a\n",
			[]string{`7: unknown key "x-common"`, `7: unknown key "sistem" in users[0]`}},
		{"wrong struct type", "kernel: linux-image-amd64\n",
			[]string{"7: wrong type: expected a mapping (package, modules), got a YAML str (linux-i...)"}},
	}
	for _, c := range cases {
		text := base + c.yaml
		want := append([]string(nil), c.want...)
		t.Run(c.name, func(t *testing.T) {
			path := fixture(t, text)
			_, err := Load(path)
			if err == nil {
				t.Fatal("accepted")
			}
			got := strings.ReplaceAll(err.Error(), filepath.Dir(path), "r.yaml-dir")
			got = strings.ReplaceAll(got, "r.yaml-dir/r.yaml:", "r.yaml:")
			for i := range want {
				want[i] = "r.yaml:" + want[i]
			}
			if w := strings.Join(want, "\n"); got != w {
				t.Errorf("\n got %s\nwant %s", got, w)
			}
		})
	}
}

func TestModeForms(t *testing.T) {
	for text, want := range map[string]Mode{
		"0644": 0o644, "644": 0o644, `"0644"`: 0o644, "'755'": 0o755, "0o600": 0o600, "4755": 0o4755, "0": 0, "07777": 0o7777,
	} {
		path := fixture(t, base+"directories:\n  - path: /srv\n    mode: "+text+"\n")
		r, err := Load(path)
		if err != nil {
			t.Errorf("mode %s: %v", text, err)
			continue
		}
		if got := *r.Directories[0].Mode; got != want {
			t.Errorf("mode %s = %v, want %v", text, got, want)
		}
	}
	if s := Mode(0o4755).String(); s != "4755" {
		t.Errorf("String %q", s)
	}
	if s := Mode(0o644).String(); s != "0644" {
		t.Errorf("String %q", s)
	}
}

func TestVariables(t *testing.T) {
	const v = `name: ${NAME}
variables:
  NAME: from-recipe
  SUITE: bookworm
  LITERAL: ${NOT_EXPANDED}
sources:
  - uri: http://deb.example.org/debian
    suite: ${SUITE}
    signed-by: [/k.gpg]
packages: [udev]
hostname: "${HOST}"
ostree:
  subject: "cost $$5, ${LITERAL}, $HOME $ end$"
  version: ${VERSION}
`
	r, err := ParseWith([]byte(v), "/x/r.yaml", Options{Vars: map[string]string{"HOST": "h1", "VERSION": "7", "SUITE": "trixie"}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Name != "from-recipe" {
		t.Errorf("default from variables: name %q", r.Name)
	}
	if r.Sources[0].Suite != "trixie" || r.OSTree.Branch != "debian/trixie/x86_64" {
		t.Errorf("--set does not override variables: suite %q branch %q", r.Sources[0].Suite, r.OSTree.Branch)
	}
	if r.Hostname != "h1" {
		t.Errorf("hostname %q", r.Hostname)
	}
	if want := "cost $5, ${NOT_EXPANDED}, $HOME $ end$"; r.OSTree.Subject != want {
		t.Errorf("subject %q, want %q", r.OSTree.Subject, want)
	}
	if r.OSTree.Version != "7" {
		t.Errorf("version %q", r.OSTree.Version)
	}
	if r.Variables["LITERAL"] != "${NOT_EXPANDED}" || r.Variables["SUITE"] != "bookworm" {
		t.Errorf("Variables %v", r.Variables)
	}
}

func TestTypedSubstitution(t *testing.T) {
	const v = base + `recommends: ${REC}
users:
  - name: ${USER}
    uid: ${UID}
    system: ${SYS}
    comment: "${REC}"
    groups: ['${UID}']
ostree:
  metadata:
    build: ${UID}
`
	vars := map[string]string{"REC": "true", "UID": "1234", "USER": "kiosk", "SYS": "yes"}
	r, err := ParseWith([]byte(v), "/x/r.yaml", Options{Vars: vars})
	if err == nil {
		t.Fatal("accepted a supplementary group named 1234")
	}
	if want := `/x/r.yaml:13: users[0].groups[0] "1234": must match`; !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("error %q, want prefix %q", err, want)
	}
	r, err = ParseWith([]byte(strings.Replace(v, "groups: ['${UID}']", "groups: ['g${UID}']", 1)), "/x/r.yaml", Options{Vars: vars})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Recommends {
		t.Error("recommends: ${REC} with REC=true is not true")
	}
	u := r.Users[0]
	if u.Name != "kiosk" || u.UID == nil || *u.UID != 1234 || u.Comment != "true" || u.Groups[0] != "g1234" {
		t.Errorf("user %+v", u)
	}
	if !u.System {
		t.Error("system: ${SYS} with SYS=yes: yaml.v3 takes YAML 1.1 yes for a bool field, got false")
	}
	if v, _ := r.OSTree.Metadata.Get("build"); v != "1234" {
		t.Errorf("metadata build %q", v)
	}
}

func TestTypedSubstitutionErrors(t *testing.T) {
	wantErrors(t, "uid not a number", base+"users:\n  - name: a\n    uid: ${UID}\n", Options{Vars: map[string]string{"UID": "abc"}},
		"9: wrong type: expected an integer from 0 to 4294967295, got a YAML str (abc)")
	wantErrors(t, "quoted stays a string", base+"recommends: \"${REC}\"\n", Options{Vars: map[string]string{"REC": "true"}},
		"7: wrong type: expected true or false, got a YAML str (true)")
	wantErrors(t, "explicit tag kept", base+"recommends: !!str ${REC}\n", Options{Vars: map[string]string{"REC": "false"}},
		"7: wrong type: expected true or false, got a YAML str (false)")
}

func TestVariableErrors(t *testing.T) {
	wantErrors(t, "unknown", base+"hostname: ${HOST}\nostree:\n  subject: a ${A} b ${B}\n", Options{Vars: map[string]string{"A": "1"}},
		"7: variable ${HOST} is not set (set it with --set HOST=VALUE or under variables:)",
		"9: variable ${B} is not set (set it with --set B=VALUE or under variables:)")
	wantErrors(t, "unterminated", base+"hostname: a${HOST\n", Options{},
		`7: unterminated variable reference "${HOST" (missing "}"; write $$ for a literal $)`)
	wantErrors(t, "bad name", base+"hostname: ${1X}\n", Options{},
		`7: invalid variable reference ${1X} (names are letters, digits and _, not starting with a digit; write $$ for a literal $)`)
	wantErrors(t, "empty name", base+"hostname: ${}\n", Options{},
		`7: invalid variable reference ${} (names are letters, digits and _, not starting with a digit; write $$ for a literal $)`)
	wantErrors(t, "variables not a mapping", base+"variables: [A]\n", Options{},
		"7: variables: expected a mapping of NAME: value")
	wantErrors(t, "bad variable name", base+"variables:\n  OK: 1\n  not-ok: 2\n", Options{},
		`9: variables: invalid variable name "not-ok" (want letters, digits and _, not starting with a digit)`)
	wantErrors(t, "variable value list", base+"variables:\n  A: [1]\n", Options{},
		"8: variables.A: expected a string, not a list or mapping")
	wantErrors(t, "unknown key reported with variable errors", base+"hostnam: x\nhostname: ${H}\n", Options{},
		`7: unknown key "hostnam"`,
		"8: variable ${H} is not set (set it with --set H=VALUE or under variables:)")

	_, err := ParseWith([]byte(base), "/x/r.yaml", Options{Vars: map[string]string{"A-B": "1"}})
	if err == nil || err.Error() != `/x/r.yaml: invalid variable name "A-B" in the values set (want [A-Za-z_][A-Za-z0-9_]*)` {
		t.Errorf("bad --set name: %v", err)
	}
}

func TestKeysAreNotSubstituted(t *testing.T) {
	_, err := ParseWith([]byte(base+"${KEY}: x\n"), "/x/r.yaml", Options{Vars: map[string]string{"KEY": "hostname"}})
	if err == nil || err.Error() != `/x/r.yaml:7: unknown key "${KEY}"` {
		t.Errorf("got %v", err)
	}
}

func TestParseSet(t *testing.T) {
	got, err := ParseSet([]string{"A=1", "B=", "C=x=y", "A=2"})
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"A": "2", "B": "", "C": "x=y"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %v", got)
	}
	for arg, want := range map[string]string{
		"NOEQUALS": `--set "NOEQUALS": want KEY=VALUE`,
		"=v":       `--set "=v": invalid variable name "" (want letters, digits and _, not starting with a digit)`,
		"1A=v":     `--set "1A=v": invalid variable name "1A" (want letters, digits and _, not starting with a digit)`,
	} {
		_, err := ParseSet([]string{"OK=1", arg})
		if err == nil || err.Error() != want {
			t.Errorf("ParseSet(%q): %v, want %s", arg, err, want)
		}
	}
}

func TestEmptyAndMultiDocument(t *testing.T) {
	if _, err := Parse(nil, "e.yaml"); err == nil || err.Error() != "e.yaml: empty recipe" {
		t.Errorf("empty: %v", err)
	}
	if _, err := Parse([]byte(base+"---\nname: x\n"), "m.yaml"); err == nil || err.Error() != "m.yaml: more than one YAML document" {
		t.Errorf("two documents: %v", err)
	}
	if _, err := Parse([]byte("name: [\n"), "s.yaml"); err == nil || !strings.HasPrefix(err.Error(), "s.yaml:") {
		t.Errorf("syntax error: %v", err)
	}
}
