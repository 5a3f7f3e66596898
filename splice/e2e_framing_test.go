//go:build linux

package splice_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsplice/wsplice/splice"
)

// TestUnmaskedClientFrameCloses1002 checks RFC 6455 5.1 on the client
// side: any unmasked frame from the client ends the session with 1002.
func TestUnmaskedClientFrameCloses1002(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{})
	up := startUpstream(t, nil)
	body, _ := json.Marshal(map[string]any{"id": 1, "type": "method", "method": "connect", "params": map[string]any{"url": up.url}})
	cases := []struct {
		name string
		f    frame
	}{
		{"data message", frame{fin: true, op: opBinary, payload: withIndex(0, []byte("x"))}},
		{"control message", frame{fin: true, op: opBinary, payload: withIndex(controlIndex, body)}},
		{"ping", frame{fin: true, op: opPing, payload: []byte("p")}},
		{"text frame", frame{fin: true, op: opText, payload: withIndex(controlIndex, body)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := dialRaw(t, ts.addr)
			c.write(tc.f)
			c.expectClose(1002)
		})
	}
}

// TestUpstreamFramesAreMasked uses a raw upstream to check that the
// handshake wsplice sends is a valid client handshake and that every frame
// it sends upstream, data and control, is masked (RFC 6455 5.1), with the
// client's opcodes kept and pings answered with the same payload.
func TestUpstreamFramesAreMasked(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{})
	type result struct {
		frames []frame
		err    error
	}
	results := make(chan result, 1)
	up := startRawUpstream(t, func(conn net.Conn, br *bufio.Reader) {
		var res result
		defer func() { results <- res }()
		if _, res.err = rawAccept(conn, br, nil); res.err != nil {
			return
		}
		// Two data messages from the client, then a ping of ours, then our close.
		for len(res.frames) < 2 {
			f, err := readFrame(br)
			if res.err = err; err != nil {
				return
			}
			res.frames = append(res.frames, f)
		}
		conn.Write(appendFrame(nil, frame{fin: true, op: opPing, payload: []byte("raw-ping")}))
		for {
			f, err := readFrame(br)
			if res.err = err; err != nil {
				return
			}
			res.frames = append(res.frames, f)
			if f.op == opPong {
				break
			}
		}
		conn.Write(appendFrame(nil, frame{fin: true, op: opClose, payload: closePayload(4123, "raw bye")}))
		for {
			f, err := readFrame(br)
			if err != nil {
				res.err = fmt.Errorf("waiting for the close echo: %w", err)
				return
			}
			res.frames = append(res.frames, f)
			if f.op == opClose {
				return
			}
		}
	})
	s := dialSession(t, ts.url)
	idx := s.connect(up.url)
	s.sendText(idx, []byte("text payload"))
	s.send(idx, []byte{0, 1, 2, 0xff})

	var res result
	select {
	case res = <-results:
	case <-time.After(waitTimeout):
		t.Fatalf("raw upstream did not finish")
	}
	noErr(t, res.err, "raw upstream")
	for _, f := range res.frames {
		if !f.masked {
			t.Errorf("wsplice sent an unmasked frame upstream: %s", f)
		}
		if f.rsv != 0 {
			t.Errorf("wsplice set RSV bits without an extension: %s", f)
		}
	}
	want := []struct {
		op      byte
		payload []byte
	}{
		{opText, []byte("text payload")},
		{opBinary, []byte{0, 1, 2, 0xff}},
	}
	for i, w := range want {
		f := res.frames[i]
		if f.op != w.op || !f.fin || !bytes.Equal(f.payload, w.payload) {
			t.Errorf("upstream frame %d: %s, want fin op %d %q", i, f, w.op, w.payload)
		}
	}
	var pong, closeEcho *frame
	for i := range res.frames {
		switch res.frames[i].op {
		case opPong:
			pong = &res.frames[i]
		case opClose:
			closeEcho = &res.frames[i]
		case opPing:
			if string(res.frames[i].payload) == "raw-ping" {
				t.Errorf("wsplice echoed the upstream's ping as a ping")
			}
		}
	}
	if pong == nil || string(pong.payload) != "raw-ping" {
		t.Errorf("pong to the upstream's ping: %v, want payload %q", pong, "raw-ping")
	}
	if closeEcho == nil {
		t.Errorf("wsplice did not answer the upstream's close frame")
	}
	d := s.waitDisconnect()
	equal(t, *d.Index, int(idx), "onSocketDisconnect index")
	equal(t, d.Code, 4123, "onSocketDisconnect code")
	equal(t, d.Message, "raw bye", "onSocketDisconnect message")
	if s.sawPing("raw-ping") {
		t.Errorf("the upstream's ping was forwarded to the client")
	}
}

// TestOpcodeToUpstream checks that text stays text and binary stays binary
// on the way upstream, unless connect's messageType forces one, and that the
// payload is forwarded as is (wsplice does not validate UTF-8).
func TestOpcodeToUpstream(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{})
	invalidUTF8 := []byte{'a', 0xff, 0xfe, 'z'}
	cases := []struct {
		messageType string
		sent, want  int
	}{
		{"", websocket.TextMessage, websocket.TextMessage},
		{"", websocket.BinaryMessage, websocket.BinaryMessage},
		{"text", websocket.TextMessage, websocket.TextMessage},
		{"text", websocket.BinaryMessage, websocket.TextMessage},
		{"binary", websocket.TextMessage, websocket.BinaryMessage},
		{"binary", websocket.BinaryMessage, websocket.BinaryMessage},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("messageType=%q sent=%d", tc.messageType, tc.sent), func(t *testing.T) {
			t.Parallel()
			up := startUpstream(t, nil)
			s := dialSession(t, ts.url)
			params := map[string]any{"url": up.url}
			if tc.messageType != "" {
				params["messageType"] = tc.messageType
			}
			idx, _ := s.connectWith(params)
			uc := up.accept(t)
			for _, p := range [][]byte{[]byte("hello"), invalidUTF8, {}} {
				noErr(t, s.writeMessage(tc.sent, withIndex(idx, p)), "send")
				m := uc.read(t)
				equal(t, m.typ, tc.want, "opcode upstream")
				if !bytes.Equal(m.data, p) {
					t.Fatalf("upstream got %q, want %q", m.data, p)
				}
			}
		})
	}
}

// TestClientGetsBinaryFrames checks that every message to the client is a
// binary frame with the index first, for text and binary upstream messages
// and for control messages (the session's read loop fails the test on any
// other frame type).
func TestClientGetsBinaryFrames(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{})
	up := startUpstream(t, nil)
	s := dialSession(t, ts.url)
	a := s.connect(up.url)
	ua := up.accept(t)
	b := s.connect(up.url)
	ub := up.accept(t)
	ua.write(t, websocket.TextMessage, []byte("text from a"))
	ub.write(t, websocket.BinaryMessage, []byte{0xff, 0xff, 0})
	ua.write(t, websocket.TextMessage, []byte{})
	equal(t, string(s.readDataFrom(a)), "text from a", "message from a")
	equal(t, string(s.readDataFrom(b)), "\xff\xff\x00", "message from b")
	equal(t, string(s.readDataFrom(a)), "", "empty message from a")
}

// TestControlMessageInTextFrame checks that control messages may come in
// text frames, even though the index makes them invalid UTF-8.
func TestControlMessageInTextFrame(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{})
	up := startUpstream(t, echo)
	s := dialSession(t, ts.url)
	body, _ := json.Marshal(map[string]any{"id": 5, "type": "method", "method": "connect", "params": map[string]any{"url": up.url}})
	noErr(t, s.writeMessage(websocket.TextMessage, withIndex(controlIndex, body)), "send")
	r := s.take("reply 5", isReply(5)).ctrl
	if r.Error != nil {
		t.Fatalf("connect in a text frame: %s", r)
	}
	var res connectResult
	noErr(t, json.Unmarshal(r.Result, &res), "result")
	s.send(uint16(*res.Index), []byte("ping?"))
	equal(t, string(s.readDataFrom(uint16(*res.Index))), "ping?", "echo")
}

// TestPingPong checks that wsplice answers pings itself, in both
// directions, with the ping's payload, and never forwards ping or pong.
func TestPingPong(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{})

	t.Run("client ping", func(t *testing.T) {
		t.Parallel()
		up := startUpstream(t, nil)
		s := dialSession(t, ts.url)
		idx := s.connect(up.url)
		uc := up.accept(t)
		for _, p := range []string{marker(), "", string(bytes.Repeat([]byte{'x'}, 125))} {
			noErr(t, s.conn.WriteControl(websocket.PingMessage, []byte(p), time.Now().Add(waitTimeout)), "ping")
			s.waitPong(p)
		}
		// A message after the pings: if they were forwarded, they came first.
		s.send(idx, []byte("after"))
		equal(t, string(uc.read(t).data), "after", "upstream message")
		uc.mu.Lock()
		defer uc.mu.Unlock()
		if len(uc.pings) != 0 {
			t.Errorf("client pings reached the upstream: %q", uc.pings)
		}
	})
	t.Run("upstream ping", func(t *testing.T) {
		t.Parallel()
		up := startUpstream(t, nil)
		s := dialSession(t, ts.url)
		idx := s.connect(up.url)
		uc := up.accept(t)
		p := marker()
		noErr(t, uc.c.WriteControl(websocket.PingMessage, []byte(p), time.Now().Add(waitTimeout)), "upstream ping")
		if !settle(waitTimeout, func() bool { return uc.sawPong(p) }) {
			t.Fatalf("no pong %q to the upstream", p)
		}
		uc.write(t, websocket.BinaryMessage, []byte("after"))
		equal(t, string(s.readDataFrom(idx)), "after", "client message")
		if s.sawPing(p) {
			t.Errorf("the upstream's ping was forwarded to the client")
		}
	})
	t.Run("unsolicited pongs", func(t *testing.T) {
		t.Parallel()
		up := startUpstream(t, nil)
		s := dialSession(t, ts.url)
		idx := s.connect(up.url)
		uc := up.accept(t)
		cp, upong := marker(), marker()
		noErr(t, s.conn.WriteControl(websocket.PongMessage, []byte(cp), time.Now().Add(waitTimeout)), "client pong")
		noErr(t, uc.c.WriteControl(websocket.PongMessage, []byte(upong), time.Now().Add(waitTimeout)), "upstream pong")
		s.send(idx, []byte("after"))
		equal(t, string(uc.read(t).data), "after", "upstream message")
		uc.write(t, websocket.BinaryMessage, []byte("after"))
		equal(t, string(s.readDataFrom(idx)), "after", "client message")
		if uc.sawPong(cp) {
			t.Errorf("the client's pong was forwarded upstream")
		}
		for _, p := range s.pongsCopy() {
			if p == upong {
				t.Errorf("the upstream's pong was forwarded to the client")
			}
		}
	})
}

// TestFragmentedFromUpstream sends a 1 MiB message in many fragments from
// one upstream while another sends small messages: the client must get
// each message whole, never interleaved (gorilla's reader fails on a new
// message inside a fragmented one), in order.
func TestFragmentedFromUpstream(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{})
	big := startUpstreamWith(t, websocket.Upgrader{WriteBufferSize: 1024}, nil)
	small := startUpstream(t, nil)
	s := dialSession(t, ts.url)
	bi := s.connect(big.url)
	ub := big.accept(t)
	si := s.connect(small.url)
	us := small.accept(t)

	payload := randBytes(1 << 20)
	const nSmall = 300
	var wg sync.WaitGroup
	wg.Add(2)
	errs := make(chan error, 2)
	go func() {
		defer wg.Done()
		// Written in pieces, so gorilla emits a frame per 1 KiB buffer.
		w, err := ub.c.NextWriter(websocket.BinaryMessage)
		if err != nil {
			errs <- err
			return
		}
		for off := 0; off < len(payload); off += 777 {
			end := min(off+777, len(payload))
			if _, err := w.Write(payload[off:end]); err != nil {
				errs <- err
				return
			}
		}
		errs <- w.Close()
	}()
	go func() {
		defer wg.Done()
		for i := range nSmall {
			if err := us.c.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, "small %d", i)); err != nil {
				errs <- err
				return
			}
		}
		errs <- nil
	}()
	wg.Wait()
	for range 2 {
		noErr(t, <-errs, "upstream write")
	}
	got := s.readDataFrom(bi)
	if sha256.Sum256(got) != sha256.Sum256(payload) {
		t.Fatalf("1 MiB message corrupted: got %d bytes", len(got))
	}
	for i := range nSmall {
		equal(t, string(s.readDataFrom(si)), fmt.Sprintf("small %d", i), "small message")
	}
}

// TestFragmentedFromClient sends a 1 MiB message as many fragments from
// the client: only the first carries the index, and the upstream gets the
// whole message with its opcode.
func TestFragmentedFromClient(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{})
	up := startUpstream(t, nil)
	s := dialSessionWith(t, ts.url, &websocket.Dialer{HandshakeTimeout: waitTimeout, WriteBufferSize: 1024})
	idx := s.connect(up.url)
	uc := up.accept(t)
	for _, mt := range []int{websocket.BinaryMessage, websocket.TextMessage} {
		payload := randBytes(1 << 20)
		s.wmu.Lock()
		w, err := s.conn.NextWriter(mt)
		noErr(t, err, "NextWriter")
		_, err = w.Write(binary.BigEndian.AppendUint16(nil, idx))
		noErr(t, err, "write index")
		for off := 0; off < len(payload); off += 1000 {
			_, err = w.Write(payload[off:min(off+1000, len(payload))])
			noErr(t, err, "write fragment")
		}
		noErr(t, w.Close(), "close message")
		s.wmu.Unlock()
		m := uc.read(t)
		equal(t, m.typ, mt, "opcode upstream")
		if sha256.Sum256(m.data) != sha256.Sum256(payload) {
			t.Fatalf("fragmented message corrupted: got %d bytes, want %d", len(m.data), len(payload))
		}
	}
}

// TestFragmentedRaw covers the fragment cases a library will not produce
// on demand: the index split over frames, a first frame holding only the
// index, a ping between fragments, and a fragmented control message.
func TestFragmentedRaw(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{})

	// open connects a raw session to an upstream of its own and returns the
	// session, the upstream connection and the upstream.
	open := func(t *testing.T) (*rawClient, *upConn, *upstream) {
		up := startUpstream(t, nil)
		c := dialRaw(t, ts.addr)
		body, _ := json.Marshal(map[string]any{"id": 1, "type": "method", "method": "connect", "params": map[string]any{"url": up.url}})
		c.write(frame{fin: true, op: opBinary, masked: true, payload: withIndex(controlIndex, body)})
		r := c.readControl()
		if r.Error != nil || r.ID != 1 {
			t.Fatalf("connect: %s", r)
		}
		var res connectResult
		noErr(t, json.Unmarshal(r.Result, &res), "connect result")
		equal(t, *res.Index, 0, "first index")
		return c, up.accept(t), up
	}

	t.Run("index split over frames", func(t *testing.T) {
		t.Parallel()
		c, uc, _ := open(t)
		c.write(
			frame{fin: false, op: opBinary, masked: true, payload: []byte{0}},
			frame{fin: true, op: opCont, masked: true, payload: []byte{0, 'l', 'o', 's', 't'}},
		)
		m := c.readControl()
		if m.Type != "method" || m.Method != "warn" {
			t.Fatalf("got %s, want warn 4001", m)
		}
		var p warnParams
		noErr(t, json.Unmarshal(m.Params, &p), "warn params")
		equal(t, p.Code, 4001, "warn code")
		// The message was discarded; the next one goes through.
		c.write(frame{fin: true, op: opBinary, masked: true, payload: withIndex(0, []byte("next"))})
		equal(t, string(uc.read(t).data), "next", "message after the discarded one")
	})
	t.Run("first frame holds only the index", func(t *testing.T) {
		t.Parallel()
		c, uc, _ := open(t)
		c.write(
			frame{fin: false, op: opText, masked: true, payload: []byte{0, 0}},
			frame{fin: false, op: opCont, masked: true, payload: []byte("hel")},
			frame{fin: false, op: opCont, masked: true, payload: nil},
			frame{fin: true, op: opCont, masked: true, payload: []byte("lo")},
		)
		m := uc.read(t)
		equal(t, m.typ, websocket.TextMessage, "opcode")
		equal(t, string(m.data), "hello", "message")
	})
	t.Run("ping between fragments", func(t *testing.T) {
		t.Parallel()
		c, uc, _ := open(t)
		c.write(
			frame{fin: false, op: opBinary, masked: true, payload: withIndex(0, []byte("first half,"))},
			frame{fin: true, op: opPing, masked: true, payload: []byte("mid")},
		)
		f := c.next()
		if f.op != opPong || string(f.payload) != "mid" {
			t.Fatalf("got %s, want pong %q", f, "mid")
		}
		c.write(frame{fin: true, op: opCont, masked: true, payload: []byte("second half")})
		equal(t, string(uc.read(t).data), "first half,second half", "message")
	})
	t.Run("fragmented control message", func(t *testing.T) {
		t.Parallel()
		c, _, up := open(t)
		body, _ := json.Marshal(map[string]any{"id": 9, "type": "method", "method": "connect", "params": map[string]any{"url": up.url}})
		msg := withIndex(controlIndex, body)
		c.write(
			frame{fin: false, op: opBinary, masked: true, payload: msg[:2]},
			frame{fin: false, op: opCont, masked: true, payload: msg[2:10]},
			frame{fin: true, op: opCont, masked: true, payload: msg[10:]},
		)
		r := c.readControl()
		if r.Error != nil || r.ID != 9 {
			t.Fatalf("fragmented connect: %s", r)
		}
		var res connectResult
		noErr(t, json.Unmarshal(r.Result, &res), "connect result")
		equal(t, *res.Index, 1, "second index")
	})
}
