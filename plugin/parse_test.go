package plugin

import (
	"reflect"
	"strconv"
	"testing"

	"github.com/dmonitor/dmonitor/check"
)

func fp(v float64) *float64 { return &v }

func TestParse(t *testing.T) {
	tests := []struct {
		name   string
		stdout string
		stderr string
		exit   int
		want   Output
	}{
		{
			// The original dmonitor convention: the word alone is the status
			// and, with nothing else printed, the message.
			name: "dmonitor OK", stdout: "OK\n", exit: 0,
			want: Output{Status: check.OK, Raw: "OK", Output: "OK"},
		},
		{
			// FAIL wins over a zero exit code; later lines are the message.
			name: "dmonitor FAIL with reason", stdout: "FAIL\r\n  disk full\non /var \n", exit: 0,
			want: Output{Status: check.Critical, Raw: check.RawFail, Output: "disk full\non /var"},
		},
		{
			// OK with trailing blanks is still the word; the exit code is ignored.
			name: "dmonitor OK ignores exit code", stdout: "OK  \nall fine", exit: 2,
			want: Output{Status: check.OK, Raw: "OK", Output: "all fine"},
		},
		{
			// "OK - ..." is not the bare word: the Nagios API applies.
			name: "nagios text starting with OK", stdout: "OK - load fine", exit: 1,
			want: Output{Status: check.Warning, Raw: "WARNING", Output: "OK - load fine"},
		},
		{
			// No perfdata at all.
			name: "no perfdata", stdout: "CRITICAL - socket timeout\n", exit: 2,
			want: Output{Status: check.Critical, Raw: "CRITICAL", Output: "CRITICAL - socket timeout"},
		},
		{
			// Exit codes outside 0..3 are UNKNOWN.
			name: "exit code 4", stdout: "weird", exit: 4,
			want: Output{Status: check.Unknown, Raw: "UNKNOWN", Output: "weird"},
		},
		{
			// A negative exit code (killed by a signal) is UNKNOWN too.
			name: "exit code -1", stdout: "half", exit: -1,
			want: Output{Status: check.Unknown, Raw: "UNKNOWN", Output: "half"},
		},
		{
			// The Nagios 3 example: perfdata after '|' on line one, long
			// text, a '|' in the long text, then perfdata lines to the end.
			name: "nagios 3 long output",
			stdout: "DISK OK - free space: / 3326 MB (56%); | /=2643MB;5948;5958;0;5968\n" +
				"/ 15272 MB (77%);\n" +
				"/boot 68 MB (69%);\n" +
				"/home 69357 MB (27%);\n" +
				"/var/log 819 MB (84%); | /boot=68MB;88;93;0;98\n" +
				"/home=69357MB;253404;253409;0;253414 \n" +
				"/var/log=818MB;970;975;0;980\n",
			exit: 0,
			want: Output{Status: check.OK, Raw: "OK",
				Output: "DISK OK - free space: / 3326 MB (56%);\n/ 15272 MB (77%);\n/boot 68 MB (69%);\n/home 69357 MB (27%);\n/var/log 819 MB (84%);",
				Perf: []check.Perf{
					{Label: "/", Value: 2643, Text: "2643", UOM: "MB", Warn: "5948", Crit: "5958", Min: fp(0), Max: fp(5968)},
					{Label: "/boot", Value: 68, Text: "68", UOM: "MB", Warn: "88", Crit: "93", Min: fp(0), Max: fp(98)},
					{Label: "/home", Value: 69357, Text: "69357", UOM: "MB", Warn: "253404", Crit: "253409", Min: fp(0), Max: fp(253414)},
					{Label: "/var/log", Value: 818, Text: "818", UOM: "MB", Warn: "970", Crit: "975", Min: fp(0), Max: fp(980)},
				}},
		},
		{
			// Long output without any '|' is all message.
			name:   "long output, perf only on line one",
			stdout: "PROCS OK | procs=3;;;0\n  sshd\r\n  cron\n", exit: 0,
			want: Output{Status: check.OK, Raw: "OK", Output: "PROCS OK\n  sshd\n  cron",
				Perf: []check.Perf{{Label: "procs", Value: 3, Text: "3", Min: fp(0)}}},
		},
		{
			// Quoted labels hold spaces and '' stands for one quote; several
			// items on one line, ranges kept as written.
			name:   "quoted labels",
			stdout: "OK | 'in use'=5%;~:80;@90:95 'it''s here'=1c 'x=y'=2s\n", exit: 0,
			want: Output{Status: check.OK, Raw: "OK", Output: "OK",
				Perf: []check.Perf{
					{Label: "in use", Value: 5, Text: "5", UOM: "%", Warn: "~:80", Crit: "@90:95"},
					{Label: "it's here", Value: 1, Text: "1", UOM: "c"},
					{Label: "x=y", Value: 2, Text: "2", UOM: "s"},
				}},
		},
		{
			// U means the value is unknown: the item is skipped, its
			// neighbours are kept; trailing empty fields are fine.
			name:   "U values",
			stdout: "WARNING | a=U;1;2 b=1.5ms;;;; c=Us d=-2e3\n", exit: 1,
			want: Output{Status: check.Warning, Raw: "WARNING", Output: "WARNING",
				Perf: []check.Perf{
					{Label: "b", Value: 1.5, Text: "1.5", UOM: "ms"},
					{Label: "d", Value: -2000, Text: "-2e3"},
				}},
		},
		{
			// Malformed items are skipped one by one: no '=', empty label,
			// a value that is no number, a unit with digits, a quote that
			// is not followed by '='. What is well formed survives.
			name:   "malformed items",
			stdout: "OK | junk ok1=1 =3 bad=abc num=1.2.3 unit=5s9 'q'x ok2=2B;;;zero;10\n", exit: 0,
			want: Output{Status: check.OK, Raw: "OK", Output: "OK",
				Perf: []check.Perf{
					{Label: "ok1", Value: 1, Text: "1"},
					{Label: "ok2", Value: 2, Text: "2", UOM: "B", Max: fp(10)},
				}},
		},
		{
			// The value is kept as written beside the number it stands for:
			// check_disk's kilobytes, trailing zeros, a sign, an exponent.
			name:   "value text as written",
			stdout: "DISK OK | free=82138904KB;;;0;102400000 load=0.500;;;0; up=+3 tiny=1.0E-7s\n", exit: 0,
			want: Output{Status: check.OK, Raw: "OK", Output: "DISK OK",
				Perf: []check.Perf{
					{Label: "free", Value: 82138904, Text: "82138904", UOM: "KB", Min: fp(0), Max: fp(102400000)},
					{Label: "load", Value: 0.5, Text: "0.500", Min: fp(0)},
					{Label: "up", Value: 3, Text: "+3"},
					{Label: "tiny", Value: 1e-7, Text: "1.0E-7", UOM: "s"},
				}},
		},
		{
			// An unterminated quote ends its line, but not the next lines.
			name:   "unterminated quote",
			stdout: "DNS OK\nlong | a=1 'open=2 b=3\nc=4\n", exit: 0,
			want: Output{Status: check.OK, Raw: "OK", Output: "DNS OK\nlong",
				Perf: []check.Perf{{Label: "a", Value: 1, Text: "1"}, {Label: "c", Value: 4, Text: "4"}}},
		},
		{
			// Nothing on stdout: stderr says what went wrong.
			name: "empty stdout, stderr", stdout: "", stderr: "  /usr/bin/env: 'python9': No such file or directory\n", exit: 127,
			want: Output{Status: check.Unknown, Raw: "UNKNOWN", Output: "/usr/bin/env: 'python9': No such file or directory"},
		},
		{
			// Stdout with only perfdata has no message either.
			name: "perf only, stderr", stdout: "|a=1", stderr: "warning text", exit: 0,
			want: Output{Status: check.OK, Raw: "OK", Output: "warning text",
				Perf: []check.Perf{{Label: "a", Value: 1, Text: "1"}}},
		},
		{
			// A message on stdout wins over stderr.
			name: "stdout wins over stderr", stdout: "CRITICAL: down", stderr: "debug noise", exit: 2,
			want: Output{Status: check.Critical, Raw: "CRITICAL", Output: "CRITICAL: down"},
		},
		{
			// Nothing at all.
			name: "empty everything", exit: 3,
			want: Output{Status: check.Unknown, Raw: "UNKNOWN"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ParseWithStderr([]byte(tt.stdout), []byte(tt.stderr), tt.exit)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseWithStderr(%q, %q, %d) =\n%s\nwant\n%s", tt.stdout, tt.stderr, tt.exit, dump(got), dump(tt.want))
			}
			if tt.stderr == "" {
				if p := Parse([]byte(tt.stdout), tt.exit); !reflect.DeepEqual(p, got) {
					t.Errorf("Parse differs from ParseWithStderr without stderr:\n%s\nvs\n%s", dump(p), dump(got))
				}
			}
		})
	}
}

func dump(o Output) string {
	s := "status=" + o.Status.String() + " raw=" + o.Raw + " output=" + quote(o.Output)
	for _, p := range o.Perf {
		s += "\n  " + perfString(p)
	}
	return s
}

func quote(s string) string { return "\"" + s + "\"" }

func perfString(p check.Perf) string {
	f := func(v *float64) string {
		if v == nil {
			return "nil"
		}
		return formatFloat(*v)
	}
	return quote(p.Label) + "=" + formatFloat(p.Value) + " text=" + quote(p.Text) + quote(p.UOM) + " warn=" + quote(p.Warn) +
		" crit=" + quote(p.Crit) + " min=" + f(p.Min) + " max=" + f(p.Max)
}

func formatFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
