//go:build linux

package splice_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsplice/wsplice/splice"
)

// TestHandshakeSplitAcrossReads sends the upgrade request in pieces: the
// server must parse it however the bytes are split across reads, and keep
// bytes that follow it in the same segment (a client's first frame).
func TestHandshakeSplitAcrossReads(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{})
	cases := []struct {
		name   string
		chunks []int // sizes written in turn, cycling; 0: the rest at once
		tail   int   // bytes left for the chunks; the rest goes first (0: none)
		pause  time.Duration
		frame  bool // the client's first frame follows the request at once
	}{
		{name: "whole", chunks: []int{0}},
		{name: "byte by byte", chunks: []int{1}, pause: time.Millisecond},
		{name: "odd chunks", chunks: []int{3, 7, 13, 1, 29}, pause: time.Millisecond},
		{name: "split in CRLF CRLF", chunks: []int{1, 2}, tail: 3, pause: 5 * time.Millisecond},
		{name: "first frame in the same write", chunks: []int{0}, frame: true},
		{name: "first frame byte by byte", chunks: []int{1}, frame: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			conn := rawConn(t, ts.addr)
			c := &rawClient{t: t, conn: conn, br: bufio.NewReader(conn)}
			req, key := upgradeRequest(ts.addr, "Sec-WebSocket-Protocol: ignored-by-wsplice", "User-Agent: e2e")
			body, _ := json.Marshal(map[string]any{"id": 7, "type": "method", "method": "no-such-method"})
			msg := appendFrame(nil, frame{fin: true, op: opBinary, masked: true, payload: withIndex(controlIndex, body)})
			data := req
			if tc.frame {
				data = append(append([]byte(nil), req...), msg...)
			}
			i := 0
			if tc.tail > 0 {
				i = len(data) - tc.tail
				c.writeBytes(data[:i])
				time.Sleep(tc.pause)
			}
			for k := 0; i < len(data); k++ {
				n := tc.chunks[k%len(tc.chunks)]
				if n == 0 || i+n > len(data) {
					n = len(data) - i
				}
				c.writeBytes(data[i : i+n])
				i += n
				time.Sleep(tc.pause)
			}
			c.readUpgrade(key)
			if !tc.frame {
				c.writeBytes(msg)
			}
			r := c.readControl()
			equal(t, r.Type, "reply", "reply type")
			equal(t, r.ID, int64(7), "reply id")
			if r.Error == nil || r.Error.Code != 4003 {
				t.Fatalf("reply %s: want error 4003", r)
			}
		})
	}
}

// TestHandshakeReadTimeout checks that --read-timeout cuts a handshake that
// does not complete in time, even one that keeps trickling bytes, and that
// it does not apply to an established session.
func TestHandshakeReadTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 400 * time.Millisecond
	ts := startServer(t, splice.Config{ReadTimeout: timeout})
	req, _ := upgradeRequest(ts.addr)
	cases := []struct {
		name    string
		send    []byte
		trickle bool // send the rest one byte every 50ms
	}{
		{name: "nothing sent"},
		{name: "half a request line", send: []byte("GET / HT")},
		{name: "headers without the blank line", send: req[:len(req)-2]},
		{name: "trickled request", send: req[:len(req)-1], trickle: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			conn := rawConn(t, ts.addr)
			start := time.Now()
			if !tc.trickle {
				conn.Write(tc.send)
			} else {
				go func() {
					for i := range tc.send {
						if _, err := conn.Write(tc.send[i : i+1]); err != nil {
							return
						}
						time.Sleep(50 * time.Millisecond)
					}
				}()
			}
			conn.SetReadDeadline(time.Now().Add(waitTimeout))
			got, err := io.ReadAll(conn)
			elapsed := time.Since(start)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("connection still open after %v with --read-timeout %v", waitTimeout, timeout)
			}
			if bytes.HasPrefix(got, []byte("HTTP/1.1 101")) {
				t.Fatalf("got an upgrade for an incomplete handshake: %q", got)
			}
			if elapsed < timeout/2 {
				t.Errorf("closed after %v, before --read-timeout %v", elapsed, timeout)
			}
			if elapsed > timeout+3*time.Second {
				t.Errorf("closed after %v, want about --read-timeout %v", elapsed, timeout)
			}
		})
	}
	t.Run("established session outlives it", func(t *testing.T) {
		t.Parallel()
		s := dialSession(t, ts.url)
		deadline := time.Now().Add(3 * timeout)
		for time.Now().Before(deadline) {
			s.barrier()
			time.Sleep(timeout / 4)
		}
		s.barrier()
	})
}

// TestNonWebSocketRequest checks that a request that is not a WebSocket
// handshake gets HTTP 400 with a one-line reason, that the connection is
// then closed, and that nothing of the request is echoed back.
func TestNonWebSocketRequest(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{})
	cases := []struct {
		name  string
		lines []string // request line and headers; MARKER is replaced
	}{
		{"plain GET", []string{"GET /MARKER HTTP/1.1", "Host: h", "X-Marker: MARKER", "Connection: keep-alive"}},
		{"POST with upgrade headers", []string{"POST / HTTP/1.1", "Host: h", "Upgrade: websocket", "Connection: Upgrade",
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13", "X-Marker: MARKER", "Content-Length: 0"}},
		{"missing Sec-WebSocket-Key", []string{"GET / HTTP/1.1", "Host: h", "Upgrade: websocket", "Connection: Upgrade",
			"Sec-WebSocket-Version: 13", "X-Marker: MARKER"}},
		{"malformed Sec-WebSocket-Key", []string{"GET / HTTP/1.1", "Host: h", "Upgrade: websocket", "Connection: Upgrade",
			"Sec-WebSocket-Key: MARKER", "Sec-WebSocket-Version: 13"}},
		{"Upgrade is not websocket", []string{"GET / HTTP/1.1", "Host: h", "Upgrade: MARKER", "Connection: Upgrade",
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"}},
		{"no Connection: Upgrade", []string{"GET / HTTP/1.1", "Host: h", "Upgrade: websocket", "Connection: MARKER",
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			mk := marker()
			req := strings.ReplaceAll(strings.Join(tc.lines, "\r\n"), "MARKER", mk) + "\r\n\r\n"
			conn := rawConn(t, ts.addr)
			conn.SetDeadline(time.Now().Add(waitTimeout))
			_, err := conn.Write([]byte(req))
			noErr(t, err, "write request")
			raw, err := io.ReadAll(conn)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("connection still open after %v; got %q", waitTimeout, raw)
			}
			if bytes.Contains(raw, []byte(mk)) {
				t.Errorf("response echoes the request's marker %q:\n%s", mk, raw)
			}
			resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), nil)
			noErr(t, err, "parse response "+string(raw))
			equal(t, resp.StatusCode, http.StatusBadRequest, "status")
			body, _ := io.ReadAll(resp.Body)
			reason := strings.TrimRight(string(body), "\r\n")
			if reason == "" || strings.ContainsAny(reason, "\r\n") {
				t.Errorf("body %q: want a one-line reason", body)
			}
		})
	}
}

// TestMaxSessions checks that sessions beyond MaxSessions get HTTP 503
// before the upgrade, and that a freed slot can be used again.
func TestMaxSessions(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{MaxSessions: 1})
	first := dialSession(t, ts.url)
	first.barrier()

	d := &websocket.Dialer{HandshakeTimeout: waitTimeout}
	c, resp, err := d.Dial(ts.url, nil)
	if err == nil {
		c.Close()
		t.Fatalf("second session accepted with MaxSessions 1")
	}
	if resp == nil {
		t.Fatalf("second session: %v, want HTTP 503", err)
	}
	equal(t, resp.StatusCode, http.StatusServiceUnavailable, "status of the session over the limit")

	first.conn.Close()
	var again *session
	if !settle(waitTimeout, func() bool {
		s, err := dialSessionErr(t, ts.url, d)
		again = s
		return err == nil
	}) {
		t.Fatalf("no session accepted after the first one ended")
	}
	again.barrier()
}
