// Package peershare lets dmonitor's nodes share what they see and decide
// without Redis, as the original dmonitor did: each node serves a peer API
// on its control port and pushes to every other node of nodes.txt its
// results (batched), its heartbeat, its requests to confirm a failure at
// once, the silences its operators set, and, on the deciding node, the
// alert state it decides and what its notification queues hold, so
// whichever node decides next resumes without paging again and without
// losing a page.
//
// # Wire
//
// One call carries everything a node has for a peer since its last call:
//
//	POST /api/v1/peer/push   an Envelope; 204 when taken
//	GET  /api/v1/peer/state  the node's copy of the alert state, the
//	                         notifications it holds and its silences
//
// Both need the cluster's bearer token; the caller of Handler wraps it with
// that check. Where the control ports serve TLS, peers are called over
// https only (Options.TLS), so the token never crosses in clear. Every envelope carries its sender's clock, so a peer whose
// clock is off (freshness depends on it) is reported.
//
// # Delivery
//
// Each peer has its own sender goroutine and queue, so a peer that is down
// or slow delays no other. Results are best effort: a push that fails drops
// them, and fresher ones follow within an interval. What must not be lost
// (alert state, queued and done notifications, silences) waits, newest
// per key, and is retried until the peer takes it; a node that starts, or
// starts deciding, also fetches it whole (FetchState).
package peershare

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dmonitor/dmonitor/alerting"
	"github.com/dmonitor/dmonitor/alerting/localstate"
	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/share/wire"
	"github.com/dmonitor/dmonitor/silence"
)

// Paths of the peer API, under the control port.
const (
	PushPath  = "/api/v1/peer/push"
	StatePath = "/api/v1/peer/state"
)

// MaxClockSkew is how far a peer's clock may be from this node's before it
// is reported: results carry their own times, and a result from a clock a
// second ahead looks fresh for a second too long.
const MaxClockSkew = time.Second

// Envelope is one push from a node to a peer.
type Envelope struct {
	From   string    `json:"from"`
	SentAt time.Time `json:"sent_at"`
	// Heartbeat, when set, is the sender's last heartbeat time.
	Heartbeat *time.Time          `json:"heartbeat,omitempty"`
	Results   []wire.Result       `json:"results,omitempty"`
	Confirm   []Target            `json:"confirm,omitempty"`
	State     []localstate.Record `json:"state,omitempty"`
	// Queued are the notifications the sender's queues took since its last
	// push, and Done those it delivered (or dropped): every peer holds the
	// queued ones until they are done, so that if the sender dies with
	// some undelivered, the next decider delivers them.
	Queued []QueuedNotification `json:"queued,omitempty"`
	Done   []DoneNotification   `json:"done,omitempty"`
	// Silences are the operators' silences the sender stored since its
	// last push, so a silence set through any node mutes every decider.
	Silences []silence.Silence `json:"silences,omitempty"`
}

// QueuedNotification is a notification waiting in a decider's queue of
// Receiver (a destination, such as "ops/email").
type QueuedNotification struct {
	Receiver     string                `json:"receiver"`
	Notification alerting.Notification `json:"notification"`
}

// DoneNotification names a notification a decider's queue of Receiver is
// done with.
type DoneNotification struct {
	Receiver string `json:"receiver"`
	ID       string `json:"id"`
}

// MaxHeld bounds the notifications a node holds for its peers; beyond it
// the oldest are forgotten, and logged.
const MaxHeld = 100_000

// Target is one host×check, the subject of a confirmation request.
type Target struct {
	Host  string `json:"host"`
	Check string `json:"check"`
}

// Peer is another node of nodes.txt.
type Peer struct {
	// Name is its nodes.txt entry, which is also its observer name.
	Name string
	// URL is the base of its control API, such as http://127.0.0.1:2930,
	// or https://127.0.0.1:2930 when the control ports serve TLS.
	URL string
}

// SilenceStore is the node's silences as the exchange shares them.
type SilenceStore interface {
	List(now time.Time) []silence.Silence
	// Merge takes in a peer's silences, the latest write of each winning.
	Merge(sils []silence.Silence) (int, error)
}

// StateSource is the node's own copy of the alert state, served to a peer
// that starts deciding.
type StateSource interface {
	Records(ctx context.Context) ([]localstate.Record, error)
}

// Options configure an Exchange. Self, Peers and Token are required.
type Options struct {
	// Self is this node's name: its nodes.txt entry and observer name.
	Self  string
	Peers []Peer
	// Token is the bearer token every node of the cluster shares.
	Token string
	// Known reports whether this node runs host's check: a result for a
	// check it does not know is dropped and counted, since no rule here
	// could read it. Nil knows every check.
	Known func(host, check string) bool
	// State is served to peers that ask for it; nil serves none.
	State StateSource
	// OnState takes the alert state a deciding peer pushes; nil drops it.
	OnState func(ctx context.Context, recs []localstate.Record)
	// Silences are this node's silences, served to peers, and given those
	// the peers push; nil neither serves nor takes any.
	Silences SilenceStore
	// Client makes the calls to peers; nil uses one with a 2s timeout
	// (and TLS, when set).
	Client *http.Client
	// TLS, when set, says the peers' control ports serve TLS: peers are
	// called over https only, verified with TLS.RootCAs (nil: the
	// system's roots; httpserve.ClientTLS makes one from a CA file), at
	// TLS 1.2 or later. A peer whose URL is not https is then refused,
	// never called, and logged: the call would carry the token in clear.
	// With Client set, Client makes the calls as it is and TLS only
	// refuses plain http. Nil keeps the peers' URLs as they are.
	TLS *tls.Config
	// QueueSize bounds what waits for one peer, in results; the oldest are
	// dropped beyond it (a fresher result of the same check follows them
	// within an interval). Default 100,000.
	QueueSize int
	Logger    *slog.Logger
	// Registerer takes the exchange's metrics; nil skips them.
	Registerer prometheus.Registerer
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Exchange is one node's side of the peer exchange. Its methods are safe
// for concurrent use; Run owns its goroutines.
type Exchange struct {
	self     string
	token    string
	known    func(host, check string) bool
	state    StateSource
	onState  func(ctx context.Context, recs []localstate.Record)
	silences SilenceStore
	client   *http.Client
	log      *slog.Logger
	now      func() time.Time
	peers    []*peer
	limit    int
	metrics  metrics

	mu          sync.Mutex
	results     func(check.Result)
	confirms    func(host, check, from string)
	seen        map[string]time.Time // peer → when its last heartbeat arrived, on this node's clock
	selfBeat    time.Time
	confirmedAt map[Target]time.Time // until when this node holds off its next request, per target
	held        map[string]heldNote  // the peers' queued notifications, by receiver and id
	heldSeq     uint64
	skewed      map[string]bool // peers reported for their clock
}

// peer is the sending side of one peer: what waits for it.
type peer struct {
	Peer
	wake    chan struct{} // capacity 1
	refused error         // set when p must not be called: every call fails with it

	mu        sync.Mutex
	heartbeat *time.Time
	results   []wire.Result
	confirm   []Target
	state     map[string]localstate.Record // by key: only the newest record of an instance waits
	queued    map[string]QueuedNotification
	done      []DoneNotification
	silences  map[string]silence.Silence // by id: only the latest write waits
	down      bool                       // the last push failed; logged once per change
}

type metrics struct {
	sent, failed, dropped *prometheus.CounterVec
	skew                  *prometheus.GaugeVec
}

// New returns the Exchange of o.Self. Nothing is sent until Run.
func New(o Options) *Exchange {
	x := &Exchange{
		self: o.Self, token: o.Token, known: o.Known, state: o.State, onState: o.OnState, silences: o.Silences,
		client: o.Client, log: o.Logger, now: o.Now, limit: o.QueueSize,
		seen: make(map[string]time.Time), confirmedAt: make(map[Target]time.Time), skewed: make(map[string]bool),
		held: make(map[string]heldNote),
	}
	if x.log == nil {
		x.log = slog.New(slog.DiscardHandler)
	}
	if x.client == nil {
		x.client = &http.Client{Timeout: 2 * time.Second}
		if o.TLS != nil {
			tc := o.TLS.Clone()
			tc.MinVersion = max(tc.MinVersion, tls.VersionTLS12)
			// A clone of the default transport keeps its proxy, dial and
			// idle settings, as the plain client has them.
			tr := http.DefaultTransport.(*http.Transport).Clone()
			tr.TLSClientConfig = tc
			x.client.Transport = tr
		}
	}
	if x.now == nil {
		x.now = time.Now
	}
	if x.limit <= 0 {
		x.limit = 100_000
	}
	for _, p := range o.Peers {
		pp := &peer{Peer: p, wake: make(chan struct{}, 1), state: make(map[string]localstate.Record),
			queued: make(map[string]QueuedNotification), silences: make(map[string]silence.Silence)}
		if u, err := url.Parse(p.URL); o.TLS != nil && (err != nil || u.Scheme != "https") {
			pp.refused = fmt.Errorf("peer %s at %s: not https, though the peers serve TLS: the call would carry the token in clear", p.Name, p.URL)
			x.log.Error("peer refused", "peer", p.Name, "err", pp.refused)
		}
		x.peers = append(x.peers, pp)
	}
	x.metrics = metrics{
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dmonitor_peer_pushes_total", Help: "Pushes to a peer that it took.",
		}, []string{"peer"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dmonitor_peer_push_errors_total",
			Help: "Pushes to a peer that failed; their results are dropped, their state, notifications and silences retried.",
		}, []string{"peer"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dmonitor_peer_results_dropped_total",
			Help: "Results from or for peers dropped, by reason: unknown check, queue full, push failed.",
		}, []string{"reason"}),
		skew: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dmonitor_peer_clock_skew_seconds",
			Help: "How far a peer's clock was ahead of this node's (negative: behind) at its last push.",
		}, []string{"peer"}),
	}
	if o.Registerer != nil {
		o.Registerer.MustRegister(x.metrics.sent, x.metrics.failed, x.metrics.dropped, x.metrics.skew)
	}
	return x
}

// Run sends to every peer until ctx is done.
func (x *Exchange) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, p := range x.peers {
		wg.Go(func() { x.send(ctx, p) })
	}
	wg.Wait()
	return ctx.Err()
}

// StateRetry is how long a push that carried alert state or notifications
// waits before it is tried again after a failure.
const StateRetry = time.Second

// send pushes what waits for p whenever there is something, one push at a
// time: results that queue up during a push go in the next one, so batches
// grow only under load or while p is slow. A failed push drops its results
// (fresher ones follow within an interval) but keeps its alert state, which
// is tried again every StateRetry until p takes it: a page the next decider
// does not know of would be paged again, under another id, and the first
// never resolved.
func (x *Exchange) send(ctx context.Context, p *peer) {
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
		case <-retry:
		}
		retry = nil
		p.mu.Lock()
		env := Envelope{From: x.self, Heartbeat: p.heartbeat, Results: p.results, Confirm: p.confirm, State: p.pendingState(),
			Queued: p.pendingQueued(), Done: p.done, Silences: slices.Collect(maps.Values(p.silences))}
		p.heartbeat, p.results, p.confirm, p.done = nil, nil, nil, nil
		p.mu.Unlock()
		env.SentAt = x.now()
		err := x.push(ctx, p, &env)
		p.mu.Lock()
		wasDown := p.down
		p.down = err != nil
		p.mu.Unlock()
		switch {
		case err == nil:
			p.mu.Lock()
			p.delivered(env.State)
			for _, q := range env.Queued {
				delete(p.queued, noteKey(q.Receiver, q.Notification.ID))
			}
			for _, sil := range env.Silences {
				if cur, ok := p.silences[sil.ID]; ok && cur.UpdatedAt.Equal(sil.UpdatedAt) {
					delete(p.silences, sil.ID)
				}
			}
			p.mu.Unlock()
			x.metrics.sent.WithLabelValues(p.Name).Inc()
			if wasDown {
				x.log.Info("peer reachable again", "peer", p.Name, "url", p.URL)
			}
		case ctx.Err() != nil:
			return
		default:
			x.metrics.failed.WithLabelValues(p.Name).Inc()
			x.metrics.dropped.WithLabelValues("push failed").Add(float64(len(env.Results)))
			if !wasDown {
				x.log.Warn("cannot reach peer; its results age until it answers", "peer", p.Name, "url", p.URL, "err", err)
			}
			if len(env.State)+len(env.Queued)+len(env.Done)+len(env.Silences) > 0 {
				// Done ids go back in front of any newer ones; queued
				// notifications and state stayed where they were.
				p.mu.Lock()
				p.done = append(env.Done, p.done...)
				p.mu.Unlock()
				retry = time.After(StateRetry)
			}
		}
	}
}

// pendingQueued returns the queued notifications waiting for p, oldest
// first; p.mu held.
func (p *peer) pendingQueued() []QueuedNotification {
	if len(p.queued) == 0 {
		return nil
	}
	out := slices.Collect(maps.Values(p.queued))
	slices.SortStableFunc(out, func(a, b QueuedNotification) int {
		return a.Notification.EvaluatedAt.Compare(b.Notification.EvaluatedAt)
	})
	return out
}

// noteKey is the key of a notification of receiver in the maps that hold
// them.
func noteKey(receiver, id string) string { return receiver + "\x00" + id }

// pendingState returns the state records waiting for p, by key; p.mu held.
func (p *peer) pendingState() []localstate.Record {
	if len(p.state) == 0 {
		return nil
	}
	out := make([]localstate.Record, 0, len(p.state))
	for _, k := range slices.Sorted(maps.Keys(p.state)) {
		out = append(out, p.state[k])
	}
	return out
}

// delivered forgets the records p has taken, unless a newer one of the
// same key was queued meanwhile; p.mu held.
func (p *peer) delivered(recs []localstate.Record) {
	for _, r := range recs {
		if cur, ok := p.state[r.Key]; ok && cur.Updated.Equal(r.Updated) && cur.Epoch == r.Epoch {
			delete(p.state, r.Key)
		}
	}
}

func (x *Exchange) push(ctx context.Context, p *peer, env *Envelope) error {
	if p.refused != nil {
		return p.refused
	}
	body, err := json.Marshal(env)
	if err != nil {
		return fmt.Errorf("encode push to %s: %w", p.Name, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.URL+PushPath, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("push to %s: %w", p.Name, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+x.token)
	resp, err := x.client.Do(req)
	if err != nil {
		return fmt.Errorf("push to %s: %w", p.Name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("push to %s: %s: %s", p.Name, resp.Status, strings.TrimSpace(string(msg)))
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return nil
}

// queue adds to what waits for every peer and wakes their senders.
func (x *Exchange) queue(add func(p *peer)) {
	for _, p := range x.peers {
		p.mu.Lock()
		add(p)
		if over := len(p.results) - x.limit; over > 0 {
			p.results = slices.Delete(p.results, 0, over)
			x.metrics.dropped.WithLabelValues("queue full").Add(float64(over))
		}
		p.mu.Unlock()
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

// Publish queues r for every peer. It never blocks on a peer.
func (x *Exchange) Publish(_ context.Context, r check.Result) error {
	x.queue(func(p *peer) { p.results = append(p.results, wire.Result(r)) })
	return nil
}

// Subscribe delivers every result the peers push until ctx is done, then
// returns ctx's error. Results pushed while nobody subscribes are dropped.
func (x *Exchange) Subscribe(ctx context.Context, fn func(check.Result)) error {
	x.mu.Lock()
	x.results = fn
	x.mu.Unlock()
	<-ctx.Done()
	x.mu.Lock()
	x.results = nil
	x.mu.Unlock()
	return ctx.Err()
}

// Heartbeat tells every peer this node is alive at at.
func (x *Exchange) Heartbeat(_ context.Context, at time.Time) error {
	x.mu.Lock()
	x.selfBeat = at
	x.mu.Unlock()
	x.queue(func(p *peer) { p.heartbeat = &at })
	return nil
}

// Seen is a node and when its last heartbeat arrived, on this node's
// clock (this node's own: when it last beat).
type Seen struct {
	Name     string
	LastSeen time.Time
}

// Observers returns this node and every peer heard from, sorted by name.
// A peer's time is when its heartbeat arrived here, so judging its silence
// does not depend on its clock.
func (x *Exchange) Observers(context.Context) ([]Seen, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	out := make([]Seen, 0, len(x.seen)+1)
	if !x.selfBeat.IsZero() {
		out = append(out, Seen{x.self, x.selfBeat})
	}
	for n, t := range x.seen {
		out = append(out, Seen{n, t})
	}
	slices.SortFunc(out, func(a, b Seen) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// RequestConfirm asks every peer to run host's check now, unless this node
// asked within ttl. It reports whether it asked. Without a shared store a
// round cannot be taken cluster-wide; at worst each observer that sees the
// failure asks once, which costs each peer one extra run.
func (x *Exchange) RequestConfirm(_ context.Context, host, chk string, ttl time.Duration) (bool, error) {
	t := Target{host, chk}
	now := x.now()
	x.mu.Lock()
	if until, ok := x.confirmedAt[t]; ok && now.Before(until) {
		x.mu.Unlock()
		return false, nil
	}
	x.confirmedAt[t] = now.Add(ttl)
	// Forget requests whose own hold-off is over, so the map stays the
	// size of what fails now; each check has its own ttl.
	for k, until := range x.confirmedAt {
		if !now.Before(until) {
			delete(x.confirmedAt, k)
		}
	}
	x.mu.Unlock()
	x.queue(func(p *peer) { p.confirm = append(p.confirm, t) })
	return true, nil
}

// Confirmations delivers the peers' confirmation requests until ctx is
// done, then returns ctx's error. fn should only start the check.
func (x *Exchange) Confirmations(ctx context.Context, fn func(host, check, from string)) error {
	x.mu.Lock()
	x.confirms = fn
	x.mu.Unlock()
	<-ctx.Done()
	x.mu.Lock()
	x.confirms = nil
	x.mu.Unlock()
	return ctx.Err()
}

// PushState queues alert state records for every peer, so each keeps a
// copy and the next deciding node resumes from it. Only the newest record
// of each key waits, and it waits until the peer has taken it.
func (x *Exchange) PushState(recs ...localstate.Record) {
	x.queue(func(p *peer) {
		for _, r := range recs {
			p.state[r.Key] = r
		}
	})
}

// PushSilences queues silences an operator stored here for every peer,
// until each has taken them.
func (x *Exchange) PushSilences(sils []silence.Silence) {
	x.queue(func(p *peer) {
		for _, sil := range sils {
			p.silences[sil.ID] = sil
		}
	})
}

// Queued tells every peer that n waits in this node's queue of receiver
// (alerting.Replica), so they hold it until Done.
func (x *Exchange) Queued(receiver string, n alerting.Notification) {
	q := QueuedNotification{Receiver: receiver, Notification: n}
	x.queue(func(p *peer) { p.queued[noteKey(receiver, n.ID)] = q })
}

// Done tells every peer that this node's queue of receiver is done with
// id (alerting.Replica).
func (x *Exchange) Done(receiver, id string) {
	x.queue(func(p *peer) {
		// The queued one may be in a push under way: p is told it is done
		// in any case (forgetting what it never held costs nothing).
		delete(p.queued, noteKey(receiver, id))
		p.done = append(p.done, DoneNotification{Receiver: receiver, ID: id})
	})
}

var _ alerting.Replica = (*Exchange)(nil)

// heldNote is a peer's queued notification, held here.
type heldNote struct {
	QueuedNotification
	from string
	seq  uint64 // arrival order, for the bound
}

// hold keeps what env says of its sender's queues.
func (x *Exchange) hold(env *Envelope) {
	if len(env.Queued)+len(env.Done) == 0 {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, q := range env.Queued {
		x.heldSeq++
		x.held[noteKey(q.Receiver, q.Notification.ID)] = heldNote{QueuedNotification: q, from: env.From, seq: x.heldSeq}
	}
	for _, d := range env.Done {
		delete(x.held, noteKey(d.Receiver, d.ID))
	}
	if over := len(x.held) - MaxHeld; over > 0 {
		oldest := slices.SortedFunc(maps.Keys(x.held), func(a, b string) int { return cmp.Compare(x.held[a].seq, x.held[b].seq) })
		for _, k := range oldest[:over] {
			delete(x.held, k)
		}
		x.log.Warn("too many notifications held for peers; the oldest forgotten", "forgotten", over, "max", MaxHeld)
	}
}

// heldNotes returns the notifications held for the peers, oldest first.
func (x *Exchange) heldNotes() []QueuedNotification {
	x.mu.Lock()
	defer x.mu.Unlock()
	hs := slices.SortedFunc(maps.Values(x.held), func(a, b heldNote) int { return cmp.Compare(a.seq, b.seq) })
	out := make([]QueuedNotification, len(hs))
	for i, h := range hs {
		out[i] = h.QueuedNotification
	}
	return out
}

// Fetched is what the peers that answered FetchState hold, and the
// notifications this node holds for its peers.
type Fetched struct {
	// Records are their copies of the alert state.
	Records []localstate.Record
	// Queued are the notifications they hold that a decider had queued and
	// not reported done, oldest first, without duplicates.
	Queued []QueuedNotification
	// Silences are their silences.
	Silences []silence.Silence
	// Answered counts the peers that answered.
	Answered int
}

// FetchState returns what the peers that answer within ctx hold: their
// alert state copies, their silences and the notifications they hold
// (with those this node holds). A peer that does
// not answer is skipped: it may be the dead node whose place this one
// takes.
func (x *Exchange) FetchState(ctx context.Context) Fetched {
	type answer struct {
		body stateBody
		err  error
		name string
	}
	answers := make(chan answer, len(x.peers))
	for _, p := range x.peers {
		go func() {
			body, err := x.fetch(ctx, p)
			answers <- answer{body, err, p.Name}
		}()
	}
	// What this node holds for its peers counts as much as what they
	// hold: a decider that died may have reached only this node.
	f := Fetched{Queued: x.heldNotes()}
	seen := make(map[string]bool)
	for _, q := range f.Queued {
		seen[noteKey(q.Receiver, q.Notification.ID)] = true
	}
	for range x.peers {
		a := <-answers
		if a.err != nil {
			x.log.Info("no alert state from peer", "peer", a.name, "err", a.err)
			continue
		}
		f.Answered++
		f.Records = append(f.Records, a.body.Records...)
		f.Silences = append(f.Silences, a.body.Silences...)
		for _, q := range a.body.Queued {
			if k := noteKey(q.Receiver, q.Notification.ID); !seen[k] {
				seen[k] = true
				f.Queued = append(f.Queued, q)
			}
		}
	}
	slices.SortStableFunc(f.Queued, func(a, b QueuedNotification) int {
		return a.Notification.EvaluatedAt.Compare(b.Notification.EvaluatedAt)
	})
	return f
}

// stateBody is the answer of the state endpoint.
type stateBody struct {
	Records  []localstate.Record  `json:"records"`
	Queued   []QueuedNotification `json:"queued,omitempty"`
	Silences []silence.Silence    `json:"silences,omitempty"`
}

func (x *Exchange) fetch(ctx context.Context, p *peer) (stateBody, error) {
	var body stateBody
	if p.refused != nil {
		return body, p.refused
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+StatePath, nil)
	if err != nil {
		return body, fmt.Errorf("fetch state of %s: %w", p.Name, err)
	}
	req.Header.Set("Authorization", "Bearer "+x.token)
	resp, err := x.client.Do(req)
	if err != nil {
		return body, fmt.Errorf("fetch state of %s: %w", p.Name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return body, fmt.Errorf("fetch state of %s: %s", p.Name, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return body, fmt.Errorf("fetch state of %s: decode: %w", p.Name, err)
	}
	return body, nil
}

// maxPush bounds a push body: 100,000 results of a few hundred bytes.
const maxPush = 64 << 20

// Handler serves the peer API. The caller guards it with the bearer token
// (the same check as the control API's changes).
func (x *Exchange) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+PushPath, x.servePush)
	mux.HandleFunc("GET "+StatePath, x.serveState)
	return mux
}

func (x *Exchange) servePush(w http.ResponseWriter, r *http.Request) {
	var env Envelope
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxPush)).Decode(&env); err != nil {
		http.Error(w, "decode push: "+err.Error(), http.StatusBadRequest)
		return
	}
	if env.From == "" || env.From == x.self || !x.isPeer(env.From) {
		x.log.Warn("push from a node that is not a peer in nodes.txt, refused", "from", env.From, "remote", r.RemoteAddr)
		http.Error(w, fmt.Sprintf("%q is not a peer of %q in nodes.txt", env.From, x.self), http.StatusForbidden)
		return
	}
	now := x.now()
	x.checkSkew(env.From, env.SentAt, now)

	x.mu.Lock()
	if env.Heartbeat != nil {
		x.seen[env.From] = now
	}
	results, confirms := x.results, x.confirms
	x.mu.Unlock()

	for _, res := range env.Results {
		switch {
		case res.Observer != env.From:
			x.metrics.dropped.WithLabelValues("wrong observer").Inc()
		case x.known != nil && !x.known(res.Host, res.Check):
			x.metrics.dropped.WithLabelValues("unknown check").Inc()
			x.log.Debug("result for a check this node does not run, dropped", "from", env.From, "host", res.Host, "check", res.Check)
		case results != nil:
			results(check.Result(res))
		}
	}
	if confirms != nil {
		for _, t := range env.Confirm {
			confirms(t.Host, t.Check, env.From)
		}
	}
	if len(env.State) > 0 && x.onState != nil {
		x.onState(r.Context(), env.State)
	}
	x.hold(&env)
	if len(env.Silences) > 0 && x.silences != nil {
		if _, err := x.silences.Merge(env.Silences); err != nil {
			x.log.Error("take a peer's silences", "from", env.From, "err", err)
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

func (x *Exchange) serveState(w http.ResponseWriter, r *http.Request) {
	var recs []localstate.Record
	if x.state != nil {
		var err error
		if recs, err = x.state.Records(r.Context()); err != nil {
			http.Error(w, "read alert state: "+err.Error(), http.StatusInternalServerError)
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	body := stateBody{Records: recs, Queued: x.heldNotes()}
	if x.silences != nil {
		body.Silences = x.silences.List(x.now())
	}
	if err := json.NewEncoder(w).Encode(body); err != nil && !errors.Is(err, context.Canceled) {
		x.log.Debug("write alert state to peer", "remote", r.RemoteAddr, "err", err)
	}
}

func (x *Exchange) isPeer(name string) bool {
	return slices.ContainsFunc(x.peers, func(p *peer) bool { return p.Name == name })
}

// checkSkew reports a peer whose clock is off by more than MaxClockSkew,
// once per change, and keeps the gauge current.
func (x *Exchange) checkSkew(from string, sentAt, now time.Time) {
	if sentAt.IsZero() {
		return
	}
	skew := sentAt.Sub(now)
	x.metrics.skew.WithLabelValues(from).Set(skew.Seconds())
	off := skew > MaxClockSkew || skew < -MaxClockSkew
	x.mu.Lock()
	changed := x.skewed[from] != off
	x.skewed[from] = off
	x.mu.Unlock()
	switch {
	case changed && off:
		x.log.Warn("peer clock is off; results are judged fresh by their own times, so fix its time sync",
			"peer", from, "skew", skew.Round(time.Millisecond), "max", MaxClockSkew)
	case changed:
		x.log.Info("peer clock back in step", "peer", from, "skew", skew.Round(time.Millisecond))
	}
}
