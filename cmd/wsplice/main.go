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
	log := newLogger(o)
	if err := serve(o, log); err != nil {
		log.Error("wsplice stopped", "err", err)
		return 1
	}
	return 0
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
	if o.TLSCert != "" || o.TLSCA != "" || o.UpstreamCA != "" {
		return errors.New("TLS (--tls-cert, --tls-key, --tls-ca, --upstream-ca) is not implemented yet")
	}
	// Flags of PROTOCOL.md whose feature has not landed yet refuse to
	// start rather than being silently ignored.
	for name, set := range map[string]bool{
		"--metrics-address":     o.MetricsAddress != "",
		"--proxy-protocol":      o.ProxyProtocol,
		"--max-sessions-per-ip": o.MaxSessionsPerIP != 0,
		"--allowed-origins":     len(o.AllowedOrigins) > 0,
	} {
		if set {
			return fmt.Errorf("%s is not implemented yet", name)
		}
	}
	pol, err := rpc.NewHostPolicy(o.AllowedHostnames, o.AllowPrivateUpstreams)
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
	srv, err := splice.New(splice.Config{
		FrameSizeLimit:         o.FrameSizeLimit,
		WriteTimeout:           o.WriteTimeout,
		ReadTimeout:            o.ReadTimeout,
		DialTimeout:            o.DialTimeout,
		MaxUpstreamsPerSession: o.MaxUpstreamsPerSession,
		MaxSessions:            o.MaxSessions,
		PingInterval:           o.PingInterval,
		IdleTimeout:            o.IdleTimeout,
		Policy:                 pol,
		SourceAddrs:            srcs,
		Logger:                 log,
	})
	if err != nil {
		return err
	}
	lc := net.ListenConfig{}
	if o.Reuseport {
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
	ln, err := lc.Listen(context.Background(), o.Network, o.Listen)
	if err != nil {
		srv.Close()
		return err
	}
	if o.PprofAddress != "" {
		go servePprof(o.PprofAddress, log)
	}
	log.Info("listening", "addr", ln.Addr().String(), "network", o.Network)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case s := <-sig:
		log.Info("shutting down", "signal", s.String(), "timeout", o.ShutdownTimeout)
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
