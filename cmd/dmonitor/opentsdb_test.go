package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/evaluator/observer"
	"github.com/dmonitor/dmonitor/internal/await"
	"github.com/dmonitor/dmonitor/internal/loopback"
	"github.com/dmonitor/dmonitor/internal/smtptest"
	"github.com/dmonitor/dmonitor/tsdb"
	"github.com/dmonitor/dmonitor/tsdb/embedded"
	"github.com/dmonitor/dmonitor/tsdb/httpapi"
)

// fakeOpenTSDB is a real OpenTSDB API (dmonitor's own, over an embedded
// store in this process) that the test can take down and bring back on the
// same address.
type fakeOpenTSDB struct {
	addr  string
	store *embedded.Store
	srv   *http.Server
	done  chan struct{}
}

func startOpenTSDB(t testing.TB, addr string, store *embedded.Store) *fakeOpenTSDB {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	o := &fakeOpenTSDB{addr: l.Addr().String(), store: store, done: make(chan struct{}),
		srv: &http.Server{Handler: httpapi.NewHandler(store, httpapi.Options{})}}
	go func() { defer close(o.done); _ = o.srv.Serve(l) }()
	t.Cleanup(o.stop)
	return o
}

func (o *fakeOpenTSDB) stop() {
	_ = o.srv.Close()
	<-o.done
}

// TestOpenTSDBOutageSpoolsAndReplays takes the OpenTSDB endpoint away for
// a while: checks keep running, an outage during it is still alerted, and
// once OpenTSDB is back every result is there, once.
func TestOpenTSDBOutageSpoolsAndReplays(t *testing.T) {
	requirePlugins(t)
	store, err := embedded.Open(t.TempDir(), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	otsdb := startOpenTSDB(t, "127.0.0.1:0", store)
	mail := smtptest.Start(t, "127.0.0.1:0")
	svc := startService(t, "127.0.0.1:0")
	control := loopback.FreeAddr(t)
	dir := t.TempDir()
	runs := t.TempDir()
	// The plugin counts its own runs, so the test knows exactly how many
	// results the daemon produced.
	writeTree(t, dir, map[string]string{
		"dmonitor.yaml": fmt.Sprintf(`observer: e2e
interval: 1s
control: {listen: %q}
tsdb: {backend: opentsdb, url: "http://%s", batch_size: 10}
smtp: {addr: %q, from: dmonitor@example.org, tls: none}
checks:
  counted:
    command: [plugins/check_counted, %q, "{{host}}"]
  svc:
    command: [check_tcp, -H, "{{host}}", -p, %q]
`, control, otsdb.addr, mail.Addr, runs, svc.port()),
		"hosts.d/h1/counted":         "",
		"hosts.d/h2/counted":         "",
		"hosts.d/127.0.0.1/svc":      "",
		"alert.d/oncall@example.org": "",
		"plugins/check_counted":      "#!/bin/sh\necho run >> \"$1/$2\"\necho \"OK - run counted\"\n",
	})

	d := startDaemon(t, dir, control)
	await.Until(t, "results in OpenTSDB", func() bool { return countSamples(t, store, "dmonitor.check.status", "h1") >= 2 })

	otsdb.stop()
	checksBefore := d.metric(t, "dmonitor_checks_total")
	await.Until(t, "results to be spooled", func() bool { return d.metric(t, "dmonitor_spool_points") >= 20 })
	// Checks and alerting go on while OpenTSDB is away.
	svc.l.Close()
	if got := mail.Next(t).Msg.Header.Get("Subject"); !strings.Contains(got, "FIRING") {
		t.Fatalf("mail during the OpenTSDB outage: %q, want a firing alert", got)
	}
	if d.metric(t, "dmonitor_checks_total") <= checksBefore {
		t.Fatal("no check ran while OpenTSDB was down")
	}

	startOpenTSDB(t, otsdb.addr, store)
	await.Until(t, "the spool to drain", func() bool {
		return d.metric(t, "dmonitor_spool_points") == 0 && d.metric(t, "dmonitor_spool_replayed_total") > 0
	})
	if n := d.metric(t, "dmonitor_spool_dropped_total"); n != 0 {
		t.Fatalf("%v points dropped", n)
	}
	d.stop(t)

	for _, host := range []string{"h1", "h2"} {
		b, err := os.ReadFile(filepath.Join(runs, host))
		if err != nil {
			t.Fatal(err)
		}
		ran := bytes.Count(b, []byte("run\n"))
		series, err := store.Query(context.Background(), tsdb.Query{Metric: "dmonitor.check.status",
			Filters: []tsdb.Filter{{Type: tsdb.LiteralOr, Tag: "host", Expr: host}},
			Start:   time.Now().Add(-time.Hour), End: time.Now().Add(time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		if len(series) != 1 || len(series[0].Samples) != ran {
			got := 0
			if len(series) == 1 {
				got = len(series[0].Samples)
			}
			t.Fatalf("%s: the plugin ran %d times, OpenTSDB holds %d status samples (%d series)", host, ran, got, len(series))
		}
	}
}

func countSamples(t testing.TB, s *embedded.Store, metric, host string) int {
	t.Helper()
	series, err := s.Query(context.Background(), tsdb.Query{Metric: metric,
		Filters: []tsdb.Filter{{Type: tsdb.LiteralOr, Tag: "host", Expr: host}},
		Start:   time.Now().Add(-time.Hour), End: time.Now().Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, sr := range series {
		n += len(sr.Samples)
	}
	return n
}

// hangTSDB listens on addr and accepts connections without ever answering:
// an OpenTSDB that is up but stuck. stop closes it and every connection.
func hangTSDB(t testing.TB, addr string) (stop func()) {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		l.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}
	t.Cleanup(stop)
	return stop
}

// flipPlugin counts its runs per host in a file of $1 and changes status
// every five runs.
const flipPlugin = `#!/bin/sh
f="$1/$2"
n=$(( $(cat "$f" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$f"
if [ $(( n / 5 % 2 )) = 1 ]; then echo "CRITICAL - run $n"; exit 2; fi
echo "OK - run $n"
`

// TestTSDBHungWithFlippingChecks: OpenTSDB stops answering while 200
// checks keep changing state. Checks go on at their pace, pages go on,
// SIGTERM ends the daemon, and once OpenTSDB answers again it holds every
// result and every alert transition, once.
func TestTSDBHungWithFlippingChecks(t *testing.T) {
	const hosts = 200
	store, err := embedded.Open(t.TempDir(), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	otsdb := startOpenTSDB(t, "127.0.0.1:0", store)
	mail := smtptest.Start(t, "127.0.0.1:0")
	var mails atomic.Int64
	var subjectsMu sync.Mutex
	subjects := map[string]int{}
	go func() {
		for m := range mail.Received {
			mails.Add(1)
			subjectsMu.Lock()
			subjects[m.Msg.Header.Get("Subject")]++
			subjectsMu.Unlock()
		}
	}()
	mailed := func(subject string) func() bool {
		return func() bool {
			subjectsMu.Lock()
			defer subjectsMu.Unlock()
			return subjects[subject] > 0
		}
	}
	control := loopback.FreeAddr(t)
	dir, runs := t.TempDir(), t.TempDir()
	files := map[string]string{
		"dmonitor.yaml": fmt.Sprintf(`observer: e2e
interval: 2s
control: {listen: %q}
tsdb: {backend: opentsdb, url: "http://%s"}
smtp: {addr: %q, from: dmonitor@example.org, tls: none}
receivers: {default: {group_wait: 0s}} # one mail per page, as counted below
checks:
  flip:
    command: [plugins/check_flip, %q, "{{host}}"]
`, control, otsdb.addr, mail.Addr, runs),
		"plugins/check_flip":         flipPlugin,
		"alert.d/oncall@example.org": "",
	}
	names := make([]string, hosts)
	for i := range names {
		names[i] = fmt.Sprintf("h%03d", i)
		files["hosts.d/"+names[i]+"/flip"] = ""
	}
	writeTree(t, dir, files)
	ran := func() map[string]int {
		out := make(map[string]int, hosts)
		for _, h := range names {
			b, _ := os.ReadFile(filepath.Join(runs, h))
			out[h], _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
		return out
	}
	everyRan := func(than map[string]int, more int) func() bool {
		return func() bool {
			now := ran()
			for _, h := range names {
				if now[h] < than[h]+more {
					return false
				}
			}
			return true
		}
	}

	d := startDaemon(t, dir, control)
	await.Until(t, "every check run twice", everyRan(nil, 2))
	otsdb.stop()
	unhang := hangTSDB(t, otsdb.addr)

	// Checks keep their pace and pages keep going out while OpenTSDB hangs.
	before, pages := ran(), mails.Load()
	await.Until(t, "every check run 4 more times with OpenTSDB hung", everyRan(before, 4))
	await.Until(t, "50 more pages with OpenTSDB hung", func() bool { return mails.Load() >= pages+50 })
	await.Until(t, "the page that OpenTSDB does not take the points", mailed("[FIRING] tsdb-unhealthy on e2e (dmonitor.tsdb)"))

	// SIGTERM ends it: plugin grace and the flush deadline, then what is
	// left waits in the spool.
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.done:
		if err := d.wait(); err != nil {
			t.Fatalf("dmonitor run after SIGTERM: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("dmonitor run still running a minute after SIGTERM")
	}

	// OpenTSDB answers again; the next run delivers the spool.
	unhang()
	startOpenTSDB(t, otsdb.addr, store)
	d2 := startDaemon(t, dir, control)
	await.Until(t, "the spool to drain", func() bool {
		return d2.metric(t, "dmonitor_spool_points") == 0 && d2.metric(t, "dmonitor_spool_annotations") == 0 &&
			d2.metric(t, "dmonitor_spool_replayed_total") > 0
	})
	await.Until(t, "the recovery of OpenTSDB paged", mailed("[RESOLVED] tsdb-unhealthy on e2e (dmonitor.tsdb)"))
	d2.stop(t)
	subjectsMu.Lock()
	for _, status := range []string{"FIRING", "RESOLVED"} {
		if n := subjects["["+status+"] tsdb-unhealthy on e2e (dmonitor.tsdb)"]; n != 1 {
			t.Errorf("%d %s mails of tsdb-unhealthy, want 1", n, status)
		}
	}
	subjectsMu.Unlock()
	final := ran()
	for _, h := range names {
		if got := countSamples(t, store, "dmonitor.check.status", h); got != final[h] {
			t.Errorf("%s: the plugin ran %d times, OpenTSDB holds %d results", h, final[h], got)
		}
	}
	transitions := strings.Count(d.logText(), `msg="alert state changed"`) + strings.Count(d2.logText(), `msg="alert state changed"`)
	notes, err := store.Annotations(context.Background(), "", time.Now().Add(-time.Hour), time.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	stored := 0
	for _, a := range notes {
		n := 1
		if v, ok := a.Custom[observer.TransitionsKey]; ok {
			n, _ = strconv.Atoi(v)
		}
		stored += n
	}
	if stored != transitions {
		t.Errorf("%d alert transitions logged, OpenTSDB's annotations hold %d (%d annotations)", transitions, stored, len(notes))
	}
}
