package spool

import (
	"maps"
	"math"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/tsdb"
)

func TestRecordRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		pts  []tsdb.Point
	}{
		// dmonitor's own shape, strings repeating.
		{"check results", pts(0, 50)},
		// No tags at all.
		{"untagged", []tsdb.Point{{Metric: "m", Time: base, Value: 1}}},
		// Times going backwards, before 1970, and with nanoseconds.
		{"times", []tsdb.Point{
			{Metric: "m", Time: base.Add(999_999_999), Value: 1},
			{Metric: "m", Time: base.Add(-time.Hour), Value: 2},
			{Metric: "m", Time: time.Date(1900, 1, 1, 0, 0, 0, 1, time.UTC), Value: 3},
			{Metric: "m", Time: time.Time{}, Value: 4},
		}},
		// Values a float can hold.
		{"values", []tsdb.Point{
			{Metric: "m", Time: base, Value: math.NaN()},
			{Metric: "m", Time: base, Value: math.Inf(-1)},
			{Metric: "m", Time: base, Value: math.Copysign(0, -1)},
			{Metric: "m", Time: base, Value: math.MaxFloat64},
			{Metric: "m", Time: base, Value: 5e-324},
		}},
		// Strings outside OpenTSDB's set are kept as they are: the
		// spool is not where they are sanitised.
		{"strings", []tsdb.Point{
			{Metric: "ünïcode metric", Tags: map[string]string{"": "", "k": "v w", "emoji": "🙂"}, Time: base, Value: 1},
			{Metric: "m", Tags: map[string]string{"k": "ünïcode metric"}, Time: base, Value: 2},
		}},
		// More points than fit one record.
		{"several records", pts(0, 2*maxRecordPoints+7)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			buf, err := newEncoder().appendRecords(nil, tc.pts)
			if err != nil {
				t.Fatal(err)
			}
			var got []tsdb.Point
			off := 0
			for off < len(buf) {
				// Frame with the record reader's checks, via a file.
				n, payload := recordAt(t, buf[off:])
				if got, err = decodePayload(got, payload, n); err != nil {
					t.Fatalf("decode at %d: %v", off, err)
				}
				off += headerSize + len(payload)
			}
			if len(got) != len(tc.pts) {
				t.Fatalf("decoded %d points, want %d", len(got), len(tc.pts))
			}
			for i, want := range tc.pts {
				g := got[i]
				if g.Metric != want.Metric || !g.Time.Equal(want.Time) || !sameFloat(g.Value, want.Value) ||
					math.Signbit(g.Value) != math.Signbit(want.Value) || !maps.Equal(g.Tags, want.Tags) {
					t.Fatalf("point %d: got %+v, want %+v", i, g, want)
				}
			}
		})
	}
}

// recordAt checks the record at the start of b and returns its points and
// payload.
func recordAt(t *testing.T, b []byte) (int, []byte) {
	t.Helper()
	f, err := createTemp(t, b)
	if err != nil {
		t.Fatal(err)
	}
	r := newRecordReader(f, 0, int64(len(b)), nil)
	k, n, payload, err := r.next()
	if err != nil {
		t.Fatalf("read record: %v", err)
	}
	if k != kindPoints {
		t.Fatalf("record of kind %d, want points", k)
	}
	return n, append([]byte(nil), payload...)
}

func TestDecodeRejectsGarbage(t *testing.T) {
	good, err := newEncoder().appendRecords(nil, pts(0, 3))
	if err != nil {
		t.Fatal(err)
	}
	payload := good[headerSize:]
	for _, tc := range []struct {
		name string
		b    []byte
		n    int
	}{
		// More points claimed than encoded.
		{"short", payload, 4},
		// Fewer points claimed: bytes left over.
		{"long", payload, 2},
		// Cut inside the last value.
		{"cut", payload[:len(payload)-3], 3},
		// A reference to a string never introduced.
		{"bad reference", []byte{9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 1},
		// A string longer than the payload.
		{"long string", []byte{0, 100, 'a'}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := decodePayload(nil, tc.b, tc.n); err == nil {
				t.Fatal("garbage decoded without an error")
			}
		})
	}
}
