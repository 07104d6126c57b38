// Package sentineltest runs, for a test, a real Redis master with one
// replica (internal/redistest servers) and one to three real Sentinels
// (Debian's redis-sentinel) that monitor them, all on loopback ports, and
// fails the master over as an operator does (SENTINEL FAILOVER) or as a
// crash does (SIGKILL). Every wait polls the servers' and the sentinels'
// own account of their state.
package sentineltest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dmonitor/dmonitor/internal/await"
	"github.com/dmonitor/dmonitor/internal/loopback"
	"github.com/dmonitor/dmonitor/internal/redistest"
)

// DefaultName is the master's name when Options.Name is empty.
const DefaultName = "mymaster"

// The sentinels' timing: a master that does not answer for downAfter is
// down, and a failover that has not finished within failoverTimeout is
// abandoned (and tried again after twice that). Both are small so that a
// failover completes in a second or two; loopback answers in microseconds,
// so downAfter is still far above any honest reply time.
const (
	downAfter       = 500 * time.Millisecond
	failoverTimeout = 3 * time.Second
)

// Options configure a Set. Zero values take the defaults.
type Options struct {
	// Name is the master's name in the sentinels' configuration. Default
	// DefaultName.
	Name string
	// Sentinels is how many sentinels monitor the master, 1 to 3; the
	// quorum is a majority of them. Default 1.
	Sentinels int
	// Password, when set, is required by the master and the replica
	// (requirepass), used by each to replicate from the other (masterauth)
	// and given to the sentinels (auth-pass).
	Password string
	// SentinelPassword, when set, is required by the sentinels
	// (requirepass), of their clients and of each other (sentinel-pass).
	SentinelPassword string
}

// Set is a master, its replica and the sentinels that monitor them. The
// servers' roles change with each failover; Master asks the sentinels which
// is the master now.
type Set struct {
	t         testing.TB
	name      string
	password  string
	spassword string                       // the sentinels'
	servers   map[string]*redistest.Server // by address
	clients   map[string]*redis.Client     // a direct client of each server
	sentinels []*sentinel
}

// sentinel is one redis-sentinel process.
type sentinel struct {
	addr   string
	dir    string
	cmd    *exec.Cmd
	exit   chan struct{} // closed when cmd has been waited for
	client *redis.SentinelClient
}

// Start starts the master, its replica and the sentinels, waits until the
// replica is in sync and every sentinel knows the master, the replica and
// the other sentinels, and stops everything when the test ends.
func Start(t testing.TB, o Options) *Set {
	t.Helper()
	if _, err := exec.LookPath("redis-sentinel"); err != nil {
		t.Fatalf("redis-sentinel not installed (%v): run `make test` (scripts/test-deps), which installs Debian's redis-sentinel", err)
	}
	if o.Name == "" {
		o.Name = DefaultName
	}
	if o.Sentinels == 0 {
		o.Sentinels = 1
	}
	if o.Sentinels < 1 || o.Sentinels > 3 {
		t.Fatalf("sentineltest: %d sentinels, want 1 to 3", o.Sentinels)
	}
	s := &Set{t: t, name: o.Name, password: o.Password, spassword: o.SentinelPassword,
		servers: map[string]*redistest.Server{}, clients: map[string]*redis.Client{}}

	// A replica that cannot resume from its master's backlog takes a full
	// copy, and the master waits five seconds by default for more replicas
	// to share it. An old master made a replica never can resume: it took
	// writes of its own after the promotion, the sentinels' hellos at
	// least.
	args := []string{"--repl-diskless-sync-delay", "0"}
	if o.Password != "" {
		args = append(args, "--requirepass", o.Password, "--masterauth", o.Password)
	}
	master := redistest.Start(t, args...)
	mhost, mport, _ := net.SplitHostPort(master.Addr())
	replica := redistest.Start(t, append([]string{"--replicaof", mhost, mport}, args...)...)
	for _, srv := range []*redistest.Server{master, replica} {
		s.servers[srv.Addr()] = srv
		c := redis.NewClient(clientOptions(srv.Addr(), o.Password))
		t.Cleanup(func() { _ = c.Close() })
		s.clients[srv.Addr()] = c
	}

	quorum := o.Sentinels/2 + 1
	for range o.Sentinels {
		s.sentinels = append(s.sentinels, s.startSentinel(master.Addr(), quorum))
	}
	t.Cleanup(func() {
		if t.Failed() {
			s.logSentinels()
		}
	})
	s.awaitSettled(master.Addr(), replica.Addr())
	return s
}

// startSentinel starts one sentinel that monitors master and kills it when
// the test ends.
func (s *Set) startSentinel(master string, quorum int) *sentinel {
	s.t.Helper()
	sn := &sentinel{addr: loopback.FreeAddr(s.t), dir: s.t.TempDir(), exit: make(chan struct{})}
	host, port, _ := net.SplitHostPort(sn.addr)
	mhost, mport, _ := net.SplitHostPort(master)
	var b strings.Builder
	fmt.Fprintf(&b, "port %s\nbind %s\ndaemonize no\nlogfile \"\"\ndir %s\n", port, host, sn.dir)
	// The monitored servers are named by address only: nothing to resolve.
	b.WriteString("sentinel resolve-hostnames no\n")
	fmt.Fprintf(&b, "sentinel monitor %s %s %s %d\n", s.name, mhost, mport, quorum)
	fmt.Fprintf(&b, "sentinel down-after-milliseconds %s %d\n", s.name, downAfter.Milliseconds())
	fmt.Fprintf(&b, "sentinel failover-timeout %s %d\n", s.name, failoverTimeout.Milliseconds())
	if s.password != "" {
		fmt.Fprintf(&b, "sentinel auth-pass %s %s\n", s.name, s.password)
	}
	if s.spassword != "" {
		fmt.Fprintf(&b, "requirepass %s\nsentinel sentinel-pass %s\n", s.spassword, s.spassword)
	}
	// The sentinel rewrites its configuration file as it learns (replicas,
	// other sentinels, a new master), so the file must be its own.
	conf := filepath.Join(sn.dir, "sentinel.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o600); err != nil {
		s.t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(sn.dir, "sentinel.log"))
	if err != nil {
		s.t.Fatal(err)
	}
	defer log.Close()
	sn.cmd = exec.Command("redis-sentinel", conf)
	sn.cmd.Stdout, sn.cmd.Stderr = log, log
	if err := sn.cmd.Start(); err != nil {
		s.t.Fatalf("start redis-sentinel: %v", err)
	}
	go func() { _ = sn.cmd.Wait(); close(sn.exit) }()
	s.t.Cleanup(func() {
		_ = sn.cmd.Process.Kill()
		<-sn.exit
	})
	sn.client = redis.NewSentinelClient(clientOptions(sn.addr, s.spassword))
	s.t.Cleanup(func() { _ = sn.client.Close() })
	await.Until(s.t, "redis-sentinel on "+sn.addr+" answers PING", func() bool {
		select {
		case <-sn.exit:
			b, _ := os.ReadFile(filepath.Join(sn.dir, "sentinel.log"))
			s.t.Fatalf("redis-sentinel exited:\n%s", b)
		default:
		}
		return sn.client.Ping(context.Background()).Err() == nil
	})
	return sn
}

// clientOptions are the options of the Set's own clients of addr: no
// retries and short timeouts, so that a poll of a server a test killed or
// stopped fails at once instead of hanging.
func clientOptions(addr, password string) *redis.Options {
	return &redis.Options{Addr: addr, Password: password, MaxRetries: -1,
		DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second}
}

// Name is the master's name, as the sentinels know it.
func (s *Set) Name() string { return s.name }

// SentinelAddrs are the sentinels' host:port addresses.
func (s *Set) SentinelAddrs() []string {
	addrs := make([]string, len(s.sentinels))
	for i, sn := range s.sentinels {
		addrs[i] = sn.addr
	}
	return addrs
}

// URL is the Set's redis+sentinel:// URL in lock/redislease.NewClient's
// form: the password (if any) for the master, every sentinel, the master's
// name (so database 0) and, if the sentinels require a password, the
// sentinel_password option.
func (s *Set) URL() string { return s.URLWithDB(-1) }

// URLWithDB is URL naming database db; a negative db leaves it out.
func (s *Set) URLWithDB(db int) string {
	var user string
	if s.password != "" {
		user = url.UserPassword("", s.password).String() + "@"
	}
	u := "redis+sentinel://" + user + strings.Join(s.SentinelAddrs(), ",") + "/" + s.name
	if db >= 0 {
		u += "/" + strconv.Itoa(db)
	}
	if s.spassword != "" {
		u += "?sentinel_password=" + url.QueryEscape(s.spassword)
	}
	return u
}

// Master returns the address of the master as the first live sentinel
// reports it.
func (s *Set) Master() string {
	s.t.Helper()
	for _, sn := range s.sentinels {
		addr, err := sn.client.GetMasterAddrByName(context.Background(), s.name).Result()
		if err == nil {
			return net.JoinHostPort(addr[0], addr[1])
		}
	}
	s.t.Fatalf("no sentinel names the master %q", s.name)
	return ""
}

// Client returns a direct client of the server at addr (the master's or
// the replica's address), with the Set's password. The Set owns and closes
// it.
func (s *Set) Client(addr string) *redis.Client {
	s.t.Helper()
	c, ok := s.clients[addr]
	if !ok {
		s.t.Fatalf("sentineltest: no server at %s", addr)
	}
	return c
}

// other returns the address of the server that is not addr.
func (s *Set) other(addr string) string {
	for a := range s.servers {
		if a != addr {
			return a
		}
	}
	return ""
}

// Failover fails the master over to the replica with SENTINEL FAILOVER, as
// an operator does, and waits until every sentinel names the replica as the
// master, it says it is one, and the old master has been turned into its
// replica and is in sync. It returns the old and the new master's
// addresses.
//
// A SENTINEL FAILOVER does not tell the old master: it goes on as a master
// of its own, taking the writes of clients still connected to it, until the
// sentinels have seen it report the wrong role for four hello periods
// (about ten seconds here, with their INFO every ten seconds); only then do
// they make it a replica, which drops what it took meanwhile, and close
// its clients' connections. Failover waits through that.
func (s *Set) Failover() (oldMaster, newMaster string) {
	s.t.Helper()
	oldMaster = s.Master()
	newMaster = s.other(oldMaster)
	// A sentinel that has no fresh enough news of the replica answers
	// NOGOODSLAVE; one still busy with a previous failover, INPROG.
	s.await("a sentinel to accept SENTINEL FAILOVER "+s.name, func() string {
		if err := s.sentinels[0].client.Failover(context.Background(), s.name).Err(); err != nil {
			return err.Error()
		}
		return ""
	})
	s.await(fmt.Sprintf("%s promoted by SENTINEL FAILOVER, %s its replica in sync", newMaster, oldMaster), func() string {
		return firstOf(s.promoted(newMaster), s.inSync(newMaster, oldMaster))
	})
	return oldMaster, newMaster
}

// AwaitReplicated waits until the replica has everything the master had
// written when it was called: what a test wants to find on the master that
// a failover makes of the replica. (Replication is asynchronous: a master
// that dies, or a replica promoted by SENTINEL FAILOVER, loses what had not
// reached the replica yet.)
func (s *Set) AwaitReplicated() {
	s.t.Helper()
	master := s.Master()
	replica := s.other(master)
	info, err := s.replication(master)
	if err != nil {
		s.t.Fatal(err)
	}
	want, err := strconv.ParseInt(info["master_repl_offset"], 10, 64)
	if err != nil {
		s.t.Fatalf("master %s: master_repl_offset %q: %v", master, info["master_repl_offset"], err)
	}
	s.await(fmt.Sprintf("replica %s at the master's offset %d", replica, want), func() string {
		info, err := s.replication(replica)
		if err != nil {
			return err.Error()
		}
		if got, _ := strconv.ParseInt(info["slave_repl_offset"], 10, 64); got < want {
			return fmt.Sprintf("replica %s at offset %s", replica, info["slave_repl_offset"])
		}
		return ""
	})
}

// KillMaster kills the master with SIGKILL, as a crash does, and waits
// until the sentinels have promoted the replica: every sentinel names it as
// the master and it says it is one. The killed server stays down. It
// returns the killed and the new master's addresses.
//
// It first waits until every sentinel could promote the replica (after a
// Failover, that is up to ten seconds: until each has had the replica's
// INFO), so that what is measured from the kill is the sentinels' failover.
func (s *Set) KillMaster() (killed, newMaster string) {
	s.t.Helper()
	killed = s.Master()
	newMaster = s.other(killed)
	s.await("every sentinel to know "+newMaster+" as a replica it may promote", func() string { return s.known(newMaster) })
	s.servers[killed].Kill()
	s.await("the sentinels to promote "+newMaster+" after "+killed+" was killed", func() string { return s.promoted(newMaster) })
	return killed, newMaster
}

// awaitSettled waits until master is a master with replica in sync, and
// every sentinel agrees and knows the replica and every other sentinel.
func (s *Set) awaitSettled(master, replica string) {
	s.t.Helper()
	s.await(fmt.Sprintf("master %s with replica %s in sync, known to all %d sentinels", master, replica, len(s.sentinels)), func() string {
		return firstOf(s.promoted(master), s.inSync(master, replica), s.known(replica))
	})
}

// limit is how long the Set waits for the sentinels: await.Limit, plus
// the 30 seconds of a sentinel's TILT mode, which it enters when it was
// not scheduled for two seconds (a loaded machine) and during which it
// neither calls a master down nor goes on with a failover.
const limit = await.Limit + 30*time.Second

// await polls why until it returns "", as await.Until does but for as long
// as limit, and fails the test with why's last answer if it does not.
func (s *Set) await(what string, why func() string) {
	s.t.Helper()
	deadline := time.Now().Add(limit)
	wait := time.Millisecond
	for {
		last := why()
		if last == "" {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("not within %v: %s; last seen: %s", limit, what, last)
		}
		time.Sleep(wait)
		wait = min(2*wait, 20*time.Millisecond)
	}
}

// firstOf returns the first of whys that is not "".
func firstOf(whys ...string) string {
	for _, w := range whys {
		if w != "" {
			return w
		}
	}
	return ""
}

// promoted returns "" when every sentinel names master as the master and
// master says it is one, or else what is not so yet.
func (s *Set) promoted(master string) string {
	for _, sn := range s.sentinels {
		addr, err := sn.client.GetMasterAddrByName(context.Background(), s.name).Result()
		if err != nil {
			return fmt.Sprintf("sentinel %s: %v", sn.addr, err)
		}
		if got := net.JoinHostPort(addr[0], addr[1]); got != master {
			return fmt.Sprintf("sentinel %s names %s as the master", sn.addr, got)
		}
	}
	info, err := s.replication(master)
	if err != nil {
		return err.Error()
	}
	if info["role"] != "master" {
		return fmt.Sprintf("%s is a %s", master, info["role"])
	}
	return ""
}

// inSync returns "" when replica is master's replica, its link up and the
// master listing it online, or else what is not so yet.
func (s *Set) inSync(master, replica string) string {
	info, err := s.replication(replica)
	if err != nil {
		return err.Error()
	}
	_, rport, _ := net.SplitHostPort(replica)
	_, mport, _ := net.SplitHostPort(master)
	if info["role"] != "slave" || info["master_port"] != mport || info["master_link_status"] != "up" {
		return fmt.Sprintf("%s is not yet an up-to-date replica of %s: role %s, master port %s, link %s",
			replica, master, info["role"], info["master_port"], info["master_link_status"])
	}
	minfo, err := s.replication(master)
	if err != nil {
		return err.Error()
	}
	for k, v := range minfo {
		if strings.HasPrefix(k, "slave") && strings.Contains(v, "port="+rport+",") && strings.Contains(v, "state=online") {
			return ""
		}
	}
	return fmt.Sprintf("master %s does not list %s online", master, replica)
}

// known returns "" when every sentinel knows every other sentinel and
// replica as a replica it may promote (no down or disconnected flag, its
// link to the master up), or else what is not so yet. The sentinels learn
// of each other from their hellos, every two seconds, and of a replica's
// state from its INFO, every ten seconds.
func (s *Set) known(replica string) string {
	for _, sn := range s.sentinels {
		m, err := sn.client.Master(context.Background(), s.name).Result()
		if err != nil {
			return fmt.Sprintf("sentinel %s: %v", sn.addr, err)
		}
		if m["flags"] != "master" || m["num-slaves"] != "1" || m["num-other-sentinels"] != strconv.Itoa(len(s.sentinels)-1) {
			return fmt.Sprintf("sentinel %s sees the master with flags %q, %s replicas, %s other sentinels",
				sn.addr, m["flags"], m["num-slaves"], m["num-other-sentinels"])
		}
		rs, err := sn.client.Replicas(context.Background(), s.name).Result()
		if err != nil {
			return fmt.Sprintf("sentinel %s: %v", sn.addr, err)
		}
		if len(rs) != 1 || rs[0]["name"] != replica || rs[0]["flags"] != "slave" || rs[0]["master-link-status"] != "ok" {
			return fmt.Sprintf("sentinel %s sees the replicas %v", sn.addr, rs)
		}
	}
	return ""
}

// replication returns the fields of the server's INFO replication.
func (s *Set) replication(addr string) (map[string]string, error) {
	text, err := s.clients[addr].Info(context.Background(), "replication").Result()
	if err != nil {
		return nil, fmt.Errorf("INFO replication of %s: %w", addr, err)
	}
	fields := map[string]string{}
	for line := range strings.SplitSeq(text, "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = v
		}
	}
	return fields, nil
}

// logSentinels logs each sentinel's log, for a test that failed.
func (s *Set) logSentinels() {
	for _, sn := range s.sentinels {
		b, _ := os.ReadFile(filepath.Join(sn.dir, "sentinel.log"))
		s.t.Logf("redis-sentinel %s log:\n%s", sn.addr, b)
	}
}
