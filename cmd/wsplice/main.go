//go:build linux

// Command wsplice is the WebSocket multiplexer: one client WebSocket
// carries any number of upstream WebSockets, each named by a 2-byte index
// (see README.md and PROTOCOL.md).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/wsplice/wsplice/rpc"
	"github.com/wsplice/wsplice/splice"
)

func main() {
	os.Exit(run(os.Args[1:], os.Environ()))
}

// run is main with its inputs and exit code explicit. Errors are reported
// here, once, at the edge.
func run(args, environ []string) int {
	o, err := parseOptions(args, environ, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err == nil {
		err = o.validate()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "wsplice:", err)
		return 2
	}
	setGCPercent(environ)
	log := newLogger(o)
	if err := serve(o, log); err != nil {
		log.Error("wsplice stopped", "err", err)
		return 1
	}
	return 0
}

// defaultGCPercent is the garbage collector's target (GOGC) when the
// environment sets none. The forwarding path allocates nothing, so
// collections follow control traffic only (connects, handshakes), and the
// heap of a server holding many idle sessions is mostly their live state:
// 50 instead of Go's 100 lets the heap grow to 1.5 times that state
// instead of 2 before a collection (about 1.55 instead of 1.9 KiB of RSS
// per idle session at 9,000, README "Sizing"), for collections twice as
// frequent on the control path.
const defaultGCPercent = 50

// setGCPercent applies defaultGCPercent unless GOGC is set (and not
// empty) in environ: the operator's setting stands. Like the runtime,
// which has already applied it, it looks at the first GOGC only.
func setGCPercent(environ []string) {
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "GOGC="); ok {
			if v != "" {
				return
			}
			break
		}
	}
	debug.SetGCPercent(defaultGCPercent)
}

func newLogger(o *options) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(o.LogLevel))
	ho := &slog.HandlerOptions{Level: level}
	if o.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, ho))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, ho))
}

func serve(o *options, log *slog.Logger) error {
	// TLS material is loaded before anything starts: a bad file is a
	// startup error naming it (tls.go).
	tf, err := loadTLSFiles(o, log)
	if err != nil {
		return err
	}
	pol, err := rpc.NewHostPolicy(o.AllowedHostnames, o.AllowPrivateUpstreams)
	if err != nil {
		return err
	}
	origins, err := splice.NewOriginPolicy(o.AllowedOrigins)
	if err != nil {
		return err
	}
	var srcs []netip.Addr
	for _, a := range o.UpstreamSourceAddrs {
		ip, err := netip.ParseAddr(a)
		if err != nil {
			return fmt.Errorf("--upstream-source-addrs: %w", err)
		}
		srcs = append(srcs, ip.Unmap())
	}
	mx := newMetrics(o.MetricsAddress) // nil without --metrics-address (metrics.go)
	srv, err := splice.New(splice.Config{
		FrameSizeLimit:         o.FrameSizeLimit,
		WriteTimeout:           o.WriteTimeout,
		ReadTimeout:            o.ReadTimeout,
		DialTimeout:            o.DialTimeout,
		MaxUpstreamsPerSession: o.MaxUpstreamsPerSession,
		MaxSessions:            o.MaxSessions,
		MaxSessionsPerIP:       o.MaxSessionsPerIP,
		ProxyProtocol:          o.ProxyProtocol,
		Origins:                origins,
		PingInterval:           o.PingInterval,
		IdleTimeout:            o.IdleTimeout,
		Policy:                 pol,
		UpstreamRootCAs:        tf.upstreamRoots(),
		SourceAddrs:            srcs,
		Hooks:                  mx.hooks(),
		Logger:                 log,
	})
	if err != nil {
		return err
	}
	lc := listenConfig(o.Reuseport)
	// Under systemd the socket unit's listener replaces --listen (service.go).
	ln, err := activatedListener(log)
	if err == nil && ln == nil {
		ln, err = lc.Listen(context.Background(), o.Network, o.Listen)
	}
	if err != nil {
		srv.Close()
		return err
	}
	if o.PprofAddress != "" {
		go servePprof(o.PprofAddress, log)
	}
	log.Info("listening", "addr", ln.Addr().String(), "network", o.Network, "tls", tf.mode())
	// Metrics, watchdog, and SIGHUP, which reloads certificate, key and CA
	// files for new connections between RELOADING=1 and READY=1
	// (service.go).
	svc, err := startService(o, srv, mx, ln, tf.reload, log)
	if err != nil {
		ln.Close()
		srv.Close()
		return err
	}
	defer svc.close()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	errc := make(chan error, 1)
	go func() {
		if cfg := tf.listenerConfig(); cfg != nil {
			errc <- srv.ServeTLS(ln, cfg)
			return
		}
		errc <- srv.Serve(ln)
	}()
	svc.ready()
	select {
	case s := <-sig:
		log.Info("shutting down", "signal", s.String(), "timeout", o.ShutdownTimeout)
		svc.stopping() // /healthz 503, STOPPING=1
	case err := <-errc:
		srv.Close()
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn("shutdown timeout: closed the remaining connections", "err", err)
	}
	return nil
}

// servePprof serves Go's profiler; the address is the operator's (never
// public, says the README).
func servePprof(addr string, log *slog.Logger) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	log.Info("pprof", "addr", addr)
	if err := http.ListenAndServe(addr, mux); err != nil {
		log.Error("pprof", "err", err)
	}
}

// listenConfig is how wsplice listens: with --reuseport, SO_REUSEPORT on
// the socket, so a replacement process can bind the same address (the
// metrics address too, so a health check follows the new process).
func listenConfig(reuseport bool) net.ListenConfig {
	lc := net.ListenConfig{}
	if reuseport {
		lc.Control = func(network, address string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	return lc
}
