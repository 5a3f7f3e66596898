package bench

import (
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
)

// The opening handshake (RFC 6455 section 4), written here rather than
// taken from gobwas/ws so that bytes the peer sends right after the
// handshake are kept for the frame scanner instead of being left in a
// pooled bufio.Reader.

const (
	handshakeTimeout = 10 * time.Second
	maxHandshakeSize = 8 << 10
	wsGUID           = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
)

var errHandshake = errors.New("bench: bad websocket handshake")

func acceptKey(key string) string {
	h := sha1.New()
	h.Write([]byte(key))
	h.Write([]byte(wsGUID))
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// readHead reads until the end of an HTTP head and returns the head and
// the bytes read after it.
func readHead(conn net.Conn) (head, rest []byte, err error) {
	buf := make([]byte, 0, 1024)
	tmp := make([]byte, 1024)
	for len(buf) < maxHandshakeSize { // bounded by size and by the deadline
		n, err := conn.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if i := bytes.Index(buf, []byte("\r\n\r\n")); i >= 0 {
			return buf[:i+2], buf[i+4:], nil
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %w", errHandshake, err)
		}
	}
	return nil, nil, fmt.Errorf("%w: head over %d bytes", errHandshake, maxHandshakeSize)
}

// headerValue returns the value of the first header field called name.
func headerValue(head []byte, name string) string {
	for _, line := range strings.Split(string(head), "\r\n")[1:] {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.EqualFold(strings.TrimSpace(k), name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// dialWebSocket opens a client WebSocket to rawURL (ws:// only) and
// returns the connection and any frame bytes the server sent right after
// its handshake.
func dialWebSocket(rawURL string) (net.Conn, []byte, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, nil, err
	}
	if u.Scheme != "ws" && !(u.Scheme == "wss" && useTLS != nil) {
		return nil, nil, fmt.Errorf("bench: %q: only ws:// (and wss:// with --tls) is supported", rawURL)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "80")
	}
	conn, err := net.DialTimeout("tcp", host, handshakeTimeout)
	if err != nil {
		return nil, nil, err
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	if u.Scheme == "wss" {
		cfg := useTLS.client.Clone()
		cfg.ServerName = u.Hostname()
		tc := tls.Client(conn, cfg)
		tc.SetDeadline(time.Now().Add(handshakeTimeout))
		if err := tc.Handshake(); err != nil {
			conn.Close()
			return nil, nil, fmt.Errorf("bench: TLS handshake with %s: %w", host, err)
		}
		tc.SetDeadline(time.Time{})
		conn = tc
	}
	rest, err := clientHandshake(conn, u)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return conn, rest, nil
}

func clientHandshake(conn net.Conn, u *url.URL) ([]byte, error) {
	conn.SetDeadline(time.Now().Add(handshakeTimeout))
	defer conn.SetDeadline(time.Time{})
	var nonce [16]byte
	rand.Read(nonce[:])
	key := base64.StdEncoding.EncodeToString(nonce[:])
	path := u.RequestURI()
	req := "GET " + path + " HTTP/1.1\r\n" +
		"Host: " + u.Host + "\r\n" +
		"Upgrade: websocket\r\n" +
		"Connection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + key + "\r\n" +
		"Sec-WebSocket-Version: 13\r\n\r\n"
	if _, err := conn.Write([]byte(req)); err != nil {
		return nil, err
	}
	head, rest, err := readHead(conn)
	if err != nil {
		return nil, err
	}
	status, _, _ := strings.Cut(string(head), "\r\n")
	if !strings.HasPrefix(status, "HTTP/1.1 101") {
		return nil, fmt.Errorf("%w: %q", errHandshake, status)
	}
	if got := headerValue(head, "Sec-WebSocket-Accept"); got != acceptKey(key) {
		return nil, fmt.Errorf("%w: Sec-WebSocket-Accept %q", errHandshake, got)
	}
	return rest, nil
}

// serverHandshake answers a client's opening handshake and returns the
// bytes the client sent after it.
func serverHandshake(conn net.Conn) ([]byte, error) {
	conn.SetDeadline(time.Now().Add(handshakeTimeout))
	defer conn.SetDeadline(time.Time{})
	head, rest, err := readHead(conn)
	if err != nil {
		return nil, err
	}
	key := headerValue(head, "Sec-WebSocket-Key")
	if !strings.HasPrefix(string(head), "GET ") || key == "" {
		conn.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"))
		return nil, fmt.Errorf("%w: not an upgrade request", errHandshake)
	}
	resp := "HTTP/1.1 101 Switching Protocols\r\n" +
		"Upgrade: websocket\r\n" +
		"Connection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: " + acceptKey(key) + "\r\n\r\n"
	if _, err := conn.Write([]byte(resp)); err != nil {
		return nil, err
	}
	return rest, nil
}
