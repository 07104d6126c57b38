package httpapi

import (
	"fmt"
	"testing"

	"github.com/dmonitor/dmonitor/tsdb/embedded"
)

func TestQueryLast(t *testing.T) {
	s := startQueryServer(t)
	web01 := embedded.TSUID("sys.cpu.user", map[string]string{"host": "web01", "dc": "lga"})
	web02 := embedded.TSUID("sys.cpu.user", map[string]string{"host": "web02", "dc": "lga"})
	// The documentation's POST form, with resolveNames: metric and tags,
	// the value as a string and the time in milliseconds.
	r := s.post(t, "/api/query/last", `{"queries":[{"metric":"sys.cpu.user","tags":{"host":"web01|web02"}}],"resolveNames":true,"backScan":24}`)
	checkJSON(t, "POST resolve", r, 200, fmt.Sprintf(`[
		{"metric":"sys.cpu.user","timestamp":%[1]d000,"value":"30","tags":{"dc":"lga","host":"web01"},"tsuid":%[2]q},
		{"metric":"sys.cpu.user","timestamp":%[1]d000,"value":"3","tags":{"dc":"lga","host":"web02"},"tsuid":%[3]q}]`, t0+120, web01, web02))
	// GET, without resolve: the tsuid identifies the series.
	r = s.get(t, "/api/query/last?timeseries=sys.cpu.user{host=web01}")
	checkJSON(t, "GET", r, 200, fmt.Sprintf(`[{"timestamp":%d000,"value":"30","tsuid":%q}]`, t0+120, web01))
	// back_scan: the newest point is 12 h before now, so 1 h finds none.
	checkJSON(t, "back_scan", s.get(t, "/api/query/last?timeseries=sys.cpu.user{host=web01}&back_scan=1"), 200, `[]`)
	// A float value keeps its fraction.
	checkJSON(t, "float", s.get(t, "/api/query/last?timeseries=ms.test&resolve"), 200,
		fmt.Sprintf(`[{"metric":"ms.test","timestamp":%d000,"value":"5","tags":{"host":"a"},"tsuid":%q}]`, t0+1, embedded.TSUID("ms.test", map[string]string{"host": "a"})))
	checkError(t, "no query", s.get(t, "/api/query/last"), 400, "Missing sub queries")
	checkError(t, "tsuids", s.post(t, "/api/query/last", `{"queries":[{"tsuids":["000001000001000001"]}]}`), 400, "TSUID queries are not supported")
}

func TestSuggest(t *testing.T) {
	s := startQueryServer(t)
	tests := []struct {
		name string
		r    response
		want string
	}{
		// The documentation's examples.
		{"metrics", s.get(t, "/api/suggest?type=metrics&q=sys&max=10"), `["sys.cpu.user"]`},
		{"POST", s.post(t, "/api/suggest", `{"type":"metrics","q":"","max":3}`), `["ds.test","lerp.test","ms.test"]`},
		{"tagk", s.get(t, "/api/suggest?type=tagk"), `["dc","host"]`},
		{"tagv", s.get(t, "/api/suggest?type=tagv&q=web"), `["web01","web02"]`},
		{"tagv max", s.get(t, "/api/suggest?type=tagv&max=2"), `["Web03","a"]`},
		{"nothing", s.get(t, "/api/suggest?type=metrics&q=zzz"), `[]`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { checkJSON(t, tc.name, tc.r, 200, tc.want) })
	}
	checkError(t, "no type", s.get(t, "/api/suggest?q=sys"), 400, "Missing 'type' parameter")
	checkError(t, "bad type", s.get(t, "/api/suggest?type=bogus"), 400, "Invalid 'type' parameter:bogus")
	checkError(t, "bad max", s.get(t, "/api/suggest?type=metrics&max=ten"), 400, "Invalid 'max' parameter")
}

func TestAggregatorsAndVersion(t *testing.T) {
	s := startServer(t, "", Options{Version: VersionInfo{Version: "2.4.0", ShortRevision: "abc1234", Host: "node1"}})
	want := `["avg","count","dev","max","mimmax","mimmin","min","none","sum","zimsum"]`
	checkJSON(t, "aggregators", s.get(t, "/api/aggregators"), 200, want)
	checkJSON(t, "aggregators POST", s.post(t, "/api/aggregators", ""), 200, want)
	checkJSON(t, "version", s.get(t, "/api/version"), 200,
		`{"version":"2.4.0","short_revision":"abc1234","full_revision":"","timestamp":"","host":"node1","user":"","repo":"","repo_status":"","branch":""}`)
	// Every aggregator listed is one a query accepts.
	s.put(t, docPutSingle)
	for _, agg := range aggregatorNames {
		r := s.get(t, "/api/query?start=1346846000&end=1346847000&m="+agg+":sys.cpu.nice")
		if r.code != 200 {
			t.Errorf("aggregator %s: %d %s", agg, r.code, r.body)
		}
	}
	checkError(t, "version DELETE", s.do(t, "DELETE", "/api/version", nil), 405, "Method not allowed")
}

func TestAnnotations(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir, Options{})
	s.put(t, queryData)
	web01 := embedded.TSUID("sys.cpu.user", map[string]string{"host": "web01", "dc": "lga"})

	// The documentation's example annotation, on web01's series.
	note := fmt.Sprintf(`{"startTime":%d,"endTime":0,"tsuid":%q,"description":"Testing Annotations","notes":"These would be details about the event, the description is just a summary","custom":{"owner":"jdoe","dept":"ops"}}`, t0+60, web01)
	checkJSON(t, "POST", s.post(t, "/api/annotation", note), 200, note)
	// GET by the query string.
	checkJSON(t, "GET", s.get(t, fmt.Sprintf("/api/annotation?start_time=%d&tsuid=%s", t0+60, web01)), 200, note)
	// POST changes only the fields given.
	r := s.post(t, "/api/annotation", fmt.Sprintf(`{"startTime":%d,"tsuid":%q,"notes":"replaced"}`, t0+60, web01))
	merged := fmt.Sprintf(`{"startTime":%d,"endTime":0,"tsuid":%q,"description":"Testing Annotations","notes":"replaced","custom":{"owner":"jdoe","dept":"ops"}}`, t0+60, web01)
	checkJSON(t, "POST merge", r, 200, merged)
	// A global annotation (no tsuid) spanning a period, in milliseconds.
	global := fmt.Sprintf(`{"startTime":%d,"endTime":%d,"description":"Notice","notes":"DAL was down during this period"}`, t0+30, t0+90)
	checkJSON(t, "PUT global", s.do(t, "PUT", "/api/annotation", []byte(fmt.Sprintf(`{"startTime":%d000,"endTime":%d,"description":"Notice","notes":"DAL was down during this period"}`, t0+30, t0+90))), 200, global)

	// In a query answer: the series' own annotations by default, the
	// global ones on request, and the TSUIDs with showTSUIDs.
	body := fmt.Sprintf(`{"start":%d,"end":%d,"globalAnnotations":true,"showTSUIDs":true,"queries":[{"aggregator":"sum","metric":"sys.cpu.user","tags":{"host":"web01"}}]}`, t0, t0+179)
	want := fmt.Sprintf(`[{"metric":"sys.cpu.user","tags":{"dc":"lga","host":"web01"},"aggregateTags":[],"dps":{"%d":10,"%d":20,"%d":30},
		"annotations":[%s],"globalAnnotations":[%s],"tsuids":[%q]}]`, t0, t0+60, t0+120, merged, global, web01)
	checkJSON(t, "query", s.post(t, "/api/query", body), 200, want)
	// An aggregate carries the annotations and TSUIDs of all its series.
	web02 := embedded.TSUID("sys.cpu.user", map[string]string{"host": "web02", "dc": "lga"})
	body = fmt.Sprintf(`{"start":%d,"end":%d,"showTSUIDs":true,"queries":[{"aggregator":"sum","metric":"sys.cpu.user","tags":{"dc":"lga"}}]}`, t0, t0+179)
	ids := []string{web01, web02}
	if ids[0] > ids[1] {
		ids[0], ids[1] = ids[1], ids[0]
	}
	want = fmt.Sprintf(`[{"metric":"sys.cpu.user","tags":{"dc":"lga"},"aggregateTags":["host"],"dps":{"%d":11,"%d":22,"%d":33},
		"annotations":[%s],"tsuids":[%q,%q]}]`, t0, t0+60, t0+120, merged, ids[0], ids[1])
	checkJSON(t, "aggregate query", s.post(t, "/api/query", body), 200, want)
	// noAnnotations leaves them out; a range without them too.
	body = fmt.Sprintf(`{"start":%d,"end":%d,"noAnnotations":true,"queries":[{"aggregator":"sum","metric":"sys.cpu.user","tags":{"host":"web01"}}]}`, t0, t0+179)
	checkJSON(t, "noAnnotations", s.post(t, "/api/query", body), 200,
		fmt.Sprintf(`[{"metric":"sys.cpu.user","tags":{"dc":"lga","host":"web01"},"aggregateTags":[],"dps":{"%d":10,"%d":20,"%d":30}}]`, t0, t0+60, t0+120))
	// The GET flag.
	r = s.get(t, fmt.Sprintf("/api/query?start=%d&end=%d&global_annotations&no_annotations&m=sum:sys.cpu.user{host=web01}", t0+100, t0+179))
	checkJSON(t, "GET global outside the span", r, 200,
		fmt.Sprintf(`[{"metric":"sys.cpu.user","tags":{"dc":"lga","host":"web01"},"aggregateTags":[],"dps":{"%d":30}}]`, t0+120))

	// Durable: a new store on the same directory has them.
	if err := s.store.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := startServer(t, dir, Options{})
	checkJSON(t, "GET after reopen", s2.get(t, fmt.Sprintf("/api/annotation?start_time=%d&tsuid=%s", t0+60, web01)), 200, merged)
	checkJSON(t, "global after reopen", s2.get(t, fmt.Sprintf("/api/annotation?start_time=%d", t0+30)), 200, global)

	// DELETE: 204, then gone.
	r = s2.do(t, "DELETE", fmt.Sprintf("/api/annotation?start_time=%d&tsuid=%s", t0+60, web01), nil)
	if r.code != 204 {
		t.Errorf("DELETE: %d %s", r.code, r.body)
	}
	checkError(t, "GET deleted", s2.get(t, fmt.Sprintf("/api/annotation?start_time=%d&tsuid=%s", t0+60, web01)), 404, "Unable to locate annotation in storage")
	checkError(t, "DELETE again", s2.do(t, "DELETE", "/api/annotation", []byte(fmt.Sprintf(`{"startTime":%d,"tsuid":%q}`, t0+60, web01))), 404, "Unable to locate annotation in storage")
	checkError(t, "no start", s2.post(t, "/api/annotation", `{"description":"x"}`), 400, "Missing start time")
	checkError(t, "end before start", s2.post(t, "/api/annotation", fmt.Sprintf(`{"startTime":%d,"endTime":%d}`, t0, t0-1)), 400, "Invalid end time")
}

func TestAnnotationBulk(t *testing.T) {
	s := startServer(t, "", Options{})
	body := fmt.Sprintf(`[{"startTime":%[1]d,"tsuid":"AA","description":"one"},{"startTime":%[2]d,"tsuid":"AA","description":"two"},{"startTime":%[2]d,"description":"global"}]`, t0, t0+60)
	checkJSON(t, "POST", s.post(t, "/api/annotation/bulk", body), 200, fmt.Sprintf(`[
		{"startTime":%[1]d,"endTime":0,"tsuid":"AA","description":"one","notes":""},
		{"startTime":%[2]d,"endTime":0,"tsuid":"AA","description":"two","notes":""},
		{"startTime":%[2]d,"endTime":0,"description":"global","notes":""}]`, t0, t0+60))
	del := fmt.Sprintf(`{"tsuids":["AA"],"global":true,"startTime":%d,"endTime":%d}`, t0+30, t0+90)
	checkJSON(t, "DELETE", s.do(t, "DELETE", "/api/annotation/bulk", []byte(del)), 200,
		fmt.Sprintf(`{"tsuids":["AA"],"global":true,"startTime":%d,"endTime":%d,"totalDeleted":2}`, t0+30, t0+90))
	checkJSON(t, "kept", s.get(t, fmt.Sprintf("/api/annotation?start_time=%d&tsuid=AA", t0)), 200,
		fmt.Sprintf(`{"startTime":%d,"endTime":0,"tsuid":"AA","description":"one","notes":""}`, t0))
	checkError(t, "deleted", s.get(t, fmt.Sprintf("/api/annotation?start_time=%d", t0+60)), 404, "Unable to locate annotation in storage")
}
