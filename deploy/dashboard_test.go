package deploy_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dmonitor/dmonitor/evaluator"
)

// writtenTags lists every metric dmonitor writes and the tags it writes it
// with (the TSDB contract of docs/ARCHITECTURE.md). A query of any other metric, or a
// filter on any other tag, finds nothing: the panel stays empty without an
// error anyone would see.
var writtenTags = map[string][]string{
	evaluator.MetricCheckStatus:   {"host", "check", "observer"},
	evaluator.MetricCheckDuration: {"host", "check", "observer"},
	evaluator.MetricCheckPerf:     {"host", "check", "observer", "label"},
	// rule, and the rule's grouping tags: host and check for every rule
	// dmonitor has.
	evaluator.MetricAlertState: {"rule", "host", "check"},
	evaluator.MetricObserverUp: {"observer"},
}

// filterTypes are the tag filters of OpenTSDB 2.4 that Grafana offers.
var filterTypes = []string{"literal_or", "iliteral_or", "not_literal_or", "not_iliteral_or", "wildcard", "iwildcard", "regexp"}

// The parts of Grafana's dashboard JSON and of its OpenTSDB queries that
// decide what is asked of the TSDB.
type (
	dashboard struct {
		Annotations struct {
			List []annotation `json:"list"`
		} `json:"annotations"`
		Panels []panel `json:"panels"`
	}
	annotation struct {
		BuiltIn    int             `json:"builtIn"`
		Name       string          `json:"name"`
		Datasource json.RawMessage `json:"datasource"`
		// The metric: a string in the form the editor saves, or an object
		// {"target": metric, "isGlobal": ...} once Grafana migrated it.
		Target json.RawMessage `json:"target"`
	}
	panel struct {
		Title      string          `json:"title"`
		Type       string          `json:"type"`
		Datasource json.RawMessage `json:"datasource"`
		Targets    []target        `json:"targets"`
		Panels     []panel         `json:"panels"` // a collapsed row's panels
	}
	target struct {
		RefID                string            `json:"refId"`
		Datasource           json.RawMessage   `json:"datasource"`
		Metric               string            `json:"metric"`
		Aggregator           string            `json:"aggregator"`
		DisableDownsampling  bool              `json:"disableDownsampling"`
		DownsampleAggregator string            `json:"downsampleAggregator"`
		DownsampleFillPolicy string            `json:"downsampleFillPolicy"`
		Tags                 map[string]string `json:"tags"`
		Filters              []struct {
			Type string `json:"type"`
			Tagk string `json:"tagk"`
		} `json:"filters"`
	}
)

// dashboardQueries is what a dashboard asks of OpenTSDB.
type dashboardQueries struct {
	panelMetrics      []string // in panel order, repeats kept
	annotationMetrics []string
	problems          []string // each names its panel or annotation
}

// checkDashboard reads a dashboard and reports every query that could not
// work against the stack: a metric or tag dmonitor does not write, a data
// source other than the provisioned one (uid dsUID), or a query Grafana
// would send malformed.
func checkDashboard(data []byte, dsUID string) (*dashboardQueries, error) {
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, err
	}
	q := &dashboardQueries{}
	problem := func(where, format string, args ...any) {
		q.problems = append(q.problems, where+": "+fmt.Sprintf(format, args...))
	}
	checkDS := func(where string, raw json.RawMessage) {
		var ref struct{ Type, UID string }
		switch {
		case len(raw) == 0 || string(raw) == "null":
			problem(where, "no data source: name the provisioned one, uid %q", dsUID)
		case json.Unmarshal(raw, &ref) != nil:
			problem(where, "data source %s: refer to it as {\"type\": \"opentsdb\", \"uid\": %q}", raw, dsUID)
		case ref.Type != "opentsdb" || ref.UID != dsUID:
			problem(where, "data source %s/%s, want opentsdb/%s, the one provisioned", ref.Type, ref.UID, dsUID)
		}
	}
	checkMetric := func(where, metric string) bool {
		if metric == "" {
			problem(where, "no metric: Grafana skips the query")
			return false
		}
		if _, ok := writtenTags[metric]; !ok {
			problem(where, "metric %q is not one dmonitor writes (%s)", metric, strings.Join(slices.Sorted(maps.Keys(writtenTags)), ", "))
			return false
		}
		return true
	}

	for i, a := range d.Annotations.List {
		if a.BuiltIn == 1 {
			continue // Grafana's own annotations, not a query
		}
		where := fmt.Sprintf("annotation %d %q", i, a.Name)
		checkDS(where, a.Datasource)
		var metric string
		if json.Unmarshal(a.Target, &metric) != nil {
			var obj struct{ Target string }
			if err := json.Unmarshal(a.Target, &obj); err != nil {
				problem(where, "target %s: want a metric name", a.Target)
				continue
			}
			metric = obj.Target
		}
		if checkMetric(where, metric) {
			q.annotationMetrics = append(q.annotationMetrics, metric)
		}
	}

	var walk func([]panel)
	walk = func(panels []panel) {
		for _, p := range panels {
			walk(p.Panels)
			for _, t := range p.Targets {
				where := fmt.Sprintf("panel %q target %s", p.Title, t.RefID)
				ds := t.Datasource
				if len(ds) == 0 {
					ds = p.Datasource // a target without one uses its panel's
				}
				checkDS(where, ds)
				if !checkMetric(where, t.Metric) {
					continue
				}
				q.panelMetrics = append(q.panelMetrics, t.Metric)
				if t.Aggregator == "" {
					problem(where, "no aggregator")
				}
				// Grafana builds the downsample spec as
				// interval-aggregator[-fill]; its server side appends the
				// fill policy unless it is "none", so an empty one makes
				// "1m-avg-", which OpenTSDB refuses.
				if !t.DisableDownsampling && (t.DownsampleAggregator == "" || t.DownsampleFillPolicy == "") {
					problem(where, "downsampling needs downsampleAggregator and downsampleFillPolicy (\"none\" for none)")
				}
				if len(t.Tags) > 0 && len(t.Filters) > 0 {
					problem(where, "both tags and filters: OpenTSDB takes one or the other")
				}
				tagks := slices.Collect(maps.Keys(t.Tags))
				for _, f := range t.Filters {
					tagks = append(tagks, f.Tagk)
					if !slices.Contains(filterTypes, f.Type) {
						problem(where, "filter type %q on %s is not one of %s", f.Type, f.Tagk, strings.Join(filterTypes, ", "))
					}
				}
				for _, k := range tagks {
					if !slices.Contains(writtenTags[t.Metric], k) {
						problem(where, "%s is written with the tags %s, not %q", t.Metric, strings.Join(writtenTags[t.Metric], ", "), k)
					}
				}
			}
		}
	}
	walk(d.Panels)
	return q, nil
}

// TestDashboardQueriesWhatDmonitorWrites checks the provisioned dashboard:
// every panel and annotation asks for a metric dmonitor writes, with tags
// it writes, of the provisioned data source; and the panels the stack
// promises are there.
func TestDashboardQueriesWhatDmonitorWrites(t *testing.T) {
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	q, err := checkDashboard(data, readDatasource(t).UID)
	if err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	for _, p := range q.problems {
		t.Errorf("%s: %s", dashboardFile, p)
	}
	for _, m := range []string{evaluator.MetricCheckStatus, evaluator.MetricCheckDuration, evaluator.MetricCheckPerf, evaluator.MetricAlertState} {
		if !slices.Contains(q.panelMetrics, m) {
			t.Errorf("%s: no panel shows %s", dashboardFile, m)
		}
	}
	if !slices.Contains(q.annotationMetrics, evaluator.MetricAlertState) {
		t.Errorf("%s: no annotation query of %s: alert transitions are not overlaid", dashboardFile, evaluator.MetricAlertState)
	}
}

// TestCheckDashboardCatches feeds checkDashboard dashboards that are each
// wrong in one way, so the test above cannot pass by overlooking it.
func TestCheckDashboardCatches(t *testing.T) {
	tests := []struct {
		file string // in testdata/dashboard
		want string // in the one problem reported
	}{
		// A typo in a panel's metric.
		{"metric-typo.bad.json", `panel "Status" target A: metric "dmonitor.check.stauts" is not one dmonitor writes`},
		// The same in a panel inside a collapsed row.
		{"metric-typo-in-row.bad.json", `panel "Duration" target A: metric "dmonitor.check.durations"`},
		// An annotation query of a metric dmonitor does not write.
		{"annotation-typo.bad.json", `annotation 0 "Alerts": metric "dmonitor.alerts.state"`},
		// The same in the object form Grafana migrates annotations to.
		{"annotation-object-typo.bad.json", `annotation 0 "Alerts": metric "dmonitor.alert.status"`},
		// A filter on a tag the metric is not written with.
		{"tag-not-written.bad.json", `dmonitor.check.status is written with the tags host, check, observer, not "label"`},
		// Downsampling without a fill policy: "1m-max-" on the wire.
		{"no-fill-policy.bad.json", "downsampling needs downsampleAggregator and downsampleFillPolicy"},
		// A query with its metric left empty.
		{"no-metric.bad.json", `panel "Status" target A: no metric`},
		// A data source that is not the provisioned one.
		{"unknown-datasource.bad.json", "data source opentsdb/tsdb, want opentsdb/opentsdb"},
		// Tags and filters at once.
		{"tags-and-filters.bad.json", "both tags and filters"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", "dashboard", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			q, err := checkDashboard(data, "opentsdb")
			if err != nil {
				t.Fatal(err)
			}
			if len(q.problems) != 1 || !strings.Contains(q.problems[0], tt.want) {
				t.Fatalf("problems:\n%s\nwant exactly one, containing %q", strings.Join(q.problems, "\n"), tt.want)
			}
		})
	}
}
