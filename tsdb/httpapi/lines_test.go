package httpapi

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/tsdb/embedded"
)

// splitServer is the API on one loopback port for both protocols, as the
// daemon serves it: an http.Server on a Listener.
type splitServer struct {
	*server
	addr string
	l    *Listener
	h    *Handler
}

func startSplit(t testing.TB, opts Options) *splitServer {
	t.Helper()
	st, err := embedded.Open(t.TempDir(), embedded.Options{OutOfOrderWindow: 365 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if opts.Now == nil {
		opts.Now = func() time.Time { return now }
	}
	h := NewHandler(st, opts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := h.Listener(ln)
	srv := &http.Server{Handler: h}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		// A test that closed the Listener itself made Serve fail first.
		if err := <-served; !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			t.Errorf("serve: %v", err)
		}
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	addr := ln.Addr().String()
	return &splitServer{server: &server{url: "http://" + addr, store: st}, addr: addr, l: l, h: h}
}

// lineClient is a line protocol connection.
type lineClient struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

func dialLines(t testing.TB, addr string) *lineClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &lineClient{t: t, conn: c, r: bufio.NewReader(c)}
}

func (c *lineClient) send(lines ...string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, strings.Join(lines, "\n")+"\n"); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// readLine reads one answer line, failing after a deadline.
func (c *lineClient) readLine() (string, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	s, err := c.r.ReadString('\n')
	return strings.TrimSuffix(s, "\n"), err
}

// sync sends version and returns the lines answered before its answer:
// the error lines of everything sent before, all of it handled by then.
func (c *lineClient) sync() []string {
	c.t.Helper()
	c.send("version")
	var got []string
	for {
		line, err := c.readLine()
		if err != nil {
			c.t.Fatalf("reading answers: %v (so far %q)", err, got)
		}
		if strings.HasPrefix(line, "dmonitor OpenTSDB API ") {
			if _, err := c.readLine(); err != nil { // the "Built on" line
				c.t.Fatal(err)
			}
			return got
		}
		got = append(got, line)
	}
}

// TestLinesAndHTTPOnOnePort: puts on a line connection are stored and
// found through /api/query on the same port, in seconds, milliseconds and
// seconds with a fraction, with "\r\n" line ends, and nothing is answered
// for them.
func TestLinesAndHTTPOnOnePort(t *testing.T) {
	s := startSplit(t, Options{})
	c := dialLines(t, s.addr)
	c.send("put sys.cpu 1356998400 1 host=a\r", "put sys.cpu 1356998400500 2 host=a", "put sys.cpu 1356998401.250 3.5 host=a  dc=x")
	if got := c.sync(); len(got) != 0 {
		t.Fatalf("answers to valid puts: %q", got)
	}
	r := s.get(t, "/api/query?start=1356998400&end=1356998402&ms=true&m=sum:sys.cpu{host=a}")
	checkJSON(t, "query", r, 200, `[{"metric":"sys.cpu","tags":{"host":"a"},"aggregateTags":["dc"],
		"dps":{"1356998400000":1,"1356998400500":2,"1356998401250":3.5}}]`)
	checkJSON(t, "version over HTTP on the line port", s.get(t, "/api/version"), 200,
		`{"version":"2.4.0","short_revision":"","full_revision":"","timestamp":"","host":"","user":"","repo":"","repo_status":"","branch":""}`)
}

// TestLineErrors: each refused put gets OpenTSDB's error line (the
// prefix says which of its classes) and the connection goes on.
func TestLineErrors(t *testing.T) {
	s := startSplit(t, Options{MaxNameBytes: 32})
	c := dialLines(t, s.addr)
	nine := "a=1 b=1 c=1 d=1 e=1 f=1 g=1 h=1 i=1"
	long := strings.Repeat("x", 33)
	for _, tc := range []struct{ line, want string }{
		{"put", "put: illegal argument: not enough arguments (need least 4, got 0)"},
		{"put m 1356998400 1", "put: illegal argument: not enough arguments (need least 4, got 3)"},
		{"put m x 1 host=a", `put: invalid value: For input string: "x"`},
		{"put m -5 1 host=a", "put: illegal argument: invalid timestamp: -5"},
		{"put m 0 1 host=a", "put: illegal argument: invalid timestamp: 0"},
		{"put m 99999999999999 1 host=a", "put: illegal argument: bad timestamp=99999999999999: past year 2286 in milliseconds"},
		{"put m 1356998400 abc host=a", `put: invalid value: For input string: "abc"`},
		{"put m 1356998400 NaN host=a", "put: illegal argument: value is NaN or Infinite: NaN for metric=m timestamp=1356998400"},
		{"put m 1356998400 1 host", "put: illegal argument: invalid tag: host"},
		{"put m 1356998400 1 host=a host=b", "put: illegal argument: duplicate tag: host=b, tags={host=a}"},
		{"put m 1356998400 1 ", "put: illegal argument: Need at least one tag (metric=m, tags={})"},
		{"put m$ 1356998400 1 host=a", `put: illegal argument: Invalid metric name ("m$"): illegal character: '$'`},
		{"put m 1356998400 1 ho@st=a", `put: illegal argument: Invalid tag name ("ho@st"): illegal character: '@'`},
		{"put m 1356998400 1 " + nine, "put: illegal argument: tags per point limit 8 exceeded: 9 tags on m{a=1,b=1,c=1,d=1,e=1,f=1,g=1,h=1,...1 more}"},
		{"put " + long + " 1356998400 1 host=a", "put: illegal argument: name length limit 32 bytes exceeded: metric of 33 bytes, " + long},
		{"get m", "unknown command: get.  Try `help'."},
	} {
		c.send(tc.line)
		if got := c.sync(); len(got) != 1 || got[0] != tc.want {
			t.Errorf("%q: answered %q, want %q", tc.line, got, tc.want)
		}
	}
	// A line past the longest a put within the limits can be: refused,
	// and the next line read as one.
	c.send("put m 1356998400 1 host="+strings.Repeat("y", 100_000), "put m 1356998400 7 host=ok")
	if got := c.sync(); len(got) != 1 || !strings.HasPrefix(got[0], "put: illegal argument: line length limit ") {
		t.Errorf("a line of 100 kB: answered %q", got)
	}
	checkJSON(t, "the points of the session", s.get(t, "/api/query?start=1356998400&m=sum:m{host=*}"), 200,
		`[{"metric":"m","tags":{"host":"ok"},"aggregateTags":[],"dps":{"1356998400":7}}]`)

	c.send("help")
	if got, _ := c.readLine(); got != "available commands: put version stats dropcaches auth help exit" {
		t.Errorf("help: %q", got)
	}
	c.send("dropcaches")
	if got, _ := c.readLine(); got != "Caches dropped." {
		t.Errorf("dropcaches: %q", got)
	}
	c.send("stats")
	if got, _ := c.readLine(); !strings.HasPrefix(got, "tsd.connectionmgr.connections ") || !strings.Contains(got, " type=open") {
		t.Errorf("stats: first line %q", got)
	}
	c.send("exit")
	for {
		if _, err := c.readLine(); err != nil {
			if err != io.EOF {
				t.Errorf("after exit: %v, want the connection closed", err)
			}
			break
		}
	}
}

// TestLineAuth: the write rule of /api/put on the line protocol. A
// connection that is not from loopback (a pipe has no address) may put
// only after "auth <token>", or with AllowUnauthenticatedWrites; reads
// need nothing.
func TestLineAuth(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    Options
		lines   []string
		answers []string
		stored  bool
	}{
		{"no auth: refused and closed", Options{Token: "s3cret"}, []string{"version", "put m 1356998400 1 host=a"},
			[]string{"*", "*", `put: unauthorized: writes from beyond loopback need "auth <token>" first`}, false},
		{"the token", Options{Token: "s3cret"}, []string{"auth s3cret", "put m 1356998400 1 host=a", "exit"},
			[]string{"auth: ok"}, true},
		{"a wrong token: closed", Options{Token: "s3cret"}, []string{"auth guess", "put m 1356998400 1 host=a"},
			[]string{"auth: wrong token"}, false},
		{"no token configured", Options{}, []string{"auth s3cret", "put m 1356998400 1 host=a"},
			[]string{"auth: no token is configured: writes are accepted from loopback only"}, false},
		{"no token, no auth", Options{}, []string{"put m 1356998400 1 host=a"},
			[]string{"put: unauthorized: writes from beyond loopback are refused: this server has no token (or set tsdb.insecure)"}, false},
		{"insecure", Options{AllowUnauthenticatedWrites: true}, []string{"put m 1356998400 1 host=a", "exit"}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, "", Options{})
			tc.opts.Now = func() time.Time { return now }
			h := NewHandler(s.store, tc.opts)
			client, srv := net.Pipe()
			done := make(chan struct{})
			go func() {
				defer close(done)
				h.ServeConn(t.Context(), srv)
			}()
			// The server writes only when it has read: a pipe has no
			// buffer, so the client writes and reads from two goroutines.
			go func() { _, _ = io.WriteString(client, strings.Join(tc.lines, "\n")+"\n") }()
			var got []string
			r := bufio.NewReader(client)
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					break // the server closed the connection
				}
				got = append(got, strings.TrimSuffix(line, "\n"))
			}
			client.Close()
			<-done
			if len(got) != len(tc.answers) {
				t.Fatalf("answers %q, want %q", got, tc.answers)
			}
			for i, want := range tc.answers {
				if want != "*" && got[i] != want {
					t.Errorf("answer %d: %q, want %q", i, got[i], want)
				}
			}
			r2 := s.get(t, "/api/query?start=1356998400&m=sum:m")
			if stored := string(r2.body) != "[]"; stored != tc.stored {
				t.Errorf("point stored: %v, want %v (%s)", stored, tc.stored, r2.body)
			}
		})
	}
}

// TestLineNewSeriesLimit: the new-series limits of /api/put apply to a
// line connection's puts, a batch at a time.
func TestLineNewSeriesLimit(t *testing.T) {
	s := startSplit(t, Options{MaxNewSeriesPerRequest: 2})
	c := dialLines(t, s.addr)
	// Written at once, read as one batch: three new series are refused.
	var lines []string
	for i := range 3 {
		lines = append(lines, fmt.Sprintf("put m 1356998400 1 host=h%d", i))
	}
	c.send(lines...)
	got := c.sync()
	if len(got) != 3 || !strings.HasPrefix(got[0], "put: illegal argument: new series limit per request 2 exceeded: 3 new series") {
		t.Errorf("answers %q, want three refusals for the limit", got)
	}
	if r := s.get(t, "/api/query?start=1356998400&m=sum:m"); string(r.body) != "[]" {
		t.Errorf("stored past the limit: %s", r.body)
	}
}

// TestListenerClose: closing the listener ends line connections, even
// idle ones and one that never sent a byte, without waiting for their
// timeouts; the points a connection sent are stored.
func TestListenerClose(t *testing.T) {
	s := startSplit(t, Options{})
	c := dialLines(t, s.addr)
	c.send("put m 1356998400 1 host=a")
	if got := c.sync(); len(got) != 0 {
		t.Fatalf("answers %q", got)
	}
	silent, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	if err := s.l.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if _, err := c.readLine(); err != io.EOF {
		t.Errorf("line connection after Close: %v, want EOF", err)
	}
	_ = silent.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("silent connection after Close: %v, want EOF", err)
	}
	if _, err := s.l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v", err)
	}
	pts, err := s.store.Last(t.Context(), "m", nil)
	if err != nil || len(pts) != 1 {
		t.Errorf("stored: %v, %v", pts, err)
	}
}
