//go:build linux

package splice_test

// TLS: ServeTLS (server-only and mutual TLS), wss:// upstreams, reload,
// handshake timeout, integrity under load and resource release over TLS.
// Every certificate is made at test time with crypto/x509.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsplice/wsplice/splice"
)

// --- certificates -----------------------------------------------------------

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool // holds cert only
}

var certSerial atomic.Int64

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	noErr(t, err, "generate key")
	return k
}

// newTestCA makes a self-signed CA valid from an hour ago for a day.
func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(certSerial.Add(1)), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	noErr(t, err, "create CA certificate")
	cert, err := x509.ParseCertificate(der)
	noErr(t, err, "parse CA certificate")
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// certSpec describes a certificate to issue.
type certSpec struct {
	cn        string
	usage     x509.ExtKeyUsage
	dns       []string
	ips       []net.IP
	notBefore time.Time // zero: an hour ago
	notAfter  time.Time // zero: in a day
}

func (ca *testCA) issue(t testing.TB, spec certSpec) tls.Certificate {
	t.Helper()
	if spec.notBefore.IsZero() {
		spec.notBefore = time.Now().Add(-time.Hour)
	}
	if spec.notAfter.IsZero() {
		spec.notAfter = time.Now().Add(24 * time.Hour)
	}
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(certSerial.Add(1)), Subject: pkix.Name{CommonName: spec.cn},
		NotBefore: spec.notBefore, NotAfter: spec.notAfter,
		DNSNames: spec.dns, IPAddresses: spec.ips,
		ExtKeyUsage: []x509.ExtKeyUsage{spec.usage}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	noErr(t, err, "create certificate")
	leaf, err := x509.ParseCertificate(der)
	noErr(t, err, "parse certificate")
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// serverCert is a server certificate for 127.0.0.1, ::1 and localhost.
func (ca *testCA) serverCert(t testing.TB) tls.Certificate {
	return ca.issue(t, certSpec{cn: "wsplice test server", usage: x509.ExtKeyUsageServerAuth,
		dns: []string{"localhost"}, ips: []net.IP{net.ParseIP("127.0.0.1"), net.IPv6loopback}})
}

func (ca *testCA) clientCert(t testing.TB, cn string) tls.Certificate {
	return ca.issue(t, certSpec{cn: cn, usage: x509.ExtKeyUsageClientAuth})
}

// --- servers and clients ----------------------------------------------------

// logBuf collects a server's log lines.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if os.Getenv("WSPLICE_TEST_LOG") != "" {
		os.Stderr.Write(p)
	}
	return l.buf.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuf) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// waitLog waits for a log line holding every one of parts and returns it.
func (l *logBuf) waitLog(t testing.TB, parts ...string) string {
	t.Helper()
	var found string
	ok := settle(waitTimeout, func() bool {
		for _, line := range strings.Split(l.String(), "\n") {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(line, p)
			}
			if all {
				found = line
				return true
			}
		}
		return false
	})
	if !ok {
		t.Fatalf("no log line with %q; log:\n%s", parts, l.String())
	}
	return found
}

// startTLSServer starts wsplice with ServeTLS on an ephemeral port; the
// url is wss://127.0.0.1:PORT/. Closed by a cleanup, which checks that
// ServeTLS returned ErrServerClosed.
func startTLSServer(t testing.TB, cfg splice.Config, tcfg *tls.Config) *testServer {
	t.Helper()
	return startServing(t, cfg, "wss", func(srv *splice.Server, ln net.Listener) error { return srv.ServeTLS(ln, tcfg) })
}

// tlsDialer is a client that trusts roots and presents cert, if given,
// whatever CAs the server asks for (Go's client would otherwise send no
// certificate rather than one from another CA).
func tlsDialer(roots *x509.CertPool, cert ...tls.Certificate) *websocket.Dialer {
	cfg := &tls.Config{RootCAs: roots}
	if len(cert) > 0 {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert[0], nil }
	}
	return &websocket.Dialer{HandshakeTimeout: waitTimeout, TLSClientConfig: cfg}
}

// tlsUpstream is a wss:// echo server (gorilla over httptest's TLS).
type tlsUpstream struct {
	url    string
	addr   string
	snis   chan string // SNI of every handshake
	closes chan int    // close code wsplice sent on each connection (-1: none)
}

// startTLSUpstream starts a wss:// upstream serving cert. Every message is
// echoed; a message "close CODE" makes it close with CODE.
func startTLSUpstream(t testing.TB, cert tls.Certificate) *tlsUpstream {
	t.Helper()
	u := &tlsUpstream{snis: make(chan string, 1024), closes: make(chan int, 1024)}
	var (
		mu   sync.Mutex
		live = map[*websocket.Conn]bool{}
		wg   sync.WaitGroup
	)
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }, Subprotocols: []string{"echo.v2", "echo.v1"}}
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		mu.Lock()
		live[c] = true
		wg.Add(1)
		mu.Unlock()
		defer func() {
			c.Close()
			mu.Lock()
			delete(live, c)
			mu.Unlock()
			wg.Done()
		}()
		for {
			mt, p, err := c.ReadMessage()
			if err != nil {
				code := -1
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					code = ce.Code
				}
				select {
				case u.closes <- code:
				default:
				}
				return
			}
			if code, ok := strings.CutPrefix(string(p), "close "); ok {
				n, _ := strconv.Atoi(code)
				c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(n, "upstream says bye"), time.Now().Add(waitTimeout))
				continue
			}
			if err := c.WriteMessage(mt, p); err != nil {
				return
			}
		}
	}))
	hs.Config.ErrorLog = log.New(io.Discard, "", 0)
	hs.TLS = &tls.Config{
		Certificates: []tls.Certificate{cert},
		GetConfigForClient: func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
			select {
			case u.snis <- hi.ServerName:
			default:
			}
			return nil, nil
		},
	}
	hs.StartTLS()
	u.addr = hs.Listener.Addr().String()
	u.url = "wss://" + u.addr + "/"
	t.Cleanup(func() {
		hs.Close()
		mu.Lock()
		for c := range live {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return u
}

// --- tests ------------------------------------------------------------------

// TestTLSRoundTrip serves TLS 1.2 and 1.3 without client certificates: a
// session carries data to a plain upstream and back, ping is answered,
// and the client's close reaches the upstream and is echoed.
func TestTLSRoundTrip(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "round trip CA")
	ts := startTLSServer(t, splice.Config{}, &tls.Config{Certificates: []tls.Certificate{ca.serverCert(t)}})
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			t.Parallel()
			up := startUpstream(t, nil)
			d := tlsDialer(ca.pool)
			d.TLSClientConfig.MinVersion, d.TLSClientConfig.MaxVersion = v, v
			s := dialSessionWith(t, ts.url, d)
			equal(t, s.conn.NetConn().(*tls.Conn).ConnectionState().Version, v, "TLS version")
			idx := s.connect(up.url)
			uc := up.accept(t)
			for _, size := range []int{0, 1, 125, 126, 65535, 65536, 1 << 20} {
				msg := randBytes(size)
				s.send(idx, msg)
				got := uc.read(t)
				equal(t, got.typ, websocket.BinaryMessage, "opcode upstream")
				if !bytes.Equal(got.data, msg) {
					t.Fatalf("upstream got %d bytes, want the %d sent", len(got.data), size)
				}
				uc.write(t, websocket.TextMessage, msg)
				if back := s.readDataFrom(idx); !bytes.Equal(back, msg) {
					t.Fatalf("client got %d bytes, want the %d sent", len(back), size)
				}
			}
			noErr(t, s.conn.WriteControl(websocket.PingMessage, []byte("tls ping"), time.Now().Add(waitTimeout)), "ping")
			s.waitPong("tls ping")
			noErr(t, s.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4100, "bye"), time.Now().Add(waitTimeout)), "close")
			code, reason := uc.closeCode(t)
			equal(t, code, 4100, "upstream close code")
			equal(t, reason, "bye", "upstream close reason")
			code, _ = s.closeFrame()
			equal(t, code, 4100, "close echoed to the client")
		})
	}
}

// TestTLSClientCertificates checks mutual TLS: a client certificate signed
// by the CA is accepted; none, one from another CA and an expired one are
// refused during the handshake, no session is created, and the refusal is
// logged with its reason.
func TestTLSClientCertificates(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "client CA")
	other := newTestCA(t, "other CA")
	cases := []struct {
		name   string
		certs  []tls.Certificate
		reason string // in the log's err; "" when accepted
	}{
		{"good certificate", []tls.Certificate{ca.clientCert(t, "good client")}, ""},
		{"no certificate", nil, "didn't provide a certificate"},
		{"other CA", []tls.Certificate{other.clientCert(t, "stranger")}, "unknown authority"},
		{"expired", []tls.Certificate{ca.issue(t, certSpec{cn: "expired client", usage: x509.ExtKeyUsageClientAuth,
			notBefore: time.Now().Add(-48 * time.Hour), notAfter: time.Now().Add(-24 * time.Hour)})}, "expired"},
		{"server certificate as client", []tls.Certificate{ca.serverCert(t)}, "usage"},
	}
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			t.Parallel()
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					var logs logBuf
					ts := startTLSServer(t, splice.Config{Logger: logs.logger()}, &tls.Config{
						Certificates: []tls.Certificate{ca.serverCert(t)},
						ClientAuth:   tls.RequireAndVerifyClientCert,
						ClientCAs:    ca.pool,
					})
					d := tlsDialer(ca.pool, tc.certs...)
					d.TLSClientConfig.MinVersion, d.TLSClientConfig.MaxVersion = v, v
					if tc.reason == "" {
						s := dialSessionWith(t, ts.url, d)
						wantError(t, s.call("frobnicate", map[string]any{}), 4003, "")
						equal(t, ts.srv.Sessions(), 1, "sessions")
						return
					}
					s, err := dialSessionErr(t, ts.url, d)
					if err == nil {
						s.conn.Close()
						t.Fatalf("the client was accepted")
					}
					line := logs.waitLog(t, "tls handshake refused", "remote=127.0.0.1:")
					if !strings.Contains(line, tc.reason) {
						t.Errorf("refusal logged without the reason %q: %s", tc.reason, line)
					}
					equal(t, strings.Count(logs.String(), "tls handshake refused"), 1, "refusals logged")
					equal(t, ts.srv.Sessions(), 0, "sessions")
					if strings.Contains(logs.String(), "session") {
						t.Errorf("a session was logged for a refused client:\n%s", logs.String())
					}
				})
			}
		})
	}
}

// TestTLSUpstream dials wss:// upstreams: verified against the test CA
// given as UpstreamRootCAs, with SNI and verification by the URL's host.
// Data, subprotocol, bytes sent right behind the 101, terminate and the
// upstream's own close go through. An unknown CA, a name mismatch and a
// plain server are 4007 errors that say it was TLS and why.
func TestTLSUpstream(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "upstream CA")
	other := newTestCA(t, "unknown CA")
	ts := startServer(t, splice.Config{UpstreamRootCAs: func() *x509.CertPool { return ca.pool }})
	up := startTLSUpstream(t, ca.serverCert(t))

	t.Run("round trip", func(t *testing.T) {
		t.Parallel()
		s := dialSession(t, ts.url)
		idx, sub := s.connectWith(map[string]any{"url": up.url, "subprotocols": []string{"echo.v1"}})
		equal(t, sub, "echo.v1", "subprotocol")
		for _, size := range []int{0, 10, 70000, 1 << 20} {
			msg := randBytes(size)
			s.send(idx, msg)
			if back := s.readDataFrom(idx); !bytes.Equal(back, msg) {
				t.Fatalf("echo of %d bytes: got %d bytes", size, len(back))
			}
		}
		s.send(idx, []byte("close 4123"))
		p := s.waitDisconnect()
		equal(t, *p.Index, int(idx), "onSocketDisconnect index")
		equal(t, p.Code, 4123, "onSocketDisconnect code")
		equal(t, p.Message, "upstream says bye", "onSocketDisconnect message")
	})
	t.Run("terminate", func(t *testing.T) {
		t.Parallel()
		s := dialSession(t, ts.url)
		idx := s.connect(up.url)
		s.send(idx, []byte("x"))
		s.readDataFrom(idx)
		r := s.call("terminate", map[string]any{"index": idx, "code": 4200, "reason": "enough"})
		if r.Error != nil {
			t.Fatalf("terminate: %s", r)
		}
		s.assertNone("onSocketDisconnect after terminate", isMethod("onSocketDisconnect"), 300*time.Millisecond)
	})
	t.Run("SNI is the URL's host", func(t *testing.T) {
		t.Parallel()
		snis := startTLSUpstream(t, ca.serverCert(t))
		s := dialSession(t, ts.url)
		s.connect("wss://localhost:" + portOf(snis.addr) + "/")
		select {
		case sni := <-snis.snis:
			equal(t, sni, "localhost", "SNI")
		case <-time.After(waitTimeout):
			t.Fatal("no handshake seen by the upstream")
		}
	})
	errCases := []struct {
		name string
		url  func() string
		want []string // in the 4007 message
	}{
		{"unknown CA", func() string { return startTLSUpstream(t, other.serverCert(t)).url },
			[]string{"TLS handshake with 127.0.0.1:", "unknown authority"}},
		{"name mismatch", func() string {
			u := startTLSUpstream(t, ca.issue(t, certSpec{cn: "elsewhere", usage: x509.ExtKeyUsageServerAuth,
				dns: []string{"elsewhere.example"}, ips: []net.IP{net.ParseIP("127.0.0.1")}}))
			return "wss://localhost:" + portOf(u.addr) + "/"
		}, []string{"TLS handshake with localhost:", "valid for elsewhere.example", "not localhost"}},
		{"expired", func() string {
			return startTLSUpstream(t, ca.issue(t, certSpec{cn: "old", usage: x509.ExtKeyUsageServerAuth, ips: []net.IP{net.ParseIP("127.0.0.1")},
				notBefore: time.Now().Add(-48 * time.Hour), notAfter: time.Now().Add(-24 * time.Hour)})).url
		}, []string{"TLS handshake with 127.0.0.1:", "expired"}},
		{"plain server", func() string { return "wss://" + startUpstream(t, nil).addr + "/" },
			[]string{"TLS handshake with 127.0.0.1:"}},
	}
	for _, tc := range errCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := dialSession(t, ts.url)
			r := s.call("connect", map[string]any{"url": tc.url()})
			wantError(t, r, 4007, "")
			for _, w := range tc.want {
				if !strings.Contains(r.Error.Message, w) {
					t.Errorf("4007 message %q does not contain %q", r.Error.Message, w)
				}
			}
			// The session is unharmed.
			s.barrier()
		})
	}
	t.Run("system roots only", func(t *testing.T) {
		t.Parallel()
		plainTS := startServer(t, splice.Config{})
		s := dialSession(t, plainTS.url)
		r := s.call("connect", map[string]any{"url": up.url})
		wantError(t, r, 4007, "")
		if !strings.Contains(r.Error.Message, "TLS") {
			t.Errorf("4007 message %q does not say TLS", r.Error.Message)
		}
	})
}

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

// TestTLSUpstreamSendsFirst checks that bytes an upstream sends right
// behind its 101 (often in the same TLS read) reach the client after the
// connect reply, whole and in order.
func TestTLSUpstreamSendsFirst(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "eager CA")
	ts := startServer(t, splice.Config{UpstreamRootCAs: func() *x509.CertPool { return ca.pool }})
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	var wg sync.WaitGroup
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		wg.Add(1)
		defer wg.Done()
		defer c.Close()
		for i := range 20 {
			c.WriteMessage(websocket.BinaryMessage, []byte("hello "+strconv.Itoa(i)))
		}
		c.ReadMessage() // until wsplice closes
	}))
	hs.Config.ErrorLog = log.New(io.Discard, "", 0)
	hs.TLS = &tls.Config{Certificates: []tls.Certificate{ca.serverCert(t)}}
	hs.StartTLS()
	t.Cleanup(func() { hs.CloseClientConnections(); hs.Close(); wg.Wait() })

	s := dialSession(t, ts.url)
	idx := s.connect("wss://" + hs.Listener.Addr().String() + "/")
	for i := range 20 {
		equal(t, string(s.readDataFrom(idx)), "hello "+strconv.Itoa(i), "message")
	}
}

// TestTLSReload swaps the server's certificate while a session is open,
// as cmd/wsplice does on SIGHUP: new connections get the new certificate,
// the open session keeps working.
func TestTLSReload(t *testing.T) {
	t.Parallel()
	caA, caB := newTestCA(t, "CA A"), newTestCA(t, "CA B")
	certA, certB := caA.serverCert(t), caB.serverCert(t)
	var cur atomic.Pointer[tls.Config]
	cur.Store(&tls.Config{Certificates: []tls.Certificate{certA}})
	ts := startTLSServer(t, splice.Config{}, &tls.Config{
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return cur.Load(), nil },
	})
	up := startUpstream(t, echo)
	both := x509.NewCertPool()
	both.AddCert(caA.cert)
	both.AddCert(caB.cert)

	old := dialSessionWith(t, ts.url, tlsDialer(caA.pool))
	idx := old.connect(up.url)
	old.send(idx, []byte("before"))
	equal(t, string(old.readDataFrom(idx)), "before", "echo before the reload")

	cur.Store(&tls.Config{Certificates: []tls.Certificate{certB}})

	if s, err := dialSessionErr(t, ts.url, tlsDialer(caA.pool)); err == nil {
		s.conn.Close()
		t.Fatalf("a client trusting only the old CA connected after the reload")
	}
	s := dialSessionWith(t, ts.url, tlsDialer(both))
	serial := s.conn.NetConn().(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber
	equal(t, serial.Cmp(certB.Leaf.SerialNumber), 0, "serial of the certificate a new connection sees")
	s.barrier()

	old.send(idx, []byte("after"))
	equal(t, string(old.readDataFrom(idx)), "after", "echo on the old session after the reload")
	equal(t, ts.srv.Sessions(), 2, "sessions")
}

// TestTLSHandshakeTimeout checks that a client that connects and sends
// nothing, or half a ClientHello, is cut at ReadTimeout.
func TestTLSHandshakeTimeout(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "timeout CA")
	const readTimeout = 300 * time.Millisecond
	for _, tc := range []struct {
		name string
		send []byte
	}{
		{"silent", nil},
		{"partial hello", []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var logs logBuf
			ts := startTLSServer(t, splice.Config{ReadTimeout: readTimeout, Logger: logs.logger()},
				&tls.Config{Certificates: []tls.Certificate{ca.serverCert(t)}})
			start := time.Now()
			conn := rawConn(t, ts.addr)
			if len(tc.send) > 0 {
				_, err := conn.Write(tc.send)
				noErr(t, err, "write")
			}
			if timeToEOF(conn, conn, waitTimeout) < 0 {
				t.Fatalf("connection still open after %v", waitTimeout)
			}
			elapsed := time.Since(start)
			if elapsed < readTimeout || elapsed > readTimeout+2*time.Second {
				t.Errorf("closed after %v, want about %v", elapsed.Round(time.Millisecond), readTimeout)
			}
			logs.waitLog(t, "tls handshake refused", "timeout")
			equal(t, ts.srv.Sessions(), 0, "sessions")
		})
	}
}

// TestTLSShutdown checks that Shutdown sends a TLS client and a wss
// upstream the going-away close (1001) through their bridges, and that
// ServeTLS returns ErrServerClosed.
func TestTLSShutdown(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "shutdown CA")
	ts := startTLSServer(t, splice.Config{UpstreamRootCAs: func() *x509.CertPool { return ca.pool }},
		&tls.Config{Certificates: []tls.Certificate{ca.serverCert(t)}})
	up := startTLSUpstream(t, ca.serverCert(t))
	s := dialSessionWith(t, ts.url, tlsDialer(ca.pool))
	idx := s.connect(up.url)
	s.send(idx, []byte("x"))
	s.readDataFrom(idx)

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	noErr(t, ts.srv.Shutdown(ctx), "Shutdown")
	code, _ := s.closeFrame()
	equal(t, code, 1001, "client close code")
	select {
	case code := <-up.closes:
		equal(t, code, 1001, "upstream close code")
	case <-time.After(waitTimeout):
		t.Errorf("upstream not closed")
	}
	select {
	case err := <-ts.serve:
		ts.serve <- err // for the cleanup
		if !errors.Is(err, splice.ErrServerClosed) {
			t.Errorf("ServeTLS returned %v, want ErrServerClosed", err)
		}
	case <-time.After(waitTimeout):
		t.Errorf("ServeTLS still running after Shutdown")
	}
	if _, err := dialSessionErr(t, ts.url, tlsDialer(ca.pool)); err == nil {
		t.Errorf("a session was opened after Shutdown")
	}
}

// TestTLSIntegrityUnderLoad is TestIntegrityUnderLoad over TLS: sessions
// over TLS with upstreams over ws:// and wss://, random sizes up to 64
// KiB, checksums and order checked per index.
func TestTLSIntegrityUnderLoad(t *testing.T) {
	sessions, perSession, perIndex := 10, 2, 12
	if testing.Short() {
		perIndex = 4
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("WSPLICE_TEST_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (set WSPLICE_TEST_SEED to repeat)", seed)

	ca := newTestCA(t, "load CA")
	ts := startTLSServer(t, splice.Config{UpstreamRootCAs: func() *x509.CertPool { return ca.pool }},
		&tls.Config{Certificates: []tls.Certificate{ca.serverCert(t)}})
	plain := startUpstream(t, echo)
	secure := startTLSUpstream(t, ca.serverCert(t))
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	var moved atomic.Int64
	for i := range sessions {
		s := dialSessionWith(t, ts.url, tlsDialer(ca.pool))
		url := plain.url
		if i%2 == 1 {
			url = secure.url
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := loadSession(s, url, perSession, perIndex, seed+uint64(i))
			moved.Add(int64(n))
			if err != nil {
				errs <- fmt.Errorf("session %d (%s): %w", i, url[:4], err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d TLS sessions x %d upstreams (ws and wss) x %d messages: %d MiB each way in %v",
		sessions, perSession, perIndex, moved.Load()>>20, time.Since(start).Round(time.Millisecond))
}

// TestTLSReleasesResources runs rounds of TLS sessions with a wss://
// upstream each and ends them (half by dropping TCP, half by a close
// handshake): descriptors and goroutines, bridges included, come back to
// their level after a warm-up round.
func TestTLSReleasesResources(t *testing.T) {
	ca := newTestCA(t, "release CA")
	ts := startTLSServer(t, splice.Config{UpstreamRootCAs: func() *x509.CertPool { return ca.pool }},
		&tls.Config{Certificates: []tls.Certificate{ca.serverCert(t)}})
	up := startTLSUpstream(t, ca.serverCert(t))
	round := func() {
		t.Helper()
		var sessions []*session
		for range 8 {
			s := dialSessionWith(t, ts.url, tlsDialer(ca.pool))
			for range 2 {
				idx := s.connect(up.url)
				s.send(idx, []byte("ping"))
				s.readDataFrom(idx)
			}
			sessions = append(sessions, s)
		}
		for i, s := range sessions {
			if i%2 == 0 {
				s.conn.NetConn().Close()
				continue
			}
			noErr(t, s.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, "bye"),
				time.Now().Add(waitTimeout)), "close")
			if code, _ := s.closeFrame(); code != 1000 {
				t.Errorf("session %d: close echo %d, want 1000", i, code)
			}
			s.conn.Close()
		}
		if !settle(waitTimeout, func() bool { return ts.srv.Sessions() == 0 }) {
			t.Fatalf("%d sessions left", ts.srv.Sessions())
		}
	}
	round()
	baseFD, baseG := steady(countFDs), steady(runtime.NumGoroutine)
	round()
	if !settle(5*time.Second, func() bool { return countFDs() <= baseFD && runtime.NumGoroutine() <= baseG }) {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Errorf("after TLS sessions ended: %d fds (was %d), %d goroutines (was %d)\nfds:\n%s\n%s",
			countFDs(), baseFD, runtime.NumGoroutine(), baseG, describeFDs(), buf)
	}
}

// BenchmarkTLSThroughput compares plain and TLS sessions in one process:
// one client sends messages of each size to an upstream that discards
// them, and the client's own encryption runs on the same CPUs. Run with
// -benchtime to taste; it reports bytes per second of payload.
func BenchmarkTLSThroughput(b *testing.B) {
	ca := newTestCA(b, "bench CA")
	for _, mode := range []string{"plain", "tls", "tls+wss"} {
		for _, size := range []int{128, 4 << 10, 64 << 10} {
			b.Run(fmt.Sprintf("%s/%d", mode, size), func(b *testing.B) {
				cfg := splice.Config{UpstreamRootCAs: func() *x509.CertPool { return ca.pool }, Logger: testLogger()}
				var ts *testServer
				var d *websocket.Dialer
				if mode == "plain" {
					ts = startServer(b, cfg)
					d = &websocket.Dialer{HandshakeTimeout: waitTimeout}
				} else {
					ts = startTLSServer(b, cfg, &tls.Config{Certificates: []tls.Certificate{ca.serverCert(b)}})
					d = tlsDialer(ca.pool)
				}
				var upURL string
				got := make(chan int64, 1)
				total := int64(b.N) * int64(size)
				sink := func(c *websocket.Conn) {
					var n int64
					for n < total {
						_, r, err := c.NextReader()
						if err != nil {
							break
						}
						k, _ := io.Copy(io.Discard, r)
						n += k
					}
					got <- n
				}
				if mode == "tls+wss" {
					up := startTLSSink(b, ca.serverCert(b), sink)
					upURL = up
				} else {
					up := startUpstream(b, func(uc *upConn) { sink(uc.c) })
					upURL = up.url
				}
				s := dialSessionWith(b, ts.url, d)
				idx := s.connect(upURL)
				msg := withIndex(idx, randBytes(size))
				b.SetBytes(int64(size))
				b.ResetTimer()
				for range b.N {
					if err := s.conn.WriteMessage(websocket.BinaryMessage, msg); err != nil {
						b.Fatal(err)
					}
				}
				select {
				case n := <-got:
					if n != total {
						b.Fatalf("sink got %d bytes, want %d", n, total)
					}
				case <-time.After(time.Minute):
					b.Fatal("sink did not get everything")
				}
			})
		}
	}
}

// startTLSSink is a wss:// upstream running handler on its connection.
func startTLSSink(b testing.TB, cert tls.Certificate, handler func(*websocket.Conn)) string {
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	var wg sync.WaitGroup
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		wg.Add(1)
		defer wg.Done()
		defer c.Close()
		handler(c)
	}))
	hs.Config.ErrorLog = log.New(io.Discard, "", 0)
	hs.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	hs.StartTLS()
	b.Cleanup(func() { hs.CloseClientConnections(); hs.Close(); wg.Wait() })
	return "wss://" + hs.Listener.Addr().String() + "/"
}

// TestTLSHTTPRefusal checks that an HTTP refusal before the upgrade (here
// --max-sessions) reaches a TLS client whole, then the connection ends.
func TestTLSHTTPRefusal(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "refusal CA")
	ts := startTLSServer(t, splice.Config{MaxSessions: 1}, &tls.Config{Certificates: []tls.Certificate{ca.serverCert(t)}})
	first := dialSessionWith(t, ts.url, tlsDialer(ca.pool))
	first.barrier()
	_, resp, err := tlsDialer(ca.pool).Dial(ts.url, nil)
	if err == nil || resp == nil {
		t.Fatalf("second session: err %v, response %v; want an HTTP refusal", err, resp)
	}
	equal(t, resp.StatusCode, 503, "HTTP status")
	first.barrier()
}

// TestTLSProxyProtocol checks --proxy-protocol with TLS passed through a
// balancer: the PROXY header comes before the ClientHello, and the
// address it carries is the session's (here: what --max-sessions-per-ip
// counts, and what a refusal logs). A connection without a header is
// refused and logged.
func TestTLSProxyProtocol(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "proxy CA")
	var logs logBuf
	ts := startTLSServer(t, splice.Config{ProxyProtocol: true, MaxSessionsPerIP: 1, Logger: logs.logger()},
		&tls.Config{Certificates: []tls.Certificate{ca.serverCert(t)}})
	via := func(header string) *websocket.Dialer {
		d := tlsDialer(ca.pool)
		d.NetDialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil && header != "" {
				_, err = c.Write([]byte(header))
			}
			return c, err
		}
		return d
	}
	status := func(d *websocket.Dialer) int {
		t.Helper()
		c, resp, err := d.Dial(ts.url, nil)
		if err == nil {
			t.Cleanup(func() { c.Close() })
			return resp.StatusCode
		}
		if resp != nil {
			return resp.StatusCode
		}
		return -1
	}
	v1 := func(src string) string { return "PROXY TCP4 " + src + " 127.0.0.1 40000 443\r\n" }
	equal(t, status(via(v1("192.0.2.1"))), 101, "first session from 192.0.2.1")
	equal(t, status(via(v1("192.0.2.1"))), 429, "second session from 192.0.2.1")
	equal(t, status(via(v1("192.0.2.2"))), 101, "a session from another address")
	v2 := "\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xc6\x33\x64\x07\x7f\x00\x00\x01\x9c\x40\x0b\xb8"
	equal(t, status(via(v2)), 101, "v2 header from 198.51.100.7")
	equal(t, status(via("")), -1, "no PROXY header")
	logs.waitLog(t, "PROXY protocol header", "remote=127.0.0.1:")

	d := via(v1("203.0.113.9"))
	d.TLSClientConfig.RootCAs = x509.NewCertPool() // the client refuses the server
	equal(t, status(d), -1, "client that does not trust the server")
	logs.waitLog(t, "tls handshake refused", "remote=203.0.113.9:40000")
}
