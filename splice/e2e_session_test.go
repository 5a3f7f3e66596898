//go:build linux

package splice_test

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsplice/wsplice/splice"
)

// TestClientCloseClosesUpstreams checks section 4: the client's close code
// and reason go to every upstream, and the close is echoed to the client.
func TestClientCloseClosesUpstreams(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{})
	cases := []struct {
		code   int
		reason string
	}{
		{1000, ""},
		{1000, "normal with reason"},
		{1001, "leaving"},
		{4321, "done"},
		{3999, "ünïcode reason"},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%d %q", tc.code, tc.reason), func(t *testing.T) {
			t.Parallel()
			up := startUpstream(t, nil)
			s := dialSession(t, ts.url)
			var ups []*upConn
			for range 3 {
				s.connect(up.url)
				ups = append(ups, up.accept(t))
			}
			err := s.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(tc.code, tc.reason), time.Now().Add(waitTimeout))
			noErr(t, err, "client close")
			for i, uc := range ups {
				code, reason := uc.closeCode(t)
				equal(t, code, tc.code, fmt.Sprintf("upstream %d close code", i))
				equal(t, reason, tc.reason, fmt.Sprintf("upstream %d close reason", i))
			}
			code, _ := s.closeFrame()
			equal(t, code, tc.code, "close code echoed to the client")
		})
	}
}

// TestClientDropClosesUpstreams checks that when the client's TCP
// connection drops, every upstream gets close 1001.
func TestClientDropClosesUpstreams(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{})
	up := startUpstream(t, nil)
	s := dialSession(t, ts.url)
	var ups []*upConn
	for range 4 {
		idx := s.connect(up.url)
		uc := up.accept(t)
		s.send(idx, []byte("hi"))
		uc.read(t)
		ups = append(ups, uc)
	}
	s.conn.NetConn().Close()
	for i, uc := range ups {
		code, _ := uc.closeCode(t)
		equal(t, code, 1001, fmt.Sprintf("upstream %d close code", i))
	}
}

// TestServerCloseGoingAway checks that srv.Close() sends 1001 to every
// client and upstream, that data already on its way is delivered in order
// and without gaps, and that no new session is accepted.
func TestServerCloseGoingAway(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{})
	const n = 2000
	flood := make(chan struct{})
	up := startUpstream(t, func(uc *upConn) {
		go func() {
			<-flood
			for i := range n {
				if uc.c.WriteMessage(websocket.BinaryMessage, binary.BigEndian.AppendUint32(nil, uint32(i))) != nil {
					return
				}
			}
		}()
		uc.record()
	})
	var sessions []*session
	var ups []*upConn
	for range 2 {
		s := dialSession(t, ts.url)
		sessions = append(sessions, s)
		for range 2 {
			s.connect(up.url)
			ups = append(ups, up.accept(t))
		}
	}
	close(flood)
	// Let some of the flood through first.
	sessions[0].readDataFrom(0)
	closed := make(chan struct{})
	go func() { ts.srv.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(waitTimeout):
		t.Fatalf("srv.Close did not return within %v", waitTimeout)
	}
	for i, s := range sessions {
		code, _ := s.closeFrame()
		equal(t, code, 1001, fmt.Sprintf("session %d close code", i))
		// Whatever arrived from each upstream is a prefix of what it sent.
		s.mu.Lock()
		next := map[uint16]uint32{}
		if i == 0 {
			next[0] = 1
		}
		for _, e := range s.queue {
			if e.ctrl != nil {
				continue
			}
			if len(e.data) != 4 || binary.BigEndian.Uint32(e.data) != next[e.index] {
				t.Errorf("session %d index %d: got %x, want message %d", i, e.index, e.data, next[e.index])
				break
			}
			next[e.index]++
		}
		s.mu.Unlock()
	}
	for i, uc := range ups {
		code, _ := uc.closeCode(t)
		equal(t, code, 1001, fmt.Sprintf("upstream %d close code", i))
	}
	if _, err := dialSessionErr(t, ts.url, &websocket.Dialer{HandshakeTimeout: time.Second}); err == nil {
		t.Errorf("a session was accepted after srv.Close")
	}
}

// TestWriteTimeout checks --write-timeout both ways: an upstream that
// accepts no bytes is dropped with onSocketDisconnect 1006, and a client
// that accepts no bytes loses its session (its upstreams get 1001).
func TestWriteTimeout(t *testing.T) {
	t.Parallel()
	const wt = 500 * time.Millisecond
	ts := startServer(t, splice.Config{WriteTimeout: wt})

	t.Run("upstream", func(t *testing.T) {
		t.Parallel()
		stalled := startUpstream(t, func(uc *upConn) { <-uc.stop })
		other := startUpstream(t, echo)
		s := dialSession(t, ts.url)
		idx := s.connect(stalled.url)
		oi := s.connect(other.url)
		stopFlood := s.flood(idx, 64<<10)
		d := s.waitDisconnect()
		stopFlood()
		equal(t, *d.Index, int(idx), "index")
		equal(t, d.Code, 1006, "code")
		if d.Message == "" {
			t.Errorf("onSocketDisconnect 1006 without a message")
		}
		// The session and its other upstream are fine.
		s.send(oi, []byte("still alive"))
		equal(t, string(s.readDataFrom(oi)), "still alive", "echo")
	})
	t.Run("client", func(t *testing.T) {
		t.Parallel()
		flooded := make(chan *upConn, 1)
		up := startUpstream(t, func(uc *upConn) {
			flooded <- uc
			readErr := make(chan error, 1)
			go func() {
				for {
					if _, _, err := uc.c.ReadMessage(); err != nil {
						readErr <- err
						return
					}
				}
			}()
			msg := make([]byte, 64<<10)
			for {
				uc.c.SetWriteDeadline(time.Now().Add(2 * waitTimeout))
				if uc.c.WriteMessage(websocket.BinaryMessage, msg) != nil {
					break
				}
			}
			uc.err = <-readErr
		})
		c := dialRaw(t, ts.addr)
		body, _ := json.Marshal(map[string]any{"id": 1, "type": "method", "method": "connect", "params": map[string]any{"url": up.url}})
		c.write(frame{fin: true, op: opBinary, masked: true, payload: withIndex(controlIndex, body)})
		var uc *upConn
		select {
		case uc = <-flooded:
		case <-time.After(waitTimeout):
			t.Fatalf("no upstream connection")
		}
		// The client reads nothing from now on: wsplice must give up on it,
		// which to the upstream is the client going away.
		code, _ := uc.closeCode(t)
		equal(t, code, 1001, "upstream close code")
		expectEOF(t, c.conn, c.br)
	})
}
