package silence

import (
	"fmt"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// BenchmarkMatch measures what the engine pays per rule instance and
// evaluation: 200 active silences, none matching, so every one is tried.
// The baseline, measured in the same run, compiles each regexp per call,
// which is what precompiling on Set saves; naive/op is its cost over ours.
func BenchmarkMatch(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "silences.json"), Options{Now: func() time.Time { return t0 }})
	if err != nil {
		b.Fatal(err)
	}
	for i := range 200 {
		ms := []Matcher{re("host", fmt.Sprintf("db%d-.*", i)), eq("check", "mysql")}
		if _, err := s.Set(Silence{Matchers: ms, EndsAt: t0.Add(time.Hour), CreatedBy: "bench"}); err != nil {
			b.Fatal(err)
		}
	}
	labels := map[string]string{"host": "www1", "check": "http", "severity": "critical"}
	now := t0.Add(time.Minute)

	naive := func() string {
		for _, sil := range s.List(now) {
			ok := true
			for _, m := range sil.Matchers {
				v := labels[m.Name]
				var hit bool
				if m.IsRegex {
					hit = regexp.MustCompile("^(?:"+m.Value+")$").MatchString(v) == m.IsEqual
				} else {
					hit = (v == m.Value) == m.IsEqual
				}
				ok = ok && hit
			}
			if ok {
				return sil.ID
			}
		}
		return ""
	}
	const baselineRuns = 200
	start := time.Now()
	for range baselineRuns {
		if naive() != "" {
			b.Fatal("baseline matched")
		}
	}
	baseline := time.Since(start) / baselineRuns

	b.ReportAllocs()
	start = time.Now()
	for b.Loop() {
		if s.MatchAlert("www-http", labels, now) != "" {
			b.Fatal("matched")
		}
	}
	ours := time.Since(start) / time.Duration(b.N)
	b.ReportMetric(float64(baseline)/float64(max(ours, 1)), "naive/op")
}
