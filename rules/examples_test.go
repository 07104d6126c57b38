package rules

import (
	"slices"
	"strings"
	"testing"
)

// TestShippedRules loads rules.d/ as shipped and evaluates each rule
// against hand-built instances, in the syntax of docs/RULES.md's expect
// comments.
func TestShippedRules(t *testing.T) {
	set, err := Load("../rules.d", Options{Receivers: []string{"default"}})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		c    string
	}{
		// Two of three observers lose www1: it is down.
		{"www-ping quorum", "fires: rule=www-ping host=www1 check=ping observers=CRITICAL,CRITICAL,OK"},
		// One flaky observer is not an outage.
		{"www-ping one observer", "quiet: rule=www-ping host=www1 check=ping observers=CRITICAL,OK,OK"},
		// www-ping is only for the www hosts.
		{"www-ping select", "skips: rule=www-ping host=db1 check=ping"},
		// https is selected too, through the list of globs.
		{"www-http https", "selects: rule=www-http host=www2 check=https"},
		// The summary as the notification will carry it.
		{"www-http summary", `fires: rule=www-http host=www1 observers=CRITICAL,CRITICAL,OK summary="www1 http down from 2 of 3 observers"`},
		// host-up covers db and mail hosts, not www.
		{"host-up db", "fires: rule=host-up host=db1 check=ping observers=CRITICAL,CRITICAL"},
		{"host-up not www", "skips: rule=host-up host=www1 check=ping"},
		// Three critical runs in a row on two observers.
		{"load streak", "fires: rule=load-high host=db1 check=load observers=CRITICAL/CRITICAL/CRITICAL,CRITICAL/CRITICAL/CRITICAL"},
		// Two runs are not enough.
		{"load short streak", "quiet: rule=load-high host=db1 check=load observers=CRITICAL/CRITICAL,CRITICAL/CRITICAL"},
		// A load5 of 9 over ten minutes, from the TSDB.
		{"load from perfdata", `fires: rule=load-high host=db1 check=load observers=OK,OK series="dmonitor.check.perf{host=db1,check=load,label=load5,observer=a} 9 9 9"`},
		// load1 is not load5.
		{"load other label", `quiet: rule=load-high host=db1 check=load observers=OK,OK series="dmonitor.check.perf{host=db1,check=load,label=load1,observer=a} 9 9 9"`},
		// The TSDB is down: unknown, not OK.
		{"load query fails", "unknown: rule=load-high host=db1 check=load observers=OK,OK failquery=dmonitor.check.perf"},
		// 60 GB on / of db1.
		{"disk full", `fires: rule=disk-root host=db1 check=disk observers=OK,OK series="dmonitor.check.perf{host=db1,check=disk,label=/,observer=a} 60e9"`},
		// /var is another label.
		{"disk other mount", `quiet: rule=disk-root host=db1 check=disk observers=OK,OK series="dmonitor.check.perf{host=db1,check=disk,label=/var,observer=a} 60e9"`},
		// check_disk itself critical on a quorum.
		{"disk critical", "fires: rule=disk-root host=db1 check=disk observers=CRITICAL,CRITICAL"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			verdict, fields, err := parseCase(tc.c)
			if err != nil {
				t.Fatal(err)
			}
			if err := checkCase(set, verdict, fields); err != nil {
				t.Error(err)
			}
		})
	}
	// Every shipped rule is exercised above.
	for _, r := range set.Rules() {
		if !slices.ContainsFunc(cases, func(c struct{ name, c string }) bool { return containsWord(c.c, "rule="+r.Name) }) {
			t.Errorf("rule %s of %s has no case", r.Name, r.File)
		}
	}
	// www-http is evaluated after the rule it depends on.
	order := set.Rules()
	if slices.IndexFunc(order, func(r *Rule) bool { return r.Name == "www-ping" }) > slices.IndexFunc(order, func(r *Rule) bool { return r.Name == "www-http" }) {
		t.Error("www-http comes before its parent www-ping in Rules()")
	}
	// Both perfdata windows are prefetched, one query each.
	if got := len(set.Queries()); got != 2 {
		t.Errorf("Queries() = %v, want dmonitor.check.perf over 10m and 15m", set.Queries())
	}
}

func containsWord(s, w string) bool {
	return slices.Contains(strings.Fields(s), w)
}
