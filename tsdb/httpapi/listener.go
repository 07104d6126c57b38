package httpapi

import (
	"bufio"
	"context"
	"errors"
	"net"
	"sync"
	"syscall"
	"time"
)

// sniffTimeout is how long a new connection has to send its first byte.
// HTTP clients and collectors send at once; one that sends nothing is
// closed, as http.Server closes one that sends no header in time.
const sniffTimeout = 10 * time.Second

// Listener serves OpenTSDB's two protocols on one port, as OpenTSDB does:
// it accepts the connections of a listener and looks at the first byte
// each sends. An upper-case ASCII letter starts every HTTP method (GET,
// POST, ...) and no command of the line protocol (put, version, ...), so
// such a connection is HTTP and handed to whoever calls Accept (an
// http.Server); any other is served with the line protocol (ServeConn) by
// the Listener itself.
//
// Close stops accepting, ends the line connections (each stores the
// points it has read) and waits for them; the HTTP connections are the
// server's.
type Listener struct {
	ln     net.Listener
	h      *handler
	conns  chan net.Conn // the HTTP connections, for Accept
	done   chan struct{} // closed by Close
	failed chan struct{} // closed when the listener fails; err says why
	err    error
	ctx    context.Context // ends the line connections
	cancel context.CancelFunc
	wg     sync.WaitGroup // the accept loop and every connection's goroutine

	mu       sync.Mutex
	closed   bool
	sniffing map[net.Conn]struct{} // connections whose first byte is awaited
	once     sync.Once
	closeErr error
}

var _ net.Listener = (*Listener)(nil)

// Listener returns a Listener splitting ln's connections between HTTP
// (Accept) and the line protocol, which it serves. It owns ln: Close
// closes it.
func (h *Handler) Listener(ln net.Listener) *Listener {
	ctx, cancel := context.WithCancel(context.Background())
	l := &Listener{ln: ln, h: h.h, conns: make(chan net.Conn), done: make(chan struct{}), failed: make(chan struct{}),
		ctx: ctx, cancel: cancel, sniffing: map[net.Conn]struct{}{}}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

// Accept returns the next HTTP connection; net.ErrClosed after Close, or
// the error the listener failed with.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	case <-l.failed:
		return nil, l.err
	}
}

// Addr returns the listener's address.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Close stops accepting, closes the line connections once the points they
// read are stored, and waits for them. It returns the error of closing
// the underlying listener; later calls return the same.
func (l *Listener) Close() error {
	l.once.Do(func() {
		l.mu.Lock()
		l.closed = true
		for c := range l.sniffing {
			_ = c.SetReadDeadline(time.Now()) // wakes the wait for a first byte
		}
		l.mu.Unlock()
		close(l.done)
		l.closeErr = l.ln.Close()
		l.cancel()
		l.wg.Wait()
	})
	return l.closeErr
}

// acceptLoop accepts until the listener is closed, backing off on
// temporary errors (too many open files) as http.Server does.
func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	var delay time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			select {
			case <-l.done:
				return
			default:
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				l.h.warn.Warn("opentsdb api: accept failed, retrying", "addr", l.ln.Addr().String(), "in", delay, "err", err)
				select {
				case <-time.After(delay):
					continue
				case <-l.done:
					return
				}
			}
			l.err = err
			close(l.failed)
			return
		}
		delay = 0
		l.wg.Add(1)
		go l.route(c)
	}
}

// route reads c's first byte and hands c to HTTP or serves it with the
// line protocol.
func (l *Listener) route(c net.Conn) {
	defer l.wg.Done()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		c.Close()
		return
	}
	l.sniffing[c] = struct{}{}
	l.mu.Unlock()
	_ = c.SetReadDeadline(time.Now().Add(sniffTimeout))
	br := bufio.NewReaderSize(c, l.h.maxLine+2)
	first, err := br.Peek(1)
	l.mu.Lock()
	delete(l.sniffing, c)
	l.mu.Unlock()
	if err != nil {
		c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	pc := &peekedConn{Conn: c, r: br}
	if 'A' <= first[0] && first[0] <= 'Z' {
		select {
		case l.conns <- pc:
		case <-l.done:
			c.Close()
		}
		return
	}
	l.h.serveConn(l.ctx, pc)
}

// peekedConn is a connection whose first bytes were read into r.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
