// Package rules turns check results into alert decisions: the evaluation
// environment a rule's expr condition sees, rules compiled once at load, and
// the default rule that every check without a rule of its own gets.
package rules

import (
	"time"

	"github.com/dmonitor/dmonitor/check"
)

// Observer is one observer's latest result for a rule instance, as the
// condition sees it in the observers list.
type Observer struct {
	Name   string        `expr:"name"`
	Status string        `expr:"status"` // OK, WARNING, CRITICAL, UNKNOWN
	OK     bool          `expr:"ok"`
	Output string        `expr:"output"`
	Age    time.Duration `expr:"age"`
}

// Env is the environment of one rule instance (one host×check). Only fresh
// results count: Failing, Passing and Total are over fresh observers.
type Env struct {
	Host      string     `expr:"host"`
	Check     string     `expr:"check"`
	Observers []Observer `expr:"observers"`
	Failing   int        `expr:"failing"`
	Passing   int        `expr:"passing"`
	Total     int        `expr:"total"`
	Quorum    int        `expr:"quorum"`
}

// NewEnv builds the environment of the instance host×check at now from the
// latest result of each observer. A result is fresh while younger than
// 2×interval; stale results count neither as failing nor as passing. The
// returned bool is false when fewer observers are fresh than the quorum:
// the instance is then unknown, never OK.
func NewEnv(host, checkName string, latest []check.Result, now time.Time, interval time.Duration, quorum int) (Env, bool) {
	env := Env{Host: host, Check: checkName, Quorum: quorum}
	env.Observers = make([]Observer, 0, len(latest))
	for _, r := range latest {
		age := now.Sub(r.Start.Add(r.Duration))
		if age < 0 {
			age = 0
		}
		env.Observers = append(env.Observers, Observer{
			Name: r.Observer, Status: r.Status.String(), OK: r.Status == check.OK,
			Output: r.Output, Age: age,
		})
		if age >= 2*interval {
			continue
		}
		env.Total++
		if r.Status.Failing() {
			env.Failing++
		} else {
			env.Passing++
		}
	}
	return env, env.Total >= quorum
}
