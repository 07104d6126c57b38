// Package rules turns check results into alert decisions: rule files
// (rules.d/*.yaml) loaded and compiled once, the evaluation environment a
// rule's expr condition sees, the TSDB series that conditions query,
// fetched once per tick for all rules, and the default rule that every
// check without a rule of its own gets.
package rules

import (
	"strings"
	"time"

	"github.com/dmonitor/dmonitor/check"
)

// MaxHistory is how many earlier statuses per observer streak can see: the
// evaluator need keep no more than this many in Observer.History.
const MaxHistory = 16

// Observer is one observer's latest result for a rule instance, as the
// condition sees it in the observers list.
type Observer struct {
	Name string `expr:"name"`
	// Domain is the observer's failure domain (region, provider,
	// network), "" when it declares none: it is then a domain of its own.
	Domain string        `expr:"domain"`
	Status string        `expr:"status"` // OK, WARNING, CRITICAL, UNKNOWN
	OK     bool          `expr:"ok"`
	Output string        `expr:"output"`
	Age    time.Duration `expr:"age"`
	// Fresh reports whether the result is younger than 2× the check
	// interval; only fresh results count in failing, passing and total.
	Fresh bool `expr:"fresh"`
	// History holds the statuses of this observer's runs before this
	// result, newest first; streak reads it. NewEnv leaves it empty: the
	// caller, which keeps the results, fills it in (at most MaxHistory are
	// used).
	History []check.Status `expr:"-"`

	status check.Status
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
	// Domains counts the failure domains of the fresh observers (one
	// without a domain is a domain of its own); FailingDomains those with
	// a failing observer; DownDomains those whose every observer fails.
	Domains        int `expr:"domains"`
	FailingDomains int `expr:"failing_domains"`
	DownDomains    int `expr:"down_domains"`
	// QuorumDomains is how many domains must see a check failing before
	// it is an outage (the check's quorum_domains; 1 when not set).
	QuorumDomains int `expr:"quorum_domains"`
	// Partial reports that a quorum sees the check failing, and every
	// observer of some domains, but fewer than QuorumDomains domains do: a
	// regional outage, or one domain's network, not the service down for
	// everyone.
	Partial bool `expr:"partial"`
	// Data is this tick's prefetched TSDB series (Set.Prefetch), read by
	// avg, min, max, sum, last, count, rate and nodata. A rule that calls
	// one of them with Data nil evaluates to an error.
	Data *Data `expr:"-"`
}

// NewEnv builds the environment of the instance host×check at now from the
// latest result of each observer, in the order of latest. A result is fresh
// while younger than 2×interval; stale results count neither as failing
// nor as passing. The returned bool is false when fewer observers are fresh
// than the quorum: the instance is then unknown, never OK. quorumDomains
// below 1 counts as 1.
func NewEnv(host, checkName string, latest []check.Result, now time.Time, interval time.Duration, quorum, quorumDomains int) (Env, bool) {
	var env Env
	known := env.Reset(host, checkName, latest, now, interval, quorum, quorumDomains)
	return env, known
}

// Reset makes env what NewEnv returns for the same arguments, reusing the
// array of env.Observers when it is large enough: a caller evaluating many
// instances in turn allocates one environment, not one per instance. What
// env held before is overwritten, Data and Observer.History included; a
// caller must keep no reference to the old Observers.
func (env *Env) Reset(host, checkName string, latest []check.Result, now time.Time, interval time.Duration, quorum, quorumDomains int) bool {
	obs := env.Observers
	if obs == nil || cap(obs) < len(latest) {
		obs = make([]Observer, len(latest))
	}
	*env = Env{Host: host, Check: checkName, Quorum: quorum, QuorumDomains: max(quorumDomains, 1), Observers: obs[:len(latest)]}
	for i, r := range latest {
		age := now.Sub(r.Start.Add(r.Duration))
		if age < 0 {
			age = 0
		}
		fresh := age < 2*interval
		env.Observers[i] = Observer{
			Name: r.Observer, Domain: r.Domain, Status: r.Status.String(), OK: r.Status == check.OK,
			Output: r.Output, Age: age, Fresh: fresh, status: r.Status,
		}
		if !fresh {
			continue
		}
		env.Total++
		if r.Status.Failing() {
			env.Failing++
		} else {
			env.Passing++
		}
	}
	env.countDomains()
	return env.Total >= quorum
}

// countDomains fills in Domains, FailingDomains, DownDomains and Partial
// from the fresh observers.
func (env *Env) countDomains() {
	// A few observers is the common case: a linear scan beats a map.
	type domain struct {
		name             domainName
		failing, passing int
	}
	var buf [8]domain
	ds := buf[:0]
	for i := range env.Observers {
		o := &env.Observers[i]
		if !o.Fresh {
			continue
		}
		name := domainName{name: o.Domain}
		if name.name == "" {
			name = domainName{name: o.Name, observer: true}
		}
		j := 0
		for j < len(ds) && !ds[j].name.is(name) {
			j++
		}
		if j == len(ds) {
			ds = append(ds, domain{name: name})
		}
		if o.statusValue().Failing() {
			ds[j].failing++
		} else {
			ds[j].passing++
		}
	}
	env.Domains = len(ds)
	for _, d := range ds {
		if d.failing > 0 {
			env.FailingDomains++
			if d.passing == 0 {
				env.DownDomains++
			}
		}
	}
	// A quorum must see it failing, as for an outage: one observer with a
	// flaky network is a domain of its own, and never partial.
	env.Partial = env.Failing >= env.Quorum && env.DownDomains > 0 && env.FailingDomains < env.QuorumDomains
}

// domainName names a failure domain: a declared domain, or (observer
// true) the domain of its own of an observer declaring none, which reads
// "observer <name>". Kept apart so that naming one allocates no string
// per observer and instance.
type domainName struct {
	name     string
	observer bool
}

const observerDomain = "observer "

// is reports whether a and b name the same domain, as their readings
// would compare.
func (a domainName) is(b domainName) bool {
	if a.observer == b.observer {
		return a.name == b.name
	}
	if a.observer {
		a, b = b, a
	}
	// a declared, b an observer's own
	return strings.HasPrefix(a.name, observerDomain) && a.name[len(observerDomain):] == b.name
}

// streak returns the largest n such that at least quorum fresh observers
// each returned status on their last n runs (0 when fewer than quorum
// fresh observers did so even once). It reads Observer.History, so it is
// at most MaxHistory+1.
func (env *Env) streak(status check.Status) int {
	// Small fixed buffer: three observers is the common case and this runs
	// once per instance per tick.
	var buf [8]int
	runs := buf[:0]
	for i := range env.Observers {
		o := &env.Observers[i]
		if !o.Fresh {
			continue
		}
		runs = append(runs, o.streak(status))
	}
	q := max(env.Quorum, 1)
	if len(runs) < q {
		return 0
	}
	// The q-th largest run: at least q observers have a run that long.
	for i := 1; i < len(runs); i++ {
		for j := i; j > 0 && runs[j] > runs[j-1]; j-- {
			runs[j], runs[j-1] = runs[j-1], runs[j]
		}
	}
	return runs[q-1]
}

func (o *Observer) streak(status check.Status) int {
	if o.statusValue() != status {
		return 0
	}
	n := 1
	for i, s := range o.History {
		if i == MaxHistory || s != status {
			break
		}
		n++
	}
	return n
}

// statusValue returns the status of o, also for an Observer built by hand
// (tests, docs) with only Status set.
func (o *Observer) statusValue() check.Status {
	if o.status == check.OK && o.Status != "" && o.Status != "OK" {
		s, err := check.ParseStatus(o.Status)
		if err != nil {
			return check.Unknown
		}
		return s
	}
	return o.status
}
