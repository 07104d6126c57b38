package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/dmonitor/dmonitor/config"
	"github.com/dmonitor/dmonitor/control"
	"github.com/dmonitor/dmonitor/silence"
)

func newSilenceCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "silence",
		Short: "Add, list and expire silences on a running node",
		Long: `Add, list and expire the silences of a running node, through its control API.
A silenced alert is not notified while the silence lasts.

` + connectionHelp + `

` + exitCodesHelp,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newSilenceAddCmd(), newSilenceListCmd(), newSilenceExpireCmd())
	return cmd
}

// knownLabels are the labels dmonitor gives every rule instance; a rule
// may add its own.
var knownLabels = []string{"alertname", "rule", "host", "check", "severity"}

func newSilenceAddCmd() *cobra.Command {
	var (
		f        apiFlags
		duration string
		comment  string
		author   string
	)
	cmd := &cobra.Command{
		Use:   "add MATCHER...",
		Short: "Silence the alerts that every matcher matches, from now for --duration",
		Long: `Silence, from now for --duration, the alerts that all the matchers match, and
print the new silence's id.

A matcher is written as Alertmanager writes them: name=value, name!=value,
name=~regex or name!~regex (regular expressions match the whole value), the
value optionally in double quotes. The labels are alertname and rule (both
the rule's name), host, check, severity, and the rule's own labels. At
least one matcher must require a value: host=~".*" alone is refused.

` + connectionHelp + `

` + exitCodesHelp,
		Example: `  dmonitor silence add host=www1 --duration 2h --comment "kernel upgrade"
  dmonitor silence add host=~"www[0-9]+" check=http --duration 30m
  ID=$(dmonitor silence add check=disk --duration 1d --comment "new disks on order")`,
		Args: cobra.MinimumNArgs(1),
		RunE: apiCommand(func(cmd *cobra.Command, args []string) error {
			d, err := config.ParseDuration(duration)
			if err != nil || d <= 0 {
				return refused("--duration %q: want a positive duration, e.g. 30m, 2h or 1d", duration)
			}
			var ms []silence.Matcher
			for _, a := range args {
				m, err := parseMatcher(a)
				if err != nil {
					return refused("%w", err)
				}
				if !slices.Contains(knownLabels, m.Name) {
					fmt.Fprintf(cmd.ErrOrStderr(), "dmonitor: note: %q is not a label dmonitor sets (%s); the silence matches only the alerts of rules that declare it\n",
						m.Name, strings.Join(knownLabels, ", "))
				}
				ms = append(ms, m)
			}
			c, err := f.connect(cmd, true)
			if err != nil {
				return err
			}
			// startsAt is left to the node ("now" by its clock), so a
			// client clock ahead of it cannot leave the silence pending.
			body := struct {
				Matchers  []silence.Matcher `json:"matchers"`
				EndsAt    time.Time         `json:"endsAt"`
				CreatedBy string            `json:"createdBy"`
				Comment   string            `json:"comment"`
			}{ms, time.Now().Add(d).UTC(), author, comment}
			b, err := c.call(cmd.Context(), http.MethodPost, "/api/v1/silences", body)
			if err != nil {
				return err
			}
			var created struct {
				SilenceID string `json:"silenceID"`
			}
			if err := json.Unmarshal(b, &created); err != nil || created.SilenceID == "" {
				return &cliError{exitUnreachable, fmt.Errorf("POST %s/api/v1/silences: no silenceID in the answer %q", c.base, b)}
			}
			fmt.Fprintln(cmd.OutOrStdout(), created.SilenceID)
			return nil
		}),
	}
	f.register(cmd)
	cmd.Flags().StringVarP(&duration, "duration", "d", "1h", "how long the silence lasts, from now: 90m, 2h, 1d, 2w")
	cmd.Flags().StringVarP(&comment, "comment", "c", "", "why, for whoever sees the silence")
	cmd.Flags().StringVarP(&author, "author", "a", defaultAuthor(), "who sets the silence")
	return cmd
}

// parseMatcher reads a matcher as Alertmanager's amtool takes it and
// silence.Matcher.String writes it: name=value, name!=value, name=~regex or
// name!~regex, the value optionally double-quoted.
func parseMatcher(s string) (silence.Matcher, error) {
	bad := func(why string) (silence.Matcher, error) {
		return silence.Matcher{}, fmt.Errorf("matcher %q: %s; want name=value, name!=value, name=~regex or name!~regex", s, why)
	}
	i := strings.IndexAny(s, "=!")
	if i < 0 {
		return bad("no operator")
	}
	m := silence.Matcher{Name: s[:i], IsEqual: true}
	if m.Name == "" || strings.ContainsAny(m.Name, " \t\"") {
		return bad("no label name before the operator")
	}
	rest := s[i:]
	switch {
	case strings.HasPrefix(rest, "=~"):
		m.IsRegex, rest = true, rest[2:]
	case strings.HasPrefix(rest, "!~"):
		m.IsRegex, m.IsEqual, rest = true, false, rest[2:]
	case strings.HasPrefix(rest, "!="):
		m.IsEqual, rest = false, rest[2:]
	case strings.HasPrefix(rest, "="):
		rest = rest[1:]
	default:
		return bad("unknown operator")
	}
	m.Value = rest
	if strings.HasPrefix(rest, `"`) {
		v, err := strconv.Unquote(rest)
		if err != nil {
			return bad("the quoted value does not end with its quote")
		}
		m.Value = v
	}
	return m, nil
}

// listedSilence is a silence of GET /api/v1/silences.
type listedSilence struct {
	silence.Silence
	Status struct {
		State silence.State `json:"state"`
	} `json:"status"`
}

func newSilenceListCmd() *cobra.Command {
	var (
		f       apiFlags
		all     bool
		jsonOut bool
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the active and pending silences",
		Long: `List the node's active and pending silences, with --all the expired ones too
(they are kept a while, to show what was muted). With --json, prints the
API's JSON list of every silence as it comes.

` + connectionHelp + `

` + exitCodesHelp,
		Example: `  dmonitor silence list
  dmonitor silence list --all --json`,
		Args: cobra.NoArgs,
		RunE: apiCommand(func(cmd *cobra.Command, _ []string) error {
			c, err := f.connect(cmd, false)
			if err != nil {
				return err
			}
			var list []listedSilence
			raw, err := c.get(cmd.Context(), "/api/v1/silences", &list)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if jsonOut {
				_, err := out.Write(raw)
				return err
			}
			list = slices.DeleteFunc(list, func(s listedSilence) bool { return !all && s.Status.State == silence.StateExpired })
			if len(list) == 0 {
				fmt.Fprintln(out, "no silences")
				return nil
			}
			slices.SortStableFunc(list, func(a, b listedSilence) int { return a.EndsAt.Compare(b.EndsAt) })
			now := time.Now()
			tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATE\tMATCHERS\tSTARTS\tENDS\tCREATED BY\tCOMMENT")
			for _, s := range list {
				ms := make([]string, len(s.Matchers))
				for i, m := range s.Matchers {
					ms[i] = m.String()
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.Status.State, strings.Join(ms, " "),
					when(now, s.StartsAt), when(now, s.EndsAt), s.CreatedBy, oneLine(s.Comment))
			}
			return tw.Flush()
		}),
	}
	f.register(cmd)
	cmd.Flags().BoolVar(&all, "all", false, "list the expired silences too")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print the API's JSON list")
	return cmd
}

func newSilenceExpireCmd() *cobra.Command {
	var f apiFlags
	cmd := &cobra.Command{
		Use:   "expire ID...",
		Short: "End silences now",
		Long: `End each silence now: the alerts it held back are notified at the next
evaluation if they still fail. Every id is tried; the exit code is that of
the worst failure.

` + connectionHelp + `

` + exitCodesHelp,
		Example: `  dmonitor silence expire 6c1e1f0e-0c3a-4b7e-9a3e-0d6f3f1c2b4a`,
		Args:    cobra.MinimumNArgs(1),
		RunE: apiCommand(func(cmd *cobra.Command, args []string) error {
			c, err := f.connect(cmd, true)
			if err != nil {
				return err
			}
			worst := 0
			for _, id := range args {
				if _, err := c.call(cmd.Context(), http.MethodDelete, "/api/v1/silence/"+url.PathEscape(id), nil); err != nil {
					var ce *cliError
					if !errors.As(err, &ce) {
						return err
					}
					fmt.Fprintf(cmd.ErrOrStderr(), "dmonitor: %v\n", ce.err)
					worst = max(worst, ce.code)
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "silence %s expired\n", id)
			}
			if worst != 0 {
				return exitError{worst}
			}
			return nil
		}),
	}
	f.register(cmd)
	return cmd
}

func newAckCmd() *cobra.Command {
	var (
		f       apiFlags
		rule    string
		comment string
		author  string
	)
	cmd := &cobra.Command{
		Use:   "ack HOST CHECK",
		Short: "Acknowledge the firing alert of a host's check",
		Long: `Acknowledge the firing alert of CHECK on HOST: it reads acknowledged and is
not notified again until it resolves (its recovery is still sent). When
several rules apply to the check, --rule says which; otherwise the node's
/status says. Acknowledgements are the leader's: call the leader
(leader_name in dmonitor status); another node answers 503.

` + connectionHelp + `

` + exitCodesHelp + ` An alert that is not firing is refused (409).`,
		Example: `  dmonitor ack www1 http --comment "on it, disk full"
  dmonitor ack www1 http --rule www-http --author ann`,
		Args: cobra.ExactArgs(2),
		RunE: apiCommand(func(cmd *cobra.Command, args []string) error {
			host, chk := args[0], args[1]
			c, err := f.connect(cmd, true)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if rule == "" {
				var st nodeStatus
				if _, err := c.get(ctx, "/status", &st); err != nil {
					return err
				}
				var rules []string
				for _, in := range st.Instances {
					if in.Host == host && in.Check == chk {
						rules = append(rules, in.Rule)
					}
				}
				switch len(rules) {
				case 0:
					return refused("no rule instance on %s (%s) at %s: is the check configured for that host?", host, chk, c.base)
				case 1:
					rule = rules[0]
				default:
					return refused("%d rules apply to %s (%s): %s; say which with --rule", len(rules), host, chk, strings.Join(rules, ", "))
				}
			}
			body := struct {
				Rule    string `json:"rule"`
				Host    string `json:"host"`
				Check   string `json:"check"`
				By      string `json:"by"`
				Comment string `json:"comment"`
			}{rule, host, chk, author, comment}
			if _, err := c.call(ctx, http.MethodPost, "/api/v1/acks", body); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "acknowledged %s on %s (%s) as %s\n", rule, host, chk, author)
			return nil
		}),
	}
	f.register(cmd)
	cmd.Flags().StringVarP(&rule, "rule", "r", "", "the rule whose alert to acknowledge (default: the only rule of the check)")
	cmd.Flags().StringVarP(&comment, "comment", "c", "", "what is being done, for whoever sees the alert")
	cmd.Flags().StringVarP(&author, "author", "a", defaultAuthor(), "who is on it")
	return cmd
}

func newAcksCmd() *cobra.Command {
	var (
		f       apiFlags
		jsonOut bool
	)
	cmd := &cobra.Command{
		Use:   "acks",
		Short: "List who acknowledged which open incident",
		Long: `List the acknowledgements of the incidents still open: rule, host, check,
the alert's state, who, when and their comment. An acknowledgement ends
with its incident. With --json, prints the API's JSON list as it comes.

` + connectionHelp + `

` + exitCodesHelp,
		Example: `  dmonitor acks
  dmonitor acks --json`,
		Args: cobra.NoArgs,
		RunE: apiCommand(func(cmd *cobra.Command, _ []string) error {
			c, err := f.connect(cmd, false)
			if err != nil {
				return err
			}
			var acks []control.Ack
			raw, err := c.get(cmd.Context(), "/api/v1/acks", &acks)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if jsonOut {
				_, err := out.Write(raw)
				return err
			}
			if len(acks) == 0 {
				fmt.Fprintln(out, "no acknowledgements")
				return nil
			}
			now := time.Now()
			tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "RULE\tHOST\tCHECK\tSTATE\tBY\tAT\tCOMMENT")
			for _, a := range acks {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.Rule, a.Host, a.Check, a.State, a.By, when(now, a.At), oneLine(a.Comment))
			}
			return tw.Flush()
		}),
	}
	f.register(cmd)
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print the API's JSON list")
	return cmd
}
