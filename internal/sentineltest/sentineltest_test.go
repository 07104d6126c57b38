package sentineltest

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestFailoverThenKill fails a master over with SENTINEL FAILOVER, then
// kills the new one: each time the data written before is on the new
// master, and the roles are what the sentinels say.
func TestFailoverThenKill(t *testing.T) {
	began := time.Now()
	s := Start(t, Options{Sentinels: 3, Password: "s3cret"})
	t.Logf("master, replica and 3 sentinels settled in %v", time.Since(began))
	if u := s.URL(); !strings.HasPrefix(u, "redis+sentinel://:s3cret@127.0.0.1:") || !strings.HasSuffix(u, "/"+DefaultName) ||
		strings.Count(u, ",") != 2 {
		t.Fatalf("URL %q: want the password, three sentinels and the master's name", u)
	}
	ctx := context.Background()
	first := s.Master()
	if err := s.Client(first).Set(ctx, "k", "v1", 0).Err(); err != nil {
		t.Fatal(err)
	}

	began = time.Now()
	old, now := s.Failover()
	t.Logf("SENTINEL FAILOVER from %s to %s: settled in %v", old, now, time.Since(began))
	if old != first || now == first || s.Master() != now {
		t.Fatalf("failed over from %s to %s, sentinels name %s; want from %s to the other", old, now, s.Master(), first)
	}
	if role := s.role(t, old); role != "slave" {
		t.Fatalf("the old master %s is a %s, want a replica", old, role)
	}
	if v := s.Client(now).Get(ctx, "k").Val(); v != "v1" {
		t.Fatalf("the new master has k=%q, want v1", v)
	}
	// The old master refuses writes now.
	if err := s.Client(old).Set(ctx, "k", "stale", 0).Err(); err == nil || !strings.HasPrefix(err.Error(), "READONLY") {
		t.Fatalf("a write to the old master: %v, want READONLY", err)
	}
	if err := s.Client(now).Set(ctx, "k", "v2", 0).Err(); err != nil {
		t.Fatalf("the new master refuses a write: %v", err)
	}
	s.AwaitReplicated()
	if v := s.Client(old).Get(ctx, "k").Val(); v != "v2" {
		t.Fatalf("after AwaitReplicated the replica has k=%q, want v2", v)
	}

	began = time.Now()
	killed, promoted := s.KillMaster()
	t.Logf("kill: %s killed, %s promoted; %v with the wait for the sentinels to know the replica", killed, promoted, time.Since(began))
	if killed != now || promoted != first || s.Master() != first {
		t.Fatalf("killed %s, promoted %s, sentinels name %s; want %s killed, %s promoted", killed, promoted, s.Master(), now, first)
	}
	if v := s.Client(first).Get(ctx, "k").Val(); v != "v2" {
		t.Fatalf("after the kill the new master has k=%q, want v2", v)
	}
}

func (s *Set) role(t *testing.T, addr string) string {
	t.Helper()
	info, err := s.replication(addr)
	if err != nil {
		t.Fatal(err)
	}
	return info["role"]
}
