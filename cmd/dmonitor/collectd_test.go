package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/dmonitor/dmonitor/internal/await"
	"github.com/dmonitor/dmonitor/internal/loopback"
)

const collectdBin = "/usr/sbin/collectd"

// TestCollectdWriteTSDB: Debian's collectd, with its write_tsdb plugin,
// writes to a running daemon's OpenTSDB port in OpenTSDB's line protocol,
// on the port that serves the HTTP API, and its points are found through
// /api/query: the load averages and the memory of this machine, tagged
// with collectd's host name and the node's tag.
func TestCollectdWriteTSDB(t *testing.T) {
	for _, f := range []string{collectdBin, "/usr/lib/collectd/write_tsdb.so"} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("Debian's collectd-core missing (%v): run `make test`, which installs it", err)
		}
	}
	control, tsdbAPI := loopback.FreeAddr(t), loopback.FreeAddr(t)
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"dmonitor.yaml": fmt.Sprintf("observer: solo\ninterval: 1s\ncontrol: {listen: %q}\ntsdb: {listen: %q}\n", control, tsdbAPI),
	})
	d := startDaemon(t, dir, control)

	host, port, err := net.SplitHostPort(tsdbAPI)
	if err != nil {
		t.Fatal(err)
	}
	cdir := t.TempDir()
	conf := filepath.Join(cdir, "collectd.conf")
	writeTree(t, cdir, map[string]string{"collectd.conf": fmt.Sprintf(`Hostname "collectd-test"
FQDNLookup false
Interval 1
BaseDir %q
PIDFile %q
PluginDir "/usr/lib/collectd"
TypesDB "/usr/share/collectd/types.db"
LoadPlugin logfile
<Plugin logfile>
  LogLevel info
  File STDOUT
</Plugin>
LoadPlugin load
LoadPlugin memory
LoadPlugin write_tsdb
<Plugin write_tsdb>
  <Node "dmonitor">
    Host %q
    Port %q
    HostTags "source=collectd"
  </Node>
</Plugin>
`, cdir, filepath.Join(cdir, "collectd.pid"), host, port)})
	var out strings.Builder
	cmd := exec.Command(collectdBin, "-f", "-C", conf)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("collectd output:\n%s", out.String())
		}
	})

	api := "http://" + tsdbAPI
	get := func(path string) (int, []byte) {
		resp, err := http.Get(api + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, b
	}
	// write_tsdb names a metric <plugin>.<type>.<data source> (the load
	// averages: load.load.shortterm) and tags it fqdn=<Hostname> and the
	// node's HostTags.
	type series struct {
		Metric string             `json:"metric"`
		Tags   map[string]string  `json:"tags"`
		DPS    map[string]float64 `json:"dps"`
	}
	find := func(metric string) []series {
		m := "max:" + metric + "{fqdn=collectd-test,source=collectd}"
		code, body := get("/api/query?start=10m-ago&m=" + url.QueryEscape(m))
		if code != 200 {
			t.Fatalf("query %s: %d %s", m, code, body)
		}
		var ss []series
		if err := json.Unmarshal(body, &ss); err != nil {
			t.Fatalf("query %s: %v: %s", m, err, body)
		}
		return ss
	}
	var load []series
	await.Until(t, "collectd's load average through /api/query", func() bool {
		load = find("load.load.shortterm")
		return len(load) == 1 && len(load[0].DPS) > 0
	})
	// A type instance goes between the plugin and the type:
	// memory.used.memory, the bytes in use.
	await.Until(t, "collectd's memory through /api/query", func() bool {
		mem := find("memory.used.memory")
		return len(mem) == 1 && len(mem[0].DPS) > 0
	})
	for _, v := range load[0].DPS {
		if v < 0 {
			t.Errorf("load average %v", v)
		}
	}
	// The same port still serves HTTP to Grafana, and the lookup finds
	// collectd's series with their tsuids.
	code, body := get("/api/search/lookup?m=" + url.QueryEscape("load.load.shortterm{fqdn=*}"))
	if code != 200 || !strings.Contains(string(body), `"fqdn":"collectd-test"`) || !strings.Contains(string(body), `"tsuid":"`) {
		t.Errorf("lookup: %d %s", code, body)
	}
	stop()
	if log := d.logText(); strings.Contains(log, "line protocol: unknown command") || strings.Contains(log, "level=ERROR") {
		t.Errorf("the daemon logged a refusal or an error:\n%s", log)
	}
	d.stop(t)
}
