package main

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// nodeStatus is GET /status as the CLI reads it. It is the API's JSON, not
// the daemon's Go type: states are kept as strings, so a newer node with a
// state or field this binary does not know is still shown.
type nodeStatus struct {
	Observer    string `json:"observer"`
	Mode        string `json:"mode"`
	Degraded    bool   `json:"degraded"`
	Leader      bool   `json:"leader"`
	Epoch       int64  `json:"epoch"`
	LeaderName  string `json:"leader_name"`
	LeaderEpoch int64  `json:"leader_epoch"`
	Observers   []struct {
		Name     string    `json:"name"`
		LastSeen time.Time `json:"last_heartbeat"`
		Leader   bool      `json:"leader"`
		// Silent is nil from a node that does not say.
		Silent *bool `json:"silent"`
	} `json:"observers"`
	Checks    int              `json:"checks"`
	Instances []instanceReport `json:"instances"`
}

// instanceReport is one rule instance of nodeStatus.
type instanceReport struct {
	Rule       string    `json:"rule"`
	Host       string    `json:"host"`
	Check      string    `json:"check"`
	State      string    `json:"state"`
	Since      time.Time `json:"since"`
	Reason     string    `json:"reason"`
	AckedBy    string    `json:"acked_by"`
	AckComment string    `json:"ack_comment"`
	Observers  []struct {
		Observer string    `json:"observer"`
		Status   string    `json:"status"`
		Output   string    `json:"output"`
		At       time.Time `json:"at"`
		// Fresh is nil from a node that does not say.
		Fresh *bool `json:"fresh"`
	} `json:"observers"`
}

// statePriority orders alert states from the most to the least pressing,
// for the grid's one state per host×check and the order of the alerts.
var statePriority = []string{"firing", "flapping", "unknown", "acknowledged", "pending", "silenced", "suppressed", "ok"}

func priority(state string) int {
	if i := slices.Index(statePriority, state); i >= 0 {
		return i
	}
	return 0 // a state this binary does not know is shown first
}

// needsAttention reports whether an alert in state calls for someone:
// firing or flapping and nobody on it, or unknown (dmonitor cannot tell).
func needsAttention(state string) bool {
	return state == "firing" || state == "flapping" || state == "unknown"
}

func newStatusCmd() *cobra.Command {
	var (
		f       apiFlags
		jsonOut bool
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show a running node's checks, each observer's latest result, and the alerts",
		Long: `Show what a running node sees: a grid of hosts × checks with the alert state
and each observer's latest status (marked stale when it no longer counts
towards the quorum), then every alert that is not ok with its state, since
when and why (held back by which parent, unknown for lack of fresh
observers, silenced, acknowledged by whom). With --json, prints the node's
/status JSON as it comes.

` + connectionHelp + `

` + exitCodesHelp + ` 3: the node answered and at least one alert is firing
(and not acknowledged) or unknown, as a Nagios check would say CRITICAL.`,
		Example: `  dmonitor status
  dmonitor status --url https://mon1.example.org:2929 --config /etc/dmonitor
  dmonitor status --json | jq '.instances[] | select(.state != "ok")'`,
		Args: cobra.NoArgs,
		RunE: apiCommand(func(cmd *cobra.Command, _ []string) error {
			c, err := f.connect(cmd, false)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var st nodeStatus
			raw, err := c.get(ctx, "/status", &st)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if jsonOut {
				if _, err := out.Write(raw); err != nil {
					return err
				}
			} else if err := printStatus(out, &st, time.Now()); err != nil {
				return err
			}
			for _, in := range st.Instances {
				if needsAttention(in.State) {
					return exitError{exitAlerts}
				}
			}
			return nil
		}),
	}
	f.register(cmd)
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print the node's /status JSON")
	return cmd
}

// printStatus writes st for a terminal: who leads, the observers, the grid
// and the alerts.
func printStatus(w io.Writer, st *nodeStatus, now time.Time) error {
	head := "node " + st.Observer
	switch {
	case st.Leader:
		head += fmt.Sprintf(" · leader, epoch %d", st.Epoch)
	case st.LeaderName != "":
		head += fmt.Sprintf(" · leader %s (epoch %d)", st.LeaderName, st.LeaderEpoch)
	default:
		head += " · no leader"
	}
	if st.Mode != "" {
		head += " · mode " + st.Mode
	}
	if st.Degraded {
		head += " · DEGRADED (Redis unreachable: the peers decide)"
	}
	fmt.Fprintln(w, head)
	if len(st.Observers) > 0 {
		obs := make([]string, len(st.Observers))
		for i, o := range st.Observers {
			s := o.Name
			if o.Leader {
				s += " (leader)"
			}
			if o.Silent != nil && *o.Silent {
				s += " SILENT, heard " + ago(now, o.LastSeen)
			} else {
				s += " heard " + ago(now, o.LastSeen)
			}
			obs[i] = s
		}
		fmt.Fprintln(w, "observers: "+strings.Join(obs, ", "))
	}
	fmt.Fprintln(w)
	if len(st.Instances) == 0 {
		fmt.Fprintln(w, "no checks")
		return nil
	}
	if err := printGrid(w, st, now); err != nil {
		return err
	}
	fmt.Fprintln(w)
	return printAlerts(w, st.Instances, now)
}

// printGrid writes one row per host×check: the most pressing state of its
// rule instances, then each observer's latest status.
func printGrid(w io.Writer, st *nodeStatus, now time.Time) error {
	type row struct {
		host, check, state string
		results            map[string]string // observer → cell
	}
	var observers []string
	for _, o := range st.Observers {
		observers = append(observers, o.Name)
	}
	rows := make(map[[2]string]*row)
	for _, in := range st.Instances {
		k := [2]string{in.Host, in.Check}
		r, ok := rows[k]
		if !ok {
			r = &row{host: in.Host, check: in.Check, state: in.State, results: make(map[string]string)}
			rows[k] = r
		} else if priority(in.State) < priority(r.state) {
			r.state = in.State
		}
		for _, res := range in.Observers {
			cell := res.Status
			if res.Fresh != nil && !*res.Fresh {
				cell += " (stale, " + ago(now, res.At) + ")"
			}
			r.results[res.Observer] = cell
			observers = append(observers, res.Observer)
		}
	}
	slices.Sort(observers)
	observers = slices.Compact(observers)
	sorted := make([]*row, 0, len(rows))
	for _, r := range rows {
		sorted = append(sorted, r)
	}
	slices.SortFunc(sorted, func(a, b *row) int { return cmp.Or(cmp.Compare(a.host, b.host), cmp.Compare(a.check, b.check)) })

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "HOST\tCHECK\tALERT")
	for _, o := range observers {
		fmt.Fprint(tw, "\t"+o)
	}
	fmt.Fprintln(tw)
	for _, r := range sorted {
		fmt.Fprintf(tw, "%s\t%s\t%s", r.host, r.check, r.state)
		for _, o := range observers {
			cell, ok := r.results[o]
			if !ok {
				cell = "-"
			}
			fmt.Fprint(tw, "\t"+cell)
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

// printAlerts writes every rule instance that is not ok, the most pressing
// first.
func printAlerts(w io.Writer, instances []instanceReport, now time.Time) error {
	var alerts []instanceReport
	for _, in := range instances {
		if in.State != "ok" {
			alerts = append(alerts, in)
		}
	}
	if len(alerts) == 0 {
		fmt.Fprintf(w, "no alerts: %s ok\n", plural(len(instances), "rule instance"))
		return nil
	}
	slices.SortStableFunc(alerts, func(a, b instanceReport) int {
		return cmp.Or(cmp.Compare(priority(a.State), priority(b.State)), cmp.Compare(a.Host, b.Host), cmp.Compare(a.Check, b.Check), cmp.Compare(a.Rule, b.Rule))
	})
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STATE\tRULE\tHOST\tCHECK\tSINCE\tREASON")
	for _, a := range alerts {
		since := "-"
		if !a.Since.IsZero() {
			since = ago(now, a.Since)
		}
		reason := a.Reason
		if a.AckedBy != "" {
			ack := "acknowledged by " + a.AckedBy
			if a.AckComment != "" {
				ack += ": " + a.AckComment
			}
			reason = strings.TrimPrefix(reason+"; "+ack, "; ")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", a.State, a.Rule, a.Host, a.Check, since, oneLine(reason))
	}
	return tw.Flush()
}

// oneLine keeps a table cell on its line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
