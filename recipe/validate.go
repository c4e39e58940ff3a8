package recipe

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/apt-ostree/apt-ostree-factory/apt"
)

// validator reports problems at the line of the offending YAML node.
type validator struct {
	file string
	root *yaml.Node
}

// lineOf finds the line of the node at a path of mapping keys and sequence
// indexes, falling back to the nearest ancestor that exists.
func (v *validator) lineOf(path ...any) int {
	n := v.root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := n.Line
	for _, p := range path {
		if n.Kind == yaml.AliasNode && n.Alias != nil {
			n = n.Alias
		}
		switch key := p.(type) {
		case string:
			if n.Kind != yaml.MappingNode {
				return line
			}
			found := false
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == key {
					line = n.Content[i].Line
					n = n.Content[i+1]
					found = true
					break
				}
			}
			if !found {
				return line
			}
		case int:
			if n.Kind != yaml.SequenceNode || key >= len(n.Content) {
				return line
			}
			n = n.Content[key]
			line = n.Line
		}
	}
	return line
}

func (v *validator) errorf(path []any, format string, args ...any) error {
	return fmt.Errorf("%s:%d: %s", v.file, v.lineOf(path...), fmt.Sprintf(format, args...))
}

var (
	accountNameRe = regexp.MustCompile(`^[a-z_][a-z0-9_-]*$`)
	moduleNameRe  = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	refRe         = regexp.MustCompile(`^[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*$`)
	stateRootRe   = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
	hostLabelRe   = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$`)
	cryptRe       = regexp.MustCompile(`^(?:[!*]*\$[A-Za-z0-9./$=,+-]+|[!*]*[A-Za-z0-9./]{13}|[!*]+)$`)
)

func (v *validator) check(r *Recipe) error {
	var errs []error
	add := func(path []any, format string, args ...any) {
		errs = append(errs, v.errorf(path, format, args...))
	}
	if r.Name == "" {
		add(nil, "missing required field \"name\"")
	}
	if !validVariant(r.Variant) {
		add([]any{"variant"}, "unknown variant %q (one of %s)", r.Variant, strings.Join(apt.Variants[1:], ", "))
	}
	if len(r.Sources) == 0 {
		add(nil, "missing required field \"sources\" (at least one archive)")
	}
	for i, s := range r.Sources {
		at := []any{"sources", i}
		if s == nil {
			add(at, "sources[%d] is empty", i)
			continue
		}
		if s.URI == "" {
			add(at, "sources[%d]: missing required field \"uri\"", i)
		} else if !validURL(s.URI) {
			add(append(at, "uri"), "sources[%d].uri %q: must start with http://, https:// or file://", i, s.URI)
		}
		if s.Suite == "" {
			add(at, "sources[%d]: missing required field \"suite\"", i)
		}
		if len(s.SignedBy) == 0 {
			add(at, "sources[%d]: missing required field \"signed-by\" (a keyring file; unsigned archives are not supported)", i)
		}
		for j, k := range s.SignedBy {
			if k != "" && !filepath.IsAbs(k) {
				s.SignedBy[j] = filepath.Join(r.Dir, k)
			}
		}
		if s.Priority < 0 {
			add(append(at, "priority"), "sources[%d].priority must be positive", i)
		}
	}
	for i, p := range r.Packages {
		if !validPackage(p) {
			add([]any{"packages", i}, "invalid package name %q", p)
		}
	}
	for i, p := range r.Excludes {
		if !validPackage(p) {
			add([]any{"excludes", i}, "invalid package name %q", p)
		}
	}

	// kernel
	if r.Kernel.Package != "" {
		if !validPackage(r.Kernel.Package) {
			add([]any{"kernel", "package"}, "kernel.package: invalid package name %q", r.Kernel.Package)
		}
		for i, p := range r.Excludes {
			for _, k := range r.KernelPackages() {
				if bareName(p) == bareName(k) {
					add([]any{"excludes", i}, "excludes %q: a recipe with kernel.package needs %s", p, strings.Join(r.KernelPackages(), ", "))
				}
			}
		}
	} else if len(r.Kernel.Modules) > 0 {
		add([]any{"kernel", "modules"}, "kernel.modules is set but kernel.package is not (no kernel, no initramfs)")
	}
	for i, m := range r.Kernel.Modules {
		if !moduleNameRe.MatchString(m) {
			add([]any{"kernel", "modules", i}, "kernel.modules[%d]: invalid module name %q (letters, digits, _ and -, without .ko)", i, m)
		}
	}
	for i, a := range r.KernelArguments {
		if a == "" {
			add([]any{"kernel-arguments", i}, "kernel-arguments[%d] is empty", i)
		} else if strings.ContainsAny(a, " \t\r\n\v\f") {
			add([]any{"kernel-arguments", i}, "kernel-arguments[%d] %q contains whitespace: write one argument per entry (values with spaces are not supported)", i, a)
		}
	}

	if msg := checkHostname(r.Hostname); msg != "" {
		add([]any{"hostname"}, "hostname %q: %s", r.Hostname, msg)
	}

	// groups and users
	groupNames, gids := map[string]int{}, map[uint32]int{}
	for i, g := range r.Groups {
		checkAccount(add, "groups", "gid", i, g.Name, g.GID, groupNames, gids)
	}
	userNames, uids := map[string]int{}, map[uint32]int{}
	for i := range r.Users {
		u := &r.Users[i]
		at := []any{"users", i}
		checkAccount(add, "users", "uid", i, u.Name, u.UID, userNames, uids)
		if u.Group != "" && u.Group != u.Name && !validAccountName(u.Group) {
			add(append(at, "group"), "users[%d].group %q: %s", i, u.Group, accountNameRule)
		}
		for j, g := range u.Groups {
			if !validAccountName(g) {
				add(append(at, "groups", j), "users[%d].groups[%d] %q: %s", i, j, g, accountNameRule)
			}
		}
		if strings.ContainsAny(u.Comment, ":\n") {
			add(append(at, "comment"), "users[%d].comment must not contain \":\" or a newline", i)
		}
		if u.Home != "" {
			if msg := checkAbs(u.Home); msg != "" {
				add(append(at, "home"), "users[%d].home %q: %s", i, u.Home, msg)
			} else {
				u.Home = path.Clean(u.Home)
			}
		}
		if msg := checkAbs(u.Shell); msg != "" {
			add(append(at, "shell"), "users[%d].shell %q: %s", i, u.Shell, msg)
		}
		if u.PasswordHash != "" && !cryptRe.MatchString(u.PasswordHash) {
			add(append(at, "password-hash"), "users[%d].password-hash: not a crypt(3) hash as in /etc/shadow (like $y$... or $6$...; make one with mkpasswd); leave it out for a locked account", i)
		}
	}

	// files and directories
	for i := range r.Files {
		f := &r.Files[i]
		at := []any{"files", i}
		if f.Source == "" {
			add(at, "files[%d]: missing required field \"source\"", i)
		} else {
			f.Source = v.resolve(r.Dir, f.Source)
			if _, err := os.Stat(f.Source); err != nil {
				add(append(at, "source"), "files[%d].source %s", i, statMessage(err, f.Source))
			}
		}
		checkPlacement(add, "files", "destination", i, &f.Destination, f.Owner)
	}
	for i := range r.Directories {
		d := &r.Directories[i]
		checkPlacement(add, "directories", "path", i, &d.Path, d.Owner)
	}

	// scripts
	for i := range r.Scripts {
		s := &r.Scripts[i]
		at := []any{"scripts", i}
		switch {
		case s.Path == "" && s.Run == "":
			add(at, "scripts[%d]: one of \"path\" or \"run\" is required", i)
		case s.Path != "" && s.Run != "":
			add(at, "scripts[%d]: set only one of \"path\" and \"run\"", i)
		case s.Path != "":
			s.Path = v.resolve(r.Dir, s.Path)
			if st, err := os.Stat(s.Path); err != nil {
				add(append(at, "path"), "scripts[%d].path %s", i, statMessage(err, s.Path))
			} else if !st.Mode().IsRegular() {
				add(append(at, "path"), "scripts[%d].path %s: not a regular file", i, s.Path)
			}
		}
	}

	// signing
	sg := &r.Signing
	for i, k := range sg.GPGKeys {
		sg.GPGKeys[i] = v.resolve(r.Dir, k)
		if st, err := os.Stat(sg.GPGKeys[i]); err != nil {
			add([]any{"signing", "gpg-keys", i}, "signing.gpg-keys[%d] %s", i, statMessage(err, sg.GPGKeys[i]))
		} else if !st.Mode().IsRegular() {
			add([]any{"signing", "gpg-keys", i}, "signing.gpg-keys[%d] %s: not a regular file", i, sg.GPGKeys[i])
		}
	}
	for i, k := range sg.Ed25519Keys {
		sg.Ed25519Keys[i] = v.resolve(r.Dir, k)
		if st, err := os.Stat(sg.Ed25519Keys[i]); err != nil {
			add([]any{"signing", "ed25519-keys", i}, "signing.ed25519-keys[%d] %s", i, statMessage(err, sg.Ed25519Keys[i]))
		} else if !st.Mode().IsRegular() {
			add([]any{"signing", "ed25519-keys", i}, "signing.ed25519-keys[%d] %s: not a regular file", i, sg.Ed25519Keys[i])
		}
	}
	if sg.Ed25519Verify && len(sg.Ed25519Keys) == 0 {
		add([]any{"signing", "ed25519-verify"}, "signing.ed25519-verify without ed25519-keys")
	}
	if sg.PassphraseFile != "" {
		sg.PassphraseFile = v.resolve(r.Dir, sg.PassphraseFile)
		if _, err := os.Stat(sg.PassphraseFile); err != nil {
			add([]any{"signing", "passphrase-file"}, "signing.passphrase-file %s", statMessage(err, sg.PassphraseFile))
		}
	}
	if sg.PassphraseFile != "" && sg.PassphraseEnv != "" {
		add([]any{"signing", "passphrase-env"}, "signing: set passphrase-file or passphrase-env, not both")
	}
	if (sg.PassphraseFile != "" || sg.PassphraseEnv != "") && len(sg.GPGKeys) == 0 {
		add([]any{"signing"}, "signing: a passphrase without gpg-keys")
	}

	// ostree
	o := &r.OSTree
	if o.Repository != "" {
		o.Repository = v.resolve(r.Dir, o.Repository)
	}
	if o.Branch != "" && !validRef(o.Branch) {
		add([]any{"ostree", "branch"}, "ostree.branch %q: not a valid ostree ref (letters, digits, \".\", \"_\" and \"-\" in parts separated by single \"/\")", o.Branch)
	}
	if !stateRootRe.MatchString(o.Stateroot) || o.Stateroot == "." || o.Stateroot == ".." {
		add([]any{"ostree", "stateroot"}, "ostree.stateroot %q: use letters, digits, \".\", \"_\" and \"-\"", o.Stateroot)
	}
	for _, kv := range o.Metadata {
		switch {
		case kv.Key == "":
			add([]any{"ostree", "metadata"}, "ostree.metadata: empty key")
		case strings.HasPrefix(kv.Key, "ostree."):
			add([]any{"ostree", "metadata", kv.Key}, "ostree.metadata %q: keys starting with \"ostree.\" are reserved for ostree", kv.Key)
		case kv.Key == "version":
			add([]any{"ostree", "metadata", kv.Key}, "ostree.metadata \"version\": set it with ostree.version")
		}
	}
	if !stateRootRe.MatchString(o.Remote.Name) || o.Remote.Name == "." || o.Remote.Name == ".." {
		add([]any{"ostree", "remote", "name"}, "ostree.remote.name %q: use letters, digits, \".\", \"_\" and \"-\"", o.Remote.Name)
	}
	if o.Remote.URL != "" && !validURL(o.Remote.URL) {
		add([]any{"ostree", "remote", "url"}, "ostree.remote.url %q: must be an http://, https:// or file:// URL", o.Remote.URL)
	}

	// outputs
	r.checkImages(add)
	if len(r.Outputs.Images) == 0 && r.Outputs.Repository != nil && !*r.Outputs.Repository {
		add([]any{"outputs", "repository"}, "outputs.repository is false and there are no images: the build would produce nothing")
	}
	return errors.Join(errs...)
}

// resolve makes a recipe-relative path absolute.
func (v *validator) resolve(dir, p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(dir, p)
}

func statMessage(err error, p string) string {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Sprintf("%s: no such file or directory (relative paths are relative to the recipe's directory)", p)
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Sprintf("%s: %v", p, pe.Err)
	}
	return err.Error()
}

func validVariant(v string) bool {
	for _, x := range apt.Variants {
		if v == x {
			return true
		}
	}
	return false
}

func validPackage(p string) bool {
	return strings.TrimSpace(p) != "" && !strings.ContainsAny(p, " \t\r\n,")
}

func validURL(s string) bool {
	if !strings.HasPrefix(s, "http://") && !strings.HasPrefix(s, "https://") && !strings.HasPrefix(s, "file://") {
		return false
	}
	_, err := url.Parse(s)
	return err == nil
}

const accountNameRule = "must match ^[a-z_][a-z0-9_-]*$ and have at most 32 characters"

func validAccountName(s string) bool {
	return len(s) <= 32 && accountNameRe.MatchString(s)
}

func validRef(s string) bool {
	if !refRe.MatchString(s) {
		return false
	}
	for _, part := range strings.Split(s, "/") {
		if part == "." || part == ".." {
			return false
		}
	}
	return true
}

// checkHostname returns why s is not a valid hostname, or "".
func checkHostname(s string) string {
	if len(s) > 253 {
		return "longer than 253 characters"
	}
	for _, label := range strings.Split(s, ".") {
		if len(label) > 63 {
			return fmt.Sprintf("label %q is longer than 63 characters", label)
		}
		if !hostLabelRe.MatchString(label) {
			return "use labels of letters, digits and \"-\" (not at either end) separated by \".\""
		}
	}
	return ""
}

// checkAbs returns why p is not an absolute path without "..", or "".
func checkAbs(p string) string {
	if !strings.HasPrefix(p, "/") {
		return "must be an absolute path"
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return "must not contain \"..\""
		}
	}
	return ""
}

// runtimeDirs are mount points whose content the image does not keep.
var runtimeDirs = []string{"/proc", "/sys", "/dev", "/run"}

// checkImagePath returns why p cannot be created in the image, or "".
func checkImagePath(p string) string {
	if msg := checkAbs(p); msg != "" {
		return msg + " in the image"
	}
	c := path.Clean(p)
	if c == "/" {
		return "must not be the root directory"
	}
	if c == "/usr/etc" || strings.HasPrefix(c, "/usr/etc/") {
		return "use /etc (the builder moves /etc to /usr/etc in the commit)"
	}
	for _, d := range runtimeDirs {
		if c == d || strings.HasPrefix(c, d+"/") {
			return fmt.Sprintf("%s is a runtime file system; its content is not part of the image", d)
		}
	}
	return ""
}

// checkOwner returns why s is not "user:group" (names or numeric ids), or
// "".
func checkOwner(s string) string {
	u, g, ok := strings.Cut(s, ":")
	if !ok {
		return "expected user:group or uid:gid"
	}
	for _, part := range []string{u, g} {
		if _, err := strconv.ParseUint(part, 10, 32); err == nil {
			continue
		}
		if !validAccountName(part) {
			return fmt.Sprintf("%q is neither a number nor a valid user or group name", part)
		}
	}
	return ""
}

// checkAccount checks the name and id of groups[i] or users[i]: the name
// is present, valid and unique, the id (if given) unique.
func checkAccount(add func([]any, string, ...any), list, idKey string, i int, name string, id *uint32, names map[string]int, ids map[uint32]int) {
	at := []any{list, i}
	switch {
	case name == "":
		add(at, "%s[%d]: missing required field \"name\"", list, i)
	case !validAccountName(name):
		add(append(at, "name"), "%s[%d].name %q: %s", list, i, name, accountNameRule)
	default:
		if j, dup := names[name]; dup {
			add(append(at, "name"), "%s[%d].name %q: already defined by %s[%d]", list, i, name, list, j)
		} else {
			names[name] = i
		}
	}
	if id != nil {
		if j, dup := ids[*id]; dup {
			add(append(at, idKey), "%s[%d].%s %d: already used by %s[%d]", list, i, idKey, *id, list, j)
		} else {
			ids[*id] = i
		}
	}
}

// checkPlacement checks where files[i] or directories[i] goes in the
// image (key names the path field, which is cleaned) and its owner.
func checkPlacement(add func([]any, string, ...any), list, key string, i int, p *string, owner string) {
	at := []any{list, i}
	if *p == "" {
		add(at, "%s[%d]: missing required field %q", list, i, key)
	} else if msg := checkImagePath(*p); msg != "" {
		add(append(at, key), "%s[%d].%s %q: %s", list, i, key, *p, msg)
	} else {
		*p = path.Clean(*p)
	}
	if msg := checkOwner(owner); msg != "" {
		add(append(at, "owner"), "%s[%d].owner %q: %s", list, i, owner, msg)
	}
}
