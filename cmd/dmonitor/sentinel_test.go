package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/internal/await"
	"github.com/dmonitor/dmonitor/internal/loopback"
	"github.com/dmonitor/dmonitor/internal/sentineltest"
	"github.com/dmonitor/dmonitor/internal/smtptest"
	"github.com/dmonitor/dmonitor/lock/redislease"
)

// TestClusterSentinelFailover runs three nodes in redis mode on a
// redis+sentinel:// URL (a real master, its replica and three
// redis-sentinels) and moves the master in the middle of an incident, with
// SENTINEL FAILOVER and by killing it: the page went out before, the
// recovery is sent once after, by a leader whose lease is on the new
// master; nothing is paged twice, and no observer is paged as silent. The
// lease TTL is the default; whether the lease stays with its holder or
// passes to another node (see lock/redislease's TestLeaseAcrossSentinel*),
// the outcome must be the same.
func TestClusterSentinelFailover(t *testing.T) {
	for _, tc := range []struct {
		name     string
		failover func(*sentineltest.Set) (old, new string)
	}{
		{"SENTINEL FAILOVER", (*sentineltest.Set).Failover},
		// The sentinels call it down after half a second, so the nodes
		// do not fall back to degraded mode (after a lease TTL) first.
		{"master killed", (*sentineltest.Set).KillMaster},
	} {
		t.Run(tc.name, func(t *testing.T) { sentinelFailover(t, tc.failover) })
	}
}

// sentinelFailover is TestClusterSentinelFailover with one way to fail
// over.
func sentinelFailover(t *testing.T, failover func(*sentineltest.Set) (old, new string)) {
	requirePlugins(t)
	sen := sentineltest.Start(t, sentineltest.Options{Sentinels: 3})
	set := steer(t)
	set("127.0.0.1", "0")
	c := &testCluster{t: t, mail: smtptest.Start(t, "127.0.0.1:0"),
		dirs: map[string]string{}, control: map[string]string{}, nodes: map[string]*daemon{}}
	tsdbAPI := loopback.FreeAddr(t)
	names := []string{"a", "b", "c"}
	for _, name := range names {
		c.control[name] = loopback.FreeAddr(t)
	}
	nodesTxt := c.control["a"] + "\n" + c.control["b"] + "\n" + c.control["c"] + "\n"
	for _, name := range names {
		tsdbCfg := fmt.Sprintf(`{backend: opentsdb, url: "http://%s"}`, tsdbAPI)
		if name == "a" {
			tsdbCfg = fmt.Sprintf("{listen: %q}", tsdbAPI)
		}
		c.dirs[name] = t.TempDir()
		writeTree(t, c.dirs[name], map[string]string{
			"dmonitor.yaml": fmt.Sprintf(`observer: %q
interval: 1s
quorum: 2
control: {listen: %q, token_file: token}
tsdb: %s
redis: {url: %q, lease_ttl: 6s}
smtp: {addr: %q, from: dmonitor@example.org, tls: none}
checks:
  ctl:
    command: [check_ctl, "{{host}}"]
`, c.control[name], c.control[name], tsdbCfg, sen.URL(), c.mail.Addr),
			"nodes.txt":                  nodesTxt,
			"token":                      clusterToken + "\n",
			"hosts.d/127.0.0.1/ctl":      "",
			"alert.d/oncall@example.org": "",
		})
		writeCtlPlugin(t, c.dirs[name])
	}
	c.startAll()
	await.Until(t, "a leader", func() bool { name, _ := c.leader(); return name != "" })

	svc, silent, all := newTally("default"), newTally("observer-up"), newTally("")
	take := func() { drain(t, c.mail, svc, silent, all) }
	set("127.0.0.1", "2")
	await.Until(t, "the page", func() bool { take(); return len(svc.firing) == 1 })
	_, before := c.awaitLeader()
	// Fail over only once a leader has recorded the page as delivered: a
	// page whose record the failover loses is sent again, by design.
	await.Until(t, "the page recorded as delivered", func() bool {
		for id := range svc.firing {
			for _, d := range c.nodes {
				if d.recordedSent(id) {
					return true
				}
			}
		}
		return false
	})
	// And once the record has reached the replica: a failover loses what
	// had not, replication being asynchronous.
	sen.AwaitReplicated()

	began := time.Now()
	oldMaster, newMaster := failover(sen)
	t.Logf("failover from %s to %s: done in %v", oldMaster, newMaster, time.Since(began))

	set("127.0.0.1", "0")
	await.Until(t, "the recovery after the failover", func() bool { take(); return len(svc.resolved) == 1 })
	// The leader leads by the lease on the new master (database 0).
	lease := redislease.New(sen.Client(newMaster), redislease.Options{})
	var leader string
	var after int64
	await.Until(t, "the leader's lease on the new master", func() bool {
		leader, after = c.leader()
		owner, epoch, _, err := lease.Leader(context.Background())
		return leader != "" && err == nil && owner == c.control[leader] && epoch == after
	})
	t.Logf("leader %s: epoch %d before the failover, %d after", leader, before, after)

	c.stopNodes()
	take()
	if len(svc.firing) != 1 || len(svc.resolved) != 1 || svc.duplicates() != 0 {
		t.Errorf("firing %v, resolved %v: want one page and one recovery, none twice", svc.firing, svc.resolved)
	}
	if len(silent.firing) != 0 {
		t.Errorf("an observer paged as silent through the failover: %v", silent.firing)
	}
	if n := all.duplicates(); n != 0 {
		t.Errorf("%d notifications sent twice (by id): firing %v, resolved %v", n, all.firing, all.resolved)
	}
}
