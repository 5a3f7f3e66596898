//go:build linux

package splice

// TLS, client side (ServeTLS) and upstream side (wss://, dialTLS).
//
// crypto/tls is a blocking API, so a TLS connection takes a goroutine
// bridge and the reactor only ever sees plaintext: after the handshake, a
// socketpair(2) joins the two. One end goes to a loop exactly like an
// accepted TCP socket (adopt) or a dialed upstream (dialed.fd); a bridge
// copies between the other end and the *tls.Conn with two goroutines:
//
//	TCP ◄──► tls.Conn ◄──► bridge (2 goroutines) ◄──► socketpair ◄──► loop
//
// So sessions behave exactly as plain ones (PROTOCOL.md), with the
// reactor's flow control, timeouts and close handshake unchanged; the
// bridge carries half-closes both ways (close_notify plus FIN one way,
// shutdown(SHUT_WR) the other) so a close handshake ends the same.
//
// An idle bridge holds no copy buffer: the reactor-to-TLS side waits for
// its socket to be readable before taking a buffer from a pool, and the
// TLS-to-reactor side does the same on the TCP socket, which works
// because recordConn never lets crypto/tls read past the record it is
// decoding (see recordConn). The README has the measured cost.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/wsplice/wsplice/rpc"
)

// ServeTLS accepts connections on ln, does the TLS handshake with cfg on
// a goroutine per connection, and hands each connection that completes it
// to the loops, which then serve it exactly like a plain one (Serve). A
// handshake that fails, or does not complete within Config.ReadTimeout,
// closes the connection and is logged with its reason; no session is
// created. cfg is used for every handshake, so a cfg with
// GetConfigForClient can change certificates while the server runs.
//
// ServeTLS returns ErrServerClosed after Close or Shutdown. ln stays the
// caller's; Shutdown closes it.
func (s *Server) ServeTLS(ln net.Listener, cfg *tls.Config) error {
	if cfg == nil {
		return errors.New("splice: ServeTLS needs a tls.Config")
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.lns = append(s.lns, ln)
	s.mu.Unlock()

	// When Shutdown starts, accepting stops (as with Serve) and ctx ends
	// the handshakes in progress; ctx also ends them if ServeTLS fails.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.done:
			cancel()
			ln.Close()
		case <-ctx.Done():
		}
	}()
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("splice: accept: %w", err)
			}
			// Out of descriptors or memory: back off, as net/http does,
			// rather than spin.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("accept", "err", err, "retry_in", delay)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-s.done:
				t.Stop()
			}
			continue
		}
		delay = 0
		go s.handshakeTLS(ctx, c, cfg)
	}
}

// handshakeTLS runs the server side of the TLS handshake on c and, once
// it is complete, hands the connection to a loop through a bridge.
//
// With Config.ProxyProtocol the PROXY header comes before the TLS
// handshake (a balancer passing TLS through): it is read here, within the
// same ReadTimeout, and written to the loop's end of the bridge ahead of
// the plaintext, so the loop takes the client's address from it exactly
// as on a plain connection.
func (s *Server) handshakeTLS(ctx context.Context, c net.Conn, cfg *tls.Config) {
	rc := newRecordConn(c)
	remote := c.RemoteAddr().String()
	hctx, cancel := context.WithTimeout(ctx, s.cfg.ReadTimeout)
	defer cancel()
	var proxyHdr []byte
	if s.cfg.ProxyProtocol {
		deadline, _ := hctx.Deadline()
		c.SetReadDeadline(deadline)
		hdr, src, err := rc.readProxyHeader()
		c.SetReadDeadline(time.Time{})
		if err != nil {
			rc.Close()
			rc.release()
			if ctx.Err() == nil {
				s.log.Warn("tls connection refused: PROXY protocol header", "remote", remote, "err", s.tlsReason(err))
			}
			return
		}
		if src.IsValid() {
			remote = src.String()
		}
		proxyHdr = hdr
	}
	tc := tls.Server(rc, cfg)
	err := tc.HandshakeContext(hctx)
	if err != nil {
		rc.Close()
		rc.release()
		switch {
		case ctx.Err() != nil:
			// Shutting down: not the client's fault.
		case errors.Is(err, io.EOF):
			// Closed without an alert: a port probe or a load
			// balancer's TCP health check, not a refusal.
			s.log.Debug("tls connection closed before the handshake", "remote", remote)
		default:
			s.log.Warn("tls handshake refused", "remote", remote, "err", s.tlsReason(err))
		}
		return
	}
	fd, err := s.bridge(tc, rc, proxyHdr)
	if err != nil {
		rc.Close()
		rc.release()
		s.log.Warn("tls bridge", "remote", remote, "err", err)
		return
	}
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		st := tc.ConnectionState()
		peer := ""
		if len(st.PeerCertificates) > 0 {
			peer = st.PeerCertificates[0].Subject.String()
		}
		s.log.Debug("tls handshake", "remote", remote,
			"version", tls.VersionName(st.Version), "cipher", tls.CipherSuiteName(st.CipherSuite), "client_cert", peer)
	}
	// After shutdown adopt closes fd; the bridge then sees EOF and ends.
	// The loop's end is a socketpair: it has no peer address, so the
	// TCP peer's goes along (a PROXY header on the pair overrides it).
	var peer netip.AddrPort
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		peer = ta.AddrPort()
		peer = netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())
	}
	s.adopt(fd, peer)
}

// tlsReason turns a handshake error into one line for a log or a 4007
// message.
func (s *Server) tlsReason(err error) string {
	var pe *os.PathError
	var se *os.SyscallError
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed by the peer"
	case errors.As(err, &pe):
		return pe.Err.Error()
	case errors.As(err, &se):
		return se.Err.Error()
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return err.Error()
}

// dialTLS completes a wss:// dial on a connected TCP socket: TLS handshake
// verified against the URL's host (SNI too) and Config.UpstreamRootCAs,
// WebSocket handshake through it, then a bridge. It runs on a worker;
// deadline bounds both handshakes. fd is dialTLS's from the call on: it
// is closed on failure, and on success it belongs to the bridge, whose
// reactor end is returned.
func (s *Server) dialTLS(fd int, p *rpc.ConnectParams, deadline time.Time) (*dialed, *dialError) {
	hostport := net.JoinHostPort(p.Host, p.Port)
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	rc := newRecordConn(newFileConn(fd, "wss://"+hostport))
	fail := func(stage, what string, err error) (*dialed, *dialError) {
		rc.Close()
		rc.release()
		return nil, failed(stage, &rpc.Error{Code: rpc.DialError, Message: what + " with " + hostport + " failed: " + s.tlsReason(err)})
	}
	cfg := &tls.Config{ServerName: p.Host, MinVersion: tls.VersionTLS12}
	if roots := s.cfg.UpstreamRootCAs; roots != nil {
		cfg.RootCAs = roots()
	}
	tc := tls.Client(rc, cfg)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		return fail(stageTLS, "TLS handshake", err)
	}
	d := ws.Dialer{Protocols: p.Subprotocols}
	if len(p.Header) > 0 {
		d.Header = ws.HandshakeHeaderHTTP(p.Header)
	}
	tc.SetDeadline(deadline)
	br, hs, err := d.Upgrade(tc, p.URL)
	if err != nil {
		return fail(stageHandshake, "WebSocket handshake", err)
	}
	tc.SetDeadline(time.Time{})
	out := &dialed{subprotocol: hs.Protocol}
	if br != nil {
		if br.Buffered() > 0 {
			out.leftover = make([]byte, br.Buffered())
			io.ReadFull(br, out.leftover)
		}
		ws.PutReader(br)
	}
	if out.fd, err = s.bridge(tc, rc, nil); err != nil {
		return fail(stageTLS, "TLS bridge", err)
	}
	return out, nil
}

// bridgeBufSize is the size of the bridge's copy buffers. It is larger
// than a TLS record's plaintext (at most 2^14 bytes, RFC 8446 section
// 5.1, RFC 5246 section 6.2.1), so a tls.Conn.Read given more than that
// returns with the record fully drained: nothing decrypted is left inside
// crypto/tls.
const bridgeBufSize = 32 << 10

// maxPlaintext is the largest plaintext of one TLS record.
const maxPlaintext = 1 << 14

// bridgeBufs holds the copy buffers of every bridge: a buffer is taken
// when bytes are ready to move and given back when they have moved.
var bridgeBufs = sync.Pool{New: func() any {
	b := make([]byte, bridgeBufSize)
	return &b
}}

// bridge joins a TLS connection whose handshake is complete to one end of
// a socketpair and returns the other end, a non-blocking descriptor for a
// loop. Two goroutines copy, one per direction; when both directions have
// ended (or either fails) every descriptor is closed.
type bridge struct {
	s      *Server
	tc     *tls.Conn
	rc     *recordConn     // under tc
	pair   *os.File        // our end of the socketpair, in Go's poller
	praw   syscall.RawConn // of pair
	prefix []byte          // sent to the loop before any plaintext; then nil
	live   atomic.Int32    // directions still running
	once   sync.Once       // guards the final close
}

// bridge starts the bridge of tc (whose transport is rc); prefix, if any,
// reaches the loop first.
func (s *Server) bridge(tc *tls.Conn, rc *recordConn, prefix []byte) (int, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("socketpair", err)
	}
	// A non-blocking descriptor given to os.NewFile joins Go's poller:
	// reads and writes park the goroutine, not a thread.
	pair := os.NewFile(uintptr(fds[1]), "tls-bridge")
	praw, err := pair.SyscallConn()
	if err != nil {
		pair.Close()
		unix.Close(fds[0])
		return -1, err
	}
	b := &bridge{s: s, tc: tc, rc: rc, pair: pair, praw: praw, prefix: prefix}
	b.live.Store(2)
	go b.fromTLS()
	go b.toTLS()
	return fds[0], nil
}

// fromTLS copies what the TLS peer sends to the loop. At the peer's
// close_notify (or clean EOF) it shuts the write side of the pair, as a
// FIN would on a plain socket.
func (b *bridge) fromTLS() {
	defer b.rc.release()
	if b.prefix != nil {
		_, err := b.pair.Write(b.prefix)
		b.prefix = nil
		if err != nil {
			b.fail()
			return
		}
	}
	for {
		// Idle: wait without a buffer. Bytes that recordConn already
		// holds need no wait.
		if b.rc.idle() {
			if err := b.rc.waitReadable(); err != nil {
				b.fail()
				return
			}
		}
		bp := bridgeBufs.Get().(*[]byte)
		buf := *bp
		n, err := b.tc.Read(buf)
		// Whole records already read: take them too, so one write to
		// the pair carries them all (a partial one would make the
		// decrypted bytes wait for the rest). Each Read is given more
		// than a record, so none is left half-decrypted.
		for err == nil && b.rc.wholeRecord() && len(buf)-n > maxPlaintext {
			var m int
			m, err = b.tc.Read(buf[n:])
			n += m
		}
		if n > 0 {
			if _, werr := b.pair.Write(buf[:n]); werr != nil {
				bridgeBufs.Put(bp)
				b.fail()
				return
			}
		}
		bridgeBufs.Put(bp)
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			b.praw.Control(func(fd uintptr) { unix.Shutdown(int(fd), unix.SHUT_WR) })
			b.done()
			return
		default:
			b.fail()
			return
		}
	}
}

// toTLS copies what the loop writes to the TLS peer. When the loop shuts
// its write side (the end of a close handshake) it sends close_notify and
// a FIN, then gives the peer as long as the loop lingers to finish.
func (b *bridge) toTLS() {
	wt := b.s.cfg.WriteTimeout
	var (
		bp   *[]byte
		n    int
		rerr error
	)
	// read is called by RawConn.Read until it returns true, with a wait
	// for readability after each false: the buffer is taken only for
	// the read itself.
	read := func(fd uintptr) bool {
		p := bridgeBufs.Get().(*[]byte)
		for {
			n, rerr = unix.Read(int(fd), *p)
			if rerr != unix.EINTR {
				break
			}
		}
		if rerr == unix.EAGAIN {
			bridgeBufs.Put(p)
			return false
		}
		bp = p
		return true
	}
	for {
		bp, n, rerr = nil, 0, nil
		if err := b.praw.Read(read); err != nil {
			b.fail() // the pair was closed by fail
			return
		}
		if rerr != nil || n <= 0 {
			bridgeBufs.Put(bp)
			if rerr != nil {
				b.fail()
				return
			}
			// EOF: the loop is done writing.
			b.tc.SetWriteDeadline(time.Now().Add(wt))
			b.tc.CloseWrite()
			b.rc.closeWrite()
			b.tc.SetReadDeadline(time.Now().Add(closeTimeout + time.Second))
			b.done()
			return
		}
		// A peer that accepts nothing for --write-timeout is gone, as on
		// a plain socket.
		b.tc.SetWriteDeadline(time.Now().Add(wt))
		_, werr := b.tc.Write((*bp)[:n])
		bridgeBufs.Put(bp)
		if werr != nil {
			b.fail()
			return
		}
	}
}

// done records that one direction ended cleanly; the last one closes.
func (b *bridge) done() {
	if b.live.Add(-1) == 0 {
		b.close()
	}
}

// fail ends both directions at once: closing both sides wakes the other
// goroutine, whose I/O then fails.
func (b *bridge) fail() {
	b.close()
	b.live.Add(-1)
}

// close closes the TCP connection and our end of the pair, once. The
// loop sees EOF (or a reset) on its end, like a dropped TCP peer. No
// close_notify is sent here: that is done on a clean end by toTLS.
func (b *bridge) close() {
	b.once.Do(func() {
		b.rc.Close()
		b.pair.Close()
	})
}

// recordConn is the transport under a bridged tls.Conn. It reads from
// the socket into a pooled buffer and hands crypto/tls at most the rest
// of the TLS record in progress (RFC 8446 section 5.1: a 5-byte header
// whose last two bytes are the length of the body). So crypto/tls never
// holds bytes of a record it has not started: once tls.Conn.Read has
// returned a record's plaintext, anything not yet decrypted is in
// recordConn's buffer (idle reports whether there is any) or still in
// the kernel. That is what lets the bridge wait for the socket without
// holding a buffer, and it costs a copy of the ciphertext.
//
// Read is called by one goroutine at a time (crypto/tls's input lock);
// idle and waitReadable by the bridge's reading goroutine, never during
// a Read. Write passes through.
type recordConn struct {
	net.Conn
	raw  syscall.RawConn       // of Conn; nil if it has none
	peek func(fd uintptr) bool // for raw.Read: is there a byte to read?
	one  [1]byte               // peek's buffer

	buf *[]byte // pooled; nil when empty
	off int     // (*buf)[off:] is unread
	end int     // (*buf)[:end] holds data
	err error   // returned once the buffer is drained

	hdr  [5]byte // header of the record in progress
	nhdr int     // header bytes seen; 5 once the header is complete
	left int     // body bytes of that record not yet passed on
}

func newRecordConn(c net.Conn) *recordConn {
	rc := &recordConn{Conn: c}
	if sc, ok := c.(syscall.Conn); ok {
		rc.raw, _ = sc.SyscallConn()
	}
	rc.peek = func(fd uintptr) bool {
		for {
			_, _, err := unix.Recvfrom(int(fd), rc.one[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			if err != unix.EINTR {
				return err != unix.EAGAIN
			}
		}
	}
	return rc
}

// Read implements io.Reader for crypto/tls.
func (c *recordConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.buf == nil {
		if c.err != nil {
			return 0, c.err
		}
		bp := bridgeBufs.Get().(*[]byte)
		n, err := c.Conn.Read(*bp)
		if n <= 0 {
			bridgeBufs.Put(bp)
			if err == nil {
				err = io.ErrNoProgress
			}
			return 0, err
		}
		c.buf, c.off, c.end, c.err = bp, 0, n, err
	}
	n := c.take((*c.buf)[c.off:c.end], len(p))
	copy(p, (*c.buf)[c.off:c.off+n])
	c.off += n
	if c.off == c.end {
		c.release()
	}
	return n, nil
}

// take returns how many leading bytes of b, at most max, belong to the
// record in progress, and moves the parser past them.
func (c *recordConn) take(b []byte, max int) int {
	n := 0
	for n < len(b) && n < max {
		if c.nhdr < len(c.hdr) {
			c.hdr[c.nhdr] = b[n]
			c.nhdr++
			n++
			if c.nhdr == len(c.hdr) {
				c.left = int(c.hdr[3])<<8 | int(c.hdr[4])
				if c.left == 0 {
					c.nhdr = 0
					return n
				}
			}
			continue
		}
		k := min(c.left, len(b)-n, max-n)
		n += k
		c.left -= k
		if c.left == 0 {
			c.nhdr = 0
			return n // the record ends here
		}
	}
	return n
}

// idle reports whether recordConn holds no unread bytes.
func (c *recordConn) idle() bool { return c.buf == nil && c.err == nil }

// readProxyHeader reads a PROXY protocol header (ParseProxyHeader) from
// the connection, before any TLS, and returns it with the client address
// it carries. Bytes read past it stay buffered for crypto/tls.
func (c *recordConn) readProxyHeader() (hdr []byte, src netip.AddrPort, err error) {
	bp := bridgeBufs.Get().(*[]byte)
	b := (*bp)[:MaxProxyHeaderLen]
	have := 0
	for {
		n, rerr := c.Conn.Read(b[have:])
		have += n
		var hn int
		src, hn, err = ParseProxyHeader(b[:have])
		switch {
		case err != nil:
			bridgeBufs.Put(bp)
			return nil, src, err
		case hn > 0:
			hdr = append([]byte(nil), b[:hn]...)
			if have > hn {
				c.buf, c.off, c.end = bp, hn, have
			} else {
				bridgeBufs.Put(bp)
			}
			return hdr, src, nil
		case rerr != nil:
			bridgeBufs.Put(bp)
			return nil, src, rerr
		}
	}
}

// wholeRecord reports whether the unread bytes hold the next record
// entirely, so that a Read of it cannot block.
func (c *recordConn) wholeRecord() bool {
	if c.buf == nil || c.nhdr != 0 {
		return false
	}
	b := (*c.buf)[c.off:c.end]
	return len(b) >= len(c.hdr) && len(b) >= len(c.hdr)+(int(b[3])<<8|int(b[4]))
}

// waitReadable blocks until the socket has bytes (or EOF, or an error)
// to read, without reading them, or until the read deadline or Close.
func (c *recordConn) waitReadable() error {
	if c.raw == nil {
		return nil
	}
	return c.raw.Read(c.peek)
}

// release gives the buffer back to the pool. Only the goroutine that
// reads may call it, or anyone once reading has stopped.
func (c *recordConn) release() {
	if c.buf != nil {
		bridgeBufs.Put(c.buf)
		c.buf, c.off, c.end = nil, 0, 0
	}
}

// closeWrite sends a FIN after close_notify, as a plain socket's
// shutdown(SHUT_WR) would.
func (c *recordConn) closeWrite() {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

// fileConn is a connected socket as a net.Conn without dup(2): os.NewFile
// puts the non-blocking descriptor in Go's poller, which gives reads and
// writes that park the goroutine and deadlines. Closing it closes the
// descriptor.
type fileConn struct {
	*os.File
	laddr, raddr net.Addr
}

func newFileConn(fd int, name string) *fileConn {
	c := &fileConn{File: os.NewFile(uintptr(fd), name)}
	if sa, err := unix.Getsockname(fd); err == nil {
		c.laddr = sockaddrTCP(sa)
	}
	if sa, err := unix.Getpeername(fd); err == nil {
		c.raddr = sockaddrTCP(sa)
	}
	return c
}

func sockaddrTCP(sa unix.Sockaddr) net.Addr {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)))
	case *unix.SockaddrInet6:
		return net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port)))
	}
	return nil
}

func (c *fileConn) LocalAddr() net.Addr  { return c.laddr }
func (c *fileConn) RemoteAddr() net.Addr { return c.raddr }

// CloseWrite shuts the write side of the socket.
func (c *fileConn) CloseWrite() error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Shutdown(int(fd), unix.SHUT_WR) }); err != nil {
		return err
	}
	return os.NewSyscallError("shutdown", serr)
}
