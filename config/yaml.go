package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/dmonitor/dmonitor/internal/yamlnode"
)

// decoder walks a yaml.Node tree by hand rather than letting yaml.v3 fill
// structs, so that every problem (an unknown key, a duplicate key, a string
// where a list belongs) is reported with its line and column, and decoding
// goes on after the first one.
type decoder struct {
	file string // as shown in errors
	errs *Errors
}

// fields maps each key a mapping may hold to what decodes its value. path is
// the dotted key path of the value, for messages.
type fields map[string]func(path string, v *yaml.Node)

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parse reads one YAML document. It returns nil for an empty document.
func (d *decoder) parse(data []byte) *yaml.Node {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		// Syntax errors carry only a line, inside their text.
		e := &Error{File: d.file, Msg: err.Error(), Err: err}
		if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
			e.Line, _ = strconv.Atoi(m[1])
			e.Msg = m[2]
		}
		*d.errs = append(*d.errs, e)
		return nil
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		d.errorf(&next, "", "more than one YAML document; dmonitor.yaml holds one")
		return nil
	}
	if len(doc.Content) == 0 {
		return nil
	}
	return doc.Content[0]
}

// errorf records a problem at n. A non-empty path prefixes the message.
func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if path != "" {
		msg = path + ": " + msg
	}
	*d.errs = append(*d.errs, &Error{File: d.file, Line: n.Line, Col: n.Column, Msg: msg})
}

// deref follows aliases to the node they name.
func deref(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// pairs calls fn for every key of the mapping n, in file order, after
// refusing keys that are not strings or that repeat. A null n is an empty
// mapping, so "checks:" with nothing under it is allowed.
func (d *decoder) pairs(path string, n *yaml.Node, fn func(key, v *yaml.Node)) {
	n = deref(n)
	if isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "want a mapping, got %s", yamlnode.Describe(n))
		return
	}
	seen := make(map[string]int)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), deref(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, path, "want a string key, got %s", yamlnode.Describe(k))
			continue
		}
		if line, dup := seen[k.Value]; dup {
			d.errorf(k, path, "duplicate key %q (first on line %d)", k.Value, line)
			continue
		}
		seen[k.Value] = k.Line
		fn(k, v)
	}
}

// mapping decodes the mapping n with f. Unknown keys are errors; a null
// value is the same as an absent key.
func (d *decoder) mapping(path string, n *yaml.Node, f fields) {
	d.pairs(path, n, func(k, v *yaml.Node) {
		decode, ok := f[k.Value]
		if !ok {
			d.errorf(k, path, "unknown field %q", k.Value)
			return
		}
		if isNull(v) {
			return
		}
		decode(join(path, k.Value), v)
	})
}

// str decodes any scalar as a string, as YAML users expect of "port: 25".
func (d *decoder) str(path string, n *yaml.Node, dst *string) bool {
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, path, "want a string, got %s", yamlnode.Describe(n))
		return false
	}
	*dst = n.Value
	return true
}

func (d *decoder) integer(path string, n *yaml.Node, dst *int) bool {
	var v int
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || n.Decode(&v) != nil {
		d.errorf(n, path, "want an integer, got %s", yamlnode.Describe(n))
		return false
	}
	*dst = v
	return true
}

func (d *decoder) boolean(path string, n *yaml.Node, dst *bool) bool {
	var v bool
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" || n.Decode(&v) != nil {
		d.errorf(n, path, "want true or false, got %s", yamlnode.Describe(n))
		return false
	}
	*dst = v
	return true
}

// positive decodes an integer that must be greater than zero.
func (d *decoder) positive(path string, n *yaml.Node, dst *int) bool {
	var v int
	if !d.integer(path, n, &v) {
		return false
	}
	if v <= 0 {
		d.errorf(n, path, "must be positive, got %d", v)
		return false
	}
	*dst = v
	return true
}

func (d *decoder) size(path string, n *yaml.Node, dst *int64) bool {
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, path, "want a size, got %s", yamlnode.Describe(n))
		return false
	}
	v, err := ParseSize(n.Value)
	if err != nil {
		d.errorf(n, path, "%v", err)
		return false
	}
	*dst = v
	return true
}

func (d *decoder) duration(path string, n *yaml.Node, dst *time.Duration) bool {
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, path, "want a duration, got %s", yamlnode.Describe(n))
		return false
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		d.errorf(n, path, "%v", err)
		return false
	}
	*dst = v
	return true
}

// positiveDuration decodes a duration that must be greater than zero.
func (d *decoder) positiveDuration(path string, n *yaml.Node, dst *time.Duration) bool {
	var v time.Duration
	if !d.duration(path, n, &v) {
		return false
	}
	if v <= 0 {
		d.errorf(n, path, "must be positive, got %s", n.Value)
		return false
	}
	*dst = v
	return true
}

// strings decodes a list of scalars. It returns the element nodes too, so
// later checks can point at one element.
func (d *decoder) strings(path string, n *yaml.Node, dst *[]string) ([]*yaml.Node, bool) {
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, path, "want a list of strings, got %s", yamlnode.Describe(n))
		return nil, false
	}
	ok := true
	list := make([]string, 0, len(n.Content))
	nodes := make([]*yaml.Node, 0, len(n.Content))
	for i, e := range n.Content {
		e = deref(e)
		var s string
		if !d.str(fmt.Sprintf("%s[%d]", path, i), e, &s) {
			ok = false
			continue
		}
		list = append(list, s)
		nodes = append(nodes, e)
	}
	if ok {
		*dst = list
	}
	return nodes, ok
}
