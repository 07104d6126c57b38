package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dmonitor/dmonitor/tsdb"
)

// The line protocol's timeouts and batching.
const (
	// LineIdleTimeout closes a line connection that sent nothing for that
	// long. Collectors send every interval (collectd's default 10 s,
	// tcollector's 15 s) and reconnect when cut, so only connections
	// abandoned without a close are ended by it.
	LineIdleTimeout = 5 * time.Minute
	// lineWriteTimeout bounds writing answers to a client: collectd never
	// reads them, and a client that does not read would otherwise block
	// the connection's goroutine once the socket's buffer is full.
	lineWriteTimeout = 10 * time.Second
	// lineBatch is the most points stored in one append: a collector's
	// burst is stored in a few appends, not one per line.
	lineBatch = 1000
	// minLineBytes is OpenTSDB's own line length limit.
	minLineBytes = 1024
)

// limitLineBytes is the dmonitor_limit_hits_total label of lines refused
// for their length.
const limitLineBytes = "line_bytes"

// maxLineBytes is the longest line the line protocol reads: room for a
// put with the longest metric and the most tags of the longest names the
// limits let through, so that a line is refused for the limit it passes,
// by name, rather than for its length. OpenTSDB's own limit is 1024.
func maxLineBytes(l limits) int {
	name, tags := l.maxNameBytes, l.maxTags
	if name <= 0 {
		name = 4096
	}
	if tags <= 0 {
		tags = 64
	}
	n := 64 + (2*tags+1)*(name+2)
	return min(max(n, minLineBytes), 1<<20)
}

// lineCommands are the commands the line protocol serves, as help lists
// them.
var lineCommands = []string{"put", "version", "stats", "dropcaches", "auth", "help", "exit"}

// ServeConn serves OpenTSDB's telnet-style line protocol on conn, one
// command a line ("\n" or "\r\n"), until the client sends exit or closes
// the connection, it idles for LineIdleTimeout, a write to it fails, or ctx
// ends; then it closes conn. When ctx ends it stops reading and stores the
// points already read before returning.
//
// Commands: put <metric> <timestamp> <value> <tagk=tagv>... (OpenTSDB's,
// with the checks and limits of /api/put; nothing is answered on success,
// a refused point gets OpenTSDB's "put: ..." error line), version, stats,
// dropcaches, help, exit, and auth <token>. Writes follow /api/put's rule:
// a connection from loopback may put, as may any with
// Options.AllowUnauthenticatedWrites; any other must first send
// "auth <token>" with Options.Token. A put before that is answered with an
// error line and the connection closed.
func (h *Handler) ServeConn(ctx context.Context, conn net.Conn) {
	h.h.serveConn(ctx, conn)
}

// lineSession is one connection of the line protocol.
type lineSession struct {
	h        *handler
	conn     net.Conn
	r        *bufio.Reader
	w        *bufio.Writer
	req      *http.Request // what the limits and the log know of the connection
	mayWrite bool
	batch    []tsdb.Point
	stopped  bool // ctx ended: read nothing more
}

func (h *handler) serveConn(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	h.counters.connsOpen.Add(1)
	h.counters.connsTotal.Add(1)
	defer h.counters.connsOpen.Add(-1)
	remote := conn.RemoteAddr().String()
	// The limits and the log take a request: this one says where the
	// lines came from. Appends run under a context that outlives ctx, so
	// the points read before a shutdown are still stored.
	req := (&http.Request{Method: "LINE", URL: &url.URL{Path: "put"}, RemoteAddr: remote, Header: http.Header{}}).
		WithContext(context.WithoutCancel(ctx))
	s := &lineSession{h: h, conn: conn, w: bufio.NewWriter(conn), req: req, mayWrite: h.auth.open || loopbackAddr(remote)}
	if pc, ok := conn.(*peekedConn); ok && pc.r.Size() >= h.maxLine+2 {
		s.r = pc.r // the Listener's, holding the first byte
	} else {
		s.r = bufio.NewReaderSize(conn, h.maxLine+2)
	}
	stop := context.AfterFunc(ctx, func() {
		// Wakes a blocked read; the session sees ctx ended and stops.
		_ = conn.SetReadDeadline(time.Now())
	})
	defer stop()
	for {
		if ctx.Err() != nil {
			s.stopped = true
		}
		if s.stopped {
			s.flush()
			return
		}
		line, err := s.readLine()
		if err != nil {
			s.flush()
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && ctx.Err() == nil && !isTimeout(err) {
				h.log.Debug("opentsdb line protocol: read", "remote", remote, "err", err)
			}
			return
		}
		if line != nil {
			if !s.command(string(line)) {
				s.flush()
				return
			}
		}
		// Store and answer before waiting for more: what has arrived in
		// full is handled, so a client that pauses sees its points stored.
		if s.mustFlush() && !s.flush() {
			return
		}
	}
}

// readLine returns the next line without its end, nil for a line past
// maxLine, which is discarded (with an error line) up to its end.
func (s *lineSession) readLine() ([]byte, error) {
	_ = s.conn.SetReadDeadline(time.Now().Add(LineIdleTimeout))
	line, err := s.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		n := len(line)
		for errors.Is(err, bufio.ErrBufferFull) {
			line, err = s.r.ReadSlice('\n')
			n += len(line)
		}
		msg := fmt.Sprintf("line length limit %d bytes exceeded: a line of %d bytes or more", s.h.maxLine, n)
		s.h.limitHit(s.req, limitLineBytes, 1, msg)
		s.answer("put: illegal argument: " + msg)
		if err != nil {
			return nil, err
		}
		return nil, nil
	}
	if err != nil {
		if errors.Is(err, io.EOF) && len(line) > 0 {
			// The last line, without its end: OpenTSDB drops it too,
			// since it is never framed; so do we, rather than store half
			// a point.
			return nil, io.EOF
		}
		return nil, err
	}
	line = bytes.TrimSuffix(line[:len(line)-1], []byte("\r"))
	return line, nil
}

// mustFlush says whether to store and answer now: the batch is full, or
// no whole line is waiting (the next read would wait for the client).
func (s *lineSession) mustFlush() bool {
	if len(s.batch) >= lineBatch {
		return true
	}
	buffered, _ := s.r.Peek(s.r.Buffered())
	return bytes.IndexByte(buffered, '\n') < 0
}

// command runs one line; false ends the connection.
func (s *lineSession) command(line string) bool {
	words := strings.Split(line, " ") // OpenTSDB splits on each space
	if len(words) == 1 && words[0] == "" {
		return true
	}
	h := s.h
	h.counters.lines.Add(1)
	if words[0] != "put" {
		// Answers come in order: the points before are stored first.
		if !s.flush() {
			return false
		}
	}
	switch words[0] {
	case "put":
		return s.put(words)
	case "version":
		v := h.version
		s.answer(fmt.Sprintf("dmonitor OpenTSDB API %s built at revision %s (%s)", v.Version, orNone(v.ShortRevision), orNone(v.RepoStatus)))
		s.answer(fmt.Sprintf("Built on %s by %s@%s:%s", orNone(v.Timestamp), orNone(v.User), orNone(v.Host), orNone(v.Repo)))
	case "stats":
		for _, st := range h.stats() {
			var b strings.Builder
			fmt.Fprintf(&b, "%s %d %s", st.Metric, st.Timestamp, st.Value)
			for _, k := range slices.Sorted(maps.Keys(st.Tags)) {
				fmt.Fprintf(&b, " %s=%s", k, st.Tags[k])
			}
			s.answer(b.String())
		}
	case "dropcaches":
		s.answer("Caches dropped.") // nothing to drop: see serveDropCaches
	case "help":
		s.answer("available commands: " + strings.Join(lineCommands, " "))
	case "exit":
		return false
	case "auth":
		return s.authenticate(words[1:])
	default:
		h.warn.Warn("opentsdb line protocol: unknown command", "remote", s.req.RemoteAddr, "command", clip(words[0]))
		s.answer(fmt.Sprintf("unknown command: %s.  Try `help'.", clip(words[0])))
	}
	return true
}

func orNone(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// authenticate runs "auth <token>"; a wrong or missing token ends the
// connection, as a wrong token is no mistake worth a second try.
func (s *lineSession) authenticate(args []string) bool {
	h := s.h
	switch {
	case len(args) != 1 || args[0] == "":
		s.answer("auth: illegal argument: want auth <token>")
		return false
	case h.auth.tokenSum == nil:
		h.warn.Warn("opentsdb line protocol: auth refused: no token is configured", "remote", s.req.RemoteAddr)
		s.answer("auth: no token is configured: writes are accepted from loopback only")
		return false
	case !h.auth.check(args[0]):
		h.warn.Warn("opentsdb line protocol: auth with a wrong token refused", "remote", s.req.RemoteAddr)
		s.answer("auth: wrong token")
		return false
	}
	s.mayWrite = true
	s.answer("auth: ok")
	return true
}

// put validates one put and adds its point to the batch, or answers its
// error line.
func (s *lineSession) put(words []string) bool {
	h := s.h
	h.counters.putPoints.Add(1)
	if !s.mayWrite {
		if h.auth.tokenSum == nil {
			h.warn.Warn("opentsdb line protocol: put from beyond loopback refused: no token is configured", "remote", s.req.RemoteAddr)
			s.answer("put: unauthorized: writes from beyond loopback are refused: this server has no token (or set tsdb.insecure)")
		} else {
			h.warn.Warn("opentsdb line protocol: put from beyond loopback without auth refused", "remote", s.req.RemoteAddr)
			s.answer("put: unauthorized: writes from beyond loopback need \"auth <token>\" first")
		}
		h.counters.illegalArgs.Add(1)
		return false
	}
	p, errLine, limit := h.limits.parsePutLine(words)
	if errLine != "" {
		if strings.HasPrefix(errLine, "put: invalid value: ") {
			h.counters.invalidValues.Add(1)
		} else {
			h.counters.illegalArgs.Add(1)
		}
		if limit != "" {
			h.limitHit(s.req, limit, 1, errLine)
		}
		s.answer(errLine)
		return true
	}
	s.batch = append(s.batch, p)
	return true
}

// flush stores the batch, answers a line for each point refused, and
// sends the answers; false when the client cannot be written to.
func (s *lineSession) flush() bool {
	if len(s.batch) > 0 {
		s.store()
	}
	_ = s.conn.SetWriteDeadline(time.Now().Add(lineWriteTimeout))
	if err := s.w.Flush(); err != nil {
		s.h.log.Debug("opentsdb line protocol: write", "remote", s.req.RemoteAddr, "err", err)
		return false
	}
	return true
}

// store appends the batch as /api/put appends a request's points: the
// new-series limits refuse it whole, the store's refusals refuse only
// their points.
func (s *lineSession) store() {
	h, pts := s.h, s.batch
	s.batch = nil
	refuseAll := func(prefix, why string) {
		h.counters.illegalArgs.Add(int64(len(pts)))
		for range pts {
			s.answer(prefix + why)
		}
	}
	if err := h.checkNewSeries(s.req, pts); err != nil {
		var ae *apiError
		if errors.As(err, &ae) {
			refuseAll("put: illegal argument: ", ae.msg)
		} else {
			refuseAll("put: illegal argument: ", err.Error())
		}
		return
	}
	refused, err := h.appendEach(s.req, pts)
	if err != nil {
		h.log.Error("opentsdb line protocol: store failure", "remote", s.req.RemoteAddr, "points", len(pts), "err", err)
		refuseAll("put: storage error: ", err.Error())
		return
	}
	h.counters.stored.Add(int64(len(pts) - len(refused)))
	h.counters.illegalArgs.Add(int64(len(refused)))
	for _, f := range refused {
		s.answer("put: illegal argument: " + f.reason)
	}
}

// answer queues one line to the client.
func (s *lineSession) answer(line string) {
	_, _ = s.w.WriteString(line)
	_ = s.w.WriteByte('\n')
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// parsePutLine validates a put line's words (words[0] is "put") as
// OpenTSDB's PutDataPointRpc and TSDB.addPoint do, and against the
// per-point limits of /api/put. A refused point gets OpenTSDB's error
// line, "put: invalid value: ..." for a timestamp or value that is no
// number and "put: illegal argument: ..." for anything else, and the
// limit it passed, if that is why.
func (l *limits) parsePutLine(words []string) (p tsdb.Point, errLine, limit string) {
	const invalid, illegal = "put: invalid value: ", "put: illegal argument: "
	if len(words) < 5 {
		return p, fmt.Sprintf("%snot enough arguments (need least 4, got %d)", illegal, len(words)-1), ""
	}
	metric := words[1]
	if metric == "" {
		return p, illegal + "empty metric name", ""
	}
	ts, errLine := parseLineTime(words[2])
	if errLine != "" {
		return p, errLine, ""
	}
	if words[3] == "" {
		return p, illegal + "empty value", ""
	}
	v, err := strconv.ParseFloat(words[3], 64)
	if err != nil {
		return p, fmt.Sprintf("%sFor input string: %q", invalid, clip(words[3])), ""
	}
	tags := make(map[string]string, len(words)-4)
	for _, w := range words[4:] {
		if w == "" {
			continue
		}
		k, tv, ok := strings.Cut(w, "=")
		if !ok || k == "" || tv == "" {
			return p, illegal + "invalid tag: " + clip(w), ""
		}
		if old, dup := tags[k]; dup && old != tv {
			return p, fmt.Sprintf("%sduplicate tag: %s, tags=%s", illegal, clip(w), seriesString("", tags)), ""
		}
		tags[k] = tv
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return p, fmt.Sprintf("%svalue is NaN or Infinite: %s for metric=%s timestamp=%s", illegal, words[3], clip(metric), words[2]), ""
	}
	if len(tags) == 0 {
		return p, fmt.Sprintf("%sNeed at least one tag (metric=%s, tags={})", illegal, clip(metric)), ""
	}
	if reason, limit := l.checkPointLimits(metric, tags); reason != "" {
		return p, illegal + reason, limit
	}
	if r := checkName("metric name", metric); r != "" {
		return p, illegal + r, ""
	}
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		if r := checkName("tag name", k); r != "" {
			return p, illegal + r, ""
		}
		if r := checkName("tag value", tags[k]); r != "" {
			return p, illegal + r, ""
		}
	}
	return tsdb.Point{Metric: metric, Tags: tags, Time: ts, Value: v}, "", ""
}

// parseLineTime reads a put line's timestamp: Unix seconds, milliseconds
// when it needs more than 32 bits (OpenTSDB's rule), or seconds with a
// fraction ("1700000000.250"), kept to the millisecond. OpenTSDB drops the
// period, which agrees for the three-digit fractions it documents.
func parseLineTime(s string) (time.Time, string) {
	const invalid, illegal = "put: invalid value: ", "put: illegal argument: "
	sec, frac, hasFrac := strings.Cut(s, ".")
	if !isDigits(sec) || hasFrac && !isDigits(frac) {
		if strings.HasPrefix(s, "-") && isDigits(s[1:]) {
			return time.Time{}, illegal + "invalid timestamp: " + s
		}
		return time.Time{}, fmt.Sprintf("%sFor input string: %q", invalid, clip(s))
	}
	n, err := strconv.ParseInt(sec, 10, 64)
	if err != nil || n > 9999999999999 {
		return time.Time{}, fmt.Sprintf("%sbad timestamp=%s: past year 2286 in milliseconds", illegal, clip(s))
	}
	if hasFrac {
		if n > math.MaxUint32 {
			return time.Time{}, fmt.Sprintf("%sbad timestamp=%s: a fraction of a millisecond timestamp", illegal, clip(s))
		}
		ms := (frac + "000")[:3]
		m, _ := strconv.ParseInt(ms, 10, 64)
		n = n*1000 + m
		if n <= 0 {
			return time.Time{}, illegal + "invalid timestamp: " + s
		}
		return time.UnixMilli(n).UTC(), ""
	}
	if n <= 0 {
		return time.Time{}, illegal + "invalid timestamp: " + s
	}
	if n > math.MaxUint32 {
		return time.UnixMilli(n).UTC(), ""
	}
	return time.Unix(n, 0).UTC(), ""
}
