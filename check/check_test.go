package check

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/tsdb/chunkenc"
)

func TestBaseValue(t *testing.T) {
	cases := []struct {
		uom  string
		in   float64
		want float64
	}{
		{"", 42, 42},          // unitless stays
		{"%", 95, 95},         // percent stays
		{"c", 7, 7},           // counter stays
		{"s", 1.5, 1.5},       // seconds are the base
		{"ms", 250, 0.25},     // check_http and check_ping report ms
		{"us", 1500, 0.0015},  //
		{"B", 512, 512},       // bytes are the base
		{"KB", 2, 2048},       // powers of 1024, as monitoring-plugins compute
		{"MB", 1, 1 << 20},    //
		{"GB", 3, 3 << 30},    //
		{"TB", 1, 1 << 40},    //
		{"MiB", 5, 5},         // unknown units are kept as written
		{"req/s", 12.5, 12.5}, //
	}
	for _, tc := range cases {
		if got := (Perf{Value: tc.in, UOM: tc.uom}).BaseValue(); got != tc.want {
			t.Errorf("%v%s in base unit = %v, want %v", tc.in, tc.uom, got, tc.want)
		}
	}
}

func TestStatusNames(t *testing.T) {
	for s := OK; s <= Unknown; s++ {
		got, err := ParseStatus(s.String())
		if err != nil || got != s {
			t.Errorf("ParseStatus(%q) = %v, %v", s.String(), got, err)
		}
	}
	if Status(7).String() != "UNKNOWN" {
		t.Errorf("an out-of-range status must read UNKNOWN, as the plugin API treats it")
	}
	if _, err := ParseStatus("FAIL"); err == nil {
		t.Error("FAIL is a raw word, not a status")
	}
}

func TestResultJSONShape(t *testing.T) {
	b, err := json.Marshal(Result{Host: "www1", Check: "http", Observer: "eu-1", Status: Critical, Raw: RawTimeout,
		ExitCode: -1, Duration: 1500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"host": "www1", "check": "http", "observer": "eu-1", "status": "CRITICAL",
		"raw": "TIMEOUT", "exit_code": -1.0, "duration_seconds": 1.5, "output": ""} {
		if m[k] != want {
			t.Errorf("%s = %v, want %v", k, m[k], want)
		}
	}
	if p, ok := m["perfdata"].([]any); !ok || len(p) != 0 {
		t.Errorf("perfdata = %v, want an empty list, never null", m["perfdata"])
	}
}

// TestPerfValueText: a parsed item shows its value as the plugin wrote it;
// one built in code shows its number without an exponent where JSON would
// write none.
func TestPerfValueText(t *testing.T) {
	tests := []struct {
		p    Perf
		want string
	}{
		{Perf{Value: 82138904, Text: "82138904"}, "82138904"},
		{Perf{Value: 0.5, Text: "0.500"}, "0.500"},
		// Without text: check_disk's kilobytes, not 8.2138904e+07.
		{Perf{Value: 82138904}, "82138904"},
		{Perf{Value: 0.000523}, "0.000523"},
		{Perf{Value: -0.25}, "-0.25"},
		{Perf{Value: 0}, "0"},
		// Where JSON switches to an exponent, so does FormatValue.
		{Perf{Value: 1e-7}, "1e-07"},
		{Perf{Value: 1e21}, "1e+21"},
		{Perf{Value: math.NaN()}, "NaN"},
		{Perf{Value: math.Inf(-1)}, "-Inf"},
	}
	for _, tt := range tests {
		if got := tt.p.ValueText(); got != tt.want {
			t.Errorf("%+v.ValueText() = %q, want %q", tt.p, got, tt.want)
		}
	}
	// `dmonitor check --json` carries the text beside the number.
	b, err := json.Marshal(Perf{Label: "load1", Value: 0.5, Text: "0.500"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"value":0.5,"text":"0.500"`) {
		t.Errorf("JSON %s lacks the text", b)
	}
}

// TestSecondsCompress: run times to 2⁻²⁰ s are within half a step of the
// measurement, and a series of them compresses in the store's chunk
// encoding (Prometheus's XOR chunks) to under half of what raw
// nanoseconds take, the point of rounding them.
func TestSecondsCompress(t *testing.T) {
	const step = 1.0 / (1 << 20)
	raw, rounded := chunkenc.NewXORChunk(), chunkenc.NewXORChunk()
	ra, err := raw.Appender()
	if err != nil {
		t.Fatal(err)
	}
	rr, err := rounded.Appender()
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 120 {
		d := 100*time.Microsecond + time.Duration(rng.Int64N(int64(500*time.Microsecond)))
		s := Seconds(d)
		if math.Abs(s-d.Seconds()) > step/2 || math.Mod(s, step) != 0 {
			t.Fatalf("Seconds(%v) = %v: not the nearest multiple of 2⁻²⁰ s", d, s)
		}
		ra.Append(0, int64(i)*60000, d.Seconds())
		rr.Append(0, int64(i)*60000, s)
	}
	t.Logf("120 run times: %d bytes rounded, %d raw", len(rounded.Bytes()), len(raw.Bytes()))
	if r, w := len(rounded.Bytes()), len(raw.Bytes()); 2*r > w {
		t.Errorf("120 run times take %d bytes rounded and %d raw: want rounded under half", r, w)
	}
}
