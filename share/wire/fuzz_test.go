package wire

import (
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/check"
)

// FuzzDecode decodes arbitrary bytes as a wire result. What decodes must
// encode again, and decode from that to the same result: a node relays
// what a peer sent, and the form is lossless.
func FuzzDecode(f *testing.F) {
	lo, hi := 0.0, math.Inf(1)
	for _, r := range []check.Result{
		{Host: "web1", Check: "http", Observer: "eu-1", Domain: "eu-west", Status: check.Critical, Raw: check.RawTimeout, ExitCode: -1,
			Output: "CRITICAL - Socket timeout\nafter 10s", Start: time.Unix(1767225600, 123456789), Duration: 10 * time.Second,
			Perf: []check.Perf{{Label: "time", Value: 0.000523, Text: "0.000523", UOM: "s", Warn: "~:1", Crit: "@2:3", Min: &lo, Max: &hi},
				{Label: "it's", Value: math.NaN()}, {Label: "free", Value: 82138904, Text: "82138904", UOM: "KB"},
				{Label: "load1", Value: 0.5, Text: "0.500"}}},
		{Host: "db1", Check: "ping", Observer: "us-1"},
	} {
		b, _, err := Encode(&r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"t":-9223372036854775808,"h":"a","c":"b","o":"c","s":7,"x":0,"p":[{"l":"x","v":"-Inf","n":"NaN","x":1e308}],"d":-1}`))
	f.Add([]byte(`{"t":1,"p":[{"l":"","v":null}]}`))
	f.Add([]byte(`{"t":1,"p":[{"l":"a","v":1e300,"t":""},{"l":"b","v":2,"t":"2.0"},{"l":"c","v":"NaN","t":"NaN"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Decode(b)
		if err != nil {
			return
		}
		again, _, err := Encode(&r)
		if err != nil {
			t.Fatalf("a decoded result does not encode: %v\n%+v", err, r)
		}
		r2, err := Decode(again)
		if err != nil {
			t.Fatalf("an encoded result does not decode: %v: %s", err, again)
		}
		if !sameResult(r, r2) {
			t.Fatalf("changed in a round trip through %s:\n%+v\n%+v", again, r, r2)
		}
		var wr Result
		if err := wr.UnmarshalJSON(b); err != nil || !sameResult(check.Result(wr), r) {
			t.Fatalf("Result.UnmarshalJSON differs from Decode: %v", err)
		}
	})
}

// sameResult compares results field by field, NaN equal to NaN.
func sameResult(a, b check.Result) bool {
	ap, bp := a.Perf, b.Perf
	a.Perf, b.Perf = nil, nil
	if !a.Start.Equal(b.Start) {
		return false
	}
	a.Start, b.Start = time.Time{}, time.Time{}
	if !reflect.DeepEqual(a, b) || len(ap) != len(bp) {
		return false
	}
	for i := range ap {
		p, q := ap[i], bp[i]
		if p.Label != q.Label || p.Text != q.Text || p.UOM != q.UOM || p.Warn != q.Warn || p.Crit != q.Crit ||
			!sameFloat(&p.Value, &q.Value) || !sameFloat(p.Min, q.Min) || !sameFloat(p.Max, q.Max) {
			return false
		}
	}
	return true
}

func sameFloat(a, b *float64) bool {
	if a == nil || b == nil {
		return a == b
	}
	return math.Float64bits(*a) == math.Float64bits(*b) || math.IsNaN(*a) && math.IsNaN(*b)
}
