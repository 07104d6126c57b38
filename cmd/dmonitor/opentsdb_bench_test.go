package main

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/internal/await"
	"github.com/dmonitor/dmonitor/internal/loopback"
	"github.com/dmonitor/dmonitor/internal/smtptest"
	"github.com/dmonitor/dmonitor/tsdb/embedded"
)

// BenchmarkPageWithTSDBHung measures outage-to-page on one node whose
// OpenTSDB answers, and on one whose OpenTSDB hangs (accepts connections,
// never answers), in the same run: a hung TSDB must not delay pages.
// A 2 s interval, ten outages at random phases each; compare the two
// p50s (their ratio is the cost of the hang) and the maxima against two
// intervals.
func BenchmarkPageWithTSDBHung(b *testing.B) {
	requirePlugins(b)
	const (
		interval = 2 * time.Second
		trials   = 10
	)
	var p50 = map[string]time.Duration{}
	for _, hung := range []bool{false, true} {
		name := map[bool]string{false: "answering", true: "hung"}[hung]
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				addr := loopback.FreeAddr(b)
				if hung {
					hangTSDB(b, addr)
				} else {
					store, err := embedded.Open(b.TempDir(), embedded.Options{})
					if err != nil {
						b.Fatal(err)
					}
					b.Cleanup(func() { store.Close() })
					startOpenTSDB(b, addr, store)
				}
				mail := smtptest.Start(b, "127.0.0.1:0")
				svc := startService(b, "127.0.0.1:0")
				control := loopback.FreeAddr(b)
				dir := b.TempDir()
				writeTree(b, dir, map[string]string{
					"dmonitor.yaml": fmt.Sprintf(`observer: bench
interval: %s
control: {listen: %q}
tsdb: {backend: opentsdb, url: "http://%s"}
smtp: {addr: %q, from: dmonitor@example.org, tls: none}
checks:
  svc:
    command: [check_tcp, -H, "{{host}}", -p, %q]
`, interval, control, addr, mail.Addr, svc.port()),
					"hosts.d/127.0.0.1/svc":      "",
					"alert.d/oncall@example.org": "",
				})
				d := startDaemon(b, dir, control)
				await.Until(b, "the service seen up", func() bool { return d.state(b, "127.0.0.1", "svc") == "ok" })
				rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
				var detect []time.Duration
				next := func(status string) {
					for {
						m := mail.Next(b)
						if s := m.Msg.Header.Get("Subject"); strings.HasPrefix(s, "["+status+"] default") {
							return
						}
					}
				}
				for range trials {
					time.Sleep(time.Duration(rng.Int64N(int64(interval))))
					stopped := time.Now()
					svc.l.Close()
					next("FIRING")
					detect = append(detect, time.Since(stopped))
					svc = startService(b, svc.addr)
					next("RESOLVED")
				}
				d.stop(b)
				slices.Sort(detect)
				p50[name] = detect[len(detect)/2]
				b.ReportMetric(detect[len(detect)/2].Seconds(), "page-p50-s")
				b.ReportMetric(detect[len(detect)-1].Seconds(), "page-max-s")
				b.ReportMetric(detect[len(detect)-1].Seconds()/interval.Seconds(), "max-intervals")
			}
		})
	}
	if p50["answering"] > 0 {
		b.Logf("hung/answering p50 ratio %.2f", p50["hung"].Seconds()/p50["answering"].Seconds())
	}
}
