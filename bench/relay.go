package bench

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// RelayArg is the hidden subcommand that makes the bench binary a bare
// TCP relay (see RelayMain), the relay target's server process.
const RelayArg = "__relay"

// RelayMain runs a bare TCP relay: for each upstream address in args it
// listens on an ephemeral loopback port, logs the listening line that
// wsplice logs, and copies the bytes of every connection it accepts to
// and from a new connection to that upstream. It understands nothing of
// WebSocket. It serves until SIGTERM.
//
// It is the least a proxy process can do: a goroutine per direction and
// io.Copy, which moves TCP to TCP with splice(2) on Linux. Measured
// beside the direct path, it shows what any proxy in a process of its own
// costs on this machine.
func RelayMain(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "relay: no upstream addresses")
		return 2
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	r := &relay{conns: make(map[net.Conn]struct{})}
	for _, to := range args {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, "relay:", err)
			r.close()
			return 1
		}
		r.lns = append(r.lns, ln)
		log.Info("listening", "addr", ln.Addr().String(), "to", to)
		r.wg.Add(1)
		go r.serve(ln, to)
	}
	<-sig
	r.close()
	return 0
}

// relay is RelayMain's state: its listeners and every connection open.
type relay struct {
	lns []net.Listener
	wg  sync.WaitGroup // accept loops and pairs

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func (r *relay) serve(ln net.Listener, to string) {
	defer r.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				fmt.Fprintln(os.Stderr, "relay: accept:", err) // in the harness's report
			}
			return
		}
		u, err := net.Dial("tcp", to)
		if err != nil {
			fmt.Fprintln(os.Stderr, "relay:", err)
			c.Close()
			continue
		}
		if !r.track(c, u) {
			return
		}
		var done sync.WaitGroup
		done.Add(2)
		r.wg.Add(3)
		go r.pipe(u, c, &done)
		go r.pipe(c, u, &done)
		go func() {
			defer r.wg.Done()
			done.Wait()
			c.Close()
			u.Close()
			r.untrack(c, u)
		}()
	}
}

// track records a pair of connections; false when the relay is closing
// (both are closed then).
func (r *relay) track(cs ...net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		r.conns[c] = struct{}{}
	}
	return true
}

func (r *relay) untrack(cs ...net.Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range cs {
		delete(r.conns, c)
	}
}

// pipe copies src to dst until src ends, then passes the end on: a
// half-close where src ended cleanly, a close of both otherwise.
func (r *relay) pipe(dst, src net.Conn, done *sync.WaitGroup) {
	defer r.wg.Done()
	defer done.Done()
	_, err := io.Copy(dst, src)
	if tc, ok := dst.(*net.TCPConn); ok && err == nil {
		tc.CloseWrite()
		return
	}
	dst.Close()
	src.Close()
}

func (r *relay) close() {
	r.mu.Lock()
	r.closed = true
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	for _, ln := range r.lns {
		ln.Close()
	}
	r.wg.Wait()
}
