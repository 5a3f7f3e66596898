//go:build linux

package splice

import (
	"net/netip"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/wsplice/wsplice/rpc"
	"github.com/wsplice/wsplice/wsframe"
)

// maxInflight bounds the control messages of one session being handled
// by the worker pool; beyond it the client is not read until one ends.
const maxInflight = 32

// closeTimeout bounds how long a closing connection may take to flush its
// last bytes and see the peer's FIN.
const closeTimeout = 2 * time.Second

// session is one client connection and its upstreams. Owned by its
// engine's loop goroutine, except the fields marked atomic, which workers
// read.
type session struct {
	e      *engine
	client *conn
	ups    []*conn // by index; nil where free

	// The client stream: owner is the upstream whose message is being
	// sent to the client (nil: free); midFrame is set while a frame of it
	// is partly sent. Others wait in waiters; control messages for the
	// client wait in ctrlq (complete frames).
	owner   *conn
	waiters []*conn
	ctrlq   [][]byte

	ctrl []byte // control message being received, unmasked

	start               int64 // UnixNano
	bytesIn, bytesOut   int64
	framesIn, framesOut int64
	remote              netip.AddrPort // client address, for logs

	// reserved counts open upstreams plus connects in flight, so the
	// per-session limit holds before a dial starts. Atomic: workers add.
	reserved atomic.Int32
	// dialing counts this session's connects being dialed. Atomic.
	dialing atomic.Int32
	// ended is set once the session is over; workers stop early.
	ended atomic.Bool

	nups            int32 // open upstreams
	upstreamsOpened int32 // over the session's life
	inflight        int32 // control messages with the worker pool
	// Flow control: hotUps counts upstreams over the high watermark (the
	// client is not read); clientHot pauses every upstream.
	hotUps    int32
	clientHot bool
	midFrame  bool
}

// paused reports whether c must not be read now.
func (e *engine) paused(c *conn) bool {
	s := c.sess
	if s == nil || c.st != stOpen {
		return false
	}
	if c.kind == kindClient {
		return s.hotUps > 0 || s.inflight >= maxInflight
	}
	return s.clientHot || (c.waiting && s.owner != nil && s.owner != c)
}

// watermark updates flow control after c's pending output changed.
func (e *engine) watermark(c *conn) {
	s := c.sess
	if s == nil {
		return
	}
	p := c.pending()
	switch {
	case !c.hot && p > highWater && c.st == stOpen:
		c.hot = true
		e.cnt[cntPauses]++
		if c.kind == kindClient {
			s.clientHot = true
		} else {
			s.hotUps++
		}
	case c.hot && (p <= lowWater || c.st != stOpen):
		c.hot = false
		if c.kind == kindClient {
			s.clientHot = false
			for _, u := range s.ups {
				if u != nil {
					e.markReady(u)
				}
			}
		} else {
			s.hotUps--
			if s.hotUps == 0 {
				e.markReady(s.client)
			}
		}
	}
}

// frame writes a frame header plus payload parts into the generated
// arena (or the heap when heap is set) and returns it.
func (e *engine) frame(h ws.Header, heap bool, parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	h.Length = int64(n)
	size := wsframe.Size(&h) + n
	var b []byte
	if heap {
		b = make([]byte, size)
	} else {
		b = e.genBuf(size)
	}
	off := wsframe.Put(b, &h)
	for _, p := range parts {
		off += copy(b[off:], p)
	}
	if h.Masked {
		wsframe.Cipher(b[wsframe.Size(&h):], h.Mask, 0)
	}
	return b
}

var ctrlIndex = []byte{0xff, 0xff}

// sendCtrl sends a control-channel message (JSON) to the client, after
// whatever upstream message is being sent.
func (e *engine) sendCtrl(s *session, msg []byte) {
	if s.client.st != stOpen {
		return
	}
	h := ws.Header{Fin: true, OpCode: ws.OpBinary}
	if s.owner != nil {
		s.ctrlq = append(s.ctrlq, e.frame(h, true, ctrlIndex, msg))
		return
	}
	e.queue(s.client, e.frame(h, false, ctrlIndex, msg))
}

// sendClientControl sends a ping, pong or close frame to the client. It
// may go between two fragments of a message but not inside a frame.
func (e *engine) sendClientControl(s *session, op ws.OpCode, parts ...[]byte) {
	h := ws.Header{Fin: true, OpCode: op}
	if s.midFrame {
		s.ctrlq = append(s.ctrlq, e.frame(h, true, parts...))
		return
	}
	e.queue(s.client, e.frame(h, false, parts...))
}

// release frees the client stream after a whole upstream message: queued
// control messages go first, then the waiting upstreams get their turn.
func (e *engine) release(s *session) {
	s.owner = nil
	s.midFrame = false
	for i, f := range s.ctrlq {
		e.queue(s.client, f)
		s.ctrlq[i] = nil
	}
	s.ctrlq = s.ctrlq[:0]
	for i, w := range s.waiters {
		w.waiting = false
		e.markReady(w)
		s.waiters[i] = nil
	}
	s.waiters = s.waiters[:0]
}

// wait parks u until the client stream is free.
func (e *engine) wait(u *conn) {
	if !u.waiting {
		u.waiting = true
		u.sess.waiters = append(u.sess.waiters, u)
	}
}

// unwait takes u out of the waiters.
func (e *engine) unwait(u *conn) {
	s := u.sess
	for i, w := range s.waiters {
		if w == u {
			s.waiters = append(s.waiters[:i], s.waiters[i+1:]...)
			break
		}
	}
	u.waiting = false
}

var zeros [64 << 10]byte

// maxPad bounds the padding that completes a frame whose source went
// away: no more than a connection may have pending anyway (the high
// watermark). A longer rest is not padded; the connection is closed
// without a close frame instead, which its peer sees as abnormal.
const maxPad = highWater

// queueZeros pads c's current frame with n zero bytes. It is how a frame
// whose source went away mid-frame is completed, so the stream stays
// valid. It returns false, queueing nothing, when n is over maxPad.
func (e *engine) queueZeros(c *conn, n int64) bool {
	if n > maxPad {
		return false
	}
	for n > 0 {
		k := min(n, int64(len(zeros)))
		e.queue(c, zeros[:k])
		n -= k
	}
	return true
}

// queueMaskedZeros pads a masked frame toward an upstream: zeros masked
// with key m from mask offset off, which are the key's own bytes. Like
// queueZeros it refuses more than maxPad.
func (e *engine) queueMaskedZeros(c *conn, n int64, m [4]byte, off int32) bool {
	if n > maxPad {
		return false
	}
	b := e.genBuf(int(n))
	for i := range b {
		b[i] = m[(int(off)+i)&3]
	}
	e.queue(c, b)
	return true
}

// padClient completes the upstream message being sent to the client when
// its upstream went away: zeros for the rest of the frame, then an empty
// final continuation frame. The client sees the message, then an
// onSocketDisconnect.
func (e *engine) padClient(s *session) {
	u := s.owner
	if u == nil {
		return
	}
	if s.midFrame && !e.queueZeros(s.client, u.rx.remain) {
		e.endSession(s, closeMsg{code: 1001, reason: "upstream failed"}, nil)
		return
	}
	if !(s.midFrame && u.rx.fin) {
		e.queue(s.client, e.frame(ws.Header{Fin: true, OpCode: ws.OpContinuation}, false))
	}
	u.rx.remain = 0
	e.release(s)
}

// padUpstream completes the frame the client is streaming to u, so a close
// frame can follow it. It returns false when that is not possible.
func (e *engine) padUpstream(u *conn) bool {
	cl := u.sess.client
	rx := &cl.rx
	ok := true
	if rx.mode == modeForward && rx.dst == u {
		if rx.remain > 0 {
			ok = e.queueMaskedZeros(u, rx.remain, rx.mask, rx.maskOff)
		}
		rx.mode, rx.dst = modeDiscard, nil
	}
	if rx.inMsg && rx.msgDst == u {
		if ok && (rx.remain == 0 || !rx.fin) {
			// End the fragmented message with an empty final frame.
			e.queue(u, e.frame(ws.Header{Fin: true, OpCode: ws.OpContinuation, Masked: true, Mask: e.mask()}, false))
		}
		rx.msgMode, rx.msgDst = modeDiscard, nil
	}
	return ok
}

// closeMsg is a close frame's content; code 0 means an empty close frame.
type closeMsg struct {
	code   int
	reason string
}

func (m closeMsg) body() []byte {
	if m.code == 0 {
		return nil
	}
	b := make([]byte, 2+len(m.reason))
	b[0], b[1] = byte(m.code>>8), byte(m.code)
	copy(b[2:], m.reason)
	return b
}

// parseClose reads a close frame payload (RFC 6455 section 5.5.1).
func parseClose(p []byte) (closeMsg, string) {
	switch {
	case len(p) == 0:
		return closeMsg{}, ""
	case len(p) == 1:
		return closeMsg{}, "close frame with a 1-byte payload"
	}
	m := closeMsg{code: int(p[0])<<8 | int(p[1]), reason: string(p[2:])}
	if !rpc.SendableCloseCode(int64(m.code)) {
		return m, "invalid close code"
	}
	if !utf8.ValidString(m.reason) {
		return m, "close reason is not valid UTF-8"
	}
	return m, ""
}

// closeConn sends a close frame to c and lets it drain.
func (e *engine) closeConn(c *conn, m closeMsg) {
	if c.st != stOpen {
		return
	}
	h := ws.Header{Fin: true, OpCode: ws.OpClose}
	if c.kind == kindUpstream {
		h.Masked, h.Mask = true, e.mask()
		e.queue(c, e.frame(h, false, m.body()))
	} else {
		e.sendClientControl(c.sess, ws.OpClose, m.body())
	}
	e.closing(c)
}

// closing moves c to stClosing: its output drains, then its write side is
// shut.
func (e *engine) closing(c *conn) {
	c.st = stClosing
	c.rx.mode, c.rx.dst = modeDiscard, nil // what is left of a frame is skipped
	c.deadline = e.ns + int64(closeTimeout)
	e.watermark(c)
	// Dirty even with nothing queued: the flush's write() shuts the
	// write side once the output is empty.
	e.markDirty(c)
}

// shutWrite half-closes c after its last byte went out; the peer's FIN
// (or the deadline) then closes it. Lingering this way, rather than
// closing at once, keeps the kernel from answering late peer data with a
// reset that would destroy our close frame in flight.
func (e *engine) shutWrite(c *conn) {
	if c.gotClose {
		// Both sides have sent their close frame: done.
		e.closeFD(c)
		return
	}
	unix.Shutdown(c.fd, unix.SHUT_WR)
	c.st = stLinger
	c.deadline = e.ns + int64(closeTimeout)
	e.markReady(c)
}

// detach removes upstream u from its session's tables and flow control.
func (e *engine) detach(u *conn) {
	s := u.sess
	if int(u.index) < len(s.ups) && s.ups[u.index] == u {
		s.ups[u.index] = nil
		s.nups--
		s.reserved.Add(-1)
		e.cnt[cntUpstreamsClosed]++
	}
	if s.owner == u {
		e.padClient(s)
	}
	if u.waiting {
		e.unwait(u)
	}
	if u.hot {
		u.hot = false
		s.hotUps--
		if s.hotUps == 0 {
			e.markReady(s.client)
		}
	}
}

// terminate closes upstream u at the client's request: no
// onSocketDisconnect follows.
func (e *engine) terminate(u *conn, m closeMsg) {
	e.detach(u)
	e.countClose(m.code)
	if !e.padUpstream(u) {
		e.closeFD(u)
		return
	}
	e.closeConn(u, m)
}

// upstreamGone reports an upstream that went away on its own and frees its
// index. sendClose says whether a close frame still goes to it.
func (e *engine) upstreamGone(u *conn, code int, msg string, send *closeMsg) {
	if u.st != stOpen {
		e.closeFD(u)
		return
	}
	s := u.sess
	e.detach(u)
	e.countClose(code)
	e.sendCtrl(s, rpc.EncodeDisconnect(u.index, code, msg))
	if send != nil && e.padUpstream(u) {
		e.closeConn(u, *send)
		return
	}
	e.closeFD(u)
}

// endSession closes every upstream with up and, when cl is not nil, sends
// cl to the client and lets it drain; otherwise the client is closed now.
func (e *engine) endSession(s *session, up closeMsg, cl *closeMsg) {
	if s.ended.Swap(true) {
		return
	}
	for i, u := range s.ups {
		if u == nil {
			continue
		}
		s.ups[i] = nil
		e.cnt[cntUpstreamsClosed]++
		if u.waiting {
			u.waiting = false
		}
		if e.padUpstream(u) {
			e.closeConn(u, up)
		} else {
			e.closeFD(u)
		}
	}
	s.nups = 0
	s.waiters = nil
	c := s.client
	if cl != nil && c.st == stOpen {
		if s.owner != nil {
			e.padClient(s)
		}
		e.closeConn(c, *cl)
	} else {
		e.closeFD(c)
	}
	s.ctrlq = nil
	s.ctrl = nil
	e.srv.release(s.remote.Addr())
	e.cnt[cntSessionsClosed]++
	if cl != nil {
		e.countClose(cl.code)
	}
	e.srv.logSessionEnd(s)
}
