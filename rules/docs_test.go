package rules

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/config"
	"github.com/dmonitor/dmonitor/tsdb"
)

// TestDocs loads every ```yaml block of docs/RULES.md (and of README.md
// between <!-- rules-guide --> and <!-- /rules-guide -->) as a rule file
// and checks the cases of the <!-- expect ... --> comment after it, so the
// guide cannot drift from the code.
func TestDocs(t *testing.T) {
	docs := map[string]string{"../docs/RULES.md": ""}
	if b, err := os.ReadFile("../README.md"); err == nil {
		if _, rest, ok := strings.Cut(string(b), "<!-- rules-guide -->"); ok {
			guide, _, _ := strings.Cut(rest, "<!-- /rules-guide -->")
			docs["../README.md"] = guide
		}
	}
	b, err := os.ReadFile("../docs/RULES.md")
	if err != nil {
		t.Fatal(err)
	}
	docs["../docs/RULES.md"] = string(b)
	total := 0
	for file, text := range docs {
		blocks := yamlBlocks(text)
		if file == "../docs/RULES.md" && len(blocks) < 10 {
			t.Fatalf("%s: found %d yaml blocks; the guide has at least 10", file, len(blocks))
		}
		for _, b := range blocks {
			total++
			t.Run(fmt.Sprintf("%s:%d", file, b.line), func(t *testing.T) {
				runBlock(t, fmt.Sprintf("%s:%d", file, b.line), b.yaml, b.expect)
			})
		}
	}
	t.Logf("%d blocks", total)
}

type docBlock struct {
	line   int
	yaml   string
	expect []string // the case lines of the expect comment
}

var expectComment = regexp.MustCompile(`(?s)^\s*<!-- expect:?(.*?)-->`)

func yamlBlocks(text string) []docBlock {
	var out []docBlock
	lines := strings.SplitAfter(text, "\n")
	for i := 0; i < len(lines); i++ {
		if strings.TrimSpace(lines[i]) != "```yaml" {
			continue
		}
		b := docBlock{line: i + 1}
		var body strings.Builder
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
			body.WriteString(lines[i])
		}
		b.yaml = body.String()
		if m := expectComment.FindStringSubmatch(strings.Join(lines[min(i+1, len(lines)):], "")); m != nil {
			for _, l := range strings.Split(m[1], "\n") {
				if l = strings.TrimSpace(l); l != "" {
					b.expect = append(b.expect, l)
				}
			}
		}
		out = append(out, b)
	}
	return out
}

// runBlock loads src and checks each expect case against it. A block that
// loads has no warnings but those its warning cases name.
func runBlock(t *testing.T, name, src string, cases []string) {
	t.Helper()
	set, err := Parse(name, []byte(src), Options{})
	var warnings []string
	if err == nil {
		for _, w := range set.Warnings() {
			warnings = append(warnings, w.Error())
		}
	}
	for _, c := range cases {
		verdict, fields, perr := parseCase(c)
		if perr != nil {
			t.Fatalf("expect %q: %v", c, perr)
		}
		if verdict == "error" {
			if err == nil || !strings.Contains(err.Error(), fields["error"][0]) {
				t.Errorf("expect %q: load error = %v", c, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("does not load: %v", err)
		}
		if verdict == "warning" {
			i := slices.IndexFunc(warnings, func(w string) bool { return strings.Contains(w, fields["warning"][0]) })
			if i < 0 {
				t.Errorf("expect %q: warnings are %q", c, warnings)
				continue
			}
			warnings = slices.Delete(warnings, i, i+1)
			continue
		}
		if err := checkCase(set, verdict, fields); err != nil {
			t.Errorf("expect %q: %v", c, err)
		}
	}
	if err == nil && len(warnings) > 0 {
		t.Errorf("warnings no expect case names: %q", warnings)
	}
}

// parseCase splits "verdict: k=v k="v w" ..." into the verdict and the
// fields (a key may repeat). error's quoted text is fields["error"].
func parseCase(s string) (string, map[string][]string, error) {
	verdict, rest, ok := strings.Cut(s, ":")
	if !ok {
		return "", nil, errors.New("want verdict: fields")
	}
	fields := map[string][]string{}
	rest = strings.TrimSpace(rest)
	if verdict == "error" || verdict == "warning" {
		msg, err := strconv.Unquote(rest)
		fields[verdict] = []string{msg}
		return verdict, fields, err
	}
	for rest != "" {
		k, v, ok := strings.Cut(rest, "=")
		if !ok {
			return "", nil, fmt.Errorf("want key=value at %q", rest)
		}
		if strings.HasPrefix(v, `"`) {
			q, err := strconv.QuotedPrefix(v)
			if err != nil {
				return "", nil, err
			}
			rest = v[len(q):]
			v, _ = strconv.Unquote(q)
		} else {
			v, rest, _ = strings.Cut(v, " ")
		}
		fields[k] = append(fields[k], v)
		rest = strings.TrimSpace(rest)
	}
	return verdict, fields, nil
}

// docNow is the evaluation time of every case.
var docNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func checkCase(set *Set, verdict string, f map[string][]string) error {
	get := func(k, def string) string {
		if v := f[k]; len(v) > 0 {
			return v[len(v)-1]
		}
		return def
	}
	rules := set.Rules()
	if len(rules) == 0 {
		return errors.New("no rules")
	}
	// Rules() puts parents first; the block's last rule is last in file
	// order, which the guide's blocks keep.
	r := rules[len(rules)-1]
	if name := get("rule", ""); name != "" {
		if r = set.Rule(name); r == nil {
			return fmt.Errorf("no rule %q", name)
		}
	}
	host, chk := get("host", "www1"), get("check", "http")
	switch verdict {
	case "selects", "skips":
		if got := r.Matches(host, chk, nil); got != (verdict == "selects") {
			return fmt.Errorf("Matches(%s, %s) = %v", host, chk, got)
		}
		return nil
	}
	quorum, err := strconv.Atoi(get("quorum", "2"))
	if err != nil {
		return err
	}
	var latest []check.Result
	var history [][]check.Status
	if obs := get("observers", ""); obs != "" {
		for i, o := range strings.Split(obs, ",") {
			o, domain, _ := strings.Cut(o, "@") // CRITICAL@eu: an observer in failure domain eu
			var hist []check.Status
			for _, w := range strings.Split(o, "/") {
				s, err := check.ParseStatus(w)
				if err != nil {
					return err
				}
				hist = append(hist, s)
			}
			latest = append(latest, check.Result{Host: host, Check: chk, Observer: fmt.Sprintf("o%d", i+1), Domain: domain,
				Status: hist[0], Start: docNow.Add(-10 * time.Second)})
			history = append(history, hist[1:])
		}
	} else {
		// No observers given: a quorum of passing ones, for conditions
		// that read only the TSDB.
		for i := range quorum {
			latest = append(latest, check.Result{Observer: fmt.Sprintf("o%d", i+1), Start: docNow.Add(-10 * time.Second)})
			history = append(history, nil)
		}
	}
	quorumDomains, err := strconv.Atoi(get("quorum_domains", "1"))
	if err != nil {
		return err
	}
	env, known := NewEnv(host, chk, latest, docNow, time.Minute, quorum, quorumDomains)
	for i := range env.Observers {
		env.Observers[i].History = history[i]
	}
	q := memQuerier{failing: map[string]bool{}}
	for _, s := range f["series"] {
		series, err := parseSeries(s)
		if err != nil {
			return err
		}
		q.series = append(q.series, series)
	}
	for _, m := range f["failquery"] {
		q.failing[m] = true
	}
	env.Data = set.Prefetch(context.Background(), q, docNow)

	fires, evalErr := false, error(nil)
	if known {
		fires, evalErr = r.Eval(env)
	}
	switch verdict {
	case "unknown":
		if known && evalErr == nil {
			return fmt.Errorf("known, condition %v", fires)
		}
		return nil
	case "fires", "quiet":
		if !known {
			return fmt.Errorf("unknown: %d fresh observers, quorum %d", env.Total, quorum)
		}
		if evalErr != nil {
			return evalErr
		}
		if fires != (verdict == "fires") {
			return fmt.Errorf("condition = %v", fires)
		}
	default:
		return fmt.Errorf("unknown verdict %q", verdict)
	}
	summary, description, err := r.Render(env)
	if err != nil {
		return err
	}
	if want, ok := f["summary"]; ok && summary != want[0] {
		return fmt.Errorf("summary = %q, want %q", summary, want[0])
	}
	if want, ok := f["description"]; ok && description != want[0] {
		return fmt.Errorf("description = %q, want %q", description, want[0])
	}
	return nil
}

var seriesSyntax = regexp.MustCompile(`^([^{ ]+)\{([^}]*)\}((?: \S+)+)$`)

// parseSeries reads "metric{k=v,...} v1 v2 ...": samples a minute apart,
// the last at docNow.
func parseSeries(s string) (tsdb.Series, error) {
	m := seriesSyntax.FindStringSubmatch(s)
	if m == nil {
		return tsdb.Series{}, fmt.Errorf("series %q: want metric{k=v,...} v1 v2 ...", s)
	}
	out := tsdb.Series{Metric: m[1], Tags: map[string]string{}}
	for _, kv := range strings.Split(m[2], ",") {
		k, v, _ := strings.Cut(kv, "=")
		out.Tags[k] = v
	}
	vals := strings.Fields(m[3])
	for i, v := range vals {
		x, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return tsdb.Series{}, err
		}
		out.Samples = append(out.Samples, tsdb.Sample{Time: docNow.Add(-time.Duration(len(vals)-1-i) * time.Minute), Value: x})
	}
	return out, nil
}

// memQuerier answers queries from series in memory, as a TSDB would:
// the series of the metric with their samples in [Start, End].
type memQuerier struct {
	series  []tsdb.Series
	failing map[string]bool // metrics whose queries fail
	queries *atomic.Int64   // counts queries when not nil
}

func (m memQuerier) Query(_ context.Context, q tsdb.Query) ([]tsdb.Series, error) {
	if m.queries != nil {
		m.queries.Add(1)
	}
	if m.failing[q.Metric] {
		return nil, fmt.Errorf("%w: connection refused", tsdb.ErrUnavailable)
	}
	var out []tsdb.Series
	for _, s := range m.series {
		if s.Metric != q.Metric {
			continue
		}
		c := tsdb.Series{Metric: s.Metric, Tags: s.Tags}
		for _, p := range s.Samples {
			if !p.Time.Before(q.Start) && !p.Time.After(q.End) {
				c.Samples = append(c.Samples, p)
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// TestDocsWarningCase: the warning verdict of the expect comments finds a
// warning by its text, as the guide's example of a typo uses it.
func TestDocsWarningCase(t *testing.T) {
	runBlock(t, "inline", "rules:\n  - name: load\n    select: {chek: load}\n    severity: warnin\n", []string{
		`warning: "select: unknown key \"chek\" (did you mean \"check\"?)"`,
		`warning: "severity: unknown severity \"warnin\" (did you mean \"warning\"?)"`,
	})
}

// TestReadmeQuickStart follows the configuration steps of the README's
// Quick start on a copy of examples/standalone, as a reader would: each
// ```yaml block is put into dmonitor.yaml (a top-level key the file has
// is edited, since YAML refuses a repeated key; any other is added), and
// each mkdir and touch line runs in a shell from the repository's root.
// The result must load with the ssh check on 127.0.0.1, and a block that
// edits a key the example has must keep everything the example has under
// it: the reader who copies it loses nothing.
func TestReadmeQuickStart(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	followQuickStart(t, string(b))
}

func followQuickStart(t *testing.T, readme string) {
	t.Helper()
	_, section, ok := strings.Cut(readme, "\n## Quick start\n")
	if !ok {
		t.Fatal("README.md has no section ## Quick start")
	}
	section, _, _ = strings.Cut(section, "\n## ")

	root := t.TempDir()
	example := filepath.Join(root, "examples", "standalone")
	copyExample(t, "../examples/standalone", example)
	yml := filepath.Join(example, "dmonitor.yaml")
	src, err := os.ReadFile(yml)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		t.Fatal(err)
	}
	file := doc.Content[0]
	blocks := yamlBlocks(section)
	if len(blocks) == 0 {
		t.Fatal("no ```yaml block in the Quick start")
	}
	for _, blk := range blocks {
		var snip yaml.Node
		if err := yaml.Unmarshal([]byte(blk.yaml), &snip); err != nil {
			t.Fatalf("README.md Quick start, block %d: %v", blk.line, err)
		}
		m := snip.Content[0]
		for i := 0; i+1 < len(m.Content); i += 2 {
			key, val := m.Content[i].Value, m.Content[i+1]
			j := slices.IndexFunc(file.Content, func(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Value == key })
			if j < 0 || j%2 == 1 {
				file.Content = append(file.Content, m.Content[i], val)
				continue
			}
			keepsAll(t, key, file.Content[j+1], val)
			file.Content[j+1] = val
		}
	}
	out, err := yaml.Marshal(&doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(yml, out, 0o644); err != nil {
		t.Fatal(err)
	}

	ran := 0
	for _, line := range strings.Split(section, "\n") {
		cmd, ok := strings.CutPrefix(line, "    ")
		if !ok || !(strings.HasPrefix(cmd, "mkdir ") || strings.HasPrefix(cmd, "touch ")) {
			continue
		}
		c := exec.Command("sh", "-c", cmd)
		c.Dir = root
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", cmd, err, out)
		}
		ran++
	}
	if ran == 0 {
		t.Fatal("no mkdir or touch line in the Quick start")
	}

	cfg, err := config.Load(example)
	if err != nil {
		t.Fatalf("the example with the Quick start's steps does not load:\n%v\ndmonitor.yaml:\n%s", err, out)
	}
	i := slices.IndexFunc(cfg.Targets, func(tg config.Target) bool { return tg.Host == "127.0.0.1" && tg.Check.Name == "ssh" })
	if i < 0 {
		t.Fatalf("no check ssh on 127.0.0.1 among %d targets", len(cfg.Targets))
	}
	if argv := cfg.Targets[i].Check.Argv("127.0.0.1"); !slices.Contains(argv, "127.0.0.1") {
		t.Errorf("ssh runs %q, want it to name the host", argv)
	}
}

// keepsAll fails unless every key of the mapping was has the same value in
// the mapping now: a README block that edits part of the example's file
// keeps the rest.
func keepsAll(t *testing.T, key string, was, now *yaml.Node) {
	t.Helper()
	var before, after map[string]any
	if err := was.Decode(&before); err != nil {
		return // not a mapping: the block replaces a value
	}
	if err := now.Decode(&after); err != nil {
		t.Fatalf("the README's %s: is not a mapping: %v", key, err)
	}
	for k, v := range before {
		if !reflect.DeepEqual(after[k], v) {
			t.Errorf("the README's %s: block drops or changes %s, which examples/standalone/dmonitor.yaml has: a reader copying it loses it", key, k)
		}
	}
}

// copyExample copies the example's configuration tree, not its data/.
func copyExample(t *testing.T, from, to string) {
	t.Helper()
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() == "data" {
			continue
		}
		src, dst := filepath.Join(from, e.Name()), filepath.Join(to, e.Name())
		if e.IsDir() {
			if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
				t.Fatal(err)
			}
			continue
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(to, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
