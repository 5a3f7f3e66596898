//go:build linux

package splice

import (
	"errors"

	"github.com/gobwas/ws"

	"github.com/wsplice/wsplice/wsframe"
)

// copyMax is the largest upstream payload chunk copied next to its header
// rather than sent as an iovec of its own: below it, a copy is cheaper
// than another iovec and keeps small messages in one contiguous write.
const copyMax = 2048

// upstreamInput processes frames from upstream u and returns the bytes
// consumed. It stops early, carrying the rest, when the client stream
// belongs to another upstream or the client is not keeping up.
func (e *engine) upstreamInput(u *conn, b []byte) int {
	s := u.sess
	cl := s.client
	rx := &u.rx
	used := 0
	var h, ch ws.Header // parsed, and the client's; see wsframe.ParseInto why not by value
	for used < len(b) && u.st == stOpen {
		if rx.remain > 0 {
			// Inside a frame: u owns the client stream.
			n := len(b) - used
			if int64(n) > rx.remain {
				n = int(rx.remain)
			}
			e.toClient(cl, b[used:used+n])
			s.bytesOut += int64(n)
			e.cnt[cntBytesOut] += uint64(n)
			rx.remain -= int64(n)
			used += n
			if rx.remain == 0 && e.upstreamFrameEnd(u) {
				return used
			}
			continue
		}
		if s.clientHot {
			return used
		}
		hn, err := wsframe.ParseInto(&h, b[used:])
		if err != nil {
			code := 1002
			if errors.Is(err, wsframe.ErrControlTooLong) {
				code = 1009
			}
			e.upstreamGone(u, code, err.Error(), &closeMsg{code: code, reason: "protocol error"})
			return len(b)
		}
		if hn == 0 {
			return used
		}
		if h.Masked {
			e.upstreamGone(u, 1002, "upstream sent a masked frame", &closeMsg{code: 1002, reason: "masked frame"})
			return len(b)
		}
		avail := int64(len(b) - used - hn)
		if h.OpCode.IsControl() {
			if avail < h.Length {
				return used
			}
			p := b[used+hn : used+hn+int(h.Length)]
			used += hn + len(p)
			e.upstreamControl(u, h.OpCode, p)
			continue
		}
		first := h.OpCode != ws.OpContinuation
		if first == rx.inMsg {
			why := "continuation frame without a message"
			if first {
				why = "data frame inside a fragmented message"
			}
			e.upstreamGone(u, 1002, why, &closeMsg{code: 1002, reason: "protocol error"})
			return len(b)
		}
		if s.owner != u {
			if s.owner != nil {
				e.wait(u)
				return used
			}
			s.owner = u
			if u.waiting {
				e.unwait(u)
			}
		}
		// Field by field, as in clientInput.
		ch.Fin, ch.OpCode, ch.Length = h.Fin, ws.OpContinuation, h.Length
		if first {
			ch.OpCode = ws.OpBinary
			ch.Length += 2
		}
		hs := wsframe.Size(&ch)
		whole := avail >= h.Length
		var g []byte
		if whole && h.Length <= copyMax {
			g = e.genBuf(hs + int(ch.Length))
		} else {
			g = e.genBuf(hs + 2)
		}
		off := wsframe.Put(g, &ch)
		if first {
			g[off], g[off+1] = byte(u.index>>8), byte(u.index)
			off += 2
		}
		used += hn
		s.framesOut++
		e.cnt[cntFramesOut]++
		rx.inMsg = !h.Fin
		rx.fin = h.Fin
		if whole && h.Length <= copyMax {
			copy(g[off:], b[used:used+int(h.Length)])
			e.queue(cl, g)
			used += int(h.Length)
			s.bytesOut += h.Length
			e.cnt[cntBytesOut] += uint64(h.Length)
			if e.upstreamFrameEnd(u) {
				return used
			}
			continue
		}
		e.queue(cl, g[:off])
		rx.remain = h.Length
		s.midFrame = true
		if rx.remain == 0 && e.upstreamFrameEnd(u) {
			return used
		}
	}
	if u.st != stOpen {
		return len(b)
	}
	return used
}

// toClient queues a piece of an upstream payload to the client: copied
// into the generated arena when small (it then merges with its header),
// referenced in place otherwise.
func (e *engine) toClient(cl *conn, p []byte) {
	if len(p) <= copyMax {
		e.queue(cl, append(e.genBuf(len(p))[:0], p...))
		return
	}
	e.queue(cl, p)
}

// upstreamFrameEnd runs after an upstream frame went out whole. At the end
// of a message it frees the client stream, and reports whether u must
// now yield to upstreams that were waiting for it.
func (e *engine) upstreamFrameEnd(u *conn) (yield bool) {
	s := u.sess
	s.midFrame = false
	if !u.rx.fin {
		return false
	}
	if len(s.waiters) == 0 {
		s.owner = nil
		if len(s.ctrlq) > 0 {
			e.release(s)
		}
		return false
	}
	e.release(s)
	e.wait(u)
	return true
}

// upstreamControl handles a whole control frame from an upstream.
func (e *engine) upstreamControl(u *conn, op ws.OpCode, p []byte) {
	switch op {
	case ws.OpPing:
		cl := u.sess.client
		if cl.rx.mode == modeForward && cl.rx.dst == u {
			// The client is inside a frame to u: the pong goes when
			// that frame ends. RFC 6455 section 5.5.3 lets us answer
			// only the latest ping, so one is kept per upstream.
			if e.pongDue == nil {
				e.pongDue = make(map[*conn][]byte)
			}
			e.pongDue[u] = append([]byte(nil), p...)
			return
		}
		h := ws.Header{Fin: true, OpCode: ws.OpPong, Masked: true, Mask: e.mask()}
		e.queue(u, e.frame(h, false, p))
	case ws.OpPong:
	case ws.OpClose:
		m, bad := parseClose(p)
		if bad != "" {
			e.upstreamGone(u, 1002, bad, &closeMsg{code: 1002, reason: bad})
			return
		}
		code := m.code
		if code == 0 {
			code = 1005 // no status code was present
		}
		e.upstreamGone(u, code, m.reason, &m)
	}
}
