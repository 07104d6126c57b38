package embedded

import (
	"slices"
	"testing"

	"github.com/dmonitor/dmonitor/tsdb"
)

// TestQueryFilters24 covers the filter types OpenTSDB 2.4 has beyond the
// 2.2 set of TestQueryFilters: not_iliteral_or and not_key.
func TestQueryFilters24(t *testing.T) {
	s := openStore(t, "", Options{})
	for i, tg := range []map[string]string{
		tags("host=web1", "dc=EU"),
		tags("host=web2", "dc=us"),
		tags("host=web3"), // no dc tag
	} {
		mustAppend(t, s, series("m", tg, sv{0, float64(i + 1)}))
	}
	for _, tc := range []struct {
		name    string
		q       tsdb.Query
		want    []string
		wantSum float64 // with the aggregator sum: the one series' value
	}{
		// Case does not matter, and a series without the tag is not selected.
		{name: "not_iliteral_or excludes whatever the case", q: tsdb.Query{Filters: []tsdb.Filter{{Type: tsdb.NotILiteralOr, Tag: "dc", Expr: "eu|nowhere"}}},
			want: []string{"web2"}},
		{name: "not_key selects the series without the tag", q: tsdb.Query{Filters: []tsdb.Filter{{Type: tsdb.NotKey, Tag: "dc"}}},
			want: []string{"web3"}},
		// The tag it names is absent, so it cannot be one of the explicit ones.
		{name: "not_key with explicitTags", q: tsdb.Query{ExplicitTags: true, Filters: []tsdb.Filter{
			{Type: tsdb.Wildcard, Tag: "host", Expr: "*"}, {Type: tsdb.NotKey, Tag: "dc"}}},
			want: []string{"web3"}},
		// GroupBy on not_key has no values to group by: one series, the sum.
		{name: "not_key never groups", q: tsdb.Query{Aggregator: "sum", Filters: []tsdb.Filter{{Type: tsdb.NotKey, Tag: "rack", GroupBy: true}}},
			wantSum: 6},
	} {
		q := tc.q
		q.Metric, q.Start, q.End = "m", at(0), at(0)
		out := mustQuery(t, s, q)
		if tc.wantSum != 0 {
			if len(out) != 1 || len(out[0].Samples) != 1 || out[0].Samples[0].Value != tc.wantSum {
				t.Errorf("%s: %+v, want one series of value %v", tc.name, out, tc.wantSum)
			}
			continue
		}
		if got := hostsOf(out); !slices.Equal(got, tc.want) {
			t.Errorf("%s: hosts %v, want %v", tc.name, got, tc.want)
		}
	}
	if _, err := s.Query(t.Context(), tsdb.Query{Metric: "m", Start: at(0), End: at(0),
		Filters: []tsdb.Filter{{Type: tsdb.NotKey, Tag: "dc", Expr: "eu"}}}); err == nil {
		t.Error("not_key with an expression: no error")
	}
}
