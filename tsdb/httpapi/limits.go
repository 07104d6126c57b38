package httpapi

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/dmonitor/dmonitor/tsdb"
)

// The defaults of the limits in Options.
const (
	// DefaultMaxBodyBytes is the largest request body accepted when
	// Options.MaxBodyBytes is zero, counted after gzip decompression.
	DefaultMaxBodyBytes = 16 << 20
	// DefaultMaxDatapointsPerRequest: OpenTSDB's clients send batches of
	// 50 (its documentation's advice, and tsdb/opentsdb's default) to a
	// few thousand. 20,000 points of one tag are some 1.7 MB of JSON,
	// and decoding them allocates some 35 MB, most of it garbage at once:
	// what one request past the limit costs before it is refused.
	DefaultMaxDatapointsPerRequest = 20_000
	// DefaultMaxNewSeriesPerRequest is more than a fleet's worth of series
	// for one check, and a tenth of what one abusive 13 MB request held.
	DefaultMaxNewSeriesPerRequest = 10_000
	// DefaultMaxNewSeriesPerMinute lets a store grow by 50,000 series a
	// minute through the API: some 42 MiB of heap (BenchmarkPutAbuse
	// measures 0.86 KiB a series in the embedded store). The store's own
	// limit on the series it holds bounds the total.
	DefaultMaxNewSeriesPerMinute = 50_000
	// DefaultMaxNameBytes is far above any real metric or tag name.
	DefaultMaxNameBytes = 256
	// DefaultMaxTagsPerPoint is OpenTSDB's tsd.storage.max_tags.
	DefaultMaxTagsPerPoint = 8
)

// The limit label values of dmonitor_limit_hits_total.
const (
	limitBodyBytes           = "body_bytes"
	limitDatapoints          = "datapoints_per_request"
	limitNewSeriesPerRequest = "new_series_per_request"
	limitNewSeriesPerMinute  = "new_series_per_minute"
	limitNameBytes           = "name_bytes"
	limitTagsPerPoint        = "tags_per_point"
)

// LimitHitsName and LimitHitsHelp are the name and help of the counter of
// refusals, the family every part of dmonitor that enforces a limit
// counts in (evaluator/observer declares it too). They must be declared
// identically: the registry refuses a second metric of the name with
// another help text.
const (
	LimitHitsName = "dmonitor_limit_hits_total"
	LimitHitsHelp = "Writes refused or cut short by a limit, by limit."
)

// seriesCounter is implemented by stores that can say how many of the
// series of points they do not hold yet (embedded.Store does): the count
// of distinct series among points that are new to the store.
type seriesCounter interface {
	CountNew(points []tsdb.Point) int
}

// limits are the Options' limits with defaults applied; zero means off.
type limits struct {
	maxBody      int64
	maxPoints    int
	maxNewPerReq int
	maxNewPerMin int
	maxNameBytes int
	maxTags      int
	newSeries    *rate.Limiter                 // nil when the per-minute limit is off or cannot be enforced
	hits         map[string]prometheus.Counter // by limit label
}

// orDefault is v, def when v is zero, and 0 (off) when v is negative.
func orDefault(v, def int) int {
	switch {
	case v < 0:
		return 0
	case v == 0:
		return def
	}
	return v
}

func newLimits(opts Options, canCount bool) limits {
	l := limits{
		maxBody:      opts.MaxBodyBytes,
		maxPoints:    orDefault(opts.MaxDatapointsPerRequest, DefaultMaxDatapointsPerRequest),
		maxNewPerReq: orDefault(opts.MaxNewSeriesPerRequest, DefaultMaxNewSeriesPerRequest),
		maxNewPerMin: orDefault(opts.MaxNewSeriesPerMinute, DefaultMaxNewSeriesPerMinute),
		maxNameBytes: orDefault(opts.MaxNameBytes, DefaultMaxNameBytes),
		maxTags:      orDefault(opts.MaxTagsPerPoint, DefaultMaxTagsPerPoint),
	}
	if l.maxBody <= 0 {
		l.maxBody = DefaultMaxBodyBytes
	}
	if l.maxNewPerMin > 0 && canCount {
		// A minute's worth in the bucket, refilled continuously: a burst
		// of a minute's quota is allowed, then the steady rate.
		l.newSeries = rate.NewLimiter(rate.Limit(float64(l.maxNewPerMin)/60), l.maxNewPerMin)
	}
	hits := prometheus.NewCounterVec(prometheus.CounterOpts{Name: LimitHitsName, Help: LimitHitsHelp}, []string{"limit"})
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(hits); err != nil {
			are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err)
			if !ok {
				panic(fmt.Sprintf("opentsdb api: register %s: %v", LimitHitsName, err))
			}
			existing, ok := are.ExistingCollector.(*prometheus.CounterVec)
			if !ok {
				panic(fmt.Sprintf("opentsdb api: register %s: the registry holds a %T of that name, not a counter vector", LimitHitsName, are.ExistingCollector))
			}
			hits = existing
		}
	}
	l.hits = map[string]prometheus.Counter{}
	for _, name := range []string{limitBodyBytes, limitDatapoints, limitNewSeriesPerRequest, limitNewSeriesPerMinute, limitNameBytes, limitTagsPerPoint, limitLineBytes} {
		// Created up front, so every limit is exported at 0 before its
		// first hit and a rate() over it starts from a value.
		l.hits[name] = hits.WithLabelValues(name)
	}
	return l
}

// limitHit records refusals for passing limit: n more in the counter, and
// a warning with the caller's address, unless too many were logged lately.
func (h *handler) limitHit(r *http.Request, limit string, n int, msg string) {
	h.limits.hits[limit].Add(float64(n))
	h.warn.Warn("opentsdb api: refused for passing a limit", "limit", limit, "remote", r.RemoteAddr,
		"method", r.Method, "path", r.URL.Path, "refused", n, "err", msg)
}

// limitError is the answer refusing a whole request for passing limit.
func (h *handler) limitError(r *http.Request, limit, msg, details string) *apiError {
	h.limitHit(r, limit, 1, msg)
	return badRequest(msg, details)
}

// checkPointLimits returns which per-point limit a point of metric and
// tags passes and why, or "" and "". It runs before checkName, which
// would quote a long name whole.
func (l *limits) checkPointLimits(metric string, tags map[string]string) (reason, limit string) {
	if l.maxTags > 0 && len(tags) > l.maxTags {
		return fmt.Sprintf("tags per point limit %d exceeded: %d tags on %s", l.maxTags, len(tags), seriesString(metric, tags)), limitTagsPerPoint
	}
	if l.maxNameBytes <= 0 {
		return "", ""
	}
	tooLong := func(what, s string) string {
		return fmt.Sprintf("name length limit %d bytes exceeded: %s of %d bytes, %s", l.maxNameBytes, what, len(s), clip(s))
	}
	if len(metric) > l.maxNameBytes {
		return tooLong("metric", metric), limitNameBytes
	}
	for k, v := range tags {
		if len(k) > l.maxNameBytes {
			return tooLong("tag key", k) + " in " + clip(metric), limitNameBytes
		}
		if len(v) > l.maxNameBytes {
			return tooLong(fmt.Sprintf("tag %s value", clip(k)), v) + " in " + clip(metric), limitNameBytes
		}
	}
	return "", ""
}

// checkNewSeries applies the new-series limits to the points a put is
// about to store, refusing the whole request past either. It counts the
// series the store does not hold when the store can say, else every
// distinct series of the request (for the per-request limit only).
func (h *handler) checkNewSeries(r *http.Request, points []tsdb.Point) error {
	l := &h.limits
	if len(points) == 0 || l.maxNewPerReq <= 0 && l.newSeries == nil {
		return nil
	}
	var n int
	if h.counter != nil {
		n = h.counter.CountNew(points)
	} else {
		n = countDistinct(points)
	}
	if n == 0 {
		return nil
	}
	if l.maxNewPerReq > 0 && n > l.maxNewPerReq {
		msg := fmt.Sprintf("new series limit per request %d exceeded: %d new series, first %s", l.maxNewPerReq, n, h.firstNew(points))
		return h.limitError(r, limitNewSeriesPerRequest, msg,
			"none of the data points were stored; send the new series in smaller requests")
	}
	if l.newSeries == nil {
		return nil
	}
	// AllowN takes the tokens only when there are enough, so a refused
	// request leaves the bucket to the requests that fit.
	now := h.now()
	if !l.newSeries.AllowN(now, n) {
		left := max(0, int(math.Floor(l.newSeries.TokensAt(now))))
		msg := fmt.Sprintf("new series limit per minute %d exceeded: %d new series, %d allowed now, first %s",
			l.maxNewPerMin, n, left, h.firstNew(points))
		return h.limitError(r, limitNewSeriesPerMinute, msg,
			"none of the data points were stored; the allowance refills continuously, send the new series later")
	}
	return nil
}

// firstNew names the first series of points that is new: to the store
// when it can say, else the first series of the request.
func (h *handler) firstNew(points []tsdb.Point) string {
	if h.counter != nil {
		for i := range points {
			if h.counter.CountNew(points[i:i+1]) > 0 {
				return seriesString(points[i].Metric, points[i].Tags)
			}
		}
	}
	return seriesString(points[0].Metric, points[0].Tags)
}

// countDistinct counts the distinct series of points.
func countDistinct(points []tsdb.Point) int {
	seen := make(map[string]struct{})
	var key []byte
	keys := make([]string, 0, 8)
	for i := range points {
		key, keys = appendSeriesKey(key[:0], keys[:0], &points[i])
		seen[string(key)] = struct{}{}
	}
	return len(seen)
}

// appendSeriesKey appends p's series to key: the metric and the tags in
// key order, each string preceded by its length so different series never
// share a key. keys is scratch space for sorting, returned for reuse.
func appendSeriesKey(key []byte, keys []string, p *tsdb.Point) ([]byte, []string) {
	for k := range p.Tags {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	key = fmt.Appendf(key, "%d:%s", len(p.Metric), p.Metric)
	for _, k := range keys {
		v := p.Tags[k]
		key = fmt.Appendf(key, "%d:%s%d:%s", len(k), k, len(v), v)
	}
	return key, keys
}

// seriesString is metric{k=v,...} with the tags sorted, each name clipped,
// for messages.
func seriesString(metric string, tags map[string]string) string {
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	b.WriteString(clip(metric))
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		if i == DefaultMaxTagsPerPoint {
			fmt.Fprintf(&b, "...%d more", len(keys)-i)
			break
		}
		b.WriteString(clip(k))
		b.WriteByte('=')
		b.WriteString(clip(tags[k]))
	}
	b.WriteByte('}')
	return b.String()
}

// clipBytes is how much of a name a message quotes.
const clipBytes = 64

// clip returns s, or its start and its length when it is longer than a
// message should quote.
func clip(s string) string {
	if len(s) <= clipBytes {
		return s
	}
	cut := clipBytes
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s...(%d bytes)", s[:cut], len(s))
}

// Logging limits: a burst, then one warning per interval.
const (
	logBurst    = 5
	logInterval = 10 * time.Second
)

// limitedLog logs warnings, dropping them past logBurst and then one per
// logInterval, so a flood of refused requests cannot flood the log. The
// next warning logged after some were dropped says how many.
type limitedLog struct {
	log     *slog.Logger
	now     func() time.Time
	lim     *rate.Limiter
	dropped atomic.Int64
}

func newLimitedLog(log *slog.Logger, now func() time.Time) *limitedLog {
	return &limitedLog{log: log, now: now, lim: rate.NewLimiter(rate.Every(logInterval), logBurst)}
}

// Warn logs msg with args at warn level, unless too many were logged
// lately.
func (l *limitedLog) Warn(msg string, args ...any) {
	if !l.lim.AllowN(l.now(), 1) {
		l.dropped.Add(1)
		return
	}
	if n := l.dropped.Swap(0); n > 0 {
		args = append(args, "dropped_warnings", n)
	}
	l.log.Warn(msg, args...)
}
