//go:build linux

package splice_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsplice/wsplice/splice"
)

// TestMaxSessionsPerIP: beyond the limit an address gets HTTP 429 before
// the upgrade; a slot frees when a session ends.
func TestMaxSessionsPerIP(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{MaxSessionsPerIP: 2})
	a := dialSession(t, ts.url)
	dialSession(t, ts.url)
	_, resp, err := websocket.DefaultDialer.Dial(ts.url, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("third session from one address: err %v, resp %v; want HTTP 429", err, resp)
	}
	a.conn.Close()
	if !settle(waitTimeout, func() bool { return ts.srv.Sessions() == 1 }) {
		t.Fatalf("sessions %d after one closed", ts.srv.Sessions())
	}
	dialSession(t, ts.url)
}

// TestAllowedOrigins: a browser origin not on the list gets 403 before
// the upgrade; listed ones and, with "none", origin-less clients pass.
func TestAllowedOrigins(t *testing.T) {
	t.Parallel()
	pol, err := splice.NewOriginPolicy([]string{"https://app.example.com", "none"})
	noErr(t, err, "origin policy")
	ts := startServer(t, splice.Config{Origins: pol})
	cases := []struct {
		origin string
		status int
	}{
		{"https://app.example.com", 101},
		{"", 101},
		{"https://evil.example.com", 403},
	}
	for _, tc := range cases {
		h := http.Header{}
		if tc.origin != "" {
			h.Set("Origin", tc.origin)
		}
		c, resp, err := websocket.DefaultDialer.Dial(ts.url, h)
		if c != nil {
			c.Close()
		}
		if resp == nil {
			t.Fatalf("origin %q: no response (%v)", tc.origin, err)
		}
		if resp.StatusCode != tc.status {
			t.Errorf("origin %q: HTTP %d, want %d", tc.origin, resp.StatusCode, tc.status)
		}
		if tc.status == 403 && resp.Body != nil {
			buf := make([]byte, 200)
			n, _ := resp.Body.Read(buf)
			if !strings.Contains(string(buf[:n]), "origin") {
				t.Errorf("403 body %q does not say why", buf[:n])
			}
		}
	}
}

// TestDialsInFlightPerSession: a session may have at most 8 connects
// being dialed; the ninth gets 4008 at once, and other sessions are not
// held up.
func TestDialsInFlightPerSession(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{DialTimeout: 3 * time.Second})
	hang := startRawUpstream(t, func(conn net.Conn, br *bufio.Reader) {
		io.Copy(io.Discard, br) // accept the TCP connection, never answer
	})
	s := dialSession(t, ts.url)
	for i := range 9 {
		s.request(i+1, "connect", map[string]any{"url": hang.url})
	}
	r := s.take("4008 reply", func(e event) bool {
		return e.ctrl != nil && e.ctrl.Type == "reply" && e.ctrl.Error != nil && e.ctrl.Error.Code == 4008
	})
	if !strings.Contains(r.ctrl.Error.Message, "in flight") {
		t.Fatalf("4008 message %q", r.ctrl.Error.Message)
	}
	// Another session dials normally meanwhile.
	up := startUpstream(t, nil)
	other := dialSession(t, ts.url)
	other.connect(up.url)
}

// TestConnectionsSpreadOverLoops: a burst of connections ends up spread
// evenly over the loops, although every loop accepts and a loop's count
// only grows once the connection reaches it.
func TestConnectionsSpreadOverLoops(t *testing.T) {
	t.Parallel()
	const loops, n = 4, 64
	ts := startServer(t, splice.Config{Loops: loops})
	conns := make(chan net.Conn, n)
	for range n {
		go func() {
			c, err := net.DialTimeout("tcp", ts.addr, waitTimeout)
			if err != nil {
				t.Error(err)
			}
			conns <- c
		}()
	}
	for range n {
		if c := <-conns; c != nil {
			defer c.Close()
		}
	}
	var per []int64
	if !settle(waitTimeout, func() bool {
		per = ts.srv.Stats().LoopClients
		var sum int64
		for _, v := range per {
			sum += v
		}
		return sum == n
	}) {
		t.Fatalf("client connections per loop %v, want %d in all", per, n)
	}
	lo, hi := per[0], per[0]
	for _, v := range per {
		lo, hi = min(lo, v), max(hi, v)
	}
	if hi-lo > 2 {
		t.Errorf("client connections per loop %v: want them within 2 of each other", per)
	}
}
