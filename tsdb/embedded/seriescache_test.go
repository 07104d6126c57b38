package embedded

import (
	"context"
	"fmt"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"

	"github.com/dmonitor/dmonitor/tsdb"
)

// keyFor is the series key of metric with tags, as Append builds it.
func keyFor(metric string, tg map[string]string) []byte {
	key, _ := appendSeriesKey(nil, nil, &tsdb.Point{Metric: metric, Tags: tg})
	return key
}

// Every series hashing alike (the mask forces it), the cache still tells
// them apart by their labels: the first keeps the hash's place, the others
// are found by their keys, and none is taken for another.
func TestSeriesCacheCollisions(t *testing.T) {
	c := newSeriesCache()
	c.mask = 0
	a := seriesEntry{ref: 1, lset: labels.FromStrings(nameLabel, "m", "host", "a")}
	b := seriesEntry{ref: 2, lset: labels.FromStrings(nameLabel, "m", "host", "b")}
	d := seriesEntry{ref: 3, lset: labels.FromStrings(nameLabel, "m", "host", "d")}
	ka, kb, kd := keyFor("m", tags("host=a")), keyFor("m", tags("host=b")), keyFor("m", tags("host=d"))
	c.set(ka, a)
	c.set(kb, b)
	if e, ok := c.get(kd); ok {
		t.Fatalf("a series never set was found: %v", e.ref)
	}
	c.set(kd, d)
	for _, x := range []struct {
		key  []byte
		want storage.SeriesRef
	}{{ka, 1}, {kb, 2}, {kd, 3}} {
		if e, ok := c.get(x.key); !ok || e.ref != x.want {
			t.Errorf("get(%q) = %v, %v; want ref %v", x.key, e.ref, ok, x.want)
		}
	}
	// A new reference for the series in the hash's place, and for one
	// beside it, replaces only that series' entry.
	c.set(ka, seriesEntry{ref: 10, lset: a.lset})
	c.set(kb, seriesEntry{ref: 20, lset: b.lset})
	if ea, _ := c.get(ka); ea.ref != 10 {
		t.Errorf("a's ref = %v after its update, want 10", ea.ref)
	}
	if eb, _ := c.get(kb); eb.ref != 20 {
		t.Errorf("b's ref = %v after its update, want 20", eb.ref)
	}
	if ed, _ := c.get(kd); ed.ref != 3 {
		t.Errorf("d's ref = %v after the others' updates, want 3", ed.ref)
	}
	if c.len() != 3 {
		t.Errorf("len = %d, want 3", c.len())
	}
	c.clear()
	if _, ok := c.get(kb); ok || c.len() != 0 {
		t.Errorf("b found after clear (len %d)", c.len())
	}
}

// keyOf matches a key to its labels only: the same strings cut elsewhere,
// a tag more or less, another value or metric, do not match.
func TestKeyOf(t *testing.T) {
	lset := labels.FromStrings(nameLabel, "dmonitor.check.perf", "check", "ssh", "host", "web1", "label", "time")
	cases := []struct {
		name   string
		metric string
		tags   map[string]string
		want   bool
	}{
		{"the same series", "dmonitor.check.perf", tags("check=ssh", "host=web1", "label=time"), true},
		{"another metric", "dmonitor.check.status", tags("check=ssh", "host=web1", "label=time"), false},
		{"another value", "dmonitor.check.perf", tags("check=ssh", "host=web2", "label=time"), false},
		{"a tag less", "dmonitor.check.perf", tags("check=ssh", "host=web1"), false},
		{"a tag more", "dmonitor.check.perf", tags("check=ssh", "host=web1", "label=time", "z=1"), false},
		{"strings cut elsewhere", "dmonitor.check.perf", tags("check=ssh", "host=web1", "label=tim", "e="), false},
	}
	for _, c := range cases {
		if got := keyOf(lset, keyFor(c.metric, c.tags)); got != c.want {
			t.Errorf("%s: keyOf = %v, want %v", c.name, got, c.want)
		}
	}
	if keyOf(lset, []byte{0x7f}) {
		t.Error("a truncated key matched")
	}
}

// With every series of the store hashing alike, each point still lands in
// its own series, on first write and through the cache, and CountNew
// counts a series whose hash the cache knows as new.
func TestAppendHashCollisions(t *testing.T) {
	s := openStore(t, "", Options{})
	s.cache.mask = 0
	hosts := []string{"a", "b", "c", "d"}
	for sec := range int64(3) {
		var pts []tsdb.Point
		for i, h := range hosts {
			pts = append(pts, series("m", tags("host="+h), sv{sec * 10, float64(10*i) + float64(sec)})...)
		}
		mustAppend(t, s, pts)
	}
	if n := s.CountNew(series("m", tags("host=e"), sv{100, 1})); n != 1 {
		t.Errorf("CountNew of a new series colliding with known ones = %d, want 1", n)
	}
	if n := s.CountNew(series("m", tags("host=c"), sv{100, 1})); n != 0 {
		t.Errorf("CountNew of a known series colliding with others = %d, want 0", n)
	}
	out := mustQuery(t, s, tsdb.Query{Metric: "m", Start: at(0), End: at(100)})
	if len(out) != len(hosts) {
		t.Fatalf("%d series stored, want %d", len(out), len(hosts))
	}
	for _, o := range out {
		i := -1
		for j, h := range hosts {
			if o.Tags["host"] == h {
				i = j
			}
		}
		if i < 0 {
			t.Fatalf("unexpected series %v", o.Tags)
		}
		v := float64(10 * i)
		checkSVs(t, fmt.Sprint("host ", hosts[i]), o, sv{0, v}, sv{10, v + 1}, sv{20, v + 2})
	}
	if err := s.Append(context.Background(), series("m", tags("host=e"), sv{100, 1})); err != nil {
		t.Fatal(err)
	}
}
