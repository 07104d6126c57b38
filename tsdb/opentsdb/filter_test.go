package opentsdb

import (
	"testing"

	"github.com/dmonitor/dmonitor/tsdb"
)

// The client's own matcher (for Last) knows every filter type of
// OpenTSDB 2.4, with their semantics.
func TestCompileFilter(t *testing.T) {
	tags := []map[string]string{{"host": "Web1"}, {"host": "db1"}, {"dc": "lga"}}
	for _, tc := range []struct {
		f    tsdb.Filter
		want string // which of tags match, by index
	}{
		{tsdb.Filter{Type: tsdb.LiteralOr, Tag: "host", Expr: "web1|db1"}, "1"},
		{tsdb.Filter{Type: tsdb.ILiteralOr, Tag: "host", Expr: "web1|db1"}, "01"},
		{tsdb.Filter{Type: tsdb.NotLiteralOr, Tag: "host", Expr: "web1"}, "01"},
		{tsdb.Filter{Type: tsdb.NotILiteralOr, Tag: "host", Expr: "web1"}, "1"},
		{tsdb.Filter{Type: tsdb.Wildcard, Tag: "host", Expr: "*1"}, "01"},
		{tsdb.Filter{Type: tsdb.IWildcard, Tag: "host", Expr: "web*"}, "0"},
		{tsdb.Filter{Type: tsdb.Regexp, Tag: "host", Expr: "d.*"}, "1"},
		{tsdb.Filter{Type: tsdb.NotKey, Tag: "host"}, "2"},
	} {
		m, err := compileFilter(tc.f)
		if err != nil {
			t.Fatalf("%v: %v", tc.f, err)
		}
		got := ""
		for i, tg := range tags {
			if m(tg) {
				got += string(rune('0' + i))
			}
		}
		if got != tc.want {
			t.Errorf("%s(%s=%s) matches %q, want %q", tc.f.Type, tc.f.Tag, tc.f.Expr, got, tc.want)
		}
	}
	if _, err := compileFilter(tsdb.Filter{Type: tsdb.NotKey, Tag: "host", Expr: "x"}); err == nil {
		t.Error("not_key with an expression compiled")
	}
}
