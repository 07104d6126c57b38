package peershare_test

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/dmonitor/dmonitor/alerting/localstate"
	"github.com/dmonitor/dmonitor/control"
	"github.com/dmonitor/dmonitor/internal/await"
	"github.com/dmonitor/dmonitor/internal/httpserve"
	"github.com/dmonitor/dmonitor/internal/httpserve/tlstest"
	"github.com/dmonitor/dmonitor/share/peershare"
)

// tlsNode is a node whose control port serves TLS, as dmonitor serves it
// (httpserve.ListenTLS, control.APIHandler), with a certificate its own CA
// issued.
type tlsNode struct {
	x    *peershare.Exchange
	url  string // https://127.0.0.1:port
	logs *logBuffer
	got  *inbox
}

// newTLSCluster starts nodes a and b on loopback, each serving TLS with a
// certificate of ca and calling the other over https with clientTLS.
func newTLSCluster(t *testing.T, ca *tlstest.CA, clientTLS *tls.Config) map[string]*tlsNode {
	t.Helper()
	dir := t.TempDir()
	names := []string{"a", "b"}
	// The servers listen before the Exchanges are made, since each takes
	// its peer's URL; the API is mounted on their muxes before they serve.
	muxes := make(map[string]*http.ServeMux)
	servers := make(map[string]*httpserve.Server)
	for _, name := range names {
		cert, key := filepath.Join(dir, name+"-cert.pem"), filepath.Join(dir, name+"-key.pem")
		ca.Issue(t, cert, key)
		muxes[name] = http.NewServeMux()
		srv, err := httpserve.ListenTLS("control", "127.0.0.1:0", cert, key, muxes[name], slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		servers[name] = srv
	}
	nodes := make(map[string]*tlsNode)
	for _, name := range names {
		n := &tlsNode{url: "https://" + servers[name].Addr().String(), logs: &logBuffer{}, got: &inbox{}}
		var peers []peershare.Peer
		for _, p := range names {
			if p != name {
				peers = append(peers, peershare.Peer{Name: p, URL: "https://" + servers[p].Addr().String()})
			}
		}
		log := slog.New(slog.NewJSONHandler(n.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		n.x = peershare.New(peershare.Options{
			Self: name, Peers: peers, Token: token, TLS: clientTLS, OnState: n.got.addState,
			State: holding(record("down\x00"+name+"\x00http", t0, 1)), Logger: log,
		})
		muxes[name].Handle("/api/", control.APIHandler(control.APIOptions{
			Silences: noSilences{}, Token: token, Peers: n.x.Handler(), Logger: log,
		}))
		nodes[name] = n
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2*len(names))
	for _, name := range names {
		go func() { done <- servers[name].Serve(ctx) }()
		go func() { done <- nodes[name].x.Run(ctx) }()
	}
	t.Cleanup(func() {
		cancel()
		for range 2 * len(names) {
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("stopping the cluster: %v", err)
			}
		}
	})
	return nodes
}

// TestTLSPeers: peers whose control ports serve TLS push to each other and
// fetch each other's state over https, verified with the cluster's CA.
func TestTLSPeers(t *testing.T) {
	ca := tlstest.NewCA(t, "cluster CA")
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	ca.WriteCert(t, caFile)
	clientTLS, err := httpserve.ClientTLS(caFile)
	if err != nil {
		t.Fatal(err)
	}
	nodes := newTLSCluster(t, ca, clientTLS)
	a, b := nodes["a"], nodes["b"]

	// A push: a's alert state reaches b.
	rec := record("down\x00web1\x00http", t0, 7)
	a.x.PushState(rec)
	await.Until(t, "b takes a's state over TLS", func() bool { return len(b.got.States()) > 0 })
	if got, want := recordsJSON(t, b.got.States()[0]), recordsJSON(t, []localstate.Record{rec}); got != want {
		t.Errorf("b took %s, want %s", got, want)
	}

	// A fetch: b reads a's copy of the state.
	f := b.x.FetchState(context.Background())
	if f.Answered != 1 || len(f.Records) != 1 || f.Records[0].Key != "down\x00a\x00http" {
		t.Errorf("b fetched %+v, want a's one record; log:\n%s", f, b.logs)
	}
}

// TestTLSPeersVerify: a peer whose certificate the configured CA did not
// issue is not called, whether pushing or fetching.
func TestTLSPeersVerify(t *testing.T) {
	ca := tlstest.NewCA(t, "cluster CA")
	other := tlstest.NewCA(t, "some other CA")
	nodes := newTLSCluster(t, ca, &tls.Config{RootCAs: other.Pool()})
	a, b := nodes["a"], nodes["b"]

	if f := b.x.FetchState(context.Background()); f.Answered != 0 {
		t.Errorf("b fetched from a peer it cannot verify: %+v", f)
	}
	if n := b.logs.count(t, slog.LevelInfo, "no alert state from peer", "peer", "a"); n != 1 ||
		!strings.Contains(b.logs.String(), "certificate signed by unknown authority") {
		t.Errorf("fetch failure logged %d times, want once, saying why; log:\n%s", n, b.logs)
	}
	a.x.PushState(record("down\x00web1\x00http", t0, 7))
	await.Until(t, "a reports that b cannot be reached", func() bool {
		return a.logs.count(t, slog.LevelWarn, "cannot reach peer", "peer", "b") == 1
	})
	if len(b.got.States()) != 0 {
		t.Errorf("b took state from a over an unverified connection")
	}
}

// TestTLSRefusesPlainPeer: with TLS configured, a peer given a plain http
// URL is never called, so the token never crosses in clear; the refusal is
// logged.
func TestTLSRefusesPlainPeer(t *testing.T) {
	var calls atomic.Int64
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(plain.Close)
	logs := &logBuffer{}
	x := peershare.New(peershare.Options{
		Self: "a", Peers: []peershare.Peer{{Name: "b", URL: plain.URL}}, Token: token,
		TLS: &tls.Config{}, Logger: slog.New(slog.NewJSONHandler(logs, nil)),
	})
	if n := logs.count(t, slog.LevelError, "peer refused", "peer", "b"); n != 1 || !strings.Contains(logs.String(), plain.URL+": not https") {
		t.Errorf("refusal logged %d times, want once naming the URL; log:\n%s", n, logs)
	}
	if f := x.FetchState(context.Background()); f.Answered != 0 || calls.Load() != 0 {
		t.Fatalf("fetched from a plain http peer: %+v, %d calls", f, calls.Load())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- x.Run(ctx) }()
	x.PushState(record("down\x00web1\x00http", t0, 7))
	await.Until(t, "the push to b is refused", func() bool {
		return logs.count(t, slog.LevelWarn, "cannot reach peer", "peer", "b") == 1
	})
	cancel()
	<-done
	if n := calls.Load(); n != 0 {
		t.Errorf("the plain http peer was called %d times, want never", n)
	}
}
