package config

import (
	"errors"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzLoad loads config trees made of fuzzed files: dmonitor.yaml and
// nodes.txt as given, hosts.d/ holding one empty file per "host/check"
// line of hosts, alert.d/ one per line of alerts; beside them a token, two
// runnable plugins and two scripts, as a real tree has. Load must return a
// Config or Errors, never both and never panic; every error names a file
// and points inside it; a Config holds only absolute paths; and loading
// the same tree twice says the same.
func FuzzLoad(f *testing.F) {
	good := readTree(f, "testdata/good")
	f.Add(good[FileName], good["nodes.txt"], hostLines(good), alertLines(good))
	design := readTree(f, "testdata/design")
	f.Add(design[FileName], []byte(nil), "www.example.org/http\n", "")
	for _, tc := range badCases {
		files := make(map[string][]byte)
		for name, body := range tc.files {
			files[name] = []byte(body)
		}
		f.Add(files[FileName], files["nodes.txt"], hostLines(files), alertLines(files))
	}
	f.Add([]byte("checks: &c {a: {command: [check_dummy, '0']}}\nreceivers: {x: *c}\n"), []byte("a\n"), "h/a\n", "")
	f.Add([]byte("\"\\x"), []byte("[::1]:2929\n::1\n"), "", "")
	// The fixed files are written once; each run rewrites only what it
	// fuzzes, as file creation is what a run spends most of its time on.
	dir := f.TempDir()
	fixed := map[string]string{
		"token":                  "secret\n",
		"plugins/check_ping":     "#!/bin/sh\necho OK\n",
		"plugins/check_dummy":    "#!/bin/sh\necho OK\n",
		"scripts/check_local.sh": "#!/bin/sh\necho OK\n",
		"scripts/page.sh":        "#!/bin/sh\ncat >/dev/null\n",
		"page":                   "#!/bin/sh\ncat >/dev/null\n",
	}
	writeTree(f, dir, fixed)
	f.Fuzz(func(t *testing.T, yaml, nodes []byte, hosts, alerts string) {
		for _, d := range []string{hostsDir, alertDir} {
			if err := os.RemoveAll(filepath.Join(dir, d)); err != nil {
				t.Fatal(err)
			}
		}
		files := map[string]string{FileName: string(yaml), "nodes.txt": string(nodes)}
		for _, p := range entries(hosts, 2) {
			files[hostsDir+"/"+p] = ""
		}
		for _, p := range entries(alerts, 1) {
			files[alertDir+"/"+p] = ""
		}
		writeTree(t, dir, files)
		maps.Copy(files, fixed)

		cfg, err := Load(dir)
		checkLoad(t, dir, files, cfg, err)
		cfg2, err2 := Load(dir)
		if (cfg == nil) != (cfg2 == nil) || errString(err) != errString(err2) {
			t.Fatalf("loading twice differs:\n%v\nthen\n%v", err, err2)
		}
		cfg, err = LoadAs(dir, "")
		checkLoad(t, dir, files, cfg, err)
	})
}

// lineWord finds a line number that a message names.
var lineWord = regexp.MustCompile(`\bline \d+`)

// checkLoad fails unless Load's answer keeps its promises: a Config or
// Errors, each error naming its file, positioned inside it, and the Config
// made of absolute paths.
func checkLoad(t *testing.T, dir string, files map[string]string, cfg *Config, err error) {
	t.Helper()
	if (cfg == nil) == (err == nil) {
		t.Fatalf("Load returned config %v and error %v: want exactly one", cfg != nil, err)
	}
	if err != nil {
		var errs Errors
		if !errors.As(err, &errs) || len(errs) == 0 {
			t.Fatalf("Load's error is not a non-empty Errors: %#v", err)
		}
		for _, e := range errs {
			checkError(t, dir, files, e)
		}
		if !slices.IsSortedFunc(errs, func(a, b *Error) int {
			return strings.Compare(a.File, b.File)
		}) {
			t.Fatalf("errors not sorted by file:\n%v", err)
		}
		return
	}
	paths := []string{cfg.Dir, cfg.PluginDir, cfg.DataDir}
	paths = append(paths, cfg.PluginPath...)
	if cfg.Control.TokenFile != "" {
		paths = append(paths, cfg.Control.TokenFile)
	}
	for _, c := range cfg.Checks {
		if len(c.Command) == 0 {
			t.Fatalf("check %q has no command", c.Name)
		}
		paths = append(paths, c.Command[0])
	}
	for _, r := range cfg.Receivers {
		if r.Exec != nil {
			paths = append(paths, r.Exec.Command[0])
		}
	}
	for _, p := range paths {
		if !filepath.IsAbs(p) {
			t.Fatalf("a relative path in the Config: %q", p)
		}
	}
	for i, tg := range cfg.Targets {
		if tg.Check == nil || cfg.Checks[tg.Check.Name] != tg.Check {
			t.Fatalf("target %s/%v runs a check that is not in Checks", tg.Host, tg.Check)
		}
		if i > 0 && (cfg.Targets[i-1].Host > tg.Host || cfg.Targets[i-1].Host == tg.Host && cfg.Targets[i-1].Check.Name >= tg.Check.Name) {
			t.Fatalf("targets not sorted and distinct at %d: %s %s", i, tg.Host, tg.Check.Name)
		}
	}
}

// checkError fails unless e names a file (relative inside the tree,
// absolute outside it) and, when it has a line, one that file has.
func checkError(t *testing.T, dir string, files map[string]string, e *Error) {
	t.Helper()
	switch {
	case e.File == "" || e.Msg == "":
		t.Fatalf("an error without a file or a message: %#v", e)
	case filepath.IsAbs(e.File) && e.File != dir && strings.HasPrefix(e.File, dir+"/"):
		t.Fatalf("a file inside the tree named by its absolute path: %v", e)
	case !filepath.IsAbs(e.File) && strings.HasPrefix(filepath.Clean(e.File), ".."):
		t.Fatalf("a relative file outside the tree: %v", e)
	case e.Line < 0 || e.Col < 0 || e.Col > 0 && e.Line == 0:
		t.Fatalf("a position that is none: %#v", e)
	case e.Line == 0 && lineWord.MatchString(e.Msg):
		t.Fatalf("the message names a line the error does not carry: %v", e)
	case !strings.HasPrefix(e.Error(), e.File+":"):
		t.Fatalf("Error() does not start with the file: %q", e.Error())
	}
	if e.Line == 0 {
		return
	}
	body, ok := files[e.File]
	if !ok {
		t.Fatalf("a line in a file that has none: %v", e)
	}
	lines := lineStarts(body)
	if e.Line > len(lines) {
		t.Fatalf("line %d of a file of %d lines: %v", e.Line, len(lines), e)
	}
	// Columns count runes; a column just past the end of its line is the
	// end of the line (where YAML reports a missing value).
	if width := utf8.RuneCountInString(lines[e.Line-1]); e.Col > width+1 {
		t.Fatalf("column %d of line %d, which is %d wide: %v", e.Col, e.Line, width, e)
	}
}

// lineStarts splits s into lines at every break YAML knows: \n, \r\n and
// a lone \r. A file's last line counts even when it is empty.
func lineStarts(s string) []string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	return strings.Split(s, "\n")
}

// entries returns the names the lines of s give: paths of depth parts
// (host/check, or a file name), each part a name a directory can hold and
// Load does not skip (no leading dot). At most 16, so a tree stays small.
func entries(s string, depth int) []string {
	var out []string
	for line := range strings.Lines(s) {
		line = strings.TrimRight(line, "\n")
		parts := strings.Split(line, "/")
		if len(parts) != depth || len(out) == 16 {
			continue
		}
		ok := true
		for _, p := range parts {
			if p == "" || len(p) > 64 || strings.HasPrefix(p, ".") || strings.ContainsRune(p, 0) {
				ok = false
			}
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// writeTree writes files under dir: a body starting with #! as a runnable
// script, anything else as a plain file.
func writeTree(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(0o644)
		if strings.HasPrefix(body, "#!") {
			mode = 0o755
		}
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
	}
}

// readTree reads every regular file under dir, by its path inside it.
func readTree(f *testing.F, dir string) map[string][]byte {
	f.Helper()
	files := make(map[string][]byte)
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		files[rel] = b
		return err
	})
	if err != nil {
		f.Fatal(err)
	}
	return files
}

// hostLines lists the hosts.d/<host>/<check> entries of files, one a line.
func hostLines(files map[string][]byte) string {
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if p, ok := strings.CutPrefix(name, hostsDir+"/"); ok && strings.Count(p, "/") == 1 && !strings.HasSuffix(p, "/") {
			b.WriteString(p + "\n")
		}
	}
	return b.String()
}

// alertLines lists the alert.d/ entries of files, one a line.
func alertLines(files map[string][]byte) string {
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if p, ok := strings.CutPrefix(name, alertDir+"/"); ok && !strings.Contains(p, "/") {
			b.WriteString(p + "\n")
		}
	}
	return b.String()
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
