package main

import (
	"fmt"
	"log/slog"
	"strconv"

	sd "github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"github.com/dmonitor/dmonitor/config"
)

// notifier tells the service manager what the daemon is doing, by the
// sd_notify protocol (systemd's Type=notify): READY=1 once it serves,
// RELOADING=1 then READY=1 around a reload, STOPPING=1 when it begins to
// stop, each with a STATUS= line for `systemctl status`. Every method does
// nothing when NOTIFY_SOCKET is not set, as when not run by systemd.
//
// NOTIFY_SOCKET stays in the environment, so the plugins inherit it; the
// service manager takes notifications from the main process only
// (NotifyAccess=main, the default of Type=notify), so a plugin cannot
// declare the daemon ready or stopping.
type notifier struct {
	log *slog.Logger
}

// ready says the daemon serves: its listeners are bound and its checks
// scheduled. status is shown by `systemctl status`.
func (n notifier) ready(status string) {
	n.send(sd.SdNotifyReady + "\nSTATUS=" + status)
}

// reloading says a reload has begun; ready must follow when it is done,
// applied or refused. MONOTONIC_USEC is the time systemd ≥253 wants with
// it to tell reloads apart (Type=notify-reload); older ones ignore it.
func (n notifier) reloading() {
	var ts unix.Timespec
	msg := sd.SdNotifyReloading
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err == nil {
		msg += "\nMONOTONIC_USEC=" + strconv.FormatInt(ts.Nano()/1000, 10)
	}
	n.send(msg + "\nSTATUS=reloading the configuration")
}

// stopping says the daemon has begun to stop.
func (n notifier) stopping() {
	n.send(sd.SdNotifyStopping + "\nSTATUS=stopping: the running checks get their grace period")
}

func (n notifier) send(state string) {
	if _, err := sd.SdNotify(false, state); err != nil && n.log != nil {
		// The service manager times the start out and says so; the
		// daemon itself runs on.
		n.log.Warn("telling the service manager (sd_notify)", "state", state, "err", err)
	}
}

// runningStatus is the STATUS= line of a daemon running cfg.
func runningStatus(cfg *config.Config) string {
	return fmt.Sprintf("running: %d checks, mode %s, observer %s", len(cfg.Targets), cfg.Mode(), cfg.Observer)
}
