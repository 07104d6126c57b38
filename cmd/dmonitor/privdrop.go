package main

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/dmonitor/dmonitor/config"
)

// The privilege drop. `dmonitor run` started as root switches, once and
// for good, to the account of the configuration's user: before anything a
// plugin could reach exists:
//
//	as root                      as the account
//	read the configuration       read it again (reloads will, as the account)
//	resolve the account          open the data directory: the TSDB, state.db,
//	create a missing data_dir,   silences.json, the spool, the notification
//	  owned by the account       journals, all created by and owned by it
//	setgroups, setgid, setuid    bind the listeners, run every plugin
//
// Nothing is opened or bound as root and carried across the drop: a reload
// (SIGHUP, or a file changed) restarts runDaemon in-process, which binds
// its listeners and opens the data directory again as the account, so a
// listener bound as root would be lost at the first reload. A listen
// address with a port below net.ipv4.ip_unprivileged_port_start is
// therefore refused at start, with the reason, rather than at the first
// bind.
//
// The daemon keeps no capability. Linux keeps capabilities across setuid
// only per thread (PR_SET_KEEPCAPS, capset and the ambient set are
// per-thread, and Go's runtime has many), so keeping CAP_NET_RAW for the
// plugins cannot be done simply and correctly here. ICMP needs none from
// the daemon: Debian's check_icmp and ping carry cap_net_raw as a file
// capability, and ping also uses unprivileged ICMP datagram sockets when
// net.ipv4.ping_group_range includes the account's group.

// account is who the daemon runs as after the drop.
type account struct {
	name     string
	uid, gid int
	groups   []int // the supplementary groups, from the group database
	home     string
}

// errNoUser is returned by resolveAccount when a user: set explicitly
// names no account of this host.
var errNoUser = errors.New("no such user")

// resolveAccount resolves the configuration's user: (name) to an account.
// An empty name is def; when this host has no account def, it is fallback
// and fellBack is true. A name set explicitly must exist: errNoUser.
func resolveAccount(name, def, fallback string) (a account, fellBack bool, err error) {
	u, err := lookupUser(cmp.Or(name, def))
	if name == "" && errors.Is(err, errNoUser) {
		fellBack = true
		u, err = lookupUser(fallback)
	}
	if err != nil {
		return account{}, false, err
	}
	a = account{name: u.Username, home: u.HomeDir}
	if a.uid, err = strconv.Atoi(u.Uid); err != nil {
		return account{}, false, fmt.Errorf("user %s: uid %q: %w", u.Username, u.Uid, err)
	}
	if a.gid, err = strconv.Atoi(u.Gid); err != nil {
		return account{}, false, fmt.Errorf("user %s: gid %q: %w", u.Username, u.Gid, err)
	}
	gids, err := u.GroupIds()
	if err != nil {
		return account{}, false, fmt.Errorf("user %s: its groups: %w", u.Username, err)
	}
	for _, g := range gids {
		id, err := strconv.Atoi(g)
		if err != nil {
			return account{}, false, fmt.Errorf("user %s: group id %q: %w", u.Username, g, err)
		}
		a.groups = append(a.groups, id)
	}
	return a, fellBack, nil
}

func lookupUser(name string) (*user.User, error) {
	u, err := user.Lookup(name)
	var unknown user.UnknownUserError
	if errors.As(err, &unknown) {
		return nil, fmt.Errorf("user %s: %w", name, errNoUser)
	}
	if err != nil {
		return nil, fmt.Errorf("user %s: %w", name, err)
	}
	return u, nil
}

// dropPrivileges switches the process to the account of cfg.User when it
// runs as root, and returns that account; it returns nil when nothing
// changed: not root (a user: other than the current one is logged), or
// user: root (logged at warn). Before the switch it creates a missing
// data directory owned by the account; after it, it checks that the
// account can write everything already in the data directory, and refuses
// with the fix when it cannot.
//
// Call it once, before anything opens the data directory or runs a
// plugin, while the process has no other work in flight; the switch is
// for good (Go ≥1.16 applies setuid to every thread on Linux).
func dropPrivileges(cfg *config.Config, log *slog.Logger) (*account, error) {
	if os.Geteuid() != 0 {
		if cfg.User != "" {
			if cur, err := user.Current(); err == nil && cur.Username != cfg.User {
				log.Info("not root, running as "+cur.Username, "user", cur.Username, "configured_user", cfg.User)
			}
		}
		return nil, nil
	}
	if cfg.User == "root" {
		log.Warn("user: root: running as root, and so is every plugin", "user", "root")
		return nil, nil
	}
	a, fellBack, err := resolveAccount(cfg.User, config.DefaultUser, config.DefaultFallbackUser)
	if err != nil {
		if errors.Is(err, errNoUser) {
			return nil, fmt.Errorf("%s: user: %w on this host: create it (useradd --system --no-create-home --shell /usr/sbin/nologin %s), "+
				"or name another account", filepath.Join(cfg.Dir, config.FileName), err, cfg.User)
		}
		return nil, err
	}
	if fellBack {
		log.Warn("user "+config.DefaultUser+" does not exist: running as "+a.name+"; create it (the Debian package does) "+
			"or set user: in "+config.FileName, "user", a.name, "uid", a.uid)
	}
	if a.uid == 0 {
		log.Warn("user "+a.name+" has uid 0: running as root, and so is every plugin", "user", a.name)
		return nil, nil
	}
	if err := privilegedPorts(cfg, a); err != nil {
		return nil, err
	}
	if err := makeDataDir(cfg.DataDir, a); err != nil {
		return nil, err
	}
	if err := switchTo(a); err != nil {
		return nil, err
	}
	log.Info("running as "+a.name, "user", a.name, "uid", a.uid, "gid", a.gid, "groups", a.groups)
	if err := checkDataDir(cfg.DataDir, a); err != nil {
		return nil, err
	}
	return &a, nil
}

// makeDataDir creates dir, when it does not exist, owned by a and mode
// 0750, as root: its parent (/var/lib) is rarely writable by a. Missing
// parents are created root's, 0755.
func makeDataDir(dir string, a account) error {
	if _, err := os.Lstat(dir); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return nil // there: checkDataDir judges it once the account can only do what it may
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("data_dir %s: %w", dir, err)
	}
	if err := os.Mkdir(dir, 0o750); err != nil {
		return fmt.Errorf("data_dir %s: %w", dir, err)
	}
	if err := os.Chown(dir, a.uid, a.gid); err != nil {
		return fmt.Errorf("data_dir %s: give it to %s: %w", dir, a.name, err)
	}
	return nil
}

// switchTo makes the process a: supplementary groups, then the group, then
// the user, since setuid is what takes the right to change the others. It
// then makes sure there is no way back.
func switchTo(a account) error {
	if err := syscall.Setgroups(a.groups); err != nil {
		return fmt.Errorf("switch to user %s: setgroups %v: %w", a.name, a.groups, err)
	}
	if err := syscall.Setgid(a.gid); err != nil {
		return fmt.Errorf("switch to user %s: setgid %d: %w", a.name, a.gid, err)
	}
	if err := syscall.Setuid(a.uid); err != nil {
		return fmt.Errorf("switch to user %s: setuid %d: %w", a.name, a.uid, err)
	}
	if os.Getuid() != a.uid || os.Geteuid() != a.uid || os.Getgid() != a.gid || os.Getegid() != a.gid {
		return fmt.Errorf("switch to user %s: still uid %d/%d gid %d/%d", a.name, os.Getuid(), os.Geteuid(), os.Getgid(), os.Getegid())
	}
	if syscall.Setuid(0) == nil {
		return fmt.Errorf("switch to user %s: setuid 0 still succeeds", a.name)
	}
	// The plugins inherit the environment: theirs should be the account's,
	// as login(1) or systemd's User= would make it.
	for k, v := range map[string]string{"HOME": a.home, "USER": a.name, "LOGNAME": a.name} {
		if err := os.Setenv(k, v); err != nil {
			return fmt.Errorf("switch to user %s: %s: %w", a.name, k, err)
		}
	}
	return nil
}

// checkDataDir makes sure the process, now a, can write dir and
// everything in it, so that no store fails half-opened later: a tree left
// by a daemon that ran as root is refused here, with the fix. It runs
// after the switch, so access(2) judges as a, groups and ACLs included.
func checkDataDir(dir string, a account) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		mode := uint32(2) // W_OK
		if err == nil && d.IsDir() {
			mode |= 1 | 4 // X_OK, R_OK: to list it and reach what it holds
		}
		if err == nil {
			err = syscall.Access(path, mode)
		}
		if err == nil {
			return nil
		}
		owner := "?"
		if fi, serr := os.Lstat(path); serr == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				owner = strconv.Itoa(int(st.Uid))
				if u, uerr := user.LookupId(owner); uerr == nil {
					owner = u.Username
				}
			}
		}
		where := "data_dir " + dir
		if path != dir {
			where += ": " + path
		}
		return fmt.Errorf("%s: owned by %s and not writable by %s, the user dmonitor runs as (%v): "+
			"give it to that user: chown -R %s: %s", where, owner, a.name, err, a.name, dir)
	})
}

// privilegedPorts refuses a listen address of cfg that a, not root, could
// not bind: nothing is bound before the drop (see the top of this file).
func privilegedPorts(cfg *config.Config, a account) error {
	start := 1024
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			start = n
		}
	}
	var errs []error
	for _, l := range []struct{ key, addr string }{{"control.listen", cfg.Control.Listen}, {"tsdb.listen", cfg.TSDB.Listen}} {
		if l.addr == "" || l.key == "tsdb.listen" && cfg.TSDB.Backend == config.BackendOpenTSDB {
			continue
		}
		_, p, err := net.SplitHostPort(l.addr)
		if err != nil {
			continue // Load has judged it
		}
		port, err := net.LookupPort("tcp", p)
		if err != nil || port == 0 || port >= start {
			continue
		}
		errs = append(errs, fmt.Errorf("%s %s: port %d is privileged (below net.ipv4.ip_unprivileged_port_start, %d) "+
			"and dmonitor binds it as %s, after dropping root: choose a port from %d up, or lower that sysctl",
			l.key, l.addr, port, start, a.name, start))
	}
	return errors.Join(errs...)
}
