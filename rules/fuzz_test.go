package rules

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/check"
)

// FuzzLoad feeds arbitrary bytes to the loader as a rule file: it must
// return rules or errors, never panic, and what it loads must evaluate and
// render without panicking either.
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
			return
		}
		env, _ := NewEnv("h", "c", latest, now, time.Minute, 2)
		env.Data = NewData(nil, nil)
		for _, r := range set.Rules() {
			r.Matches("h", "c", nil)
			r.Eval(env)
			r.Render(env)
		}
	})
}
