//go:build linux

package splice

import (
	"strconv"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/wsplice/wsplice/rpc"
)

// dispatch hands a complete control message to the worker pool.
func (e *engine) dispatch(s *session, msg []byte) {
	s.inflight++
	ok := e.srv.pool.Go(func() {
		if method, code := rpc.Handle(s, msg); code != 0 {
			e.srv.rpcHook(method, code)
		}
		e.loop.Submit(func() {
			s.inflight--
			if s.inflight == maxInflight-1 && s.client.st == stOpen {
				e.markReady(s.client)
			}
		})
	})
	if !ok {
		s.inflight--
		e.sendCtrl(s, rpc.EncodeWarn(rpc.DialError, "server busy: control message dropped"))
	}
}

// Send implements rpc.Handler: it carries msg to the loop, which sends it
// to the client. Worker goroutine.
func (s *session) Send(msg []byte) {
	e := s.e
	e.loop.Submit(func() {
		if !s.ended.Load() {
			e.sendCtrl(s, msg)
		}
	})
}

// maxDialsPerSession bounds the connects of one session being dialed at
// once, so one client with slow upstreams cannot hold every worker.
const maxDialsPerSession = 8

// Connect implements rpc.Handler. Worker goroutine.
func (s *session) Connect(id int64, p *rpc.ConnectParams) {
	e := s.e
	if s.ended.Load() {
		return
	}
	max := int32(e.srv.cfg.MaxUpstreamsPerSession)
	if s.reserved.Add(1) > max {
		s.reserved.Add(-1)
		e.srv.rpcHook("connect", rpc.TooManyConnections)
		s.Send(rpc.EncodeError(id, &rpc.Error{Code: rpc.TooManyConnections,
			Message: "session already has the most upstreams allowed"}))
		return
	}
	if s.dialing.Add(1) > maxDialsPerSession {
		s.dialing.Add(-1)
		s.reserved.Add(-1)
		e.srv.rpcHook("connect", rpc.TooManyConnections)
		s.Send(rpc.EncodeError(id, &rpc.Error{Code: rpc.TooManyConnections,
			Message: "too many connects in flight for this session (at most " + itoa(maxDialsPerSession) + ")"}))
		return
	}
	start := time.Now()
	e.srv.dialing.Add(1)
	d, derr := e.srv.dial(p)
	e.srv.dialing.Add(-1)
	s.dialing.Add(-1)
	if h := e.srv.cfg.Hooks.Dial; h != nil {
		result := "ok"
		if derr != nil {
			result = derr.stage
		}
		h(result, time.Since(start))
	}
	if derr != nil {
		s.reserved.Add(-1)
		e.srv.rpcHook("connect", derr.reply.Code)
		s.Send(rpc.EncodeError(id, derr.reply))
		return
	}
	e.srv.rpcHook("connect", 0)
	msgType := p.MessageType
	if !e.loop.Submit(func() { e.attach(s, id, d, msgType) }) {
		unix.Close(d.fd)
	}
}

// attach puts a dialed upstream on the loop: it takes the smallest free
// index, queues the reply, and only then starts reading the upstream, so
// the reply reaches the client before any of its data.
func (e *engine) attach(s *session, id int64, d *dialed, msgType ws.OpCode) {
	if s.ended.Load() || e.stopping {
		unix.Close(d.fd)
		return
	}
	idx := -1
	for i, u := range s.ups {
		if u == nil {
			idx = i
			break
		}
	}
	if idx < 0 {
		idx = len(s.ups)
		s.ups = append(s.ups, nil)
	}
	u, err := e.add(d.fd, kindUpstream, s)
	if err != nil {
		unix.Close(d.fd)
		s.reserved.Add(-1)
		e.sendCtrl(s, rpc.EncodeError(id, &rpc.Error{Code: rpc.DialError, Message: err.Error()}))
		return
	}
	u.st = stOpen
	u.index = uint16(idx)
	u.msgType = msgType
	s.ups[idx] = u
	s.nups++
	e.cnt[cntUpstreamsOpened]++
	s.upstreamsOpened++
	e.sendCtrl(s, rpc.EncodeResult(id, rpc.ConnectResult{Index: idx, Subprotocol: d.subprotocol}))
	if len(d.leftover) > 0 {
		u.carry = append(e.pool.Get(len(d.leftover)), d.leftover...)
		e.markReady(u)
	}
}

// Terminate implements rpc.Handler. Worker goroutine.
func (s *session) Terminate(id int64, p *rpc.TerminateParams) {
	e := s.e
	e.loop.Submit(func() {
		if s.ended.Load() {
			return
		}
		u := s.upstream(p.Index)
		if u == nil {
			e.srv.rpcHook("terminate", rpc.UnknownConnection)
			e.sendCtrl(s, rpc.EncodeError(id, &rpc.Error{Code: rpc.UnknownConnection,
				Message: "no upstream at index " + itoa(int(p.Index)), Path: "index"}))
			return
		}
		e.srv.rpcHook("terminate", 0)
		e.terminate(u, closeMsg{code: p.Code, reason: p.Reason})
		e.sendCtrl(s, rpc.EncodeResult(id, nil))
	})
}

func itoa(n int) string { return strconv.Itoa(n) }

// rpcHook reports a control request's outcome to Hooks.RPC: "ok" or the
// error code.
func (s *Server) rpcHook(method string, code int) {
	if h := s.cfg.Hooks.RPC; h != nil {
		result := "ok"
		if code != 0 {
			result = strconv.Itoa(code)
		}
		h(method, result)
	}
}
