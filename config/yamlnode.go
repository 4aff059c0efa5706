package config

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// maxExpandedNodes bounds the document after alias expansion. yaml.v3 guards
// against alias bombs only when decoding into Go values; we walk yaml.Nodes
// (to keep line numbers), so the guard is ours. A legitimate configuration
// is orders of magnitude smaller.
const maxExpandedNodes = 1 << 20

// parseDocument returns the root node of the file's single YAML document.
func parseDocument(file string, data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, joinErrors([]*Error{{File: file, Line: 1, Msg: "configuration is empty"}})
		}
		return nil, joinErrors([]*Error{syntaxError(file, err)})
	}
	if len(doc.Content) == 0 || isNull(doc.Content[0]) {
		return nil, joinErrors([]*Error{{File: file, Line: doc.Line, Msg: "configuration is empty"}})
	}
	root := doc.Content[0]

	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, joinErrors([]*Error{syntaxError(file, err)})
	default:
		// Silently ignoring a second document would hide half a config.
		return nil, joinErrors([]*Error{{File: file, Line: next.Line, Msg: "more than one YAML document (---); the configuration must be a single document"}})
	}

	if size, cyclic := expandedSize(root, map[*yaml.Node]int{}); cyclic || size > maxExpandedNodes {
		return nil, joinErrors([]*Error{{File: file, Line: root.Line, Msg: "aliases expand to a document that is recursive or too large"}})
	}
	return root, nil
}

// expandedSize counts the nodes under n with aliases expanded, saturating just
// above maxExpandedNodes. Memoising per node keeps it linear in the file
// size; an anchor that contains an alias to itself is reported as cyclic.
func expandedSize(n *yaml.Node, memo map[*yaml.Node]int) (size int, cyclic bool) {
	const inProgress = -1
	switch s, seen := memo[n]; {
	case seen && s == inProgress:
		return 0, true
	case seen:
		return s, false
	}
	memo[n] = inProgress
	size = 1
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		s, c := expandedSize(n.Alias, memo)
		if c {
			return 0, true
		}
		size += s
	}
	for _, child := range n.Content {
		s, c := expandedSize(child, memo)
		if c {
			return 0, true
		}
		size = min(size+s, maxExpandedNodes+1)
	}
	memo[n] = size
	return size, false
}

// parser walks the YAML tree against the schema, collecting every problem.
type parser struct {
	file string
	opts Options
	errs []*Error
}

// resolve follows aliases, so anchors work wherever a value is expected.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	n = resolve(n)
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names what a node holds, for "expected X, got Y" messages.
func describe(n *yaml.Node) string {
	switch n = resolve(n); {
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case isNull(n):
		return "nothing"
	default:
		return `"` + n.Value + `"`
	}
}

func field(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

// entry is one key/value pair of a mapping.
type entry struct {
	key   string
	keyAt *yaml.Node
	value *yaml.Node // aliases resolved
}

// entries returns a mapping's pairs in file order, reporting (and dropping)
// non-string and duplicate keys. yaml.v3 checks duplicates only when
// decoding into Go values, not into yaml.Node.
func (p *parser) entries(n *yaml.Node, path string) ([]entry, bool) {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		p.errorf(n, path, "expected a mapping, got %s", describe(n))
		return nil, false
	}
	out := make([]entry, 0, len(n.Content)/2)
	firstLine := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		if k.Kind != yaml.ScalarNode || isNull(k) {
			p.errorf(k, path, "keys must be strings, got %s", describe(k))
			continue
		}
		if line, dup := firstLine[k.Value]; dup {
			p.errorf(k, field(path, k.Value), "duplicate key (first at line %d)", line)
			continue
		}
		firstLine[k.Value] = k.Line
		out = append(out, entry{key: k.Value, keyAt: k, value: v})
	}
	return out, true
}

// object is a mapping checked against a fixed set of keys.
type object struct {
	at     *yaml.Node
	path   string
	values map[string]*yaml.Node // null values omitted: "key:" means unset
}

// object checks that n is a mapping with only the allowed keys. Unknown keys
// are errors because a misspelt optional key would otherwise be silently
// replaced by its default.
func (p *parser) object(n *yaml.Node, path string, allowed ...string) (object, bool) {
	pairs, ok := p.entries(n, path)
	if !ok {
		return object{}, false
	}
	obj := object{at: resolve(n), path: path, values: make(map[string]*yaml.Node, len(pairs))}
	for _, e := range pairs {
		if !slices.Contains(allowed, e.key) {
			p.errorf(e.keyAt, field(path, e.key), "unknown field %q (valid: %s)", e.key, strings.Join(allowed, ", "))
			continue
		}
		if !isNull(e.value) {
			obj.values[e.key] = e.value
		}
	}
	return obj, true
}

// required returns the value of key, reporting it if missing.
func (p *parser) required(obj object, key string) (*yaml.Node, bool) {
	n, ok := obj.values[key]
	if !ok {
		p.errorf(obj.at, field(obj.path, key), "required field is missing")
	}
	return n, ok
}

func (p *parser) list(n *yaml.Node, path string) ([]*yaml.Node, bool) {
	n = resolve(n)
	if n.Kind != yaml.SequenceNode {
		p.errorf(n, path, "expected a list, got %s", describe(n))
		return nil, false
	}
	items := make([]*yaml.Node, len(n.Content))
	for i, item := range n.Content {
		items[i] = resolve(item)
	}
	return items, true
}

// str accepts any scalar: `name: 80` is the string "80".
func (p *parser) str(n *yaml.Node, path string) (string, bool) {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode || isNull(n) {
		p.errorf(n, path, "expected a string, got %s", describe(n))
		return "", false
	}
	return n.Value, true
}

// integer accepts only YAML integers in [lo, hi]: "80" in quotes is a
// string, and 1.5 is not silently truncated.
func (p *parser) integer(n *yaml.Node, path string, lo, hi int64) (int64, bool) {
	n = resolve(n)
	var v int64
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
		p.errorf(n, path, "expected an integer, got %s", describe(n))
		return 0, false
	}
	if err := n.Decode(&v); err != nil || v < lo || v > hi {
		p.errorf(n, path, "%s is out of range %d..%d", n.Value, lo, hi)
		return 0, false
	}
	return v, true
}

func (p *parser) boolean(n *yaml.Node, path string) (bool, bool) {
	n = resolve(n)
	var v bool
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || n.Decode(&v) != nil {
		p.errorf(n, path, "expected true or false, got %s", describe(n))
		return false, false
	}
	return v, true
}

func (p *parser) duration(n *yaml.Node, path string) (time.Duration, bool) {
	s, ok := p.str(n, path)
	if !ok {
		return 0, false
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		p.errorf(n, path, "invalid duration %q: want a number with a unit, e.g. 30s or 5m", s)
		return 0, false
	}
	if d <= 0 {
		p.errorf(n, path, "duration must be positive, got %s", s)
		return 0, false
	}
	return d, true
}
