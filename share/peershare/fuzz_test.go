package peershare

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/alerting/localstate"
	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/control"
	"github.com/dmonitor/dmonitor/internal/await"
	"github.com/dmonitor/dmonitor/silence"
)

// fuzzNode is node "a" of a cluster of a and b, serving the peer API as
// dmonitor does (under control.APIHandler's token check) over a real alert
// state file and a real silence file, with its results and confirmation
// requests subscribed to. Nothing is sent: Run is not started.
type fuzzNode struct {
	x   *Exchange
	api http.Handler

	mu  sync.Mutex
	bad []string // what the subscriptions received that they should not have
}

const fuzzToken = "fuzz-token"

func newFuzzNode(f *testing.F) *fuzzNode {
	f.Helper()
	dir := f.TempDir()
	clock := func() time.Time { return time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC) }
	st, err := localstate.Open(filepath.Join(dir, "state.db"), localstate.Options{Now: clock})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = st.Close() })
	sils, err := silence.Open(filepath.Join(dir, "silences.json"), silence.Options{Now: clock})
	if err != nil {
		f.Fatal(err)
	}
	n := &fuzzNode{}
	n.x = New(Options{
		Self: "a", Peers: []Peer{{Name: "b", URL: "http://127.0.0.1:1"}}, Token: fuzzToken,
		Known: func(host, _ string) bool { return host != "unknown" },
		State: st, Silences: sils, Now: clock,
		OnState: func(ctx context.Context, recs []localstate.Record) {
			// As dmonitor does: a record the store refuses is logged there.
			_, _ = st.Merge(ctx, recs)
		},
	})
	n.api = control.APIHandler(control.APIOptions{Silences: sils, Token: fuzzToken, Peers: n.x.Handler(), Now: clock})

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		_ = n.x.Subscribe(ctx, func(r check.Result) {
			if r.Observer != "b" || r.Host == "unknown" {
				n.report(fmt.Sprintf("result of %s/%s observed by %q delivered", r.Host, r.Check, r.Observer))
			}
		})
	})
	wg.Go(func() {
		_ = n.x.Confirmations(ctx, func(_, _, from string) {
			if from != "b" {
				n.report(fmt.Sprintf("confirmation request from %q delivered", from))
			}
		})
	})
	f.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	await.Until(f, "the subscriptions in place", func() bool {
		n.x.mu.Lock()
		defer n.x.mu.Unlock()
		return n.x.results != nil && n.x.confirms != nil
	})
	return n
}

func (n *fuzzNode) report(what string) {
	n.mu.Lock()
	n.bad = append(n.bad, what)
	n.mu.Unlock()
}

// serve sends one request with the cluster's token from loopback.
func (n *fuzzNode) serve(method, path string, body []byte) (int, []byte) {
	r := httptest.NewRequest(method, path, bytes.NewReader(body))
	r.RemoteAddr = "127.0.0.1:40000"
	r.Header.Set("Authorization", "Bearer "+fuzzToken)
	w := httptest.NewRecorder()
	n.api.ServeHTTP(w, r)
	return w.Code, w.Body.Bytes()
}

// FuzzPeerAPI pushes fuzzed envelopes to the peer API with the right token,
// then reads the node's state as a peer taking over would. A push is taken
// (204) exactly when its body starts with an envelope from the peer b, and
// refused with a 4xx otherwise, never a 5xx; what it delivers comes from b
// and from checks the node runs; the notifications it queues are held
// until done; and the state endpoint always answers what a peer's
// FetchState can decode.
func FuzzPeerAPI(f *testing.F) {
	n := newFuzzNode(f)
	for _, s := range []string{
		`{"from":"b","sent_at":"2026-03-01T12:00:00Z","heartbeat":"2026-03-01T12:00:00Z",` +
			`"results":[{"t":1772366400000000000,"h":"web1","c":"http","o":"b","s":2,"r":"CRITICAL","x":2,"m":"down","p":[{"l":"time","v":0.5,"u":"s","n":"NaN"}],"d":1000}]}`,
		`{"from":"b","confirm":[{"host":"web1","check":"http"}],"results":[{"t":1,"h":"unknown","c":"x","o":"b"},{"t":1,"h":"web1","c":"x","o":"c"}]}`,
		`{"from":"b","state":[{"key":"down\u0000host=web1","instance":{"rule":"down","labels":{"host":"web1"},"state":"firing","active_at":"2026-03-01T11:00:00Z"},"updated":"2026-03-01T12:00:00Z","epoch":3},` +
			`{"key":"gone","deleted":true,"updated":"9999-12-31T23:59:59-23:59","epoch":-1}]}`,
		`{"from":"b","queued":[{"receiver":"ops/email","notification":{"ID":"n1","Status":"firing","Rule":"down","Labels":{"host":"web1"},"StartsAt":"2026-03-01T11:00:00Z","EvaluatedAt":"2026-03-01T12:00:00Z"}}],"done":[{"receiver":"ops/email","id":"n0"}]}`,
		`{"from":"b","silences":[{"id":"s1","matchers":[{"name":"host","value":"web.*","isRegex":true,"isEqual":true}],"startsAt":"2026-03-01T11:00:00Z","endsAt":"9999-12-31T23:59:59-23:59","createdBy":"ops","comment":"maintenance","updatedAt":"2026-03-01T11:00:00Z"}]}`,
		`{"from":"a"}`,
		`{"from":"c","results":[]}`,
		`{"from":"b"} trailing`,
		`[{"from":"b"}]`,
		`{"from":"b","results":[{"t":"x"}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		code, answer := n.serve(http.MethodPost, PushPath, body)
		var env Envelope
		taken := json.NewDecoder(bytes.NewReader(body)).Decode(&env) == nil && env.From == "b"
		switch {
		case code >= 500:
			t.Fatalf("push answered %d: %s", code, answer)
		case taken && code != http.StatusNoContent:
			t.Fatalf("an envelope from b answered %d: %s", code, answer)
		case !taken && (code < 400 || code >= 500):
			t.Fatalf("a push that is not an envelope from b answered %d: %s", code, answer)
		}
		n.mu.Lock()
		bad := n.bad
		n.bad = nil
		n.mu.Unlock()
		if len(bad) > 0 {
			t.Fatalf("the push delivered what it should have dropped: %v", bad)
		}
		if taken {
			done := make(map[string]bool)
			for _, d := range env.Done {
				done[noteKey(d.Receiver, d.ID)] = true
			}
			n.x.mu.Lock()
			for _, q := range env.Queued {
				k := noteKey(q.Receiver, q.Notification.ID)
				if _, held := n.x.held[k]; !held && !done[k] {
					n.x.mu.Unlock()
					t.Fatalf("queued notification %q of %q not held", q.Notification.ID, q.Receiver)
				}
			}
			n.x.mu.Unlock()
		}

		code, answer = n.serve(http.MethodGet, StatePath, nil)
		var sb stateBody
		if code != http.StatusOK {
			t.Fatalf("state answered %d: %s", code, answer)
		}
		if err := json.NewDecoder(bytes.NewReader(answer)).Decode(&sb); err != nil {
			t.Fatalf("state answer does not decode as a peer's FetchState would: %v: %s", err, answer)
		}
	})
}
