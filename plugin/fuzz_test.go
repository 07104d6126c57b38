package plugin

import (
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/dmonitor/dmonitor/check"
)

// FuzzParse feeds arbitrary stdout, stderr and exit codes to the output
// parser. Beyond not panicking, what it returns must keep the promises of
// Parse's doc comment, and its performance data must survive being written
// out again in the plugin API's syntax and read back: what the parser
// keeps is exactly what a well-formed item can say.
func FuzzParse(f *testing.F) {
	for _, s := range []struct {
		stdout, stderr string
		exit           int
	}{
		{"OK\n", "", 0},
		{"FAIL\r\n  disk full\non /var \n", "", 0},
		{"CRITICAL - socket timeout\n", "", 2},
		{"DISK OK - free space: / 3326 MB (56%); | /=2643MB;5948;5958;0;5968\n" +
			"/ 15272 MB (77%);\n/var/log 819 MB (84%); | /boot=68MB;88;93;0;98\n" +
			"/home=69357MB;253404;253409;0;253414 \n/var/log=818MB;970;975;0;980\n", "", 0},
		{"PROCS OK | procs=3;;;0\n  sshd\r\n  cron\n", "", 0},
		{"OK | 'in use'=5%;~:80;@90:95 'it''s here'=1c 'x=y'=2s\n", "", 0},
		{"WARNING | a=U;1;2 b=1.5ms;;;; c=Us d=-2e3\n", "", 1},
		{"OK | junk ok1=1 =3 bad=abc num=1.2.3 unit=5s9 'q'x ok2=2B;;;zero;10\n", "", 0},
		{"DNS OK\nlong | a=1 'open=2 b=3\nc=4\n", "", 0},
		{"", "  /usr/bin/env: 'python9': No such file or directory\n", 127},
		{"|a=1", "warning text", 0},
		{"HTTP OK: HTTP/1.1 200 OK - 612 bytes in 0.001 second response time |time=0.000523s;;;0.000000;10.000000 size=612B;;;0", "", 0},
		{"PING OK - Packet loss = 0%, RTA = 0.04 ms|rta=0.043000ms;100.000000;500.000000;0.000000 pl=0%;20;60;0", "", 0},
		{"LOAD OK - load average: 0.10, 0.20, 0.30|load1=0.100;5.000;10.000;0; load5=0.200;4.000;6.000;0;", "", 0},
		{"OK | x=1;;;NaN;inf y=1e308;;;-Inf;+Infinity", "", 0},
	} {
		f.Add([]byte(s.stdout), []byte(s.stderr), s.exit)
	}
	f.Fuzz(func(t *testing.T, stdout, stderr []byte, exit int) {
		o := Parse(stdout, exit)
		checkOutput(t, stdout, exit, o)

		if ws, fromStderr := parseWithStderr(stdout, stderr, exit); !fromStderr {
			if !sameOutput(ws, o) {
				t.Fatalf("ParseWithStderr without using stderr differs from Parse:\n%s\nvs\n%s", dump(ws), dump(o))
			}
		} else if o.Output != "" || ws.Output != strings.TrimSpace(string(stderr)) || ws.Output == "" {
			t.Fatalf("stderr used although stdout says %q, or not as its trimmed text: %q", o.Output, ws.Output)
		}

		if len(o.Perf) == 0 {
			return
		}
		// The same items written out again, all on line one, read back the same.
		line := "OK |"
		for _, p := range o.Perf {
			line += " " + formatPerf(p)
		}
		again := Parse([]byte(line), 0).Perf
		if len(again) != len(o.Perf) {
			t.Fatalf("%d perfdata items, %d after a round trip through %q", len(o.Perf), len(again), line)
		}
		for i := range again {
			if !samePerf(again[i], o.Perf[i]) {
				t.Fatalf("item %d changed in a round trip through %q:\n %s\n %s", i, line, perfString(o.Perf[i]), perfString(again[i]))
			}
		}
	})
}

// checkOutput fails unless o is what Parse's doc comment promises for
// stdout and exit.
func checkOutput(t *testing.T, stdout []byte, exit int, o Output) {
	t.Helper()
	first, _, _ := strings.Cut(string(stdout), "\n")
	word := strings.TrimRight(first, " \t\r")
	switch {
	case word == "OK" || word == "FAIL":
		want := check.OK
		if word == "FAIL" {
			want = check.Critical
		}
		if o.Status != want || o.Raw != word || o.Output == "" || o.Perf != nil {
			t.Fatalf("first line %q: got %s, want status %v, Raw %q, a message and no perfdata", first, dump(o), want, word)
		}
	default:
		if o.Status != nagiosStatus(exit) || o.Raw != o.Status.String() {
			t.Fatalf("exit %d: got %s", exit, dump(o))
		}
		// Every '|' starts performance data, so none is left in the text.
		if strings.Contains(o.Output, "|") {
			t.Fatalf("a '|' left in the message: %q", o.Output)
		}
	}
	if o.Output != strings.TrimSpace(o.Output) {
		t.Fatalf("message not trimmed: %q", o.Output)
	}
	for _, p := range o.Perf {
		switch {
		case p.Label == "":
			t.Fatalf("an item without a label: %s", perfString(p))
		case strings.Contains(p.Label, "\n"):
			t.Fatalf("a label across lines: %s", perfString(p))
		case math.IsNaN(p.Value) || math.IsInf(p.Value, 0):
			t.Fatalf("a value that is no number: %s", perfString(p))
		case !textIsValue(p):
			t.Fatalf("a value whose text does not read as it: %s", perfString(p))
		case !validUOM(p.UOM):
			t.Fatalf("a garbled unit: %s", perfString(p))
		case strings.ContainsAny(p.Warn+p.Crit, "; \t\r\n"):
			t.Fatalf("a threshold holding a separator: %s", perfString(p))
		}
	}
}

// textIsValue reports whether p.Text is the value as written: a number that
// reads as p.Value, with nothing around it.
func textIsValue(p check.Perf) bool {
	v, err := strconv.ParseFloat(p.Text, 64)
	return err == nil && sameFloat(v, p.Value) && strings.TrimSpace(p.Text) == p.Text
}

// formatPerf writes p in the plugin API's syntax, its label always quoted
// and its value as the plugin wrote it.
func formatPerf(p check.Perf) string {
	s := "'" + strings.ReplaceAll(p.Label, "'", "''") + "'=" + p.Text + p.UOM + ";" + p.Warn + ";" + p.Crit + ";"
	if p.Min != nil {
		s += formatFloat(*p.Min)
	}
	s += ";"
	if p.Max != nil {
		s += formatFloat(*p.Max)
	}
	return s
}

func sameOutput(a, b Output) bool {
	if a.Status != b.Status || a.Raw != b.Raw || a.Output != b.Output || len(a.Perf) != len(b.Perf) {
		return false
	}
	for i := range a.Perf {
		if !samePerf(a.Perf[i], b.Perf[i]) {
			return false
		}
	}
	return true
}

func samePerf(a, b check.Perf) bool {
	return a.Label == b.Label && sameFloat(a.Value, b.Value) && a.Text == b.Text && a.UOM == b.UOM && a.Warn == b.Warn && a.Crit == b.Crit &&
		sameOptFloat(a.Min, b.Min) && sameOptFloat(a.Max, b.Max)
}

// sameFloat tells NaN equal to NaN, and 0 apart from -0.
func sameFloat(a, b float64) bool {
	return math.Float64bits(a) == math.Float64bits(b) || math.IsNaN(a) && math.IsNaN(b)
}

func sameOptFloat(a, b *float64) bool {
	if a == nil || b == nil {
		return a == b
	}
	return sameFloat(*a, *b)
}
