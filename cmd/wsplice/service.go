//go:build linux

package main

// service.go: what a service manager expects of wsplice. Socket activation
// (LISTEN_FDS), sd_notify states (READY, RELOADING, STOPPING, WATCHDOG),
// SIGHUP, and the --metrics-address server. Outside systemd the
// environment variables are unset and each piece does nothing.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"github.com/wsplice/wsplice/splice"
)

// activatedListener returns the first listening TCP socket that systemd
// passed (socket activation), or nil when none was passed: then --listen
// applies. The LISTEN_* variables are unset, so nothing wsplice starts
// inherits them. Other passed sockets are closed with a warning.
func activatedListener(log *slog.Logger) (net.Listener, error) {
	// Files returns nothing unless LISTEN_PID is this process, as
	// sd_listen_fds(3) does.
	files := activation.Files(true)
	if len(files) == 0 {
		return nil, nil
	}
	var ln net.Listener
	for _, f := range files {
		l, err := net.FileListener(f) // a duplicate: f is closed either way
		f.Close()
		switch {
		case err != nil:
			log.Warn("socket activation: ignoring a passed descriptor that is not a listening socket", "name", f.Name(), "err", err)
		case ln == nil && l.Addr().Network() == "tcp":
			ln = l
		default:
			log.Warn("socket activation: ignoring an extra socket (wsplice serves one)", "addr", l.Addr().String(), "network", l.Addr().Network())
			l.Close()
		}
	}
	if ln == nil {
		return nil, fmt.Errorf("socket activation: none of the %d sockets systemd passed is a listening TCP socket", len(files))
	}
	log.Info("socket activation: serving the socket systemd passed; --listen, --network and --reuseport do not apply",
		"addr", ln.Addr().String())
	return ln, nil
}

// service is wsplice's side of the contract with its service manager,
// from listening to exit. serve's goroutine creates it and calls ready,
// stopping and close; notify also runs on the SIGHUP and watchdog
// goroutines, and /healthz reads draining from HTTP handlers.
type service struct {
	log       *slog.Logger
	srv       *splice.Server
	addr      string
	draining  atomic.Bool // set on SIGTERM before the drain starts; read by /healthz
	notifyErr atomic.Bool // a notification failed and was logged

	stops []func() // undo what startService started, in reverse
}

// startService starts what runs beside the server: the metrics server,
// the SIGHUP handler (which calls reload) and the watchdog. It does not
// notify readiness: ready does, once the server accepts.
func startService(o *options, srv *splice.Server, m *metrics, ln net.Listener, reload func(), log *slog.Logger) (*service, error) {
	s := &service{log: log, srv: srv, addr: ln.Addr().String()}
	if m != nil {
		m.watch(srv)
		stop, err := m.serve(o.MetricsAddress, listenConfig(o.Reuseport), s.draining.Load, log)
		if err != nil {
			return nil, fmt.Errorf("--metrics-address: %w", err)
		}
		s.stops = append(s.stops, stop)
	}
	s.stops = append(s.stops, s.handleSIGHUP(reload))
	every, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("watchdog: ignoring WATCHDOG_USEC", "err", err)
	}
	if every > 0 {
		s.stops = append(s.stops, s.watchdog(every))
	}
	return s, nil
}

// ready tells systemd that wsplice serves (Type=notify).
func (s *service) ready() {
	s.notify(daemon.SdNotifyReady + "\nSTATUS=serving on " + s.addr)
}

// stopping marks the drain: /healthz answers 503 from now on and systemd
// shows the unit as deactivating. Called before srv.Shutdown.
func (s *service) stopping() {
	s.draining.Store(true)
	s.notify(daemon.SdNotifyStopping + "\nSTATUS=draining " + strconv.Itoa(s.srv.Sessions()) + " sessions")
}

// close stops what startService started.
func (s *service) close() {
	for i := len(s.stops) - 1; i >= 0; i-- {
		s.stops[i]()
	}
}

// notify sends state to systemd's notification socket; without
// NOTIFY_SOCKET it does nothing. The first failure is logged, not the
// watchdog pings that would repeat it.
func (s *service) notify(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil && !s.notifyErr.Swap(true) {
		s.log.Warn("sd_notify failed (later failures are not logged)", "state", state, "err", err)
	}
}

// handleSIGHUP calls reload on every SIGHUP, between RELOADING=1 and
// READY=1, until the returned function is called. SIGHUP is always
// handled: its default action would kill wsplice, and the unit's
// ExecReload sends it whether or not there is anything to reload.
func (s *service) handleSIGHUP(reload func()) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-hup:
			case <-quit:
				return
			}
			s.log.Info("reload", "signal", "SIGHUP")
			// MONOTONIC_USEC lets systemd (Type=notify-reload, 253 and
			// later) tell this reload from an earlier one.
			s.notify(daemon.SdNotifyReloading + "\nMONOTONIC_USEC=" + strconv.FormatInt(monotonicUsec(), 10))
			reload()
			s.ready()
		}
	})
	return func() {
		signal.Stop(hup)
		close(quit)
		wg.Wait()
	}
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds, the clock systemd
// compares MONOTONIC_USEC with.
func monotonicUsec() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano() / 1e3
}

// watchdog sends WATCHDOG=1 every half of the interval systemd asked for
// (WatchdogSec), but only while every event loop answers a Ping: a wedged
// loop stops the pings and systemd restarts the service.
func (s *service) watchdog(every time.Duration) (stop func()) {
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(every / 2)
		defer t.Stop()
		for {
			select {
			case <-t.C:
			case <-quit:
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), every/4)
			err := s.srv.Ping(ctx)
			cancel()
			switch {
			case err == nil:
				s.notify(daemon.SdNotifyWatchdog)
			case errors.Is(err, splice.ErrServerClosed):
				return
			default:
				s.log.Error("watchdog: not telling systemd we are alive", "err", err)
			}
		}
	})
	s.log.Info("watchdog", "interval", every, "ping_every", every/2)
	return func() {
		close(quit)
		wg.Wait()
	}
}
