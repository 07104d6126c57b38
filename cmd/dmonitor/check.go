package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/config"
	"github.com/dmonitor/dmonitor/plugin"
)

func newCheckCmd() *cobra.Command {
	var (
		dir     string
		jsonOut bool
	)
	cmd := &cobra.Command{
		Use:   "check HOST CHECK",
		Short: "Run one check once and print its parsed result",
		Long: `Run the check CHECK against HOST once, exactly as the daemon would, and print
the parsed result. The exit code is the status: 0 OK, 1 WARNING, 2 CRITICAL,
3 UNKNOWN (also when the check cannot be run).`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			host, name := args[0], args[1]
			cfg, err := config.Load(dir)
			if err != nil {
				fmt.Fprintln(cmd.ErrOrStderr(), err)
				return exitError{int(check.Unknown)}
			}
			c, ok := cfg.Checks[name]
			if !ok {
				fmt.Fprintf(cmd.ErrOrStderr(), "dmonitor: no check %q in %s (known: %s)\n", name, cfg.Dir, strings.Join(slices.Sorted(maps.Keys(cfg.Checks)), ", "))
				return exitError{int(check.Unknown)}
			}
			var r check.Result
			if c.Probe != nil {
				p, err := c.NewProbe(host)
				if err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "dmonitor: %v\n", err)
					return exitError{int(check.Unknown)}
				}
				r = p.Run(cmd.Context())
			} else {
				r = plugin.NewRunner(1, plugin.Options{}).Run(cmd.Context(), plugin.Command{Argv: c.Argv(host), Timeout: c.Timeout})
			}
			r.Host, r.Check, r.Observer, r.Domain = host, name, cfg.Observer, cfg.Domain
			out := cmd.OutOrStdout()
			if jsonOut {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(r); err != nil {
					return err
				}
			} else {
				printResult(cmd, r)
			}
			return exitError{int(r.Status)}
		},
	}
	cmd.Flags().StringVar(&dir, "config", "/etc/dmonitor", "configuration directory")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print the result as a JSON object")
	return cmd
}

func printResult(cmd *cobra.Command, r check.Result) {
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "%s %s on %s: %s", r.Status, r.Check, r.Host, r.Raw)
	if r.ExitCode >= 0 {
		fmt.Fprintf(w, " (exit %d)", r.ExitCode)
	}
	fmt.Fprintf(w, " in %.3fs\n", r.Duration.Seconds())
	if r.Output != "" {
		fmt.Fprintf(w, "%s\n", r.Output)
	}
	for _, p := range r.Perf {
		// As the plugin wrote it: 82138904KB, not 8.21389e+07KB.
		fmt.Fprintf(w, "  %s = %s%s", p.Label, p.ValueText(), p.UOM)
		if p.Warn != "" || p.Crit != "" {
			fmt.Fprintf(w, " (warn %s, crit %s)", p.Warn, p.Crit)
		}
		fmt.Fprintln(w)
	}
}
