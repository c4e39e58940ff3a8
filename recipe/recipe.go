// Package recipe reads build recipes: YAML decoded strictly (unknown keys,
// wrong types and missing required fields are errors carrying file:line),
// with ${VAR} variables substituted, defaults applied and paths resolved
// against the recipe's directory.
package recipe

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/apt-ostree/apt-ostree-factory/apt"
)

// Recipe is a decoded, validated recipe.
type Recipe struct {
	// Name identifies the product; used in messages and defaults.
	Name string `yaml:"name"`
	// Variables are the recipe's defaults for ${NAME} substitutions, as
	// written under variables: (values are literal, not expanded).
	// Options.Vars override them.
	Variables map[string]string `yaml:"variables"`
	// Architecture is the Debian architecture to build (default amd64).
	Architecture string `yaml:"architecture"`
	// Sources are the archives to install from, each with its keyring.
	Sources []*apt.Source `yaml:"sources"`
	// Variant selects the base set (default minbase).
	Variant string `yaml:"variant"`
	// Packages are installed on top of the variant.
	Packages []string `yaml:"packages"`
	// Excludes are never installed.
	Excludes []string `yaml:"excludes"`
	// Recommends installs Recommends of the selected packages (default false,
	// as mmdebstrap).
	Recommends bool `yaml:"recommends"`

	// Kernel selects the kernel package and initramfs modules.
	Kernel Kernel `yaml:"kernel"`
	// Hostname is written to /etc/hostname (default "debian").
	Hostname string `yaml:"hostname"`
	// Users are created in the configure sandbox, in order.
	Users []User `yaml:"users"`
	// Groups are created in the configure sandbox before the users.
	Groups []Group `yaml:"groups"`
	// Files are copied from the recipe directory into the image.
	Files []File `yaml:"files"`
	// Directories are created in the image.
	Directories []Directory `yaml:"directories"`
	// Scripts run last, as root, inside the configure sandbox.
	Scripts []Script `yaml:"scripts"`
	// KernelArguments go to the boot entries.
	KernelArguments []string `yaml:"kernel-arguments"`
	// OSTree describes the commit.
	OSTree OSTree `yaml:"ostree"`
	// Signing names the keys that sign the commit.
	Signing Signing `yaml:"signing"`
	// Outputs selects what the build produces.
	Outputs Outputs `yaml:"outputs"`

	// Path is the file the recipe was read from.
	Path string `yaml:"-"`
	// Dir is the absolute directory of the recipe file; relative paths in
	// the recipe are relative to it.
	Dir string `yaml:"-"`
}

// Kernel selects the kernel.
type Kernel struct {
	// Package is the kernel package, e.g. linux-image-amd64; "" means no
	// kernel (the commit is then not bootable).
	Package string `yaml:"package"`
	// Modules are extra kernel modules for the initramfs, e.g. virtio_net.
	Modules []string `yaml:"modules"`
}

// User is an account created in the image.
type User struct {
	// Name is the user name (required; ^[a-z_][a-z0-9_-]*$, at most 32).
	Name string `yaml:"name"`
	// UID is the user id; nil lets useradd pick one.
	UID *uint32 `yaml:"uid"`
	// Group is the primary group (default: a group named like the user).
	Group string `yaml:"group"`
	// Groups are supplementary groups.
	Groups []string `yaml:"groups"`
	// Comment is the GECOS field.
	Comment string `yaml:"comment"`
	// Home is the home directory (default /home/NAME).
	Home string `yaml:"home"`
	// Shell is the login shell (default /bin/bash).
	Shell string `yaml:"shell"`
	// PasswordHash is a crypt(3) hash as in /etc/shadow; "" means a locked
	// account ("!").
	PasswordHash string `yaml:"password-hash"`
	// System makes a system account (useradd --system).
	System bool `yaml:"system"`
}

// Group is a group created in the image.
type Group struct {
	// Name is the group name (required, same rules as user names).
	Name string `yaml:"name"`
	// GID is the group id; nil lets groupadd pick one.
	GID *uint32 `yaml:"gid"`
	// System makes a system group (groupadd --system).
	System bool `yaml:"system"`
}

// File is a file or directory tree copied from the recipe directory into
// the image.
type File struct {
	// Source is the absolute path of the file or tree (written relative to
	// the recipe directory; resolved by Parse, which checks it exists).
	Source string `yaml:"source"`
	// Destination is the absolute, cleaned path in the image.
	Destination string `yaml:"destination"`
	// Mode is the permission bits; nil keeps the source's.
	Mode *Mode `yaml:"mode"`
	// Owner is "user:group" or "uid:gid" (default "root:root"); names are
	// resolved against the image's /etc/passwd and /etc/group.
	Owner string `yaml:"owner"`
}

// Directory is a directory created in the image.
type Directory struct {
	// Path is the absolute, cleaned path in the image.
	Path string `yaml:"path"`
	// Mode is the permission bits (default 0755).
	Mode *Mode `yaml:"mode"`
	// Owner is "user:group" or "uid:gid" (default "root:root").
	Owner string `yaml:"owner"`
}

// Script runs as root inside the configure sandbox (a chroot of the image
// tree) after packages, users, groups, files and directories, in order.
type Script struct {
	// Name is used in messages (default: the base name of Path, or
	// "scripts[i]").
	Name string `yaml:"name"`
	// Path is the absolute path of a script file (written relative to the
	// recipe directory; resolved by Parse, which checks it exists).
	Path string `yaml:"path"`
	// Run is inline shell, run with /bin/sh -e. Exactly one of Path and
	// Run is set.
	Run string `yaml:"run"`
}

// OSTree describes the commit and where devices get it from.
type OSTree struct {
	// Repository is the archive repository's absolute path (written
	// relative to the recipe directory); "" means the builder's default.
	Repository string `yaml:"repository"`
	// Branch is the ref to commit to (default
	// "debian/<suite of the first source>/<OSTreeArch>").
	Branch string `yaml:"branch"`
	// Stateroot is the deployment's stateroot (default "debian").
	Stateroot string `yaml:"stateroot"`
	// Subject is the commit subject; "" lets the builder make one.
	Subject string `yaml:"subject"`
	// Version is the commit's "version" metadata; "" for none.
	Version string `yaml:"version"`
	// Metadata is extra commit metadata, in the recipe's order.
	Metadata Metadata `yaml:"metadata"`
	// Remote is where devices pull updates from.
	Remote Remote `yaml:"remote"`
}

// Remote is the ostree remote configured on devices.
type Remote struct {
	// Name is the remote's name (default "origin").
	Name string `yaml:"name"`
	// URL is http://, https:// or file://; "" for none.
	URL string `yaml:"url"`
}

// Signing names the secret keys that sign every commit: OpenPGP keys
// (detached signatures in ostree.gpgsigs) and Ed25519 keys
// (ostree.sign.ed25519). Images then configure their remote with
// gpg-verify=true and carry the public keys.
type Signing struct {
	// GPGKeys are secret key files (armored or binary; written relative to
	// the recipe directory; resolved by Parse, which checks they exist).
	GPGKeys []string `yaml:"gpg-keys"`
	// Ed25519Keys are Ed25519 secret key files (ostree's base64 form or
	// PKCS#8 PEM; resolved like GPGKeys).
	Ed25519Keys []string `yaml:"ed25519-keys"`
	// Ed25519Verify makes images verify the Ed25519 signatures too
	// (sign-verify=true on the remote). Only for targets whose ostree is
	// built with Ed25519 support: Debian's (2022.7, 2025.2) is not, and
	// refuses every pull from such a remote.
	Ed25519Verify bool `yaml:"ed25519-verify"`
	// PassphraseFile is a file whose first line unlocks the keys.
	PassphraseFile string `yaml:"passphrase-file"`
	// PassphraseEnv names an environment variable holding the passphrase.
	PassphraseEnv string `yaml:"passphrase-env"`
}

// Outputs selects what the build produces.
type Outputs struct {
	// Repository commits into the OSTree repository (default true; Parse
	// always sets it).
	Repository *bool `yaml:"repository"`
	// Images are the disk images the build writes (see Image).
	Images []Image `yaml:"images"`
}

// Options for LoadWith and ParseWith.
type Options struct {
	// Vars are variable values (from --set KEY=VALUE); they override the
	// recipe's variables: defaults.
	Vars map[string]string
}

// Load reads and validates a recipe file.
func Load(path string) (*Recipe, error) {
	return LoadWith(path, Options{})
}

// LoadWith reads and validates a recipe file with options.
func LoadWith(path string, opts Options) (*Recipe, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseWith(b, path, opts)
}

// Parse decodes recipe YAML; name is used in error messages and to resolve
// relative paths.
func Parse(b []byte, name string) (*Recipe, error) {
	return ParseWith(b, name, Options{})
}

// ParseWith decodes recipe YAML with options; name is used in error
// messages and to resolve relative paths.
func ParseWith(b []byte, name string, opts Options) (*Recipe, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: empty recipe", name)
		}
		return nil, joinProblems(name, yamlProblems(err))
	}
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: more than one YAML document", name)
	}
	for k := range opts.Vars {
		if !varNameRe.MatchString(k) {
			return nil, fmt.Errorf("%s: invalid variable name %q in the values set (want [A-Za-z_][A-Za-z0-9_]*)", name, k)
		}
	}

	// Substitute variables in place (line numbers stay), check keys
	// against the schema, then decode the values.
	probs := substitute(&root, opts.Vars)
	substituted := len(probs) == 0
	probs = append(probs, unknownKeys(&root)...)
	var r Recipe
	if substituted {
		if err := root.Decode(&r); err != nil {
			probs = append(probs, yamlProblems(err)...)
		}
	}
	if len(probs) > 0 {
		return nil, joinProblems(name, probs)
	}

	r.Path = name
	dir, err := filepath.Abs(filepath.Dir(name))
	if err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	r.Dir = dir
	v := validator{file: name, root: &root}
	r.applyDefaults()
	if err := v.check(&r); err != nil {
		return nil, err
	}
	return &r, nil
}

func (r *Recipe) applyDefaults() {
	if r.Architecture == "" {
		r.Architecture = "amd64"
	}
	if r.Variant == "" {
		r.Variant = "minbase"
	}
	for _, s := range r.Sources {
		if s == nil {
			continue
		}
		if len(s.Components) == 0 {
			s.Components = []string{"main"}
		}
		if len(s.Architectures) == 0 {
			s.Architectures = []string{r.Architecture}
		}
	}
	if r.Hostname == "" {
		r.Hostname = "debian"
	}
	for i := range r.Users {
		u := &r.Users[i]
		if u.Group == "" {
			u.Group = u.Name
		}
		if u.Home == "" && u.Name != "" {
			u.Home = "/home/" + u.Name
		}
		if u.Shell == "" {
			u.Shell = "/bin/bash"
		}
	}
	for i := range r.Files {
		if r.Files[i].Owner == "" {
			r.Files[i].Owner = "root:root"
		}
	}
	for i := range r.Directories {
		d := &r.Directories[i]
		if d.Owner == "" {
			d.Owner = "root:root"
		}
		if d.Mode == nil {
			m := Mode(0o755)
			d.Mode = &m
		}
	}
	for i := range r.Scripts {
		s := &r.Scripts[i]
		if s.Name == "" {
			if s.Path != "" {
				s.Name = filepath.Base(s.Path)
			} else {
				s.Name = fmt.Sprintf("scripts[%d]", i)
			}
		}
	}
	if r.OSTree.Branch == "" && len(r.Sources) > 0 && r.Sources[0] != nil && r.Sources[0].Suite != "" {
		r.OSTree.Branch = "debian/" + r.Sources[0].Suite + "/" + r.OSTreeArch()
	}
	if r.OSTree.Stateroot == "" {
		r.OSTree.Stateroot = "debian"
	}
	if r.OSTree.Remote.Name == "" {
		r.OSTree.Remote.Name = "origin"
	}
	if r.Outputs.Repository == nil {
		t := true
		r.Outputs.Repository = &t
	}
	r.imageDefaults()
}

// OSTreeArch is the recipe's architecture as ostree and boot loaders name
// it: amd64 is x86_64, arm64 aarch64, i386 x86, ppc64el ppc64le; others
// (armhf, riscv64, s390x, ...) keep the Debian name.
func (r *Recipe) OSTreeArch() string {
	switch r.Architecture {
	case "amd64":
		return "x86_64"
	case "arm64":
		return "aarch64"
	case "i386":
		return "x86"
	case "ppc64el":
		return "ppc64le"
	}
	return r.Architecture
}

// KernelPackages are the packages a bootable commit needs on top of
// Packages: the kernel package, busybox and ostree-boot (for the factory's
// initramfs). Empty when kernel.package is not set.
func (r *Recipe) KernelPackages() []string {
	if r.Kernel.Package == "" {
		return nil
	}
	return []string{r.Kernel.Package, "busybox", "ostree-boot"}
}

// AptRequest is the resolver request the recipe describes: Packages, then
// those of KernelPackages not already listed.
func (r *Recipe) AptRequest() apt.Request {
	pkgs := r.Packages
	if kp := r.KernelPackages(); len(kp) > 0 {
		have := map[string]bool{}
		for _, p := range r.Packages {
			have[bareName(p)] = true
		}
		pkgs = append([]string(nil), r.Packages...)
		for _, p := range kp {
			if !have[p] {
				pkgs = append(pkgs, p)
				have[p] = true
			}
		}
	}
	return apt.Request{
		Architecture: r.Architecture,
		Variant:      r.Variant,
		Packages:     pkgs,
		Excludes:     r.Excludes,
		Recommends:   r.Recommends,
		BootPackages: r.BootPackages(),
	}
}

// bareName is the package name of a request like name:arch, name=version
// or name/suite.
func bareName(spec string) string {
	if i := strings.IndexAny(spec, ":=/"); i >= 0 {
		return spec[:i]
	}
	return spec
}

// problem is one error at a line (0: no line).
type problem struct {
	line int
	msg  string
}

func joinProblems(file string, probs []problem) error {
	sort.SliceStable(probs, func(i, j int) bool { return probs[i].line < probs[j].line })
	errs := make([]error, 0, len(probs))
	for _, p := range probs {
		if p.line > 0 {
			errs = append(errs, fmt.Errorf("%s:%d: %s", file, p.line, p.msg))
		} else {
			errs = append(errs, fmt.Errorf("%s: %s", file, p.msg))
		}
	}
	return errors.Join(errs...)
}
