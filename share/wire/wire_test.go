package wire

import (
	"bytes"
	"math"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/check"
)

// TestPerfTextRoundTrip: the value of a perfdata item as the plugin wrote
// it crosses the wire unchanged, and costs nothing when it is how
// check.FormatValue writes the number.
func TestPerfTextRoundTrip(t *testing.T) {
	tests := []struct {
		perf   check.Perf
		inWire bool // whether the encoding carries the text
	}{
		// check_disk's kilobytes: a float64 formats them 8.2138904e+07.
		{check.Perf{Label: "free", Value: 82138904, Text: "82138904", UOM: "KB"}, false},
		// check_http's response time, written as FormatValue would.
		{check.Perf{Label: "time", Value: 0.000523, Text: "0.000523", UOM: "s"}, false},
		// check_load's trailing zeros, which the number does not keep.
		{check.Perf{Label: "load1", Value: 0.5, Text: "0.500"}, true},
		// A sign and an exponent as written.
		{check.Perf{Label: "up", Value: 3, Text: "+3"}, true},
		{check.Perf{Label: "tiny", Value: 1e-7, Text: "1.0E-7", UOM: "s"}, true},
		// An item built in code, not parsed: no text, and none comes back.
		{check.Perf{Label: "built", Value: 42}, true},
		// A value JSON has no number for.
		{check.Perf{Label: "nan", Value: math.NaN(), Text: "NaN"}, false},
	}
	for _, tt := range tests {
		r := check.Result{Host: "www1", Check: "disk", Observer: "eu-1", Start: time.Unix(1767225600, 0),
			Perf: []check.Perf{tt.perf}}
		b, _, err := Encode(&r)
		if err != nil {
			t.Fatal(err)
		}
		if got := bytes.Contains(b, []byte(`,"t":`)); got != tt.inWire {
			t.Errorf("%s: text %q in %s: %v, want %v", tt.perf.Label, tt.perf.Text, b, got, tt.inWire)
		}
		back, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		if !sameResult(back, r) {
			t.Errorf("%s: round trip through %s gives %+v, want %+v", tt.perf.Label, b, back.Perf, r.Perf)
		}
	}
}

// TestPerfTextFromOlderNodes: a result from a node that does not send the
// text reads as its number written by check.FormatValue, which is what
// `dmonitor check` would print for it.
func TestPerfTextFromOlderNodes(t *testing.T) {
	r, err := Decode([]byte(`{"t":1,"h":"www1","c":"disk","o":"eu-1","s":0,"x":0,"p":[{"l":"free","v":82138904,"u":"KB"},{"l":"tiny","v":1e-7}],"d":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := []string{r.Perf[0].Text, r.Perf[1].Text}; got[0] != "82138904" || got[1] != "1e-07" {
		t.Errorf("texts = %q, want [82138904 1e-07]", got)
	}
}

// TestDomain: the observer's failure domain travels with its results, and
// a result from a node that declares none (or predates domains) has none.
func TestDomain(t *testing.T) {
	b, _, err := Encode(&check.Result{Host: "www1", Check: "http", Observer: "eu-1", Domain: "eu-west"})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := Decode(b); err != nil || r.Domain != "eu-west" {
		t.Errorf("decoded domain %q (%v), want eu-west", r.Domain, err)
	}
	r, err := Decode([]byte(`{"t":1,"h":"www1","c":"http","o":"eu-1","s":0,"x":0,"d":1}`))
	if err != nil || r.Domain != "" {
		t.Errorf("a result without a domain decodes with %q (%v), want none", r.Domain, err)
	}
}
