// Package httpserve runs an HTTP server whose address is bound at start-up,
// so a port in use or a bad address is refused before anything else runs,
// and which shuts down gracefully when its context ends. ListenTLS serves
// HTTPS from a certificate and key on disk, picking up a renewed pair
// without a restart; ClientTLS is the other end, verifying such a server.
package httpserve

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Server is an HTTP server bound to its address.
type Server struct {
	name string
	ln   net.Listener
	srv  *http.Server // srv.TLSConfig is set when it serves HTTPS
}

// Listen binds addr for handler. name says what the server is in errors
// and logs ("control", "tsdb api").
func Listen(name, addr string, handler http.Handler, log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: listen on %s: %w", name, addr, err)
	}
	return NewServer(name, ln, handler, log), nil
}

// NewServer is Listen for a listener already bound: one that hands the
// server only some of its connections, say. The server closes ln when it
// shuts down.
func NewServer(name string, ln net.Listener, handler http.Handler, log *slog.Logger) *Server {
	return &Server{name: name, ln: ln, srv: &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}}
}

// ListenTLS is Listen for HTTPS: it binds addr for handler and serves it
// with the certificate (chain) in certFile and the private key in keyFile,
// both PEM, at TLS 1.2 or later. The pair is read now, so a missing or
// broken file is refused at start-up; later, a handshake that finds either
// file's modification time changed reads the pair again, so a renewed
// certificate is served without a restart. A pair that then fails to load
// is logged and the previous one kept. Errors name the file at fault.
func ListenTLS(name, addr, certFile, keyFile string, handler http.Handler, log *slog.Logger) (*Server, error) {
	kp, err := loadKeyPair(certFile, keyFile, log)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	s, err := Listen(name, addr, handler, log)
	if err != nil {
		return nil, err
	}
	s.srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: kp.getCertificate}
	return s, nil
}

// Addr returns the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve serves until ctx is done, then shuts down, giving requests in
// flight five seconds to finish.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() {
		if s.srv.TLSConfig != nil {
			// The certificate comes from TLSConfig.GetCertificate; ServeTLS
			// (rather than a tls.Listener) also offers HTTP/2.
			errc <- s.srv.ServeTLS(s.ln, "", "")
			return
		}
		errc <- s.srv.Serve(s.ln)
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("%s: serve on %s: %w", s.name, s.ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}
