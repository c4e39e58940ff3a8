package ostree

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/apt-ostree/apt-ostree-factory/internal/atomicfile"
)

// ValidateRef checks a ref name against OSTree's grammar: components of
// [A-Za-z0-9_][-._A-Za-z0-9_]* separated by single slashes.
func ValidateRef(ref string) error {
	if ref == "" {
		return fmt.Errorf("invalid ref name: empty")
	}
	for _, part := range strings.Split(ref, "/") {
		if part == "" {
			return fmt.Errorf("invalid ref name %q: empty component", ref)
		}
		for i := 0; i < len(part); i++ {
			c := part[i]
			word := c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
			if !word && (i == 0 || (c != '-' && c != '.')) {
				return fmt.Errorf("invalid ref name %q: unexpected %q", ref, c)
			}
		}
	}
	return nil
}

// refPath maps "ref" to refs/heads/ref and "remote:ref" to refs/remotes/remote/ref.
func (r *Repo) refPath(ref string) (string, error) {
	dir := "heads"
	name := ref
	if remote, rest, ok := strings.Cut(ref, ":"); ok {
		if err := ValidateRef(remote); err != nil || strings.Contains(remote, "/") {
			return "", fmt.Errorf("invalid remote name in %q", ref)
		}
		dir = filepath.Join("remotes", remote)
		name = rest
	}
	if err := ValidateRef(name); err != nil {
		return "", err
	}
	return filepath.Join(r.path, "refs", dir, name), nil
}

// ReadRef returns the commit a ref points at; a missing ref wraps ErrNotFound.
func (r *Repo) ReadRef(ref string) (Checksum, error) {
	p, err := r.refPath(ref)
	if err != nil {
		return Checksum{}, err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrInvalid) {
			return Checksum{}, fmt.Errorf("ref %s: %w", ref, ErrNotFound)
		}
		return Checksum{}, fmt.Errorf("ref %s: %w", ref, err)
	}
	c, err := ParseChecksum(strings.TrimSpace(string(b)))
	if err != nil {
		return Checksum{}, fmt.Errorf("ref %s: %w", ref, err)
	}
	return c, nil
}

// WriteRef points ref at commit c, atomically. The commit must be present.
func (r *Repo) WriteRef(ref string, c Checksum) error {
	p, err := r.refPath(ref)
	if err != nil {
		return err
	}
	if ok, err := r.HasObject(c, ObjectCommit); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("ref %s: commit %s is not in the repository", ref, c)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o775); err != nil {
		return fmt.Errorf("ref %s: %w", ref, err)
	}
	if err := atomicfile.WriteFile(p, []byte(c.String()+"\n"), 0o644); err != nil {
		return fmt.Errorf("ref %s: %w", ref, err)
	}
	return nil
}

// DeleteRef removes a ref; removing a missing ref is not an error.
func (r *Repo) DeleteRef(ref string) error {
	p, err := r.refPath(ref)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("ref %s: %w", ref, err)
	}
	return nil
}

// ListRefs returns all refs with their commits: local refs by name, remote
// refs as "remote:ref". Names are sorted.
func (r *Repo) ListRefs() (map[string]Checksum, []string, error) {
	out := map[string]Checksum{}
	add := func(base, prefix string, remotes bool) error {
		return filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if d.IsDir() || strings.HasPrefix(d.Name(), ".") {
				return nil
			}
			rel, _ := filepath.Rel(base, p)
			rel = filepath.ToSlash(rel)
			name := prefix + rel
			if remotes {
				remote, rest, _ := strings.Cut(rel, "/")
				name = remote + ":" + rest
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			c, err := ParseChecksum(strings.TrimSpace(string(b)))
			if err != nil {
				return fmt.Errorf("ref %s: %w", name, err)
			}
			out[name] = c
			return nil
		})
	}
	if err := add(filepath.Join(r.path, "refs", "heads"), "", false); err != nil {
		return nil, nil, err
	}
	if err := add(filepath.Join(r.path, "refs", "remotes"), "", true); err != nil {
		return nil, nil, err
	}
	names := make([]string, 0, len(out))
	for n := range out {
		names = append(names, n)
	}
	sort.Strings(names)
	return out, names, nil
}

// ResolveRev turns a revision into a commit checksum: a full checksum, a
// ref or remote:ref, each optionally followed by ^ (parent) any number of times.
func (r *Repo) ResolveRev(rev string) (Checksum, error) {
	base := strings.TrimRight(rev, "^")
	up := len(rev) - len(base)
	var c Checksum
	var err error
	if len(base) == 64 {
		if c, err = ParseChecksum(base); err != nil {
			return Checksum{}, err
		}
		if ok, err := r.HasObject(c, ObjectCommit); err != nil {
			return Checksum{}, err
		} else if !ok {
			return Checksum{}, fmt.Errorf("commit %s: %w", c, ErrNotFound)
		}
	} else if c, err = r.ReadRef(base); err != nil {
		return Checksum{}, err
	}
	for i := 0; i < up; i++ {
		cm, err := r.ReadCommit(c)
		if err != nil {
			return Checksum{}, err
		}
		if cm.Parent.IsZero() {
			return Checksum{}, fmt.Errorf("revision %s: commit %s has no parent", rev, c)
		}
		c = cm.Parent
	}
	return c, nil
}
