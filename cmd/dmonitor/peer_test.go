package main

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/dmonitor/dmonitor/internal/await"
	"github.com/dmonitor/dmonitor/internal/loopback"
	"github.com/dmonitor/dmonitor/internal/smtptest"
)

// newPeerCluster writes the original dmonitor setup for three nodes on
// loopback: nodes.txt lists their control addresses, which are also their
// observer names, no Redis, a shared token; each node keeps its own
// embedded TSDB. flaky names a node ("a", "b" or "c") whose view of the
// service is broken: its check goes to a closed port.
func newPeerCluster(t testing.TB, flaky string) *testCluster {
	t.Helper()
	return newPeerClusterEvery(t, flaky, time.Second)
}

// newPeerClusterEvery is newPeerCluster with the checks' interval.
func newPeerClusterEvery(t testing.TB, flaky string, interval time.Duration) *testCluster {
	t.Helper()
	requirePlugins(t)
	c := &testCluster{t: t, mail: smtptest.Start(t, "127.0.0.1:0"), svc: startService(t, "127.0.0.1:0"),
		dirs: map[string]string{}, control: map[string]string{}, nodes: map[string]*daemon{}, env: map[string][]string{}}
	closed := loopback.FreeAddr(t)
	names := []string{"a", "b", "c"}
	for _, n := range names {
		c.control[n] = loopback.FreeAddr(t)
	}
	// The node that sorts first decides; keep the test's names in the same
	// order as the addresses, so "a" is the first decider.
	addrs := []string{c.control["a"], c.control["b"], c.control["c"]}
	for i := range addrs {
		for j := i + 1; j < len(addrs); j++ {
			if addrs[j] < addrs[i] {
				addrs[i], addrs[j] = addrs[j], addrs[i]
			}
		}
	}
	for i, n := range names {
		c.control[n] = addrs[i]
	}
	nodesTxt := strings.Join(addrs, "\n") + "\n"
	for _, name := range names {
		// Every node runs the same configuration; the flaky one's
		// environment points its check at a closed port.
		port := c.svc.port()
		if name == flaky {
			_, port, _ = strings.Cut(closed, ":")
		}
		c.env[name] = []string{"SVC_PORT=" + port}
		c.dirs[name] = t.TempDir()
		writeTree(t, c.dirs[name], map[string]string{
			"dmonitor.yaml": fmt.Sprintf(`observer: %q
interval: %s
control: {listen: %q, token_file: token}
tsdb: {listen: ""}
smtp: {addr: %q, from: dmonitor@example.org, tls: none}
checks:
  svc:
    command: [/bin/sh, -c, %q, "{{host}}"]
`, c.control[name], interval, c.control[name], c.mail.Addr, svcCommand),
			"nodes.txt":                  nodesTxt,
			"token":                      clusterToken + "\n",
			"hosts.d/127.0.0.1/svc":      "",
			"alert.d/oncall@example.org": "",
		})
	}
	return c
}

// deciderState returns the deciding node and its view of the service's
// alert, or "" while not exactly one node decides: in peer mode two may,
// for a moment, while one that sorts first comes back.
func (c *testCluster) deciderState() (string, string) {
	var name string
	for n, d := range c.nodes {
		if d.cmd.ProcessState != nil {
			continue
		}
		if st, ok := c.status(n); ok && st.Leader {
			if name != "" {
				return "", ""
			}
			name = n
		}
	}
	if name == "" {
		return "", ""
	}
	st, _ := c.status(name)
	for _, in := range st.Instances {
		if in.Check == "svc" {
			return name, in.State
		}
	}
	return name, ""
}

// awaitFirstDecider waits until node a, whose name sorts first, alone
// decides, and sees the service up.
func (c *testCluster) awaitFirstDecider() {
	c.t.Helper()
	await.Until(c.t, "the first node deciding with the service up", func() bool {
		name, state := c.deciderState()
		return name == "a" && state == "ok"
	})
}

// TestPeerFlakyObserverAndOutage is the original dmonitor setup, three
// nodes and no Redis: one observer whose view of the service is broken for
// many intervals pages nobody; a real outage pages once and recovers once.
func TestPeerFlakyObserverAndOutage(t *testing.T) {
	c := newPeerCluster(t, "c")
	c.startAll()
	c.awaitFirstDecider()
	await.Until(t, "ten failed runs on the flaky observer", func() bool {
		return c.nodes["c"].metric(t, `dmonitor_checks_total{status="CRITICAL"}`) >= 10
	})
	if _, state := c.deciderState(); state != "ok" {
		t.Fatalf("with one flaky observer the decider says %q, want ok", state)
	}
	c.noMoreMail()
	// Every node keeps the decider's view, and says who decides.
	for _, n := range []string{"b", "c"} {
		if st, _ := c.status(n); st.Leader || st.LeaderName != c.control["a"] {
			t.Errorf("node %s: leader %v, leader_name %q; want a follower naming %s", n, st.Leader, st.LeaderName, c.control["a"])
		}
	}

	fired := c.outagePaged()
	await.Until(t, "a follower to show the alert firing", func() bool {
		st, _ := c.status("b")
		return len(st.Instances) == 1 && st.Instances[0].State == "firing"
	})
	c.recoveryPaged(fired)
	c.stopAll()
}

// TestPeerDeciderKilled kills the deciding node with kill -9 in the middle
// of an incident: the next node decides within SilentAfter and a few
// polls, the recovery is paged by it, and nothing is lost; a duplicate is
// allowed, under the same id.
func TestPeerDeciderKilled(t *testing.T) {
	c := newPeerCluster(t, "")
	c.startAll()
	c.awaitFirstDecider()
	// observer-up pages for a's death are expected; count the service's.
	tally := newTally("default")
	c.svc.l.Close()
	await.Until(t, "the page", func() bool { tally.take(c); return len(tally.firing) == 1 })

	// Mid-incident: the page is delivered and a's journal says so. Its
	// peers may not have heard yet that it was (that news is on its way
	// when a dies), so the next decider may send it once more, under the
	// same id: the one duplicate allowed.
	c.nodes["a"].waitSent(t, tally.firing)
	c.nodes["a"].kill(t)
	killed := time.Now()
	await.Until(t, "b deciding, with the incident firing", func() bool {
		name, state := c.deciderState()
		return name == "b" && state == "firing"
	})
	// SilentAfter is three heartbeats of a 1s interval.
	t.Logf("kill -9 of the decider to a new decider: %v (bound: silent after 3s, plus polling)", time.Since(killed))

	c.svc = startService(t, c.svc.addr)
	await.Until(t, "the recovery paged by the new decider", func() bool { tally.take(c); return len(tally.resolved) == 1 })
	// The killed node comes back: it sorts first, takes the state over
	// from its peers and decides again, without paging anything again.
	c.start("a")
	await.Until(t, "a deciding again with the service up", func() bool {
		name, state := c.deciderState()
		return name == "a" && state == "ok"
	})
	c.stopNodes()
	tally.take(c)
	if len(tally.firing) != 1 || len(tally.resolved) != 1 || tally.duplicates() > 1 {
		t.Fatalf("firing %v, resolved %v: want one incident, paged and resolved, at most one duplicate", tally.firing, tally.resolved)
	}
}

// TestPeerDeciderDiesWithPageUndelivered: the deciding node queues a page
// its mail relay refuses, and dies with kill -9 before the relay takes it.
// Its peers hold what its queues held, so the next decider delivers that
// page (the same id), and later its recovery: nothing is lost with the
// node that queued it.
func TestPeerDeciderDiesWithPageUndelivered(t *testing.T) {
	c := newPeerCluster(t, "")
	c.startAll()
	c.awaitFirstDecider()
	c.mail.Refuse(func(stage string) *gosmtp.SMTPError {
		if stage != "mail" {
			return nil
		}
		return &gosmtp.SMTPError{Code: 451, Message: "try again later"}
	})
	c.svc.l.Close()
	select {
	case <-c.mail.Refused:
	case <-time.After(30 * time.Second):
		t.Fatal("the decider never tried to mail the page")
	}
	await.Until(t, "b to hold a's undelivered page", func() bool {
		code, body := c.nodes["b"].api(t, "GET", "/api/v1/peer/state", clusterToken, "")
		return code == http.StatusOK && strings.Contains(body, `"queued"`)
	})
	c.nodes["a"].kill(t)
	c.mail.Refuse(nil)

	tally := newTally("default")
	await.Until(t, "the page, delivered by the next decider", func() bool { tally.take(c); return len(tally.firing) == 1 })
	c.svc = startService(t, c.svc.addr)
	await.Until(t, "the recovery", func() bool { tally.take(c); return len(tally.resolved) == 1 })
	c.stopNodes()
	tally.take(c)
	if len(tally.firing) != 1 || len(tally.resolved) != 1 || tally.duplicates() > 1 {
		t.Fatalf("firing %v, resolved %v: want the one page and its recovery", tally.firing, tally.resolved)
	}
}

// TestPeerSilenceThroughFollower: in peer mode too, a silence set through
// a node that does not decide reaches the decider (pushed to every peer),
// and so does its expiry.
func TestPeerSilenceThroughFollower(t *testing.T) {
	c := newPeerCluster(t, "")
	c.startAll()
	c.awaitFirstDecider()
	silenceThroughFollower(t, c)
}
