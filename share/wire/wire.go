// Package wire is the form in which observers exchange check results,
// through Redis (share/redisshare) or directly (share/peershare): JSON with
// one-letter keys, lossless (nanosecond times, NaN perfdata).
package wire

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/dmonitor/dmonitor/check"
)

// wireResult is a check.Result as it is stored and sent: JSON with
// one-letter keys, lossless (nanosecond times, NaN perfdata), still readable
// with redis-cli, and 263 bytes for a typical check_http result where
// `dmonitor check --json` takes 418. T comes first, and encoding/json writes
// struct fields in order, so the publish script reads the start time from
// the payload's first bytes without decoding it.
type wireResult struct {
	T int64      `json:"t"` // Start, Unix nanoseconds; zeroStart for the zero time
	H string     `json:"h"`
	C string     `json:"c"`
	O string     `json:"o"`
	F string     `json:"f,omitempty"` // the observer's failure domain
	S int        `json:"s"`
	R string     `json:"r,omitempty"`
	X int        `json:"x"`
	M string     `json:"m,omitempty"`
	P []wirePerf `json:"p,omitempty"`
	D int64      `json:"d"` // Duration, nanoseconds
}

type wirePerf struct {
	L string `json:"l"`
	V wfloat `json:"v"`
	// T is check.Perf.Text, left out when it is how check.FormatValue
	// writes V (0.000523, 612: most values as plugins print them), so a
	// typical result costs no more bytes for it. Absent, it decodes as that
	// formatting, which is also what a node that predates T sent; a Text of
	// "" is sent as "".
	T  *string `json:"t,omitempty"`
	U  string  `json:"u,omitempty"`
	W  string  `json:"w,omitempty"`
	C  string  `json:"c,omitempty"`
	Mn *wfloat `json:"n,omitempty"`
	Mx *wfloat `json:"x,omitempty"`
}

// zeroStart stands for the zero time.Time, whose UnixNano is undefined. It
// is the oldest start there is, so any real result replaces it.
const zeroStart = math.MinInt64

// wfloat is a float64 that survives JSON when it is NaN or infinite: a
// plugin may well print min or max as "NaN" or "inf", and the parser keeps
// what strconv.ParseFloat accepts, which encoding/json would refuse.
type wfloat float64

func (f wfloat) MarshalJSON() ([]byte, error) {
	v := float64(f)
	switch {
	case math.IsNaN(v):
		return []byte(`"NaN"`), nil
	case math.IsInf(v, 1):
		return []byte(`"+Inf"`), nil
	case math.IsInf(v, -1):
		return []byte(`"-Inf"`), nil
	}
	return strconv.AppendFloat(nil, v, 'g', -1, 64), nil
}

func (f *wfloat) UnmarshalJSON(b []byte) error {
	s := string(b)
	if len(s) >= 2 && s[0] == '"' {
		s = s[1 : len(s)-1] // ParseFloat reads NaN, +Inf and -Inf
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return fmt.Errorf("perf value %s: %w", b, err)
	}
	*f = wfloat(v)
	return nil
}

// Encode returns the wire form of r and its start time as the decimal
// string the publish script compares. A start outside the years 1678–2262
// (other than the zero time) has no Unix nanosecond value and is refused.
func Encode(r *check.Result) ([]byte, int64, error) {
	t := int64(zeroStart)
	if !r.Start.IsZero() {
		t = r.Start.UnixNano()
		if !time.Unix(0, t).Equal(r.Start) {
			return nil, 0, fmt.Errorf("result of %s on %s: start %v out of range", r.Check, r.Host, r.Start)
		}
	}
	w := wireResult{
		T: t, H: r.Host, C: r.Check, O: r.Observer, F: r.Domain,
		S: int(r.Status), R: r.Raw, X: r.ExitCode, M: r.Output,
		D: int64(r.Duration),
	}
	if len(r.Perf) > 0 {
		w.P = make([]wirePerf, len(r.Perf))
		for i, p := range r.Perf {
			w.P[i] = wirePerf{L: p.Label, V: wfloat(p.Value), U: p.UOM, W: p.Warn, C: p.Crit,
				Mn: (*wfloat)(p.Min), Mx: (*wfloat)(p.Max)}
			if p.Text != check.FormatValue(p.Value) {
				w.P[i].T = &p.Text
			}
		}
	}
	b, err := json.Marshal(&w)
	if err != nil {
		return nil, 0, fmt.Errorf("encode result of %s on %s: %w", r.Check, r.Host, err)
	}
	return b, t, nil
}

// Decode parses the wire form of a result.
func Decode(b []byte) (check.Result, error) {
	var w wireResult
	if err := json.Unmarshal(b, &w); err != nil {
		return check.Result{}, err
	}
	r := check.Result{
		Host: w.H, Check: w.C, Observer: w.O, Domain: w.F,
		Status: check.Status(w.S), Raw: w.R, ExitCode: w.X, Output: w.M,
		Duration: time.Duration(w.D),
	}
	if w.T != zeroStart {
		r.Start = time.Unix(0, w.T)
	}
	if len(w.P) > 0 {
		r.Perf = make([]check.Perf, len(w.P))
		for i, p := range w.P {
			r.Perf[i] = check.Perf{Label: p.L, Value: float64(p.V), UOM: p.U, Warn: p.W, Crit: p.C,
				Min: (*float64)(p.Mn), Max: (*float64)(p.Mx)}
			if p.T != nil {
				r.Perf[i].Text = *p.T
			} else {
				r.Perf[i].Text = check.FormatValue(float64(p.V))
			}
		}
	}
	return r, nil
}

// Result is a check.Result that encodes as its wire form inside a larger
// JSON document.
type Result check.Result

// MarshalJSON encodes r in the wire form.
func (r Result) MarshalJSON() ([]byte, error) {
	b, _, err := Encode((*check.Result)(&r))
	return b, err
}

// UnmarshalJSON decodes the wire form.
func (r *Result) UnmarshalJSON(b []byte) error {
	res, err := Decode(b)
	if err != nil {
		return err
	}
	*r = Result(res)
	return nil
}
