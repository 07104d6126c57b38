package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/internal/await"
)

// abuseRSSBound is the most memory (peak RSS) the daemon may take under
// the abuse of TestAbuseStaysBounded: docs/OPERATIONS.md states it.
const abuseRSSBound = 256 << 10 // KiB

// growPlugin prints 30 perfdata labels it never printed before on every
// run.
const growPlugin = `#!/bin/sh
t=$(date +%s%N)
perf=""
for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30; do
	perf="$perf run_${t}_$i=1"
done
echo "OK - new labels |$perf"
`

// seriesBody is an /api/put body of n points, each of a series never
// written before.
func seriesBody(round, n int) []byte {
	var b bytes.Buffer
	b.WriteByte('[')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"metric":"abuse.series","timestamp":%d,"value":%d,"tags":{"host":"h%d-%d","kind":"flood"}}`, time.Now().Unix(), i, round, i)
	}
	b.WriteByte(']')
	return b.Bytes()
}

// TestAbuseStaysBounded: the abuse that grew the daemon from 72 MB to
// over 1 GB (a plugin printing a new perfdata label on every run, and five
// unauthenticated 13 MB /api/put requests of 150,000 new series each) now
// leaves its peak RSS under abuseRSSBound, and the limits it hit are in
// its log and its metrics. The daemon is the binary a user runs, not this
// test binary, whose race detector would multiply its memory.
func TestAbuseStaysBounded(t *testing.T) {
	bin := buildDaemon(t)
	control, api := benchControl(t), benchControl(t)
	dir := t.TempDir()
	files := map[string]string{
		"dmonitor.yaml": fmt.Sprintf("observer: abuse\ninterval: 1s\ncontrol: {listen: %q}\ntsdb: {listen: %q}\n"+
			"checks:\n  grow:\n    command: [plugins/check_grow]\n", control, api),
		"plugins/check_grow": growPlugin,
	}
	for i := range 20 {
		files[fmt.Sprintf("hosts.d/h%02d/grow", i)] = ""
	}
	writeTree(t, dir, files)
	d := startBenchDaemon(t, bin, dir, control)
	metric := func(name string) float64 {
		return (&daemon{control: control, base: "http://" + control, client: http.DefaultClient}).metric(t, name)
	}

	put := func(body []byte) (int, string) {
		resp, err := http.Post("http://"+api+"/api/put", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		msg, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(msg)
	}
	for round := range 5 {
		if code, msg := put(seriesBody(round, 150_000)); code != http.StatusBadRequest || !strings.Contains(msg, "limit") {
			t.Fatalf("put of 150,000 new series: %d %s, want 400 naming the limit", code, msg)
		}
	}
	// Within the limits of a request, the minute's allowance of new series
	// (50,000) runs out at the sixth.
	for round := range 6 {
		code, msg := put(seriesBody(10+round, 10_000))
		if round < 5 && code != http.StatusNoContent {
			t.Fatalf("put %d of 10,000 new series: %d %s, want 204", round, code, msg)
		}
		if round == 5 && (code != http.StatusBadRequest || !strings.Contains(msg, "limit")) {
			t.Fatalf("put %d of 10,000 new series: %d %s, want 400 naming the limit per minute", round, code, msg)
		}
	}
	// Past the limit of 100 labels each check stores no more new ones.
	await.Until(t, "the perfdata series limit hit on every check", func() bool {
		return metric(`dmonitor_limit_hits_total{limit="series_per_check"}`) >= 20
	})
	_, hwm := procMemKiB(t, d.cmd.Process.Pid)
	perRequest := metric(`dmonitor_limit_hits_total{limit="new_series_per_request"}`) +
		metric(`dmonitor_limit_hits_total{limit="datapoints_per_request"}`)
	if perRequest != 5 {
		t.Errorf("limit hits per request = %v, want 5", perRequest)
	}
	if got := metric(`dmonitor_limit_hits_total{limit="new_series_per_minute"}`); got != 1 {
		t.Errorf("new_series_per_minute hits = %v, want 1", got)
	}
	if series := metric("dmonitor_tsdb_series"); series > 50_000+20*102+100 {
		t.Errorf("%v series stored, want at most the 50,000 put and 20 checks × (100 labels, status, duration) and a few", series)
	}
	d.stop(t)
	for _, want := range []string{"perfdata series limit reached", "limit 20000 exceeded"} {
		if !strings.Contains(d.log.String(), want) {
			t.Errorf("the log does not say %q", want)
		}
	}
	t.Logf("peak RSS %.0f MiB under the abuse", hwm/1024)
	if hwm > abuseRSSBound {
		t.Errorf("peak RSS %.0f MiB, over the %d MiB bound", hwm/1024, abuseRSSBound>>10)
	}
}
