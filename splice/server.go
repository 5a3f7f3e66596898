//go:build linux

package splice

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsplice/wsplice/poller"
	"github.com/wsplice/wsplice/rpc"
)

// Defaults of PROTOCOL.md section 5.
const (
	DefaultFrameSizeLimit         = 5 << 20
	DefaultWriteTimeout           = 5 * time.Second
	DefaultReadTimeout            = 5 * time.Second
	DefaultDialTimeout            = 10 * time.Second
	DefaultMaxUpstreamsPerSession = 1024
)

// Server is the multiplexer: event loops, each running sessions, and the
// worker pool for control messages. Its methods are safe for concurrent
// use.
type Server struct {
	cfg  Config
	log  *slog.Logger
	engs []*engine
	pool *rpc.Pool

	sessions  atomic.Int64
	ipMu      sync.Mutex         // guards perIP
	perIP     map[netip.Addr]int // sessions per client address
	dialing   atomic.Int64       // dials in flight
	started   time.Time
	nextSrc   atomic.Uint32 // round robin over Config.SourceAddrs
	keepEvery time.Duration // period of the keepalive sweep
	loopsWG   sync.WaitGroup

	// memPending is set while a returnMemory run is scheduled.
	memPending atomic.Bool

	done chan struct{} // closed when shutdown starts

	mu     sync.Mutex // guards lns and closed
	lns    []net.Listener
	closed bool
}

// New starts a server's loops and workers; Serve then feeds it
// connections.
func New(cfg Config) (*Server, error) {
	if cfg.FrameSizeLimit <= 0 {
		cfg.FrameSizeLimit = DefaultFrameSizeLimit
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = DefaultReadTimeout
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.MaxUpstreamsPerSession <= 0 || cfg.MaxUpstreamsPerSession > 0xffff {
		cfg.MaxUpstreamsPerSession = DefaultMaxUpstreamsPerSession
	}
	if cfg.Policy == nil {
		cfg.Policy = &rpc.HostPolicy{}
	}
	if cfg.Loops <= 0 {
		cfg.Loops = runtime.GOMAXPROCS(0)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Server{cfg: cfg, log: log, pool: rpc.NewPool(128, 1<<16), done: make(chan struct{}), started: time.Now()}
	tick := min(cfg.ReadTimeout, cfg.WriteTimeout, closeTimeout) / 8
	tick = max(min(tick, 250*time.Millisecond), 5*time.Millisecond)
	// Pings and idle timeouts are coarse by nature: the sweep that looks
	// at them runs at most once a second, so many idle connections cost
	// little, and often enough for short test intervals.
	s.keepEvery = time.Second
	for _, d := range []time.Duration{cfg.PingInterval / 4, cfg.IdleTimeout / 4} {
		if d > 0 && d < s.keepEvery {
			s.keepEvery = max(d, tick)
		}
	}
	for i := range cfg.Loops {
		l, err := poller.New(tick)
		if err != nil {
			for _, e := range s.engs {
				e.loop.Stop()
			}
			s.loopsWG.Wait()
			s.pool.Close()
			return nil, fmt.Errorf("splice: start loop: %w", err)
		}
		e := newEngine(s, i, l)
		s.engs = append(s.engs, e)
		s.loopsWG.Add(1)
		go func() {
			defer s.loopsWG.Done()
			l.Run(e)
			e.unlisten()
			e.closeAll()
			e.closePipe()
		}()
	}
	return s, nil
}

// releaseMin is the least a loop must have let go of from its buffer pool
// for returnMemory; memoryDelay gathers the requests of several loops
// into one run.
const (
	releaseMin  = 8 << 20
	memoryDelay = time.Second
)

// returnMemory asks for a collection that hands the freed memory back to
// the operating system (debug.FreeOSMemory), memoryDelay from now, on a
// timer's goroutine; requests made before it runs share it. A loop asks
// when it has gone quiet after its buffer pool let go of a burst's
// buffers: left to itself, an idle process would collect them at the
// runtime's forced cycle (every two minutes) and return the pages later
// still, and its RSS would stay at the burst's peak meanwhile.
func (s *Server) returnMemory() {
	if s.memPending.CompareAndSwap(false, true) {
		time.AfterFunc(memoryDelay, func() {
			s.memPending.Store(false)
			debug.FreeOSMemory()
		})
	}
}

// ErrServerClosed is returned by Serve after Close or Shutdown.
var ErrServerClosed = errors.New("splice: server closed")

// Serve accepts connections on ln (a TCP listener) until the server is
// shut down, then returns ErrServerClosed. Every loop watches the
// listener's descriptor (EPOLLEXCLUSIVE, so one loop wakes per
// connection) and accepts with accept4 onto itself: no goroutine and no
// net.Conn per connection. ln stays the caller's; Shutdown closes it.
func (s *Server) Serve(ln net.Listener) error {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return fmt.Errorf("splice: listener %T has no file descriptor", ln)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return fmt.Errorf("splice: listener: %w", err)
	}
	lfd := -1
	rc.Control(func(fd uintptr) { lfd = int(fd) })
	if lfd < 0 {
		return errors.New("splice: listener has no file descriptor")
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.lns = append(s.lns, ln)
	s.mu.Unlock()
	errc := make(chan error, len(s.engs))
	for _, e := range s.engs {
		if !e.loop.Submit(func() { errc <- e.listen(lfd) }) {
			errc <- ErrServerClosed
		}
	}
	for range s.engs {
		if err := <-errc; err != nil {
			s.Close()
			return err
		}
	}
	<-s.done
	return ErrServerClosed
}

// listenerBit marks the token of a listening descriptor; its low bits are
// the index in engine.lfds.
const listenerBit = 1 << 62

// listen starts accepting from lfd on this loop.
func (e *engine) listen(lfd int) error {
	if e.stopping {
		return ErrServerClosed
	}
	tok := listenerBit | uint64(len(e.lfds))
	if err := e.loop.Add(lfd, poller.In|poller.Exclusive, tok); err != nil {
		return fmt.Errorf("splice: watch listener: %w", err)
	}
	e.lfds = append(e.lfds, lfd)
	return nil
}

// unlisten stops watching every listener; Shutdown closes them after.
func (e *engine) unlisten() {
	for i, lfd := range e.lfds {
		if lfd >= 0 {
			e.loop.Delete(lfd)
			e.lfds[i] = -1
		}
	}
}

// acceptFrom accepts what is pending on listener i, at most a batch per
// turn so one burst cannot starve established sessions.
func (e *engine) acceptFrom(i int) {
	lfd := e.lfds[i]
	if lfd < 0 {
		return
	}
	for range 64 {
		fd, _, err := unix.Accept4(lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		switch err {
		case nil:
		case unix.EAGAIN:
			return
		case unix.EINTR, unix.ECONNABORTED, unix.EPROTO:
			continue
		default:
			// Out of descriptors or memory: stop watching for a
			// while (the listener is level-triggered and would
			// spin), as net/http backs off.
			e.srv.log.Warn("accept", "err", err)
			e.loop.Delete(lfd)
			e.lfds[i] = -1
			e.lpaused = append(e.lpaused, pausedListener{i: i, fd: lfd, until: e.now.Add(100 * time.Millisecond)})
			return
		}
		unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		// EPOLLEXCLUSIVE tends to wake the same idle loop: hand the
		// connection to the least loaded loop, so sessions (and their
		// upstreams, which follow them) spread evenly.
		if t := e.srv.leastLoaded(e); t != e {
			if !t.handOff(func() { t.accept(fd) }) {
				unix.Close(fd)
			}
			continue
		}
		e.accept(fd)
	}
}

// pausedListener is a listener unwatched after an accept error.
type pausedListener struct {
	i, fd int
	until time.Time
}

// resumeListeners watches again the listeners whose pause has passed.
func (e *engine) resumeListeners() {
	keep := e.lpaused[:0]
	for _, p := range e.lpaused {
		if e.stopping {
			continue
		}
		if e.now.Before(p.until) {
			keep = append(keep, p)
			continue
		}
		if e.loop.Add(p.fd, poller.In|poller.Exclusive, listenerBit|uint64(p.i)) == nil {
			e.lfds[p.i] = p.fd
		}
	}
	e.lpaused = keep
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Sessions returns the number of open sessions.
func (s *Server) Sessions() int { return int(s.sessions.Load()) }

// Shutdown stops accepting, sends every client and upstream a going-away
// close (1001) after what is already queued, and waits for them to close
// until ctx is done; then whatever is left is closed at once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	already := s.closed
	s.closed = true
	lns := s.lns
	s.lns = nil
	s.mu.Unlock()
	if already {
		s.loopsWG.Wait()
		return nil
	}
	close(s.done)
	// Stop watching the listeners in every loop, then close them at
	// once: a listener left open while sessions drain would queue new
	// connections that nobody accepts (with SO_REUSEPORT and
	// net.ipv4.tcp_migrate_req, closing hands them to another process).
	unwatched := make(chan struct{}, len(s.engs))
	for _, e := range s.engs {
		if !e.loop.Submit(func() { e.unlisten(); unwatched <- struct{}{} }) {
			unwatched <- struct{}{}
		}
	}
	for range s.engs {
		<-unwatched
	}
	for _, ln := range lns {
		ln.Close()
	}
	drained := make(chan struct{}, len(s.engs))
	for _, e := range s.engs {
		if !e.loop.Submit(func() { e.drain(drained) }) {
			drained <- struct{}{}
		}
	}
	var err error
	for range s.engs {
		select {
		case <-drained:
		case <-ctx.Done():
			err = ctx.Err()
		}
		if err != nil {
			break
		}
	}
	for _, e := range s.engs {
		e.loop.Stop()
	}
	s.loopsWG.Wait()
	s.pool.Close()
	return err
}

// Close shuts the server down, giving peers a moment to see the close
// frames.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	s.Shutdown(ctx)
	return nil
}

// accept takes a new client connection onto this loop.
func (e *engine) accept(fd int) *conn {
	if e.stopping {
		unix.Close(fd)
		return nil
	}
	c, err := e.add(fd, kindClient, nil)
	if err != nil {
		unix.Close(fd)
		e.srv.log.Warn("register connection", "err", err)
		return nil
	}
	c.st = stHandshake
	c.deadline = e.ns + int64(e.srv.cfg.ReadTimeout)
	return c
}

// setSource records the client address of a handshaking connection whose
// socket cannot tell it (a PROXY header, or the TLS path's socketpair).
func (e *engine) setSource(c *conn, src netip.AddrPort) {
	if e.srcAddr == nil {
		e.srcAddr = make(map[*conn]netip.AddrPort)
	}
	e.srcAddr[c] = src
	c.hasSrc = true
}

// drain starts a graceful shutdown of this loop and signals done once
// no connection is left.
func (e *engine) drain(done chan<- struct{}) {
	e.stopping = true
	e.drained = done
	e.unlisten()
	away := closeMsg{code: 1001, reason: "server shutting down"}
	for _, c := range e.conns {
		if c == nil {
			continue
		}
		switch {
		case c.kind == kindClient && c.st == stHandshake:
			// Let it finish (--read-timeout bounds it): closing it
			// now would reset a client whose request is in flight.
			// upgradeRequest ends its session with 1001 at once.
		case c.kind == kindClient && c.st == stOpen:
			e.endSession(c.sess, away, &away)
		}
	}
	e.checkDrained()
}

func (e *engine) checkDrained() {
	if e.drained != nil && e.live == 0 {
		e.drained <- struct{}{}
		e.drained = nil
	}
}

// closeAll closes every descriptor left once the loop has stopped.
func (e *engine) closeAll() {
	for _, c := range e.conns {
		if c == nil {
			continue
		}
		if c.kind == kindClient && c.sess != nil && !c.sess.ended.Load() {
			c.sess.ended.Store(true)
			e.srv.release(c.sess.remote.Addr())
			e.cnt[cntSessionsClosed]++
			e.cnt[cntUpstreamsClosed] += uint64(c.sess.nups)
		}
		e.closeFD(c)
	}
}

func (s *Server) logSessionEnd(ss *session) {
	s.log.Info("session end",
		"remote", ss.remote,
		"duration", time.Duration(time.Now().UnixNano()-ss.start).Round(time.Millisecond),
		"upstreams", ss.upstreamsOpened,
		"bytes_in", ss.bytesIn, "frames_in", ss.framesIn,
		"bytes_out", ss.bytesOut, "frames_out", ss.framesOut)
}

// adopt hands a connected, non-blocking client descriptor to a loop, as
// if a listener had accepted it. It is how connections that another path
// accepted (TLS termination, for one) enter the reactor. The fd is the
// server's from then on; it returns false (fd closed) after shutdown.
func (s *Server) adopt(fd int, peer netip.AddrPort) bool {
	e := s.leastLoaded(nil)
	if !e.handOff(func() {
		if c := e.accept(fd); c != nil && peer.IsValid() {
			e.setSource(c, peer)
		}
	}) {
		unix.Close(fd)
		return false
	}
	return true
}

// admit counts a new session against --max-sessions and
// --max-sessions-per-ip. It returns 0, or the HTTP status and reason to
// refuse with. Every admitted session is released once.
func (s *Server) admit(ip netip.Addr) (status int, reason string) {
	if max := int64(s.cfg.MaxSessions); max > 0 {
		for {
			n := s.sessions.Load()
			if n >= max {
				return 503, "too many sessions"
			}
			if s.sessions.CompareAndSwap(n, n+1) {
				break
			}
		}
	} else {
		s.sessions.Add(1)
	}
	if max := s.cfg.MaxSessionsPerIP; max > 0 && ip.IsValid() {
		s.ipMu.Lock()
		if s.perIP[ip] >= max {
			s.ipMu.Unlock()
			s.sessions.Add(-1)
			return 429, "too many sessions from this address"
		}
		if s.perIP == nil {
			s.perIP = make(map[netip.Addr]int)
		}
		s.perIP[ip]++
		s.ipMu.Unlock()
	}
	return 0, ""
}

// release undoes admit when a session ends.
func (s *Server) release(ip netip.Addr) {
	s.sessions.Add(-1)
	if s.cfg.MaxSessionsPerIP > 0 && ip.IsValid() {
		s.ipMu.Lock()
		if s.perIP[ip]--; s.perIP[ip] <= 0 {
			delete(s.perIP, ip)
		}
		s.ipMu.Unlock()
	}
}

// leastLoaded returns the loop with the fewest client connections, those
// on their way to it included, preferring from (the loop that accepted)
// on a tie.
func (s *Server) leastLoaded(from *engine) *engine {
	best := from
	var bestLoad int64 = -1
	if from != nil {
		bestLoad = from.load()
	}
	for _, e := range s.engs {
		if l := e.load(); bestLoad < 0 || l < bestLoad {
			best, bestLoad = e, l
		}
	}
	return best
}

// load is what leastLoaded compares: client connections on e, and those
// handed to it that it has not added yet. Without the second, a burst
// accepted by one loop all goes to the loop whose count has not caught up.
func (e *engine) load() int64 { return e.clients.Load() + e.incoming.Load() }

// handOff runs accept, which adds a client connection, on e's loop, and
// counts the connection against e until it runs. It reports false when e
// is closed (accept does not run).
func (e *engine) handOff(accept func()) bool {
	e.incoming.Add(1)
	if !e.loop.Submit(func() {
		accept()
		e.incoming.Add(-1) // after: counted all along
	}) {
		e.incoming.Add(-1)
		return false
	}
	return true
}
