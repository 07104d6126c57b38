// Package smtptest runs a real SMTP server (emersion/go-smtp) on loopback
// for tests: it keeps every message it accepts and can be told to refuse.
package smtptest

import (
	"bytes"
	"io"
	"log"
	"mime/quotedprintable"
	"net"
	netmail "net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
)

// Message is one message the server accepted.
type Message struct {
	From string
	To   []string
	User string // the authenticated user, "" without AUTH
	Msg  *netmail.Message
	Body string // decoded
}

// Server is a real SMTP server on loopback that keeps what it accepts and
// can be told to refuse.
type Server struct {
	Addr     string
	Received chan Message // every accepted message
	Refused  chan int     // the code of every refusal made by Refuse

	user, pass string // AUTH PLAIN required when user is set

	mu sync.Mutex
	// refuse, when set, is asked at each stage ("mail", "rcpt", "data")
	// and refuses with the error it returns.
	refuse func(stage string) *gosmtp.SMTPError
}

// Start serves SMTP on addr ("127.0.0.1:0" for any free port) until
// the test ends.
func Start(t testing.TB, addr string) *Server {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return Serve(t, l, "", "")
}

// Serve serves SMTP on l until the test ends; with user set, AUTH PLAIN
// with user and pass is required before MAIL.
func Serve(t testing.TB, l net.Listener, user, pass string) *Server {
	t.Helper()
	ts := &Server{
		Addr:     l.Addr().String(),
		Received: make(chan Message, 100),
		Refused:  make(chan int, 100),
		user:     user,
		pass:     pass,
	}
	srv := gosmtp.NewServer(gosmtp.BackendFunc(func(*gosmtp.Conn) (gosmtp.Session, error) {
		return &session{srv: ts}, nil
	}))
	srv.Domain = "localhost"
	srv.AllowInsecureAuth = true
	srv.ReadTimeout = 10 * time.Second
	srv.WriteTimeout = 10 * time.Second
	srv.ErrorLog = log.New(io.Discard, "", 0)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return ts
}

// Refuse makes the server answer f's error at the stages where it returns
// one.
func (ts *Server) Refuse(f func(stage string) *gosmtp.SMTPError) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.refuse = f
}

func (ts *Server) check(stage string) error {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.refuse == nil {
		return nil
	}
	if e := ts.refuse(stage); e != nil {
		ts.Refused <- e.Code
		return e
	}
	return nil
}

// Next waits up to 15 seconds for the next accepted message.
func (ts *Server) Next(t testing.TB) Message {
	t.Helper()
	select {
	case r := <-ts.Received:
		return r
	case <-time.After(15 * time.Second):
		t.Fatal("no message arrived")
		return Message{}
	}
}

type session struct {
	srv  *Server
	user string
	from string
	to   []string
}

var _ gosmtp.AuthSession = (*session)(nil)

func (s *session) AuthMechanisms() []string {
	if s.srv.user == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (s *session) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != s.srv.user || pass != s.srv.pass {
			return gosmtp.ErrAuthFailed
		}
		s.user = user
		return nil
	}), nil
}

func (s *session) Mail(from string, _ *gosmtp.MailOptions) error {
	if s.srv.user != "" && s.user == "" {
		return gosmtp.ErrAuthRequired
	}
	if err := s.srv.check("mail"); err != nil {
		return err
	}
	s.from = from
	return nil
}

func (s *session) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	if err := s.srv.check("rcpt"); err != nil {
		return err
	}
	s.to = append(s.to, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if err := s.srv.check("data"); err != nil {
		return err
	}
	msg, err := netmail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return err
	}
	var body io.Reader = msg.Body
	if strings.EqualFold(msg.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
		body = quotedprintable.NewReader(body)
	}
	text, err := io.ReadAll(body)
	if err != nil {
		return err
	}
	s.srv.Received <- Message{From: s.from, To: s.to, User: s.user, Msg: msg, Body: strings.ReplaceAll(string(text), "\r\n", "\n")}
	return nil
}

func (s *session) Reset() { s.from, s.to = "", nil }

func (s *session) Logout() error { return nil }
