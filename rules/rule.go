package rules

import (
	"fmt"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"
)

// DefaultExpr is the condition of the default rule: a quorum of fresh
// observers sees the check failing.
const DefaultExpr = "failing >= quorum"

// Rule is a compiled rule. Rules are immutable once compiled and safe for
// concurrent use.
type Rule struct {
	Name     string
	Expr     string
	For      time.Duration // the condition must hold this long before firing
	Severity string
	Notify   []string // receiver names
	program  *vm.Program
}

// Compile compiles r.Expr (DefaultExpr when empty) against Env. The
// condition must yield a bool.
func Compile(r Rule) (*Rule, error) {
	if r.Expr == "" {
		r.Expr = DefaultExpr
	}
	p, err := expr.Compile(r.Expr, expr.Env(Env{}), expr.AsBool())
	if err != nil {
		return nil, fmt.Errorf("rule %q: %w", r.Name, err)
	}
	r.program = p
	return &r, nil
}

// Default returns the default rule, which applies to every check that no
// rule selects: it fires as soon as a quorum of observers sees the check
// failing, is critical, and notifies the "default" receiver (alert.d/).
func Default() *Rule {
	r, err := Compile(Rule{Name: "default", Severity: "critical", Notify: []string{"default"}})
	if err != nil {
		panic(err) // DefaultExpr is a constant; failing to compile it is a bug
	}
	return r
}

// Eval reports whether the condition of r holds in env.
func (r *Rule) Eval(env Env) (bool, error) {
	out, err := expr.Run(r.program, env)
	if err != nil {
		return false, fmt.Errorf("rule %q: %w", r.Name, err)
	}
	return out.(bool), nil
}
