package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/internal/await"
	"github.com/dmonitor/dmonitor/internal/loopback"
	"github.com/dmonitor/dmonitor/internal/redistest"
	"github.com/dmonitor/dmonitor/internal/smtptest"
	"github.com/dmonitor/dmonitor/internal/tmpfstest"
	"github.com/dmonitor/dmonitor/probe"
)

// selfMail waits for the mail of a self alert of rule on host in status
// ("FIRING", "RESOLVED"), skipping the others, and returns its body.
func selfMail(t *testing.T, mail *smtptest.Server, status, rule, host string) string {
	t.Helper()
	return mailsOf(t, mail, fmt.Sprintf("[%s] %s on %s", status, rule, host))[0]
}

// mailsOf waits for a mail whose subject starts with each of want, in any
// order, skipping the others, and returns their bodies in want's order.
func mailsOf(t *testing.T, mail *smtptest.Server, want ...string) []string {
	t.Helper()
	bodies := make([]string, len(want))
	left := len(want)
	deadline := time.After(60 * time.Second)
	for left > 0 {
		select {
		case m := <-mail.Received:
			subject, took := m.Msg.Header.Get("Subject"), false
			for i, w := range want {
				if bodies[i] == "" && strings.HasPrefix(subject, w) {
					bodies[i], took = m.Body, true
					left--
					break
				}
			}
			if !took {
				t.Logf("mail skipped: %s", subject)
			}
		case <-deadline:
			t.Fatalf("mails %q: %d never came", want, left)
		}
	}
	return bodies
}

// noSelfMail fails on any mail of rule still waiting in mail.
func noSelfMail(t *testing.T, mail *smtptest.Server, rule string) {
	t.Helper()
	for {
		select {
		case m := <-mail.Received:
			if s := m.Msg.Header.Get("Subject"); strings.Contains(s, "] "+rule+" ") {
				t.Errorf("one mail too many: %s", s)
			}
		default:
			return
		}
	}
}

// selfTree writes a one-node configuration with a check_ctl check on
// 127.0.0.1 named ctl, mail to oncall@example.org, and extra YAML.
func selfTree(t *testing.T, dir, control string, mail *smtptest.Server, extra string) {
	t.Helper()
	writeTree(t, dir, map[string]string{
		"dmonitor.yaml": fmt.Sprintf(`observer: self
interval: 1s
control: {listen: %q}
tsdb: {listen: ""}
smtp: {addr: %q, from: dmonitor@example.org, tls: none}
%s`, control, mail.Addr, extra),
		"hosts.d/127.0.0.1/ctl":      "",
		"alert.d/oncall@example.org": "",
	})
	writeCtlPlugin(t, dir)
}

// A plugin removed from a node is paged as such, though the checks that
// run it only turn unknown; it is resolved once the plugin is back.
func TestSelfPluginMissing(t *testing.T) {
	set := steer(t)
	set("127.0.0.1", "0")
	mail := smtptest.Start(t, "127.0.0.1:0")
	control := loopback.FreeAddr(t)
	dir := t.TempDir()
	selfTree(t, dir, control, mail, "")
	d := startDaemon(t, dir, control)
	await.Until(t, "the check to be seen ok", func() bool { return d.state(t, "127.0.0.1", "ctl") == "ok" })

	plugin := filepath.Join(dir, "plugins", "check_ctl")
	if err := os.Remove(plugin); err != nil {
		t.Fatal(err)
	}
	body := selfMail(t, mail, "FIRING", "plugin-missing", "self")
	if !strings.Contains(body, plugin+" missing (check ctl)") {
		t.Errorf("plugin-missing mail does not name the plugin and its check:\n%s", body)
	}
	writeCtlPlugin(t, dir)
	selfMail(t, mail, "RESOLVED", "plugin-missing", "self")
	d.stop(t)
	noSelfMail(t, mail, "plugin-missing")
}

// A node that may not open the ICMP sockets its icmp probes need pages so,
// naming the checks and the sysctl that allows them: their runs are only
// UNKNOWN, which pages nobody. Skipped on a host that allows them (this
// test does not change the host's sysctl); the self check's unit test
// covers the way back to OK.
func TestSelfICMPNotAllowed(t *testing.T) {
	if err := probe.ICMPAllowed(); err == nil {
		t.Skip("this host's net.ipv4.ping_group_range allows ICMP sockets to this process")
	}
	set := steer(t)
	set("127.0.0.1", "0")
	mail := smtptest.Start(t, "127.0.0.1:0")
	control := loopback.FreeAddr(t)
	dir := t.TempDir()
	selfTree(t, dir, control, mail, "checks:\n  ping:\n    probe: {type: icmp}\n")
	writeTree(t, dir, map[string]string{"hosts.d/127.0.0.1/ping": ""})
	d := startDaemon(t, dir, control)
	body := selfMail(t, mail, "FIRING", "plugin-missing", "self")
	for _, w := range []string{"icmp probes cannot run (check ping)", "net.ipv4.ping_group_range is",
		`allow them with: sysctl -w net.ipv4.ping_group_range="0 2147483647"`} {
		if !strings.Contains(body, w) {
			t.Errorf("plugin-missing mail lacks %q:\n%s", w, body)
		}
	}
	d.stop(t)
}

// A receiver whose deliveries keep failing is paged through the others,
// and resolved once it takes its notifications again.
func TestSelfReceiverFailing(t *testing.T) {
	set := steer(t)
	set("127.0.0.1", "0")
	mail := smtptest.Start(t, "127.0.0.1:0")
	hookAddr := loopback.FreeAddr(t)
	control := loopback.FreeAddr(t)
	dir := t.TempDir()
	selfTree(t, dir, control, mail, fmt.Sprintf("receivers:\n  default:\n    webhook: {url: 'http://%s/hook'}\n", hookAddr))
	d := startDaemon(t, dir, control)
	await.Until(t, "the check to be seen ok", func() bool { return d.state(t, "127.0.0.1", "ctl") == "ok" })

	// The webhook is down (nothing listens) when the check fails: the
	// mail goes, the webhook's attempts fail.
	set("127.0.0.1", "2")
	selfMail(t, mail, "FIRING", "default", "127.0.0.1")
	body := selfMail(t, mail, "FIRING", "receiver-failing", "default/webhook")
	if !strings.Contains(body, "connection refused") {
		t.Errorf("receiver-failing mail does not say why:\n%s", body)
	}

	// The webhook comes up: its queue drains and the alert resolves.
	ln, err := net.Listen("tcp", hookAddr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	selfMail(t, mail, "RESOLVED", "receiver-failing", "default/webhook")
	d.stop(t)
	noSelfMail(t, mail, "receiver-failing")
}

// A node that runs another configuration than the leader is paged, named;
// it resolves once the node reloads the same configuration. The nodes'
// own settings (observer name, listen address) differ and page nobody.
func TestSelfConfigDiffers(t *testing.T) {
	c := newPeerCluster(t, "")
	odd := filepath.Join(c.dirs["c"], "rules.d", "extra.yaml")
	writeTree(t, c.dirs["c"], map[string]string{"rules.d/extra.yaml": "rules:\n  - name: extra\n    select: {check: svc}\n"})
	c.startAll()
	body := selfMail(t, c.mail, "FIRING", "config-differs", c.control["c"])
	if !strings.Contains(body, "observer "+c.control["c"]+" runs configuration config ") {
		t.Errorf("config-differs mail does not name the node and its configuration:\n%s", body)
	}
	// The watcher reloads c's rules in place.
	if err := os.Remove(odd); err != nil {
		t.Fatal(err)
	}
	selfMail(t, c.mail, "RESOLVED", "config-differs", c.control["c"])
	c.stopAll()
	noSelfMail(t, c.mail, "config-differs")
}

// With Redis gone and no peers to fall back on, nobody can lead: the node
// says so through queues of its own, and resolves it once it leads again.
func TestSelfNoLeader(t *testing.T) {
	set := steer(t)
	set("127.0.0.1", "0")
	rd := redistest.Start(t)
	mail := smtptest.Start(t, "127.0.0.1:0")
	control := loopback.FreeAddr(t)
	dir := t.TempDir()
	selfTree(t, dir, control, mail, fmt.Sprintf("redis: {url: %q, lease_ttl: 2s}\n", rd.URL()))
	d := startDaemon(t, dir, control)
	await.Until(t, "the node to lead", func() bool { return d.metric(t, "dmonitor_leader") == 1 })

	rd.Kill()
	body := selfMail(t, mail, "FIRING", "no-leader", "self")
	if !strings.Contains(body, "nobody evaluates the rules") {
		t.Errorf("no-leader mail does not say what it means:\n%s", body)
	}
	rd.Restart()
	selfMail(t, mail, "RESOLVED", "no-leader", "self")
	d.stop(t)
	noSelfMail(t, mail, "no-leader")
}

// A full data directory loses nothing already stored and orphans no
// incident: the node pages that its disk is full, keeps checking and
// paging, starts again while full, and once space is freed resolves
// everything exactly once, with every datapoint written before still there.
func TestDiskFullThenFreed(t *testing.T) {
	data := tmpfstest.Mount(t, "100m")
	set := steer(t)
	set("127.0.0.1", "0")
	mail := smtptest.Start(t, "127.0.0.1:0")
	control := loopback.FreeAddr(t)
	dir := t.TempDir()
	// One mail per self alert, as counted below.
	selfTree(t, dir, control, mail, fmt.Sprintf("data_dir: %q\nreceivers: {default: {group_wait: 0s}}\n", data))
	begin := time.Now()
	d := startDaemon(t, dir, control)
	var stored float64
	await.Until(t, "50 datapoints stored", func() bool {
		stored = d.metric(t, "dmonitor_tsdb_points_written_total")
		return stored >= 50
	})
	d.stop(t)
	before := countPoints(t, filepath.Join(data, "tsdb"), begin)
	if before < int(stored) {
		t.Fatalf("%d datapoints in the store, %v were stored", before, stored)
	}

	d = startDaemon(t, dir, control)
	free := tmpfstest.Fill(t, data)
	body := selfMail(t, mail, "FIRING", "disk-nearly-full", "self")
	if !strings.Contains(body, "data_dir "+data+": 0.0% free") {
		t.Errorf("disk-nearly-full mail does not say where and how full:\n%s", body)
	}
	// Checks and paging go on while the disk is full, and across a
	// restart on it.
	set("127.0.0.1", "2")
	selfMail(t, mail, "FIRING", "default", "127.0.0.1")
	d.stop(t)
	d = startDaemon(t, dir, control)
	await.Until(t, "the store to hold points in memory", func() bool { return d.metric(t, "dmonitor_tsdb_buffered_points") > 0 })

	free()
	set("127.0.0.1", "0")
	mailsOf(t, mail, "[RESOLVED] default on 127.0.0.1", "[RESOLVED] disk-nearly-full on self")
	await.Until(t, "the points held in memory written", func() bool { return d.metric(t, "dmonitor_tsdb_buffered_points") == 0 })
	d.stop(t)
	noSelfMail(t, mail, "default")
	noSelfMail(t, mail, "disk-nearly-full")
	if after := countPoints(t, filepath.Join(data, "tsdb"), begin); after < before {
		t.Errorf("after the disk was full: %d datapoints, %d before", after, before)
	}
}

// A node that cannot keep up, its checks' runs waiting for a worker when
// the next comes due, is paged as late, naming a check, though nothing
// else would tell: the skipped runs leave no result at all. It is
// resolved once the runs keep up again. Here one worker, held by a plugin
// that hangs until its timeout, keeps the other check waiting.
func TestSelfChecksLate(t *testing.T) {
	mail := smtptest.Start(t, "127.0.0.1:0")
	control := loopback.FreeAddr(t)
	dir := t.TempDir()
	fifo := filepath.Join(dir, "hold")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	writeTree(t, dir, map[string]string{
		"dmonitor.yaml": fmt.Sprintf(`observer: self
interval: 1s
timeout: 5s
workers: 1
control: {listen: %q}
tsdb: {listen: ""}
smtp: {addr: %q, from: dmonitor@example.org, tls: none}
receivers: {default: {group_wait: 0s}}
`, control, mail.Addr),
		"hosts.d/127.0.0.1/hold":     "",
		"hosts.d/127.0.0.1/queued":   "",
		"alert.d/oncall@example.org": "",
		// Each run of hold waits on the fifo until its timeout, five
		// intervals, holding the only worker.
		"plugins/check_hold":   "#!/bin/sh\nread x < " + fifo + "\necho OK\n",
		"plugins/check_queued": "#!/bin/sh\necho OK\n",
	})
	d := startDaemon(t, dir, control)
	body := selfMail(t, mail, "FIRING", "checks-late", "self")
	if !strings.Contains(body, "queued on 127.0.0.1 among them") {
		t.Errorf("checks-late mail does not name the check waiting for a worker:\n%s", body)
	}

	writeTree(t, dir, map[string]string{"plugins/check_hold": "#!/bin/sh\necho OK\n"})
	// A run still waiting on the fifo ends now (or at its timeout, if
	// none holds it open).
	if f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
		f.Close()
	}
	selfMail(t, mail, "RESOLVED", "checks-late", "self")
	d.stop(t)
	noSelfMail(t, mail, "checks-late")
}
