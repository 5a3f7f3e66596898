//go:build linux

package splice

import (
	"bytes"
	"errors"
	"net/netip"
	"strconv"
	"unsafe"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/wsplice/wsplice/rpc"
	"github.com/wsplice/wsplice/wsframe"
)

// maxRequest bounds the client's HTTP upgrade request.
const maxRequest = 8 << 10

var crlfcrlf = []byte("\r\n\r\n")

// handshake parses the client's upgrade request, however it was split
// across reads: until the blank line arrives, everything is carried.
func (e *engine) handshake(c *conn, data []byte) int {
	used := 0
	if e.srv.cfg.ProxyProtocol && !c.proxied {
		// HAProxy's PROXY header comes first and names the real client
		// (health checks send LOCAL: the peer address stands).
		src, n, err := ParseProxyHeader(data)
		switch {
		case err != nil:
			e.reject(c, 400, "bad PROXY protocol header")
			return len(data)
		case n == 0:
			return 0
		}
		c.proxied = true
		if src.IsValid() {
			e.setSource(c, src)
		}
		used = n
		data = data[n:]
	} else if !e.srv.cfg.ProxyProtocol && LooksLikeProxyHeader(data) {
		e.reject(c, 400, "unexpected PROXY protocol header (see --proxy-protocol)")
		return len(data)
	}
	return used + e.upgradeRequest(c, data)
}

// upgradeRequest handles the HTTP part of the handshake.
func (e *engine) upgradeRequest(c *conn, data []byte) int {
	end := bytes.Index(data, crlfcrlf)
	if end < 0 {
		if len(data) > maxRequest {
			e.reject(c, 431, "request header too large")
			return len(data)
		}
		return 0
	}
	end += len(crlfcrlf)
	if end > maxRequest {
		e.reject(c, 431, "request header too large")
		return len(data)
	}
	resp, status, reason := upgrade(data[:end], e.srv.cfg.Origins)
	if status != 101 {
		e.reject(c, status, reason)
		return len(data)
	}
	remote, ok := e.srcAddr[c]
	if ok {
		delete(e.srcAddr, c)
		c.hasSrc = false
	} else {
		remote = peerAddr(c.fd)
	}
	if status, reason := e.srv.admit(remote.Addr()); status != 0 {
		e.reject(c, status, reason)
		return len(data)
	}
	e.queue(c, append(e.genBuf(len(resp))[:0], resp...))
	e.cnt[cntSessionsOpened]++
	s := &session{e: e, client: c, start: e.ns, remote: remote}
	c.sess = s
	c.st = stOpen
	c.deadline = 0
	if e.stopping {
		away := closeMsg{code: 1001, reason: "server shutting down"}
		e.endSession(s, away, &away)
		return len(data)
	}
	return end + e.clientInput(c, data[end:])
}

// reject answers a request that is not a valid upgrade with an HTTP
// error and a one-line reason, then closes. Nothing of the request is
// echoed.
func (e *engine) reject(c *conn, status int, reason string) {
	text := map[int]string{400: "Bad Request", 403: "Forbidden", 429: "Too Many Requests",
		431: "Request Header Fields Too Large", 503: "Service Unavailable"}[status]
	body := reason + "\n"
	resp := "HTTP/1.1 " + strconv.Itoa(status) + " " + text + "\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n" +
		"Connection: close\r\n\r\n" + body
	e.queue(c, []byte(resp))
	e.closing(c)
}

// clientProtocolError ends the session: the client gets a close with code
// and why, the upstreams a going-away close.
func (e *engine) clientProtocolError(c *conn, code int, why string) {
	if len(why) > 123 {
		why = why[:123]
	}
	e.endSession(c.sess, closeMsg{code: 1001, reason: "client error"}, &closeMsg{code: code, reason: why})
}

// clientInput processes frames from the client and returns the bytes it
// consumed; the rest (a partial header, a partial control frame) is
// carried to the next read.
func (e *engine) clientInput(c *conn, b []byte) int {
	s := c.sess
	rx := &c.rx
	used := 0
	var h, nh ws.Header // parsed and rewritten; see wsframe.ParseInto why not by value
	for used < len(b) && c.st == stOpen {
		if rx.remain > 0 {
			n := len(b) - used
			if int64(n) > rx.remain {
				n = int(rx.remain)
			}
			p := b[used : used+n]
			switch rx.mode {
			case modeForward:
				e.queue(rx.dst, p)
				rx.maskOff += int32(n) // for padding, should the client die
				s.bytesIn += int64(n)
				e.cnt[cntBytesIn] += uint64(n)
			case modeControl:
				wsframe.Cipher(p, rx.mask, int(rx.maskOff))
				rx.maskOff += int32(n)
				s.ctrl = append(s.ctrl, p...)
			}
			rx.remain -= int64(n)
			used += n
			if rx.remain == 0 {
				e.clientFrameEnd(c)
			}
			continue
		}
		hn, err := wsframe.ParseInto(&h, b[used:])
		if err != nil {
			code := 1002
			if errors.Is(err, wsframe.ErrControlTooLong) {
				code = 1009
			}
			e.clientProtocolError(c, code, err.Error())
			return len(b)
		}
		if hn == 0 {
			return used
		}
		if !h.Masked {
			e.clientProtocolError(c, 1002, "client frames must be masked")
			return len(b)
		}
		avail := int64(len(b) - used - hn)
		if h.OpCode.IsControl() {
			if avail < h.Length {
				return used
			}
			p := b[used+hn : used+hn+int(h.Length)]
			wsframe.Cipher(p, h.Mask, 0)
			used += hn + len(p)
			e.clientControl(c, h.OpCode, p)
			continue
		}
		if h.OpCode == ws.OpContinuation {
			if !rx.inMsg {
				e.clientProtocolError(c, 1002, "continuation frame without a message")
				return len(b)
			}
			rx.mode, rx.dst, rx.fin = rx.msgMode, rx.msgDst, h.Fin
			switch rx.mode {
			case modeForward:
				if rx.dst.st != stOpen {
					rx.mode = modeDiscard
					break
				}
				e.queue(rx.dst, b[used:used+hn]) // the header goes as it came
				rx.mask, rx.maskOff = h.Mask, 0
				s.framesIn++
				e.cnt[cntFramesIn]++
			case modeControl:
				if int64(len(s.ctrl))+h.Length > e.srv.cfg.FrameSizeLimit {
					e.ctrlTooLong(c)
					return len(b)
				}
				rx.mask, rx.maskOff = h.Mask, 0
			}
			used += hn
			rx.remain = h.Length
			if rx.remain == 0 {
				e.clientFrameEnd(c)
			}
			continue
		}
		// The first frame of a data message: it starts with the index.
		if rx.inMsg {
			e.clientProtocolError(c, 1002, "data frame inside a fragmented message")
			return len(b)
		}
		if h.Length < 2 {
			if avail < h.Length {
				return used
			}
			used += hn + int(h.Length)
			e.sendCtrl(s, rpc.EncodeWarn(rpc.FrameTooShort, "data message shorter than the 2-byte index"))
			if !h.Fin {
				rx.inMsg, rx.msgMode, rx.msgDst = true, modeDiscard, nil
			}
			continue
		}
		if avail < 2 {
			return used
		}
		idx := wsframe.Index(b[used+hn:], h.Mask, true)
		rx.fin = h.Fin
		rx.remain = h.Length - 2
		rx.dst = nil
		switch u := s.upstream(idx); {
		case idx == 0xffff:
			if rx.remain > e.srv.cfg.FrameSizeLimit {
				e.ctrlTooLong(c)
				return len(b)
			}
			rx.mode, rx.mask, rx.maskOff = modeControl, h.Mask, 2
			s.ctrl = s.ctrl[:0]
			used += hn + 2
		case u == nil:
			e.sendCtrl(s, rpc.EncodeWarn(rpc.UnknownConnection, "no upstream at index "+strconv.Itoa(int(idx))))
			rx.mode = modeDiscard
			used += hn + 2
		default:
			// Rewrite the header in place: it ends where the payload
			// after the index begins, masked with the key rotated by 2.
			// Field by field: a composite literal is built aside and
			// copied whole, which stalls (see wsframe.ParseInto).
			nh.Fin, nh.Rsv, nh.OpCode, nh.Masked = h.Fin, 0, h.OpCode, true
			nh.Mask, nh.Length = wsframe.RotateMask(h.Mask, 2), rx.remain
			if u.msgType != 0 {
				nh.OpCode = u.msgType
			}
			start := wsframe.PutBefore(b, used+hn+2, &nh)
			rx.mode, rx.dst = modeForward, u
			rx.mask, rx.maskOff = nh.Mask, 0
			if avail >= h.Length && rx.remain <= compactMax {
				// The whole frame is here and small: slide it back
				// over its old header when it follows a frame to the
				// same upstream, so a run of small frames goes out as
				// one iovec.
				end := used + hn + int(h.Length)
				e.queueCompact(u, b, used, start, end)
				s.bytesIn += rx.remain
				s.framesIn++
				e.cnt[cntFramesIn]++
				e.cnt[cntBytesIn] += uint64(rx.remain)
				rx.remain = 0
				used = end
				break
			}
			e.queue(u, b[start:used+hn+2])
			s.framesIn++
			e.cnt[cntFramesIn]++
			used += hn + 2
		}
		if !h.Fin {
			rx.inMsg, rx.msgMode, rx.msgDst = true, rx.mode, rx.dst
		}
		if rx.remain == 0 {
			e.clientFrameEnd(c)
		}
	}
	if c.st != stOpen {
		return len(b)
	}
	return used
}

// compactMax is the largest payload slid back to join the previous frame
// to the same upstream: below it, a copy costs less than another iovec.
const compactMax = 1024

// queueCompact queues the rewritten frame b[start:end] to u. When u's last
// queued bytes end exactly at from (where this frame's original header
// began), the frame is moved back to from and the segment extended: the
// bytes in between are this frame's own old header and index.
func (e *engine) queueCompact(u *conn, b []byte, from, start, end int) {
	if u.tail >= 0 && u.st == stOpen {
		t := &e.segs[u.tail]
		if len(t.b) > 0 && cap(t.b)-len(t.b) >= end-start &&
			unsafe.Add(unsafe.Pointer(unsafe.SliceData(t.b)), len(t.b)) == unsafe.Pointer(&b[from]) {
			n := copy(b[from:], b[start:end])
			t.b = t.b[:len(t.b)+n]
			return
		}
	}
	e.queue(u, b[start:end])
}

// ctrlTooLong answers a control message over --frame-size-limit.
func (e *engine) ctrlTooLong(c *conn) {
	s := c.sess
	e.sendCtrl(s, rpc.EncodeWarn(rpc.FrameTooLong, "control message over the frame size limit of "+strconv.FormatInt(e.srv.cfg.FrameSizeLimit, 10)+" bytes"))
	e.clientProtocolError(c, 1009, "control message too long")
}

// clientFrameEnd runs when the payload of a client data frame is all in.
func (e *engine) clientFrameEnd(c *conn) {
	rx := &c.rx
	mode := rx.mode
	if mode == modeForward && len(e.pongDue) > 0 {
		if p, ok := e.pongDue[rx.dst]; ok {
			delete(e.pongDue, rx.dst)
			h := ws.Header{Fin: true, OpCode: ws.OpPong, Masked: true, Mask: e.mask()}
			e.queue(rx.dst, e.frame(h, false, p))
		}
	}
	rx.mode, rx.dst = modeDiscard, nil
	if !rx.fin {
		return
	}
	rx.inMsg, rx.msgMode, rx.msgDst = false, modeDiscard, nil
	if mode == modeControl {
		s := c.sess
		msg := s.ctrl
		s.ctrl = nil
		e.dispatch(s, msg)
	}
}

// clientControl handles a whole control frame from the client; p is
// unmasked.
func (e *engine) clientControl(c *conn, op ws.OpCode, p []byte) {
	s := c.sess
	switch op {
	case ws.OpPing:
		e.sendClientControl(s, ws.OpPong, p)
	case ws.OpPong:
	case ws.OpClose:
		m, bad := parseClose(p)
		if bad != "" {
			e.clientProtocolError(c, 1002, bad)
			return
		}
		e.endSession(s, m, &m)
	}
}

// upstream returns the open upstream at idx, or nil.
func (s *session) upstream(idx uint16) *conn {
	if int(idx) < len(s.ups) {
		return s.ups[idx]
	}
	return nil
}

// peerAddr returns the address of fd's peer, or the zero AddrPort for a
// socket that has none (a Unix socketpair from the TLS path).
func peerAddr(fd int) netip.AddrPort {
	sa, err := unix.Getpeername(fd)
	if err != nil {
		return netip.AddrPort{}
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(sa.Port))
	}
	return netip.AddrPort{}
}
