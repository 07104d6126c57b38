package embedded

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/tsdb"
)

func TestAnnotationsDurable(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	a := tsdb.Annotation{Start: at(60).Add(300 * time.Millisecond), End: at(120), TSUID: "AB", Description: "d", Notes: "n", Custom: map[string]string{"k": "v"}}
	g := tsdb.Annotation{Start: at(0), Description: "global"}
	for _, x := range []tsdb.Annotation{a, g, {Start: at(500), TSUID: "AB"}, {Start: at(60), TSUID: "ABC"}} {
		if err := s.PutAnnotation(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir, Options{})

	got, err := s.Annotations(ctx, "AB", at(100), at(200))
	if err != nil {
		t.Fatal(err)
	}
	// Kept in whole seconds; found because its span reaches into the range;
	// the annotation of "ABC" (a TSUID with "AB" as prefix) is not AB's.
	want := a
	want.Start = at(60)
	if !reflect.DeepEqual(got, []tsdb.Annotation{want}) {
		t.Errorf("after reopen: %+v, want %+v", got, want)
	}
	if got, _ := s.Annotations(ctx, "", at(0), at(0)); len(got) != 1 || got[0].Description != "global" {
		t.Errorf("global: %+v", got)
	}
	if got, _ := s.Annotations(ctx, "AB", at(121), at(499)); len(got) != 0 {
		t.Errorf("between: %+v, want none", got)
	}
	// Same TSUID and second replaces.
	if err := s.PutAnnotation(ctx, tsdb.Annotation{Start: at(60), TSUID: "AB", Description: "new"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Annotations(ctx, "AB", at(60), at(60)); len(got) != 1 || got[0].Description != "new" {
		t.Errorf("replaced: %+v", got)
	}
	if err := s.DeleteAnnotation(ctx, "AB", at(60)); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteAnnotation(ctx, "AB", at(60)); !errors.Is(err, tsdb.ErrNotFound) {
		t.Errorf("second delete: %v, want ErrNotFound", err)
	}
	if err := s.PutAnnotation(ctx, tsdb.Annotation{TSUID: "AB"}); !errors.Is(err, tsdb.ErrInvalid) {
		t.Errorf("no start: %v, want ErrInvalid", err)
	}
}

func TestSuggest(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, "", Options{})
	mustAppend(t, s,
		series("sys.cpu.user", tags("host=web01", "dc=lga"), sv{0, 1}),
		series("sys.cpu.nice", tags("host=web02"), sv{0, 1}),
		series("net.bytes", tags("iface=eth0"), sv{0, 1}))
	tests := []struct {
		kind, prefix string
		max          int
		want         []string
	}{
		{tsdb.SuggestMetrics, "sys", 0, []string{"sys.cpu.nice", "sys.cpu.user"}},
		{tsdb.SuggestMetrics, "", 2, []string{"net.bytes", "sys.cpu.nice"}},
		{tsdb.SuggestTagKeys, "", 0, []string{"dc", "host", "iface"}},
		{tsdb.SuggestTagValues, "web", 0, []string{"web01", "web02"}},
		{tsdb.SuggestTagValues, "x", 0, nil},
	}
	for _, tc := range tests {
		got, err := s.Suggest(ctx, tc.kind, tc.prefix, tc.max)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Suggest(%s, %q, %d) = %v, want %v", tc.kind, tc.prefix, tc.max, got, tc.want)
		}
	}
	if _, err := s.Suggest(ctx, "bogus", "", 0); !errors.Is(err, tsdb.ErrInvalid) {
		t.Errorf("bogus kind: %v", err)
	}
}

func TestTSUIDAndListSeries(t *testing.T) {
	a := TSUID("m", map[string]string{"host": "a", "dc": "x"})
	if b := TSUID("m", map[string]string{"dc": "x", "host": "a"}); a != b {
		t.Errorf("tag order changes the TSUID: %s vs %s", a, b)
	}
	if len(a) != 24 {
		t.Errorf("TSUID %q: want 24 hex digits", a)
	}
	for _, other := range []string{TSUID("m", map[string]string{"host": "a"}), TSUID("n", map[string]string{"host": "a", "dc": "x"}), TSUID("m", map[string]string{"host": "ad", "dc": "x"})} {
		if other == a {
			t.Errorf("different series share TSUID %s", a)
		}
	}
	s := openStore(t, "", Options{})
	mustAppend(t, s, series("m", tags("host=a", "dc=x"), sv{0, 1}), series("m", tags("host=b"), sv{0, 1}))
	got, err := s.ListSeries(context.Background(), "m", []tsdb.Filter{{Type: tsdb.Wildcard, Tag: "dc", Expr: "*"}}, at(0), at(10))
	if err != nil {
		t.Fatal(err)
	}
	if want := []map[string]string{{"host": "a", "dc": "x"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("ListSeries: %v, want %v", got, want)
	}
}
