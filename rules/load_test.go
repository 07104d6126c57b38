package rules

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/config"
)

var update = flag.Bool("update", false, "rewrite testdata/*.err from the current messages")

// TestBadFiles loads each testdata/*.bad.yaml and compares the error with
// the .err file beside it: every problem, with file, rule, line and
// column. Run with -update to rewrite the .err files, then read the diff.
func TestBadFiles(t *testing.T) {
	files, err := filepath.Glob("testdata/*.bad.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, file := range files {
		name := filepath.Base(file)
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			set, err := Parse(name, data, Options{Receivers: []string{"ops", "default"}, Reserved: []string{"default", "observer-up", "partial-outage"}})
			if err == nil {
				t.Fatalf("loaded %d rules, want an error", len(set.Rules()))
			}
			var errs config.Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error of type %T, want config.Errors", err)
			}
			got := err.Error() + "\n"
			golden := strings.TrimSuffix(file, ".yaml") + ".err"
			checkGolden(t, golden, got)
		})
	}
}

// TestLoadDir covers what only a directory has: file order, names unique
// across files, only *.yaml read, a missing directory.
func TestLoadDir(t *testing.T) {
	write := func(t *testing.T, dir string, files map[string]string) {
		t.Helper()
		for name, text := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Run("duplicate across files", func(t *testing.T) {
		dir := t.TempDir()
		write(t, dir, map[string]string{
			"a.yaml": "rules:\n  - name: x\n",
			"b.yaml": "rules:\n  - name: y\n  - name: x\n",
		})
		_, err := Load(dir, Options{})
		want := filepath.Join(dir, "b.yaml") + `:3:11: rule "x": duplicate name (first defined at ` + filepath.Join(dir, "a.yaml") + ":2:11)"
		if err == nil || err.Error() != want {
			t.Errorf("error = %v\nwant %s", err, want)
		}
	})
	t.Run("dependency across files", func(t *testing.T) {
		dir := t.TempDir()
		write(t, dir, map[string]string{
			"a.yaml":     "rules:\n  - name: child\n    depends_on: [parent]\n",
			"b.yaml":     "rules:\n  - name: parent\n",
			"notes.txt":  "not a rule file",
			".tmp.yaml":  "broken: [",
			"empty.yaml": "",
		})
		set, err := Load(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, r := range set.Rules() {
			names = append(names, r.Name)
		}
		if got := strings.Join(names, " "); got != "parent child" {
			t.Errorf("Rules() = %s, want parent before child", got)
		}
	})
	t.Run("missing directory", func(t *testing.T) {
		set, err := Load(filepath.Join(t.TempDir(), "rules.d"), Options{})
		if err != nil || len(set.Rules()) != 0 {
			t.Errorf("Load = %v, %v; want an empty set", set, err)
		}
	})
	t.Run("unreadable file", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.Mkdir(filepath.Join(dir, "dir.yaml"), 0o755); err != nil {
			t.Fatal(err)
		}
		_, err := Load(dir, Options{})
		if err == nil || !strings.Contains(err.Error(), "dir.yaml: read: is a directory") {
			t.Errorf("error = %v", err)
		}
	})
}

// warnConfig is the configuration the warnings of TestWarnFiles are about:
// www1 and www2 run http and ping, db1 runs mysql and ping.
func warnConfig() *config.Config {
	cfg := &config.Config{Checks: map[string]*config.Check{}}
	for _, name := range []string{"http", "mysql", "ping"} {
		cfg.Checks[name] = &config.Check{Name: name}
	}
	for _, t := range [][2]string{{"db1", "mysql"}, {"db1", "ping"}, {"www1", "http"}, {"www1", "ping"}, {"www2", "http"}, {"www2", "ping"}} {
		cfg.Targets = append(cfg.Targets, config.Target{Host: t[0], Check: cfg.Checks[t[1]]})
	}
	return cfg
}

// TestWarnFiles loads each testdata/*.warn.yaml, which must load, against
// warnConfig and compares its warnings with the .warn file beside it. Run
// with -update to rewrite the .warn files, then read the diff.
func TestWarnFiles(t *testing.T) {
	files, err := filepath.Glob("testdata/*.warn.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, file := range files {
		name := filepath.Base(file)
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			set, err := Parse(name, data, Options{Config: warnConfig()})
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			got := set.Warnings().Error() + "\n"
			golden := strings.TrimSuffix(file, ".yaml")
			checkGolden(t, golden, got)
		})
	}
}

// checkGolden compares got with the golden file, or rewrites the file with
// -update.
func checkGolden(t *testing.T, golden, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

// TestParseFlappingAndGroups: the flap thresholds and a redundancy group
// are read as written.
func TestParseFlappingAndGroups(t *testing.T) {
	set, err := Parse("r.yaml", []byte(`
rules:
  - name: lb-a
  - name: lb-b
  - name: db
  - name: app
    depends_on: [{any: [lb-a, lb-b]}, db]
    flapping: {changes: 4, window: 10m}
`), Options{})
	if err != nil {
		t.Fatal(err)
	}
	app := set.Rule("app")
	if want := (Flapping{Changes: 4, Window: 10 * time.Minute}); app.Flapping != want {
		t.Errorf("flapping = %+v, want %+v", app.Flapping, want)
	}
	if want := []Dependency{{Any: []string{"lb-a", "lb-b"}}, {Any: []string{"db"}}}; !reflect.DeepEqual(app.DependsOn, want) {
		t.Errorf("depends_on = %+v, want %+v", app.DependsOn, want)
	}
	if got := app.Parents(); !slices.Equal(got, []string{"lb-a", "lb-b", "db"}) {
		t.Errorf("parents = %v", got)
	}
}
