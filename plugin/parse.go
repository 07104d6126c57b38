package plugin

import (
	"strconv"
	"strings"

	"github.com/dmonitor/dmonitor/check"
)

// Output is what a plugin run said, as parsed from its stdout and exit code.
type Output struct {
	Status check.Status
	Raw    string // OK, FAIL, or the Nagios status name
	Output string // message and long output, lines joined with \n, trimmed
	Perf   []check.Perf
}

// Parse interprets the stdout of a plugin that exited with exitCode.
//
// A first line of exactly OK or FAIL (trailing blanks and \r aside) is the
// status, and the remaining lines are the message; the exit code is then
// ignored. Anything else is read by the Nagios plugin API: the exit code is
// the status (0 OK, 1 WARNING, 2 CRITICAL, anything else UNKNOWN), the text
// before the first '|' of line one is the message, lines after it are long
// output, and everything after a '|' is performance data — on line one up to
// its end, and in the long output up to the end of stdout. Performance data
// items that cannot be parsed are skipped; an item whose value is U
// (unknown) is skipped too.
func Parse(stdout []byte, exitCode int) Output {
	text := string(stdout)
	first, rest, _ := strings.Cut(text, "\n")

	switch w := strings.TrimRight(first, " \t\r"); w {
	case "OK", "FAIL":
		out := strings.TrimSpace(rest)
		if out == "" {
			out = w
		}
		if w == "OK" {
			return Output{Status: check.OK, Raw: check.OK.String(), Output: out}
		}
		return Output{Status: check.Critical, Raw: check.RawFail, Output: out}
	}

	st := nagiosStatus(exitCode)
	o := Output{Status: st, Raw: st.String()}

	msg, perf, _ := strings.Cut(first, "|")
	var b strings.Builder
	b.WriteString(strings.TrimSpace(msg))
	o.Perf = parsePerf(perf, o.Perf)

	// Nagios 3 long output: lines are text until the first '|' among them;
	// from there on, up to the end of stdout, everything is perfdata.
	inPerf := false
	for rest != "" {
		var line string
		line, rest, _ = strings.Cut(rest, "\n")
		if inPerf {
			o.Perf = parsePerf(line, o.Perf)
			continue
		}
		if before, after, ok := strings.Cut(line, "|"); ok {
			line = before
			o.Perf = parsePerf(after, o.Perf)
			inPerf = true
		}
		b.WriteByte('\n')
		b.WriteString(strings.TrimRight(line, " \t\r"))
	}
	o.Output = strings.TrimSpace(b.String())
	return o
}

// ParseWithStderr is Parse, except that when stdout carries no message the
// trimmed stderr becomes the Output, so that a plugin which fails before it
// prints anything still says why.
func ParseWithStderr(stdout, stderr []byte, exitCode int) Output {
	o, _ := parseWithStderr(stdout, stderr, exitCode)
	return o
}

// parseWithStderr is ParseWithStderr that also reports whether the Output
// came from stderr, so the Runner knows which truncation to mention.
func parseWithStderr(stdout, stderr []byte, exitCode int) (Output, bool) {
	o := Parse(stdout, exitCode)
	if o.Output != "" {
		return o, false
	}
	msg := strings.TrimSpace(string(stderr))
	if msg == "" {
		return o, false
	}
	o.Output = msg
	return o, true
}

func nagiosStatus(exitCode int) check.Status {
	switch exitCode {
	case 0:
		return check.OK
	case 1:
		return check.Warning
	case 2:
		return check.Critical
	}
	return check.Unknown
}

// isBlank reports whether c separates perfdata items.
func isBlank(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// tokenEnd returns the index of the first blank in s, or len(s).
func tokenEnd(s string) int {
	for i := 0; i < len(s); i++ {
		if isBlank(s[i]) {
			return i
		}
	}
	return len(s)
}

// parsePerf appends the items of one line of performance data to dst:
// 'label'=value[UOM];[warn];[crit];[min];[max], separated by blanks. A label
// in single quotes may hold blanks, and a doubled quote stands for one. A
// malformed item is skipped up to the next blank, so the items around it
// survive; an unterminated quote leaves no way to find the item's end, and
// ends the line.
func parsePerf(s string, dst []check.Perf) []check.Perf {
	for {
		i := 0
		for i < len(s) && isBlank(s[i]) {
			i++
		}
		s = s[i:]
		if s == "" {
			return dst
		}

		var label string
		if s[0] == '\'' {
			end := closingQuote(s)
			if end < 0 {
				return dst
			}
			label = strings.ReplaceAll(s[1:end], "''", "'")
			s = s[end+1:]
			if s == "" || s[0] != '=' {
				s = s[tokenEnd(s):]
				continue
			}
			s = s[1:]
		} else {
			tok := s[:tokenEnd(s)]
			eq := strings.IndexByte(tok, '=')
			if eq < 0 {
				s = s[len(tok):]
				continue
			}
			label = tok[:eq]
			s = s[eq+1:]
		}

		end := tokenEnd(s)
		if p, ok := parseItem(label, s[:end]); ok {
			dst = append(dst, p)
		}
		s = s[end:]
	}
}

// closingQuote returns the index of the quote that closes the label opened
// by s[0], skipping doubled quotes, or -1 when there is none.
func closingQuote(s string) int {
	for i := 1; i < len(s); i++ {
		if s[i] != '\'' {
			continue
		}
		if i+1 < len(s) && s[i+1] == '\'' {
			i++
			continue
		}
		return i
	}
	return -1
}

// parseItem parses value[UOM];[warn];[crit];[min];[max]. It reports false
// for an item to skip: an empty label, a value of U, or a value that is not a
// number followed by a unit. The value and the thresholds are kept as
// written too (Text), so they can be shown as the plugin printed them; a min
// or max that is not a number is dropped rather than losing the value.
func parseItem(label, field string) (check.Perf, bool) {
	if label == "" {
		return check.Perf{}, false
	}
	val, field, _ := strings.Cut(field, ";")
	if val == "U" {
		return check.Perf{}, false
	}
	n := numberPrefix(val)
	v, err := strconv.ParseFloat(val[:n], 64)
	if n == 0 || err != nil {
		return check.Perf{}, false
	}
	uom := val[n:]
	if !validUOM(uom) {
		return check.Perf{}, false
	}
	p := check.Perf{Label: label, Value: v, Text: val[:n], UOM: uom}
	var mn, mx string
	p.Warn, field, _ = strings.Cut(field, ";")
	p.Crit, field, _ = strings.Cut(field, ";")
	mn, field, _ = strings.Cut(field, ";")
	mx, _, _ = strings.Cut(field, ";")
	p.Min = optFloat(mn)
	p.Max = optFloat(mx)
	return p, true
}

// numberPrefix returns the length of the leading run of s that can belong to
// a decimal number. No unit starts with e or E, so the exponent is safe.
func numberPrefix(s string) int {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9', c == '.', c == '-', c == '+', c == 'e', c == 'E':
		default:
			return i
		}
	}
	return len(s)
}

// validUOM accepts the units of the plugin API (s ms us % B KB MB GB TB c)
// and the similar ones plugins use in practice (MiB, KiB, bps, req/s), but
// not text that shows the item is garbled.
func validUOM(u string) bool {
	for i := 0; i < len(u); i++ {
		c := u[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '%' || c == '/') {
			return false
		}
	}
	return true
}

func optFloat(s string) *float64 {
	if s == "" {
		return nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return nil
	}
	return &v
}
