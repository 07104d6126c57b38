package opentsdb

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/tsdb"
)

func pt(metric string, sec int64, v float64, kv ...string) tsdb.Point {
	tags := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		tags[kv[i]] = kv[i+1]
	}
	return tsdb.Point{Metric: metric, Tags: tags, Time: time.Unix(sec, 0), Value: v}
}

func asPutError(t *testing.T, err error) *PutError {
	t.Helper()
	var pe *PutError
	if !errors.As(err, &pe) {
		t.Fatalf("err = %v (%T); want a *PutError", err, err)
	}
	return pe
}

func TestAppendStoresAllPoints(t *testing.T) {
	f := newFakeTSD(t)
	c := f.client(t, nil)
	pts := []tsdb.Point{
		pt("sys.cpu.nice", 1346846400, 18, "host", "web01", "dc", "lga"),
		pt("sys.cpu.nice", 1346846400, 9.5, "host", "web02", "dc", "lga"),
	}
	pts[1].Time = pts[1].Time.Add(250 * time.Millisecond)
	if err := c.Append(testContext(t), pts); err != nil {
		t.Fatalf("Append: %v", err)
	}
	reqs := f.putRequests()
	if len(reqs) != 1 || reqs[0].query != "details" || reqs[0].encoding != "gzip" {
		t.Fatalf("put requests %+v; want one POST /api/put?details, gzip", reqs)
	}
	// The exact body: millisecond timestamps, numbers, tags.
	assertJSON(t, f.body(t, "/api/put", 0), `[
		{"metric":"sys.cpu.nice","timestamp":1346846400000,"value":18,"tags":{"host":"web01","dc":"lga"}},
		{"metric":"sys.cpu.nice","timestamp":1346846400250,"value":9.5,"tags":{"host":"web02","dc":"lga"}}]`)
	if got := f.storedPoints(); len(got) != 2 {
		t.Errorf("server stored %d points; want 2", len(got))
	}
}

func TestAppendWithoutGzip(t *testing.T) {
	f := newFakeTSD(t)
	c := f.client(t, func(o *Options) { o.DisableGzip = true })
	if err := c.Append(testContext(t), []tsdb.Point{pt("m", 1700000000, 1, "host", "a")}); err != nil {
		t.Fatal(err)
	}
	if reqs := f.putRequests(); len(reqs) != 1 || reqs[0].encoding != "" {
		t.Fatalf("put requests %+v; want one without Content-Encoding", reqs)
	}
	assertJSON(t, f.body(t, "/api/put", 0), `[{"metric":"m","timestamp":1700000000000,"value":1,"tags":{"host":"a"}}]`)
}

func TestAppendSuccessAnswers(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*fakeTSD)
	}{
		// OpenTSDB with ?details and every point good: 200 {"success":n,"failed":0,"errors":[]}.
		{"200 details", func(*fakeTSD) {}},
		// A TSD that ignores the flag answers as without it: 204, no body.
		{"204 no content", func(f *fakeTSD) { f.ignoreFlags = true }},
		// A summary-style body with nothing failed.
		{"200 summary", func(f *fakeTSD) { f.putStatus, f.putBody = 200, []byte(`{"failed":0,"success":3}`) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeTSD(t)
			tc.mod(f)
			c := f.client(t, nil)
			pts := []tsdb.Point{pt("m", 1700000000, 1, "h", "a"), pt("m", 1700000001, 2, "h", "a"), pt("m", 1700000002, 3, "h", "a")}
			if err := c.Append(testContext(t), pts); err != nil {
				t.Fatalf("Append: %v", err)
			}
		})
	}
}

func TestAppendPartialFailureNamesRefusedPoints(t *testing.T) {
	f := newFakeTSD(t)
	var logs logBuffer
	c := f.client(t, func(o *Options) { o.Logger = newLogger(&logs) })
	bad := pt("sys.cpu.nice", 1700000001, 7, "host", "web 01")
	pts := []tsdb.Point{pt("sys.cpu.nice", 1700000000, 5, "host", "web01"), bad, pt("sys.cpu.nice", 1700000002, 6, "host", "web02")}
	err := c.Append(testContext(t), pts)
	pe := asPutError(t, err)
	if !errors.Is(err, tsdb.ErrInvalid) || errors.Is(err, tsdb.ErrUnavailable) {
		t.Errorf("err = %v; want ErrInvalid and not ErrUnavailable", err)
	}
	if pe.Stored != 2 || len(pe.Refused) != 1 || len(pe.Unavailable) != 0 || pe.Unnamed != 0 {
		t.Fatalf("PutError %+v; want 2 stored, 1 refused", pe)
	}
	if r := pe.Refused[0]; r.Point.Tags["host"] != "web 01" || !strings.Contains(r.Reason, "illegal character") {
		t.Errorf("refused %+v; want the web 01 point with OpenTSDB's reason", r)
	}
	if !strings.Contains(err.Error(), "host=web 01") || !strings.Contains(err.Error(), "illegal character") {
		t.Errorf("error %q does not name the point and the reason", err)
	}
	if got := f.storedPoints(); len(got) != 2 {
		t.Errorf("server stored %d points; want the 2 good ones", len(got))
	}
	if reqs := f.putRequests(); len(reqs) != 1 {
		t.Errorf("%d put requests; want 1: a refused point is not retried", len(reqs))
	}
	if l := logs.String(); !strings.Contains(l, "level=WARN") || !strings.Contains(l, "web 01") || !strings.Contains(l, "sys.cpu.nice") {
		t.Errorf("log %q; want a warning naming the refused point", l)
	}
}

func TestAppendParsesDocumentedFailureBodies(t *testing.T) {
	docPoint := pt("sys.cpu.nice", 1365465600, 1, "host", "web01")
	for _, tc := range []struct {
		name        string
		status      int
		body        []byte
		wantRefused int
		wantUnnamed int
		wantReason  string
	}{
		// The documentation's "Example Response With Details": the point is
		// echoed with its timestamp in seconds and named with its reason.
		{"details example", 400, readTestdata(t, "put_details.json"), 1, 0, "Unable to parse value to a number"},
		// The documentation's "Example Response with Summary": one failure,
		// not named.
		{"summary example", 400, readTestdata(t, "put_summary.json"), 0, 1, ""},
		// Content OpenTSDB could not parse: the error body, every point
		// discarded.
		{"error body", 400, []byte(`{"error":{"code":400,"message":"Unable to parse the given JSON","details":"Unexpected end-of-input"}}`), 1, 0, "Unable to parse the given JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeTSD(t)
			f.putStatus, f.putBody = tc.status, tc.body
			c := f.client(t, nil)
			err := c.Append(testContext(t), []tsdb.Point{docPoint})
			pe := asPutError(t, err)
			if !errors.Is(err, tsdb.ErrInvalid) || errors.Is(err, tsdb.ErrUnavailable) {
				t.Errorf("err = %v; want ErrInvalid only", err)
			}
			if len(pe.Refused) != tc.wantRefused || pe.Unnamed != tc.wantUnnamed || pe.Stored != 0 {
				t.Fatalf("PutError %+v; want %d refused, %d unnamed, 0 stored", pe, tc.wantRefused, tc.wantUnnamed)
			}
			if tc.wantReason != "" && !strings.Contains(pe.Refused[0].Reason, tc.wantReason) {
				t.Errorf("reason %q; want %q", pe.Refused[0].Reason, tc.wantReason)
			}
		})
	}
}

func TestAppendRefusesNonFiniteWithoutSending(t *testing.T) {
	f := newFakeTSD(t)
	c := f.client(t, func(o *Options) { o.DisableGzip = true })
	pts := []tsdb.Point{
		pt("m", 1700000000, math.NaN(), "host", "nan"),
		pt("m", 1700000000, 1, "host", "ok"),
		pt("m", 1700000000, math.Inf(1), "host", "inf"),
		pt("m", 1700000000, math.Inf(-1), "host", "neginf"),
	}
	err := c.Append(testContext(t), pts)
	pe := asPutError(t, err)
	if !errors.Is(err, tsdb.ErrInvalid) || pe.Stored != 1 || len(pe.Refused) != 3 {
		t.Fatalf("err %v, PutError %+v; want 1 stored, 3 refused, ErrInvalid", err, pe)
	}
	for _, r := range pe.Refused {
		if r.Point.Tags["host"] == "ok" {
			t.Errorf("the finite point was refused: %+v", r)
		}
	}
	assertJSON(t, f.body(t, "/api/put", 0), `[{"metric":"m","timestamp":1700000000000,"value":1,"tags":{"host":"ok"}}]`)
	if !strings.Contains(err.Error(), "NaN") || !strings.Contains(err.Error(), "host=inf") {
		t.Errorf("error %q does not name the non-finite points", err)
	}
}

func TestAppendOnlyNonFiniteSendsNothing(t *testing.T) {
	f := newFakeTSD(t)
	c := f.client(t, nil)
	err := c.Append(testContext(t), []tsdb.Point{pt("m", 1700000000, math.NaN(), "host", "a")})
	if !errors.Is(err, tsdb.ErrInvalid) {
		t.Fatalf("err = %v; want ErrInvalid", err)
	}
	if reqs := f.putRequests(); len(reqs) != 0 {
		t.Errorf("%d put requests; want none", len(reqs))
	}
}

func TestAppendSplitsIntoBatches(t *testing.T) {
	f := newFakeTSD(t)
	c := f.client(t, nil) // default BatchSize 50
	pts := make([]tsdb.Point, 120)
	for i := range pts {
		pts[i] = pt("m", 1700000000+int64(i), float64(i), "host", "a")
	}
	if err := c.Append(testContext(t), pts); err != nil {
		t.Fatal(err)
	}
	var sizes []int
	for _, r := range f.putRequests() {
		sizes = append(sizes, r.points)
	}
	if fmt.Sprint(sizes) != "[50 50 20]" {
		t.Errorf("batch sizes %v; want [50 50 20]", sizes)
	}
	stored := f.storedPoints()
	if len(stored) != 120 || stored[119].Timestamp.String() != "1700000119000" {
		t.Errorf("server stored %d points, last %+v; want all 120 in order", len(stored), stored[len(stored)-1])
	}
}

func TestAppendRetriesServerErrors(t *testing.T) {
	f := newFakeTSD(t)
	f.failPuts = 2 // two 500s, then OpenTSDB recovers
	c := f.client(t, func(o *Options) { o.MaxRetries = 3 })
	pts := []tsdb.Point{pt("m", 1700000000, 1, "host", "a"), pt("m", 1700000001, 2, "host", "a")}
	if err := c.Append(testContext(t), pts); err != nil {
		t.Fatalf("Append: %v", err)
	}
	if reqs := f.putRequests(); len(reqs) != 3 {
		t.Errorf("%d put requests; want 3 (two failed, one stored)", len(reqs))
	}
	if got := f.storedPoints(); len(got) != 2 {
		t.Errorf("server stored %d points; want 2", len(got))
	}
}

func TestAppendFailureStatuses(t *testing.T) {
	for _, tc := range []struct {
		name     string
		status   int
		want     error
		attempts int // with MaxRetries 2
	}{
		// OpenTSDB's internal error: retried, then unavailable.
		{"500", http.StatusInternalServerError, tsdb.ErrUnavailable, 3},
		// Temporary overload: retried.
		{"503", http.StatusServiceUnavailable, tsdb.ErrUnavailable, 3},
		// Rate limited by a proxy: retried.
		{"429", http.StatusTooManyRequests, tsdb.ErrUnavailable, 3},
		// Storage timeout: retried.
		{"408", http.StatusRequestTimeout, tsdb.ErrUnavailable, 3},
		// A read-only TSD answers 404 to /api/put: not the data's fault,
		// but no use retrying at once.
		{"404 read-only", http.StatusNotFound, tsdb.ErrUnavailable, 1},
		// Too large: the request's fault; refused, not retried.
		{"413", http.StatusRequestEntityTooLarge, tsdb.ErrInvalid, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeTSD(t)
			f.failStatus = tc.status
			c := f.client(t, func(o *Options) { o.MaxRetries = 2 })
			pts := []tsdb.Point{pt("m", 1700000000, 1, "host", "a")}
			err := c.Append(testContext(t), pts)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v; want %v", err, tc.want)
			}
			if n := len(f.putRequests()); n != tc.attempts {
				t.Errorf("%d attempts; want %d", n, tc.attempts)
			}
			if !strings.Contains(err.Error(), f.srv.URL+"/api/put") || !strings.Contains(err.Error(), fmt.Sprint(tc.status)) {
				t.Errorf("error %q does not name the URL and the status", err)
			}
			pe := asPutError(t, err)
			if tc.want == tsdb.ErrUnavailable && len(pe.Unavailable) != 1 || tc.want == tsdb.ErrInvalid && len(pe.Refused) != 1 {
				t.Errorf("PutError %+v; want the point in the %v list", pe, tc.want)
			}
		})
	}
}

func TestAppendPartialAcrossBatches(t *testing.T) {
	f := newFakeTSD(t)
	f.failStatus, f.failAfter = http.StatusInternalServerError, 1 // the first batch passes, then OpenTSDB fails
	c := f.client(t, func(o *Options) { o.BatchSize = 2; o.MaxRetries = 1 })
	pts := make([]tsdb.Point, 5)
	for i := range pts {
		pts[i] = pt("m", 1700000000+int64(i), float64(i), "host", "a")
	}
	err := c.Append(testContext(t), pts)
	pe := asPutError(t, err)
	if !errors.Is(err, tsdb.ErrUnavailable) || errors.Is(err, tsdb.ErrInvalid) {
		t.Errorf("err = %v; want ErrUnavailable only", err)
	}
	if pe.Stored != 2 || len(pe.Unavailable) != 3 {
		t.Fatalf("PutError stored %d, unavailable %d; want 2 and 3", pe.Stored, len(pe.Unavailable))
	}
	for i, p := range pe.Unavailable {
		if p.Value != float64(i+2) {
			t.Errorf("unavailable[%d] = %v; want point %d", i, p.Value, i+2)
		}
	}
	// Batch 1 once, batch 2 twice (one retry); batch 3 never attempted.
	if n := len(f.putRequests()); n != 3 {
		t.Errorf("%d put requests; want 3", n)
	}
	if !strings.Contains(err.Error(), "points 3-4 of 5") {
		t.Errorf("error %q does not say which batch failed", err)
	}
}

func TestAppendConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now: connections are refused
	c, err := New(Options{URL: "http://" + addr, MaxRetries: 2, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	pts := []tsdb.Point{pt("m", 1700000000, 1, "host", "a"), pt("m", 1700000001, 1, "host", "a")}
	err = c.Append(testContext(t), pts)
	pe := asPutError(t, err)
	if !errors.Is(err, tsdb.ErrUnavailable) || len(pe.Unavailable) != 2 || pe.Stored != 0 {
		t.Fatalf("err = %v, PutError %+v; want ErrUnavailable with both points", err, pe)
	}
	if !strings.Contains(err.Error(), "after 3 attempts") || !strings.Contains(err.Error(), addr) {
		t.Errorf("error %q does not say the attempts and the address", err)
	}
}

func TestAppendHonoursContextDeadline(t *testing.T) {
	f := newFakeTSD(t)
	f.hold = make(chan struct{}) // the TSD never answers
	t.Cleanup(func() { close(f.hold) })
	c := f.client(t, nil)
	ctx, cancel := context.WithTimeout(testContext(t), 100*time.Millisecond)
	defer cancel()
	err := c.Append(ctx, []tsdb.Point{pt("m", 1700000000, 1, "host", "a")})
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, tsdb.ErrUnavailable) {
		t.Fatalf("err = %v; want DeadlineExceeded and ErrUnavailable", err)
	}
	if pe := asPutError(t, err); len(pe.Unavailable) != 1 {
		t.Errorf("PutError %+v; want the point unavailable", pe)
	}
}

func TestAppendPerRequestTimeout(t *testing.T) {
	f := newFakeTSD(t)
	f.hold = make(chan struct{})
	t.Cleanup(func() { close(f.hold) })
	c := f.client(t, func(o *Options) { o.Timeout = 20 * time.Millisecond; o.MaxRetries = 1 })
	err := c.Append(testContext(t), []tsdb.Point{pt("m", 1700000000, 1, "host", "a")})
	if !errors.Is(err, tsdb.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v; want ErrUnavailable from the attempt's deadline", err)
	}
	if n := len(f.requestLog()); n != 2 {
		t.Errorf("%d requests; want 2 (the attempt and one retry)", n)
	}
}

func TestNewRefusesBadURL(t *testing.T) {
	for _, u := range []string{"", "opentsdb:4242", "ftp://host", "http://"} {
		if _, err := New(Options{URL: u}); err == nil {
			t.Errorf("New(%q) succeeded", u)
		}
	}
}
