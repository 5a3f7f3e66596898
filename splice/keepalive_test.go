//go:build linux

package splice_test

import (
	"bufio"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/wsplice/wsplice/splice"
)

// TestKeepalivePingsClientAndUpstream: a silent client and a silent
// upstream both get pings after --ping-interval, and both answer, so
// neither is dropped at --idle-timeout.
func TestKeepalivePingsClientAndUpstream(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{PingInterval: 100 * time.Millisecond, IdleTimeout: 600 * time.Millisecond})
	up := startUpstream(t, nil)
	s := dialSession(t, ts.url)
	idx := s.connect(up.url)
	uc := up.accept(t)
	if !s.waitList(&s.pings, "") {
		t.Fatal("client got no keepalive ping")
	}
	if !settle(waitTimeout, func() bool { return uc.sawPing("") }) {
		t.Fatal("upstream got no keepalive ping")
	}
	time.Sleep(time.Second) // past the idle timeout: pongs kept both alive
	s.send(idx, []byte("still here"))
	equal(t, string(uc.read(t).data), "still here", "upstream message after idle period")
	s.assertNone("onSocketDisconnect", isMethod("onSocketDisconnect"), 50*time.Millisecond)
}

// TestIdleUpstreamDropped: an upstream that never answers pings is
// dropped after --idle-timeout with onSocketDisconnect 1006.
func TestIdleUpstreamDropped(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{PingInterval: 100 * time.Millisecond, IdleTimeout: 400 * time.Millisecond})
	mute := startRawUpstream(t, func(conn net.Conn, br *bufio.Reader) {
		if _, err := rawAccept(conn, br, nil); err != nil {
			return
		}
		buf := make([]byte, 4096)
		for { // read everything, answer nothing
			if _, err := conn.Read(buf); err != nil {
				return
			}
		}
	})
	s := dialSession(t, ts.url)
	idx := s.connect(mute.url)
	d := s.waitDisconnect()
	equal(t, *d.Index, int(idx), "index")
	equal(t, d.Code, 1006, "code")
	equal(t, d.Message, "no pong", "message")
}

// TestIdleClientDropped: a client that answers no ping loses its session
// after --idle-timeout, and its upstreams are closed with 1001.
func TestIdleClientDropped(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{PingInterval: 100 * time.Millisecond, IdleTimeout: 400 * time.Millisecond})
	up := startUpstream(t, nil)
	c := dialRaw(t, ts.addr)
	req := `{"id":1,"type":"method","method":"connect","params":{"url":"` + up.url + `"}}`
	c.write(frame{fin: true, op: opBinary, masked: true, payload: withIndex(0xffff, []byte(req))})
	uc := up.accept(t) // the raw client never reads: no pong goes back
	code, _ := uc.closeCode(t)
	equal(t, code, 1001, "upstream close code after the client went idle")
}

// TestUpstreamSourceAddrs: dials leave from the configured local address.
func TestUpstreamSourceAddrs(t *testing.T) {
	t.Parallel()
	src := netip.MustParseAddr("127.0.0.2")
	ts := startServer(t, splice.Config{SourceAddrs: []netip.Addr{src}})
	up := startUpstream(t, nil)
	s := dialSession(t, ts.url)
	s.connect(up.url)
	uc := up.accept(t)
	host, _, err := net.SplitHostPort(uc.req.RemoteAddr)
	noErr(t, err, "remote addr")
	equal(t, host, src.String(), "upstream sees the source address")
}
