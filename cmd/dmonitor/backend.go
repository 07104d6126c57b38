package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/config"
	"github.com/dmonitor/dmonitor/control"
	"github.com/dmonitor/dmonitor/evaluator"
	"github.com/dmonitor/dmonitor/internal/httpserve"
	"github.com/dmonitor/dmonitor/tsdb"
	"github.com/dmonitor/dmonitor/tsdb/embedded"
	"github.com/dmonitor/dmonitor/tsdb/httpapi"
	"github.com/dmonitor/dmonitor/tsdb/opentsdb"
	"github.com/dmonitor/dmonitor/tsdb/spool"
)

// backend is the TSDB as the daemon uses it, and what runs beside it.
type backend struct {
	store     evaluator.Store
	annotator evaluator.Annotator
	api       *httpapi.Handler            // the embedded store's OpenTSDB API; nil when not served
	run       func(context.Context) error // the spool's replay; nil without a spool
	close     func() error
	// health says whether the store takes this node's points (the self
	// check observer.SelfTSDB); nil when it has nothing to say.
	health func() (check.Status, string)
}

// The OpenTSDB client's partial failures tell the spool which points to keep.
var _ spool.Partial = (*opentsdb.PutError)(nil)

func openBackend(cfg *config.Config, token string, reg prometheus.Registerer, log *slog.Logger) (*backend, error) {
	switch cfg.TSDB.Backend {
	case config.BackendOpenTSDB:
		var tsdbToken string
		if cfg.TSDB.TokenFile != "" {
			var err error
			if tsdbToken, err = control.ReadToken(cfg.TSDB.TokenFile); err != nil {
				return nil, fmt.Errorf("tsdb.token_file: %w", err)
			}
		}
		client, err := opentsdb.New(opentsdb.Options{URL: cfg.TSDB.URL, BatchSize: cfg.TSDB.BatchSize, Token: tsdbToken,
			Logger: log.With("component", "opentsdb")})
		if err != nil {
			return nil, err
		}
		sp, err := spool.Open(filepath.Join(cfg.DataDir, "spool"), client, spool.Options{
			MaxBytes: cfg.TSDB.SpoolSize, Logger: log.With("component", "spool"),
		})
		if err != nil {
			return nil, err
		}
		st := &spooledStore{spool: sp, client: client}
		registerSpoolMetrics(reg, st)
		return &backend{store: st, annotator: st, run: sp.Run, close: sp.Close, health: spoolHealth(cfg.TSDB.URL, sp)}, nil
	default:
		dir := filepath.Join(cfg.DataDir, "tsdb")
		store, err := embedded.Open(dir, embedded.Options{
			Retention: cfg.TSDB.Retention, OutOfOrderWindow: cfg.TSDB.OutOfOrder, MaxSeries: cfg.Limits.Series,
			Logger: log.With("component", "tsdb"),
		})
		if err != nil {
			return nil, err
		}
		written := registerStoreMetrics(reg, store)
		be := &backend{store: countedStore{store, written}, annotator: store, close: store.Close, health: storeHealth(dir, store)}
		if cfg.TSDB.Listen != "" {
			be.api = httpapi.NewHandler(store, httpapi.Options{
				Token: token, AllowUnauthenticatedWrites: cfg.TSDB.Insecure,
				MaxNewSeriesPerRequest: cfg.Limits.NewSeriesPerRequest, MaxNewSeriesPerMinute: cfg.Limits.NewSeriesPerMinute,
				MaxNameBytes: cfg.Limits.NameLength,
				Logger:       log.With("component", "tsdb api"), Registerer: reg,
			})
		}
		return be, nil
	}
}

// listenAPI binds addr for the embedded store's OpenTSDB API: HTTP and
// OpenTSDB's line protocol on the one port, told apart by the first byte
// of each connection (httpapi.Listener), as OpenTSDB serves them.
func (be *backend) listenAPI(addr string, log *slog.Logger) (*httpserve.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("tsdb api: listen on %s: %w", addr, err)
	}
	return httpserve.NewServer("tsdb api", be.api.Listener(ln), be.api, log), nil
}

// spooledStore writes points and annotations through the spool, so they
// wait on disk while OpenTSDB is slow or down, and reads from OpenTSDB
// directly.
type spooledStore struct {
	spool    *spool.Spool
	client   *opentsdb.Client
	accepted atomic.Uint64 // points the spool took, passed through or spooled
}

func (s *spooledStore) Append(ctx context.Context, pts []tsdb.Point) error {
	err := s.spool.Append(ctx, pts)
	if err == nil {
		s.accepted.Add(uint64(len(pts)))
	}
	return err
}

func (s *spooledStore) PutAnnotation(ctx context.Context, a tsdb.Annotation) error {
	return s.spool.AppendAnnotation(ctx, a)
}

// written is how many points reached OpenTSDB: those passed straight
// through and those replayed from the spool.
func (s *spooledStore) written() float64 {
	st := s.spool.Stats()
	return float64(s.accepted.Load() - st.Spooled + st.Replayed)
}

func (s *spooledStore) Query(ctx context.Context, q tsdb.Query) ([]tsdb.Series, error) {
	return s.client.Query(ctx, q)
}

func (s *spooledStore) Last(ctx context.Context, metric string, filters []tsdb.Filter) ([]tsdb.Series, error) {
	return s.client.Last(ctx, metric, filters)
}

// storeHealth judges the embedded store: failing while it holds points
// in memory because its disk is full or its engine is not open, or when it
// dropped points since the last look.
func storeHealth(dir string, st *embedded.Store) func() (check.Status, string) {
	var last embedded.Stats
	return func() (check.Status, string) {
		s := st.Stats()
		prev := last
		last = s
		switch {
		case s.Dropped > prev.Dropped:
			return check.Critical, fmt.Sprintf("embedded tsdb %s: %d points dropped since the last look (disk full: %v), %d held in memory",
				dir, s.Dropped-prev.Dropped, s.DiskFull, s.Buffered)
		case s.DiskFull || !s.Open:
			why := "its disk is full"
			if s.DiskErr != nil {
				why = s.DiskErr.Error()
			}
			return check.Critical, fmt.Sprintf("embedded tsdb %s cannot write: %s; %d points held in memory until it can", dir, why, s.Buffered)
		}
		return check.OK, fmt.Sprintf("embedded tsdb %s takes points: %d series", dir, s.Series)
	}
}

// countedStore counts the points the embedded store takes.
type countedStore struct {
	*embedded.Store
	written prometheus.Counter
}

func (s countedStore) Append(ctx context.Context, pts []tsdb.Point) error {
	err := s.Store.Append(ctx, pts)
	if err == nil {
		s.written.Add(float64(len(pts)))
	}
	return err
}

// registerStoreMetrics exports the embedded store's own state, and returns
// the counter of the points it takes.
func registerStoreMetrics(reg prometheus.Registerer, st *embedded.Store) prometheus.Counter {
	gauge := func(name, help string, f func(embedded.Stats) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return f(st.Stats()) })
	}
	counter := func(name, help string, f func(embedded.Stats) float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return f(st.Stats()) })
	}
	bool01 := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	reg.MustRegister(
		gauge("dmonitor_tsdb_series", "Series in the embedded store.", func(s embedded.Stats) float64 { return float64(s.Series) }),
		gauge("dmonitor_tsdb_buffered_points", "Datapoints the embedded store holds in memory while its disk is full.", func(s embedded.Stats) float64 { return float64(s.Buffered) }),
		gauge("dmonitor_tsdb_disk_full", "1 while the embedded store's disk is below its free-space reserve or failing writes.", func(s embedded.Stats) float64 { return bool01(s.DiskFull || !s.Open) }),
		counter("dmonitor_tsdb_dropped_points_total", "Datapoints the embedded store dropped: its memory buffer overflowed while the disk was full.", func(s embedded.Stats) float64 { return float64(s.Dropped) }),
		counter("dmonitor_tsdb_series_refused_total", "Datapoints refused by the embedded store's series limit (limits.series).", func(s embedded.Stats) float64 { return float64(s.LimitRefused) }),
	)
	written := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "dmonitor_tsdb_points_written_total",
		Help: "Datapoints the TSDB took (the embedded store holds some in memory while its disk is full: dmonitor_tsdb_buffered_points).",
	})
	reg.MustRegister(written)
	return written
}

// spoolHealth judges the OpenTSDB backend by its spool: failing while
// points wait in it and none was delivered since the last look (OpenTSDB
// down or refusing), or when points were dropped since then.
func spoolHealth(url string, sp *spool.Spool) func() (check.Status, string) {
	var last spool.Stats
	return func() (check.Status, string) {
		s := sp.Stats()
		prev := last
		last = s
		switch {
		case s.Dropped > prev.Dropped || s.AnnotationsDropped > prev.AnnotationsDropped:
			return check.Critical, fmt.Sprintf("OpenTSDB at %s: %d points and %d annotations dropped from the full spool since the last look, %d waiting (%s)",
				url, s.Dropped-prev.Dropped, s.AnnotationsDropped-prev.AnnotationsDropped, s.Points+s.Buffered, mib(uint64(s.Bytes)))
		case s.DiskFailing:
			return check.Critical, fmt.Sprintf("the spool of OpenTSDB at %s cannot write to disk (%v): %d points held in memory", url, s.LastDiskError, s.Buffered)
		case s.Points+s.Buffered > 0 && s.Replayed == prev.Replayed && prev.Points+prev.Buffered > 0:
			return check.Critical, fmt.Sprintf("OpenTSDB at %s does not take points: %d waiting in the spool (%s), none delivered since the last look",
				url, s.Points+s.Buffered, mib(uint64(s.Bytes)))
		}
		return check.OK, fmt.Sprintf("OpenTSDB at %s takes points; %d waiting in the spool", url, s.Points)
	}
}

func registerSpoolMetrics(reg prometheus.Registerer, st *spooledStore) {
	sp := st.spool
	gauge := func(name, help string, f func(spool.Stats) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return f(sp.Stats()) })
	}
	counter := func(name, help string, f func(spool.Stats) float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return f(sp.Stats()) })
	}
	reg.MustRegister(
		gauge("dmonitor_spool_points", "Datapoints waiting in the spool for OpenTSDB.", func(s spool.Stats) float64 { return float64(s.Points) }),
		gauge("dmonitor_spool_bytes", "Bytes the spool holds on disk.", func(s spool.Stats) float64 { return float64(s.Bytes) }),
		counter("dmonitor_spool_replayed_total", "Spooled datapoints delivered to OpenTSDB.", func(s spool.Stats) float64 { return float64(s.Replayed) }),
		counter("dmonitor_spool_dropped_total", "Spooled datapoints dropped because the spool was full.", func(s spool.Stats) float64 { return float64(s.Dropped) }),
		counter("dmonitor_spool_rejected_total", "Spooled datapoints OpenTSDB refused on replay.", func(s spool.Stats) float64 { return float64(s.Rejected) }),
		gauge("dmonitor_spool_buffered_points", "Datapoints the spool holds in memory because its disk cannot be written.", func(s spool.Stats) float64 { return float64(s.Buffered) }),
		counter("dmonitor_spool_dropped_memory_total", "Datapoints dropped from the spool's memory buffer while its disk could not be written.", func(s spool.Stats) float64 { return float64(s.DroppedMemory) }),
		gauge("dmonitor_spool_disk_failing", "1 while the spool cannot write to its disk.", func(s spool.Stats) float64 {
			if s.DiskFailing {
				return 1
			}
			return 0
		}),
		counter("dmonitor_spool_disk_errors_total", "Spool writes that failed on disk.", func(s spool.Stats) float64 { return float64(s.DiskErrors) }),
		gauge("dmonitor_spool_annotations", "Alert annotations waiting in the spool for OpenTSDB.", func(s spool.Stats) float64 { return float64(s.Annotations + s.BufferedAnnotations) }),
		counter("dmonitor_spool_annotations_replayed_total", "Spooled annotations delivered to OpenTSDB.", func(s spool.Stats) float64 { return float64(s.AnnotationsReplayed) }),
		counter("dmonitor_spool_annotations_dropped_total", "Spooled annotations dropped (spool or memory full).", func(s spool.Stats) float64 { return float64(s.AnnotationsDropped) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "dmonitor_tsdb_points_written_total", Help: "Datapoints OpenTSDB took: passed straight through, or replayed from the spool.",
		}, st.written),
	)
}
