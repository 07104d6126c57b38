package control

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/dmonitor/dmonitor/silence"
)

// Silencer is the silence store as the API uses it; *silence.Store
// satisfies it.
type Silencer interface {
	// Set creates or updates a silence and returns its id. Errors wrapping
	// silence.ErrInvalid are the caller's; silence.ErrNotFound means the
	// id to update does not exist.
	Set(silence.Silence) (string, error)
	// Expire ends a silence now; silence.ErrNotFound when there is none.
	Expire(id string) error
	// List returns every silence held, each with its State(now).
	List(now time.Time) []silence.Silence
}

var _ Silencer = (*silence.Store)(nil)

// Acknowledger records that someone is on a firing alert, and says who is
// on which. The evaluator implements it: it holds the rule instances and
// applies the ack with alerting.Instance.Acknowledge at its next
// evaluation.
type Acknowledger interface {
	// Acknowledge acknowledges the open incident of rule on host×check.
	// Errors wrap ErrUnknownInstance when there is no such instance,
	// ErrNotFiring when it has no open incident, and ErrNotLeader when
	// this node does not evaluate alerts.
	Acknowledge(rule, host, check, by, comment string) error
	// Acks returns the acknowledgements of the incidents still open, in
	// any order. An error means they cannot be read now (a follower
	// reads the leader's from the state store).
	Acks(ctx context.Context) ([]Ack, error)
}

// Ack is an acknowledgement of an open incident, as GET /api/v1/acks lists
// it: who is on which rule instance since when, and the instance's state
// (acknowledged, or still firing until the next evaluation applies it).
type Ack struct {
	Rule    string    `json:"rule"`
	Host    string    `json:"host"`
	Check   string    `json:"check"`
	State   string    `json:"state"`
	By      string    `json:"by"`
	Comment string    `json:"comment"`
	At      time.Time `json:"at"`
}

// Errors an Acknowledger returns, wrapped, for the API to answer with the
// right status.
var (
	// ErrUnknownInstance: no rule instance has that rule, host and check
	// (404).
	ErrUnknownInstance = errors.New("no such rule instance")
	// ErrNotFiring: the instance exists but has no open incident to
	// acknowledge (409).
	ErrNotFiring = errors.New("rule instance is not firing")
	// ErrNotLeader: this node does not evaluate alerts; ask the leader
	// (503).
	ErrNotLeader = errors.New("this node is not the leader")
)

// maxBody bounds a request body: a silence is a few hundred bytes.
const maxBody = 1 << 20

// APIOptions configure APIHandler.
type APIOptions struct {
	Silences Silencer
	// Acks is nil on a node that cannot acknowledge; acks then get 503.
	Acks Acknowledger
	// Token is the bearer token mutating calls must carry (see ReadToken).
	// Empty refuses every mutating call: the API is never open by default.
	Token string
	// Peers, when set, is the peer API of peer mode (share/peershare),
	// served under /api/v1/peer/ to callers with the bearer token.
	Peers http.Handler
	// Now is the time the silences are listed at; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// APIHandler returns the admin API under /api/v1/, in JSON, shaped after
// Alertmanager's v2 API so its users and amtool-like scripts feel at home:
//
//	GET    /api/v1/silences      every silence, with status.state
//	POST   /api/v1/silences      create or update: {"silenceID": id}
//	DELETE /api/v1/silence/{id}  expire
//	POST   /api/v1/acks          {rule, host, check, by, comment}
//	GET    /api/v1/acks          the open incidents' acks, by rule, host, check
//	       /api/v1/peer/...      the peer API (APIOptions.Peers), token only
//
// POST and DELETE need "Authorization: Bearer <Token>": 401 without it or
// with another, 403 when no token is configured. Errors are
// {"error": "..."} with 400 (bad input), 404, 409, 503 or 500.
//
// Mount it beside Handler: mux.Handle("/api/", APIHandler(o)).
func APIHandler(o APIOptions) http.Handler {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	a := &api{APIOptions: o}
	g := newGuard(o.Token, o.Logger, a.error)
	routes := []route{
		{"GET /api/v1/silences", public, http.HandlerFunc(a.listSilences)},
		{"POST /api/v1/silences", tokenOnly, http.HandlerFunc(a.postSilence)},
		{"DELETE /api/v1/silence/{id}", tokenOnly, http.HandlerFunc(a.deleteSilence)},
		{"POST /api/v1/acks", tokenOnly, http.HandlerFunc(a.postAck)},
		{"GET /api/v1/acks", public, http.HandlerFunc(a.listAcks)},
	}
	if o.Peers != nil {
		routes = append(routes, route{"/api/v1/peer/", tokenOnly, o.Peers})
	}
	return g.router(routes, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.error(w, r, http.StatusNotFound, fmt.Errorf("no API endpoint %s %s", r.Method, r.URL.Path))
	}))
}

// ReadToken reads the bearer token from path (control.token_file): the
// file's content without surrounding white space. An empty file is an
// error, not an open API.
func ReadToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read control token: %w", err)
	}
	tok := string(bytes.TrimSpace(b))
	if tok == "" {
		return "", fmt.Errorf("read control token: %s is empty", path)
	}
	return tok, nil
}

type api struct {
	APIOptions
}

// gettableSilence is a silence as Alertmanager's v2 API returns it.
type gettableSilence struct {
	silence.Silence
	Status struct {
		State silence.State `json:"state"`
	} `json:"status"`
}

func (a *api) listSilences(w http.ResponseWriter, r *http.Request) {
	now := a.Now()
	list := a.Silences.List(now)
	out := make([]gettableSilence, len(list))
	for i, s := range list {
		out[i].Silence = s
		out[i].Status.State = s.State(now)
	}
	a.reply(w, r, http.StatusOK, out)
}

// postableMatcher is a matcher as posted. isEqual defaults to true, as in
// Alertmanager's v2 API, so {"name","value","isRegex"} works.
type postableMatcher struct {
	Name    string `json:"name"`
	Value   string `json:"value"`
	IsRegex bool   `json:"isRegex"`
	IsEqual *bool  `json:"isEqual"`
}

// postableSilence is Alertmanager's v2 postableSilence.
type postableSilence struct {
	ID        string            `json:"id"`
	Matchers  []postableMatcher `json:"matchers"`
	StartsAt  time.Time         `json:"startsAt"`
	EndsAt    time.Time         `json:"endsAt"`
	CreatedBy string            `json:"createdBy"`
	Comment   string            `json:"comment"`
}

func (a *api) postSilence(w http.ResponseWriter, r *http.Request) {
	var p postableSilence
	if !a.decode(w, r, &p) {
		return
	}
	s := silence.Silence{ID: p.ID, StartsAt: p.StartsAt, EndsAt: p.EndsAt, CreatedBy: p.CreatedBy, Comment: p.Comment}
	for _, m := range p.Matchers {
		s.Matchers = append(s.Matchers, silence.Matcher{Name: m.Name, Value: m.Value, IsRegex: m.IsRegex, IsEqual: m.IsEqual == nil || *m.IsEqual})
	}
	id, err := a.Silences.Set(s)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.Logger.Info("silence set", "id", id, "by", s.CreatedBy, "remote", r.RemoteAddr)
	a.reply(w, r, http.StatusOK, map[string]string{"silenceID": id})
}

func (a *api) deleteSilence(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := a.Silences.Expire(id); err != nil {
		a.fail(w, r, err)
		return
	}
	a.Logger.Info("silence expired", "id", id, "remote", r.RemoteAddr)
	a.reply(w, r, http.StatusOK, map[string]string{"silenceID": id})
}

type postableAck struct {
	Rule    string `json:"rule"`
	Host    string `json:"host"`
	Check   string `json:"check"`
	By      string `json:"by"`
	Comment string `json:"comment"`
}

func (a *api) postAck(w http.ResponseWriter, r *http.Request) {
	var p postableAck
	if !a.decode(w, r, &p) {
		return
	}
	var missing []string
	for _, f := range []struct{ name, v string }{{"rule", p.Rule}, {"host", p.Host}, {"check", p.Check}, {"by", p.By}} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		a.error(w, r, http.StatusBadRequest, fmt.Errorf("acknowledgement lacks %s", strings.Join(missing, ", ")))
		return
	}
	if a.Acks == nil {
		a.error(w, r, http.StatusServiceUnavailable, errors.New("this node does not evaluate alerts, so it cannot acknowledge them"))
		return
	}
	if err := a.Acks.Acknowledge(p.Rule, p.Host, p.Check, p.By, p.Comment); err != nil {
		a.fail(w, r, err)
		return
	}
	a.Logger.Info("alert acknowledged", "rule", p.Rule, "host", p.Host, "check", p.Check, "by", p.By, "remote", r.RemoteAddr)
	a.reply(w, r, http.StatusOK, p)
}

func (a *api) listAcks(w http.ResponseWriter, r *http.Request) {
	if a.Acks == nil {
		a.error(w, r, http.StatusServiceUnavailable, errors.New("this node does not evaluate alerts, so it holds no acknowledgements"))
		return
	}
	acks, err := a.Acks.Acks(r.Context())
	if err != nil {
		a.error(w, r, http.StatusServiceUnavailable, fmt.Errorf("list acknowledgements: %w", err))
		return
	}
	// Sorted here, so every Acknowledger lists them alike and a script
	// diffing two calls sees changes, not reorderings.
	slices.SortFunc(acks, func(x, y Ack) int {
		return cmp.Or(cmp.Compare(x.Rule, y.Rule), cmp.Compare(x.Host, y.Host), cmp.Compare(x.Check, y.Check))
	})
	if acks == nil {
		acks = []Ack{} // [], not null: a list, empty
	}
	a.reply(w, r, http.StatusOK, acks)
}

// decode reads the JSON body into v, answering 400 when it cannot. Unknown
// fields are refused: a misspelt "endAt" must not make a silence that
// never ends, or fails to save, for a reason nobody sees.
func (a *api) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("more than one JSON value")
	}
	if errors.Is(err, io.EOF) {
		err = errors.New("empty body")
	}
	if err != nil {
		a.error(w, r, http.StatusBadRequest, fmt.Errorf("request body: %w", err))
		return false
	}
	return true
}

// fail answers err with the status its kind calls for.
func (a *api) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, silence.ErrInvalid):
		code = http.StatusBadRequest
	case errors.Is(err, silence.ErrNotFound), errors.Is(err, ErrUnknownInstance):
		code = http.StatusNotFound
	case errors.Is(err, ErrNotFiring):
		code = http.StatusConflict
	case errors.Is(err, ErrNotLeader):
		code = http.StatusServiceUnavailable
	}
	a.error(w, r, code, err)
}

func (a *api) error(w http.ResponseWriter, r *http.Request, code int, err error) {
	if code >= 500 {
		a.Logger.Error("control API", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	a.reply(w, r, code, map[string]string{"error": err.Error()})
}

func (a *api) reply(w http.ResponseWriter, r *http.Request, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		a.Logger.Warn("control API: write reply", "method", r.Method, "path", r.URL.Path, "err", err)
	}
}
