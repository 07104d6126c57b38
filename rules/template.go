package rules

import (
	"io"
	"regexp"
	"strconv"
	"strings"
	"text/template"
	"unicode/utf8"
)

// templateErr matches text/template's errors: "template: NAME:LINE: msg"
// from the parser, "template: NAME:LINE:COL: msg" from execution, COL a
// 0-based byte offset into the line.
var templateErr = regexp.MustCompile(`^template: [a-z]+:(\d+)(?::(\d+))?: (.*)$`)

// parseTemplate parses src as the template name and tries it on a sample
// instance, so that a misspelt key ({{ .hots }}) is a load error rather
// than a broken notification. It returns nil and no problem for "".
func parseTemplate(name, src string, labels map[string]string) (*template.Template, []problem) {
	if src == "" {
		return nil, nil
	}
	t, err := template.New(name).Option("missingkey=error").Parse(src)
	if err == nil {
		sample := Env{Host: "host", Check: "check", Observers: []Observer{{Name: "observer", Status: "OK", OK: true, Fresh: true}},
			Failing: 0, Passing: 1, Total: 1, Quorum: 1}
		r := &Rule{Name: "rule", Severity: DefaultSeverity, Labels: labels}
		err = t.Execute(io.Discard, r.templateData(&sample))
	}
	if err == nil {
		return t, nil
	}
	m := templateErr.FindStringSubmatch(err.Error())
	if m == nil {
		return nil, []problem{{off: -1, msg: err.Error()}}
	}
	line, _ := strconv.Atoi(m[1])
	col := -1
	if m[2] != "" {
		col, _ = strconv.Atoi(m[2])
	}
	return nil, []problem{{off: runeOffset(src, line, col), msg: m[3]}}
}

// runeOffset returns the rune offset in s of the 1-based line and the
// 0-based byte column within it (the line's start when col < 0), or -1
// when s has no such line.
func runeOffset(s string, line, col int) int {
	start := 0
	for l := 1; l < line; l++ {
		i := strings.IndexByte(s[start:], '\n')
		if i < 0 {
			return -1
		}
		start += i + 1
	}
	end := start
	if col > 0 {
		end = min(start+col, len(s))
	}
	return utf8.RuneCountInString(s[:end])
}
