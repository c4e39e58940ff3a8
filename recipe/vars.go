package recipe

import (
	"fmt"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

var varNameRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ParseSet parses KEY=VALUE arguments (from --set) into variable values.
// The value may be empty and may contain "="; a later KEY wins.
func ParseSet(kv []string) (map[string]string, error) {
	vars := make(map[string]string, len(kv))
	for _, a := range kv {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			return nil, fmt.Errorf("--set %q: want KEY=VALUE", a)
		}
		if !varNameRe.MatchString(k) {
			return nil, fmt.Errorf("--set %q: invalid variable name %q (want letters, digits and _, not starting with a digit)", a, k)
		}
		vars[k] = v
	}
	return vars, nil
}

// substitute replaces ${NAME} and $$ in every scalar value of the document
// except mapping keys and the top-level variables: subtree. Values come
// from vars, then from variables:. It edits the tree in place so line
// numbers stay those of the recipe file.
func substitute(doc *yaml.Node, vars map[string]string) []problem {
	top := doc
	if top.Kind == yaml.DocumentNode && len(top.Content) > 0 {
		top = top.Content[0]
	}
	values := map[string]string{}
	var probs []problem
	var skip *yaml.Node
	if top.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(top.Content); i += 2 {
			if top.Content[i].Value != "variables" {
				continue
			}
			skip = top.Content[i+1]
			probs = append(probs, readVariables(skip, values)...)
		}
	}
	for k, v := range vars {
		values[k] = v
	}
	s := substituter{values: values, skip: skip}
	s.walk(doc)
	return append(probs, s.probs...)
}

// readVariables reads the variables: mapping (name -> literal string).
func readVariables(n *yaml.Node, into map[string]string) []problem {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return []problem{{n.Line, "variables: expected a mapping of NAME: value"}}
	}
	var probs []problem
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || !varNameRe.MatchString(k.Value) {
			probs = append(probs, problem{k.Line, fmt.Sprintf("variables: invalid variable name %q (want letters, digits and _, not starting with a digit)", k.Value)})
			continue
		}
		if v.Kind == yaml.AliasNode && v.Alias != nil {
			v = v.Alias
		}
		switch {
		case v.Kind != yaml.ScalarNode:
			probs = append(probs, problem{v.Line, fmt.Sprintf("variables.%s: expected a string, not a list or mapping", k.Value)})
		case v.ShortTag() == "!!null":
			into[k.Value] = ""
		default:
			into[k.Value] = v.Value
		}
	}
	return probs
}

type substituter struct {
	values map[string]string
	skip   *yaml.Node
	probs  []problem
}

func (s *substituter) walk(n *yaml.Node) {
	if n == nil || n == s.skip {
		return
	}
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for _, c := range n.Content {
			s.walk(c)
		}
	case yaml.MappingNode:
		for i := 1; i < len(n.Content); i += 2 {
			s.walk(n.Content[i])
		}
	case yaml.ScalarNode:
		s.scalar(n)
	}
	// Aliases are left alone: their anchor is substituted where it is
	// defined.
}

func (s *substituter) scalar(n *yaml.Node) {
	if !strings.Contains(n.Value, "$") {
		return
	}
	out, changed, msgs := expand(n.Value, s.values)
	for _, m := range msgs {
		s.probs = append(s.probs, problem{n.Line, m})
	}
	if !changed || len(msgs) > 0 {
		return
	}
	n.Value = out
	if n.Style&yaml.TaggedStyle == 0 {
		// Resolve the new text again, so a plain ${FLAG} set to true is a
		// boolean and ${UID} a number; quoted and block scalars stay
		// strings (yaml.v3 goes by their style).
		n.Tag = ""
	}
}

// expand substitutes ${NAME} and $$ in s. A "$" followed by anything else
// is kept.
func expand(s string, values map[string]string) (out string, changed bool, msgs []string) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '$' || i+1 >= len(s) {
			b.WriteByte(c)
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
			changed = true
		case '{':
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				msgs = append(msgs, fmt.Sprintf("unterminated variable reference %q (missing \"}\"; write $$ for a literal $)", s[i:]))
				return s, false, msgs
			}
			name := s[i+2 : i+2+end]
			i += 2 + end
			if !varNameRe.MatchString(name) {
				msgs = append(msgs, fmt.Sprintf("invalid variable reference ${%s} (names are letters, digits and _, not starting with a digit; write $$ for a literal $)", name))
				continue
			}
			v, ok := values[name]
			if !ok {
				msgs = append(msgs, fmt.Sprintf("variable ${%s} is not set (set it with --set %s=VALUE or under variables:)", name, name))
				continue
			}
			b.WriteString(v)
			changed = true
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), changed, msgs
}
