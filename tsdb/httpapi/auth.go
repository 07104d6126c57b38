package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// auth decides who may write (see Options.Token).
type auth struct {
	tokenSum []byte // sha256 of Options.Token; nil when none is configured
	open     bool   // Options.AllowUnauthenticatedWrites
}

func newAuth(opts Options) auth {
	a := auth{open: opts.AllowUnauthenticatedWrites}
	if opts.Token != "" {
		sum := sha256.Sum256([]byte(opts.Token))
		a.tokenSum = sum[:]
	}
	return a
}

// check says whether tok is the configured token; false when none is.
func (a auth) check(tok string) bool {
	if a.tokenSum == nil {
		return false
	}
	// Hashing both sides makes the comparison constant time whatever the
	// lengths, so timing reveals nothing of the token.
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return subtle.ConstantTimeCompare(sum[:], a.tokenSum) == 1
}

// authorize returns the 401 answer refusing a write, or nil when r may
// write: it comes from loopback, carries the bearer token, or writes are
// open to all.
func (h *handler) authorize(r *http.Request) *apiError {
	if h.auth.open || fromLoopback(r) {
		return nil
	}
	if h.auth.tokenSum == nil {
		h.warn.Warn("opentsdb api: write from beyond loopback refused: no token is configured",
			"method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
		return &apiError{code: http.StatusUnauthorized, msg: "No token configured: writes are accepted from loopback only",
			details: "writes from beyond loopback need Authorization: Bearer <token>, and this server has no token to check it against"}
	}
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if strings.EqualFold(scheme, "Bearer") && h.auth.check(tok) {
		return nil
	}
	h.warn.Warn("opentsdb api: write without the right bearer token refused",
		"method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
	return &apiError{code: http.StatusUnauthorized, msg: "Missing or wrong bearer token",
		details: "writes from beyond loopback need Authorization: Bearer <token>"}
}

// fromLoopback says whether r came from a loopback address (127.0.0.0/8,
// ::1, or ::ffff:127.x.y.z). A RemoteAddr that is no IP address (a Unix
// socket's) is not loopback: unknown peers are refused, not trusted.
func fromLoopback(r *http.Request) bool { return loopbackAddr(r.RemoteAddr) }

// loopbackAddr says whether addr, a "host:port", is on a loopback address.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	return ip.Unmap().IsLoopback()
}
