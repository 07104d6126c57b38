package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/dmonitor/dmonitor/config"
	"github.com/dmonitor/dmonitor/evaluator"
	"github.com/dmonitor/dmonitor/evaluator/leader"
	"github.com/dmonitor/dmonitor/rules"
	"github.com/dmonitor/dmonitor/tsdb/embedded"
	"github.com/dmonitor/dmonitor/tsdb/opentsdb"
)

func newRulesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rules",
		Short: "Validate the rules of rules.d and replay them over the TSDB's history",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newRulesCheckCmd(), newRulesTestCmd())
	return cmd
}

func newRulesCheckCmd() *cobra.Command {
	var (
		dir     string
		jsonOut bool
		strict  bool
	)
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Validate the configuration and every rule file, reporting all errors at once",
		Long: `Load the configuration and every rules.d/*.yaml file as the daemon would, and
print either "N rules in M files OK" or every problem found, one per line, as
file:line:col: rule "name": message, with file relative to the configuration
directory. Exits 1 when there is any problem.

What loads but is likely a mistake is printed as a warning, as
file:line:col: warning: rule "name": message: a select key other than host
and check ("chek"), a severity other than critical, warning and info, and a
select that matches no host×check of the configuration. Warnings leave the
exit code 0; with --strict they are errors. The daemon logs them when it
loads the rules.

With --json, prints {"ok": bool, "rules": [names], "errors": [{"file", "line",
"col", "message"}], "warnings": [same]} instead (line and col are 0 when
unknown; with --strict the warnings are among the errors).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			names, files, errs, warns := checkRules(dir)
			if strict {
				errs = append(errs, warns...)
				warns = nil
			}
			out := cmd.OutOrStdout()
			if jsonOut {
				if err := writeJSON(out, rulesCheckJSON(names, errs, warns)); err != nil {
					return err
				}
			} else {
				w := cmd.ErrOrStderr()
				for _, e := range errs {
					fmt.Fprintln(w, e.Error())
				}
				for _, e := range warns {
					fmt.Fprintln(w, warningText(e))
				}
				switch {
				case len(errs) > 0 && len(warns) > 0:
					fmt.Fprintf(w, "%s, %s\n", plural(len(errs), "error"), plural(len(warns), "warning"))
				case len(errs) > 0:
					fmt.Fprintf(w, "%s\n", plural(len(errs), "error"))
				case len(warns) > 0:
					fmt.Fprintf(out, "%s in %s OK, %s\n", plural(len(names), "rule"), plural(files, "file"), plural(len(warns), "warning"))
				default:
					fmt.Fprintf(out, "%s in %s OK\n", plural(len(names), "rule"), plural(files, "file"))
				}
			}
			if len(errs) > 0 {
				return exitError{1}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "config", "/etc/dmonitor", "configuration directory")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print the outcome as a JSON object")
	cmd.Flags().BoolVar(&strict, "strict", false, "treat warnings (unknown select keys or severities, a select matching nothing) as errors")
	return cmd
}

// warningText formats a warning as "file:line:col: warning: message".
func warningText(e *config.Error) string {
	w := *e
	w.Msg = "warning: " + e.Msg
	return w.Error()
}

// checkRules loads the configuration in dir and its rules, and returns the
// rule names, the number of rule files, every problem and, when the rules
// load, their warnings, with file names relative to dir. When the
// configuration itself is refused, the rules are still checked, without
// knowing which receivers and targets exist.
func checkRules(dir string) (names []string, files int, errs, warns config.Errors) {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	rulesDir := filepath.Join(dir, "rules.d")
	var set *rules.Set
	var err error
	if cfg, cerr := config.Load(dir); cerr != nil {
		errs = append(errs, asErrors(dir, cerr)...)
		set, err = rules.Load(rulesDir, rules.Options{Reserved: leader.BuiltinRules()})
	} else {
		set, err = loadRules(cfg)
	}
	// rules.Load names files by their full path; config.Load relative to
	// the directory. Say both the same way.
	relative := func(es config.Errors) config.Errors {
		for _, e := range es {
			if rel, rerr := filepath.Rel(dir, e.File); rerr == nil && !strings.HasPrefix(rel, "..") {
				e.File = rel
			}
		}
		return es
	}
	if err != nil {
		errs = append(errs, relative(asErrors(dir, err))...)
	}
	if set != nil {
		for _, r := range set.Rules() {
			names = append(names, r.Name)
		}
		warns = relative(set.Warnings())
	}
	entries, _ := os.ReadDir(rulesDir)
	for _, e := range entries {
		// The files rules.Load reads.
		if strings.HasSuffix(e.Name(), ".yaml") && !strings.HasPrefix(e.Name(), ".") {
			files++
		}
	}
	return names, files, errs, warns
}

// logRuleWarnings logs each warning of set (rules.Set.Warnings) at warn
// level, as the daemon does when it loads or reloads the rules: they load,
// but most likely do not do what their author meant.
func logRuleWarnings(log *slog.Logger, set *rules.Set) {
	for _, w := range set.Warnings() {
		log.Warn("rule file warning: the rule loads, but likely not as meant", "warning", w.Error())
	}
}

// asErrors returns the problems of an error from config.Load or
// rules.Load, which are config.Errors; anything else becomes one problem
// about dir.
func asErrors(dir string, err error) config.Errors {
	var es config.Errors
	if errors.As(err, &es) {
		return es
	}
	return config.Errors{{File: dir, Msg: err.Error(), Err: err}}
}

type ruleErrorJSON struct {
	File    string `json:"file"`
	Line    int    `json:"line"`
	Col     int    `json:"col"`
	Message string `json:"message"`
}

type rulesCheckOutput struct {
	OK       bool            `json:"ok"`
	Rules    []string        `json:"rules"`
	Errors   []ruleErrorJSON `json:"errors"`
	Warnings []ruleErrorJSON `json:"warnings"`
}

func rulesCheckJSON(names []string, errs, warns config.Errors) rulesCheckOutput {
	out := rulesCheckOutput{OK: len(errs) == 0, Rules: names, Errors: []ruleErrorJSON{}, Warnings: []ruleErrorJSON{}}
	if out.Rules == nil {
		out.Rules = []string{}
	}
	for _, e := range errs {
		out.Errors = append(out.Errors, ruleErrorJSON{File: e.File, Line: e.Line, Col: e.Col, Message: e.Msg})
	}
	for _, e := range warns {
		out.Warnings = append(out.Warnings, ruleErrorJSON{File: e.File, Line: e.Line, Col: e.Col, Message: e.Msg})
	}
	return out
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

type rulesTestFlags struct {
	dir      string
	from, to string
	step     string
	tsdbURL  string
	jsonOut  bool
}

func newRulesTestCmd() *cobra.Command {
	var f rulesTestFlags
	cmd := &cobra.Command{
		Use:   "test [RULE...]",
		Short: "Replay rules over the TSDB's history and print what they would have done",
		Long: `Replay the rules over the check results recorded in the TSDB, with the
decision engine the daemon runs, and print for every rule instance (rule, host,
check) the states it would have gone through and the notifications it would
have sent, with their ids. With RULE arguments only those rules are reported;
the rules they depend on are evaluated too, since they suppress them.

--from and --to take an RFC 3339 time (2026-11-21T10:00:00Z), "now", or a
time before now written as "-2h" or "2h-ago" (units s, m, h, d, w; combined as
in 1h30m). The rules are evaluated at --from and every --step after it, up to
--to; the default step is the smallest check interval.

With the embedded store, its directory (data_dir/tsdb) is opened. A running
daemon holds a lock on it: then point --tsdb-url at that daemon's OpenTSDB API
(tsdb.listen, http://127.0.0.1:4242 by default), or at a real OpenTSDB.

What a replay cannot know: plugin output is not stored in the TSDB, so
observers' outputs are empty; re-checks of parent rules cannot be run in the
past; silences and acknowledgements are not applied; and every instance
starts ok at --from.`,
		Example: `  dmonitor rules test --from 2h-ago
  dmonitor rules test --from 2026-11-21T10:00:00Z --to 2026-11-21T12:00:00Z --step 30s www-http
  dmonitor rules test --tsdb-url http://127.0.0.1:4242 --from -1d --json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return rulesTest(cmd, f, args)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.dir, "config", "/etc/dmonitor", "configuration directory")
	fl.StringVar(&f.from, "from", "-1h", `first evaluation time: RFC 3339, "now", "-2h" or "2h-ago"`)
	fl.StringVar(&f.to, "to", "now", `last evaluation time: RFC 3339, "now", "-2h" or "2h-ago"`)
	fl.StringVar(&f.step, "step", "", "time between evaluations, e.g. 30s (default: the smallest check interval)")
	fl.StringVar(&f.tsdbURL, "tsdb-url", "", "read the history from this OpenTSDB HTTP API (a running node's tsdb.listen, or OpenTSDB itself) instead of the configured store")
	fl.BoolVar(&f.jsonOut, "json", false, "print the replay as a JSON object")
	return cmd
}

func rulesTest(cmd *cobra.Command, f rulesTestFlags, names []string) error {
	now := time.Now().UTC().Truncate(time.Second)
	from, err := parseTime(f.from, now)
	if err != nil {
		return fmt.Errorf("--from: %w", err)
	}
	to, err := parseTime(f.to, now)
	if err != nil {
		return fmt.Errorf("--to: %w", err)
	}
	var step time.Duration
	if f.step != "" {
		if step, err = config.ParseDuration(f.step); err != nil || step <= 0 {
			return fmt.Errorf("--step %q: want a positive duration such as 30s", f.step)
		}
	}
	cfg, err := config.Load(f.dir)
	if err != nil {
		fmt.Fprintf(cmd.ErrOrStderr(), "dmonitor: configuration refused:\n%v\n", err)
		return exitError{1}
	}
	set, err := loadRules(cfg)
	if err != nil {
		fmt.Fprintf(cmd.ErrOrStderr(), "dmonitor: rules refused:\n%v\n", err)
		return exitError{1}
	}
	store, err := openHistory(cfg, f.tsdbURL)
	if err != nil {
		return err
	}
	defer store.Close()
	res, err := evaluator.Replay(cmd.Context(), cfg, set, store, evaluator.ReplayOptions{From: from, To: to, Step: step, Rules: names})
	if err != nil {
		return err
	}
	if f.jsonOut {
		return writeJSON(cmd.OutOrStdout(), res)
	}
	printReplay(cmd.OutOrStdout(), res)
	return nil
}

// parseTime reads a --from or --to value at now: RFC 3339, "now", or a
// duration before now as "-2h" or "2h-ago".
func parseTime(s string, now time.Time) (time.Time, error) {
	if s == "now" {
		return now, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	rel, ago := strings.CutSuffix(s, "-ago")
	if ago || strings.HasPrefix(s, "-") {
		d, err := config.ParseDuration(rel)
		if err == nil && (ago && d > 0 || !ago && d < 0) {
			if ago {
				d = -d
			}
			return now.Add(d), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q: want an RFC 3339 time (2026-11-21T10:00:00Z), now, or a time before now as -2h or 2h-ago", s)
}

// historyStore is what a replay reads: the TSDB's Query, and Close.
type historyStore interface {
	rules.Querier
	Close() error
}

// openHistory opens the TSDB the configuration records to, or the
// OpenTSDB API at url when one is given.
func openHistory(cfg *config.Config, url string) (historyStore, error) {
	if url == "" && cfg.TSDB.Backend == config.BackendOpenTSDB {
		url = cfg.TSDB.URL
	}
	if url != "" {
		return opentsdb.New(opentsdb.Options{URL: url})
	}
	dir := filepath.Join(cfg.DataDir, "tsdb")
	// Open would create an empty store; a replay must not leave one behind.
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no embedded store at %s: nothing has been recorded with this configuration (is data_dir right, or does another node record? then use --tsdb-url)", dir)
	}
	store, err := embedded.Open(dir, embedded.Options{Retention: cfg.TSDB.Retention, OutOfOrderWindow: cfg.TSDB.OutOfOrder})
	if errors.Is(err, syscall.EWOULDBLOCK) {
		hint := "set tsdb.listen in dmonitor.yaml so the daemon serves it, then use --tsdb-url http://ADDRESS"
		if cfg.TSDB.Listen != "" {
			hint = "use --tsdb-url http://" + cfg.TSDB.Listen
		}
		return nil, fmt.Errorf("the embedded store %s is locked, most likely by a running `dmonitor run`: "+
			"read it through that daemon's OpenTSDB API instead: %s (%w)", dir, hint, err)
	}
	return store, err
}

// printReplay writes res for people: a block per instance that changed,
// one line per transition with what it would have notified, then one line
// for the instances that stayed ok, then what a replay cannot know.
func printReplay(w io.Writer, res *evaluator.ReplayResult) {
	queries := fmt.Sprintf("%d TSDB queries", res.Queries)
	if res.Queries == 1 {
		queries = "1 TSDB query"
	}
	fmt.Fprintf(w, "replay from %s to %s every %s: %s, %s\n", stamp(res.From), stamp(res.To), res.Step,
		plural(res.Steps, "step"), queries)
	var quiet []string
	for _, in := range res.Instances {
		name := fmt.Sprintf("%s on %s (%s)", in.Rule, in.Host, in.Check)
		if len(in.Transitions) == 0 && len(in.Notifications) == 0 {
			quiet = append(quiet, name)
			continue
		}
		fmt.Fprintf(w, "\nrule %s\n", name)
		ts, ns := in.Transitions, in.Notifications
		// Both lists are in time order, with at most one of each per step.
		for len(ts) > 0 || len(ns) > 0 {
			var line string
			var at time.Time
			if len(ts) > 0 && (len(ns) == 0 || !ns[0].At.Before(ts[0].At)) {
				tr := ts[0]
				ts = ts[1:]
				at, line = tr.At, fmt.Sprintf("%s → %s", tr.From, tr.To)
				if tr.Reason != "" {
					line += ": " + tr.Reason
				}
			} else {
				at, line = ns[0].At, "still firing" // a repeat: a notification without a change of state
			}
			if len(ns) > 0 && ns[0].At.Equal(at) {
				n := ns[0]
				ns = ns[1:]
				line += fmt.Sprintf(" (notify %s: %s %s)", strings.Join(n.Receivers, ", "), n.Status, n.ID)
			}
			fmt.Fprintf(w, "  %s %s\n", stamp(at), line)
		}
	}
	if len(quiet) > 0 {
		fmt.Fprintf(w, "\nok throughout: %s\n", strings.Join(quiet, ", "))
	}
	fmt.Fprintln(w)
	for _, n := range res.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }
