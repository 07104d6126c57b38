package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/dmonitor/dmonitor/alerting"
	"github.com/dmonitor/dmonitor/alerting/alertmanager"
	"github.com/dmonitor/dmonitor/alerting/exec"
	"github.com/dmonitor/dmonitor/alerting/smtp"
	"github.com/dmonitor/dmonitor/alerting/webhook"
	"github.com/dmonitor/dmonitor/config"
	"github.com/dmonitor/dmonitor/control"
	"github.com/dmonitor/dmonitor/evaluator"
	"github.com/dmonitor/dmonitor/evaluator/leader"
	"github.com/dmonitor/dmonitor/internal/httpserve"
	"github.com/dmonitor/dmonitor/internal/memlimit"
	"github.com/dmonitor/dmonitor/plugin"
	"github.com/dmonitor/dmonitor/rules"
	"github.com/dmonitor/dmonitor/statuspage"
)

type runFlags struct {
	dir                       string
	observer                  string
	logFormat                 string
	logLevel                  string
	controlListen, tsdbListen string
	user                      string
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
			args := daemonArgs{dir: f.dir, observer: f.observer}
			if cmd.Flags().Changed("control-listen") {
				args.controlListen = &f.controlListen
			}
			if cmd.Flags().Changed("tsdb-listen") {
				args.tsdbListen = &f.tsdbListen
			}
			if cmd.Flags().Changed("user") {
				args.user = &f.user
			}
			cfg, err := args.load()
			if err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "dmonitor: configuration refused, nothing started:\n%v\n", err)
				return exitError{1}
			}
			set, err := loadRules(cfg)
			if err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "dmonitor: rules refused, nothing started:\n%v\n", err)
				return exitError{1}
			}
			// Root goes before anything a plugin could reach is opened,
			// and for good: a reload restarts runDaemon as the account,
			// so the tree is loaded again as the account now, and one it
			// cannot read is refused at start rather than at a reload.
			acct, err := dropPrivileges(cfg, log)
			if err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "dmonitor: cannot run as the configured user, nothing started:\n%v\n", err)
				return exitError{1}
			}
			if acct != nil {
				if cfg, err = args.load(); err == nil {
					set, err = loadRules(cfg)
				}
				if err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "dmonitor: configuration refused as user %s (reloads read it as %s: "+
						"it must be readable by that user), nothing started:\n%v\n", acct.name, acct.name, err)
					return exitError{1}
				}
			}
			user := cfg.User
			logRuleWarnings(log, set)
			args.notify = notifier{log: log}
			// STOPPING=1 as soon as the stop begins: the running plugins'
			// grace period comes after it. A daemon that fails says so on
			// its way out too.
			stopped := context.AfterFunc(cmd.Context(), args.notify.stopping)
			defer func() {
				if stopped() {
					args.notify.stopping()
				}
			}()
			// SIGHUP is taken for the whole run, restarts included: its
			// default action would end the process.
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			for {
				args.hup = hup
				err := runDaemon(cmd.Context(), args, cfg, set, log)
				var next *reloadConfig
				if !errors.As(err, &next) {
					return err
				}
				// Everything restarts on the new configuration; the alert
				// state, the notification journals and the history are on
				// disk (or in Redis) and are taken up again.
				cfg, set = next.cfg, next.set
				if cfg.User != user {
					log.Warn("user: changed; it takes effect when dmonitor is restarted, not on a reload", "user", user, "configured_user", cfg.User)
				}
				log.Info("configuration reloaded: restarting on it", "checks", len(cfg.Targets), "mode", cfg.Mode())
			}
		},
	}
	cmd.Flags().StringVar(&f.dir, "config", "/etc/dmonitor", "configuration directory")
	cmd.Flags().StringVar(&f.observer, "observer", "", "this node's observer name, overriding dmonitor.yaml (so nodes can share one configuration)")
	cmd.Flags().StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	cmd.Flags().StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	cmd.Flags().StringVar(&f.controlListen, "control-listen", "", "the control port's address, overriding control.listen (\"\" turns it off)")
	cmd.Flags().StringVar(&f.tsdbListen, "tsdb-listen", "", "the embedded store's OpenTSDB API address, overriding tsdb.listen (\"\" turns it off)")
	cmd.Flags().StringVar(&f.user, "user", "", "the account to run as when started as root, overriding user: (\"root\" keeps root)")
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
// done. Everything that can be refused (the store, a receiver, an address)
// is set up before the first check runs.
//
// On SIGHUP it loads the whole configuration again (dir, as observer):
// refused, the old one keeps running and the error is logged and counted;
// when only rules.d changed, the rules are replaced in place; otherwise it
// stops everything and returns a *reloadConfig carrying the new one.
func runDaemon(ctx context.Context, args daemonArgs, cfg *config.Config, set *rules.Set, log *slog.Logger) error {
	// Applied at every start, so a reload that drops limits.memory lifts
	// it. /metrics shows it as go_gc_gomemlimit_bytes.
	limit, err := memlimit.Apply(cfg.Limits.Memory)
	if err != nil {
		log.Warn("memory limit: the cgroup's cannot be read, so none is taken from it", "err", err)
	}
	log.Info("memory limit", "limit", limit.String(), "source", limit.Source)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(
		// The heap the last collection found live, what limits.memory is
		// sized from, beside the limit itself (go_gc_gomemlimit_bytes).
		collectors.WithGoCollectorRuntimeMetrics(collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/gc/heap/live:bytes$`)}),
	), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var token string
	if cfg.Control.TokenFile != "" {
		var err error
		if token, err = control.ReadToken(cfg.Control.TokenFile); err != nil {
			return err
		}
	}
	be, err := openBackend(cfg, token, reg, log)
	if err != nil {
		return err
	}
	defer func() {
		if err := be.close(); err != nil {
			log.Error("close tsdb", "err", err)
		}
	}()

	rs, err := buildReceivers(cfg, log)
	if err != nil {
		return err
	}
	co, err := openCoordination(cfg, token, rs, reg, log)
	if err != nil {
		return err
	}
	defer func() {
		if err := co.close(); err != nil {
			log.Error("close coordination", "err", err)
		}
	}()
	silences := co.silences
	hash, err := configHash(cfg)
	if err != nil {
		return err
	}
	var h health
	h.setHash(hash.shared)
	opts := evaluator.Options{
		Config:         cfg,
		Rules:          set,
		RepeatInterval: cfg.RepeatInterval,
		Silences:       silences,
		Runner:         plugin.NewRunner(cfg.Workers, plugin.Options{}),
		Store:          be.store,
		Annotator:      be.annotator,
		Receivers:      slices.Sorted(maps.Keys(rs.routes)),
		Logger:         log,
		Registerer:     reg,
		Lease:          co.lease,
		Share:          co.share,
		State:          co.state,
		TermSender:     co.termSender,
		Mode:           string(co.mode),
		SelfChecks:     h.checks(cfg, be.health),
		Fallback:       co.fallback,
		NoLeaderAfter:  2 * cfg.Redis.LeaseTTL,
	}
	if co.failover != nil {
		opts.Degraded = co.failover.Degraded
	}
	ev := evaluator.New(opts)

	var servers []*httpserve.Server
	var controlURL, tsdbURL string // where to look, said once at start-up
	if cfg.Control.Listen != "" {
		mux := http.NewServeMux()
		mux.Handle("/api/", control.APIHandler(control.APIOptions{Silences: silences, Acks: ev, Token: token,
			Peers: co.peerAPI, Logger: log.With("component", "control api")}))
		pages := statuspage.New(statuspage.Options{Status: ev.Status, History: be.store, Silences: silences, Acks: ev,
			Token: token, Logger: log.With("component", "status page")})
		mux.Handle("/", control.Handler(control.Options{Gatherer: reg, Status: func() any { return ev.Status() },
			Ready: h.Ready, Token: token, Pages: pages, Logger: log}))
		var srv *httpserve.Server
		if cfg.Control.TLSCertFile != "" {
			srv, err = httpserve.ListenTLS("control", cfg.Control.Listen, cfg.Control.TLSCertFile, cfg.Control.TLSKeyFile, mux, log)
		} else {
			srv, err = httpserve.Listen("control", cfg.Control.Listen, mux, log)
		}
		if err != nil {
			return err
		}
		controlURL = "http://" + srv.Addr().String()
		if cfg.Control.TLSCertFile != "" {
			controlURL = "https://" + srv.Addr().String()
		}
		if cfg.Control.Insecure && token == "" {
			log.Warn("INSECURE: control.insecure is set and there is no control.token_file: anyone who reaches "+
				srv.Addr().String()+" can silence and acknowledge alerts", "addr", srv.Addr().String())
		}
		servers = append(servers, srv)
	}
	if be.api != nil {
		srv, err := be.listenAPI(cfg.TSDB.Listen, log)
		if err != nil {
			return err
		}
		tsdbURL = "http://" + srv.Addr().String()
		if cfg.TSDB.Insecure && token == "" {
			log.Warn("INSECURE: tsdb.insecure is set and there is no control.token_file: anyone who reaches "+
				srv.Addr().String()+" can write to the store", "addr", srv.Addr().String())
		}
		servers = append(servers, srv)
	}

	started := []any{"observer", cfg.Observer, "mode", co.mode, "checks", len(cfg.Targets), "store", cfg.TSDB.Backend}
	if controlURL != "" {
		started = append(started, "status_page", controlURL+"/", "api", controlURL+"/api/v1/", "metrics", controlURL+"/metrics")
	}
	if tsdbURL != "" {
		started = append(started, "opentsdb_api", tsdbURL+" (HTTP and the line protocol)")
	}
	log.Info("dmonitor running", started...)

	// The dispatcher outlives the evaluator, so the transitions of its last
	// evaluations are still handed over; everything else stops together,
	// when ctx ends or as soon as one of them fails.
	dispCtx, stopDispatch := context.WithCancel(context.WithoutCancel(ctx))
	dispDone := make(chan error, 1)
	if co.dispatcher != nil {
		go func() { dispDone <- co.dispatcher.Run(dispCtx) }()
	} else {
		dispDone <- nil
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, srv := range servers {
		g.Go(func() error { return srv.Serve(gctx) })
	}
	if be.run != nil {
		g.Go(func() error { return be.run(gctx) })
	}
	for _, run := range co.run {
		g.Go(func() error {
			if err := run(gctx); err != nil && !errors.Is(err, context.Canceled) {
				return err
			}
			return nil
		})
	}
	g.Go(func() error { return ev.Run(gctx) })
	g.Go(func() error { silences.Run(gctx); return nil })
	g.Go(func() error { return reloadOnHUP(gctx, args, cfg, hash, ev, &h, reg, log) })
	// The listeners are bound and everything is started: serving.
	args.notify.ready(runningStatus(cfg))
	err = g.Wait()
	stopDispatch()
	return errors.Join(err, <-dispDone)
}

// silenceStore is what the daemon does with the silences: the evaluator
// matches them, the control API changes them, and Run keeps them.
type silenceStore interface {
	control.Silencer
	evaluator.Silences
	Run(ctx context.Context)
}

// receivers are the notification destinations of the configuration: one
// delivery queue per destination, so a webhook that is down never makes a
// mail of the same receiver go out twice.
type receivers struct {
	queues map[string]alerting.Notifier // "ops/email" → its notifier
	routes map[string][]string          // "ops" → its queues
	// groups are the receivers' group_wait and group_by, by queue: each
	// destination of a receiver groups alike.
	groups map[string]alerting.Grouping
}

// options returns opts with the receivers' grouping: what every
// Dispatcher of rs is built with.
func (rs receivers) options(opts alerting.DispatcherOptions) alerting.DispatcherOptions {
	opts.Groups = rs.groups
	return opts
}

// buildReceivers builds a notifier for every destination of every receiver,
// or reports every one that is wrong.
func buildReceivers(cfg *config.Config, log *slog.Logger) (receivers, error) {
	rs := receivers{queues: make(map[string]alerting.Notifier), routes: make(map[string][]string),
		groups: make(map[string]alerting.Grouping)}
	externalURL := ""
	if cfg.Control.Listen != "" {
		externalURL = "http://" + cfg.Control.Listen
		if cfg.Control.TLSCertFile != "" {
			externalURL = "https://" + cfg.Control.Listen
		}
	}
	var errs []error
	add := func(name, kind string, n alerting.Notifier, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("receiver %q %s: %w", name, kind, err))
			return
		}
		q := name + "/" + kind
		rs.queues[q] = n
		rs.routes[name] = append(rs.routes[name], q)
		r := cfg.Receivers[name]
		rs.groups[q] = alerting.Grouping{Wait: r.GroupWait, By: r.GroupBy}
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Receivers)) {
		r := cfg.Receivers[name]
		if len(r.Email) > 0 {
			n, err := smtp.New(smtp.Config{
				Addr: cfg.SMTP.Addr, From: cfg.SMTP.From, To: r.Email,
				Username: cfg.SMTP.Username, Password: cfg.SMTP.Password, TLS: cfg.SMTP.TLS,
			})
			add(name, "email", n, err)
		}
		if r.Webhook != nil {
			n, err := webhook.New(webhook.Config{URL: r.Webhook.URL, Receiver: name, ExternalURL: externalURL})
			add(name, "webhook", n, err)
		}
		if r.Alertmanager != nil {
			n, err := alertmanager.New(alertmanager.Config{URL: r.Alertmanager.URL, GeneratorURL: externalURL + "/status"})
			add(name, "alertmanager", n, err)
		}
		if r.Exec != nil {
			n, err := exec.New(exec.Config{Command: r.Exec.Command, Receiver: name, ExternalURL: externalURL})
			add(name, "exec", n, err)
		}
		if qs := rs.routes[name]; len(qs) > 0 {
			log.Info("receiver ready", "receiver", name, "destinations", strings.Join(qs, ","),
				"group_wait", r.GroupWait, "group_by", strings.Join(r.GroupBy, ","))
		}
	}
	return rs, errors.Join(errs...)
}

// router hands a receiver's notification to each of its queues.
type router struct {
	d      *alerting.Dispatcher
	routes map[string][]string
}

func (r router) Send(receiver string, n alerting.Notification) error {
	qs, ok := r.routes[receiver]
	if !ok {
		return fmt.Errorf("send notification %s: %w %q", n.ID, alerting.ErrUnknownReceiver, receiver)
	}
	var errs []error
	for _, q := range qs {
		errs = append(errs, r.d.Send(q, n))
	}
	return errors.Join(errs...)
}

// Failing names the receiver queues that keep failing; see
// leader.ReceiverHealth.
func (r router) Failing(attempts int) map[string]string { return r.d.Failing(attempts) }

// loadRules loads <config dir>/rules.d; notify may name the configured
// receivers and "default", and the Set warns about selects that match none
// of cfg's targets (Set.Warnings).
func loadRules(cfg *config.Config) (*rules.Set, error) {
	names := append(slices.Collect(maps.Keys(cfg.Receivers)), config.DefaultReceiver)
	return rules.Load(filepath.Join(cfg.Dir, "rules.d"), rules.Options{Receivers: names, Config: cfg, Reserved: leader.BuiltinRules()})
}
