package bench

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/gobwas/ws"
)

// upstreamKind selects what an upstream server does with the messages it
// receives.
type upstreamKind int

const (
	// kindSink counts payload bytes and messages and answers nothing but
	// pings and closes.
	kindSink upstreamKind = iota
	// kindEcho sends every message back as it arrives (streamed, never
	// buffered whole).
	kindEcho
	// kindIdle holds connections open with the smallest footprint: a
	// small read buffer, pings and closes answered, data ignored.
	kindIdle
)

func (k upstreamKind) String() string {
	switch k {
	case kindSink:
		return "sink"
	case kindEcho:
		return "echo"
	case kindIdle:
		return "idle"
	}
	return fmt.Sprintf("upstreamKind(%d)", int(k))
}

const (
	sinkBufSize = 64 << 10
	echoBufSize = 64 << 10
	idleBufSize = 512
	// maxConnReads bounds the read loop of one upstream connection; the
	// harness closes every connection at the end of a cell long before.
	maxConnReads = 1 << 40
)

// connStat counts what one upstream connection received. Written by the
// connection's goroutine, read by the cell's measuring goroutine.
type connStat struct {
	bytes atomic.Int64 // payload bytes
	msgs  atomic.Int64 // complete data messages
}

// upstream is a set of WebSocket servers on loopback of one kind. Every
// accepted connection gets a goroutine; Close ends them all.
type upstream struct {
	kind upstreamKind
	lns  []net.Listener
	urls []string // one ws:// URL per listener, immutable

	wg sync.WaitGroup

	mu     sync.Mutex // guards the fields below
	conns  map[net.Conn]struct{}
	stats  []*connStat // in accept order, never removed
	closed bool
	errs   int   // connections that ended with an error other than close
	err    error // first such error
}

// startUpstream listens on n loopback ports.
func startUpstream(kind upstreamKind, n int) (*upstream, error) {
	u := &upstream{kind: kind, conns: make(map[net.Conn]struct{})}
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			u.Close()
			return nil, err
		}
		u.lns = append(u.lns, ln)
		u.urls = append(u.urls, "ws://"+ln.Addr().String()+"/")
		u.wg.Add(1)
		go u.acceptLoop(ln)
	}
	return u, nil
}

// url returns the URL clients numbered i should use.
func (u *upstream) url(i int) string { return u.urls[i%len(u.urls)] }

func (u *upstream) acceptLoop(ln net.Listener) {
	defer u.wg.Done()
	for i := 0; i < maxConnReads; i++ { // ends when the listener is closed
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		st := &connStat{}
		u.mu.Lock()
		if u.closed {
			u.mu.Unlock()
			conn.Close()
			return
		}
		u.conns[conn] = struct{}{}
		u.stats = append(u.stats, st)
		u.wg.Add(1)
		u.mu.Unlock()
		go u.serve(conn, st)
	}
}

func (u *upstream) serve(conn net.Conn, st *connStat) {
	defer u.wg.Done()
	err := u.serveConn(conn, st)
	conn.Close()
	u.mu.Lock()
	if !u.closed && err != nil && !errors.Is(err, errClosed) && !isClosedConn(err) {
		u.errs++
		if u.err == nil {
			u.err = err
		}
	}
	u.mu.Unlock()
}

func (u *upstream) serveConn(conn net.Conn, st *connStat) error {
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
		if u.kind == kindSink {
			tc.SetReadBuffer(sockBuf)
		}
	}
	conn, err := sniffTLS(conn)
	if err != nil {
		return err
	}
	rest, err := serverHandshake(conn)
	if err != nil {
		return err
	}
	switch u.kind {
	case kindSink:
		return serveSink(conn, rest, st)
	case kindEcho:
		bw := bufio.NewWriterSize(conn, echoBufSize)
		return serveScanner(conn, newScanner(echoBufSize, rest), &echoHandler{w: bw}, bw)
	default:
		bw := bufio.NewWriterSize(conn, 256)
		return serveScanner(conn, newScanner(idleBufSize, rest), &idleHandler{w: bw}, bw)
	}
}

// counts returns the totals over every connection and each connection's
// payload bytes, in accept order.
func (u *upstream) counts() (bytes, msgs int64, perConn []int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, st := range u.stats {
		b := st.bytes.Load()
		bytes += b
		msgs += st.msgs.Load()
		perConn = append(perConn, b)
	}
	return bytes, msgs, perConn
}

// connCount returns how many connections were accepted.
func (u *upstream) connCount() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.stats)
}

// failure returns how many connections failed and the first error.
func (u *upstream) failure() (int, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.errs, u.err
}

// Close stops the listeners, closes every connection and waits for their
// goroutines.
func (u *upstream) Close() error {
	u.mu.Lock()
	u.closed = true
	for _, ln := range u.lns {
		ln.Close()
	}
	for c := range u.conns {
		c.Close()
	}
	u.mu.Unlock()
	u.wg.Wait()
	return nil
}

// serveSink counts payload bytes with the cheapest loop the harness has:
// one big read, headers parsed in place, payloads skipped (never
// unmasked). Counters are published once per read.
func serveSink(conn net.Conn, rest []byte, st *connStat) error {
	buf := make([]byte, max(sinkBufSize, len(rest)))
	w := copy(buf, rest)
	r := 0
	var (
		remaining int64 // payload bytes left in the current data frame
		fin       bool  // the current data frame ends its message
		out       []byte
	)
	for i := 0; i < maxConnReads; i++ {
		var nbytes, nmsgs int64
	parse:
		for r < w {
			if remaining > 0 {
				take := min(remaining, int64(w-r))
				r += int(take)
				remaining -= take
				nbytes += take
				if remaining == 0 && fin {
					nmsgs++
				}
				continue
			}
			// Fast path: a data frame with a 7-bit length (RFC 6455
			// section 5.2), the common case at small payloads.
			if w-r >= 6 && buf[r]&0x7f <= byte(ws.OpBinary) && buf[r+1]&0x7f < 126 {
				b0, b1 := buf[r], buf[r+1]
				hn := 2 + 4*int(b1>>7)
				l := int(b1 & 0x7f)
				if w-r >= hn+l {
					r += hn + l
					nbytes += int64(l)
					nmsgs += int64(b0 >> 7)
					continue
				}
			}
			h, n, err := parseHeader(buf[r:w])
			if err != nil {
				return err
			}
			if n == 0 {
				break parse
			}
			if h.OpCode.IsControl() {
				if int64(w-r-n) < h.Length {
					break parse
				}
				p := buf[r+n : r+n+int(h.Length)]
				r += n + int(h.Length)
				if h.Masked {
					ws.Cipher(p, h.Mask, 0)
				}
				var err error
				if out, err = answerControl(conn, out[:0], h.OpCode, p); err != nil {
					return err
				}
				continue
			}
			r += n
			remaining, fin = h.Length, h.Fin
			if remaining == 0 && fin {
				nmsgs++
			}
		}
		if nbytes > 0 {
			st.bytes.Add(nbytes)
		}
		if nmsgs > 0 {
			st.msgs.Add(nmsgs)
		}
		if r == w {
			r, w = 0, 0
		} else if len(buf)-w < maxHeaderSize+125 {
			w = copy(buf, buf[r:w])
			r = 0
		}
		n, err := conn.Read(buf[w:])
		w += n
		if err != nil {
			return err
		}
	}
	return nil
}

// answerControl writes the reply to a control frame from a client: a pong
// for a ping (with the ping's payload, RFC 6455 section 5.5.3), the close
// echoed for a close (section 5.5.1), after which it returns errClosed.
func answerControl(w interface{ Write([]byte) (int, error) }, out []byte, op ws.OpCode, p []byte) ([]byte, error) {
	switch op {
	case ws.OpPing:
		out = appendFrame(out, ws.OpPong, nil, p)
		_, err := w.Write(out)
		return out, err
	case ws.OpClose:
		out = appendFrame(out, ws.OpClose, nil, p)
		w.Write(out)
		return out, errClosed
	}
	return out, nil
}

// serveScanner runs a frame handler over a connection, flushing bw after
// every read.
func serveScanner(conn net.Conn, s *scanner, hd frameHandler, bw *bufio.Writer) error {
	for i := 0; i < maxConnReads; i++ {
		err := s.readOnce(conn, hd)
		if ferr := bw.Flush(); ferr != nil && err == nil {
			err = ferr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// echoHandler sends every frame back unmasked, piece by piece.
type echoHandler struct {
	w   *bufio.Writer
	hdr [maxHeaderSize]byte
	out []byte
}

func (e *echoHandler) frame(h *ws.Header, p []byte, off int64, end bool) error {
	if h.Masked {
		ws.Cipher(p, h.Mask, int(off))
	}
	if h.OpCode.IsControl() {
		var err error
		if h.OpCode == ws.OpPing || h.OpCode == ws.OpClose {
			e.out, err = answerControl(e.w, e.out[:0], h.OpCode, p)
		}
		if errors.Is(err, errClosed) {
			e.w.Flush()
		}
		return err
	}
	if off == 0 {
		out := *h
		out.Masked = false
		if _, err := e.w.Write(appendHeader(e.hdr[:0], out)); err != nil {
			return err
		}
	}
	_, err := e.w.Write(p)
	return err
}

// idleHandler answers pings and closes and drops data.
type idleHandler struct {
	w   *bufio.Writer
	out []byte
}

func (d *idleHandler) frame(h *ws.Header, p []byte, off int64, end bool) error {
	if !h.OpCode.IsControl() {
		return nil
	}
	if h.Masked {
		ws.Cipher(p, h.Mask, 0)
	}
	var err error
	d.out, err = answerControl(d.w, d.out[:0], h.OpCode, p)
	if errors.Is(err, errClosed) {
		d.w.Flush()
	}
	return err
}

// isClosedConn reports errors that only say the connection went away,
// which is how every connection ends at the end of a cell.
func isClosedConn(err error) bool {
	// Over TLS a client that closes at the end of a cell, without
	// close_notify and mid-record, shows as io.ErrUnexpectedEOF.
	return errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, os.ErrDeadlineExceeded)
}
