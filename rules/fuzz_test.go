package rules

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/config"
)

// FuzzLoad feeds arbitrary bytes to the loader as a rule file: it must
// return rules or errors, never panic; every error must be positioned
// inside the file (file:line:col, or the file alone when the YAML parser
// gives no line); and what it loads must evaluate and render without
// panicking either.
func FuzzLoad(f *testing.F) {
	for _, glob := range []string{"testdata/*.yaml", "../rules.d/*.yaml"} {
		files, _ := filepath.Glob(glob)
		for _, file := range files {
			if b, err := os.ReadFile(file); err == nil {
				f.Add(b)
			}
		}
	}
	f.Add([]byte("rules:\n  - name: a\n    expr: 'streak(\"OK\") > 1 && count(\"m\", {\"a\": \"*\"}, \"1m\") == 0'\n    summary: \"{{ range .observers }}{{ .name }}{{ end }}\"\n"))
	f.Add([]byte("rules: &a [*a]\n"))
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	latest := []check.Result{
		{Observer: "a", Status: check.Critical, Start: now},
		{Observer: "b", Status: check.OK, Start: now},
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		set, err := Parse("fuzz.yaml", data, Options{})
		if err != nil {
			if set != nil {
				t.Fatal("both a set and an error")
			}
			checkPositions(t, data, err)
			return
		}
		env, _ := NewEnv("h", "c", latest, now, time.Minute, 2, 1)
		env.Data = NewData(nil, nil)
		for _, r := range set.Rules() {
			r.Matches("h", "c", nil)
			r.Eval(env)
			r.Render(env)
		}
	})
}

// lineWord finds a line number that a message names.
var lineWord = regexp.MustCompile(`\bline \d+`)

// checkPositions fails unless err is config.Errors whose every element
// names fuzz.yaml at a line and column that data has.
func checkPositions(t *testing.T, data []byte, err error) {
	t.Helper()
	var errs config.Errors
	if !errors.As(err, &errs) || len(errs) == 0 {
		t.Fatalf("the error is not a non-empty config.Errors: %#v", err)
	}
	// Lines as YAML counts them: \r\n, \n and a lone \r each end one.
	lines := strings.Split(strings.ReplaceAll(strings.ReplaceAll(string(data), "\r\n", "\n"), "\r", "\n"), "\n")
	for _, e := range errs {
		switch {
		case e.File != "fuzz.yaml" || e.Msg == "":
			t.Fatalf("an error without its file or a message: %#v", e)
		case e.Line < 0 || e.Col < 0 || e.Col > 0 && e.Line == 0:
			t.Fatalf("a position that is none: %#v", e)
		case e.Line == 0 && lineWord.MatchString(e.Msg):
			t.Fatalf("the message names a line the error does not carry: %v", e)
		case e.Line > len(lines):
			t.Fatalf("line %d of a file of %d lines: %v", e.Line, len(lines), e)
		case e.Line > 0 && e.Col > utf8.RuneCountInString(lines[e.Line-1])+1:
			t.Fatalf("column %d of line %d, which is %d wide: %v", e.Col, e.Line, utf8.RuneCountInString(lines[e.Line-1]), e)
		}
	}
}
