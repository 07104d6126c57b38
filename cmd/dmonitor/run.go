package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/dmonitor/dmonitor/alerting"
	"github.com/dmonitor/dmonitor/alerting/smtp"
	"github.com/dmonitor/dmonitor/config"
	"github.com/dmonitor/dmonitor/control"
	"github.com/dmonitor/dmonitor/evaluator"
	"github.com/dmonitor/dmonitor/plugin"
	"github.com/dmonitor/dmonitor/tsdb/embedded"
)

type runFlags struct {
	dir       string
	observer  string
	logFormat string
	logLevel  string
}

func newRunCmd() *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the evaluator daemon",
		Long: `Run the evaluator daemon: schedule every check of the configuration, write
each result to the TSDB, evaluate alerts while this node leads, and notify.
Stops cleanly on SIGINT or SIGTERM: running plugins get a grace period and are
then killed, and every result is written before the process exits.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(cmd.ErrOrStderr(), f.logFormat, f.logLevel)
			if err != nil {
				return err
			}
			cfg, err := config.Load(f.dir)
			if err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "dmonitor: configuration refused, nothing started:\n%v\n", err)
				return exitError{1}
			}
			if f.observer != "" {
				cfg.Observer = f.observer
			}
			return runDaemon(cmd.Context(), cfg, log)
		},
	}
	cmd.Flags().StringVar(&f.dir, "config", "/etc/dmonitor", "configuration directory")
	cmd.Flags().StringVar(&f.observer, "observer", "", "this node's observer name, overriding dmonitor.yaml (so nodes can share one configuration)")
	cmd.Flags().StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	cmd.Flags().StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	return cmd
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// runDaemon builds the services cfg describes and runs them until ctx is
// done. Everything that can be refused (the store, a receiver, the control
// address) is set up before the first check runs.
func runDaemon(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	// Whatever ends first, a signal or the evaluator failing, ends the rest.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if cfg.TSDB.Backend != "embedded" {
		return fmt.Errorf("tsdb backend %q is not available yet; use \"embedded\"", cfg.TSDB.Backend)
	}
	storeDir := filepath.Join(cfg.DataDir, "tsdb")
	store, err := embedded.Open(storeDir, embedded.Options{
		Retention: cfg.TSDB.Retention, OutOfOrderWindow: cfg.TSDB.OutOfOrder, Logger: log.With("component", "tsdb"),
	})
	if err != nil {
		return err
	}
	defer func() {
		if err := store.Close(); err != nil {
			log.Error("close tsdb", "dir", storeDir, "err", err)
		}
	}()

	notifiers, err := buildReceivers(cfg, log)
	if err != nil {
		return err
	}
	dispatcher := alerting.NewDispatcher(notifiers, log.With("component", "notify"), alerting.DispatcherOptions{})

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ev := evaluator.New(evaluator.Options{
		Config:     cfg,
		Runner:     plugin.NewRunner(cfg.Workers, plugin.Options{}),
		Store:      store,
		Sender:     dispatcher,
		Receivers:  slices.Sorted(maps.Keys(notifiers)),
		Logger:     log,
		Registerer: reg,
	})

	var ctl *control.Server
	if cfg.Control.Listen != "" {
		if ctl, err = control.Listen(cfg.Control.Listen, reg, func() any { return ev.Status() }, log.With("component", "control")); err != nil {
			return err
		}
		log.Info("control API listening", "addr", ctl.Addr().String())
	}

	// The dispatcher outlives the evaluator, so the transitions of its last
	// evaluations are still handed over; then it stops too.
	dispCtx, stopDispatch := context.WithCancel(context.WithoutCancel(ctx))
	dispDone := make(chan error, 1)
	go func() { dispDone <- dispatcher.Run(dispCtx) }()
	ctlDone := make(chan error, 1)
	if ctl != nil {
		go func() { ctlDone <- ctl.Serve(ctx) }()
	} else {
		ctlDone <- nil
	}

	err = ev.Run(ctx)
	cancel()
	stopDispatch()
	err = errors.Join(err, <-dispDone, <-ctlDone)
	return err
}

// buildReceivers returns a notifier for every receiver with a destination.
func buildReceivers(cfg *config.Config, log *slog.Logger) (map[string]alerting.Notifier, error) {
	out := make(map[string]alerting.Notifier)
	var errs []error
	for name, r := range cfg.Receivers {
		if r.Webhook != nil || r.Alertmanager != nil || r.Exec != nil {
			log.Warn("receiver has webhook, alertmanager or exec destinations, which this version does not send to; only its email is used",
				"receiver", name)
		}
		if len(r.Email) == 0 {
			continue
		}
		n, err := smtp.New(smtp.Config{
			Addr: cfg.SMTP.Addr, From: cfg.SMTP.From, To: r.Email,
			Username: cfg.SMTP.Username, Password: cfg.SMTP.Password, TLS: cfg.SMTP.TLS,
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("receiver %q: %w", name, err))
			continue
		}
		out[name] = n
		log.Info("receiver ready", "receiver", name, "email", strings.Join(r.Email, ","), "smtp", cfg.SMTP.Addr)
	}
	return out, errors.Join(errs...)
}
