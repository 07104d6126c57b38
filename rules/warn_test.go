package rules

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dmonitor/dmonitor/config"
)

func TestEditDistance(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"check", "check", 0},
		{"chek", "check", 1}, // a letter left out
		{"hots", "host", 1},  // two letters swapped: one edit, not two
		{"warnin", "warning", 1},
		{"critcal", "critical", 1},
		{"", "host", 4},
		{"host", "check", 4},
		{"héte", "hôte", 1}, // runes, not bytes
	}
	for _, tt := range tests {
		if got := editDistance(tt.a, tt.b); got != tt.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := editDistance(tt.b, tt.a); got != tt.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d (symmetric)", tt.b, tt.a, got, tt.want)
		}
	}
}

func TestDidYouMean(t *testing.T) {
	tests := []struct {
		word string
		want string
	}{
		{"chek", "check"},
		{"hots", "host"},
		{"CHECK", "check"}, // case aside
		{"ho", ""},         // two edits in a word of two letters is a guess
		{"team", ""},
		{"check", ""}, // the word itself is no suggestion
	}
	for _, tt := range tests {
		got := didYouMean(tt.word, instanceKeys)
		want := ""
		if tt.want != "" {
			want = ` (did you mean "` + tt.want + `"?)`
		}
		if got != want {
			t.Errorf("didYouMean(%q) = %q, want %q", tt.word, got, want)
		}
	}
}

// TestWarningsWithoutConfig: with no configuration to check select
// against, only what is wrong whatever the configuration is warned about.
func TestWarningsWithoutConfig(t *testing.T) {
	data, err := os.ReadFile("testdata/typos.warn.yaml")
	if err != nil {
		t.Fatal(err)
	}
	set, err := Parse("typos.yaml", data, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range set.Warnings() {
		got = append(got, w.Error())
	}
	want := []string{
		`typos.yaml:7:14: rule "load-high": select: unknown key "chek" (did you mean "check"?)`,
		`typos.yaml:11:15: rule "disk": severity: unknown severity "warnin" (did you mean "warning"?)`,
		`typos.yaml:14:15: rule "disk-capital": severity: unknown severity "Critical" (did you mean "critical"?)`,
		`typos.yaml:17:14: rule "team": select: unknown key "team":`,
	}
	if len(got) != len(want) {
		t.Fatalf("warnings:\n%s\nwant %d", strings.Join(got, "\n"), len(want))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("warning %d = %s\nwant it to start with %s", i, got[i], want[i])
		}
	}
}

// TestWarningsEmptyConfig: a configuration without checks leaves every
// rule selecting nothing, said once per rule at its name.
func TestWarningsEmptyConfig(t *testing.T) {
	set, err := Parse("r.yaml", []byte("rules:\n  - name: all\n  - name: www\n    select: {host: www1}\n"), Options{Config: &config.Config{}})
	if err != nil {
		t.Fatal(err)
	}
	want := `r.yaml:2:11: rule "all": selects nothing: the configuration has no checks` + "\n" +
		`r.yaml:3:11: rule "www": selects nothing: the configuration has no checks`
	if got := set.Warnings().Error(); got != want {
		t.Errorf("warnings:\n%s\nwant:\n%s", got, want)
	}
}

// TestWarningsLoad: Load gives the warnings of every file, sorted and
// named like its errors; rules that are fine have none.
func TestWarningsLoad(t *testing.T) {
	dir := t.TempDir()
	for name, text := range map[string]string{
		"b.yaml": "rules:\n  - name: load\n    select: {chek: load}\n",
		"a.yaml": "rules:\n  - name: www\n    select: {host: \"www*\", check: http}\n    severity: warnin\n",
		"c.yaml": "rules:\n  - name: fine\n    select: {check: ping}\n    severity: warning\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	set, err := Load(dir, Options{Config: warnConfig()})
	if err != nil {
		t.Fatal(err)
	}
	ws := set.Warnings()
	if len(ws) != 2 || ws[0].File != filepath.Join(dir, "a.yaml") || ws[0].Line != 4 || ws[0].Col != 15 ||
		ws[1].File != filepath.Join(dir, "b.yaml") || ws[1].Line != 3 || ws[1].Col != 14 {
		t.Errorf("warnings:\n%v", ws)
	}
	// Warnings returns a copy: the Set is immutable.
	ws[0] = nil
	if set.Warnings()[0] == nil {
		t.Error("Warnings shares its slice with the Set")
	}
	// Rules that are fine have no warnings.
	if err := os.Remove(filepath.Join(dir, "a.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "b.yaml")); err != nil {
		t.Fatal(err)
	}
	if set, err = Load(dir, Options{Config: warnConfig()}); err != nil || set.Warnings() != nil {
		t.Errorf("Load = %v; warnings %v, want none", err, set.Warnings())
	}
}
