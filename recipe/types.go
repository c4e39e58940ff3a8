package recipe

import (
	"fmt"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Mode is a Unix permission mode (at most 07777). In YAML it is always
// written in octal digits, with or without a leading 0 or 0o, quoted or
// not: 0644, "0644", 644 and 0o644 are all rw-r--r--.
type Mode uint32

// String formats the mode as four octal digits, e.g. "0644".
func (m Mode) String() string {
	return fmt.Sprintf("%04o", uint32(m))
}

// UnmarshalYAML reads the octal digits of a scalar, whatever YAML would
// have made of them.
func (m *Mode) UnmarshalYAML(n *yaml.Node) error {
	bad := func(why string) error {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: invalid mode %q: %s", n.Line, n.Value, why)}}
	}
	if n.Kind != yaml.ScalarNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: invalid mode: expected octal digits like 0644, not a list or mapping", n.Line)}}
	}
	s := n.Value
	if strings.HasPrefix(s, "0o") || strings.HasPrefix(s, "0O") {
		s = s[2:]
	}
	if s == "" || strings.Trim(s, "01234567") != "" {
		return bad("expected octal digits like 0644")
	}
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil || v > 0o7777 {
		return bad("larger than 07777")
	}
	*m = Mode(v)
	return nil
}

// KV is one commit metadata entry.
type KV struct {
	Key   string
	Value string
}

// Metadata is commit metadata in the order the recipe lists it: a YAML
// mapping of names to strings.
type Metadata []KV

// Get returns the value of key and whether it is set.
func (md Metadata) Get(key string) (string, bool) {
	for _, kv := range md {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return "", false
}

// UnmarshalYAML reads a mapping of scalar keys to scalar values, keeping
// the order.
func (md *Metadata) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind != yaml.MappingNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: wrong type: expected a mapping of names to strings", n.Line)}}
	}
	var errs []string
	out := Metadata{}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if v.Kind == yaml.AliasNode && v.Alias != nil {
			v = v.Alias
		}
		if k.Kind != yaml.ScalarNode {
			errs = append(errs, fmt.Sprintf("line %d: metadata keys must be strings", k.Line))
			continue
		}
		if first, dup := seen[k.Value]; dup {
			errs = append(errs, fmt.Sprintf("line %d: mapping key %q already defined at line %d", k.Line, k.Value, first))
			continue
		}
		seen[k.Value] = k.Line
		if v.Kind != yaml.ScalarNode {
			errs = append(errs, fmt.Sprintf("line %d: metadata %q: expected a string, not a list or mapping", v.Line, k.Value))
			continue
		}
		val := v.Value
		if v.ShortTag() == "!!null" {
			val = ""
		}
		out = append(out, KV{Key: k.Value, Value: val})
	}
	if len(errs) > 0 {
		return &yaml.TypeError{Errors: errs}
	}
	*md = out
	return nil
}
