package httpapi

import (
	"fmt"
	"testing"

	"github.com/dmonitor/dmonitor/tsdb/embedded"
)

// An answer under explicitTags names only the series it was made of: the
// TSUID of a series with an extra tag, which the filters also match, is
// not among its tsuids.
func TestQueryExplicitTagsTSUIDs(t *testing.T) {
	s := startServer(t, "", Options{})
	s.put(t, fmt.Sprintf(`[
		{"metric":"m","timestamp":%[1]d,"value":1,"tags":{"host":"a"}},
		{"metric":"m","timestamp":%[1]d,"value":10,"tags":{"host":"b","rack":"r1"}}]`, t0))
	a := embedded.TSUID("m", map[string]string{"host": "a"})
	r := s.get(t, fmt.Sprintf("/api/query?start=%d&end=%d&show_tsuids&m=sum:explicit_tags:m{}{host=*}", t0, t0+60))
	checkJSON(t, "explicit tags", r, 200,
		fmt.Sprintf(`[{"metric":"m","tags":{"host":"a"},"aggregateTags":[],"dps":{"%d":1},"tsuids":[%q]}]`, t0, a))
}
