package main

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/dmonitor/dmonitor/config"
	"github.com/dmonitor/dmonitor/internal/await"
	"github.com/dmonitor/dmonitor/internal/loopback"
	"github.com/dmonitor/dmonitor/internal/testlock"
)

// TestResolveAccount: an absent default falls back, an absent name set
// explicitly is refused, and an account comes with its groups.
func TestResolveAccount(t *testing.T) {
	absent := fmt.Sprintf("dmon-absent-%d", rand.Uint32())
	a, fellBack, err := resolveAccount("", absent, config.DefaultFallbackUser)
	if err != nil || !fellBack || a.name != "nobody" {
		t.Fatalf("default %s absent: got %+v fellBack %v err %v; want nobody, fellBack", absent, a, fellBack, err)
	}
	if _, _, err := resolveAccount(absent, config.DefaultUser, config.DefaultFallbackUser); !errors.Is(err, errNoUser) {
		t.Fatalf("user: %s (absent): err %v, want errNoUser", absent, err)
	}
	a, fellBack, err = resolveAccount("root", absent, config.DefaultFallbackUser)
	if err != nil || fellBack || a.uid != 0 || a.gid != 0 {
		t.Fatalf("root: got %+v fellBack %v err %v", a, fellBack, err)
	}
}

// requireRoot skips t unless it runs as root: only root can drop.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the privilege drop happens only when dmonitor starts as root; run the tests as root")
	}
}

// testUser adds a system account for t and removes it, and its group,
// when t ends.
func testUser(t *testing.T) *user.User {
	t.Helper()
	name := fmt.Sprintf("dmon-test-%d", rand.Uint32N(1e6))
	if out, err := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("userdel", name).CombinedOutput(); err != nil {
			t.Errorf("userdel %s: %v\n%s", name, err, out)
		}
		if _, err := user.LookupGroup(name); err == nil {
			_ = exec.Command("groupdel", name).Run()
		}
	})
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// openTree returns a configuration directory that another account can
// read: t.TempDir's are root's alone.
func openTree(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// uidTree writes a configuration whose one check reports the uid it runs
// as, with yaml added to dmonitor.yaml.
func uidTree(t *testing.T, control, yaml string) string {
	t.Helper()
	dir := openTree(t)
	writeTree(t, dir, map[string]string{
		"dmonitor.yaml":     fmt.Sprintf("observer: solo\ninterval: 1s\ncontrol: {listen: %q}\n%s", control, yaml),
		"hosts.d/h/uid":     "",
		"plugins/check_uid": "#!/bin/sh\necho \"uid $(id -u)\"\n",
	})
	return dir
}

// pluginOutput says whether the check uid printed want, as the daemon
// logs each result. (/status lists rule instances, and this tree has no
// rule: it needs no receiver.)
func pluginOutput(d *daemon, want string) bool {
	return strings.Contains(d.logText(), "check=uid status=OK output=\""+want+"\"")
}

// owner returns the uid owning path.
func owner(t *testing.T, path string) int {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return int(fi.Sys().(*syscall.Stat_t).Uid)
}

// startAs starts the daemon on dir with extra arguments of dmonitor run.
func startAs(t *testing.T, dir, control string, args ...string) *daemon {
	t.Helper()
	return launch(t, &daemon{control: control, base: "http://" + control, client: http.DefaultClient, args: args}, dir, nil)
}

// TestRunDropsToUser: started as root with user: set, the daemon runs its
// plugins as that user, and the data directory it creates, with state.db
// and tsdb/ in it, is that user's.
func TestRunDropsToUser(t *testing.T) {
	requireRoot(t)
	u := testUser(t)
	control := loopback.FreeAddr(t)
	dir := uidTree(t, control, "user: "+u.Username+"\n")
	d := startAs(t, dir, control, "--user", u.Username)
	want := "uid " + u.Uid
	await.Until(t, "the plugin's uid", func() bool { return pluginOutput(d, want) })
	uid, _ := strconv.Atoi(u.Uid)
	for _, p := range []string{"data", "data/state.db", "data/tsdb"} {
		if got := owner(t, filepath.Join(dir, p)); got != uid {
			t.Errorf("%s is owned by uid %d, want %d (%s)", p, got, uid, u.Username)
		}
	}
	if pluginOutput(d, "uid 0") {
		t.Errorf("a plugin ran as root")
	}
	d.stop(t)
}

// TestRunAsNobodyWithoutDefaultUser: user: unset and no dmonitor account
// on this host: the daemon runs as nobody, and says so at warn.
func TestRunAsNobodyWithoutDefaultUser(t *testing.T) {
	requireRoot(t)
	// deploy/debian's TestDeb installs the package, account and all.
	testlock.Hold(t, "account")
	if _, err := user.Lookup(config.DefaultUser); err == nil {
		t.Skipf("this host has a %s account: the fallback to nobody cannot be seen (TestResolveAccount covers it)", config.DefaultUser)
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no nobody account on this host")
	}
	control := loopback.FreeAddr(t)
	dir := uidTree(t, control, "")
	// --user "" is user: unset: the flag the other tests' helper may pass
	// is overridden by the last one.
	d := startAs(t, dir, control, "--user", "")
	await.Until(t, "the plugin's uid", func() bool { return pluginOutput(d, "uid "+nobody.Uid) })
	if !strings.Contains(d.logText(), "level=WARN msg=\"user dmonitor does not exist: running as nobody") {
		t.Errorf("the fallback is not logged at warn")
	}
	d.stop(t)
}

// TestRunRefusesDataDirOfAnother: a data directory the user cannot write
// (left by a daemon run as root) is refused before anything opens it,
// with its owner and the fix.
func TestRunRefusesDataDirOfAnother(t *testing.T) {
	requireRoot(t)
	u := testUser(t)
	control := loopback.FreeAddr(t)
	dir := uidTree(t, control, "user: "+u.Username+"\n")
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "run", "--config", dir, "--user", u.Username)
	cmd.Env = append(os.Environ(), mainEnv+"=1")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("dmonitor run: %v, want exit status 1\n%s", err, out)
	}
	want := fmt.Sprintf("data_dir %s: owned by root and not writable by %s", data, u.Username)
	fix := fmt.Sprintf("chown -R %s: %s", u.Username, data)
	if !strings.Contains(string(out), want) || !strings.Contains(string(out), fix) {
		t.Fatalf("output does not say %q and %q:\n%s", want, fix, out)
	}
	if entries, _ := os.ReadDir(data); len(entries) != 0 {
		t.Errorf("the refused data directory was written to: %v", entries)
	}
}
