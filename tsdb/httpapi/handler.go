// Package httpapi serves OpenTSDB 2.4's HTTP API (JSON serializer) and its
// telnet-style line protocol over a tsdb.Store, so Grafana's OpenTSDB data
// source, OpenTSDB clients, collectors (collectd's write_tsdb, tcollector)
// and dmonitor's own tsdb/opentsdb client work against dmonitor's embedded
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
	"os"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dmonitor/dmonitor/tsdb"
)

// Options configure the handler. Zero values mean the defaults. The limits
// (see limits.go) refuse what passes them with 400, or 413 for the body
// size, count the refusal in dmonitor_limit_hits_total and log it at warn
// level; a negative value turns a limit off, except MaxBodyBytes, which is
// always on.
type Options struct {
	// Logger receives store failures (the 500 answers), and, at warn
	// level and at most a few a minute, refusals for passing a limit and
	// writes refused for want of the token; nil discards.
	Logger *slog.Logger
	// Version is what /api/version answers. Its Version defaults to
	// "2.4.0", the OpenTSDB API version served, which is what clients that
	// look at it decide features by.
	Version VersionInfo
	// MaxBodyBytes bounds a request body (after gzip decompression);
	// larger ones are refused with 413. Default DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// MaxDatapointsPerRequest bounds the data points of one /api/put; a
	// body with more is refused whole, as soon as the decoder reaches the
	// first point past the limit. Default DefaultMaxDatapointsPerRequest.
	MaxDatapointsPerRequest int
	// MaxNewSeriesPerRequest bounds the series of one /api/put that the
	// store does not hold yet; a request with more is refused whole. A
	// store without CountNew cannot say which series it holds, and every
	// distinct series of the request counts. Default
	// DefaultMaxNewSeriesPerRequest.
	MaxNewSeriesPerRequest int
	// MaxNewSeriesPerMinute bounds the new series all /api/put requests
	// together create, as a token bucket that holds a minute's worth and
	// refills continuously; a request whose new series the bucket cannot
	// cover is refused whole and takes nothing from it. Only enforced over
	// a store with CountNew. Default DefaultMaxNewSeriesPerMinute.
	MaxNewSeriesPerMinute int
	// MaxNameBytes bounds the length in bytes of a metric name, a tag key
	// and a tag value; a point with a longer one is refused on its own.
	// Default DefaultMaxNameBytes.
	MaxNameBytes int
	// MaxTagsPerPoint bounds the tags of one point; a point with more is
	// refused on its own. Default DefaultMaxTagsPerPoint, OpenTSDB's
	// tsd.storage.max_tags.
	MaxTagsPerPoint int
	// Token is the bearer token writes from beyond loopback must carry
	// ("Authorization: Bearer <Token>"). A write is POST, PUT or DELETE on
	// /api/put, /api/annotation, /api/annotation/bulk, and DELETE on
	// /api/query. Writes from a loopback address (127.0.0.0/8, ::1) need
	// no token, and reads never do. Empty refuses every write from beyond
	// loopback, unless AllowUnauthenticatedWrites.
	//
	// The address is the TCP peer's: a reverse proxy on the same host
	// makes every request a loopback one, and X-Forwarded-For is not
	// trusted.
	Token string
	// AllowUnauthenticatedWrites accepts writes from any address without
	// a token: OpenTSDB's own behaviour, for a listener only trusted hosts
	// can reach.
	AllowUnauthenticatedWrites bool
	// Registerer receives dmonitor_limit_hits_total; nil registers
	// nothing.
	Registerer prometheus.Registerer
	// Now is the clock relative times ("1h-ago") and a missing end are
	// taken from, and the clock of the new-series bucket and of the log
	// limit; default time.Now.
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

// Handler serves the OpenTSDB API over one store: HTTP through ServeHTTP,
// and the line protocol through ServeConn, or both on one port through
// Listener.
type Handler struct {
	h *handler
}

// ServeHTTP serves the HTTP API.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.h.ServeHTTP(w, r) }

// handler serves the API over one store.
type handler struct {
	store     tsdb.Store
	annotator tsdb.Annotator // nil when the store has none
	suggester tsdb.Suggester // nil when the store has none
	lister    SeriesLister   // nil when the store has none
	tsuider   TSUIDer        // nil when the store has none
	counter   seriesCounter  // nil when the store has none
	log       *slog.Logger
	warn      *limitedLog // refusals, at most a few a minute
	version   VersionInfo
	limits    limits
	auth      auth
	now       func() time.Time
	routes    map[string]route
	host      string // the host tag of the stats
	counters  counters
	maxLine   int // the longest line of the line protocol
}

// route is one endpoint: the methods it takes, those of them that write
// (and so need the token from beyond loopback), and its function.
type route struct {
	methods []string
	writes  []string
	serve   func(w http.ResponseWriter, r *http.Request) error
}

// NewHandler returns the OpenTSDB API over store. It answers annotations
// when store implements tsdb.Annotator, suggestions when it implements
// tsdb.Suggester, TSUIDs when it implements TSUIDer, and lookups when it
// implements both SeriesLister and tsdb.Suggester; otherwise those
// endpoints answer 501.
//
// It registers dmonitor_limit_hits_total with opts.Registerer, reusing the
// counter already registered there under that name (a second handler, or
// a store counting its own limits in it); it panics, as
// prometheus.MustRegister does, when the registry holds a different metric
// of that name.
func NewHandler(store tsdb.Store, opts Options) *Handler {
	h := &handler{store: store, log: opts.Logger, version: opts.Version, now: opts.Now}
	h.annotator, _ = store.(tsdb.Annotator)
	h.suggester, _ = store.(tsdb.Suggester)
	h.lister, _ = store.(SeriesLister)
	h.tsuider, _ = store.(TSUIDer)
	h.counter, _ = store.(seriesCounter)
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.version.Version == "" {
		h.version.Version = "2.4.0"
	}
	if h.now == nil {
		h.now = time.Now
	}
	h.warn = newLimitedLog(h.log, h.now)
	h.limits = newLimits(opts, h.counter != nil)
	h.auth = newAuth(opts)
	h.maxLine = maxLineBytes(h.limits)
	h.host, _ = os.Hostname()
	if h.host == "" {
		h.host = "localhost"
	}
	get, post, put, del := http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete
	h.routes = map[string]route{
		"/api/put":   {[]string{post}, []string{post}, h.servePut},
		"/api/query": {[]string{get, post, del}, []string{del}, h.serveQuery},
		// POST on the read endpoints carries a query, not data.
		"/api/query/last":      {[]string{get, post}, nil, h.serveLast},
		"/api/suggest":         {[]string{get, post}, nil, h.serveSuggest},
		"/api/aggregators":     {[]string{get, post}, nil, h.serveAggregators},
		"/api/version":         {[]string{get, post}, nil, h.serveVersion},
		"/api/annotation":      {[]string{get, post, put, del}, []string{post, put, del}, h.serveAnnotation},
		"/api/annotation/bulk": {[]string{post, put, del}, []string{post, put, del}, h.serveAnnotationBulk},
		"/api/config/filters":  {[]string{get, post}, nil, h.serveFilters},
		"/api/search/lookup":   {[]string{get, post}, nil, h.serveLookup},
		"/api/stats":           {[]string{get, post}, nil, h.serveStats},
		"/api/serializers":     {[]string{get, post}, nil, h.serveSerializers},
		// Nothing to drop, so no write (see serveDropCaches).
		"/api/dropcaches": {[]string{get, post}, nil, h.serveDropCaches},
	}
	return &Handler{h: h}
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.counters.http.Add(1)
	path := r.URL.Path
	if len(path) > 1 {
		path = strings.TrimSuffix(path, "/")
	}
	rt, ok := h.routes[path]
	if !ok {
		writeError(w, &apiError{code: http.StatusNotFound, msg: "Endpoint not found", details: "no endpoint at " + r.URL.Path})
		return
	}
	if !slices.Contains(rt.methods, r.Method) {
		w.Header().Set("Allow", strings.Join(rt.methods, ", "))
		writeError(w, &apiError{code: http.StatusMethodNotAllowed, msg: "Method not allowed",
			details: fmt.Sprintf("The HTTP method [%s] is not permitted for this endpoint", r.Method)})
		return
	}
	if slices.Contains(rt.writes, r.Method) {
		if ae := h.authorize(r); ae != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="dmonitor"`)
			writeError(w, ae)
			return
		}
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
	case errors.Is(err, tsdb.ErrLimit):
		h.warn.Warn("opentsdb api: request refused by a limit of the store", "method", r.Method,
			"path", r.URL.Path, "remote", r.RemoteAddr, "err", err)
		return badRequest("Store limit exceeded", err.Error())
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

// body is a request body as a stream (see bodyReader).
type body struct {
	io.Reader           // the content, decompressed
	wire      io.Reader // the bytes as received, bounded by the limit
	close     func()
}

// drain reads and discards what is left of the body, up to the limit, so
// a client still sending a body we refused reads our answer instead of a
// reset connection.
func (b *body) drain() { _, _ = io.Copy(io.Discard, b.wire) }

// bodyReader returns the request body as a stream, decompressed when its
// Content-Encoding is gzip. Reading past the body limit, before or after
// decompression, fails with an error bodyError turns into 413. The caller
// must call close.
func (h *handler) bodyReader(w http.ResponseWriter, r *http.Request) (*body, error) {
	limit := h.limits.maxBody
	wire := http.MaxBytesReader(w, r.Body, limit)
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
		return &body{Reader: wire, wire: wire, close: func() {}}, nil
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(wire)
		if err != nil {
			return nil, h.bodyError(r, err)
		}
		// A small gzip body may inflate far past the limit: bound the
		// output too.
		return &body{Reader: &inflateLimit{r: zr, left: limit}, wire: wire, close: func() { zr.Close() }}, nil
	default:
		return nil, &apiError{code: http.StatusUnsupportedMediaType, msg: "Unsupported content encoding", details: "Content-Encoding " + enc + " is not supported (gzip is)"}
	}
}

// errInflated is the error of an inflateLimit read past its limit.
var errInflated = errors.New("decompressed body past the limit")

// inflateLimit reads from r until left bytes have been read, then fails
// with errInflated if r has more (io.LimitedReader would end the stream
// silently, and a cut body could parse).
type inflateLimit struct {
	r    io.Reader
	left int64
}

func (l *inflateLimit) Read(p []byte) (int, error) {
	if l.left <= 0 {
		var one [1]byte
		n, err := io.ReadFull(l.r, one[:])
		if n > 0 {
			return 0, errInflated
		}
		return 0, err // io.EOF at the end, else a corrupt stream's error
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

// readBody returns the whole request body (see bodyReader).
func (h *handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	b, err := h.bodyReader(w, r)
	if err != nil {
		return nil, err
	}
	defer b.close()
	content, err := io.ReadAll(b)
	if err != nil {
		return nil, h.bodyError(r, err)
	}
	return content, nil
}

// bodyError is the answer to an error reading the body: 413 past the
// limit, else the client's error (a corrupt gzip stream, a cut
// connection).
func (h *handler) bodyError(r *http.Request, err error) error {
	_, tooBig := errors.AsType[*http.MaxBytesError](err)
	if tooBig || errors.Is(err, errInflated) {
		offender := "the gzip body inflates past it"
		switch {
		case tooBig && r.ContentLength > 0:
			offender = fmt.Sprintf("Content-Length %d", r.ContentLength)
		case tooBig:
			offender = "a chunked body longer than that"
		}
		e := &apiError{code: http.StatusRequestEntityTooLarge,
			msg:     fmt.Sprintf("request body size limit %d bytes exceeded: %s", h.limits.maxBody, offender),
			details: "the limit counts bytes after gzip decompression; send fewer data points per request"}
		h.limitHit(r, limitBodyBytes, 1, e.msg)
		return e
	}
	return badRequest("Unable to read the request body", err.Error())
}

// decodeJSON parses body into v, answering 400 as OpenTSDB does when the
// content cannot be parsed.
// decodeBody reads r's body, bounded as readBody does, and decodes it
// into v as decodeJSON does.
func (h *handler) decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := h.readBody(w, r)
	if err != nil {
		return err
	}
	return decodeJSON(body, v)
}

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
