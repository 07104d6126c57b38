package rules

import (
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"
)

// DefaultExpr is the condition of the default rule: a quorum of fresh
// observers sees the check failing, in at least quorum_domains failure
// domains.
const DefaultExpr = "failing >= quorum && failing_domains >= quorum_domains"

// DefaultSummary is the summary template of the default rule.
const DefaultSummary = "{{ .host }} {{ .check }} down from {{ .failing }} of {{ .total }} observers"

// DefaultSeverity is the severity of a rule that names none.
const DefaultSeverity = "critical"

// evaluation is what one Eval at a time uses: a VM, and the copy of the
// environment the program reads.
type evaluation struct {
	vm  vm.VM
	env Env
}

// Rule is a compiled rule. Rules are immutable once compiled and safe for
// concurrent use.
type Rule struct {
	Name string
	// File and Line say where the rule was defined; empty for rules made by
	// Compile or Default.
	File string
	Line int
	// Select maps a tag (host, check or any other) to the globs, in
	// path.Match syntax, one of which its value must match; nil selects
	// nothing by itself (see Matches).
	Select        map[string][]string
	Expr          string
	For           time.Duration // the condition must hold this long before firing
	KeepFiringFor time.Duration // a firing alert resolves only after the condition has been false this long
	Flapping      Flapping      // flap detection; off when Changes is 0
	Severity      string
	DependsOn     []Dependency
	Notify        []string // receiver names
	Summary       string   // text/template source
	Description   string   // text/template source
	Labels        map[string]string

	program     *vm.Program
	queries     []QueryKey
	summary     *template.Template
	description *template.Template
	vms         *sync.Pool // of *evaluation, so that a tick allocates no VM per instance
}

// Flapping are a rule's flap detection thresholds: an instance whose
// condition changes more than Changes times within Window is flapping,
// notified once when it starts and once when it settles.
type Flapping struct {
	Changes int
	Window  time.Duration
}

// Dependency is one entry of a rule's depends_on: a plain parent (Any
// holds its one name), or a group of redundant parents, of which any one
// being available is enough (Any holds two or more names). A child is held
// back while a plain parent is not available, or while no member of a
// group is.
type Dependency struct {
	Any []string
}

// Parents returns every rule r depends on, plain parents and group members
// alike, in depends_on order.
func (r *Rule) Parents() []string {
	var out []string
	for _, d := range r.DependsOn {
		out = append(out, d.Any...)
	}
	return out
}

// Compile compiles r: Expr (DefaultExpr when empty), the Summary and
// Description templates and the Select globs. The condition must yield a
// bool, and every TSDB function it calls must name its metric and window as
// constants. Errors have no file position; Load gives them one.
func Compile(r Rule) (*Rule, error) {
	var errs []error
	c := &compiler{errorf: func(_ posField, _ int, format string, args ...any) {
		errs = append(errs, fmt.Errorf("rule %q: %s", r.Name, fmt.Sprintf(format, args...)))
	}}
	out := c.compile(r)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// posField names the part of a rule a compile error is about, so Load can
// map it to the YAML node it came from.
type posField int

const (
	posName posField = iota
	posExpr
	posSummary
	posDescription
	posSelect
)

// compiler compiles one rule, reporting each problem through errorf with
// the part it is in and, for expr and templates, a rune offset into that
// part's text (-1 when unknown).
type compiler struct {
	errorf func(f posField, off int, format string, args ...any)
}

func (c *compiler) compile(r Rule) *Rule {
	if r.Expr == "" {
		r.Expr = DefaultExpr
	}
	if r.Severity == "" {
		r.Severity = DefaultSeverity
	}
	ok := true
	ce, probs := compileExpr(r.Expr)
	for _, p := range probs {
		c.errorf(posExpr, p.off, "expr: %s", p.msg)
		ok = false
	}
	r.program, r.queries = ce.program, ce.queries
	for tag, globs := range r.Select {
		for _, g := range globs {
			if _, err := path.Match(g, ""); err != nil {
				c.errorf(posSelect, -1, "select: %s: bad glob %q: %v", tag, g, err)
				ok = false
			}
		}
	}
	var perr []problem
	if r.summary, perr = parseTemplate("summary", r.Summary, r.Labels); perr != nil {
		for _, p := range perr {
			c.errorf(posSummary, p.off, "summary: %s", p.msg)
		}
		ok = false
	}
	if r.description, perr = parseTemplate("description", r.Description, r.Labels); perr != nil {
		for _, p := range perr {
			c.errorf(posDescription, p.off, "description: %s", p.msg)
		}
		ok = false
	}
	if !ok {
		return nil
	}
	r.vms = &sync.Pool{New: func() any { return new(evaluation) }}
	return &r
}

// Default returns the default rule, which applies to every check that no
// rule selects: it fires as soon as a quorum of observers sees the check
// failing, is critical, and notifies the "default" receiver (alert.d/).
func Default() *Rule {
	r, err := Compile(Rule{Name: "default", Severity: DefaultSeverity, Notify: []string{"default"}, Summary: DefaultSummary})
	if err != nil {
		panic(err) // all constants; failing to compile them is a bug
	}
	return r
}

// Queries returns the TSDB queries the condition of r reads, one per
// metric and window.
func (r *Rule) Queries() []QueryKey { return slices.Clone(r.queries) }

// Matches reports whether r selects the instance host×check with the
// given other tags: every key of Select must have a value (host, check, or
// a tag) that one of its globs matches. A rule with an empty Select
// matches every instance.
func (r *Rule) Matches(host, check string, tags map[string]string) bool {
	for key, globs := range r.Select {
		var v string
		var ok bool
		switch key {
		case "host":
			v, ok = host, true
		case "check":
			v, ok = check, true
		default:
			v, ok = tags[key]
		}
		if !ok || !matchAny(globs, v) {
			return false
		}
	}
	return true
}

func matchAny(globs []string, v string) bool {
	for _, g := range globs {
		if ok, _ := path.Match(g, v); ok {
			return true
		}
	}
	return false
}

// Eval reports whether the condition of r holds in env. An error means the
// condition could not be evaluated and the instance is unknown, never OK;
// when a TSDB query failed or is missing from env.Data, the error wraps a
// *QueryError naming the metric and window.
func (r *Rule) Eval(env Env) (bool, error) {
	// The program needs a pointer to env: one to the parameter would move
	// it to the heap at every call, one to the pooled copy does not.
	e := r.vms.Get().(*evaluation)
	e.env = env
	out, err := e.vm.Run(r.program, &e.env)
	e.env = Env{} // the pool must not keep the caller's observers and data alive
	r.vms.Put(e)
	if err != nil {
		var qe *QueryError
		if errors.As(err, &qe) {
			return false, fmt.Errorf("rule %q: %w", r.Name, qe)
		}
		var fe *file.Error
		if errors.As(err, &fe) {
			if fe.Prev != nil {
				return false, fmt.Errorf("rule %q: expr %d:%d: %w", r.Name, fe.Line, fe.Column+1, fe.Prev)
			}
			return false, fmt.Errorf("rule %q: expr %d:%d: %s", r.Name, fe.Line, fe.Column+1, fe.Message)
		}
		return false, fmt.Errorf("rule %q: %w", r.Name, err)
	}
	b, _ := out.(bool)
	return b, nil
}

// Render executes the Summary and Description templates of r over env. A
// template sees host, check, rule, severity, failing, passing, total,
// quorum, observers (each with name, status, ok, output, age, fresh) and
// labels (the rule's labels). An empty template renders as "".
func (r *Rule) Render(env Env) (summary, description string, err error) {
	data := r.templateData(&env)
	if summary, err = execute(r.summary, data); err != nil {
		return "", "", fmt.Errorf("rule %q: %w", r.Name, err)
	}
	if description, err = execute(r.description, data); err != nil {
		return "", "", fmt.Errorf("rule %q: %w", r.Name, err)
	}
	return summary, description, nil
}

func (r *Rule) templateData(env *Env) map[string]any {
	obs := make([]map[string]any, len(env.Observers))
	for i, o := range env.Observers {
		obs[i] = map[string]any{"name": o.Name, "domain": o.Domain, "status": o.Status, "ok": o.OK, "output": o.Output, "age": o.Age, "fresh": o.Fresh}
	}
	labels := maps.Clone(r.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	return map[string]any{
		"host": env.Host, "check": env.Check, "rule": r.Name, "severity": r.Severity,
		"failing": env.Failing, "passing": env.Passing, "total": env.Total, "quorum": env.Quorum,
		"domains": env.Domains, "failing_domains": env.FailingDomains, "down_domains": env.DownDomains,
		"quorum_domains": env.QuorumDomains, "partial": env.Partial,
		"observers": obs, "labels": labels,
	}
}

func execute(t *template.Template, data map[string]any) (string, error) {
	if t == nil {
		return "", nil
	}
	var b strings.Builder
	if err := t.Execute(&b, data); err != nil {
		return "", err
	}
	return b.String(), nil
}
