package httpapi

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dmonitor/dmonitor/internal/fakeclock"
	"github.com/dmonitor/dmonitor/tsdb"
	"github.com/dmonitor/dmonitor/tsdb/embedded"
)

// openStore opens a real embedded store in a temporary directory until
// the test ends.
func openStore(t testing.TB) *embedded.Store {
	t.Helper()
	st, err := embedded.Open(t.TempDir(), embedded.Options{OutOfOrderWindow: 365 * 24 * time.Hour})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return st
}

// serve serves the API over store on 127.0.0.1 until the test ends,
// through wrap unless it is nil. st is the embedded store under store.
func serve(t testing.TB, st *embedded.Store, store tsdb.Store, opts Options, wrap func(http.Handler) http.Handler) *server {
	t.Helper()
	if opts.Now == nil {
		opts.Now = func() time.Time { return now }
	}
	var h http.Handler = NewHandler(store, opts)
	if wrap != nil {
		h = wrap(h)
	}
	ts := httptest.NewServer(h) // listens on 127.0.0.1
	t.Cleanup(ts.Close)
	return &server{url: ts.URL, store: st}
}

// capStore is a store over the embedded one that holds at most maxSeries
// series and says nothing of which series it holds (it has no CountNew,
// whether or not the embedded store has). Past the limit it refuses a
// batch the way a store does: whole, with an error wrapping tsdb.ErrLimit,
// or, with partial, by storing the points of the series it holds and
// returning a partialError listing the others, as embedded.LimitError
// does. It counts its Append calls.
type capStore struct {
	st        *embedded.Store
	maxSeries int // 0: no limit
	partial   bool

	mu      sync.Mutex
	held    map[string]bool
	appends int
}

func newCapStore(t testing.TB, maxSeries int) *capStore {
	return &capStore{st: openStore(t), maxSeries: maxSeries, held: map[string]bool{}}
}

func seriesKeyOf(p *tsdb.Point) string {
	key, _ := appendSeriesKey(nil, nil, p)
	return string(key)
}

// unstoredError is a partialError.
type unstoredError struct {
	points []tsdb.Point
}

func (e *unstoredError) Error() string {
	return fmt.Sprintf("test store: series limit reached, %d points refused", len(e.points))
}
func (e *unstoredError) Unwrap() error          { return tsdb.ErrLimit }
func (e *unstoredError) Unstored() []tsdb.Point { return e.points }

func (s *capStore) Append(ctx context.Context, points []tsdb.Point) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.appends++
	fresh := map[string]bool{}
	for i := range points {
		if k := seriesKeyOf(&points[i]); !s.held[k] {
			fresh[k] = true
		}
	}
	if s.maxSeries > 0 && len(s.held)+len(fresh) > s.maxSeries {
		if !s.partial {
			return fmt.Errorf("test store: series limit %d exceeded: %d new series: %w", s.maxSeries, len(fresh), tsdb.ErrLimit)
		}
		var held []tsdb.Point
		uerr := &unstoredError{}
		for _, p := range points {
			if s.held[seriesKeyOf(&p)] {
				held = append(held, p)
			} else {
				uerr.points = append(uerr.points, p)
			}
		}
		if err := s.st.Append(ctx, held); err != nil {
			return err
		}
		return uerr
	}
	if err := s.st.Append(ctx, points); err != nil {
		return err
	}
	for k := range fresh {
		s.held[k] = true
	}
	return nil
}

func (s *capStore) Query(ctx context.Context, q tsdb.Query) ([]tsdb.Series, error) {
	return s.st.Query(ctx, q)
}

func (s *capStore) Last(ctx context.Context, metric string, filters []tsdb.Filter) ([]tsdb.Series, error) {
	return s.st.Last(ctx, metric, filters)
}

func (s *capStore) Close() error { return nil } // openStore closes st

func (s *capStore) calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.appends
}

// countingStore is a capStore with CountNew, the embedded store's method:
// the distinct series of points it does not hold.
type countingStore struct{ *capStore }

var _ seriesCounter = countingStore{}

func (s countingStore) CountNew(points []tsdb.Point) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	fresh := map[string]bool{}
	for i := range points {
		if k := seriesKeyOf(&points[i]); !s.held[k] {
			fresh[k] = true
		}
	}
	return len(fresh)
}

// hostsBody is a put body of one point at t0+at of metric per host
// h<from> .. h<from+n-1>: n series.
func hostsBody(metric string, from, n int, at int) string {
	var b strings.Builder
	b.WriteByte('[')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"metric":%q,"timestamp":%d,"value":1,"tags":{"host":"h%d"}}`, metric, t0+at, from+i)
	}
	b.WriteByte(']')
	return b.String()
}

// seriesOf is how many series of metric the store holds.
func seriesOf(t *testing.T, st *embedded.Store, metric string) int {
	t.Helper()
	got, err := st.Last(context.Background(), metric, nil)
	if err != nil {
		t.Fatal(err)
	}
	return len(got)
}

// logBuffer is a log destination the server's goroutines write to while
// the test reads it.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Split(strings.TrimSpace(l.buf.String()), "\n")
}

func (l *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// hits is the value of dmonitor_limit_hits_total{limit=limit} in reg.
func hits(t *testing.T, reg *prometheus.Registry, limit string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != LimitHitsName {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "limit" && lp.GetValue() == limit {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("%s{limit=%q} is not registered", LimitHitsName, limit)
	return 0
}

// A body with more data points than the limit is refused whole with the
// limit in the message, counted and logged with the caller's address; one
// at the limit is stored.
func TestPutDatapointsLimit(t *testing.T) {
	reg := prometheus.NewRegistry()
	var logs logBuffer
	st := openStore(t)
	s := serve(t, st, st, Options{MaxDatapointsPerRequest: 3, Registerer: reg, Logger: logs.logger()}, nil)

	s.put(t, hostsBody("at.limit", 0, 3, 0))
	if n := seriesOf(t, st, "at.limit"); n != 3 {
		t.Errorf("%d series stored at the limit, want 3", n)
	}
	body := hostsBody("past.limit", 0, 4, 0)
	checkError(t, "past the limit", s.post(t, "/api/put?details", body), 400,
		fmt.Sprintf("datapoints per request limit 3 exceeded: more in a body of %d bytes", len(body)))
	if n := seriesOf(t, st, "past.limit"); n != 0 {
		t.Errorf("%d series stored from a refused body, want 0", n)
	}
	if got := hits(t, reg, limitDatapoints); got != 1 {
		t.Errorf("datapoints hits = %v, want 1", got)
	}
	if l := logs.lines(); len(l) != 1 || !strings.Contains(l[0], "level=WARN") ||
		!strings.Contains(l[0], "limit=datapoints_per_request") || !strings.Contains(l[0], "remote=127.0.0.1:") {
		t.Errorf("log:\n%s\nwant one warning naming the limit and the remote address", strings.Join(l, "\n"))
	}
}

// The new series of a request are those the store does not hold, when the
// store can say; otherwise every distinct series of the request counts.
func TestPutNewSeriesPerRequest(t *testing.T) {
	t.Run("store counts", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		cs := countingStore{newCapStore(t, 0)}
		s := serve(t, cs.st, cs, Options{MaxNewSeriesPerRequest: 2, Registerer: reg}, nil)
		s.put(t, hostsBody("m", 0, 2, 0)) // h0 h1: 2 new
		s.put(t, hostsBody("m", 0, 3, 1)) // h0 h1 h2: 1 new, 3 distinct
		// h1 h2 are held, h3 h4 h5 new: the first new one is named.
		checkError(t, "past the limit", s.post(t, "/api/put", hostsBody("m", 1, 5, 2)), 400,
			"new series limit per request 2 exceeded: 3 new series, first m{host=h3}")
		if n := seriesOf(t, cs.st, "m"); n != 3 {
			t.Errorf("%d series stored, want 3 (h0-h2)", n)
		}
		if got := hits(t, reg, limitNewSeriesPerRequest); got != 1 {
			t.Errorf("new series hits = %v, want 1", got)
		}
	})
	t.Run("request counts", func(t *testing.T) {
		cs := newCapStore(t, 0)
		s := serve(t, cs.st, cs, Options{MaxNewSeriesPerRequest: 2}, nil)
		s.put(t, hostsBody("m", 0, 2, 0))
		// Held or not, three distinct series are three.
		checkError(t, "past the limit", s.post(t, "/api/put", hostsBody("m", 0, 3, 1)), 400,
			"new series limit per request 2 exceeded: 3 new series, first m{host=h0}")
		// Two points of one series and one of another: two.
		s.put(t, fmt.Sprintf(`[{"metric":"m","timestamp":%[1]d,"value":1,"tags":{"host":"a"}},
			{"metric":"m","timestamp":%[2]d,"value":1,"tags":{"host":"a"}},
			{"metric":"m","timestamp":%[1]d,"value":1,"tags":{"host":"b"}}]`, t0, t0+1))
	})
}

// The per-minute limit is a bucket of a minute's new series, refilled
// continuously: a request it cannot cover is refused and takes nothing,
// points of held series take nothing, and a store that cannot count new
// series is not limited.
func TestPutNewSeriesPerMinute(t *testing.T) {
	reg := prometheus.NewRegistry()
	clock := fakeclock.New(now)
	cs := countingStore{newCapStore(t, 0)}
	s := serve(t, cs.st, cs, Options{MaxNewSeriesPerMinute: 6, Registerer: reg, Now: clock.Now}, nil)

	s.put(t, hostsBody("m", 0, 4, 0)) // h0-h3: 2 left
	checkError(t, "3 of 2", s.post(t, "/api/put", hostsBody("m", 4, 3, 0)), 400,
		"new series limit per minute 6 exceeded: 3 new series, 2 allowed now, first m{host=h4}")
	s.put(t, hostsBody("m", 0, 6, 1)) // h0-h3 held, h4 h5 new: 0 left
	s.put(t, hostsBody("m", 0, 6, 2)) // all held
	checkError(t, "empty", s.post(t, "/api/put", hostsBody("m", 6, 1, 0)), 400,
		"new series limit per minute 6 exceeded: 1 new series, 0 allowed now, first m{host=h6}")
	clock.Advance(10 * time.Second) // a tenth of a series a second
	s.put(t, hostsBody("m", 6, 1, 0))
	clock.Advance(time.Hour) // the bucket holds a minute's worth, no more
	checkError(t, "past the bucket", s.post(t, "/api/put", hostsBody("m", 7, 7, 0)), 400,
		"new series limit per minute 6 exceeded: 7 new series, 6 allowed now, first m{host=h7}")
	if n := seriesOf(t, cs.st, "m"); n != 7 {
		t.Errorf("%d series stored, want 7 (h0-h6)", n)
	}
	if got := hits(t, reg, limitNewSeriesPerMinute); got != 3 {
		t.Errorf("per-minute hits = %v, want 3", got)
	}

	plainStore := newCapStore(t, 0)
	plain := serve(t, plainStore.st, plainStore, Options{MaxNewSeriesPerMinute: 1}, nil)
	plain.put(t, hostsBody("m", 0, 3, 0))
	plain.put(t, hostsBody("m", 3, 3, 0))
}

// A point past the name length or tags limit is refused on its own, with
// OpenTSDB's partial-failure answers, and the others are stored.
func TestPutPointLimits(t *testing.T) {
	reg := prometheus.NewRegistry()
	st := openStore(t)
	s := serve(t, st, st, Options{MaxNameBytes: 8, MaxTagsPerPoint: 2, Registerer: reg}, nil)
	pt := func(metric, tags string) string {
		return fmt.Sprintf(`{"metric":%q,"timestamp":%d,"value":1,"tags":{%s}}`, metric, t0, tags)
	}
	good := pt("m", `"host":"a","dc":"b"`)
	bad := []string{
		pt("abcdefghi", `"host":"a"`),
		pt("m", `"kkkkkkkkk":"a"`),
		pt("m", `"host":"vvvvvvvvv"`),
		pt("m", `"a":"1","b":"2","c":"3"`),
	}
	body := "[" + good + "," + strings.Join(bad, ",") + "]"
	checkJSON(t, "details", s.post(t, "/api/put?details", body), 400, `{"errors":[
		{"datapoint":`+bad[0]+`,"error":"name length limit 8 bytes exceeded: metric of 9 bytes, abcdefghi"},
		{"datapoint":`+bad[1]+`,"error":"name length limit 8 bytes exceeded: tag key of 9 bytes, kkkkkkkkk in m"},
		{"datapoint":`+bad[2]+`,"error":"name length limit 8 bytes exceeded: tag host value of 9 bytes, vvvvvvvvv in m"},
		{"datapoint":`+bad[3]+`,"error":"tags per point limit 2 exceeded: 3 tags on m{a=1,b=2,c=3}"}],
		"failed":4,"success":1}`)
	if n := seriesOf(t, st, "m"); n != 1 {
		t.Errorf("%d series stored, want the good one", n)
	}
	if got := hits(t, reg, limitNameBytes); got != 3 {
		t.Errorf("name hits = %v, want 3", got)
	}
	if got := hits(t, reg, limitTagsPerPoint); got != 1 {
		t.Errorf("tags hits = %v, want 1", got)
	}
	checkJSON(t, "summary", s.post(t, "/api/put?summary", body), 400, `{"failed":4,"success":1}`)
	// Without details the answer still names the first offender.
	r := s.post(t, "/api/put", body)
	checkError(t, "plain", r, 400, "One or more data points had errors")
	if want := "4 of 5 data points refused, the first: name length limit 8 bytes exceeded: metric of 9 bytes"; !strings.Contains(string(r.body), want) {
		t.Errorf("plain: %s\nwant details with %q", r.body, want)
	}
}

// Zero means the defaults, negative turns a limit off.
func TestPointLimitDefaults(t *testing.T) {
	tags := func(n int) map[string]string {
		m := map[string]string{}
		for i := range n {
			m[fmt.Sprintf("t%d", i)] = "v"
		}
		return m
	}
	long := strings.Repeat("x", 300)
	def := newLimits(Options{}, true)
	off := newLimits(Options{MaxNameBytes: -1, MaxTagsPerPoint: -1, MaxDatapointsPerRequest: -1, MaxNewSeriesPerRequest: -1, MaxNewSeriesPerMinute: -1}, true)
	for _, tc := range []struct {
		name    string
		l       *limits
		metric  string
		tags    map[string]string
		limited string // the limit refusing it, or ""
	}{
		{"8 tags by default", &def, "m", tags(8), ""},
		{"9 tags by default", &def, "m", tags(9), limitTagsPerPoint},
		{"9 tags, off", &off, "m", tags(9), ""},
		{"256 bytes by default", &def, long[:256], tags(1), ""},
		{"257 bytes by default", &def, long[:257], tags(1), limitNameBytes},
		{"tag value of 257 bytes by default", &def, "m", map[string]string{"k": long[:257]}, limitNameBytes},
		{"300 bytes, off", &off, long, map[string]string{long: long}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reason, limit := tc.l.checkPointLimits(tc.metric, tc.tags)
			if limit != tc.limited {
				t.Errorf("limit %q (%s), want %q", limit, reason, tc.limited)
			}
			if len(reason) > 200 {
				t.Errorf("reason of %d bytes quotes too much: %s", len(reason), reason)
			}
		})
	}
	if def.maxPoints != DefaultMaxDatapointsPerRequest || def.maxNewPerReq != DefaultMaxNewSeriesPerRequest ||
		def.maxNewPerMin != DefaultMaxNewSeriesPerMinute || def.maxBody != DefaultMaxBodyBytes || def.newSeries == nil {
		t.Errorf("defaults: %+v", def)
	}
	if off.maxPoints != 0 || off.maxNewPerReq != 0 || off.newSeries != nil {
		t.Errorf("off: %+v", off)
	}
	if noCount := newLimits(Options{}, false); noCount.newSeries != nil {
		t.Error("per-minute bucket over a store that cannot count new series")
	}
}

// A store's own limit refusal stores the points of the series it holds
// and refuses the new ones with its message, in OpenTSDB's partial-failure
// forms; over a store that cannot say which series are new, the batch is
// refused whole.
func TestPutStoreLimit(t *testing.T) {
	cs := countingStore{newCapStore(t, 2)}
	s := serve(t, cs.st, cs, Options{}, nil)
	s.put(t, hostsBody("m", 0, 2, 0)) // h0 h1: the store is full
	pt := func(host string, at int) string {
		return fmt.Sprintf(`{"metric":"m","timestamp":%d,"value":1,"tags":{"host":%q}}`, t0+at, host)
	}
	body := "[" + strings.Join([]string{pt("h0", 1), pt("new1", 1), pt("h1", 1), pt("new2", 1)}, ",") + "]"
	calls := cs.calls()
	checkJSON(t, "details", s.post(t, "/api/put?details", body), 400, `{"errors":[
		{"datapoint":`+pt("new1", 1)+`,"error":"test store: series limit 2 exceeded: 2 new series: invalid request: limit exceeded"},
		{"datapoint":`+pt("new2", 1)+`,"error":"test store: series limit 2 exceeded: 2 new series: invalid request: limit exceeded"}],
		"failed":2,"success":2}`)
	if got := cs.calls() - calls; got != 2 {
		t.Errorf("%d Append calls, want 2: the batch, then its held series", got)
	}
	checkJSON(t, "h0 and h1 stored", s.get(t, fmt.Sprintf("/api/query?start=%d&end=%d&m=sum:m", t0, t0+10)), 200,
		fmt.Sprintf(`[{"metric":"m","tags":{},"aggregateTags":["host"],"dps":{"%d":2,"%d":2}}]`, t0, t0+1))

	body = "[" + pt("h0", 2) + "," + pt("new1", 2) + "]"
	checkJSON(t, "summary", s.post(t, "/api/put?summary", body), 400, `{"failed":1,"success":1}`)
	r := s.post(t, "/api/put", "["+pt("h0", 3)+","+pt("new1", 3)+"]")
	checkError(t, "plain", r, 400, "One or more data points had errors")
	if !strings.Contains(string(r.body), "test store: series limit 2 exceeded") {
		t.Errorf("plain: %s\nwant the store's message in details", r.body)
	}

	plainStore := newCapStore(t, 1)
	plain := serve(t, plainStore.st, plainStore, Options{}, nil)
	plain.put(t, hostsBody("m", 0, 1, 0))
	checkJSON(t, "no CountNew", plain.post(t, "/api/put?summary", "["+pt("h0", 1)+","+pt("new", 1)+"]"), 400, `{"failed":2,"success":0}`)

	// A store that stores what it can and lists the rest is taken at its
	// word, in one call.
	partialStore := newCapStore(t, 2)
	partialStore.partial = true
	partial := serve(t, partialStore.st, partialStore, Options{}, nil)
	partial.put(t, hostsBody("m", 0, 2, 0))
	body = "[" + strings.Join([]string{pt("h0", 1), pt("new1", 1), pt("h1", 1), pt("new2", 1)}, ",") + "]"
	calls = partialStore.calls()
	checkJSON(t, "partial store", partial.post(t, "/api/put?details", body), 400, `{"errors":[
		{"datapoint":`+pt("new1", 1)+`,"error":"test store: series limit reached, 2 points refused"},
		{"datapoint":`+pt("new2", 1)+`,"error":"test store: series limit reached, 2 points refused"}],
		"failed":2,"success":2}`)
	if got := partialStore.calls() - calls; got != 1 {
		t.Errorf("%d Append calls, want 1", got)
	}
	checkJSON(t, "partial store: h0 and h1 stored", partial.get(t, fmt.Sprintf("/api/query?start=%d&end=%d&m=sum:m", t0, t0+10)), 200,
		fmt.Sprintf(`[{"metric":"m","tags":{},"aggregateTags":["host"],"dps":{"%d":2,"%d":2}}]`, t0, t0+1))
}

// A batch with one point the store refuses is halved down to that point:
// a few calls, not one per point.
func TestPutStoreRefusalBisects(t *testing.T) {
	cs := newCapStore(t, 0)
	s := serve(t, cs.st, cs, Options{}, nil)
	s.put(t, fmt.Sprintf(`{"metric":"m","timestamp":%d,"value":1,"tags":{"host":"a"}}`, t0))
	const n = 1024
	pts := make([]string, n)
	for i := range pts {
		pts[i] = fmt.Sprintf(`{"metric":"m","timestamp":%d,"value":1,"tags":{"host":"a"}}`, t0+1+i)
	}
	// Older than the store's out-of-order window (a year): refused.
	pts[700] = fmt.Sprintf(`{"metric":"m","timestamp":%d,"value":2,"tags":{"host":"a"}}`, t0-2*365*24*3600)
	calls := cs.calls()
	r := s.post(t, "/api/put?details", "["+strings.Join(pts, ",")+"]")
	if r.code != 400 || !strings.Contains(string(r.body), fmt.Sprintf(`"failed":1,"success":%d`, n-1)) {
		t.Fatalf("put: %d %.300s", r.code, r.body)
	}
	// log2(1024) = 10 halvings, two calls each, and the first.
	if got := cs.calls() - calls; got > 21 {
		t.Errorf("%d Append calls for one bad point of %d, want at most 21", got, n)
	}
	got, err := cs.st.Last(context.Background(), "m", nil)
	if err != nil || len(got) != 1 || got[0].Samples[0].Time.Unix() != t0+n {
		t.Errorf("last sample %+v %v, want the newest of the batch stored", got, err)
	}
}

// Warnings about refusals stop after a burst, and the next one let
// through says how many were dropped.
func TestLimitWarningsRateLimited(t *testing.T) {
	var logs logBuffer
	clock := fakeclock.New(now)
	st := openStore(t)
	s := serve(t, st, st, Options{MaxDatapointsPerRequest: 1, Logger: logs.logger(), Now: clock.Now}, nil)
	const flood = 50
	for range flood {
		if r := s.post(t, "/api/put", hostsBody("m", 0, 2, 0)); r.code != 400 {
			t.Fatalf("put: %d %s", r.code, r.body)
		}
	}
	if l := logs.lines(); len(l) != logBurst {
		t.Fatalf("%d warnings for %d refusals, want %d", len(l), flood, logBurst)
	}
	clock.Advance(logInterval)
	s.post(t, "/api/put", hostsBody("m", 0, 2, 0))
	l := logs.lines()
	if len(l) != logBurst+1 || !strings.Contains(l[logBurst], fmt.Sprintf("dropped_warnings=%d", flood-logBurst)) {
		t.Errorf("after the interval:\n%s\nwant one more warning saying %d were dropped", strings.Join(l, "\n"), flood-logBurst)
	}
}

// Two handlers on one registry share the counter; a different metric of
// the name is a programming error.
func TestLimitHitsRegistration(t *testing.T) {
	reg := prometheus.NewRegistry()
	st := openStore(t)
	a := serve(t, st, st, Options{MaxDatapointsPerRequest: 1, Registerer: reg}, nil)
	b := serve(t, st, st, Options{MaxDatapointsPerRequest: 1, Registerer: reg}, nil)
	a.post(t, "/api/put", hostsBody("m", 0, 2, 0))
	b.post(t, "/api/put", hostsBody("m", 0, 2, 0))
	if got := hits(t, reg, limitDatapoints); got != 2 {
		t.Errorf("hits = %v, want 2 from two handlers", got)
	}

	other := prometheus.NewRegistry()
	other.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: LimitHitsName, Help: "something else"}))
	defer func() {
		if recover() == nil {
			t.Error("no panic registering over a different metric of the name")
		}
	}()
	NewHandler(st, Options{Registerer: other})
}
