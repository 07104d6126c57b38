package opentsdb

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/dmonitor/dmonitor/tsdb"
)

// Refused is a point the store will not take, and why.
type Refused struct {
	Point  tsdb.Point
	Reason string
}

// PutError reports an Append that did not store every point. Every point
// of the call is in exactly one of three places: counted in Stored, listed
// in Refused (the data's fault: NaN or ±Inf refused before sending, or
// points OpenTSDB named in its details answer; sending them again fails
// again), or listed in Unavailable (never stored because the store could
// not be reached or failed on its side, including the batches after the
// one that failed, which were not attempted; sending them later may
// succeed).
//
// It unwraps to tsdb.ErrInvalid when Refused is not empty, to
// tsdb.ErrUnavailable when Unavailable is not empty, and to Cause. A spool
// keeps Unavailable, not the whole call: the stored points are in
// OpenTSDB already and the refused ones would be refused again.
type PutError struct {
	Stored      int
	Refused     []Refused
	Unavailable []tsdb.Point
	// Unnamed counts failures OpenTSDB reported but did not name in its
	// details (a server that does not follow the API); those points are
	// neither in Refused nor counted in Stored.
	Unnamed int
	// Cause is why the Unavailable points were not stored.
	Cause error
}

// Unstored returns the points that were not stored because OpenTSDB was
// unavailable: a spool keeps these, and only these (the refused ones would
// be refused again).
func (e *PutError) Unstored() []tsdb.Point { return e.Unavailable }

// Error counts the outcomes and names the first refused and undelivered points.
func (e *PutError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "opentsdb put: %d stored", e.Stored)
	if len(e.Refused) > 0 {
		fmt.Fprintf(&b, ", %d refused", len(e.Refused))
		for i, r := range e.Refused {
			if i == 5 {
				fmt.Fprintf(&b, " (and %d more)", len(e.Refused)-5)
				break
			}
			fmt.Fprintf(&b, "; %s: %s", pointString(r.Point), r.Reason)
		}
	}
	if e.Unnamed > 0 {
		fmt.Fprintf(&b, ", %d refused without being named", e.Unnamed)
	}
	if len(e.Unavailable) > 0 {
		fmt.Fprintf(&b, ", %d not stored (first %s)", len(e.Unavailable), pointString(e.Unavailable[0]))
		if e.Cause != nil {
			fmt.Fprintf(&b, ": %v", e.Cause)
		}
	}
	return b.String()
}

// Unwrap returns the sentinels and the cause, for errors.Is and errors.As.
func (e *PutError) Unwrap() []error {
	var errs []error
	if len(e.Refused) > 0 || e.Unnamed > 0 {
		errs = append(errs, tsdb.ErrInvalid)
	}
	if len(e.Unavailable) > 0 {
		errs = append(errs, tsdb.ErrUnavailable)
	}
	if e.Cause != nil {
		errs = append(errs, e.Cause)
	}
	return errs
}

// pointString names a point the way OpenTSDB's telnet put does:
// metric time {tags}.
func pointString(p tsdb.Point) string {
	keys := make([]string, 0, len(p.Tags))
	for k := range p.Tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(p.Metric)
	b.WriteString("{")
	for i, k := range keys {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(k)
		b.WriteString("=")
		b.WriteString(p.Tags[k])
	}
	b.WriteString("} ")
	b.WriteString(p.Time.UTC().Format(time.RFC3339Nano))
	b.WriteString(" ")
	b.WriteString(strconv.FormatFloat(p.Value, 'g', -1, 64))
	return b.String()
}

// putPoint is one datapoint of /api/put, its timestamp in milliseconds.
type putPoint struct {
	Metric    string            `json:"metric"`
	Timestamp int64             `json:"timestamp"`
	Value     float64           `json:"value"`
	Tags      map[string]string `json:"tags"`
}

// putDetails is the ?details (or ?summary) answer of /api/put.
type putDetails struct {
	Success *int `json:"success"`
	Failed  *int `json:"failed"`
	Errors  []struct {
		Datapoint struct {
			Metric    string            `json:"metric"`
			Timestamp json.Number       `json:"timestamp"`
			Tags      map[string]string `json:"tags"`
		} `json:"datapoint"`
		Error string `json:"error"`
	} `json:"errors"`
}

// Append writes points in batches of Options.BatchSize to /api/put?details.
// Points with a NaN or infinite value are refused without being sent (the
// JSON put API cannot carry them); the others are sent. Batches are sent in
// order; when one cannot be delivered after the retries, it and the batches
// after it are not stored. OpenTSDB stores the good points of a batch and
// names the bad ones; each refused point is logged at warn.
//
// nil means every point was accepted by OpenTSDB. Otherwise the error is a
// *PutError saying which points were stored, refused or not delivered. A
// retried batch may have been stored by an attempt that timed out;
// OpenTSDB keeps one value per series and timestamp, so the repeat is
// harmless.
func (c *Client) Append(ctx context.Context, points []tsdb.Point) error {
	perr := &PutError{}
	send := make([]tsdb.Point, 0, len(points))
	for _, p := range points {
		if math.IsNaN(p.Value) || math.IsInf(p.Value, 0) {
			c.refuse(perr, p, "value "+strconv.FormatFloat(p.Value, 'g', -1, 64)+" cannot be stored")
			continue
		}
		send = append(send, p)
	}
	for start := 0; start < len(send); start += c.opts.BatchSize {
		batch := send[start:min(start+c.opts.BatchSize, len(send))]
		err := c.putBatch(ctx, batch, perr)
		if err != nil && !errors.Is(err, tsdb.ErrUnavailable) {
			// Refused as a whole (413 Request Entity Too Large, or a
			// status that blames the request): the next batch may pass.
			for _, p := range batch {
				c.refuse(perr, p, err.Error())
			}
			continue
		}
		if err != nil {
			perr.Unavailable = append(perr.Unavailable, send[start:]...)
			perr.Cause = fmt.Errorf("batch of points %d-%d of %d: %w", start+1, start+len(batch), len(send), err)
			break
		}
	}
	if len(perr.Refused) == 0 && len(perr.Unavailable) == 0 && perr.Unnamed == 0 {
		return nil
	}
	return perr
}

// refuse records p as refused for reason, and logs it.
func (c *Client) refuse(perr *PutError, p tsdb.Point, reason string) {
	perr.Refused = append(perr.Refused, Refused{Point: p, Reason: reason})
	c.log.Warn("opentsdb refused a point", "metric", p.Metric, "tags", p.Tags,
		"time", p.Time, "value", p.Value, "reason", reason)
}

// putBatch sends one batch, adding its outcome to perr. An error means the
// batch was not delivered (none of it is known to be stored).
func (c *Client) putBatch(ctx context.Context, batch []tsdb.Point, perr *PutError) error {
	body, err := c.encodeBatch(batch)
	if err != nil {
		return err
	}
	r := request{
		method: http.MethodPost, path: "/api/put?details", body: body, gzipped: !c.opts.DisableGzip,
		ok: []int{http.StatusNoContent, http.StatusOK, http.StatusBadRequest},
	}
	resp, err := c.do(ctx, r)
	if err != nil {
		return notFoundUnavailable(err)
	}
	switch resp.status {
	case http.StatusNoContent:
		// OpenTSDB's answer when every point was stored and it was not
		// asked for (or ignores) details.
		perr.Stored += len(batch)
		return nil
	case http.StatusOK:
		if len(bytes.TrimSpace(resp.body)) == 0 {
			perr.Stored += len(batch)
			return nil
		}
	}
	var d putDetails
	if err := json.Unmarshal(resp.body, &d); err != nil || d.Failed == nil {
		if resp.status == http.StatusBadRequest {
			// An error body instead of details: the request as a whole was
			// refused (the documented case is content that cannot be
			// parsed), so no point of it was stored.
			serr := newStatusError(r.method, c.base+r.path, resp.status, resp.body)
			for _, p := range batch {
				c.refuse(perr, p, serr.Error())
			}
			return nil
		}
		return fmt.Errorf("POST %s%s: %d answer is neither details nor empty: %w", c.base, r.path, resp.status, tsdb.ErrUnavailable)
	}
	named := c.matchRefused(batch, d, perr)
	failed := *d.Failed
	if failed < named {
		failed = named
	}
	perr.Unnamed += failed - named
	stored := len(batch) - failed
	if d.Success != nil && *d.Success < stored {
		stored = *d.Success
	}
	perr.Stored += stored
	return nil
}

// encodeBatch is the JSON array of batch, gzip-compressed unless disabled.
func (c *Client) encodeBatch(batch []tsdb.Point) ([]byte, error) {
	pts := make([]putPoint, len(batch))
	for i, p := range batch {
		pts[i] = putPoint{Metric: p.Metric, Timestamp: p.Time.UnixMilli(), Value: p.Value, Tags: p.Tags}
		if pts[i].Tags == nil {
			pts[i].Tags = map[string]string{} // null is not a map; let OpenTSDB say tags are missing
		}
	}
	var buf bytes.Buffer
	if c.opts.DisableGzip {
		if err := json.NewEncoder(&buf).Encode(pts); err != nil {
			return nil, fmt.Errorf("encoding points: %w: %w", err, tsdb.ErrInvalid)
		}
		return buf.Bytes(), nil
	}
	// A gzip.Writer allocates some 800 KB of tables; reusing them is most
	// of the cost of compressing a batch of 50 points.
	zw, _ := c.zpool.Get().(*gzip.Writer)
	if zw == nil {
		zw = gzip.NewWriter(&buf)
	} else {
		zw.Reset(&buf)
	}
	defer c.zpool.Put(zw)
	if err := json.NewEncoder(zw).Encode(pts); err != nil {
		return nil, fmt.Errorf("encoding points: %w: %w", err, tsdb.ErrInvalid)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("compressing points: %w", err)
	}
	return buf.Bytes(), nil
}

// matchRefused finds the points of batch that OpenTSDB named in d, by
// metric, timestamp and tags, records them as refused and returns how many
// it found.
func (c *Client) matchRefused(batch []tsdb.Point, d putDetails, perr *PutError) int {
	taken := make([]bool, len(batch))
	named := 0
	for _, e := range d.Errors {
		ts, err := strconv.ParseInt(e.Datapoint.Timestamp.String(), 10, 64)
		if err != nil {
			continue
		}
		for i, p := range batch {
			if taken[i] || p.Metric != e.Datapoint.Metric || !sameTime(p.Time, ts) || !sameTags(p.Tags, e.Datapoint.Tags) {
				continue
			}
			taken[i] = true
			named++
			c.refuse(perr, p, e.Error)
			break
		}
	}
	return named
}

// sameTime says whether OpenTSDB's echo ts (milliseconds, or seconds from
// a server that truncated) is t.
func sameTime(t time.Time, ts int64) bool {
	return t.UnixMilli() == ts || t.Unix() == ts && t.UnixMilli()%1000 == 0
}

func sameTags(a, b map[string]string) bool {
	return len(a) == len(b) && maps.Equal(a, b)
}
