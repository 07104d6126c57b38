// Package check holds the result model shared by everything that runs, stores
// or judges a check: the status values of the Nagios plugin API and the parsed
// result of one plugin run.
package check

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
)

// Status is a check status as the Nagios plugin API defines it. Its numeric
// value is what dmonitor.check.status stores and what `dmonitor check` exits
// with.
type Status int

// The four statuses of the Nagios plugin API. dmonitor's FAIL and TIMEOUT are
// reported as Critical; the plugin's own word is kept in Result.Raw.
const (
	OK       Status = 0
	Warning  Status = 1
	Critical Status = 2
	Unknown  Status = 3
)

var statusNames = [...]string{"OK", "WARNING", "CRITICAL", "UNKNOWN"}

// String returns the upper-case name of s; any value outside 0..3 is UNKNOWN,
// as the plugin API treats it.
func (s Status) String() string {
	if s < OK || s > Unknown {
		return statusNames[Unknown]
	}
	return statusNames[s]
}

// ParseStatus returns the Status named by s (OK, WARNING, CRITICAL, UNKNOWN).
func ParseStatus(s string) (Status, error) {
	for i, n := range statusNames {
		if n == s {
			return Status(i), nil
		}
	}
	return Unknown, fmt.Errorf("unknown status %q (want OK, WARNING, CRITICAL or UNKNOWN)", s)
}

// MarshalText encodes s by name, so JSON and YAML show "CRITICAL", not 2.
func (s Status) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText decodes a status name.
func (s *Status) UnmarshalText(b []byte) error {
	v, err := ParseStatus(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// Failing reports whether s counts as failing for quorum purposes.
func (s Status) Failing() bool { return s == Critical }

// The words Result.Raw takes besides the four status names.
const (
	RawFail    = "FAIL"    // first stdout line was exactly FAIL (dmonitor convention)
	RawTimeout = "TIMEOUT" // the plugin did not finish within its timeout
)

// Perf is one performance-data item of the Nagios plugin API:
// 'label'=value[UOM];[warn];[crit];[min];[max].
type Perf struct {
	Label string  `json:"label"`
	Value float64 `json:"value"`
	// Text is the value as the plugin wrote it, without its unit
	// ("82138904", "0.500"), so that it can be shown as written rather than
	// as a float64 formats; "" when the item was not parsed from a plugin's
	// output. ValueText falls back on Value.
	Text string   `json:"text,omitempty"`
	UOM  string   `json:"uom"`  // unit as the plugin wrote it: "", s, ms, us, %, B, KB, MB, GB, TB, c
	Warn string   `json:"warn"` // threshold range as written, "" when absent
	Crit string   `json:"crit"`
	Min  *float64 `json:"min"`
	Max  *float64 `json:"max"`
}

// ValueText returns the value as the plugin wrote it, or, for an item
// without Text, Value as FormatValue writes it.
func (p Perf) ValueText() string {
	if p.Text != "" {
		return p.Text
	}
	return FormatValue(p.Value)
}

// Seconds is d in seconds, to the resolution dmonitor measures run times
// at: 2⁻²⁰ s (0.95 µs). A float64 with at most 20 fractional bits differs
// little, bit by bit, from the previous run's, so the store compresses a
// series of them to a couple of bytes a point; the nanoseconds of a raw
// measurement, noise below any meaning for a check, made every point of
// every run-time series take 8 bytes, and a node with 100,000 checks carry
// about 130 MiB more heap by the end of each two-hour chunk.
func Seconds(d time.Duration) float64 {
	const perSecond = 1 << 20
	return math.Round(d.Seconds()*perSecond) / perSecond
}

// FormatValue writes v as encoding/json would, without an exponent from
// 1e-6 up to 1e21 (82138904, not 8.2138904e+07), and as NaN, +Inf or -Inf
// where JSON has no number.
func FormatValue(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return strconv.FormatFloat(v, 'g', -1, 64) // NaN, +Inf, -Inf
	}
	if a := math.Abs(v); a != 0 && (a < 1e-6 || a >= 1e21) {
		return strconv.FormatFloat(v, 'g', -1, 64)
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// BaseValue returns Value converted to its base unit: seconds for time units,
// bytes for byte units (powers of 1024, as monitoring-plugins compute them),
// and Value unchanged for everything else.
func (p Perf) BaseValue() float64 {
	switch p.UOM {
	case "ms":
		return p.Value / 1e3
	case "us":
		return p.Value / 1e6
	case "KB":
		return p.Value * (1 << 10)
	case "MB":
		return p.Value * (1 << 20)
	case "GB":
		return p.Value * (1 << 30)
	case "TB":
		return p.Value * (1 << 40)
	}
	return p.Value
}

// Result is the outcome of one run of one check against one host, as seen by
// one observer.
type Result struct {
	Host     string
	Check    string
	Observer string
	// Domain is the observer's failure domain (region, provider, network),
	// "" when it declares none.
	Domain   string
	Status   Status
	Raw      string // OK, FAIL, TIMEOUT, or the Nagios status name
	ExitCode int    // -1 when the plugin could not be started or was killed
	Output   string // the message: text before '|' on every line, lines joined with \n
	Perf     []Perf
	Start    time.Time
	Duration time.Duration
}

// resultJSON is the documented shape of `dmonitor check --json`.
type resultJSON struct {
	Host     string  `json:"host"`
	Check    string  `json:"check"`
	Observer string  `json:"observer"`
	Domain   string  `json:"domain,omitempty"`
	Status   Status  `json:"status"`
	Raw      string  `json:"raw"`
	ExitCode int     `json:"exit_code"`
	Output   string  `json:"output"`
	Perf     []Perf  `json:"perfdata"`
	Start    string  `json:"start"`
	Duration float64 `json:"duration_seconds"`
}

// MarshalJSON encodes r in the shape `dmonitor check --json` documents.
func (r Result) MarshalJSON() ([]byte, error) {
	perf := r.Perf
	if perf == nil {
		perf = []Perf{}
	}
	return json.Marshal(resultJSON{
		Host: r.Host, Check: r.Check, Observer: r.Observer, Domain: r.Domain,
		Status: r.Status, Raw: r.Raw, ExitCode: r.ExitCode,
		Output: r.Output, Perf: perf,
		Start:    r.Start.UTC().Format(time.RFC3339Nano),
		Duration: r.Duration.Seconds(),
	})
}
