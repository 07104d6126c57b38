package observer

import (
	"fmt"
	"reflect"
	"runtime"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/rules"
)

// The table gives back every field of the results it was given, the newest
// of each observer sorted by observer, and their earlier statuses newest
// first, at most rules.MaxHistory of them; a result no newer than the one
// kept changes nothing.
func TestLiveKeepsResults(t *testing.T) {
	l := newLive()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	min := 0.0
	res := func(obs string, st check.Status, sec int) check.Result {
		return check.Result{Host: "web1", Check: "http", Observer: obs, Domain: "dc-" + obs,
			Status: st, Raw: st.String(), ExitCode: int(st), Output: fmt.Sprint(obs, " run ", sec),
			Perf:  []check.Perf{{Label: "time", Value: float64(sec), Text: fmt.Sprint(sec), UOM: "s", Min: &min}},
			Start: t0.Add(time.Duration(sec) * time.Second), Duration: time.Duration(sec) * time.Millisecond}
	}
	statuses := []check.Status{check.OK, check.Critical, 7, check.Warning}
	var want []check.Status // b's earlier statuses, newest first
	for i := range 20 {
		st := statuses[i%len(statuses)]
		if isNew, _, _ := l.put(res("b", st, i)); !isNew {
			t.Fatalf("run %d of b: not new", i)
		}
		if i < 19 {
			if st == 7 {
				st = check.Unknown // outside 0..3: UNKNOWN, as the plugin API reads it
			}
			want = append([]check.Status{st}, want...)
		}
	}
	want = want[:rules.MaxHistory]
	a := res("a", check.Critical, 3)
	a.Raw = check.RawFail
	l.put(a)
	if isNew, _, _ := l.put(res("a", check.OK, 2)); isNew {
		t.Error("an older result of a was taken as new")
	}
	rs, hs := l.appendLatest(nil, nil, instanceKey{"web1", "http"})
	if len(rs) != 2 {
		t.Fatalf("%d results, want a's and b's", len(rs))
	}
	if n := l.count(instanceKey{"web1", "http"}); n != 2 {
		t.Errorf("count = %d, want 2", n)
	}
	if !reflect.DeepEqual(rs[0], a) {
		t.Errorf("a's result\n got %+v\nwant %+v", rs[0], a)
	}
	if b := res("b", statuses[19%len(statuses)], 19); !reflect.DeepEqual(rs[1], b) {
		t.Errorf("b's result\n got %+v\nwant %+v", rs[1], b)
	}
	if hs[0] != nil {
		t.Errorf("a's history = %v, want none", hs[0])
	}
	if !reflect.DeepEqual(hs[1], want) {
		t.Errorf("b's history\n got %v\nwant %v", hs[1], want)
	}
}

// The leader passes the same buffers for every target of a pass: each call
// gives that target's results and histories alone, whatever the buffers
// held, and once they are large enough a call allocates nothing.
func TestLatestReusesBuffers(t *testing.T) {
	l := newLive()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	put := func(host, obs string, sts ...check.Status) {
		for i, st := range sts {
			l.put(check.Result{Host: host, Check: "http", Observer: obs, Status: st, Start: t0.Add(time.Duration(i) * time.Second)})
		}
	}
	put("web1", "a", check.OK, check.Critical, check.Critical)
	put("web1", "b", check.Warning, check.OK)
	put("web2", "a", check.Unknown, check.OK)
	k1, k2 := instanceKey{"web1", "http"}, instanceKey{"web2", "http"}

	rs, hs := l.appendLatest(nil, nil, k1)
	if len(rs) != 2 || !reflect.DeepEqual(hs, [][]check.Status{{check.Critical, check.OK}, {check.Warning}}) {
		t.Fatalf("web1: %d results, histories %v", len(rs), hs)
	}
	rs, hs = l.appendLatest(rs[:0], hs[:0], k2)
	wantRs, wantHs := l.appendLatest(nil, nil, k2)
	if !reflect.DeepEqual(rs, wantRs) || !reflect.DeepEqual(hs, wantHs) {
		t.Errorf("web2 into web1's buffers: %v %v, want %v %v", rs, hs, wantRs, wantHs)
	}
	if !reflect.DeepEqual(hs, [][]check.Status{{check.Unknown}}) {
		t.Errorf("web2's history = %v, want [[UNKNOWN]]", hs)
	}
	allocs := testing.AllocsPerRun(100, func() {
		rs, hs = l.appendLatest(rs[:0], hs[:0], k1)
		rs, hs = l.appendLatest(rs[:0], hs[:0], k2)
	})
	if allocs != 0 {
		t.Errorf("%.0f allocations a round with warm buffers, want none", allocs)
	}
}

// A target's latest result costs the table about 200 bytes once its
// history has filled: a check.Result and a slice of statuses took over
// 400 (issue 12).
func TestLiveMemoryPerTarget(t *testing.T) {
	const n = 20000
	hosts := make([]string, n)
	for i := range hosts {
		hosts[i] = fmt.Sprint("host", i)
	}
	t0 := time.Now()
	heap := func() uint64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	l := newLive()
	for run := range rules.MaxHistory + 1 {
		for _, h := range hosts {
			l.put(check.Result{Host: h, Check: "ssh", Observer: "eu-1", Status: check.OK, Raw: "OK",
				Output: "TCP OK", Start: t0.Add(time.Duration(run) * time.Minute)})
		}
	}
	per := float64(heap()-before) / n
	runtime.KeepAlive(l)
	t.Logf("%.0f bytes a target", per)
	if per > 256 {
		t.Errorf("%.0f bytes a target, want at most 256", per)
	}
}
