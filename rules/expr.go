package rules

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/config"
	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"
)

// problem is one error in a condition or template, at a rune offset into
// its source text; off is -1 when the error has no position.
type problem struct {
	off int
	msg string
}

// compiled is a compiled condition and the queries it needs prefetched.
type compiled struct {
	program *vm.Program
	queries []QueryKey
}

// compileExpr compiles src against Env with the TSDB functions and streak,
// as a condition yielding a bool, or with the result type of as when
// given. It returns every problem it can name, or the first error of
// expr's own parser and checker.
func compileExpr(src string, as ...expr.Option) (compiled, []problem) {
	c := &callPatcher{}
	if len(as) == 0 {
		as = []expr.Option{expr.AsBool()}
	}
	opts := append([]expr.Option{expr.Env(Env{}), expr.Patch(c)}, as...)
	for name, fn := range tsdbFuncs {
		opts = append(opts, tsdbFunction(name, fn))
	}
	opts = append(opts, expr.Function("streak", callStreak, new(func(any, check.Status) int)))
	p, err := expr.Compile(src, opts...)
	if len(c.problems) > 0 {
		// Ours are more precise than what expr says about the same calls
		// left unpatched.
		return compiled{}, c.problems
	}
	if err != nil {
		var fe *file.Error
		if errors.As(err, &fe) {
			return compiled{}, []problem{{off: fe.From, msg: fe.Message}}
		}
		return compiled{}, []problem{{off: -1, msg: err.Error()}}
	}
	return compiled{program: p, queries: c.queries}, nil
}

// callPatcher checks every call of a TSDB function and of streak at
// compile time and rewrites it to pass the environment and the constant
// arguments already parsed: avg("m", tags, "5m") becomes
// avg($env, QueryKey{"m", 5m}, tags).
type callPatcher struct {
	queries  []QueryKey
	problems []problem
}

func (c *callPatcher) errorf(n ast.Node, format string, args ...any) {
	c.problems = append(c.problems, problem{off: n.Location().From, msg: fmt.Sprintf(format, args...)})
}

// Visit implements ast.Visitor.
func (c *callPatcher) Visit(node *ast.Node) {
	call, ok := (*node).(*ast.CallNode)
	if !ok {
		return
	}
	id, ok := call.Callee.(*ast.IdentifierNode)
	if !ok {
		return
	}
	if len(call.Arguments) > 0 {
		if a, ok := call.Arguments[0].(*ast.IdentifierNode); ok && a.Value == "$env" {
			return // already patched
		}
	}
	if id.Value == "streak" {
		c.streak(node, call, id)
		return
	}
	if _, ok := tsdbFuncs[id.Value]; !ok {
		return
	}
	if len(call.Arguments) != 3 {
		c.errorf(call, "%s takes 3 arguments (metric, tags, window), got %d", id.Value, len(call.Arguments))
		return
	}
	// The metric and window must be known at load time: the set of
	// (metric, window) pairs over all rules is what one tick fetches, one
	// query each, before any rule instance runs.
	metric, ok := call.Arguments[0].(*ast.StringNode)
	if !ok {
		c.errorf(call.Arguments[0], "%s: the metric must be a quoted string constant, because each tick fetches every metric before evaluating any rule", id.Value)
	}
	win, wok := call.Arguments[2].(*ast.StringNode)
	if !wok {
		c.errorf(call.Arguments[2], "%s: the window must be a quoted duration constant such as \"5m\", because each tick fetches every window before evaluating any rule", id.Value)
	}
	if !ok || !wok {
		return
	}
	if metric.Value == "" {
		c.errorf(metric, "%s: empty metric name", id.Value)
		return
	}
	d, err := config.ParseDuration(win.Value)
	if err != nil {
		c.errorf(win, "%s: window: %v", id.Value, err)
		return
	}
	if d <= 0 {
		c.errorf(win, "%s: window must be positive, got %q", id.Value, win.Value)
		return
	}
	key := QueryKey{Metric: metric.Value, Window: d}
	if !slices.Contains(c.queries, key) {
		c.queries = append(c.queries, key)
	}
	ast.Patch(node, &ast.CallNode{Callee: id, Arguments: []ast.Node{
		&ast.IdentifierNode{Value: "$env"}, &ast.ConstantNode{Value: key}, call.Arguments[1],
	}})
}

func (c *callPatcher) streak(node *ast.Node, call *ast.CallNode, id *ast.IdentifierNode) {
	if len(call.Arguments) != 1 {
		c.errorf(call, "streak takes 1 argument (a status), got %d", len(call.Arguments))
		return
	}
	arg, ok := call.Arguments[0].(*ast.StringNode)
	if !ok {
		c.errorf(call.Arguments[0], "streak: the status must be a quoted constant: OK, WARNING, CRITICAL or UNKNOWN")
		return
	}
	s, err := check.ParseStatus(strings.ToUpper(arg.Value))
	if err != nil {
		c.errorf(arg, "streak: %v", err)
		return
	}
	ast.Patch(node, &ast.CallNode{Callee: id, Arguments: []ast.Node{
		&ast.IdentifierNode{Value: "$env"}, &ast.ConstantNode{Value: s},
	}})
}

// tsdbFunction declares the TSDB function name to expr. After patching it
// receives the environment, the query key and the tag filter.
func tsdbFunction(name string, fn agg) expr.Option {
	typ := any(new(func(any, QueryKey, map[string]any) float64))
	if fn == aggNodata {
		typ = new(func(any, QueryKey, map[string]any) bool)
	}
	return expr.Function(name, func(params ...any) (any, error) {
		env, _ := params[0].(*Env)
		key, _ := params[1].(QueryKey)
		tags, _ := params[2].(map[string]any)
		if env == nil {
			return nil, &QueryError{QueryKey: key, Err: errNotFetched}
		}
		return env.Data.eval(fn, key, tags)
	}, typ)
}

func callStreak(params ...any) (any, error) {
	env, _ := params[0].(*Env)
	s, _ := params[1].(check.Status)
	if env == nil {
		return 0, nil
	}
	return env.streak(s), nil
}
