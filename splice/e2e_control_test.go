//go:build linux

package splice_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsplice/wsplice/splice"
)

// TestConnectSmallestFreeIndex checks that connect returns the smallest
// free index, including indices freed by terminate and by the upstream
// going away.
func TestConnectSmallestFreeIndex(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{})
	up := startUpstream(t, nil)
	s := dialSession(t, ts.url)
	conns := map[uint16]*upConn{}
	for want := range uint16(4) {
		equal(t, s.connect(up.url), want, "index")
		conns[want] = up.accept(t)
	}
	r := s.call("terminate", map[string]any{"index": 1})
	if r.Error != nil {
		t.Fatalf("terminate: %s", r)
	}
	equal(t, s.connect(up.url), uint16(1), "index after terminating 1")
	up.accept(t)

	// Upstream 2 goes away on its own: once reported, 2 is free again.
	conns[2].c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(waitTimeout))
	equal(t, *s.waitDisconnect().Index, 2, "disconnected index")
	equal(t, s.connect(up.url), uint16(2), "index after upstream 2 left")
	equal(t, s.connect(up.url), uint16(4), "next index")
}

// TestConnectSubprotocol checks the negotiated subprotocol in the result
// ("" when none) and that headers reach the upstream.
func TestConnectSubprotocol(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{})
	upgrader := websocket.Upgrader{Subprotocols: []string{"b.v1", "c.v1"}}
	cases := []struct {
		name   string
		offer  []string
		expect string
	}{
		{"none offered", nil, ""},
		{"no overlap", []string{"a.v1"}, ""},
		{"one match", []string{"a.v1", "c.v1"}, "c.v1"},
		{"upstream's preference", []string{"c.v1", "b.v1"}, "b.v1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := startUpstreamWith(t, upgrader, nil)
			s := dialSession(t, ts.url)
			params := map[string]any{"url": up.url}
			if tc.offer != nil {
				params["subprotocols"] = tc.offer
			}
			_, sub := s.connectWith(params)
			equal(t, sub, tc.expect, "subprotocol")
			uc := up.accept(t)
			equal(t, uc.c.Subprotocol(), tc.expect, "subprotocol the upstream chose")
		})
	}
	t.Run("headers", func(t *testing.T) {
		t.Parallel()
		up := startUpstream(t, nil)
		s := dialSession(t, ts.url)
		mk := marker()
		s.connectWith(map[string]any{"url": up.url + "path?q=1", "headers": map[string]string{
			"X-Test-Marker": mk, "Authorization": "Bearer " + mk,
		}})
		uc := up.accept(t)
		equal(t, uc.req.Header.Get("X-Test-Marker"), mk, "X-Test-Marker header")
		equal(t, uc.req.Header.Get("Authorization"), "Bearer "+mk, "Authorization header")
		equal(t, uc.req.URL.RequestURI(), "/path?q=1", "request URI")
	})
}

// TestConnectReplyBeforeUpstreamData checks that the connect reply reaches
// the client before the upstream's first message, and that bytes an
// upstream sends in the same write as its 101 response are not lost.
func TestConnectReplyBeforeUpstreamData(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{})
	first := []byte("sent right after the handshake")
	gorillaUp := startUpstream(t, func(uc *upConn) {
		uc.c.WriteMessage(websocket.BinaryMessage, first)
		uc.c.WriteMessage(websocket.TextMessage, []byte("second"))
		uc.record()
	})
	rawUp := startRawUpstream(t, func(conn net.Conn, br *bufio.Reader) {
		var frames []byte
		frames = appendFrame(frames, frame{fin: true, op: opBinary, payload: first})
		frames = appendFrame(frames, frame{fin: false, op: opText, payload: []byte("sec")})
		frames = appendFrame(frames, frame{fin: true, op: opCont, payload: []byte("ond")})
		if _, err := rawAccept(conn, br, frames); err != nil {
			return
		}
		for {
			if _, err := readFrame(br); err != nil {
				return
			}
		}
	})
	for _, up := range []struct {
		name string
		url  string
	}{{"gorilla", gorillaUp.url}, {"101 and frames in one write", rawUp.url}} {
		t.Run(up.name, func(t *testing.T) {
			t.Parallel()
			s := dialSession(t, ts.url)
			for range 3 {
				id := s.nextID.Add(1)
				s.request(id, "connect", map[string]any{"url": up.url})
				reply := s.take("connect reply", isReply(id))
				if reply.ctrl.Error != nil {
					t.Fatalf("connect: %s", reply.ctrl)
				}
				var res connectResult
				noErr(t, json.Unmarshal(reply.ctrl.Result, &res), "result")
				idx := uint16(*res.Index)
				data := s.take("first message", isDataFrom(idx))
				if data.seq < reply.seq {
					t.Errorf("upstream data (#%d) arrived before the connect reply (#%d)", data.seq, reply.seq)
				}
				equal(t, string(data.data), string(first), "first message")
				equal(t, string(s.readDataFrom(idx)), "second", "second message")
			}
		})
	}
}

// TestRequestErrors covers the error replies of connect and the control
// channel, one case per code and path. Each case names the policy of the
// server it runs on.
func TestRequestErrors(t *testing.T) {
	t.Parallel()
	open := startServer(t, splice.Config{}) // loopback allowed
	public := startServer(t, splice.Config{Policy: mustPolicy(t, nil, false)})
	listed := startServer(t, splice.Config{Policy: mustPolicy(t, []string{"allowed.example", "*.wild.example", "LocalHost"}, false)})
	up := startUpstream(t, nil)
	port := up.addr[strings.LastIndex(up.addr, ":")+1:]

	cases := []struct {
		name   string
		srv    *testServer
		method string
		params any
		code   int
		path   string
		alt    int // another code the contract's wording admits
	}{
		// 4003
		{"unknown method", open, "frobnicate", map[string]any{}, 4003, "", 0},
		{"method of another type", open, "onSocketDisconnect", map[string]any{"index": 0}, 4003, "", 0},
		// 4005: the URL is checked before the host.
		{"url missing", open, "connect", map[string]any{}, 4005, "", 0},
		{"url empty", open, "connect", map[string]any{"url": ""}, 4005, "", 0},
		{"url unparsable", open, "connect", map[string]any{"url": "ws://[::1"}, 4005, "", 0},
		{"url without host", open, "connect", map[string]any{"url": "ws:///path"}, 4005, "", 0},
		{"url relative", open, "connect", map[string]any{"url": "/just/a/path"}, 4005, "", 0},
		{"http scheme, private host", open, "connect", map[string]any{"url": "http://10.0.0.1/"}, 4005, "", 0},
		{"https scheme", open, "connect", map[string]any{"url": "https://127.0.0.1:" + port + "/"}, 4005, "", 0},
		{"ftp scheme", open, "connect", map[string]any{"url": "ftp://127.0.0.1/"}, 4005, "", 0},
		{"bad scheme on a refused host", public, "connect", map[string]any{"url": "http://10.0.0.1/"}, 4005, "", 0},
		{"bad scheme on an unlisted host", listed, "connect", map[string]any{"url": "http://not-listed.example/"}, 4005, "", 0},
		// 4006
		{"loopback refused", public, "connect", map[string]any{"url": "ws://127.0.0.1:" + port + "/"}, 4006, "url", 0},
		{"loopback v6 refused", public, "connect", map[string]any{"url": "ws://[::1]:" + port + "/"}, 4006, "url", 0},
		{"localhost refused", public, "connect", map[string]any{"url": "ws://localhost:" + port + "/"}, 4006, "url", 0},
		{"private refused", public, "connect", map[string]any{"url": "ws://10.1.2.3/"}, 4006, "url", 0},
		{"private 192.168 refused", public, "connect", map[string]any{"url": "wss://192.168.1.1/"}, 4006, "url", 0},
		{"link-local refused", public, "connect", map[string]any{"url": "ws://169.254.169.254/"}, 4006, "url", 0},
		{"unspecified refused", public, "connect", map[string]any{"url": "ws://0.0.0.0:" + port + "/"}, 4006, "url", 0},
		{"not listed", listed, "connect", map[string]any{"url": "ws://other.example/"}, 4006, "url", 0},
		{"wildcard does not match its apex", listed, "connect", map[string]any{"url": "ws://wild.example/"}, 4006, "url", 0},
		{"wildcard suffix trick", listed, "connect", map[string]any{"url": "ws://evilwild.example/"}, 4006, "url", 0},
		{"listed name, other address", listed, "connect", map[string]any{"url": "ws://127.0.0.1:" + port + "/"}, 4006, "url", 0},
		// 4009
		{"url not a string", open, "connect", map[string]any{"url": 42}, 4009, "url", 0},
		{"headers not an object", open, "connect", map[string]any{"url": up.url, "headers": []string{"a"}}, 4009, "headers", 0},
		{"header value not a string", open, "connect", map[string]any{"url": up.url, "headers": map[string]any{"X-A": 1}}, 4009, "", 0},
		{"subprotocols not an array", open, "connect", map[string]any{"url": up.url, "subprotocols": "chat"}, 4009, "subprotocols", 0},
		{"subprotocol not a string", open, "connect", map[string]any{"url": up.url, "subprotocols": []any{1}}, 4009, "", 0},
		{"timeout not a number", open, "connect", map[string]any{"url": up.url, "timeout": "1s"}, 4009, "timeout", 0},
		{"messageType unknown", open, "connect", map[string]any{"url": up.url, "messageType": "utf8"}, 4009, "messageType", 0},
		{"messageType not a string", open, "connect", map[string]any{"url": up.url, "messageType": 1}, 4009, "messageType", 0},
		{"connect params not an object", open, "connect", []int{1}, 4009, "", 0},
		{"terminate index missing", open, "terminate", map[string]any{}, 4009, "index", 0},
		{"terminate index not a number", open, "terminate", map[string]any{"index": "0"}, 4009, "index", 0},
		{"terminate code not a number", open, "terminate", map[string]any{"index": 0, "code": "1000"}, 4009, "code", 0},
		{"terminate reason not a string", open, "terminate", map[string]any{"index": 0, "reason": 5}, 4009, "reason", 0},
		// 4004
		{"terminate unopened index", open, "terminate", map[string]any{"index": 3}, 4004, "", 0},
		{"terminate control index", open, "terminate", map[string]any{"index": controlIndex}, 4004, "", 4009},
		{"terminate index out of range", open, "terminate", map[string]any{"index": 70000}, 4009, "index", 4004},
		{"terminate negative index", open, "terminate", map[string]any{"index": -1}, 4009, "index", 4004},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := dialSession(t, tc.srv.url)
			r := s.call(tc.method, tc.params)
			if tc.alt != 0 && r.Error != nil && r.Error.Code == tc.alt {
				t.Logf("got the alternative code: %s", r)
			} else {
				wantError(t, r, tc.code, tc.path)
			}
			if tc.code == 4009 && tc.path == "" && r.Error.Path == "" {
				t.Errorf("4009 without a path: %s", r)
			}
			if tc.code == 4006 {
				// Nothing was dialed: the session still works and has no index 0.
				r := s.call("terminate", map[string]any{"index": 0})
				wantError(t, r, 4004, "")
			}
		})
	}
}

// TestHostPolicyAllows checks the other side of the policy: listed names
// and addresses are dialed even when private, case-insensitively, and
// wildcards match subdomains.
func TestHostPolicyAllows(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		allowed []string
		url     string // PORT is the upstream's
	}{
		{"listed IP literal", []string{"127.0.0.1"}, "ws://127.0.0.1:PORT/"},
		{"listed name", []string{"localhost"}, "ws://localhost:PORT/"},
		{"case-insensitive list", []string{"LOCALHOST"}, "ws://localhost:PORT/"},
		{"case-insensitive URL", []string{"localhost"}, "ws://LocalHost:PORT/"},
		{"one of several", []string{"a.example", "127.0.0.1", "b.example"}, "ws://127.0.0.1:PORT/"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := startUpstream(t, nil)
			port := up.addr[strings.LastIndex(up.addr, ":")+1:]
			ts := startServer(t, splice.Config{Policy: mustPolicy(t, tc.allowed, false)})
			s := dialSession(t, ts.url)
			idx := s.connect(strings.Replace(tc.url, "PORT", port, 1))
			s.send(idx, []byte("through"))
			equal(t, string(up.accept(t).read(t).data), "through", "message")
		})
	}
	t.Run("wildcard matches a subdomain", func(t *testing.T) {
		t.Parallel()
		// sub.wild.example does not resolve: the policy passes it, and the
		// dial fails (4007), not the host check (4006).
		ts := startServer(t, splice.Config{Policy: mustPolicy(t, []string{"*.wild.example"}, false)})
		s := dialSession(t, ts.url)
		r := s.call("connect", map[string]any{"url": "ws://sub.wild.example/", "timeout": 2000})
		wantError(t, r, 4007, "")
	})
}

// TestDialErrors checks 4007 for each way a dial can fail, with a message
// that says what failed, and the timeout parameter and its cap.
func TestDialErrors(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{})
	capped := startServer(t, splice.Config{DialTimeout: 500 * time.Millisecond})

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	noErr(t, err, "listen")
	refused := "ws://" + ln.Addr().String() + "/"
	ln.Close()

	notFound := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no such thing", http.StatusNotFound)
	}))
	silent := startRawUpstream(t, func(conn net.Conn, br *bufio.Reader) {
		// Accepts and never answers the handshake.
		conn.SetReadDeadline(time.Now().Add(2 * waitTimeout))
		br.ReadByte()
		for {
			if _, err := br.ReadByte(); err != nil {
				return
			}
		}
	})
	hangup := startRawUpstream(t, func(conn net.Conn, br *bufio.Reader) {
		http.ReadRequest(br)
	})
	badAccept := startRawUpstream(t, func(conn net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		conn.Write([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Accept: d3JvbmcgYWNjZXB0IGtleQ==\r\n\r\n"))
		br.ReadByte()
	})

	cases := []struct {
		name    string
		srv     *testServer
		params  map[string]any
		mention []string // the message mentions one of these (lower case)
		within  time.Duration
	}{
		{"refused port", ts, map[string]any{"url": refused}, []string{"refused"}, 5 * time.Second},
		{"HTTP 404 instead of 101", ts, map[string]any{"url": notFound.url}, []string{"404"}, 5 * time.Second},
		{"bad Sec-WebSocket-Accept", ts, map[string]any{"url": badAccept.url}, []string{"accept", "handshake"}, 5 * time.Second},
		{"closed during the handshake", ts, map[string]any{"url": hangup.url}, []string{"eof", "handshake", "reset", "closed"}, 5 * time.Second},
		{"timeout parameter", ts, map[string]any{"url": silent.url, "timeout": 300}, []string{"timeout", "timed out", "deadline"}, 3 * time.Second},
		{"timeout capped by DialTimeout", capped, map[string]any{"url": silent.url, "timeout": 60000}, []string{"timeout", "timed out", "deadline"}, 3 * time.Second},
		{"DialTimeout without parameter", capped, map[string]any{"url": silent.url}, []string{"timeout", "timed out", "deadline"}, 3 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := dialSession(t, tc.srv.url)
			start := time.Now()
			r := s.call("connect", tc.params)
			elapsed := time.Since(start)
			wantError(t, r, 4007, "")
			msg := strings.ToLower(r.Error.Message)
			found := false
			for _, m := range tc.mention {
				found = found || strings.Contains(msg, m)
			}
			if !found {
				t.Errorf("4007 message %q does not mention any of %q", r.Error.Message, tc.mention)
			}
			if elapsed > tc.within {
				t.Errorf("reply after %v, want within %v", elapsed, tc.within)
			}
			// The failed dial left no index behind.
			wantError(t, s.call("terminate", map[string]any{"index": 0}), 4004, "")
		})
	}
}

// startHTTP serves h on an ephemeral port, as an upstream URL.
func startHTTP(t testing.TB, h http.Handler) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	noErr(t, err, "listen")
	srv := &http.Server{Handler: h, ReadHeaderTimeout: waitTimeout}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return &upstream{addr: ln.Addr().String(), url: "ws://" + ln.Addr().String() + "/"}
}

// TestMaxUpstreamsPerSession checks 4008 at the limit, and that a freed
// index can be used again.
func TestMaxUpstreamsPerSession(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{MaxUpstreamsPerSession: 3})
	up := startUpstream(t, nil)
	s := dialSession(t, ts.url)
	for range 3 {
		s.connect(up.url)
	}
	wantError(t, s.call("connect", map[string]any{"url": up.url}), 4008, "")
	wantError(t, s.call("connect", map[string]any{"url": up.url}), 4008, "")
	if r := s.call("terminate", map[string]any{"index": 1}); r.Error != nil {
		t.Fatalf("terminate: %s", r)
	}
	equal(t, s.connect(up.url), uint16(1), "index after terminate")
	wantError(t, s.call("connect", map[string]any{"url": up.url}), 4008, "")

	// The limit is per session.
	other := dialSession(t, ts.url)
	equal(t, other.connect(up.url), uint16(0), "index in another session")
}

// TestTerminate checks that terminate sends the code and reason upstream,
// frees the index, and is never followed by onSocketDisconnect; and that
// codes that may not be sent get 4009 with path "code".
func TestTerminate(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{})
	ok := []struct {
		name   string
		params map[string]any
		code   int
		reason string
	}{
		{"default code", map[string]any{}, 1000, ""},
		{"1000 with reason", map[string]any{"code": 1000, "reason": "done here"}, 1000, "done here"},
		{"1001", map[string]any{"code": 1001}, 1001, ""},
		{"3000", map[string]any{"code": 3000, "reason": "registered"}, 3000, "registered"},
		{"4999", map[string]any{"code": 4999, "reason": "private"}, 4999, "private"},
		{"4123 unicode reason", map[string]any{"code": 4123, "reason": "bye ✓"}, 4123, "bye ✓"},
	}
	for _, tc := range ok {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := startUpstream(t, nil)
			s := dialSession(t, ts.url)
			idx := s.connect(up.url)
			uc := up.accept(t)
			params := map[string]any{"index": idx}
			for k, v := range tc.params {
				params[k] = v
			}
			r := s.call("terminate", params)
			if r.Error != nil {
				t.Fatalf("terminate: %s", r)
			}
			if string(r.Result) != "{}" {
				t.Errorf("terminate result %s, want {}", r.Result)
			}
			code, reason := uc.closeCode(t)
			equal(t, code, tc.code, "close code upstream")
			equal(t, reason, tc.reason, "close reason upstream")
			// The upstream is gone; no onSocketDisconnect may follow.
			s.barrier()
			s.assertNone("onSocketDisconnect after terminate", isMethod("onSocketDisconnect"), 300*time.Millisecond)
			wantError(t, s.call("terminate", map[string]any{"index": idx}), 4004, "")
			s.send(idx, []byte("to a terminated index"))
			equal(t, s.waitWarn().Code, 4004, "warn for data to a terminated index")
		})
	}
	t.Run("bad codes", func(t *testing.T) {
		t.Parallel()
		up := startUpstream(t, nil)
		s := dialSession(t, ts.url)
		idx := s.connect(up.url)
		uc := up.accept(t)
		for _, code := range []int{0, 999, 1004, 1005, 1006, 1015, 5000, 65535, -1} {
			r := s.call("terminate", map[string]any{"index": idx, "code": code})
			wantError(t, r, 4009, "code")
		}
		// The index is still open.
		s.send(idx, []byte("still here"))
		equal(t, string(uc.read(t).data), "still here", "message after bad terminates")
	})
}

// TestOnSocketDisconnect checks the report of an upstream going away:
// its close code and reason, 1006 when it drops without a close, and 1002
// when it breaks the protocol (1009 for a control frame too big).
func TestOnSocketDisconnect(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{})
	closing := startUpstream(t, func(uc *upConn) {
		uc.c.WriteMessage(websocket.BinaryMessage, []byte("last words"))
		uc.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4123, "the close reason"), time.Now().Add(waitTimeout))
		uc.record()
	})
	closingNoCode := startUpstream(t, func(uc *upConn) {
		uc.c.WriteControl(websocket.CloseMessage, []byte{}, time.Now().Add(waitTimeout))
		uc.record()
	})
	dropping := startUpstream(t, func(uc *upConn) {
		uc.c.WriteMessage(websocket.BinaryMessage, []byte("last words"))
		uc.c.NetConn().Close()
	})
	raw := func(frames ...frame) *upstream {
		return startRawUpstream(t, func(conn net.Conn, br *bufio.Reader) {
			var b []byte
			for _, f := range frames {
				b = appendFrame(b, f)
			}
			if _, err := rawAccept(conn, br, nil); err != nil {
				return
			}
			conn.Write(b)
			for {
				if _, err := readFrame(br); err != nil {
					return
				}
			}
		})
	}
	cases := []struct {
		name string
		url  string
		code int
		msg  string // "" : any
		last bool   // "last words" arrives first
	}{
		{"close with code and reason", closing.url, 4123, "the close reason", true},
		{"close without code", closingNoCode.url, 1005, "", false},
		{"connection dropped", dropping.url, 1006, "", true},
		{"masked frame", raw(frame{fin: true, op: opBinary, masked: true, payload: []byte("x")}).url, 1002, "", false},
		{"reserved opcode", raw(frame{fin: true, op: 0x3, payload: []byte("x")}).url, 1002, "", false},
		{"RSV1 without extension", raw(frame{fin: true, rsv: 4, op: opBinary, payload: []byte("x")}).url, 1002, "", false},
		{"continuation without start", raw(frame{fin: true, op: opCont, payload: []byte("x")}).url, 1002, "", false},
		{"fragmented ping", raw(frame{fin: false, op: opPing, payload: []byte("x")}).url, 1002, "", false},
		{"new message inside a fragmented one", raw(
			frame{fin: false, op: opBinary, payload: []byte("a")},
			frame{fin: true, op: opBinary, payload: []byte("b")}).url, 1002, "", false},
		{"control frame too big", raw(frame{fin: true, op: opPing, payload: make([]byte, 200)}).url, 1009, "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := dialSession(t, ts.url)
			idx := s.connect(tc.url)
			if tc.last {
				equal(t, string(s.readDataFrom(idx)), "last words", "message before the end")
			}
			d := s.waitDisconnect()
			equal(t, *d.Index, int(idx), "index")
			if tc.code == 1005 {
				// No status in the close frame: RFC 6455 7.1.5 calls that 1005.
				if d.Code != 1005 && d.Code != 1000 {
					t.Errorf("code %d, want 1005 (or 1000)", d.Code)
				}
			} else {
				equal(t, d.Code, tc.code, "code")
			}
			if tc.msg != "" {
				equal(t, d.Message, tc.msg, "message")
			}
			if tc.code >= 1002 && tc.code != 1005 && tc.code < 4000 && d.Message == "" {
				t.Errorf("onSocketDisconnect %d without a message saying what happened", d.Code)
			}
			// Reported once, and the index is free again.
			s.barrier()
			s.assertNone("second onSocketDisconnect", isMethod("onSocketDisconnect"), 100*time.Millisecond)
			wantError(t, s.call("terminate", map[string]any{"index": idx}), 4004, "")
		})
	}
}

// TestWarnings covers the problems that belong to no request: short data
// messages (4001), data for an index that is not open (4004), bad JSON
// (4000) and an id that is not an integer (4009).
func TestWarnings(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{})
	cases := []struct {
		name string
		msg  []byte // whole client message, index included
		code int
		alt  int // another code the contract's wording admits
	}{
		{"empty message", []byte{}, 4001, 0},
		{"one byte", []byte{0}, 4001, 0},
		{"one byte ff", []byte{0xff}, 4001, 0},
		{"unopened index 0", withIndex(0, []byte("x")), 4004, 0},
		{"unopened index 0xfffe", withIndex(0xfffe, []byte("x")), 4004, 0},
		{"unopened index, no payload", withIndex(7, nil), 4004, 0},
		{"not JSON", withIndex(controlIndex, []byte("{not json")), 4000, 0},
		{"empty control message", withIndex(controlIndex, nil), 4000, 0},
		{"JSON not an object", withIndex(controlIndex, []byte(`"connect"`)), 4000, 4009},
		{"JSON array", withIndex(controlIndex, []byte(`[1,2]`)), 4000, 4009},
		{"id a string", withIndex(controlIndex, []byte(`{"id":"7","type":"method","method":"connect","params":{}}`)), 4009, 0},
		{"id a fraction", withIndex(controlIndex, []byte(`{"id":1.5,"type":"method","method":"connect","params":{}}`)), 4009, 0},
		{"id an object", withIndex(controlIndex, []byte(`{"id":{},"type":"method","method":"connect","params":{}}`)), 4009, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := dialSession(t, ts.url)
			noErr(t, s.writeMessage(websocket.BinaryMessage, tc.msg), "send")
			e := s.take("warn or reply", func(e event) bool { return e.ctrl != nil })
			if e.ctrl.Type == "reply" && tc.code == 4000 {
				// "a reply when an id could be read": allowed, with id 0.
				if e.ctrl.Error == nil || e.ctrl.Error.Code != 4000 {
					t.Fatalf("got %s, want error 4000", e.ctrl)
				}
			} else {
				if e.ctrl.Type != "method" || e.ctrl.Method != "warn" {
					t.Fatalf("got %s, want warn %d", e.ctrl, tc.code)
				}
				var p warnParams
				noErr(t, json.Unmarshal(e.ctrl.Params, &p), "warn params")
				if p.Code != tc.code && (tc.alt == 0 || p.Code != tc.alt) {
					t.Fatalf("warn %d (%s), want %d", p.Code, p.Message, tc.code)
				}
				if p.Message == "" {
					t.Errorf("warn %d without a message", p.Code)
				}
			}
			// The session goes on.
			s.barrier()
		})
	}
	t.Run("bad JSON with a readable id", func(t *testing.T) {
		t.Parallel()
		s := dialSession(t, ts.url)
		s.sendControl([]byte(`{"id":77,"type":"method","method":"connect","params":{"url":}}`))
		e := s.take("warn or reply", func(e event) bool { return e.ctrl != nil })
		switch {
		case e.ctrl.Type == "reply" && e.ctrl.ID == 77 && e.ctrl.Error != nil && e.ctrl.Error.Code == 4000:
		case e.ctrl.Type == "method" && e.ctrl.Method == "warn":
			var p warnParams
			noErr(t, json.Unmarshal(e.ctrl.Params, &p), "warn params")
			equal(t, p.Code, 4000, "warn code")
		default:
			t.Fatalf("got %s, want 4000 as a reply to 77 or a warn", e.ctrl)
		}
	})
	t.Run("missing id replies with id 0", func(t *testing.T) {
		t.Parallel()
		s := dialSession(t, ts.url)
		s.request(nil, "frobnicate", map[string]any{})
		wantError(t, s.take("reply 0", isReply(0)).ctrl, 4003, "")
	})
}

// TestClientReplyIgnored checks that a "reply" from the client gets no
// answer at all.
func TestClientReplyIgnored(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{})
	s := dialSession(t, ts.url)
	s.sendControl([]byte(`{"id":9,"type":"reply","result":{}}`))
	s.sendControl([]byte(`{"id":0,"type":"reply","error":{"code":4000,"message":"x"}}`))
	s.sendControl([]byte(`{"id":10,"type":"reply","method":"connect","params":{"url":"ws://127.0.0.1:1/"}}`))
	r := s.call("frobnicate", map[string]any{})
	wantError(t, r, 4003, "")
	s.assertNone("answer to a client reply", func(e event) bool { return e.ctrl != nil }, 200*time.Millisecond)
}

// TestConcurrentRequests checks that requests run concurrently: a connect
// to a slow upstream does not hold up later requests, and every reply
// carries its request's id.
func TestConcurrentRequests(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{})
	const slowFor = 3 * time.Second
	slow := startRawUpstream(t, func(conn net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		time.Sleep(slowFor)
		key := req.Header.Get("Sec-WebSocket-Key")
		conn.Write([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Protocol: slow\r\nSec-WebSocket-Accept: " + acceptKey(key) + "\r\n\r\n"))
		for {
			if _, err := readFrame(br); err != nil {
				return
			}
		}
	})
	fast := startUpstreamWith(t, websocket.Upgrader{Subprotocols: []string{"fast"}}, echo)
	s := dialSession(t, ts.url)
	start := time.Now()
	s.request(100, "connect", map[string]any{"url": slow.url, "subprotocols": []string{"slow"}})
	ids := []int64{101, 102, 103, 104}
	for _, id := range ids {
		s.request(id, "connect", map[string]any{"url": fast.url, "subprotocols": []string{"fast"}})
	}
	s.request(105, "frobnicate", map[string]any{})
	for _, id := range ids {
		r := s.take(fmt.Sprint("reply ", id), isReply(id)).ctrl
		if r.Error != nil {
			t.Fatalf("connect %d: %s", id, r)
		}
		var res connectResult
		noErr(t, json.Unmarshal(r.Result, &res), "result")
		equal(t, *res.Subprotocol, "fast", fmt.Sprint("subprotocol of reply ", id))
	}
	wantError(t, s.take("reply 105", isReply(105)).ctrl, 4003, "")
	if elapsed := time.Since(start); elapsed >= slowFor {
		t.Errorf("fast requests answered after %v: they waited for the slow connect", elapsed)
	}
	r := s.take("reply 100", isReply(100)).ctrl
	if r.Error != nil {
		t.Fatalf("slow connect: %s", r)
	}
	var res connectResult
	noErr(t, json.Unmarshal(r.Result, &res), "result")
	equal(t, *res.Subprotocol, "slow", "subprotocol of the slow reply")
}

// TestFrameSizeLimit checks that a control message over the limit closes
// the session with 1009 (4002), one at the limit is read, and data
// messages are not bound by it.
func TestFrameSizeLimit(t *testing.T) {
	t.Parallel()
	const limit = 4096
	ts := startServer(t, splice.Config{FrameSizeLimit: limit})
	up := startUpstream(t, echo)

	// request pads an unknown-method request to exactly n bytes.
	request := func(n int) []byte {
		base := `{"id":3,"type":"method","method":"frobnicate","params":{"pad":""}}`
		pad := strings.Repeat("p", n-len(base))
		return []byte(strings.Replace(base, `"pad":""`, `"pad":"`+pad+`"`, 1))
	}
	t.Run("at the limit", func(t *testing.T) {
		t.Parallel()
		s := dialSession(t, ts.url)
		s.sendControl(request(limit))
		wantError(t, s.take("reply 3", isReply(3)).ctrl, 4003, "")
	})
	over := func(t *testing.T, s *session) {
		t.Helper()
		code, _ := s.closeFrame()
		equal(t, code, 1009, "close code")
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, e := range s.queue {
			if e.ctrl == nil || e.ctrl.Method != "warn" {
				t.Errorf("before the close: %s, want nothing or warn 4002", e)
				continue
			}
			var p warnParams
			json.Unmarshal(e.ctrl.Params, &p)
			if p.Code != 4002 {
				t.Errorf("warn %d before the close, want 4002", p.Code)
			}
		}
	}
	t.Run("one byte over", func(t *testing.T) {
		t.Parallel()
		s := dialSession(t, ts.url)
		s.sendControl(request(limit + 1))
		over(t, s)
	})
	t.Run("fragmented over", func(t *testing.T) {
		t.Parallel()
		s := dialSessionWith(t, ts.url, &websocket.Dialer{HandshakeTimeout: waitTimeout, WriteBufferSize: 512})
		// wsplice may close the session before the last fragment is written.
		s.writeMessage(websocket.BinaryMessage, withIndex(controlIndex, request(4*limit)))
		over(t, s)
	})
	t.Run("upstreams get 1009 too", func(t *testing.T) {
		t.Parallel()
		up := startUpstream(t, nil)
		s := dialSession(t, ts.url)
		s.connect(up.url)
		uc := up.accept(t)
		s.sendControl(request(limit + 100))
		over(t, s)
		code, _ := uc.closeCode(t)
		if code != 1009 && code != 1001 {
			t.Errorf("upstream close %d, want 1009 or 1001", code)
		}
	})
	t.Run("data is not limited", func(t *testing.T) {
		t.Parallel()
		s := dialSession(t, ts.url)
		idx := s.connect(up.url)
		big := randBytes(64 * limit)
		s.send(idx, big)
		got := s.readDataFrom(idx)
		if string(got) != string(big) {
			t.Fatalf("echo of %d bytes: got %d bytes", len(big), len(got))
		}
	})
}
