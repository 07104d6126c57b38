package rules

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dmonitor/dmonitor/config"
	"github.com/dmonitor/dmonitor/tsdb"
	"go.yaml.in/yaml/v3"

	"github.com/dmonitor/dmonitor/internal/yamlnode"
)

// Options are the settings of Load and Parse.
type Options struct {
	// Receivers, when not nil, are the receiver names that notify may use;
	// any other name is an error. Nil accepts every name.
	Receivers []string
	// Config, when not nil, is the configuration the rules are to run
	// with: a rule that selects none of its targets is warned about (see
	// Set.Warnings). Nil skips that check.
	Config *config.Config
	// Reserved are the names of the evaluator's own rules (observer-up,
	// partial-outage, ...): a rule file may not take them, or its alerts
	// and the built-in's would be one.
	Reserved []string
}

// Set is the compiled rules of a rules.d directory. It is immutable and
// safe for concurrent use.
type Set struct {
	rules    []*Rule // parents before children, otherwise in file order
	byName   map[string]*Rule
	queries  []QueryKey
	warnings config.Errors
}

// Load reads every *.yaml file of dir, in name order, and compiles the
// rules in them. A missing dir is an empty Set: rules.d is optional. Load
// returns either a Set or an error of type config.Errors listing every
// problem found, each as "file:line:col: rule "name": message", never
// both; file is dir joined with the file name. What is likely a mistake
// but loads (an unknown severity, a select that matches nothing) is in
// the Set's Warnings; a refused load reports only its errors.
func Load(dir string, o Options) (*Set, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return build(nil, o)
	}
	if err != nil {
		return nil, config.Errors{{File: dir, Msg: ioMessage(err), Err: err}}
	}
	var srcs []source
	var errs config.Errors
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".yaml") || strings.HasPrefix(name, ".") {
			continue
		}
		file := filepath.Join(dir, name)
		data, err := os.ReadFile(file)
		if err != nil {
			errs = append(errs, &config.Error{File: file, Msg: ioMessage(err), Err: err})
			continue
		}
		srcs = append(srcs, source{file, data})
	}
	set, err := build(srcs, o)
	if len(errs) > 0 {
		var more config.Errors
		errors.As(err, &more)
		errs = append(errs, more...)
		sortErrors(errs)
		return nil, errs
	}
	return set, err
}

// Parse compiles the rules of one file's contents, named file in errors,
// as Load does for a directory holding only that file.
func Parse(file string, data []byte, o Options) (*Set, error) {
	return build([]source{{file, data}}, o)
}

// Warnings returns what is likely a mistake in the rules of s although
// they load, positioned and worded like Load's errors ("file:line:col:
// rule "name": message"), sorted by file, line and column: a select key no
// instance has (`chek: load`), a severity other than those of Severities
// (`warnin`), and, when Options.Config was given, a select that matches
// no target of that configuration. A misspelt name comes with the likely
// one ("did you mean "check"?"). Nil when there is nothing to say.
func (s *Set) Warnings() config.Errors { return slices.Clone(s.warnings) }

// Rules returns the rules of s, every rule after the rules it depends on.
func (s *Set) Rules() []*Rule { return slices.Clone(s.rules) }

// Rule returns the rule called name, or nil.
func (s *Set) Rule(name string) *Rule { return s.byName[name] }

// Match returns the rules that select the instance host×check with the
// given other tags, in the order of Rules. When it returns none, the
// instance gets Default().
func (s *Set) Match(host, check string, tags map[string]string) []*Rule {
	var out []*Rule
	for _, r := range s.rules {
		if r.Matches(host, check, tags) {
			out = append(out, r)
		}
	}
	return out
}

// Queries returns the TSDB queries that the conditions of s read, one per
// metric and window, sorted; Prefetch issues exactly these.
func (s *Set) Queries() []QueryKey { return slices.Clone(s.queries) }

// Prefetch fetches, for a tick at now, every series the conditions of s
// read: one query per metric and window (all series, no aggregation,
// [now-window, now]), however many rules and instances use it. It always
// returns Data; a query that failed is kept in it as that query's error,
// and every condition reading it evaluates to a *QueryError.
func (s *Set) Prefetch(ctx context.Context, q Querier, now time.Time) *Data {
	return prefetch(ctx, q, now, s.queries)
}

type source struct {
	file string
	data []byte
}

// ruleDef is one rule as decoded, with the nodes errors point at.
type ruleDef struct {
	rule        Rule
	src         []byte
	node        *yaml.Node // the rule's mapping
	name        *yaml.Node
	expr        *yaml.Node
	summary     *yaml.Node
	description *yaml.Node
	deps        []*yaml.Node // the parents named in depends_on, in Rule.Parents order
	severity    *yaml.Node
	sel         *yaml.Node              // the select mapping
	selKeys     []*yaml.Node            // its keys, in file order
	selGlobs    map[string][]*yaml.Node // each key's globs

	// bad marks a rule with errors, kept so that the rules naming it in
	// depends_on are not told it does not exist.
	bad bool
}

type loader struct {
	o     Options
	errs  config.Errors
	warns config.Errors
}

func build(srcs []source, o Options) (*Set, error) {
	l := &loader{o: o}
	var defs []*ruleDef
	for _, s := range srcs {
		defs = append(defs, l.file(s)...)
	}
	set := l.link(defs)
	if len(l.errs) > 0 {
		sortErrors(l.errs)
		return nil, l.errs
	}
	l.warnAll(defs)
	sortErrors(l.warns)
	set.warnings = l.warns
	return set, nil
}

func sortErrors(es config.Errors) {
	slices.SortStableFunc(es, func(a, b *config.Error) int {
		return cmp.Or(cmp.Compare(a.File, b.File), cmp.Compare(a.Line, b.Line), cmp.Compare(a.Col, b.Col))
	})
}

// ioMessage describes a file system error without the path, which the
// Error carrying it already names.
func ioMessage(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Op + ": " + pe.Err.Error()
	}
	return err.Error()
}

// decoder decodes one file, walking yaml.Nodes by hand so that every
// problem has a position and decoding goes on after the first one.
type decoder struct {
	l    *loader
	file string
	src  []byte
	rule string // the rule being decoded, as it prefixes messages
}

func (d *decoder) errorf(n *yaml.Node, format string, args ...any) {
	d.errorAt(n.Line, n.Column, format, args...)
}

func (d *decoder) errorAt(line, col int, format string, args ...any) {
	d.l.errs = append(d.l.errs, d.problem(line, col, format, args...))
}

// warnf records a warning at n, worded as errorf words an error.
func (d *decoder) warnf(n *yaml.Node, format string, args ...any) {
	d.l.warns = append(d.l.warns, d.problem(n.Line, n.Column, format, args...))
}

func (d *decoder) problem(line, col int, format string, args ...any) *config.Error {
	msg := fmt.Sprintf(format, args...)
	if d.rule != "" {
		msg = d.rule + ": " + msg
	}
	return &config.Error{File: d.file, Line: line, Col: col, Msg: msg}
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func (l *loader) file(s source) []*ruleDef {
	d := &decoder{l: l, file: s.file, src: s.data}
	dec := yaml.NewDecoder(bytes.NewReader(s.data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		// Syntax errors carry only a line, inside their text.
		e := &config.Error{File: s.file, Msg: err.Error(), Err: err}
		if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
			e.Line, _ = strconv.Atoi(m[1])
			e.Msg = m[2]
		}
		l.errs = append(l.errs, e)
		return nil
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		d.errorf(&next, "more than one YAML document; a rule file holds one")
		return nil
	}
	if len(doc.Content) == 0 {
		return nil
	}
	var list *yaml.Node
	d.mapping(doc.Content[0], "", map[string]func(v *yaml.Node){
		"rules": func(v *yaml.Node) {
			if v.Kind != yaml.SequenceNode {
				d.errorf(v, "rules: want a list of rules, got %s", yamlnode.Describe(v))
				return
			}
			list = v
		},
	})
	if list == nil {
		return nil
	}
	var defs []*ruleDef
	for i, n := range list.Content {
		if def := d.rule1(i, deref(n)); def != nil {
			defs = append(defs, def)
		}
	}
	return defs
}

// labelName is what a label name may be: Alertmanager's label syntax.
var labelName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// reservedLabels are set by dmonitor on every alert.
var reservedLabels = []string{"alertname", "rule", "host", "check", "severity"}

func (d *decoder) rule1(i int, n *yaml.Node) *ruleDef {
	d.rule = fmt.Sprintf("rules[%d]", i)
	defer func() { d.rule = "" }()
	if n.Kind != yaml.MappingNode {
		d.errorf(n, "want a mapping, got %s", yamlnode.Describe(n))
		return nil
	}
	// The name first, so every other message can say which rule it is about.
	for j := 0; j+1 < len(n.Content); j += 2 {
		if k := deref(n.Content[j]); k.Kind == yaml.ScalarNode && k.Value == "name" {
			if v := deref(n.Content[j+1]); v.Kind == yaml.ScalarNode && v.Value != "" {
				d.rule = "rule " + strconv.Quote(v.Value)
			}
		}
	}
	def := &ruleDef{src: d.src, node: n}
	r := &def.rule
	r.File, r.Line = d.file, n.Line
	ok := true
	str := func(field string, dst *string) func(v *yaml.Node) {
		return func(v *yaml.Node) {
			if v.Kind != yaml.ScalarNode {
				d.errorf(v, "%s: want a string, got %s", field, yamlnode.Describe(v))
				ok = false
				return
			}
			*dst = v.Value
		}
	}
	dur := func(field string, dst *time.Duration) func(v *yaml.Node) {
		return func(v *yaml.Node) {
			if v.Kind != yaml.ScalarNode {
				d.errorf(v, "%s: want a duration, got %s", field, yamlnode.Describe(v))
				ok = false
				return
			}
			t, err := config.ParseDuration(v.Value)
			if err == nil && t < 0 {
				err = fmt.Errorf("must not be negative, got %s", v.Value)
			}
			if err != nil {
				d.errorf(v, "%s: %v", field, err)
				ok = false
				return
			}
			*dst = t
		}
	}
	d.mapping(n, "", map[string]func(v *yaml.Node){
		"name": func(v *yaml.Node) {
			def.name = v
			str("name", &r.Name)(v)
		},
		"select": func(v *yaml.Node) { ok = d.selector(v, def) && ok },
		"expr": func(v *yaml.Node) {
			def.expr = v
			str("expr", &r.Expr)(v)
			if v.Kind == yaml.ScalarNode && strings.TrimSpace(v.Value) == "" {
				d.errorf(v, "expr: empty; leave it out for the default %q", DefaultExpr)
				ok = false
			}
		},
		"for":             dur("for", &r.For),
		"keep_firing_for": dur("keep_firing_for", &r.KeepFiringFor),
		"flapping": func(v *yaml.Node) {
			var changes *yaml.Node
			d.mapping(v, "flapping", map[string]func(v *yaml.Node){
				"changes": func(v *yaml.Node) {
					changes = v
					n, err := strconv.Atoi(v.Value)
					switch {
					case v.Kind != yaml.ScalarNode || err != nil:
						d.errorf(v, "flapping: changes: want a whole number, got %s", yamlnode.Describe(v))
						ok = false
						return
					case n < 2:
						d.errorf(v, "flapping: changes: want 2 or more (a change and its undoing are one flap), got %d", n)
						ok = false
						return
					}
					r.Flapping.Changes = n
				},
				"window": dur("flapping: window", &r.Flapping.Window),
			})
			if v.Kind == yaml.MappingNode && (changes == nil || r.Flapping.Window == 0) && ok {
				d.errorf(v, "flapping: want both changes and window, as {changes: 4, window: 10m}")
				ok = false
			}
		},
		"severity": func(v *yaml.Node) {
			def.severity = v
			str("severity", &r.Severity)(v)
		},
		"depends_on": func(v *yaml.Node) {
			def.deps, r.DependsOn = d.dependencies(v)
			ok = ok && def.deps != nil
		},
		"notify": func(v *yaml.Node) {
			nodes, names := d.strings("notify", v)
			ok = ok && nodes != nil
			for j, name := range names {
				if d.l.o.Receivers != nil && !slices.Contains(d.l.o.Receivers, name) {
					d.errorf(nodes[j], "notify: no receiver %q (have %s)", name, strings.Join(d.l.o.Receivers, ", "))
					ok = false
				}
			}
			r.Notify = names
		},
		"summary":     func(v *yaml.Node) { def.summary = v; str("summary", &r.Summary)(v) },
		"description": func(v *yaml.Node) { def.description = v; str("description", &r.Description)(v) },
		"labels": func(v *yaml.Node) {
			r.Labels = map[string]string{}
			d.mapping(v, "labels", nil, func(k, v *yaml.Node) {
				switch {
				case !labelName.MatchString(k.Value):
					d.errorf(k, "labels: bad label name %q (want letters, digits and _, not starting with a digit)", k.Value)
					ok = false
				case slices.Contains(reservedLabels, k.Value):
					d.errorf(k, "labels: %q is set by dmonitor and cannot be a rule label", k.Value)
					ok = false
				case v.Kind != yaml.ScalarNode:
					d.errorf(v, "labels: %s: want a string, got %s", k.Value, yamlnode.Describe(v))
					ok = false
				default:
					r.Labels[k.Value] = v.Value
				}
			})
		},
	})
	switch {
	case def.name == nil:
		d.errorf(n, "missing name")
		return nil
	case r.Name == "":
		return nil // reported by str or below
	case tsdb.SanitizeTag(r.Name) != r.Name:
		d.errorf(def.name, "name %q: use only letters, digits and - _ . / (it is the TSDB tag rule=)", r.Name)
		return nil
	case slices.Contains(d.l.o.Reserved, r.Name):
		d.errorf(def.name, "name %q is one of dmonitor's own alerts (%s): choose another", r.Name, strings.Join(d.l.o.Reserved, ", "))
		return nil
	}
	if !ok {
		def.bad = true
		return def
	}
	c := &compiler{errorf: func(f posField, off int, format string, args ...any) {
		node := map[posField]*yaml.Node{posName: def.name, posExpr: def.expr, posSummary: def.summary, posDescription: def.description}[f]
		if node == nil {
			node = def.name
		}
		line, col := scalarPos(d.src, node, off)
		d.errorAt(line, col, format, args...)
	}}
	compiled := c.compile(*r)
	if compiled == nil {
		def.bad = true
		return def
	}
	def.rule = *compiled
	return def
}

// selector decodes select: a mapping of tag to a glob or a list of globs.
func (d *decoder) selector(n *yaml.Node, def *ruleDef) bool {
	r := &def.rule
	ok := true
	r.Select = map[string][]string{}
	def.sel, def.selGlobs = n, map[string][]*yaml.Node{}
	d.mapping(n, "select", nil, func(k, v *yaml.Node) {
		var nodes []*yaml.Node
		var globs []string
		if v.Kind == yaml.ScalarNode {
			nodes, globs = []*yaml.Node{v}, []string{v.Value}
		} else if nodes, globs = d.strings("select: "+k.Value, v); nodes == nil {
			ok = false
			return
		}
		for j, g := range globs {
			if _, err := path.Match(g, ""); err != nil {
				d.errorf(nodes[j], "select: %s: bad glob %q: %v", k.Value, g, err)
				ok = false
			}
		}
		r.Select[k.Value] = globs
		def.selKeys = append(def.selKeys, k)
		def.selGlobs[k.Value] = nodes
	})
	return ok
}

// mapping calls fields[key] or, for a nil fields, each for every pair of
// the mapping n. Unknown keys, repeated keys and keys that are not
// strings are errors; a null value is the same as an absent key.
func (d *decoder) mapping(n *yaml.Node, path string, fields map[string]func(v *yaml.Node), each ...func(k, v *yaml.Node)) {
	n = deref(n)
	if isNull(n) {
		return
	}
	prefix := ""
	if path != "" {
		prefix = path + ": "
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, "%swant a mapping, got %s", prefix, yamlnode.Describe(n))
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), deref(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, "%swant a string key, got %s", prefix, yamlnode.Describe(k))
			continue
		}
		if line, dup := seen[k.Value]; dup {
			d.errorf(k, "%sduplicate key %q (first on line %d)", prefix, k.Value, line)
			continue
		}
		seen[k.Value] = k.Line
		if fields == nil {
			if len(each) > 0 {
				each[0](k, v)
			}
			continue
		}
		fn, ok := fields[k.Value]
		if !ok {
			d.errorf(k, "%sunknown field %q (want one of %s)", prefix, k.Value, strings.Join(slices.Sorted(maps.Keys(fields)), ", "))
			continue
		}
		if isNull(v) {
			continue
		}
		fn(v)
	}
}

// strings decodes a list of scalars, returning the element nodes too; nil
// nodes when n is not such a list.
func (d *decoder) strings(field string, n *yaml.Node) ([]*yaml.Node, []string) {
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, "%s: want a list of strings, got %s", field, yamlnode.Describe(n))
		return nil, nil
	}
	nodes := make([]*yaml.Node, 0, len(n.Content))
	list := make([]string, 0, len(n.Content))
	for _, e := range n.Content {
		e = deref(e)
		if e.Kind != yaml.ScalarNode {
			d.errorf(e, "%s: want a string, got %s", field, yamlnode.Describe(e))
			return nil, nil
		}
		nodes, list = append(nodes, e), append(list, e.Value)
	}
	return nodes, list
}

// dependencies decodes depends_on: a list whose entries are a rule name
// or {any: [rule, rule, ...]}. It returns the node of each parent named,
// in Rule.Parents order, or nil after an error.
func (d *decoder) dependencies(n *yaml.Node) ([]*yaml.Node, []Dependency) {
	const want = "a rule name or {any: [rule, rule, ...]}"
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, "depends_on: want a list of %s, got %s", want, yamlnode.Describe(n))
		return nil, nil
	}
	nodes := make([]*yaml.Node, 0, len(n.Content))
	deps := make([]Dependency, 0, len(n.Content))
	for _, e := range n.Content {
		e = deref(e)
		switch {
		case e.Kind == yaml.ScalarNode:
			nodes, deps = append(nodes, e), append(deps, Dependency{Any: []string{e.Value}})
		case e.Kind == yaml.MappingNode && len(e.Content) == 2 && deref(e.Content[0]).Value == "any":
			members, names := d.strings("depends_on: any", deref(e.Content[1]))
			if members == nil {
				return nil, nil
			}
			if len(names) < 2 {
				d.errorf(e.Content[1], "depends_on: any: want two or more redundant rules, got %d; name a single parent plainly", len(names))
				return nil, nil
			}
			nodes, deps = append(nodes, members...), append(deps, Dependency{Any: names})
		default:
			d.errorf(e, "depends_on: want %s, got %s", want, yamlnode.Describe(e))
			return nil, nil
		}
	}
	return nodes, deps
}

// deref follows aliases to the node they name.
func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

// link checks the names and dependencies across all files and builds the
// Set, its rules ordered parents first.
func (l *loader) link(defs []*ruleDef) *Set {
	set := &Set{byName: map[string]*Rule{}}
	byName := map[string]*ruleDef{}
	var kept []*ruleDef
	for _, def := range defs {
		d := &decoder{l: l, file: def.rule.File, src: def.src, rule: "rule " + strconv.Quote(def.rule.Name)}
		if first, dup := byName[def.rule.Name]; dup {
			d.errorf(def.name, "duplicate name (first defined at %s:%d:%d)", first.rule.File, first.name.Line, first.name.Column)
			continue
		}
		byName[def.rule.Name] = def
		kept = append(kept, def)
	}
	for _, def := range kept {
		d := &decoder{l: l, file: def.rule.File, src: def.src, rule: "rule " + strconv.Quote(def.rule.Name)}
		for j, p := range def.rule.Parents() {
			if _, ok := byName[p]; !ok {
				d.errorf(def.deps[j], "depends_on: no rule %q", p)
			}
		}
	}
	// Depth-first, parents before children; a parent met again while still
	// on the path closes a cycle, reported once at the entry that closes it.
	const (
		unseen = iota
		onPath
		done
	)
	mark := map[string]int{}
	var path []string
	var visit func(def *ruleDef)
	visit = func(def *ruleDef) {
		mark[def.rule.Name] = onPath
		path = append(path, def.rule.Name)
		for j, p := range def.rule.Parents() {
			parent, ok := byName[p]
			if !ok {
				continue
			}
			switch mark[p] {
			case onPath:
				i := slices.Index(path, p)
				cycle := append(slices.Clone(path[i:]), p)
				d := &decoder{l: l, file: def.rule.File, src: def.src, rule: "rule " + strconv.Quote(def.rule.Name)}
				d.errorf(def.deps[j], "depends_on: dependency cycle %s", strings.Join(cycle, " -> "))
			case unseen:
				visit(parent)
			}
		}
		path = path[:len(path)-1]
		mark[def.rule.Name] = done
		if def.bad {
			return
		}
		r := &def.rule
		set.rules = append(set.rules, r)
		set.byName[r.Name] = r
	}
	for _, def := range kept {
		if mark[def.rule.Name] == unseen {
			visit(def)
		}
	}
	for _, r := range set.rules {
		for _, q := range r.queries {
			if !slices.Contains(set.queries, q) {
				set.queries = append(set.queries, q)
			}
		}
	}
	slices.SortFunc(set.queries, func(a, b QueryKey) int {
		return cmp.Or(cmp.Compare(a.Metric, b.Metric), cmp.Compare(a.Window, b.Window))
	})
	return set
}
