package httpapi

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// The documentation's single and multiple data point examples.
const (
	docPutSingle = `{"metric":"sys.cpu.nice","timestamp":1346846400,"value":18,"tags":{"host":"web01","dc":"lga"}}`
	docPutArray  = `[{"metric":"sys.cpu.nice","timestamp":1346846400,"value":18,"tags":{"host":"web01","dc":"lga"}},
	                 {"metric":"sys.cpu.nice","timestamp":1346846400,"value":9,"tags":{"host":"web02","dc":"lga"}}]`
	// The documentation's detailed-response example point: a value that
	// is not a number.
	docPutBad = `{"metric":"sys.cpu.nice","timestamp":1365465600,"value":"NaN","tags":{"host":"web01"}}`
)

// queryNice answers the raw sys.cpu.nice series around the examples' time.
func queryNice(t *testing.T, s *server) response {
	t.Helper()
	return s.get(t, "/api/query?start=1346846000&end=1346847000&m=none:sys.cpu.nice")
}

func TestPut(t *testing.T) {
	tests := []struct {
		name     string
		query    string
		body     string
		code     int
		want     string // the body, as JSON; "" for none
		wantErr  string // the error message, instead of want
		afterDPs string // what a query of sys.cpu.nice then answers
	}{
		// One point, all stored: 204 and no content.
		{name: "single", body: docPutSingle, code: 204,
			afterDPs: `[{"metric":"sys.cpu.nice","tags":{"dc":"lga","host":"web01"},"aggregateTags":[],"dps":{"1346846400":18}}]`},
		// An array, all stored.
		{name: "array", body: docPutArray, code: 204,
			afterDPs: `[{"metric":"sys.cpu.nice","tags":{"dc":"lga","host":"web01"},"aggregateTags":[],"dps":{"1346846400":18}},
			            {"metric":"sys.cpu.nice","tags":{"dc":"lga","host":"web02"},"aggregateTags":[],"dps":{"1346846400":9}}]`},
		// summary: counts instead of 204.
		{name: "summary", query: "?summary", body: docPutArray, code: 200, want: `{"failed":0,"success":2}`},
		// details with every point stored: an empty error list.
		{name: "details ok", query: "?details", body: docPutSingle, code: 200, want: `{"errors":[],"failed":0,"success":1}`},
		// details with a bad point: 400, the point echoed with its error,
		// and the good point stored all the same.
		{name: "details partial", query: "?details", body: "[" + docPutSingle + "," + docPutBad + "]", code: 400,
			want:     `{"errors":[{"datapoint":` + docPutBad + `,"error":"Unable to parse value to a number"}],"failed":1,"success":1}`,
			afterDPs: `[{"metric":"sys.cpu.nice","tags":{"dc":"lga","host":"web01"},"aggregateTags":[],"dps":{"1346846400":18}}]`},
		// Partial failure without details: the documented error object,
		// the good point still stored.
		{name: "partial", body: "[" + docPutBad + "," + docPutSingle + "]", code: 400, wantErr: "One or more data points had errors",
			afterDPs: `[{"metric":"sys.cpu.nice","tags":{"dc":"lga","host":"web01"},"aggregateTags":[],"dps":{"1346846400":18}}]`},
		// summary and details together: details win.
		{name: "summary and details", query: "?summary&details", body: docPutBad, code: 400,
			want: `{"errors":[{"datapoint":` + docPutBad + `,"error":"Unable to parse value to a number"}],"failed":1,"success":0}`},
		// sync is accepted (every stored point is durable anyway).
		{name: "sync", query: "?sync&sync_timeout=60000", body: docPutSingle, code: 204},
		// A value given as a string, and a timestamp in milliseconds.
		{name: "string value ms time", body: `{"metric":"sys.cpu.nice","timestamp":1346846400500,"value":"42.5","tags":{"host":"web01"}}`, code: 204,
			afterDPs: `[{"metric":"sys.cpu.nice","tags":{"host":"web01"},"aggregateTags":[],"dps":{"1346846400":42.5}}]`},
		// Each validation the documentation names, one point each.
		{name: "invalid points", query: "?details", body: `[
			{"metric":"","timestamp":1346846400,"value":1,"tags":{"host":"a"}},
			{"metric":"m","timestamp":0,"value":1,"tags":{"host":"a"}},
			{"metric":"m","timestamp":1346846400,"tags":{"host":"a"}},
			{"metric":"m","timestamp":1346846400,"value":1},
			{"metric":"bad metric","timestamp":1346846400,"value":1,"tags":{"host":"a"}},
			{"metric":"m","timestamp":1346846400,"value":1,"tags":{"host":"a b"}}]`, code: 400,
			want: `{"errors":[
			{"datapoint":{"metric":"","timestamp":1346846400,"value":1,"tags":{"host":"a"}},"error":"Metric name was empty"},
			{"datapoint":{"metric":"m","timestamp":0,"value":1,"tags":{"host":"a"}},"error":"Invalid timestamp"},
			{"datapoint":{"metric":"m","timestamp":1346846400,"tags":{"host":"a"}},"error":"Empty value"},
			{"datapoint":{"metric":"m","timestamp":1346846400,"value":1},"error":"Missing tags"},
			{"datapoint":{"metric":"bad metric","timestamp":1346846400,"value":1,"tags":{"host":"a"}},"error":"Invalid metric (\"bad metric\"): illegal character: ' '"},
			{"datapoint":{"metric":"m","timestamp":1346846400,"value":1,"tags":{"host":"a b"}},"error":"Invalid tag value (\"a b\"): illegal character: ' '"}],
			"failed":6,"success":0}`},
		// Content that is not JSON refuses every point.
		{name: "invalid JSON", body: `{"metric":"sys.cpu.nice","timestamp":1346846400,`, code: 400, wantErr: "Unable to parse the given JSON",
			afterDPs: `[]`},
		// JSON that is no data point.
		{name: "not a point", body: `42`, code: 400, wantErr: "Unable to parse the given JSON"},
		// No content at all.
		{name: "empty body", body: ``, code: 400, wantErr: "Missing message content"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, "", Options{})
			r := s.post(t, "/api/put"+tc.query, tc.body)
			switch {
			case tc.wantErr != "":
				checkError(t, "put", r, tc.code, tc.wantErr)
			case tc.want != "":
				checkJSON(t, "put", r, tc.code, tc.want)
			default:
				if r.code != tc.code || len(r.body) != 0 {
					t.Errorf("put: %d %q, want %d and no content", r.code, r.body, tc.code)
				}
			}
			if tc.afterDPs != "" {
				checkJSON(t, "query after put", queryNice(t, s), 200, tc.afterDPs)
			}
		})
	}
}

// A gzip-compressed body is decompressed, as OpenTSDB does with
// Content-Encoding: gzip.
func TestPutGzip(t *testing.T) {
	s := startServer(t, "", Options{})
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write([]byte(docPutArray)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	r := s.do(t, http.MethodPost, "/api/put?summary", buf.Bytes(), "Content-Encoding", "gzip")
	checkJSON(t, "gzip put", r, 200, `{"failed":0,"success":2}`)
	checkJSON(t, "query", queryNice(t, s), 200,
		`[{"metric":"sys.cpu.nice","tags":{"dc":"lga","host":"web01"},"aggregateTags":[],"dps":{"1346846400":18}},
		  {"metric":"sys.cpu.nice","tags":{"dc":"lga","host":"web02"},"aggregateTags":[],"dps":{"1346846400":9}}]`)

	// A corrupt gzip stream is the client's error.
	r = s.do(t, http.MethodPost, "/api/put", []byte("not gzip"), "Content-Encoding", "gzip")
	checkError(t, "corrupt gzip", r, 400, "Unable to read the request body")
}

// Bodies past the limit are refused with 413, compressed or not, and
// nothing is stored.
func TestPutTooLarge(t *testing.T) {
	s := startServer(t, "", Options{MaxBodyBytes: 1024})
	big := "[" + strings.Repeat(docPutSingle+",", 20) + docPutSingle + "]"
	checkError(t, "plain", s.post(t, "/api/put", big), 413, fmt.Sprintf("request body size limit 1024 bytes exceeded: Content-Length %d", len(big)))

	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write([]byte(big))
	zw.Close()
	if buf.Len() >= 1024 {
		t.Fatalf("compressed body is %d bytes, want under the limit", buf.Len())
	}
	r := s.do(t, http.MethodPost, "/api/put", buf.Bytes(), "Content-Encoding", "gzip")
	checkError(t, "gzip", r, 413, "request body size limit 1024 bytes exceeded: the gzip body inflates past it")
	checkJSON(t, "query", queryNice(t, s), 200, `[]`)
}

// A point the store refuses after validation (here: a second, different
// value for a timestamp it holds) is reported per point, and the other
// points of the batch are stored.
func TestPutStoreRefusal(t *testing.T) {
	s := startServer(t, "", Options{})
	s.put(t, docPutSingle)
	body := `[{"metric":"sys.cpu.nice","timestamp":1346846400,"value":99,"tags":{"host":"web01","dc":"lga"}},
	          {"metric":"sys.cpu.nice","timestamp":1346846410,"value":20,"tags":{"host":"web01","dc":"lga"}}]`
	r := s.post(t, "/api/put?details", body)
	if r.code != 400 || !strings.Contains(string(r.body), `"failed":1,"success":1`) ||
		!strings.Contains(string(r.body), "another value is stored for this timestamp") {
		t.Errorf("put: %d %s", r.code, r.body)
	}
	checkJSON(t, "query", queryNice(t, s), 200,
		`[{"metric":"sys.cpu.nice","tags":{"dc":"lga","host":"web01"},"aggregateTags":[],"dps":{"1346846400":18,"1346846410":20}}]`)
}
