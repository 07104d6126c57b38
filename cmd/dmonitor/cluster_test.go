package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/internal/await"
	"github.com/dmonitor/dmonitor/internal/loopback"
	"github.com/dmonitor/dmonitor/internal/redistest"
	"github.com/dmonitor/dmonitor/internal/smtptest"
)

// testCluster is three dmonitor run processes, observers a, b and c,
// sharing a real Redis and one TSDB (a's embedded store, which b and c
// write to through its OpenTSDB API), each checking a service on loopback
// with Debian's check_tcp, all mailing one SMTP sink.
type testCluster struct {
	t       testing.TB
	redis   *redistest.Server
	mail    *smtptest.Server
	svc     *tcpService
	dirs    map[string]string
	control map[string]string
	nodes   map[string]*daemon
	env     map[string][]string // each node's own environment
}

// svcCommand is the cluster tests' check of the service: check_tcp on the
// port $SVC_PORT says, which each node's environment sets.
const svcCommand = `exec /usr/lib/nagios/plugins/check_tcp -H "$0" -p "$SVC_PORT"`

// clusterToken is the control API's bearer token on every node.
const clusterToken = "cluster-token"

// newCluster writes the three configurations. flaky names an observer
// whose view of the service is broken: its check goes to a closed port.
func newCluster(t testing.TB, flaky string) *testCluster {
	t.Helper()
	return newClusterEvery(t, flaky, time.Second)
}

// newClusterEvery is newCluster with the checks' interval.
func newClusterEvery(t testing.TB, flaky string, interval time.Duration) *testCluster {
	t.Helper()
	requirePlugins(t)
	c := &testCluster{t: t, redis: redistest.Start(t), mail: smtptest.Start(t, "127.0.0.1:0"),
		svc: startService(t, "127.0.0.1:0"), dirs: map[string]string{}, control: map[string]string{}, nodes: map[string]*daemon{}, env: map[string][]string{}}
	tsdbAPI := loopback.FreeAddr(t)
	closed := loopback.FreeAddr(t)
	// Each node is named by its control address, as nodes.txt lists it,
	// so the nodes can also reach each other as peers (degraded mode).
	for _, name := range []string{"a", "b", "c"} {
		c.control[name] = loopback.FreeAddr(t)
	}
	nodesTxt := c.control["a"] + "\n" + c.control["b"] + "\n" + c.control["c"] + "\n"
	for _, name := range []string{"a", "b", "c"} {
		// Every node runs the same configuration; the flaky one's
		// environment points its check at a closed port.
		port := c.svc.port()
		if name == flaky {
			_, port, _ = strings.Cut(closed, ":")
		}
		c.env[name] = []string{"SVC_PORT=" + port}
		tsdbCfg := fmt.Sprintf(`{backend: opentsdb, url: "http://%s"}`, tsdbAPI)
		if name == "a" {
			tsdbCfg = fmt.Sprintf("{listen: %q}", tsdbAPI)
		}
		c.dirs[name] = t.TempDir()
		writeTree(t, c.dirs[name], map[string]string{
			"dmonitor.yaml": fmt.Sprintf(`observer: %q
interval: %s
quorum: 2
control: {listen: %q, token_file: token}
tsdb: %s
redis: {url: %q, lease_ttl: 2s}
smtp: {addr: %q, from: dmonitor@example.org, tls: none}
checks:
  svc:
    command: [/bin/sh, -c, %q, "{{host}}"]
`, c.control[name], interval, c.control[name], tsdbCfg, c.redis.URL(), c.mail.Addr, svcCommand),
			"nodes.txt":                  nodesTxt,
			"token":                      clusterToken + "\n",
			"hosts.d/127.0.0.1/svc":      "",
			"alert.d/oncall@example.org": "",
		})
	}
	return c
}

func (c *testCluster) start(name string) {
	c.t.Helper()
	c.nodes[name] = startDaemon(c.t, c.dirs[name], c.control[name], c.env[name]...)
}

func (c *testCluster) startAll() {
	c.t.Helper()
	for _, n := range []string{"a", "b", "c"} {
		c.start(n)
	}
}

// clusterStatus is the part of /status these tests read.
type clusterStatus struct {
	Observer   string
	Leader     bool
	Epoch      int64
	LeaderName string `json:"leader_name"`
	Observers  []struct {
		Name          string
		LastHeartbeat time.Time `json:"last_heartbeat"`
	}
	Instances []instanceStatus
}

func (c *testCluster) status(name string) (clusterStatus, bool) {
	var st clusterStatus
	resp, err := http.Get("http://" + c.control[name] + "/status")
	if err != nil {
		return st, false
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st) == nil
}

// leader returns the node that says it leads, if exactly one does, and ""
// otherwise. Two may say so for a moment (a peer decider not yet heard by
// the next, a Redis lease that moved while the old leader's renewal was in
// flight): the epochs fence their writes, and the tallies of the tests
// count what reached the receivers.
func (c *testCluster) leader() (string, int64) {
	var who string
	var epoch int64
	for name, d := range c.nodes {
		if d.cmd.ProcessState != nil {
			continue
		}
		if st, ok := c.status(name); ok && st.Leader {
			if who != "" {
				return "", 0
			}
			who, epoch = name, st.Epoch
		}
	}
	return who, epoch
}

// awaitLeader waits until exactly one node says it leads, and returns it.
func (c *testCluster) awaitLeader() (string, int64) {
	c.t.Helper()
	var name string
	var epoch int64
	await.Until(c.t, "one leader", func() bool { name, epoch = c.leader(); return name != "" })
	return name, epoch
}

// expectMail waits for the next mail and checks its subject holds all of want.
func (c *testCluster) expectMail(want ...string) string {
	c.t.Helper()
	m := c.mail.Next(c.t)
	subject := m.Msg.Header.Get("Subject")
	for _, w := range want {
		if !strings.Contains(subject, w) {
			c.t.Fatalf("mail %q, want one with %q", subject, w)
		}
	}
	return m.Msg.Header.Get("X-Dmonitor-Notification-Id")
}

func (c *testCluster) noMoreMail() {
	c.t.Helper()
	select {
	case m := <-c.mail.Received:
		c.t.Fatalf("one mail too many: %s", m.Msg.Header.Get("Subject"))
	default:
	}
}

// TestClusterFlakyObserverAndOutage: one observer whose view of the
// service is broken, for many intervals, pages nobody; a real outage pages
// once, and its recovery once.
func TestClusterFlakyObserverAndOutage(t *testing.T) {
	c := newCluster(t, "c")
	c.startAll()
	await.Until(t, "a leader that hears all three observers", func() bool {
		name, _ := c.leader()
		if name == "" {
			return false
		}
		st, _ := c.status(name)
		heard := 0
		for _, o := range st.Observers {
			if !o.LastHeartbeat.IsZero() {
				heard++
			}
		}
		return heard == 3
	})
	// The flaky observer fails the check again and again; the others see
	// it up. Wait until it has failed ten times (ten intervals).
	await.Until(t, "ten failed runs on the flaky observer", func() bool {
		return c.nodes["c"].metric(t, `dmonitor_checks_total{status="CRITICAL"}`) >= 10
	})
	name, _ := c.awaitLeader()
	if st, _ := c.status(name); len(st.Instances) != 1 || st.Instances[0].State != "ok" {
		t.Fatalf("with one flaky observer the leader says %+v, want ok", st.Instances)
	}
	c.noMoreMail()

	c.recoveryPaged(c.outagePaged())
	c.stopAll()
}

// outagePaged stops the service and returns the id of the page that
// follows.
func (c *testCluster) outagePaged() string {
	c.t.Helper()
	c.svc.l.Close()
	return c.expectMail("FIRING", "127.0.0.1")
}

// recoveryPaged starts the service again and checks its recovery is
// paged under an id of its own.
func (c *testCluster) recoveryPaged(fired string) {
	c.t.Helper()
	c.svc = startService(c.t, c.svc.addr)
	resolved := c.expectMail("RESOLVED", "127.0.0.1")
	if fired == "" || resolved == "" || fired == resolved {
		c.t.Fatalf("ids %q and %q: want two distinct ids", fired, resolved)
	}
}

// stopNodes stops every node that runs, cleanly.
func (c *testCluster) stopNodes() {
	c.t.Helper()
	for _, d := range c.nodes {
		if d.cmd.ProcessState == nil {
			d.stop(c.t)
		}
	}
}

// stopAll stops every node that runs and checks nothing more was mailed.
func (c *testCluster) stopAll() {
	c.t.Helper()
	c.stopNodes()
	c.noMoreMail()
}

// TestClusterSilenceThroughFollower: a silence created through a node
// that does not lead holds the leader's page back; expired through that
// node, it lets the page out.
func TestClusterSilenceThroughFollower(t *testing.T) {
	c := newCluster(t, "")
	c.startAll()
	silenceThroughFollower(t, c)
}

// silenceThroughFollower sets a silence through a node that does not lead,
// and expires it there, and checks the leader mutes and then pages.
func silenceThroughFollower(t *testing.T, c *testCluster) {
	t.Helper()
	leaderState := func() string {
		name, _ := c.leader()
		if name == "" {
			return ""
		}
		st, _ := c.status(name)
		if len(st.Instances) != 1 {
			return ""
		}
		return st.Instances[0].State
	}
	await.Until(t, "a leader that sees the service up", func() bool { return leaderState() == "ok" })
	leader, _ := c.awaitLeader()
	follower := "a"
	if leader == "a" {
		follower = "b"
	}

	body := fmt.Sprintf(`{"matchers":[{"name":"host","value":"127.0.0.1","isRegex":false,"isEqual":true}],
		"endsAt":%q,"createdBy":"ann","comment":"maintenance"}`, time.Now().Add(time.Hour).Format(time.RFC3339))
	code, resp := c.nodes[follower].api(t, "POST", "/api/v1/silences", clusterToken, body)
	if code != http.StatusOK {
		t.Fatalf("create silence on follower %s: %d %s", follower, code, resp)
	}
	var created struct{ SilenceID string }
	if err := json.Unmarshal([]byte(resp), &created); err != nil || created.SilenceID == "" {
		t.Fatalf("create silence answered %s", resp)
	}
	// The outage starts only once the leader holds the silence, so the
	// test shows the silence reaching it, not a race against its reload.
	await.Until(t, "the leader to list the silence", func() bool {
		_, list := c.nodes[leader].api(t, "GET", "/api/v1/silences", "", "")
		return strings.Contains(list, created.SilenceID)
	})

	c.svc.l.Close()
	await.Until(t, "the leader to read the alert silenced", func() bool { return leaderState() == "silenced" })
	c.noMoreMail()

	if code, resp := c.nodes[follower].api(t, "DELETE", "/api/v1/silence/"+created.SilenceID, clusterToken, ""); code != http.StatusOK {
		t.Fatalf("expire silence on follower %s: %d %s", follower, code, resp)
	}
	c.expectMail("FIRING", "127.0.0.1")
}

// mailTally counts what reached the sink, by notification id: every
// rule's, or rule's alone when it is set.
type mailTally struct {
	firing, resolved map[string]int
	rule             string
}

// newTally returns an empty tally of rule's mails ("" for every rule).
func newTally(rule string) *mailTally {
	return &mailTally{firing: map[string]int{}, resolved: map[string]int{}, rule: rule}
}

// take counts the mails that reached the cluster's sink.
func (m *mailTally) take(c *testCluster) { drain(c.t, c.mail, m) }

// drain counts every mail that has reached mail so far into each tally.
func drain(t testing.TB, mail *smtptest.Server, tallies ...*mailTally) {
	t.Helper()
	for {
		select {
		case msg := <-mail.Received:
			for _, m := range tallies {
				m.add(t, msg)
			}
		default:
			return
		}
	}
}

// add counts msg if it is of m's rule.
func (m *mailTally) add(t testing.TB, msg smtptest.Message) {
	t.Helper()
	id := msg.Msg.Header.Get("X-Dmonitor-Notification-Id")
	if m.rule != "" && msg.Msg.Header.Get("X-Dmonitor-Rule") != m.rule {
		return
	}
	switch msg.Msg.Header.Get("X-Dmonitor-Status") {
	case "firing":
		m.firing[id]++
	case "resolved":
		m.resolved[id]++
	default:
		t.Fatalf("mail without a status: %v", msg.Msg.Header)
	}
}

func (m *mailTally) duplicates() int {
	n := 0
	for _, ids := range []map[string]int{m.firing, m.resolved} {
		for _, k := range ids {
			n += k - 1
		}
	}
	return n
}

// killLeader kill -9s the node that leads, waits for another to lead,
// restarts the killed one, and returns how long the cluster was without
// a leader deciding.
func (c *testCluster) killLeader() time.Duration {
	c.t.Helper()
	name, oldEpoch := c.awaitLeader()
	c.nodes[name].kill(c.t)
	killed := time.Now()
	var failover time.Duration
	await.Until(c.t, "a new leader", func() bool {
		n, e := c.leader()
		if n != "" && e > oldEpoch {
			failover = time.Since(killed)
			return true
		}
		return false
	})
	c.start(name)
	return failover
}

// TestClusterLeaderKilled kills the leader with kill -9 at random moments
// of twenty incidents. Every transition must reach the sink (zero lost),
// each incident exactly once by id; raw duplicates (the one send a crash
// between "sent" and "recorded as sent" can repeat) are counted and
// reported.
func TestClusterLeaderKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("20 failovers take a few minutes")
	}
	c := newCluster(t, "")
	c.startAll()
	tally := newTally("")
	const trials = 20
	seed := time.Now().UnixNano()
	t.Logf("kill moments seeded with %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 1))
	var failovers []time.Duration
	for k := range trials {
		c.svc.l.Close()
		if k%2 == 0 {
			// Somewhere between the outage and its page.
			time.Sleep(time.Duration(rng.Int64N(int64(1500 * time.Millisecond))))
			failovers = append(failovers, c.killLeader())
		}
		await.Until(t, fmt.Sprintf("incident %d paged", k+1), func() bool { tally.take(c); return len(tally.firing) >= k+1 })
		if k%2 == 1 {
			// Somewhere between the page and the recovery.
			time.Sleep(time.Duration(rng.Int64N(int64(time.Second))))
			failovers = append(failovers, c.killLeader())
		}
		c.svc = startService(t, c.svc.addr)
		await.Until(t, fmt.Sprintf("incident %d resolved", k+1), func() bool { tally.take(c); return len(tally.resolved) >= k+1 })
	}
	c.stopNodes()
	tally.take(c)
	if len(tally.firing) != trials || len(tally.resolved) != trials {
		t.Fatalf("%d incidents: %d distinct firing and %d distinct resolved notifications, want %d each (an extra id is an incident paged twice)",
			trials, len(tally.firing), len(tally.resolved), trials)
	}
	slices.Sort(failovers)
	t.Logf("%d failovers: kill -9 to a new leader in %v (median), %v (max); lease TTL 2s", len(failovers),
		failovers[len(failovers)/2], failovers[len(failovers)-1])
	t.Logf("raw duplicate notifications (same id sent twice): %d of %d", tally.duplicates(), 2*trials)
}

// TestClusterRedisRestart restarts Redis in the middle of an incident,
// once with its append-only file (as a production Redis keeps one) and once
// empty (no persistence, or a flushed Redis): no transition is lost, none is
// sent twice, no incident is paged again under a new id, and no observer is
// reported silent while heartbeats resume.
func TestClusterRedisRestart(t *testing.T) {
	for _, tc := range []struct {
		name  string
		redis []string
	}{
		{"aof", []string{"--appendonly", "yes", "--appendfsync", "always"}},
		// Comes back with nothing: the alert state is refilled from the
		// nodes' local copies.
		{"empty", []string{"--save", ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, "")
			c.redis.Kill()
			c.redis = redistest.Start(t, tc.redis...)
			for _, n := range []string{"a", "b", "c"} { // point the nodes at the new server
				b, err := os.ReadFile(filepath.Join(c.dirs[n], "dmonitor.yaml"))
				if err != nil {
					t.Fatal(err)
				}
				b = regexp.MustCompile(`redis://127\.0\.0\.1:\d+/0`).ReplaceAll(b, []byte(c.redis.URL()))
				writeTree(t, c.dirs[n], map[string]string{"dmonitor.yaml": string(b)})
			}
			c.startAll()
			tally := newTally("")
			c.svc.l.Close()
			await.Until(t, "the page", func() bool { tally.take(c); return len(tally.firing) == 1 })

			c.redis.Restart()
			c.svc = startService(t, c.svc.addr)
			await.Until(t, "the recovery after Redis came back", func() bool { tally.take(c); return len(tally.resolved) == 1 })
			c.stopNodes()
			tally.take(c)
			if len(tally.firing) != 1 || len(tally.resolved) != 1 || tally.duplicates() != 0 {
				t.Fatalf("firing %v, resolved %v: want one of each, no duplicate", tally.firing, tally.resolved)
			}
		})
	}
}

// TestClusterSilentObserver: an observer that dies is reported by an
// alert of its own, resolved when it comes back.
func TestClusterSilentObserver(t *testing.T) {
	c := newCluster(t, "")
	c.startAll()
	var leader string
	await.Until(t, "a leader", func() bool { leader, _ = c.leader(); return leader != "" })
	victim := "a"
	if leader == "a" {
		victim = "b"
	}
	c.nodes[victim].kill(t)
	c.expectMail("FIRING", "observer-up", c.control[victim])
	c.start(victim)
	c.expectMail("RESOLVED", "observer-up", c.control[victim])
}

// TestClusterDegraded kills Redis under a cluster: the nodes decide among
// themselves (degraded, peer mode), resolve the incident paged before, page
// a new outage, and say so; when Redis
// comes back empty, the redis lease takes over from the state every node
// kept: nothing is paged again under a new id, every incident is resolved
// exactly once, and no observer is reported silent.
func TestClusterDegraded(t *testing.T) {
	c := newCluster(t, "")
	c.startAll()
	svc, redisDown, everything := newTally("default"), newTally("redis-unreachable"), newTally("")
	take := func() { drain(t, c.mail, svc, redisDown, everything) }
	await.Until(t, "a leader", func() bool { name, _ := c.leader(); return name != "" })

	// An incident paged through Redis, still open when Redis dies.
	c.svc.l.Close()
	await.Until(t, "the first page", func() bool { take(); return len(svc.firing) == 1 })
	c.redis.Kill()
	await.Until(t, "degraded mode on every node", func() bool {
		for _, n := range []string{"a", "b", "c"} {
			if c.nodes[n].metric(t, "dmonitor_degraded") != 1 {
				return false
			}
		}
		return true
	})
	await.Until(t, "the redis-unreachable page", func() bool { take(); return len(redisDown.firing) == 1 })
	c.svc = startService(t, c.svc.addr)
	await.Until(t, "the first incident resolved while degraded", func() bool { take(); return len(svc.resolved) == 1 })

	// A new outage while degraded.
	c.svc.l.Close()
	down := time.Now()
	await.Until(t, "the second page, while degraded", func() bool { take(); return len(svc.firing) == 2 })
	// The bound (interval + lease TTL + 5s) is measured by
	// BenchmarkDetectionByMode, not asserted here: this machine is shared.
	t.Logf("outage to page while degraded: %v", time.Since(down))

	// Redis back, empty: the incident opened while degraded is resolved
	// once, by whoever leads.
	c.redis.Restart()
	await.Until(t, "degraded mode over", func() bool {
		for _, n := range []string{"a", "b", "c"} {
			if c.nodes[n].metric(t, "dmonitor_degraded") != 0 {
				return false
			}
		}
		return true
	})
	await.Until(t, "redis-unreachable resolved", func() bool { take(); return len(redisDown.resolved) == 1 })
	c.svc = startService(t, c.svc.addr)
	await.Until(t, "the second incident resolved", func() bool { take(); return len(svc.resolved) == 2 })
	c.stopNodes()
	take()
	if len(svc.firing) != 2 || len(svc.resolved) != 2 {
		t.Errorf("service: firing %v, resolved %v; want two incidents, each paged and resolved once by id", svc.firing, svc.resolved)
	}
	if len(redisDown.firing) != 1 || len(redisDown.resolved) != 1 {
		t.Errorf("redis-unreachable: firing %v, resolved %v; want one of each", redisDown.firing, redisDown.resolved)
	}
	if n := len(everything.firing); n != 3 {
		t.Errorf("%d distinct pages in all (%v), want 3: an observer reported silent, or an incident paged again", n, everything.firing)
	}
	t.Logf("raw duplicates (same id twice): %d", everything.duplicates())
}
