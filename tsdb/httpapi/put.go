package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
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
// own and the valid ones are stored, as OpenTSDB does; only a body that is
// not JSON refuses them all.
func (h *handler) servePut(w http.ResponseWriter, r *http.Request) error {
	body, err := h.readBody(w, r)
	if err != nil {
		return err
	}
	raws, err := splitPoints(body)
	if err != nil {
		return err
	}
	var (
		points []tsdb.Point
		origin []int // per point: its index in raws
		errs   []putError
	)
	for i, raw := range raws {
		p, reason := parsePoint(raw)
		if reason != "" {
			errs = append(errs, putError{Datapoint: raw, Error: reason})
			continue
		}
		points = append(points, p)
		origin = append(origin, i)
	}
	refused, err := h.appendEach(r, points)
	if err != nil {
		return err
	}
	for _, f := range refused {
		errs = append(errs, putError{Datapoint: raws[origin[f.index]], Error: f.reason})
	}

	details, summary := flag(r, "details"), flag(r, "summary")
	if details || summary {
		s := putSummary{Failed: len(errs), Success: len(raws) - len(errs)}
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
		return badRequest("One or more data points had errors", `Please see the TSD logs or append "details" to the put request`)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// splitPoints returns the data points of a put body: one object, or an
// array of them.
func splitPoints(body []byte) ([]json.RawMessage, error) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) > 0 && trimmed[0] == '[' {
		var raws []json.RawMessage
		if err := decodeJSON(body, &raws); err != nil {
			return nil, err
		}
		for _, raw := range raws {
			if t := bytes.TrimSpace(raw); len(t) == 0 || t[0] != '{' {
				return nil, badRequest("Unable to parse the given JSON", fmt.Sprintf("array element %s is not a data point object", raw))
			}
		}
		return raws, nil
	}
	var one json.RawMessage
	if err := decodeJSON(body, &one); err != nil {
		return nil, err
	}
	if one[0] != '{' {
		return nil, badRequest("Unable to parse the given JSON", "the body is neither a data point object nor an array of them")
	}
	return []json.RawMessage{one}, nil
}

// parsePoint validates one data point as OpenTSDB does, returning why it
// is refused (OpenTSDB's own messages where it has one) or "".
func parsePoint(raw json.RawMessage) (tsdb.Point, string) {
	var pp putPoint
	if err := json.Unmarshal(raw, &pp); err != nil {
		return tsdb.Point{}, "Unable to parse the data point: " + err.Error()
	}
	if pp.Metric == "" {
		return tsdb.Point{}, "Metric name was empty"
	}
	if r := checkName("metric", pp.Metric); r != "" {
		return tsdb.Point{}, r
	}
	ts, ok := parsePutTime(pp.Timestamp)
	if !ok {
		return tsdb.Point{}, "Invalid timestamp"
	}
	v, reason := parsePutValue(pp.Value)
	if reason != "" {
		return tsdb.Point{}, reason
	}
	if len(pp.Tags) == 0 {
		return tsdb.Point{}, "Missing tags"
	}
	for k, tv := range pp.Tags {
		if r := checkName("tag name", k); r != "" {
			return tsdb.Point{}, r
		}
		if r := checkName("tag value", tv); r != "" {
			return tsdb.Point{}, r
		}
	}
	return tsdb.Point{Metric: pp.Metric, Tags: pp.Tags, Time: ts, Value: v}, ""
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

// appendEach stores points. The store takes a batch whole or not at all,
// so when it blames the batch (tsdb.ErrInvalid: a point older than its
// window, a conflicting duplicate) each point is stored on its own to keep
// the good ones and name the bad. Any other error fails the request.
func (h *handler) appendEach(r *http.Request, points []tsdb.Point) ([]refusal, error) {
	if len(points) == 0 {
		return nil, nil
	}
	err := h.store.Append(r.Context(), points)
	if err == nil || !errors.Is(err, tsdb.ErrInvalid) {
		return nil, err
	}
	var refused []refusal
	for i := range points {
		err := h.store.Append(r.Context(), points[i:i+1])
		switch {
		case err == nil:
		case errors.Is(err, tsdb.ErrInvalid):
			refused = append(refused, refusal{i, err.Error()})
		default:
			return nil, err
		}
	}
	return refused, nil
}
