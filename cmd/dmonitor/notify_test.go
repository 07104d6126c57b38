package main

import (
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/internal/loopback"
)

// TestSdNotify: with NOTIFY_SOCKET set, as systemd's Type=notify sets it,
// the daemon says READY=1 once it serves, RELOADING=1 then READY=1 around
// a reload, and STOPPING=1 when SIGTERM stops it.
func TestSdNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	msgs := make(chan string, 64)
	go func() {
		defer close(msgs)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	// next returns the next notification; the deadline only ends a test
	// whose daemon never says anything.
	next := func(what string) string {
		t.Helper()
		select {
		case m := <-msgs:
			return m
		case <-time.After(time.Minute):
			t.Fatalf("no notification: want %s", what)
			return ""
		}
	}

	control := loopback.FreeAddr(t)
	dir := uidTree(t, control, "tsdb: {listen: \"\"}\n")
	// As root the daemon would run as dmonitor or nobody, who cannot
	// reach this socket; systemd's is everyone's.
	d := launch(t, &daemon{control: control, base: "http://" + control, client: http.DefaultClient, args: []string{"--user", "root"}},
		dir, []string{"NOTIFY_SOCKET=" + sock})

	ready := next("READY=1")
	if !strings.HasPrefix(ready, "READY=1\n") || !strings.Contains(ready, "STATUS=running: 1 checks, mode local") {
		t.Fatalf("first notification %q, want READY=1 with its STATUS", ready)
	}
	resp, err := http.Get(d.base + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("READY=1 said, but /healthz: %v %v", resp, err)
	}
	resp.Body.Close()

	writeTree(t, dir, map[string]string{"hosts.d/h2/uid": ""})
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if m := next("RELOADING=1"); !strings.HasPrefix(m, "RELOADING=1\nMONOTONIC_USEC=") {
		t.Fatalf("after SIGHUP %q, want RELOADING=1 with MONOTONIC_USEC", m)
	}
	if m := next("READY=1"); !strings.HasPrefix(m, "READY=1\n") || !strings.Contains(m, "running: 2 checks") {
		t.Fatalf("after the reload %q, want READY=1 on the new configuration (2 checks)", m)
	}

	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The file watcher may reload once more before the signal lands: its
	// pair of notifications may come first.
	for {
		m := next("STOPPING=1")
		if strings.HasPrefix(m, "STOPPING=1") {
			break
		}
		if !strings.HasPrefix(m, "RELOADING=1") && !strings.HasPrefix(m, "READY=1") {
			t.Fatalf("after SIGTERM %q, want STOPPING=1", m)
		}
	}
	if err := d.wait(); err != nil {
		t.Fatalf("dmonitor run after SIGTERM: %v", err)
	}
}
