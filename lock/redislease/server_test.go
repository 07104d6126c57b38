package redislease

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisServer is a real redis-server on a free loopback port, without
// persistence: a restart loses every key, as a restart of a Redis without
// --save or --appendonly does.
type redisServer struct {
	t     *testing.T
	dir   string
	port  int
	extra []string
	cmd   *exec.Cmd
	exit  chan struct{} // closed when cmd has been waited for
}

// startRedis starts redis-server with extra arguments (e.g. --requirepass)
// and stops it when the test ends.
func startRedis(t *testing.T, extra ...string) *redisServer {
	t.Helper()
	s := &redisServer{t: t, dir: t.TempDir(), extra: extra}
	s.port = freePort(t)
	s.start()
	t.Cleanup(s.kill)
	return s
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Addr is the server's host:port.
func (s *redisServer) Addr() string { return fmt.Sprintf("127.0.0.1:%d", s.port) }

// URL is the server's redis:// URL with db 0.
func (s *redisServer) URL() string { return "redis://" + s.Addr() + "/0" }

// start runs redis-server on s.port and waits until it answers PING.
func (s *redisServer) start() {
	s.t.Helper()
	args := append([]string{
		"--port", fmt.Sprint(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir,
	}, s.extra...)
	log, err := os.OpenFile(filepath.Join(s.dir, "redis.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	defer log.Close()
	s.cmd = exec.Command("redis-server", args...)
	s.cmd.Stdout, s.cmd.Stderr = log, log
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start redis-server: %v", err)
	}
	s.exit = make(chan struct{})
	go func(cmd *exec.Cmd, exit chan struct{}) { _ = cmd.Wait(); close(exit) }(s.cmd, s.exit)
	waitFor(s.t, 10*time.Second, "redis-server answers PING on "+s.Addr(), func() bool {
		select {
		case <-s.exit:
			b, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			s.t.Fatalf("redis-server exited:\n%s", b)
		default:
		}
		return ping(s.Addr())
	})
}

// ping reports whether a Redis server answers on addr; a NOAUTH error is an
// answer too.
func ping(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && (strings.HasPrefix(line, "+PONG") || strings.HasPrefix(line, "-NOAUTH"))
}

// kill ends the server with SIGKILL and waits for it: no shutdown, no
// goodbye to clients.
func (s *redisServer) kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGCONT) // in case a test stopped it
	_ = s.cmd.Process.Kill()
	<-s.exit
	s.cmd = nil
}

// restart kills the server and starts a new one on the same port, with no
// data: what a Redis without persistence looks like after a crash.
func (s *redisServer) restart() {
	s.t.Helper()
	s.kill()
	s.start()
}

// signal sends sig to the server (SIGSTOP: it stops answering, connections
// stay open).
func (s *redisServer) signal(sig syscall.Signal) {
	s.t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatal(err)
	}
}

// newClient returns a client of s, closed when the test ends.
func newClient(t *testing.T, s *redisServer) redis.UniversalClient {
	t.Helper()
	c, err := NewClient(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// waitFor polls cond until it holds, failing the test after limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testCtx is a context that ends with the test, or after a minute at most.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}
