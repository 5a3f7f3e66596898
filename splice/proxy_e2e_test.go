//go:build linux

package splice_test

import (
	"bufio"
	"net/http"
	"testing"
	"time"

	"github.com/wsplice/wsplice/splice"
)

// proxyHandshake sends a PROXY v1 header (if any) and an upgrade request
// on a new connection and returns the HTTP status.
func proxyHandshake(t *testing.T, addr, header string) int {
	t.Helper()
	conn := rawConn(t, addr)
	req, _ := upgradeRequest(addr)
	conn.SetDeadline(time.Now().Add(waitTimeout))
	if _, err := conn.Write(append([]byte(header), req...)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	noErr(t, err, "read response")
	return resp.StatusCode
}

// TestProxyProtocol: with --proxy-protocol the PROXY header's source is
// the client address (here: per-address limits apply to it); without a
// header the connection is refused. Without the flag, a PROXY header is a
// bad request.
func TestProxyProtocol(t *testing.T) {
	t.Parallel()
	on := startServer(t, splice.Config{ProxyProtocol: true, MaxSessionsPerIP: 1})
	v1 := func(src string) string { return "PROXY TCP4 " + src + " 127.0.0.1 40000 3000\r\n" }
	equal(t, proxyHandshake(t, on.addr, v1("192.0.2.1")), 101, "first session from 192.0.2.1")
	equal(t, proxyHandshake(t, on.addr, v1("192.0.2.1")), 429, "second session from 192.0.2.1")
	equal(t, proxyHandshake(t, on.addr, v1("192.0.2.2")), 101, "a session from another address")
	equal(t, proxyHandshake(t, on.addr, "PROXY UNKNOWN\r\n"), 101, "UNKNOWN: the peer address stands")
	equal(t, proxyHandshake(t, on.addr, ""), 400, "no PROXY header")
	v2 := []byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xc6\x33\x64\x07\x7f\x00\x00\x01\x9c\x40\x0b\xb8")
	equal(t, proxyHandshake(t, on.addr, string(v2)), 101, "v2 header from 198.51.100.7")

	off := startServer(t, splice.Config{})
	equal(t, proxyHandshake(t, off.addr, v1("192.0.2.1")), 400, "PROXY header without --proxy-protocol")
}
