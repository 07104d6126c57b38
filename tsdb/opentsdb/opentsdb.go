// Package opentsdb is a client of OpenTSDB 2.4's HTTP API: a tsdb.Store,
// tsdb.Annotator and tsdb.Suggester backed by a real OpenTSDB (or by any
// server that speaks the same API, such as dmonitor's embedded one).
//
// It follows the API as documented at opentsdb.net/docs/build/html/api_http:
//
//   - Append posts batches of points to /api/put?details, gzip-compressed, and
//     reports exactly which points were stored, which OpenTSDB refused and
//     which could not be delivered (see PutError).
//   - Query posts to /api/query with msResolution and filters.
//   - Last posts to /api/query/last; see Client.Last for what that endpoint
//     cannot do.
//   - Annotations use /api/annotation, and /api/query for ranges; see
//     Client.Annotations.
//   - Suggest and Version use /api/suggest and /api/version.
//
// Every failure wraps one of tsdb's sentinels: tsdb.ErrInvalid when the
// request is at fault (OpenTSDB answered 400 or 413), tsdb.ErrUnavailable
// when the store could not be reached or failed on its side (a refused
// connection, a timeout, 5xx, 408, 429, and other 4xx answers that say the
// server is not taking the request as configured, such as the 404 of a
// read-only TSD), tsdb.ErrNotFound for a missing annotation. Unavailable
// answers are retried with exponential backoff before they are returned.
package opentsdb

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dmonitor/dmonitor/tsdb"
)

// Defaults for the zero fields of Options.
const (
	DefaultBatchSize      = 50 // OpenTSDB's documented starting point
	DefaultTimeout        = 10 * time.Second
	DefaultMaxRetries     = 3
	DefaultInitialBackoff = 200 * time.Millisecond
	DefaultMaxBackoff     = 5 * time.Second
	DefaultLastBackScan   = 24 * time.Hour
	DefaultCarrierMetric  = "dmonitor.observer.up"
)

// Options configure a Client. Only URL is required.
type Options struct {
	// URL is the TSD's base address, such as http://opentsdb:4242.
	URL string
	// BatchSize is the most points sent in one /api/put request
	// (default 50).
	BatchSize int
	// DisableGzip sends put bodies uncompressed. By default they are gzip
	// compressed with Content-Encoding: gzip, which OpenTSDB accepts since 2.2.
	DisableGzip bool
	// Timeout bounds each HTTP attempt (default 10s); the caller's context
	// bounds the whole call, retries included.
	Timeout time.Duration
	// MaxRetries is how many times a request that failed for want of the
	// store is repeated (default 3; negative: never).
	MaxRetries int
	// InitialBackoff is the wait before the first retry (default 200ms); each
	// later wait doubles, up to MaxBackoff (default 5s). A Retry-After header
	// on a 429 or 503 answer is honoured up to MaxBackoff.
	InitialBackoff, MaxBackoff time.Duration
	// LastBackScan is the backScan of /api/query/last, rounded up to whole
	// hours (default 24h). Negative sends backScan 0: OpenTSDB then finds
	// series through its meta table counters (tsd.core.meta.enable_tsuid_tracking).
	LastBackScan time.Duration
	// CarrierMetric is the metric whose query carries global annotations
	// back (default "dmonitor.observer.up"); see Client.Annotations.
	CarrierMetric string
	// Token, when set, is sent with every request as a bearer token: what
	// the OpenTSDB API of another dmonitor node (control.token_file there)
	// or an authenticating proxy in front of OpenTSDB asks of writers that
	// are not on its host.
	Token string
	// HTTPClient sends the requests (default: a client of its own with
	// keep-alive connections, as OpenTSDB recommends for puts).
	HTTPClient *http.Client
	// Logger receives a warning per refused point and per retry (default:
	// discard).
	Logger *slog.Logger
}

// Client talks to one OpenTSDB. It is safe for concurrent use.
type Client struct {
	base       string // URL without a trailing slash
	opts       Options
	http       *http.Client
	ownsClient bool
	log        *slog.Logger
	zpool      sync.Pool // of *gzip.Writer
}

var (
	_ tsdb.Store     = (*Client)(nil)
	_ tsdb.Annotator = (*Client)(nil)
	_ tsdb.Suggester = (*Client)(nil)
)

// New returns a Client of the OpenTSDB at opts.URL. It does not contact the
// server; call Version to check that it answers.
func New(opts Options) (*Client, error) {
	u, err := url.Parse(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("opentsdb url %q: %w", opts.URL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("opentsdb url %q: want http://host:port or https://host:port", opts.URL)
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = DefaultBatchSize
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.MaxRetries == 0 {
		opts.MaxRetries = DefaultMaxRetries
	} else if opts.MaxRetries < 0 {
		opts.MaxRetries = 0
	}
	if opts.InitialBackoff <= 0 {
		opts.InitialBackoff = DefaultInitialBackoff
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = DefaultMaxBackoff
	}
	if opts.MaxBackoff < opts.InitialBackoff {
		opts.MaxBackoff = opts.InitialBackoff
	}
	if opts.LastBackScan == 0 {
		opts.LastBackScan = DefaultLastBackScan
	}
	if opts.CarrierMetric == "" {
		opts.CarrierMetric = DefaultCarrierMetric
	}
	c := &Client{
		base: strings.TrimRight(u.String(), "/"),
		opts: opts,
		http: opts.HTTPClient,
		log:  opts.Logger,
	}
	if c.http == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		// One writer posts batch after batch; keep its connections.
		t.MaxIdleConnsPerHost = 16
		c.http = &http.Client{Transport: t}
		c.ownsClient = true
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// Close releases the idle connections of the client's own HTTP client.
// Append writes through at once, so there is nothing to flush.
func (c *Client) Close() error {
	if c.ownsClient {
		c.http.CloseIdleConnections()
	}
	return nil
}

// StatusError is an HTTP answer that is not a success. Message, Details and
// Trace come from OpenTSDB's error body {"error":{"code","message",
// "details","trace"}}; when the body is not one, Message holds its start.
// It unwraps to tsdb.ErrInvalid, tsdb.ErrUnavailable or tsdb.ErrNotFound.
type StatusError struct {
	Method     string
	URL        string
	StatusCode int
	Message    string
	Details    string
	Trace      string

	kind error
}

// Error names the method, URL, status and OpenTSDB's message (not its trace).
func (e *StatusError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %d %s", e.Method, e.URL, e.StatusCode, http.StatusText(e.StatusCode))
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.Details != "" && e.Details != e.Message {
		b.WriteString(" (")
		b.WriteString(e.Details)
		b.WriteString(")")
	}
	return b.String()
}

// Unwrap returns the tsdb sentinel the status stands for.
func (e *StatusError) Unwrap() error { return e.kind }

// errorBody is OpenTSDB's error object.
type errorBody struct {
	Error *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Details string `json:"details"`
		Trace   string `json:"trace"`
	} `json:"error"`
}

// newStatusError builds the error for an unsuccessful answer with body.
func newStatusError(method, u string, code int, body []byte) *StatusError {
	e := &StatusError{Method: method, URL: u, StatusCode: code, kind: classify(code)}
	var eb errorBody
	if json.Unmarshal(body, &eb) == nil && eb.Error != nil {
		e.Message, e.Details, e.Trace = eb.Error.Message, eb.Error.Details, eb.Error.Trace
	} else {
		s := strings.TrimSpace(string(body))
		if len(s) > 200 {
			s = s[:200] + "…"
		}
		e.Message = s
	}
	return e
}

// classify maps a failure status to the sentinel a caller acts on. 400 and
// 413 blame the request: sending it again cannot help. 404 is ErrNotFound
// here and turned into ErrUnavailable by the callers for whom it means a
// missing endpoint (a read-only TSD answers 404 to /api/put).
func classify(code int) error {
	switch {
	case code == http.StatusBadRequest, code == http.StatusRequestEntityTooLarge:
		return tsdb.ErrInvalid
	case code == http.StatusNotFound:
		return tsdb.ErrNotFound
	default:
		return tsdb.ErrUnavailable
	}
}

// retryable says whether an answer with code may succeed if sent again soon.
func retryable(code int) bool {
	return code >= 500 || code == http.StatusRequestTimeout || code == http.StatusTooManyRequests
}

// request is one API call: its method, path with query, body and the
// statuses that count as success.
type request struct {
	method  string
	path    string // from the base URL, with its query string
	body    []byte // nil: no body
	gzipped bool
	ok      []int
}

// response is a successful answer.
type response struct {
	status int
	body   []byte
}

// maxBody bounds the size of an answer read into memory.
const maxBody = 256 << 20

// do sends r, retrying while the store is unavailable, until an answer has
// one of r.ok's statuses or another answer that is not worth retrying.
// Errors wrap tsdb.ErrUnavailable, or a StatusError; with the caller's
// context done, they wrap both ctx.Err() and tsdb.ErrUnavailable.
func (c *Client) do(ctx context.Context, r request) (response, error) {
	u := c.base + r.path
	backoff := c.opts.InitialBackoff
	for attempt := 0; ; attempt++ {
		resp, wait, err := c.attempt(ctx, r, u)
		if err == nil {
			return resp, nil
		}
		if ctx.Err() != nil {
			return response{}, fmt.Errorf("%s %s: %w: %w", r.method, u, tsdb.ErrUnavailable, context.Cause(ctx))
		}
		if wait < 0 || attempt >= c.opts.MaxRetries {
			if wait >= 0 && attempt > 0 {
				return response{}, fmt.Errorf("after %d attempts: %w", attempt+1, err)
			}
			return response{}, err
		}
		d := backoff
		if wait > d {
			d = min(wait, c.opts.MaxBackoff)
		}
		c.log.Warn("opentsdb request failed; retrying", "method", r.method, "url", u, "attempt", attempt+1, "backoff", d, "err", err)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return response{}, fmt.Errorf("%s %s: %w: %w (last failure: %v)", r.method, u, tsdb.ErrUnavailable, context.Cause(ctx), err)
		case <-t.C:
		}
		backoff = min(backoff*2, c.opts.MaxBackoff)
	}
}

// attempt sends r once. The duration is negative when a failure is final,
// else the least wait the server asked for (0 if it did not say).
func (c *Client) attempt(ctx context.Context, r request, u string) (response, time.Duration, error) {
	actx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(actx, r.method, u, body)
	if err != nil {
		return response{}, -1, fmt.Errorf("%s %s: %w", r.method, u, err)
	}
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
		if r.gzipped {
			req.Header.Set("Content-Encoding", "gzip")
		}
	}
	req.Header.Set("Accept", "application/json")
	if c.opts.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.opts.Token)
	}
	res, err := c.http.Do(req)
	if err != nil {
		return response{}, 0, fmt.Errorf("%s %s: %w: %w", r.method, u, tsdb.ErrUnavailable, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, maxBody+1))
	if err != nil {
		return response{}, 0, fmt.Errorf("%s %s: reading the answer: %w: %w", r.method, u, tsdb.ErrUnavailable, err)
	}
	if len(data) > maxBody {
		return response{}, -1, fmt.Errorf("%s %s: answer larger than %d bytes: %w", r.method, u, maxBody, tsdb.ErrInvalid)
	}
	for _, code := range r.ok {
		if res.StatusCode == code {
			return response{status: res.StatusCode, body: data}, 0, nil
		}
	}
	serr := newStatusError(r.method, u, res.StatusCode, data)
	if !retryable(res.StatusCode) {
		return response{}, -1, serr
	}
	return response{}, retryAfter(res.Header.Get("Retry-After")), serr
}

// retryAfter parses a Retry-After header in seconds; 0 if absent or a date.
func retryAfter(v string) time.Duration {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n <= 0 {
		return 0
	}
	return time.Duration(n) * time.Second
}

// notFoundUnavailable turns the ErrNotFound of a 404 into ErrUnavailable,
// for endpoints that exist on every TSD that serves them: their 404 says
// the server does not (a read-only TSD, a proxy in front of something else).
func notFoundUnavailable(err error) error {
	var se *StatusError
	if errors.As(err, &se) && se.kind == tsdb.ErrNotFound {
		se.kind = tsdb.ErrUnavailable
	}
	return err
}

// decodeJSON unmarshals an answer, blaming the server when it is not the
// JSON the API documents.
func decodeJSON(method, u string, body []byte, v any) error {
	if err := json.Unmarshal(sanitizeNonFinite(body), v); err != nil {
		return fmt.Errorf("%s %s: undocumented answer: %w: %w", method, u, tsdb.ErrUnavailable, err)
	}
	return nil
}

// isNoSuchName says whether err is OpenTSDB's 400 for a metric, tag key or
// tag value it has never stored ("No such name for 'metrics': 'x'"): for a
// read, an empty answer.
func isNoSuchName(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.StatusCode == http.StatusBadRequest &&
		strings.Contains(se.Message+" "+se.Details, "No such name for")
}
