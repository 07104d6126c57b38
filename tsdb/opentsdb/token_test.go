package opentsdb

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/dmonitor/dmonitor/tsdb"
	"github.com/dmonitor/dmonitor/tsdb/embedded"
	"github.com/dmonitor/dmonitor/tsdb/httpapi"
)

// Writing to another dmonitor node's OpenTSDB API from another host takes
// its token: with Options.Token the points are stored; without it they are
// refused as unavailable, so a spool keeps them until the token is set
// (and the node's tsdb-unhealthy alert says so) rather than dropping them.
func TestTokenToAnotherNode(t *testing.T) {
	store, err := embedded.Open(t.TempDir(), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	api := httpapi.NewHandler(store, httpapi.Options{Token: "s3cret"})
	// The node sees the writer as another host; the packets stay on
	// loopback. 192.0.2.0/24 is TEST-NET-1, never routed.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.RemoteAddr = "192.0.2.7:40000"
		api.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	points := []tsdb.Point{pt("dmonitor.check.status", 1700000000, 0, "host", "a")}

	with, err := New(Options{URL: srv.URL, Token: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	if err := with.Append(testContext(t), points); err != nil {
		t.Fatalf("Append with the token: %v", err)
	}
	without, err := New(Options{URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	err = without.Append(testContext(t), points)
	if !errors.Is(err, tsdb.ErrUnavailable) || !strings.Contains(err.Error(), "401") {
		t.Fatalf("Append without the token: %v, want ErrUnavailable naming the 401", err)
	}
}
