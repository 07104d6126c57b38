package httpapi

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/dmonitor/dmonitor/tsdb"
)

// putPoint is one data point of a put body. Timestamp and value may be
// JSON numbers or strings, as OpenTSDB's parser coerces them.
type putPoint struct {
	Metric    string            `json:"metric"`
	Timestamp json.RawMessage   `json:"timestamp"`
	Value     json.RawMessage   `json:"value"`
	Tags      map[string]string `json:"tags"`
}

// putError is one refused point in a put answer with details.
type putError struct {
	Datapoint json.RawMessage `json:"datapoint"`
	Error     string          `json:"error"`
}

// putSummary is the answer to a put with summary or details.
type putSummary struct {
	Errors  *[]putError `json:"errors,omitempty"` // nil without details
	Failed  int         `json:"failed"`
	Success int         `json:"success"`
}

// servePut stores the points of the body. Every point is validated on its
// own and the valid ones are stored, as OpenTSDB does. The whole request
// is refused, and nothing stored, when the body is not JSON, or is past the
// body size, data points or new series limits.
//
// The body is decoded one data point at a time, so a body past the data
// points limit costs at most that many points of memory, and checked for
// new series before anything reaches the store.
func (h *handler) servePut(w http.ResponseWriter, r *http.Request) error {
	b, err := h.bodyReader(w, r)
	if err != nil {
		return err
	}
	defer b.close()
	pb, err := h.decodePut(r, b)
	if err == nil {
		err = h.checkNewSeries(r, pb.points)
	}
	if err != nil {
		b.drain()
		return err
	}
	h.counters.putPoints.Add(int64(len(pb.raws)))
	refused, err := h.appendEach(r, pb.points)
	if err != nil {
		return err
	}
	h.counters.stored.Add(int64(len(pb.points) - len(refused)))
	errs := pb.errs
	for _, f := range refused {
		errs = append(errs, putError{Datapoint: pb.raws[pb.origin[f.index]], Error: f.reason})
	}

	details, summary := flag(r, "details"), flag(r, "summary")
	if details || summary {
		s := putSummary{Failed: len(errs), Success: len(pb.raws) - len(errs)}
		if details {
			if errs == nil {
				errs = []putError{}
			}
			s.Errors = &errs
		}
		code := http.StatusOK
		if len(errs) > 0 {
			code = http.StatusBadRequest
		}
		writeJSON(w, code, s)
		return nil
	}
	if len(errs) > 0 {
		// OpenTSDB's message and hint, and the first reason, so a client
		// that did not ask for details still learns which limit it hit.
		return badRequest("One or more data points had errors",
			fmt.Sprintf(`%d of %d data points refused, the first: %s. Please see the TSD logs or append "details" to the put request`,
				len(errs), len(pb.raws), errs[0].Error))
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// putBody is a decoded put body.
type putBody struct {
	raws   []json.RawMessage // every data point as sent, echoed in errors
	points []tsdb.Point      // the valid ones
	origin []int             // per point: its index in raws
	errs   []putError        // the invalid ones
}

// readErr remembers the error of reading the body, so a decoding error
// caused by it (too large, a corrupt gzip stream) is told apart from
// content that is not JSON.
type readErr struct {
	r   io.Reader
	err error
}

func (e *readErr) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

// decodePut decodes and validates the data points of a put body: one
// object, or an array of them.
func (h *handler) decodePut(r *http.Request, b *body) (*putBody, error) {
	src := &readErr{r: b}
	br := bufio.NewReader(src)
	fail := func(err error) error {
		if src.err != nil {
			return h.bodyError(r, src.err)
		}
		return badRequest("Unable to parse the given JSON", err.Error())
	}
	// The first byte that is not white space says which form it is.
	var first byte
	for {
		c, err := br.ReadByte()
		if err == io.EOF {
			return nil, badRequest("Missing message content", "Supply valid JSON formatted data in the body of your request")
		}
		if err != nil {
			return nil, fail(err)
		}
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			first = c
			_ = br.UnreadByte() // cannot fail right after ReadByte
			break
		}
	}
	dec := json.NewDecoder(br)
	pb := &putBody{}
	perLimit := map[string]int{} // points refused per limit
	firstHit := map[string]string{}
	next := func() error {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return fail(err)
		}
		if raw[0] != '{' {
			return badRequest("Unable to parse the given JSON", fmt.Sprintf("%s is not a data point object", clip(string(raw))))
		}
		i := len(pb.raws)
		pb.raws = append(pb.raws, raw)
		p, reason, limit := h.limits.parsePoint(raw)
		if reason != "" {
			pb.errs = append(pb.errs, putError{Datapoint: raw, Error: reason})
			if limit != "" {
				if perLimit[limit] == 0 {
					firstHit[limit] = reason
				}
				perLimit[limit]++
			}
			return nil
		}
		pb.points = append(pb.points, p)
		pb.origin = append(pb.origin, i)
		return nil
	}
	if first != '[' {
		if err := next(); err != nil {
			return nil, err
		}
	} else {
		if _, err := dec.Token(); err != nil {
			return nil, fail(err)
		}
		for dec.More() {
			if limit := h.limits.maxPoints; limit > 0 && len(pb.raws) == limit {
				// Refused before the next point is decoded: the rest of
				// the body costs no memory.
				offender := "more in the body"
				if r.ContentLength > 0 {
					offender = fmt.Sprintf("more in a body of %d bytes", r.ContentLength)
				}
				return nil, h.limitError(r, limitDatapoints,
					fmt.Sprintf("datapoints per request limit %d exceeded: %s", limit, offender),
					fmt.Sprintf("none of the data points were stored; send at most %d per request", limit))
			}
			if err := next(); err != nil {
				return nil, err
			}
		}
		if _, err := dec.Token(); err != nil {
			return nil, fail(err)
		}
	}
	// Nothing but white space may follow, as for json.Unmarshal.
	if _, err := dec.Token(); err != io.EOF {
		if err == nil {
			err = errors.New("data after the top-level value")
		}
		return nil, fail(err)
	}
	for limit, n := range perLimit {
		h.limitHit(r, limit, n, firstHit[limit])
	}
	return pb, nil
}

// parsePoint validates one data point as OpenTSDB does, and against the
// per-point limits, returning why it is refused (OpenTSDB's own messages
// where it has one) and the limit it passed, if that is why.
func (l *limits) parsePoint(raw json.RawMessage) (p tsdb.Point, reason, limit string) {
	var pp putPoint
	if err := json.Unmarshal(raw, &pp); err != nil {
		return tsdb.Point{}, "Unable to parse the data point: " + err.Error(), ""
	}
	if pp.Metric == "" {
		return tsdb.Point{}, "Metric name was empty", ""
	}
	// Before the names' validation, which quotes a name whole.
	if reason, limit := l.checkPointLimits(pp.Metric, pp.Tags); reason != "" {
		return tsdb.Point{}, reason, limit
	}
	if r := checkName("metric", pp.Metric); r != "" {
		return tsdb.Point{}, r, ""
	}
	ts, ok := parsePutTime(pp.Timestamp)
	if !ok {
		return tsdb.Point{}, "Invalid timestamp", ""
	}
	v, reason := parsePutValue(pp.Value)
	if reason != "" {
		return tsdb.Point{}, reason, ""
	}
	if len(pp.Tags) == 0 {
		return tsdb.Point{}, "Missing tags", ""
	}
	for k, tv := range pp.Tags {
		if r := checkName("tag name", k); r != "" {
			return tsdb.Point{}, r, ""
		}
		if r := checkName("tag value", tv); r != "" {
			return tsdb.Point{}, r, ""
		}
	}
	return tsdb.Point{Metric: pp.Metric, Tags: pp.Tags, Time: ts, Value: v}, "", ""
}

// unquote returns the text of a JSON number or string.
func unquote(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return strings.TrimSpace(string(raw))
}

// parsePutTime reads a put timestamp: Unix seconds, or milliseconds when
// it needs more than 32 bits, as OpenTSDB tells them apart.
func parsePutTime(raw json.RawMessage) (time.Time, bool) {
	s := unquote(raw)
	if s == "" || s == "null" {
		return time.Time{}, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return time.Time{}, false
	}
	if n > math.MaxUint32 {
		if n > 9999999999999 { // past year 2286 in ms: not a time
			return time.Time{}, false
		}
		return time.UnixMilli(n).UTC(), true
	}
	return time.Unix(n, 0).UTC(), true
}

// parsePutValue reads a put value: a JSON number or a string holding one.
func parsePutValue(raw json.RawMessage) (float64, string) {
	s := unquote(raw)
	if s == "" || s == "null" {
		return 0, "Empty value"
	}
	// NaN and infinities are no numbers to OpenTSDB either (its
	// documentation's example refuses "NaN" with this message).
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, "Unable to parse value to a number"
	}
	return v, ""
}

// checkName says why s is not a valid OpenTSDB name (letters, digits,
// - _ . / and Unicode letters), in OpenTSDB's words, or "".
func checkName(what, s string) string {
	if s == "" {
		return fmt.Sprintf("Invalid %s (\"\"): empty string", what)
	}
	for _, c := range s {
		if c < utf8.RuneSelf {
			if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '/' {
				continue
			}
		} else if unicode.IsLetter(c) {
			continue
		}
		return fmt.Sprintf("Invalid %s (%q): illegal character: %q", what, s, c)
	}
	return ""
}

// refusal is a point the store refused.
type refusal struct {
	index  int
	reason string
}

// appendEach stores points, keeping the good ones of a batch the store
// refuses. The store takes a batch whole or not at all; when it blames the
// batch (tsdb.ErrInvalid: a point older than its window, a conflicting
// duplicate), the batch is halved and each half stored on its own, down to
// the single points to refuse: k bad points among n cost some 2k·log2(n/k)
// calls instead of n.
//
// A refusal for passing one of the store's limits (tsdb.ErrLimit) is not
// halved, which would slip new series past a limit per batch. A store that
// stored the rest of the batch says which points it did not (partialError,
// as embedded.LimitError does), and those are refused with its message.
// Otherwise, over a store with CountNew, the points of series the store
// holds are stored and the others refused with the store's message; over
// another store the whole batch is refused. Any other error fails the
// request.
func (h *handler) appendEach(r *http.Request, points []tsdb.Point) ([]refusal, error) {
	if len(points) == 0 {
		return nil, nil
	}
	idx := make([]int, len(points))
	for i := range idx {
		idx[i] = i
	}
	a := appender{h: h, r: r, points: points}
	if err := a.store(idx, points, true); err != nil {
		return nil, err
	}
	if a.limitErr != nil {
		h.warn.Warn("opentsdb api: data points refused by a limit of the store", "remote", r.RemoteAddr,
			"refused", a.limitRefused, "err", a.limitErr)
	}
	slices.SortFunc(a.refused, func(x, y refusal) int { return x.index - y.index })
	return a.refused, nil
}

// appender is one appendEach call.
type appender struct {
	h            *handler
	r            *http.Request
	points       []tsdb.Point
	refused      []refusal
	limitErr     error // the first tsdb.ErrLimit refusal, for the log
	limitRefused int
}

// store appends pts, which are points[idx[i]]; byLimit says a refusal
// for a limit may still be split into the series the store holds and the
// new ones.
func (a *appender) store(idx []int, pts []tsdb.Point, byLimit bool) error {
	err := a.h.store.Append(a.r.Context(), pts)
	switch {
	case err == nil:
		return nil
	case !errors.Is(err, tsdb.ErrInvalid):
		return err
	case errors.Is(err, tsdb.ErrLimit):
		if a.limitErr == nil {
			a.limitErr = err
		}
		if pe, ok := errors.AsType[partialError](err); ok {
			a.refuseUnstored(idx, pts, pe.Unstored(), err)
			return nil
		}
		if byLimit && a.h.counter != nil && len(pts) > 1 {
			return a.storeHeld(idx, pts, err)
		}
		if !byLimit || len(pts) == 1 {
			// Held series the store still refuses for a limit (lowered
			// since), or the last point: nothing left to split by.
			break
		}
		a.refuse(idx, err)
		a.limitRefused += len(idx)
		return nil
	}
	if len(pts) == 1 {
		a.refuse(idx, err)
		if errors.Is(err, tsdb.ErrLimit) {
			a.limitRefused++
		}
		return nil
	}
	mid := len(pts) / 2
	if err := a.store(idx[:mid], pts[:mid], byLimit); err != nil {
		return err
	}
	return a.store(idx[mid:], pts[mid:], byLimit)
}

// storeHeld stores the points of pts whose series the store holds,
// refusing the others with err, the store's refusal of them all.
func (a *appender) storeHeld(idx []int, pts []tsdb.Point, err error) error {
	var (
		heldIdx []int
		held    []tsdb.Point
		newIdx  []int
	)
	for i := range pts {
		if a.h.counter.CountNew(pts[i:i+1]) > 0 {
			newIdx = append(newIdx, idx[i])
		} else {
			heldIdx = append(heldIdx, idx[i])
			held = append(held, pts[i])
		}
	}
	a.refuse(newIdx, err)
	a.limitRefused += len(newIdx)
	if len(held) == 0 {
		return nil
	}
	return a.store(heldIdx, held, false)
}

// partialError is implemented by errors of a store that refused some
// points of a batch and stored the rest (embedded.LimitError does).
type partialError interface {
	error
	// Unstored returns the points not stored, in batch order.
	Unstored() []tsdb.Point
}

// refuseUnstored refuses the points of pts that are in unstored, a
// subsequence of pts. Two points alike are of one series, which the store
// refused or stored as a whole, so matching by content pairs them right.
func (a *appender) refuseUnstored(idx []int, pts, unstored []tsdb.Point, err error) {
	j := 0
	for i := range pts {
		if j < len(unstored) && samePoint(&pts[i], &unstored[j]) {
			a.refuse(idx[i:i+1], err)
			a.limitRefused++
			j++
		}
	}
}

func samePoint(p, q *tsdb.Point) bool {
	return p.Metric == q.Metric && p.Time.Equal(q.Time) && p.Value == q.Value && maps.Equal(p.Tags, q.Tags)
}

func (a *appender) refuse(idx []int, err error) {
	for _, i := range idx {
		a.refused = append(a.refused, refusal{i, err.Error()})
	}
}
