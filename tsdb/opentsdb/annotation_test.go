package opentsdb

import (
	"errors"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/tsdb"
)

func TestAnnotationRoundTrip(t *testing.T) {
	f := newFakeTSD(t)
	c := f.client(t, nil)
	ctx := testContext(t)
	start := time.Unix(1369141261, 0)
	local := tsdb.Annotation{
		Start: start, TSUID: "000001000001000001", Description: "Testing Annotations",
		Notes:  "These would be details about the event, the description is just a summary",
		Custom: map[string]string{"owner": "jdoe", "dept": "ops"},
	}
	global := tsdb.Annotation{Start: start.Add(2 * time.Second), End: start.Add(100 * time.Second), Description: "Notice", Notes: "DAL was down"}
	early := tsdb.Annotation{Start: start.Add(-time.Hour), Description: "before the range"}
	for _, a := range []tsdb.Annotation{local, global, early} {
		if err := c.PutAnnotation(ctx, a); err != nil {
			t.Fatalf("PutAnnotation %s: %v", a.Description, err)
		}
	}
	// The documented POST example's fields, times in seconds, sent with PUT
	// (create or replace).
	assertJSON(t, f.body(t, "/api/annotation", 0), `{"startTime":1369141261,"endTime":0,"tsuid":"000001000001000001",
		"description":"Testing Annotations","notes":"These would be details about the event, the description is just a summary",
		"custom":{"owner":"jdoe","dept":"ops"}}`)
	if log := f.requestLog(); !strings.HasPrefix(log[0], "PUT /api/annotation") {
		t.Errorf("first request %q; want PUT /api/annotation", log[0])
	}

	got, err := c.Annotations(ctx, local.TSUID, start.Add(-time.Minute), start.Add(time.Minute))
	if err != nil {
		t.Fatalf("Annotations(series): %v", err)
	}
	if len(got) != 1 || !sameAnnotation(got[0], local) {
		t.Errorf("series annotations %+v; want [%+v]", got, local)
	}
	if b := string(f.body(t, "/api/query", 0)); !strings.Contains(b, `"tsuids":["000001000001000001"]`) {
		t.Errorf("series annotation query %s; want a TSUID sub-query", b)
	}

	got, err = c.Annotations(ctx, "", start.Add(-time.Minute), start.Add(time.Minute))
	if err != nil {
		t.Fatalf("Annotations(global): %v", err)
	}
	if len(got) != 1 || !sameAnnotation(got[0], global) {
		t.Errorf("global annotations %+v; want [%+v] (not the one an hour before)", got, global)
	}
	if b := string(f.body(t, "/api/query", 1)); !strings.Contains(b, `"globalAnnotations":true`) || !strings.Contains(b, `"metric":"dmonitor.observer.up"`) {
		t.Errorf("global annotation query %s; want globalAnnotations on the carrier metric", b)
	}

	if err := c.DeleteAnnotation(ctx, local.TSUID, local.Start); err != nil {
		t.Fatalf("DeleteAnnotation: %v", err)
	}
	if _, err := c.Annotation(ctx, local.TSUID, local.Start); !errors.Is(err, tsdb.ErrNotFound) {
		t.Errorf("Annotation after delete: err = %v; want ErrNotFound", err)
	}
	if err := c.DeleteAnnotation(ctx, local.TSUID, local.Start); !errors.Is(err, tsdb.ErrNotFound) {
		t.Errorf("second DeleteAnnotation: err = %v; want ErrNotFound", err)
	}
	if err := c.DeleteAnnotation(ctx, "", global.Start); err != nil {
		t.Errorf("DeleteAnnotation(global): %v", err)
	}
	if log := f.requestLog(); !slices.Contains(log, "DELETE /api/annotation?start_time=1369141263") {
		t.Errorf("requests %q; want a DELETE of the global note by start_time", log)
	}
}

func sameAnnotation(a, b tsdb.Annotation) bool {
	return a.Start.Equal(b.Start) && a.End.Equal(b.End) && a.TSUID == b.TSUID && a.Description == b.Description &&
		a.Notes == b.Notes && maps.Equal(a.Custom, b.Custom)
}

func TestAnnotationsFromDocumentedQueryAnswer(t *testing.T) {
	f := newFakeTSD(t)
	f.override = func(w http.ResponseWriter, r *http.Request) {
		w.Write(readTestdata(t, "query_aggregated.json"))
	}
	c := f.client(t, nil)
	from, to := time.Unix(1365966000, 0), time.Unix(1365974000, 0)
	got, err := c.Annotations(testContext(t), "", from, to)
	if err != nil {
		t.Fatal(err)
	}
	want := tsdb.Annotation{Start: time.Unix(1365966064, 0), End: time.Unix(1365966164, 0), Description: "Notice", Notes: "DAL was down during this period"}
	if len(got) != 1 || !sameAnnotation(got[0], want) {
		t.Errorf("global %+v; want [%+v]", got, want)
	}
	got, err = c.Annotations(testContext(t), "00001C0000FB0000FB", from, to)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Description != "Testing Annotations" || got[0].Custom["owner"] != "jdoe" || !got[0].End.IsZero() {
		t.Errorf("series %+v; want the documented Testing Annotations", got)
	}
}

func TestAnnotationRefusals(t *testing.T) {
	f := newFakeTSD(t)
	c := f.client(t, nil)
	ctx := testContext(t)
	if err := c.PutAnnotation(ctx, tsdb.Annotation{Description: "no start"}); !errors.Is(err, tsdb.ErrInvalid) {
		t.Errorf("zero start: err = %v; want ErrInvalid", err)
	}
	s := time.Unix(1700000000, 0)
	if err := c.PutAnnotation(ctx, tsdb.Annotation{Start: s, End: s.Add(-time.Second)}); !errors.Is(err, tsdb.ErrInvalid) {
		t.Errorf("end before start: err = %v; want ErrInvalid", err)
	}
	if _, err := c.Annotations(ctx, "", s, s.Add(-time.Second)); !errors.Is(err, tsdb.ErrInvalid) {
		t.Errorf("range end before start: err = %v; want ErrInvalid", err)
	}
	if n := len(f.requestLog()); n != 0 {
		t.Errorf("%d requests; want none", n)
	}
}

func TestSuggest(t *testing.T) {
	f := newFakeTSD(t)
	c := f.client(t, nil)
	ctx := testContext(t)
	got, err := c.Suggest(ctx, tsdb.SuggestMetrics, "sys.cpu.0", 2)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{"sys.cpu.0.nice", "sys.cpu.0.system"}) {
		t.Errorf("Suggest = %v", got)
	}
	if log := f.requestLog(); log[0] != "GET /api/suggest?max=2&q=sys.cpu.0&type=metrics" {
		t.Errorf("request %q", log[0])
	}
	got, err = c.Suggest(ctx, tsdb.SuggestMetrics, "sys", 0)
	if err != nil || len(got) != 6 {
		t.Errorf("Suggest(max 0) = %v, %v; want the 6 documented metrics", got, err)
	}
	if _, err := c.Suggest(ctx, "metric", "", 1); !errors.Is(err, tsdb.ErrInvalid) {
		t.Errorf("unknown kind: err = %v; want ErrInvalid", err)
	}
}

func TestErrorBodyWithTrace(t *testing.T) {
	f := newFakeTSD(t)
	f.override = func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		w.Write(readTestdata(t, "error_missing_type.json"))
	}
	c := f.client(t, nil)
	_, err := c.Suggest(testContext(t), tsdb.SuggestTagKeys, "h", 5)
	var se *StatusError
	if !errors.As(err, &se) || !errors.Is(err, tsdb.ErrInvalid) {
		t.Fatalf("err = %v; want a StatusError wrapping ErrInvalid", err)
	}
	if se.Message != "Missing parameter <code>type</code>" || !strings.HasPrefix(se.Trace, "net.opentsdb.tsd.BadRequestException") {
		t.Errorf("StatusError %+v; want the documented message and trace", se)
	}
	if strings.Contains(err.Error(), "SuggestRpc") {
		t.Errorf("error %q carries the stack trace", err)
	}
}

func TestVersion(t *testing.T) {
	f := newFakeTSD(t)
	c := f.client(t, nil)
	v, err := c.Version(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	if v["version"] != "2.0.0" || v["short_revision"] != "11c5eef" || len(v) != 8 {
		t.Errorf("Version = %v", v)
	}
}
