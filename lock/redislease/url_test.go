package redislease

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/internal/redistest"
)

func TestParseURL(t *testing.T) {
	type want struct {
		addrs        []string // the server, or the sentinels
		master       string   // "" for a single server
		user, pass   string
		sentinelPass string
		db           int
		tls          bool
		ctxTimeout   bool
		dialTimeout  time.Duration
	}
	for _, tc := range []struct {
		name string
		url  string
		want want
	}{
		// The form of DESIGN.md's example.
		{"plain", "redis://127.0.0.1:6379/0", want{addrs: []string{"127.0.0.1:6379"}, ctxTimeout: true}},
		// Host only: port 6379, db 0.
		{"defaults", "redis://redis", want{addrs: []string{"redis:6379"}, ctxTimeout: true}},
		// requirepass: the password alone, and a database.
		{"password and db", "redis://:s3cret@10.0.0.1:6380/2", want{addrs: []string{"10.0.0.1:6380"}, pass: "s3cret", db: 2, ctxTimeout: true}},
		// An ACL user.
		{"acl user", "redis://dmon:pw@h/1", want{addrs: []string{"h:6379"}, user: "dmon", pass: "pw", db: 1, ctxTimeout: true}},
		// A percent-encoded password.
		{"encoded password", "redis://:p%40ss%2Fw@h", want{addrs: []string{"h:6379"}, pass: "p@ss/w", ctxTimeout: true}},
		// TLS.
		{"rediss", "rediss://:pw@redis.example.org:6380/3", want{addrs: []string{"redis.example.org:6380"}, pass: "pw", db: 3, tls: true, ctxTimeout: true}},
		// go-redis options pass through.
		{"options", "redis://h/0?dial_timeout=3s", want{addrs: []string{"h:6379"}, dialTimeout: 3 * time.Second, ctxTimeout: true}},
		// Context timeouts can be turned off, though go-redis's own
		// parser does not know the option for a single server.
		{"context timeouts off", "redis://h?context_timeout_enabled=false", want{addrs: []string{"h:6379"}}},
		// A unix socket.
		{"unix", "unix:///run/redis/redis.sock?db=4", want{addrs: []string{"/run/redis/redis.sock"}, db: 4, ctxTimeout: true}},
		// Sentinel: several sentinels, the default port, master and db.
		{"sentinel", "redis+sentinel://:pw@s1:26380,s2/mymaster/3", want{addrs: []string{"s1:26380", "s2:26379"}, master: "mymaster", pass: "pw", db: 3, ctxTimeout: true}},
		// Sentinel with IPv6 sentinels.
		{"sentinel ipv6", "redis+sentinel://[::1],[::1]:26380/m", want{addrs: []string{"[::1]:26379", "[::1]:26380"}, master: "m", ctxTimeout: true}},
		// Sentinels with their own password, over TLS.
		{"sentinel tls and auth", "rediss+sentinel://u:pw@s1/m/1?sentinel_password=sp&dial_timeout=2s", want{addrs: []string{"s1:26379"}, master: "m", user: "u", pass: "pw", sentinelPass: "sp", db: 1, tls: true, ctxTimeout: true, dialTimeout: 2 * time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			single, failover, err := parseURL(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			var got want
			if single != nil {
				got = want{addrs: []string{single.Addr}, user: single.Username, pass: single.Password,
					db: single.DB, tls: single.TLSConfig != nil, ctxTimeout: single.ContextTimeoutEnabled, dialTimeout: single.DialTimeout}
			} else {
				got = want{addrs: failover.SentinelAddrs, master: failover.MasterName, user: failover.Username, pass: failover.Password,
					sentinelPass: failover.SentinelPassword, db: failover.DB, tls: failover.TLSConfig != nil,
					ctxTimeout: failover.ContextTimeoutEnabled, dialTimeout: failover.DialTimeout}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestNewClientErrorsRedactPasswords(t *testing.T) {
	for _, tc := range []struct {
		name string
		url  string
		msg  string // in the error
	}{
		// No scheme at all.
		{"no scheme", "s3cret@localhost", "not a URL"},
		// Another scheme.
		{"http", "http://:s3cret@localhost/", `unknown scheme "http"`},
		// The database is not a number.
		{"bad db", "redis://:s3cret@localhost/zero", "invalid database number"},
		// A path of two parts.
		{"bad path", "redis://:s3cret@localhost/0/1", "invalid URL path"},
		// url.Parse's own error repeats the URL: it must not get through.
		{"bad port", "redis://:s3cret@localhost:63x79/0", "invalid port"},
		// An unknown option.
		{"unknown option", "redis://u:s3cret@localhost/0?tls=yes", "unexpected option: tls"},
		// A bad value of our own option.
		{"bad ctx option", "redis://:s3cret@localhost?context_timeout_enabled=maybe", "invalid context_timeout_enabled"},
		// A password with an unencoded '/' breaks the URL apart.
		{"unencoded slash", "redis://:s3c/ret@localhost:6379/0", "invalid port"},
		// Sentinel without the master's name.
		{"sentinel no master", "redis+sentinel://:s3cret@s1,s2", "master's name"},
		// Sentinel with a bad database.
		{"sentinel bad db", "redis+sentinel://:s3cret@s1/m/x", "invalid database number"},
		// Sentinel with a path too long.
		{"sentinel bad path", "redis+sentinel://:s3cret@s1/m/0/1", "master's name"},
		// An empty sentinel address.
		{"sentinel empty host", "redis+sentinel://:s3cret@s1,,s2/m", "empty sentinel address"},
		// A sentinel port that is no port.
		{"sentinel bad port", "redis+sentinel://:s3cret@s1:99999/m", "bad sentinel port"},
		// The sentinels' password, in an option, next to a bad one.
		{"sentinel password option", "redis+sentinel://s1/m?sentinel_password=s3cret&bogus=1", "unexpected option: bogus"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewClient(tc.url)
			if err == nil {
				_ = c.Close()
				t.Fatalf("NewClient(%q) succeeded", tc.url)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.msg) {
				t.Errorf("error %q does not say %q", msg, tc.msg)
			}
			if strings.Contains(msg, "s3cret") || strings.Contains(msg, "s3c") {
				t.Errorf("error %q shows the password", msg)
			}
			if !strings.Contains(msg, "redis url ") || !strings.Contains(msg, "xxxxx") {
				t.Errorf("error %q does not name the redacted URL", msg)
			}
		})
	}
}

func TestNewClientPasswordAndDatabase(t *testing.T) {
	s := redistest.Start(t, "--requirepass", "s3cret")
	ctx := testCtx(t)

	c, err := NewClient("redis://:s3cret@" + s.Addr() + "/3")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	l := New(c, Options{Owner: "a"})
	defer l.Close()
	term := acquire(t, l)

	// The lease is in database 3, not 0.
	for db, want := range map[int]bool{0: false, 3: true} {
		other, err := NewClient(fmt.Sprintf("redis://:s3cret@%s/%d", s.Addr(), db))
		if err != nil {
			t.Fatal(err)
		}
		h, err := readHolder(ctx, other, DefaultKey)
		_ = other.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got := h.epoch == term.Epoch; got != want {
			t.Errorf("db %d holds %+v; want the lease there: %v", db, h, want)
		}
	}

	wrong, err := NewClient("redis://:wrong@" + s.Addr() + "/3")
	if err != nil {
		t.Fatal(err)
	}
	defer wrong.Close()
	if _, _, _, err := New(wrong, Options{}).Leader(ctx); err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
		t.Fatalf("Leader with a wrong password: %v, want WRONGPASS", err)
	}
}
