// Package httpapi serves OpenTSDB 2.4's HTTP API (JSON serializer) over a
// tsdb.Store, so Grafana's OpenTSDB data source, OpenTSDB clients and
// dmonitor's own tsdb/opentsdb client work against dmonitor's embedded
// store as they do against a real OpenTSDB. docs/OPENTSDB_API.md lists the
// endpoints and the choices made where OpenTSDB's documentation is silent.
package httpapi

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/dmonitor/dmonitor/tsdb"
)

// DefaultMaxBodyBytes is the largest request body accepted when
// Options.MaxBodyBytes is zero, counted after gzip decompression.
const DefaultMaxBodyBytes = 16 << 20

// Options configure the handler. Zero values mean the defaults.
type Options struct {
	// Logger receives store failures (the 500 answers); nil discards.
	Logger *slog.Logger
	// Version is what /api/version answers. Its Version defaults to
	// "2.4.0", the OpenTSDB API version served, which is what clients that
	// look at it decide features by.
	Version VersionInfo
	// MaxBodyBytes bounds a request body (after gzip decompression);
	// larger ones are refused with 413. Default DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Now is the clock relative times ("1h-ago") and a missing end are
	// taken from; default time.Now.
	Now func() time.Time
}

// VersionInfo is the body of /api/version, with OpenTSDB's field names.
type VersionInfo struct {
	Version       string `json:"version"`
	ShortRevision string `json:"short_revision"`
	FullRevision  string `json:"full_revision"`
	Timestamp     string `json:"timestamp"`
	Host          string `json:"host"`
	User          string `json:"user"`
	Repo          string `json:"repo"`
	RepoStatus    string `json:"repo_status"`
	Branch        string `json:"branch"`
}

// SeriesLister is implemented by stores that can list the series a query
// selects without reading samples (embedded.Store does). The handler uses
// it to find the TSUIDs of an answer's series, for showTSUIDs and for the
// per-series annotations; without it, it reads the series' samples instead.
type SeriesLister interface {
	ListSeries(ctx context.Context, metric string, filters []tsdb.Filter, start, end time.Time) ([]map[string]string, error)
}

// TSUIDer is implemented by stores that name each series with a TSUID
// (embedded.Store does). Without it, answers carry no tsuids and no
// per-series annotations.
type TSUIDer interface {
	TSUID(metric string, tags map[string]string) string
}

// handler serves the API over one store.
type handler struct {
	store     tsdb.Store
	annotator tsdb.Annotator // nil when the store has none
	suggester tsdb.Suggester // nil when the store has none
	lister    SeriesLister   // nil when the store has none
	tsuider   TSUIDer        // nil when the store has none
	log       *slog.Logger
	version   VersionInfo
	maxBody   int64
	now       func() time.Time
	routes    map[string]route
}

// route is one endpoint: the methods it takes and its function.
type route struct {
	methods []string
	serve   func(w http.ResponseWriter, r *http.Request) error
}

// NewHandler returns the OpenTSDB HTTP API over store. It answers
// annotations when store implements tsdb.Annotator, suggestions when it
// implements tsdb.Suggester, and TSUIDs when it implements TSUIDer;
// otherwise those endpoints answer 501.
func NewHandler(store tsdb.Store, opts Options) http.Handler {
	h := &handler{store: store, log: opts.Logger, version: opts.Version, maxBody: opts.MaxBodyBytes, now: opts.Now}
	h.annotator, _ = store.(tsdb.Annotator)
	h.suggester, _ = store.(tsdb.Suggester)
	h.lister, _ = store.(SeriesLister)
	h.tsuider, _ = store.(TSUIDer)
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.version.Version == "" {
		h.version.Version = "2.4.0"
	}
	if h.maxBody <= 0 {
		h.maxBody = DefaultMaxBodyBytes
	}
	if h.now == nil {
		h.now = time.Now
	}
	get, post, put, del := http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete
	h.routes = map[string]route{
		"/api/put":             {[]string{post}, h.servePut},
		"/api/query":           {[]string{get, post, del}, h.serveQuery},
		"/api/query/last":      {[]string{get, post}, h.serveLast},
		"/api/suggest":         {[]string{get, post}, h.serveSuggest},
		"/api/aggregators":     {[]string{get, post}, h.serveAggregators},
		"/api/version":         {[]string{get, post}, h.serveVersion},
		"/api/annotation":      {[]string{get, post, put, del}, h.serveAnnotation},
		"/api/annotation/bulk": {[]string{post, put, del}, h.serveAnnotationBulk},
	}
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if len(path) > 1 {
		path = strings.TrimSuffix(path, "/")
	}
	rt, ok := h.routes[path]
	if !ok {
		writeError(w, &apiError{code: http.StatusNotFound, msg: "Endpoint not found", details: "no endpoint at " + r.URL.Path})
		return
	}
	allowed := false
	for _, m := range rt.methods {
		if r.Method == m {
			allowed = true
		}
	}
	if !allowed {
		w.Header().Set("Allow", strings.Join(rt.methods, ", "))
		writeError(w, &apiError{code: http.StatusMethodNotAllowed, msg: "Method not allowed",
			details: fmt.Sprintf("The HTTP method [%s] is not permitted for this endpoint", r.Method)})
		return
	}
	if err := rt.serve(w, r); err != nil {
		var ae *apiError
		if !errors.As(err, &ae) {
			ae = h.storeError(r, err)
		}
		writeError(w, ae)
	}
}

// apiError is an answer other than success, written as OpenTSDB's error
// object.
type apiError struct {
	code    int
	msg     string
	details string
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s: %s", e.code, e.msg, e.details) }

// badRequest is a 400 answer.
func badRequest(msg, details string) *apiError {
	return &apiError{code: http.StatusBadRequest, msg: msg, details: details}
}

// storeError turns an error of the store into an answer: a request the
// store blames is the client's (400), something missing is 404, and
// anything else a failure of the store (500), which is logged.
func (h *handler) storeError(r *http.Request, err error) *apiError {
	switch {
	case errors.Is(err, tsdb.ErrInvalid):
		return badRequest("Invalid request", err.Error())
	case errors.Is(err, tsdb.ErrNotFound):
		return &apiError{code: http.StatusNotFound, msg: "Not found", details: err.Error()}
	}
	h.log.Error("opentsdb api: store failure", "method", r.Method, "path", r.URL.Path, "err", err)
	return &apiError{code: http.StatusInternalServerError, msg: "Store failure", details: err.Error()}
}

// errorBody is OpenTSDB's error object.
type errorBody struct {
	Error struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Details string `json:"details"`
		Trace   string `json:"trace"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, e *apiError) {
	var b errorBody
	b.Error.Code, b.Error.Message, b.Error.Details = e.code, e.msg, e.details
	writeJSON(w, e.code, b)
}

// writeJSON writes v as the whole answer with status code.
func writeJSON(w http.ResponseWriter, code int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		// Only our own types are written, and they all marshal.
		code, body = http.StatusInternalServerError, []byte(`{"error":{"code":500,"message":"Serialization failure","details":"","trace":""}}`)
	}
	writeBody(w, code, body)
}

func writeBody(w http.ResponseWriter, code int, body []byte) {
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(code)
	_, _ = w.Write(body) // a client gone away is not our error to report
}

// readBody returns the request body, decompressed when its
// Content-Encoding is gzip, refusing one larger than the limit with 413.
func (h *handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	var rd io.Reader = http.MaxBytesReader(w, r.Body, h.maxBody)
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(rd)
		if err != nil {
			return nil, h.bodyError(err)
		}
		defer zr.Close()
		// A small gzip body may inflate far past the limit: bound the
		// output too.
		rd = io.LimitReader(zr, h.maxBody+1)
	default:
		return nil, &apiError{code: http.StatusUnsupportedMediaType, msg: "Unsupported content encoding", details: "Content-Encoding " + enc + " is not supported (gzip is)"}
	}
	body, err := io.ReadAll(rd)
	if err != nil {
		return nil, h.bodyError(err)
	}
	if int64(len(body)) > h.maxBody {
		return nil, tooLarge(h.maxBody)
	}
	return body, nil
}

func (h *handler) bodyError(err error) error {
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return tooLarge(h.maxBody)
	}
	return badRequest("Unable to read the request body", err.Error())
}

func tooLarge(limit int64) *apiError {
	return &apiError{code: http.StatusRequestEntityTooLarge, msg: "Request body too large",
		details: fmt.Sprintf("the body is larger than %d bytes", limit)}
}

// decodeJSON parses body into v, answering 400 as OpenTSDB does when the
// content cannot be parsed.
func decodeJSON(body []byte, v any) error {
	if len(strings.TrimSpace(string(body))) == 0 {
		return badRequest("Missing message content", "Supply valid JSON formatted data in the body of your request")
	}
	if err := json.Unmarshal(body, v); err != nil {
		return badRequest("Unable to parse the given JSON", err.Error())
	}
	return nil
}

// flag says whether a query-string flag is set: present without a value,
// or with any value but "false" and "0" (OpenTSDB looks at presence only).
func flag(r *http.Request, name string) bool {
	vs, ok := r.URL.Query()[name]
	if !ok {
		return false
	}
	v := strings.ToLower(vs[0])
	return v != "false" && v != "0"
}

func (h *handler) serveVersion(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, h.version)
	return nil
}

// aggregatorNames are the aggregators /api/query accepts, sorted.
var aggregatorNames = []string{"avg", "count", "dev", "max", "mimmax", "mimmin", "min", "none", "sum", "zimsum"}

func (h *handler) serveAggregators(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, aggregatorNames)
	return nil
}
