package control

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// access is who may call a route of the control port.
type access int

const (
	// public routes are read-only and open to whoever reaches the port.
	public access = iota
	// tokenOnly routes need the bearer token: changes, and the peer API.
	tokenOnly
	// loopbackOrToken routes are open to callers on this host and need the
	// token from anywhere else: the profiles, which tell how the process
	// was started (cmdline) and can keep a core busy (profile, trace).
	loopbackOrToken
	// formToken routes take the token in a posted form's field, not in a
	// header (an HTML form cannot set one), and their handler checks it
	// itself: the status page's forms (package statuspage). The guard
	// passes them through.
	formToken
)

// route is one endpoint of the control port. Every endpoint Handler and
// APIHandler serve is one, so that its access is chosen where it is added
// (and the tests walk them all).
type route struct {
	pattern string // http.ServeMux's
	access  access
	handler http.Handler
}

// guard grants the routes their access.
type guard struct {
	tokenSum []byte // sha256 of the token; nil when none is configured
	log      *slog.Logger
	// deny answers a refused call in the handler's own format.
	deny func(w http.ResponseWriter, r *http.Request, code int, err error)
}

func newGuard(token string, log *slog.Logger, deny func(w http.ResponseWriter, r *http.Request, code int, err error)) *guard {
	g := &guard{log: log, deny: deny}
	if token != "" {
		sum := sha256.Sum256([]byte(token))
		g.tokenSum = sum[:]
	}
	return g
}

// router serves routes, each behind its access check.
type router struct {
	routes []route
	mux    *http.ServeMux
	// notFound, when set, answers what no route matches (and wrong
	// methods), in place of the mux's plain text.
	notFound http.Handler
}

func (g *guard) router(routes []route, notFound http.Handler) *router {
	rt := &router{routes: routes, mux: http.NewServeMux(), notFound: notFound}
	for _, r := range routes {
		rt.mux.Handle(r.pattern, g.wrap(r.access, r.handler))
	}
	return rt
}

func (rt *router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if rt.notFound != nil {
		if _, pattern := rt.mux.Handler(r); pattern == "" {
			rt.notFound.ServeHTTP(w, r)
			return
		}
	}
	rt.mux.ServeHTTP(w, r)
}

func (g *guard) wrap(a access, h http.Handler) http.Handler {
	switch a {
	case public, formToken:
		return h
	case loopbackOrToken:
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if fromLoopback(r) || g.authorized(w, r, "served only to callers on this host unless control.token_file is set in dmonitor.yaml; then to callers with its bearer token") {
				h.ServeHTTP(w, r)
			}
		})
	default:
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if g.authorized(w, r, "changes through the control API are disabled: set control.token_file in dmonitor.yaml to a file holding a bearer token") {
				h.ServeHTTP(w, r)
			}
		})
	}
}

// authorized reports whether r carries the bearer token; when it does not,
// it has answered: 401, or 403 with noToken when no token is configured
// (no token can help then, so none is asked for).
func (g *guard) authorized(w http.ResponseWriter, r *http.Request, noToken string) bool {
	if g.tokenSum == nil {
		g.deny(w, r, http.StatusForbidden, errors.New(noToken))
		return false
	}
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	// Hashing both sides makes the comparison constant time whatever the
	// lengths, so timing reveals nothing of the token.
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	if strings.EqualFold(scheme, "Bearer") && subtle.ConstantTimeCompare(sum[:], g.tokenSum) == 1 {
		return true
	}
	// Logged: a peer with the wrong token file is a cluster that silently
	// stopped sharing, and anything else is a probe.
	g.log.Warn("control port: request without the right bearer token refused", "method", r.Method,
		"path", r.URL.Path, "remote", r.RemoteAddr)
	w.Header().Set("WWW-Authenticate", `Bearer realm="dmonitor"`)
	g.deny(w, r, http.StatusUnauthorized, errors.New("missing or wrong bearer token"))
	return false
}

// fromLoopback reports whether r came from this host: its peer address is
// in 127.0.0.0/8 or ::1. Behind a reverse proxy on this host every request
// does; such a proxy must not expose the loopback-only routes.
func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}
