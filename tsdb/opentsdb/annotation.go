package opentsdb

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/dmonitor/dmonitor/tsdb"
)

// PutAnnotation stores a with PUT /api/annotation, which creates it or
// replaces every field of the one with the same start and TSUID. OpenTSDB
// keeps annotation times in whole seconds: Start and End are truncated.
func (c *Client) PutAnnotation(ctx context.Context, a tsdb.Annotation) error {
	if a.Start.Unix() < 1 {
		return fmt.Errorf("opentsdb annotation: start %s is not after 1970: %w", a.Start, tsdb.ErrInvalid)
	}
	if !a.End.IsZero() && a.End.Before(a.Start) {
		return fmt.Errorf("opentsdb annotation: end %s is before start %s: %w", a.End, a.Start, tsdb.ErrInvalid)
	}
	data, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("opentsdb annotation: encoding: %w: %w", err, tsdb.ErrInvalid)
	}
	// 304: nothing changed, the annotation is stored as asked.
	r := request{method: http.MethodPut, path: "/api/annotation", body: data, ok: []int{http.StatusOK, http.StatusNoContent, http.StatusNotModified}}
	_, err = c.do(ctx, r)
	return notFoundUnavailable(err)
}

// Annotation returns the annotation of tsuid ("" for a global one) that
// starts at start (to the second), from GET /api/annotation; an error
// wrapping tsdb.ErrNotFound if there is none.
func (c *Client) Annotation(ctx context.Context, tsuid string, start time.Time) (tsdb.Annotation, error) {
	r := request{method: http.MethodGet, path: "/api/annotation?" + annotationQS(tsuid, start), ok: []int{http.StatusOK}}
	resp, err := c.do(ctx, r)
	if err != nil {
		return tsdb.Annotation{}, err
	}
	var a tsdb.Annotation
	if err := decodeJSON(r.method, c.base+r.path, resp.body, &a); err != nil {
		return tsdb.Annotation{}, err
	}
	return a, nil
}

// DeleteAnnotation removes the annotation of tsuid ("" for a global one)
// that starts at start (to the second). OpenTSDB 2.4 answers 204 to a
// DELETE whether or not the annotation existed, so the client first GETs
// it to report tsdb.ErrNotFound as the contract asks; a concurrent delete
// between the two calls is not noticed.
func (c *Client) DeleteAnnotation(ctx context.Context, tsuid string, start time.Time) error {
	if _, err := c.Annotation(ctx, tsuid, start); err != nil {
		return err
	}
	r := request{method: http.MethodDelete, path: "/api/annotation?" + annotationQS(tsuid, start), ok: []int{http.StatusNoContent, http.StatusOK}}
	_, err := c.do(ctx, r)
	return err
}

func annotationQS(tsuid string, start time.Time) string {
	v := url.Values{}
	v.Set("start_time", strconv.FormatInt(start.Unix(), 10))
	if tsuid != "" {
		v.Set("tsuid", tsuid)
	}
	return v.Encode()
}

// Annotations returns the annotations of tsuid ("" for the global ones)
// that overlap [start, end], oldest first. OpenTSDB's GET /api/annotation
// fetches one annotation by its exact start, so a range is read with
// POST /api/query, which returns the annotations stored with the data it
// scans:
//   - for a series, a TSUID query of tsuid over the range;
//   - for global annotations, a query of Options.CarrierMetric with
//     globalAnnotations: OpenTSDB attaches them to each series of the
//     answer, so none come back when the carrier metric has no data in
//     the range. dmonitor.observer.up, the default, is written by every
//     observer's heartbeat.
//
// OpenTSDB finds annotations by their start time, in the hourly rows it
// scans; one that started before the range (more than the hour that
// contains start) is not found even if it overlaps.
func (c *Client) Annotations(ctx context.Context, tsuid string, start, end time.Time) ([]tsdb.Annotation, error) {
	if end.Before(start) {
		return nil, fmt.Errorf("opentsdb annotations: end %s is before start %s: %w", end, start, tsdb.ErrInvalid)
	}
	q := queryRequest{Start: start.UnixMilli(), End: end.UnixMilli(), MsResolution: true}
	// An hour per bucket cuts the datapoints shipped along with the notes.
	sq := subQuery{Aggregator: "sum", Downsample: "1h-count"}
	if tsuid == "" {
		sq.Metric = c.opts.CarrierMetric
		q.GlobalAnnotations = true
	} else {
		sq.TSUIDs = []string{tsuid}
	}
	q.Queries = []subQuery{sq}
	results, err := c.postQuery(ctx, q)
	if err != nil {
		if tsuid == "" && isNoSuchName(err) {
			// OpenTSDB refuses a query of a metric it has never seen
			// ("No such name for 'metrics'"): then there is nothing to
			// carry global annotations either.
			return nil, nil
		}
		return nil, err
	}
	type key struct {
		tsuid string
		start int64
	}
	seen := map[key]bool{}
	var out []tsdb.Annotation
	for _, r := range results {
		notes := r.Annotations
		if tsuid == "" {
			notes = r.GlobalAnnotations
		}
		for _, a := range notes {
			k := key{a.TSUID, a.Start.Unix()}
			if !strings.EqualFold(a.TSUID, tsuid) || seen[k] {
				continue
			}
			last := a.End
			if last.IsZero() {
				last = a.Start
			}
			if a.Start.After(end) || last.Before(start.Truncate(time.Second)) {
				continue
			}
			seen[k] = true
			out = append(out, a)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	return out, nil
}

// Suggest returns up to max names of kind (tsdb.SuggestMetrics,
// tsdb.SuggestTagKeys or tsdb.SuggestTagValues) that start with prefix,
// from GET /api/suggest; max <= 0 leaves OpenTSDB's default of 25.
// Matching is case sensitive.
func (c *Client) Suggest(ctx context.Context, kind, prefix string, max int) ([]string, error) {
	switch kind {
	case tsdb.SuggestMetrics, tsdb.SuggestTagKeys, tsdb.SuggestTagValues:
	default:
		return nil, fmt.Errorf("opentsdb suggest: unknown type %q: %w", kind, tsdb.ErrInvalid)
	}
	v := url.Values{}
	v.Set("type", kind)
	v.Set("q", prefix)
	if max > 0 {
		v.Set("max", strconv.Itoa(max))
	}
	r := request{method: http.MethodGet, path: "/api/suggest?" + v.Encode(), ok: []int{http.StatusOK}}
	resp, err := c.do(ctx, r)
	if err != nil {
		return nil, notFoundUnavailable(err)
	}
	var names []string
	if err := decodeJSON(r.method, c.base+r.path, resp.body, &names); err != nil {
		return nil, err
	}
	sort.Strings(names)
	if max > 0 && len(names) > max {
		names = names[:max]
	}
	return names, nil
}

// Version returns the TSD's /api/version map, such as "version": "2.4.1".
// It is the cheap call to check that the server answers.
func (c *Client) Version(ctx context.Context) (map[string]string, error) {
	r := request{method: http.MethodGet, path: "/api/version", ok: []int{http.StatusOK}}
	resp, err := c.do(ctx, r)
	if err != nil {
		return nil, notFoundUnavailable(err)
	}
	var raw map[string]any
	if err := decodeJSON(r.method, c.base+r.path, resp.body, &raw); err != nil {
		return nil, err
	}
	out := make(map[string]string, len(raw))
	for k, v := range raw {
		switch v := v.(type) {
		case string:
			out[k] = v
		default:
			out[k] = fmt.Sprint(v)
		}
	}
	return out, nil
}
