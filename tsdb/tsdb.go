// Package tsdb defines the time-series store every part of dmonitor writes
// check results and alert history to, and queries rules against. Its
// vocabulary is OpenTSDB's: a metric name, string tags, filters, aggregators
// and downsampling. Implementations live in sub-packages: tsdb/embedded (on
// local disk) and tsdb/opentsdb (a real OpenTSDB over HTTP).
package tsdb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Point is one datapoint.
type Point struct {
	Metric string
	Tags   map[string]string
	Time   time.Time
	Value  float64
}

// Sample is one value of a series at a time.
type Sample struct {
	Time  time.Time
	Value float64
}

// Series is one time series in a query answer. For an aggregated answer Tags
// holds the tags whose value is the same in every series that was
// aggregated, and AggregatedTags the keys whose values differed (OpenTSDB's
// "tags" and "aggregateTags").
type Series struct {
	Metric         string
	Tags           map[string]string
	AggregatedTags []string
	Samples        []Sample
}

// FilterType names an OpenTSDB tag filter.
type FilterType string

// The OpenTSDB 2.4 filter types.
const (
	LiteralOr     FilterType = "literal_or"      // value is one of a|b|c
	ILiteralOr    FilterType = "iliteral_or"     // the same, case-insensitive
	NotLiteralOr  FilterType = "not_literal_or"  // value is none of a|b|c
	NotILiteralOr FilterType = "not_iliteral_or" // the same, case-insensitive
	Wildcard      FilterType = "wildcard"        // * matches any run of characters
	IWildcard     FilterType = "iwildcard"       // the same, case-insensitive
	Regexp        FilterType = "regexp"          // RE2, anchored at both ends
	NotKey        FilterType = "not_key"         // the series has no such tag; Expr must be empty
)

// Filter selects series by one tag. A series without the tag never matches,
// except a NotKey filter, which matches only those. With GroupBy, every
// distinct value of the tag gets its own output series (a NotKey filter
// never groups: its series have no value to group by).
type Filter struct {
	Type    FilterType
	Tag     string
	Expr    string
	GroupBy bool
}

// Downsample turns each series into one value per Interval, combined with
// Aggregator. Fill says what an empty interval yields: "none" (skip it, the
// default), "nan", "null" or "zero".
//
// All makes the whole query range [Start, End] one bucket, stamped with
// Start: OpenTSDB 2.4's "0all-" downsampler. Interval must then be zero,
// and Fill changes nothing, since a series without samples in the range is
// not in the answer.
type Downsample struct {
	Interval   time.Duration
	Aggregator string
	Fill       string
	All        bool
}

// RateOptions are OpenTSDB's rateOptions: how a rate treats a decrease of
// a series that is a counter. The zero value is a plain rate, negative
// across a decrease. Without Counter the other fields change nothing.
type RateOptions struct {
	// Counter says a decrease is a counter that wrapped at CounterMax (or
	// was reset): the rate across it is (CounterMax - prev + cur) / seconds.
	Counter bool
	// CounterMax is the value the counter wraps at; zero means OpenTSDB's
	// default, math.MaxInt64 (Java's Long.MAX_VALUE).
	CounterMax float64
	// ResetValue, when positive, turns a rate across a decrease that
	// exceeds it into 0: the counter was reset, not wrapped.
	ResetValue float64
	// DropResets leaves out the rate across a decrease altogether.
	DropResets bool
}

// Query asks for one metric over [Start, End]. Aggregator combines all the
// series of one group into one: sum, avg, min, max, count, dev, zimsum,
// mimmin, mimmax, or none (no combining). Rate turns each series into its
// per-second rate of change after downsampling and before aggregation;
// RateOptions apply only with Rate. ExplicitTags keeps only the series
// whose tag keys are exactly the tags the filters name (OpenTSDB's
// explicitTags), so a series with an extra tag is not aggregated in.
type Query struct {
	Metric       string
	Filters      []Filter
	Start, End   time.Time
	Aggregator   string
	Downsample   *Downsample
	Rate         bool
	RateOptions  RateOptions
	ExplicitTags bool
}

// Store is a time-series store.
type Store interface {
	// Append writes points. When it returns nil the points are durable: they
	// survive a crash of this process. Points may be older than the newest
	// already stored, within the store's out-of-order window.
	Append(ctx context.Context, points []Point) error
	// Query answers q; no matching series is an empty answer, not an error.
	Query(ctx context.Context, q Query) ([]Series, error)
	// Last returns, per series of metric matching filters, its newest sample
	// (one Sample per Series).
	Last(ctx context.Context, metric string, filters []Filter) ([]Series, error)
	// Close flushes and releases the store.
	Close() error
}

// ErrInvalid is wrapped by errors that blame the request (a bad metric name,
// an unknown aggregator), as opposed to the store.
var ErrInvalid = errors.New("invalid request")

// ErrLimit is wrapped by errors that refuse points for passing one of the
// store's limits (total series, new series per request or per minute, the
// length of a name): the error names the limit and the offender. It also
// wraps ErrInvalid, since retrying the same points will not help.
var ErrLimit = fmt.Errorf("%w: limit exceeded", ErrInvalid)

// SanitizeTag returns v with every character outside OpenTSDB's allowed set
// (a-z A-Z 0-9 - _ . /) replaced by '_', so a value is stored altered, never
// refused or dropped. An empty value becomes "_": OpenTSDB refuses empty tags.
func SanitizeTag(v string) string {
	if v == "" {
		return "_"
	}
	// strings.Map returns v itself, unallocated, when nothing changes.
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' || r == '/' {
			return r
		}
		return '_'
	}, v)
}

// ErrUnavailable is wrapped by errors that say the store could not be
// reached or failed on its side (a refused connection, a timeout, an HTTP
// 5xx): the same request may succeed later. A spool keeps such points and
// replays them; an error without it blames the data and will not succeed by
// retrying.
var ErrUnavailable = errors.New("store unavailable")

// ErrNotFound is wrapped by errors about something that does not exist,
// such as an annotation to delete.
var ErrNotFound = errors.New("not found")

// Annotation is an OpenTSDB annotation: a note on a moment or a span of
// time, either global (TSUID empty) or on one series.
type Annotation struct {
	Start       time.Time
	End         time.Time // zero for a moment
	TSUID       string    // the series' OpenTSDB UID in hex; empty for a global annotation
	Description string
	Notes       string
	Custom      map[string]string
}

// annotationJSON is OpenTSDB's annotation object: times in Unix seconds,
// endTime 0 for a moment.
type annotationJSON struct {
	TSUID       string            `json:"tsuid,omitempty"`
	Description string            `json:"description"`
	Notes       string            `json:"notes"`
	Custom      map[string]string `json:"custom,omitempty"`
	StartTime   int64             `json:"startTime"`
	EndTime     int64             `json:"endTime"`
}

// MarshalJSON encodes a as OpenTSDB's annotation object, so our API serves
// it and our client sends it in the one shape OpenTSDB documents.
func (a Annotation) MarshalJSON() ([]byte, error) {
	j := annotationJSON{TSUID: a.TSUID, Description: a.Description, Notes: a.Notes, Custom: a.Custom, StartTime: a.Start.Unix()}
	if !a.End.IsZero() {
		j.EndTime = a.End.Unix()
	}
	return json.Marshal(j)
}

// UnmarshalJSON decodes OpenTSDB's annotation object.
func (a *Annotation) UnmarshalJSON(b []byte) error {
	var j annotationJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*a = Annotation{TSUID: j.TSUID, Description: j.Description, Notes: j.Notes, Custom: j.Custom, Start: time.Unix(j.StartTime, 0)}
	if j.EndTime > 0 {
		a.End = time.Unix(j.EndTime, 0)
	}
	return nil
}

// Annotator stores annotations. Alert transitions are written as
// annotations, so Grafana and the OpenTSDB UI can overlay them on graphs.
type Annotator interface {
	// PutAnnotation stores a, replacing any annotation with the same Start
	// and TSUID.
	PutAnnotation(ctx context.Context, a Annotation) error
	// Annotations returns the annotations of tsuid ("" for the global ones)
	// that overlap [start, end], oldest first.
	Annotations(ctx context.Context, tsuid string, start, end time.Time) ([]Annotation, error)
	// DeleteAnnotation removes the annotation with tsuid and start; an
	// error wrapping ErrNotFound when there is none.
	DeleteAnnotation(ctx context.Context, tsuid string, start time.Time) error
}

// Suggest kinds, as OpenTSDB's /api/suggest names them.
const (
	SuggestMetrics   = "metrics"
	SuggestTagKeys   = "tagk"
	SuggestTagValues = "tagv"
)

// Suggester lists the names a store knows, for auto-completion.
type Suggester interface {
	// Suggest returns up to max names of kind (SuggestMetrics,
	// SuggestTagKeys or SuggestTagValues) that start with prefix, sorted.
	Suggest(ctx context.Context, kind, prefix string, max int) ([]string, error)
}
