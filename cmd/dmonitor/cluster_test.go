package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/internal/redistest"
	"github.com/dmonitor/dmonitor/internal/smtptest"
)

// testCluster is three dmonitor run processes, observers a, b and c,
// sharing a real Redis and one TSDB (a's embedded store, which b and c
// write to through its OpenTSDB API), each checking a service on loopback
// with Debian's check_tcp, all mailing one SMTP sink.
type testCluster struct {
	t       *testing.T
	redis   *redistest.Server
	mail    *smtptest.Server
	svc     *tcpService
	dirs    map[string]string
	control map[string]string
	nodes   map[string]*daemon
}

// newCluster writes the three configurations. flaky names an observer
// whose view of the service is broken: its check goes to a closed port.
func newCluster(t *testing.T, flaky string) *testCluster {
	t.Helper()
	requirePlugins(t)
	c := &testCluster{t: t, redis: redistest.Start(t), mail: smtptest.Start(t, "127.0.0.1:0"),
		svc: startService(t, "127.0.0.1:0"), dirs: map[string]string{}, control: map[string]string{}, nodes: map[string]*daemon{}}
	tsdbAPI := freePort(t)
	closed := freePort(t)
	for _, name := range []string{"a", "b", "c"} {
		port := c.svc.port()
		if name == flaky {
			_, port, _ = strings.Cut(closed, ":")
		}
		tsdbCfg := fmt.Sprintf(`{backend: opentsdb, url: "http://%s"}`, tsdbAPI)
		if name == "a" {
			tsdbCfg = fmt.Sprintf("{listen: %q}", tsdbAPI)
		}
		c.control[name] = freePort(t)
		c.dirs[name] = t.TempDir()
		writeTree(t, c.dirs[name], map[string]string{
			"dmonitor.yaml": fmt.Sprintf(`observer: %s
interval: 1s
quorum: 2
control: {listen: %q}
tsdb: %s
redis: {url: %q, lease_ttl: 2s}
smtp: {addr: %q, from: dmonitor@example.org, tls: none}
checks:
  svc:
    command: [check_tcp, -H, "{{host}}", -p, %q]
`, name, c.control[name], tsdbCfg, c.redis.URL(), c.mail.Addr, port),
			"nodes.txt":                  "a\nb\nc\n",
			"hosts.d/127.0.0.1/svc":      "",
			"alert.d/oncall@example.org": "",
		})
	}
	return c
}

func (c *testCluster) start(name string) {
	c.t.Helper()
	c.nodes[name] = startDaemon(c.t, c.dirs[name], c.control[name])
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

// leader returns the node that says it leads, if exactly one does.
func (c *testCluster) leader() (string, int64) {
	var who string
	var epoch int64
	for name, d := range c.nodes {
		if d.cmd.ProcessState != nil {
			continue
		}
		if st, ok := c.status(name); ok && st.Leader {
			if who != "" {
				c.t.Fatalf("two nodes say they lead: %s and %s", who, name)
			}
			who, epoch = name, st.Epoch
		}
	}
	return who, epoch
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
	waitFor(t, "a leader that hears all three observers", func() bool {
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
	waitFor(t, "ten failed runs on the flaky observer", func() bool {
		return c.nodes["c"].metric(t, `dmonitor_checks_total{status="CRITICAL"}`) >= 10
	})
	name, _ := c.leader()
	if st, _ := c.status(name); len(st.Instances) != 1 || st.Instances[0].State != "ok" {
		t.Fatalf("with one flaky observer the leader says %+v, want ok", st.Instances)
	}
	c.noMoreMail()

	c.svc.l.Close()
	fired := c.expectMail("FIRING", "127.0.0.1")
	c.svc = startService(t, c.svc.addr)
	resolved := c.expectMail("RESOLVED", "127.0.0.1")
	if fired == "" || resolved == "" || fired == resolved {
		t.Fatalf("ids %q and %q: want two distinct ids", fired, resolved)
	}
	for _, n := range []string{"a", "b", "c"} {
		c.nodes[n].stop(t)
	}
	c.noMoreMail()
}
