package recipe

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// yaml.v3 offers KnownFields only when decoding bytes, and decoding
// re-encoded nodes would lose the recipe's line numbers. So unknown keys
// are found by walking the node tree against the Go types here, and the
// values are decoded from the (substituted) tree with Node.Decode, whose
// type errors carry the nodes' lines.

var (
	recipeType      = reflect.TypeOf(Recipe{})
	nodeType        = reflect.TypeOf(yaml.Node{})
	unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()
)

// unknownKeys reports mapping keys that no field of the Recipe types
// takes, at the key's line.
func unknownKeys(doc *yaml.Node) []problem {
	var probs []problem
	checkKeys(doc, recipeType, "", 0, &probs)
	return probs
}

func checkKeys(n *yaml.Node, t reflect.Type, at string, depth int, probs *[]problem) {
	if n == nil || depth > 100 {
		return
	}
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) > 0 {
			checkKeys(n.Content[0], t, at, depth+1, probs)
		}
		return
	}
	if n.Kind == yaml.AliasNode {
		checkKeys(n.Alias, t, at, depth+1, probs)
		return
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nodeType || reflect.PointerTo(t).Implements(unmarshalerType) {
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return // a type error, reported by Decode
		}
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if isMergeKey(k) {
				checkMerge(v, t, at, depth+1, probs)
				continue
			}
			ft, ok := fields[k.Value]
			if !ok {
				msg := fmt.Sprintf("unknown key %q", k.Value)
				if at != "" {
					msg += " in " + at
				}
				*probs = append(*probs, problem{k.Line, msg})
				continue
			}
			checkKeys(v, ft, joinPath(at, k.Value), depth+1, probs)
		}
	case reflect.Slice, reflect.Array:
		if n.Kind != yaml.SequenceNode {
			return
		}
		for i, c := range n.Content {
			checkKeys(c, t.Elem(), fmt.Sprintf("%s[%d]", at, i), depth+1, probs)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			checkKeys(n.Content[i+1], t.Elem(), joinPath(at, n.Content[i].Value), depth+1, probs)
		}
	}
}

func checkMerge(v *yaml.Node, t reflect.Type, at string, depth int, probs *[]problem) {
	if v.Kind == yaml.SequenceNode {
		for _, c := range v.Content {
			checkKeys(c, t, at, depth+1, probs)
		}
		return
	}
	checkKeys(v, t, at, depth+1, probs)
}

func isMergeKey(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.Value == "<<" && (k.Tag == "" || k.Tag == "!" || k.Tag == "!!merge" || k.Tag == "tag:yaml.org,2002:merge")
}

func joinPath(at, key string) string {
	if at == "" {
		return key
	}
	return at + "." + key
}

// yamlFields maps the YAML keys of a struct to the field types, as yaml.v3
// names them (tag name, or the lowercased field name; inline structs
// flattened).
func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.PkgPath != "" && !f.Anonymous {
			continue
		}
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if strings.Contains(","+opts+",", ",inline,") {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range yamlFields(ft) {
					out[k] = v
				}
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
	return out
}

var (
	yamlLineRe    = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
	unknownKeyRe  = regexp.MustCompile(`^field (\S+) not found in type \S+$`)
	wrongTypeRe   = regexp.MustCompile("^cannot unmarshal !!(\\w+)(?: `(.*)`)? into (\\S+)$")
	friendlyTypes = map[string]string{
		"string": "a string", "[]string": "a list of strings", "bool": "true or false",
		"int": "an integer", "uint32": "an integer from 0 to 4294967295",
		"[]*apt.Source": "a list of sources", "apt.Source": "a source (a mapping)",
		"map[string]string":  "a mapping of names to strings",
		"recipe.Kernel":      "a mapping (package, modules)",
		"[]recipe.User":      "a list of users",
		"recipe.User":        "a user (a mapping)",
		"[]recipe.Group":     "a list of groups",
		"recipe.Group":       "a group (a mapping)",
		"[]recipe.File":      "a list of files",
		"recipe.File":        "a file (a mapping)",
		"[]recipe.Directory": "a list of directories",
		"recipe.Directory":   "a directory (a mapping)",
		"[]recipe.Script":    "a list of scripts",
		"recipe.Script":      "a script (a mapping)",
		"recipe.OSTree":      "a mapping (repository, branch, ...)",
		"recipe.Remote":      "a mapping (name, url)",
		"recipe.Outputs":     "a mapping (repository, images)",
		"recipe.Signing":     "a mapping (gpg-keys, ed25519-keys, ed25519-verify, passphrase-file, passphrase-env)",
		"[]recipe.Image":     "a list of images",
		"recipe.Image":       "an image (a mapping)",
		"[]recipe.Partition": "a list of partitions",
		"recipe.Partition":   "a partition (a mapping)",
		"recipe.Recipe":      "a mapping (the recipe)",
	}
)

// yamlProblems turns the YAML library's errors into problems in the
// recipe's own terms.
func yamlProblems(err error) []problem {
	var msgs []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{err.Error()}
	}
	var out []problem
	for _, m := range msgs {
		line, text := 0, m
		if g := yamlLineRe.FindStringSubmatch(m); g != nil {
			line, _ = strconv.Atoi(g[1])
			text = g[2]
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
		out = append(out, problem{line, strings.TrimPrefix(text, "yaml: ")})
	}
	return out
}
