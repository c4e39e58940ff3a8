// Package recipe reads build recipes: YAML decoded strictly (unknown keys,
// wrong types and missing required fields are errors carrying file:line),
// with defaults applied and paths resolved against the recipe's directory.
//
// This is the part of the schema the resolver needs (sources, packages);
// the build issue extends it.
package recipe

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/apt-ostree/apt-ostree-factory/apt"
)

// Recipe is a decoded, validated recipe.
type Recipe struct {
	// Name identifies the product; used in messages and defaults.
	Name string `yaml:"name"`
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

	// Path is the file the recipe was read from.
	Path string `yaml:"-"`
}

// Load reads and validates a recipe file.
func Load(path string) (*Recipe, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(b, path)
}

// Parse decodes recipe YAML; name is used in error messages and to resolve
// relative paths.
func Parse(b []byte, name string) (*Recipe, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var r Recipe
	if err := dec.Decode(&r); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: empty recipe", name)
		}
		return nil, yamlError(name, err)
	}
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: more than one YAML document", name)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	r.Path = name
	v := validator{file: name, root: &root}
	r.applyDefaults()
	if err := v.check(&r); err != nil {
		return nil, err
	}
	dir := filepath.Dir(name)
	for _, s := range r.Sources {
		for i, k := range s.SignedBy {
			if !filepath.IsAbs(k) {
				s.SignedBy[i] = filepath.Join(dir, k)
			}
		}
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
		if len(s.Components) == 0 {
			s.Components = []string{"main"}
		}
		if len(s.Architectures) == 0 {
			s.Architectures = []string{r.Architecture}
		}
	}
}

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
		} else if !strings.HasPrefix(s.URI, "http://") && !strings.HasPrefix(s.URI, "https://") && !strings.HasPrefix(s.URI, "file://") {
			add(append(at, "uri"), "sources[%d].uri %q: must start with http://, https:// or file://", i, s.URI)
		}
		if s.Suite == "" {
			add(at, "sources[%d]: missing required field \"suite\"", i)
		}
		if len(s.SignedBy) == 0 {
			add(at, "sources[%d]: missing required field \"signed-by\" (a keyring file; unsigned archives are not supported)", i)
		}
		if s.Priority < 0 {
			add(append(at, "priority"), "sources[%d].priority must be positive", i)
		}
	}
	for i, p := range r.Packages {
		if strings.TrimSpace(p) == "" || strings.ContainsAny(p, " \t,") {
			add([]any{"packages", i}, "invalid package name %q", p)
		}
	}
	for i, p := range r.Excludes {
		if strings.TrimSpace(p) == "" || strings.ContainsAny(p, " \t,") {
			add([]any{"excludes", i}, "invalid package name %q", p)
		}
	}
	return errors.Join(errs...)
}

func validVariant(v string) bool {
	for _, x := range apt.Variants {
		if v == x {
			return true
		}
	}
	return false
}

var (
	yamlLineRe    = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
	unknownKeyRe  = regexp.MustCompile(`^field (\S+) not found in type \S+$`)
	wrongTypeRe   = regexp.MustCompile("^cannot unmarshal !!(\\w+)(?: `(.*)`)? into (\\S+)$")
	friendlyTypes = map[string]string{
		"string": "a string", "[]string": "a list of strings", "bool": "true or false",
		"int": "an integer", "[]*apt.Source": "a list of sources", "apt.Source": "a source (a mapping)",
	}
)

// yamlError turns the YAML library's errors into one "file:line: message"
// line per problem, in the recipe's own terms.
func yamlError(file string, err error) error {
	var msgs []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{err.Error()}
	}
	var out []error
	for _, m := range msgs {
		line, text := "", m
		if g := yamlLineRe.FindStringSubmatch(m); g != nil {
			line, text = g[1], g[2]
		}
		if g := unknownKeyRe.FindStringSubmatch(text); g != nil {
			text = fmt.Sprintf("unknown key %q", g[1])
		} else if g := wrongTypeRe.FindStringSubmatch(text); g != nil {
			want := friendlyTypes[g[3]]
			if want == "" {
				want = g[3]
			}
			text = fmt.Sprintf("wrong type: expected %s, got a YAML %s", want, g[1])
			if g[2] != "" {
				text += fmt.Sprintf(" (%s)", g[2])
			}
		}
		if line != "" {
			out = append(out, fmt.Errorf("%s:%s: %s", file, line, text))
		} else {
			out = append(out, fmt.Errorf("%s: %s", file, strings.TrimPrefix(text, "yaml: ")))
		}
	}
	return errors.Join(out...)
}

// AptRequest is the resolver request the recipe describes.
func (r *Recipe) AptRequest() apt.Request {
	return apt.Request{
		Architecture: r.Architecture,
		Variant:      r.Variant,
		Packages:     r.Packages,
		Excludes:     r.Excludes,
		Recommends:   r.Recommends,
	}
}
