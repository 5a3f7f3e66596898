//go:build linux

package main

// Tests of the real wsplice binary: flags and environment (PROTOCOL.md
// section 5), a round trip through it, and SIGTERM. The binary is built once,
// by the first test that needs it, into a directory TestMain removes.

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// binWait bounds every wait in these tests.
const binWait = 10 * time.Second

var (
	binDir   string // TestMain's temporary directory
	binOnce  sync.Once
	binPath  string // the built binary, once binOnce has run
	binBuild error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wsplice-binary-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "temp dir:", err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// wsplice returns the path of the binary, building it on first use.
func wsplice(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(goTool); err != nil {
			goTool = "go"
		}
		path := filepath.Join(binDir, "wsplice")
		out, err := exec.Command(goTool, "build", "-o", path, ".").CombinedOutput()
		if err != nil {
			binBuild = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		binPath = path
	})
	if binBuild != nil {
		t.Fatal(binBuild)
	}
	return binPath
}

// binEnv is this process's environment without WSPLICE_ variables, plus env.
func binEnv(env ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WSPLICE_") {
			out = append(out, kv)
		}
	}
	return append(out, env...)
}

// binRun runs the binary to completion and returns its exit code and output.
func binRun(t *testing.T, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), binWait)
	defer cancel()
	cmd := exec.CommandContext(ctx, wsplice(t), args...)
	cmd.Env = binEnv(env...)
	var so, se strings.Builder
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("wsplice %q did not exit within %v; stderr:\n%s", args, binWait, se.String())
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, so.String(), se.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), so.String(), se.String()
	}
	t.Fatalf("run wsplice: %v", err)
	return -1, "", ""
}

// binProc is a running wsplice.
type binProc struct {
	cmd  *exec.Cmd
	addr string // where it listens

	mu     sync.Mutex
	stderr strings.Builder

	exited  chan struct{}
	waitErr error // valid after exited
}

var listeningAddr = regexp.MustCompile(`addr="?([0-9.]+:[0-9]+)`)

// binStart starts wsplice on an ephemeral loopback port and waits for its
// "listening" log line. A cleanup stops it.
func binStart(t *testing.T, env []string, args ...string) *binProc {
	t.Helper()
	p, err := binStartErr(t, env, args...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// binStartErr is binStart returning an error when wsplice does not listen.
func binStartErr(t *testing.T, env []string, args ...string) (*binProc, error) {
	t.Helper()
	cmd := exec.Command(wsplice(t), append([]string{"--listen", "127.0.0.1:0"}, args...)...)
	cmd.Env = binEnv(env...)
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start wsplice: %v", err)
	}
	p := &binProc{cmd: cmd, exited: make(chan struct{})}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.stderr.WriteString(line + "\n")
			p.mu.Unlock()
			if strings.Contains(line, "msg=listening") {
				if m := listeningAddr.FindStringSubmatch(line); m != nil {
					select {
					case addrc <- m[1]:
					default:
					}
				}
			}
		}
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	p.stopAtCleanup(t)
	select {
	case p.addr = <-addrc:
		return p, nil
	case <-p.exited:
		return p, fmt.Errorf("wsplice %q exited before listening (%v); stderr:\n%s", args, p.waitErr, p.log())
	case <-time.After(binWait):
		return p, fmt.Errorf("no msg=listening addr=... line within %v; stderr:\n%s", binWait, p.log())
	}
}

func (p *binProc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// --- a client and an upstream ---------------------------------------------

const binControl = 0xffff

// binClient is a sequential wsplice client: it reads only when asked.
type binClient struct {
	t    *testing.T
	c    *websocket.Conn
	id   int64
	data []binMsg // data messages read while waiting for replies
}

type binMsg struct {
	index uint16
	data  []byte
}

type binReply struct {
	ID     int64           `json:"id"`
	Type   string          `json:"type"`
	Method string          `json:"method"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Path    string `json:"path"`
	} `json:"error"`
}

func binDial(t *testing.T, url string, d *websocket.Dialer) *binClient {
	t.Helper()
	if d == nil {
		d = &websocket.Dialer{}
	}
	d.HandshakeTimeout = binWait
	c, _, err := d.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { c.Close() })
	return &binClient{t: t, c: c}
}

func (c *binClient) sendRaw(index uint16, p []byte) {
	c.t.Helper()
	msg := binary.BigEndian.AppendUint16(nil, index)
	c.c.SetWriteDeadline(time.Now().Add(binWait))
	if err := c.c.WriteMessage(websocket.BinaryMessage, append(msg, p...)); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// next reads one message; every message from wsplice must be binary.
func (c *binClient) next() (uint16, []byte, error) {
	c.c.SetReadDeadline(time.Now().Add(binWait))
	mt, p, err := c.c.ReadMessage()
	if err != nil {
		return 0, nil, err
	}
	if mt != websocket.BinaryMessage {
		c.t.Errorf("message of type %d from wsplice, want binary", mt)
	}
	if len(p) < 2 {
		c.t.Fatalf("message of %d bytes from wsplice", len(p))
	}
	return binary.BigEndian.Uint16(p), p[2:], nil
}

// call sends a request and returns its reply.
func (c *binClient) call(method string, params any) *binReply {
	c.t.Helper()
	c.id++
	body, _ := json.Marshal(map[string]any{"id": c.id, "type": "method", "method": method, "params": params})
	c.sendRaw(binControl, body)
	for {
		idx, p, err := c.next()
		if err != nil {
			c.t.Fatalf("waiting for the reply to %s: %v", method, err)
		}
		if idx != binControl {
			c.data = append(c.data, binMsg{idx, p})
			continue
		}
		var r binReply
		if err := json.Unmarshal(p, &r); err != nil {
			c.t.Fatalf("control message %q: %v", p, err)
		}
		if r.Type == "reply" && r.ID == c.id {
			return &r
		}
	}
}

// connect opens an upstream, returning its index, or the error code.
func (c *binClient) connect(url string) (int, int) {
	c.t.Helper()
	r := c.call("connect", map[string]any{"url": url})
	if r.Error != nil {
		return -1, r.Error.Code
	}
	var res struct{ Index int }
	json.Unmarshal(r.Result, &res)
	return res.Index, 0
}

func (c *binClient) readData() binMsg {
	c.t.Helper()
	if len(c.data) > 0 {
		m := c.data[0]
		c.data = c.data[1:]
		return m
	}
	for {
		idx, p, err := c.next()
		if err != nil {
			c.t.Fatalf("waiting for data: %v", err)
		}
		if idx != binControl {
			return binMsg{idx, p}
		}
	}
}

// closeCode reads until the session ends and returns wsplice's close code.
func (c *binClient) closeCode() int {
	c.t.Helper()
	for {
		_, _, err := c.next()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code
		}
		if err != nil {
			c.t.Fatalf("session ended without a close frame: %v", err)
		}
	}
}

// serveUpstream starts a WebSocket upstream on a free loopback port and
// returns its URL: ws://127.0.0.1:port/, or wss:// if cert is not nil (the
// server then presents cert and offers only http/1.1 by ALPN, as
// httptest.Server.StartTLS does). Any Origin is accepted. handle runs on the
// HTTP handler's goroutine for each upgraded connection, with the request it
// came with, and owns c until it returns; serveUpstream then closes c.
// A cleanup closes the server and every connection still open, then waits
// for each handle to return: handle must return once c is closed, and must
// not block on a send nobody receives. Goroutines handle starts are its own
// to end.
func serveUpstream(t *testing.T, cert *tls.Certificate, handle func(r *http.Request, c *websocket.Conn)) (url string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url = "ws://" + ln.Addr().String() + "/"
	srv := &http.Server{ReadHeaderTimeout: binWait}
	if cert != nil {
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{*cert}, NextProtos: []string{"http/1.1"}})
		url = "wss://" + ln.Addr().String() + "/"
		// A client that rejects the certificate is logged by the server.
		srv.ErrorLog = log.New(io.Discard, "", 0)
	}
	var (
		mu     sync.Mutex
		conns  = map[*websocket.Conn]struct{}{} // open connections; guarded by mu
		closed bool                             // the cleanup has begun; guarded by mu
		wg     sync.WaitGroup                   // one per running handle
	)
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		// Invariant: no wg.Add once the cleanup may be in wg.Wait.
		mu.Lock()
		if closed {
			mu.Unlock()
			c.Close()
			return
		}
		conns[c] = struct{}{}
		wg.Add(1)
		mu.Unlock()
		defer func() {
			c.Close()
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
			wg.Done()
		}()
		handle(r, c)
	})
	go srv.Serve(ln)
	t.Cleanup(func() {
		srv.Close() // does not close hijacked connections
		mu.Lock()
		closed = true
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return url
}

// binUpstream is an echo upstream; closes receives the close code wsplice
// sent on each connection (-1: none).
func binUpstream(t *testing.T) (url string, closes chan int) {
	t.Helper()
	closes = make(chan int, 16)
	url = serveUpstream(t, nil, func(_ *http.Request, c *websocket.Conn) {
		for {
			mt, p, err := c.ReadMessage()
			if err != nil {
				var ce *websocket.CloseError
				code := -1
				if errors.As(err, &ce) {
					code = ce.Code
				}
				closes <- code
				return
			}
			if err := c.WriteMessage(mt, p); err != nil {
				closes <- -1
				return
			}
		}
	})
	return url, closes
}

func binWaitClose(t *testing.T, closes chan int) int {
	t.Helper()
	select {
	case code := <-closes:
		return code
	case <-time.After(binWait):
		t.Fatalf("upstream not closed within %v", binWait)
		return 0
	}
}

// --- tests ------------------------------------------------------------------

// TestBinaryHelp checks that --help exits 0 and lists the flags.
func TestBinaryHelp(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := binRun(t, nil, "--help")
	equalInt(t, code, 0, "exit code of --help")
	out := stdout + stderr
	for _, name := range []string{
		"listen", "network", "allowed-hostnames", "tls-cert", "tls-key", "tls-ca",
		"frame-size-limit", "write-timeout", "read-timeout", "dial-timeout", "pprof-address",
		"allow-private-upstreams", "max-upstreams-per-session", "max-sessions", "shutdown-timeout",
	} {
		if !strings.Contains(out, "-"+name) {
			t.Errorf("--help does not list --%s", name)
		}
	}
	if strings.Contains(out, "msg=listening") {
		t.Errorf("--help started the server")
	}
}

// TestBinaryBadConfiguration checks that each bad flag or environment value
// makes wsplice exit non-zero, before listening, with a message naming the
// culprit.
func TestBinaryBadConfiguration(t *testing.T) {
	t.Parallel()
	certFile, keyFile, _, _ := binCerts(t)
	cases := []struct {
		name    string
		env     []string
		args    []string
		mention []string // stderr mentions one of these
	}{
		{"unknown flag", nil, []string{"--no-such-flag"}, []string{"no-such-flag"}},
		{"bad size", nil, []string{"--frame-size-limit", "5XB"}, []string{"frame-size-limit"}},
		{"negative size", nil, []string{"--frame-size-limit", "-1"}, []string{"frame-size-limit"}},
		{"bad duration", nil, []string{"--write-timeout", "soon"}, []string{"write-timeout"}},
		{"duration without unit", nil, []string{"--read-timeout", "5"}, []string{"read-timeout"}},
		{"bad integer", nil, []string{"--max-upstreams-per-session", "many"}, []string{"max-upstreams-per-session"}},
		{"bad network", nil, []string{"--network", "udp"}, []string{"network"}},
		{"missing tls-ca file", nil, []string{"--tls-cert", certFile, "--tls-key", keyFile, "--tls-ca", "/nonexistent/wsplice-ca.pem"},
			[]string{"/nonexistent/wsplice-ca.pem"}},
		{"missing tls-cert file", nil, []string{"--tls-cert", "/nonexistent/wsplice-cert.pem", "--tls-key", keyFile},
			[]string{"/nonexistent/wsplice-cert.pem"}},
		{"bad size in env", []string{"WSPLICE_FRAME_SIZE_LIMIT=lots"}, nil, []string{"WSPLICE_FRAME_SIZE_LIMIT", "frame-size-limit"}},
		{"bad duration in env", []string{"WSPLICE_DIAL_TIMEOUT=soon"}, nil, []string{"WSPLICE_DIAL_TIMEOUT", "dial-timeout"}},
		{"bad bool in env", []string{"WSPLICE_ALLOW_PRIVATE_UPSTREAMS=perhaps"}, nil, []string{"WSPLICE_ALLOW_PRIVATE_UPSTREAMS", "allow-private-upstreams"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"--listen", "127.0.0.1:0"}, tc.args...)
			code, _, stderr := binRun(t, tc.env, args...)
			if code == 0 {
				t.Fatalf("exit code 0, want non-zero; stderr:\n%s", stderr)
			}
			if strings.Contains(stderr, "msg=listening") {
				t.Errorf("wsplice listened despite the bad configuration:\n%s", stderr)
			}
			found := false
			for _, m := range tc.mention {
				found = found || strings.Contains(stderr, m)
			}
			if !found {
				t.Errorf("stderr does not mention any of %q:\n%s", tc.mention, stderr)
			}
		})
	}
}

// TestBinaryRoundTrip connects through the real binary to an echo upstream.
func TestBinaryRoundTrip(t *testing.T) {
	t.Parallel()
	p := binStart(t, nil, "--allow-private-upstreams")
	upURL, closes := binUpstream(t)
	c := binDial(t, "ws://"+p.addr+"/", nil)
	idx, ecode := c.connect(upURL)
	equalInt(t, ecode, 0, "connect error")
	for _, msg := range []string{"hello", "", strings.Repeat("big ", 100000)} {
		c.sendRaw(uint16(idx), []byte(msg))
		m := c.readData()
		equalInt(t, int(m.index), idx, "index of the echo")
		if string(m.data) != msg {
			t.Fatalf("echo of %d bytes: got %d bytes", len(msg), len(m.data))
		}
	}
	c.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4100, "bye"), time.Now().Add(binWait))
	equalInt(t, binWaitClose(t, closes), 4100, "upstream close code")
	equalInt(t, c.closeCode(), 4100, "close echoed to the client")
}

// TestBinaryEnvironment checks that WSPLICE_* variables are honoured and
// that a flag replaces the environment's value entirely, and the list and
// size syntaxes.
func TestBinaryEnvironment(t *testing.T) {
	t.Parallel()
	upURL, _ := binUpstream(t)
	t.Run("max upstreams from env", func(t *testing.T) {
		t.Parallel()
		p := binStart(t, []string{"WSPLICE_MAX_UPSTREAMS_PER_SESSION=1", "WSPLICE_ALLOW_PRIVATE_UPSTREAMS=true"})
		c := binDial(t, "ws://"+p.addr+"/", nil)
		_, code := c.connect(upURL)
		equalInt(t, code, 0, "first connect")
		_, code = c.connect(upURL)
		equalInt(t, code, 4008, "second connect")
	})
	t.Run("flag replaces env", func(t *testing.T) {
		t.Parallel()
		p := binStart(t, []string{"WSPLICE_MAX_UPSTREAMS_PER_SESSION=1", "WSPLICE_ALLOW_PRIVATE_UPSTREAMS=true"},
			"--max-upstreams-per-session", "2")
		c := binDial(t, "ws://"+p.addr+"/", nil)
		for i := range 2 {
			_, code := c.connect(upURL)
			equalInt(t, code, 0, fmt.Sprintf("connect %d", i))
		}
		_, code := c.connect(upURL)
		equalInt(t, code, 4008, "third connect")
	})
	hostCases := []struct {
		name string
		env  []string
		args []string
		want int
	}{
		{"allowed hostnames from env", []string{"WSPLICE_ALLOWED_HOSTNAMES=other.example"}, nil, 4006},
		{"allowed hostnames env with the address", []string{"WSPLICE_ALLOWED_HOSTNAMES=other.example,127.0.0.1"}, nil, 0},
		{"flag list replaces env list", []string{"WSPLICE_ALLOWED_HOSTNAMES=127.0.0.1"}, []string{"--allowed-hostnames", "other.example"}, 4006},
		{"flag list replaces env list 2", []string{"WSPLICE_ALLOWED_HOSTNAMES=other.example"}, []string{"--allowed-hostnames", "127.0.0.1"}, 0},
		{"comma and space separated", nil, []string{"--allowed-hostnames", "a.example, 127.0.0.1 b.example"}, 0},
		{"repeated flag", nil, []string{"--allowed-hostnames", "a.example", "--allowed-hostnames", "127.0.0.1"}, 0},
		{"private refused by default", nil, nil, 4006},
		{"private allowed by env", []string{"WSPLICE_ALLOW_PRIVATE_UPSTREAMS=true"}, nil, 0},
	}
	for _, tc := range hostCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := binStart(t, tc.env, tc.args...)
			c := binDial(t, "ws://"+p.addr+"/", nil)
			_, code := c.connect(upURL)
			equalInt(t, code, tc.want, "connect error code")
		})
	}
	t.Run("frame size in KB is 1024 bytes", func(t *testing.T) {
		t.Parallel()
		p := binStart(t, []string{"WSPLICE_FRAME_SIZE_LIMIT=1KB"})
		c := binDial(t, "ws://"+p.addr+"/", nil)
		request := func(n int) []byte {
			base := `{"id":1,"type":"method","method":"frobnicate","params":{"pad":""}}`
			return []byte(strings.Replace(base, `"pad":""`, `"pad":"`+strings.Repeat("p", n-len(base))+`"`, 1))
		}
		c.sendRaw(binControl, request(1024))
		_, p1, err := c.next()
		if err != nil || !strings.Contains(string(p1), "4003") {
			t.Fatalf("1024-byte request: %q, %v; want a 4003 reply", p1, err)
		}
		c.sendRaw(binControl, request(1025))
		equalInt(t, c.closeCode(), 1009, "close code for 1025 bytes over 1KB")
	})
}

// TestBinarySIGTERM checks that SIGTERM makes wsplice close its sessions
// (1001 to the client and the upstream) and exit.
func TestBinarySIGTERM(t *testing.T) {
	t.Parallel()
	const shutdownTimeout = 6 * time.Second
	p := binStart(t, nil, "--allow-private-upstreams", "--shutdown-timeout", shutdownTimeout.String())
	upURL, closes := binUpstream(t)
	c := binDial(t, "ws://"+p.addr+"/", nil)
	idx, code := c.connect(upURL)
	equalInt(t, code, 0, "connect")
	c.sendRaw(uint16(idx), []byte("x"))
	c.readData()
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	equalInt(t, c.closeCode(), 1001, "client close code")
	t.Logf("client got 1001 %v after SIGTERM", time.Since(start).Round(time.Millisecond))
	c.c.NetConn().SetReadDeadline(time.Now().Add(binWait))
	_, rerr := io.Copy(io.Discard, c.c.NetConn())
	t.Logf("client TCP closed %v after SIGTERM (%v)", time.Since(start).Round(time.Millisecond), rerr)
	equalInt(t, binWaitClose(t, closes), 1001, "upstream close code")
	select {
	case <-p.exited:
	case <-time.After(binWait):
		t.Fatalf("wsplice still running %v after SIGTERM; stderr:\n%s", binWait, p.log())
	}
	t.Logf("exit after SIGTERM: %v, %v after the signal; stderr:\n%s", p.waitErr, time.Since(start).Round(time.Millisecond), p.log())
	if p.waitErr != nil {
		t.Errorf("exit after SIGTERM: %v, want 0; stderr:\n%s", p.waitErr, p.log())
	}
	// Every peer is gone within milliseconds: the drain is over, and
	// wsplice need not wait out --shutdown-timeout.
	if d := time.Since(start); d > shutdownTimeout/2 {
		t.Errorf("wsplice exited %v after SIGTERM although its only session and upstream closed at once "+
			"(--shutdown-timeout %v); stderr:\n%s", d.Round(time.Millisecond), shutdownTimeout, p.log())
	}
}

// TestBinaryTLS checks TLS serving and mutual TLS (--tls-ca): a client
// without a certificate signed by the CA is refused at the handshake.
func TestBinaryTLS(t *testing.T) {
	t.Parallel()
	certFile, keyFile, caFile, clientCert := binCerts(t)
	pool := x509.NewCertPool()
	caPEM, _ := os.ReadFile(caFile)
	pool.AppendCertsFromPEM(caPEM)

	if p, err := binStartErr(t, nil, "--tls-cert", certFile, "--tls-key", keyFile); err != nil {
		if strings.Contains(p.log(), "not implemented") {
			t.Skipf("TLS serving is not implemented yet: %s", strings.TrimSpace(p.log()))
		}
		t.Fatal(err)
	}
	t.Run("tls-ca not PEM", func(t *testing.T) {
		t.Parallel()
		garbage := filepath.Join(t.TempDir(), "garbage.pem")
		os.WriteFile(garbage, []byte("this is not PEM\n"), 0o600)
		code, _, stderr := binRun(t, nil, "--listen", "127.0.0.1:0", "--tls-cert", certFile, "--tls-key", keyFile, "--tls-ca", garbage)
		if code == 0 || !strings.Contains(stderr, garbage) {
			t.Errorf("exit %d, want non-zero with a message naming %s; stderr:\n%s", code, garbage, stderr)
		}
	})
	t.Run("tls", func(t *testing.T) {
		t.Parallel()
		p := binStart(t, nil, "--tls-cert", certFile, "--tls-key", keyFile)
		c := binDial(t, "wss://"+p.addr+"/", &websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}})
		wantBinReply(t, c.call("frobnicate", map[string]any{}), 4003)
	})
	t.Run("mutual tls", func(t *testing.T) {
		t.Parallel()
		p := binStart(t, nil, "--tls-cert", certFile, "--tls-key", keyFile, "--tls-ca", caFile)
		c := binDial(t, "wss://"+p.addr+"/", &websocket.Dialer{TLSClientConfig: &tls.Config{
			RootCAs: pool, Certificates: []tls.Certificate{clientCert}}})
		wantBinReply(t, c.call("frobnicate", map[string]any{}), 4003)
		d := &websocket.Dialer{HandshakeTimeout: binWait, TLSClientConfig: &tls.Config{RootCAs: pool}}
		if conn, _, err := d.Dial("wss://"+p.addr+"/", nil); err == nil {
			conn.Close()
			t.Errorf("a client without a certificate was accepted with --tls-ca")
		}
	})
}

func wantBinReply(t *testing.T, r *binReply, code int) {
	t.Helper()
	if r.Error == nil || r.Error.Code != code {
		t.Fatalf("reply %+v, want error %d", r, code)
	}
}

func equalInt(t *testing.T, got, want int, what string) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: got %d, want %d", what, got, want)
	}
}

// binCerts writes a CA, a server certificate for 127.0.0.1 and its key as
// PEM files, and returns a client certificate signed by the same CA.
func binCerts(t *testing.T) (certFile, keyFile, caFile string, client tls.Certificate) {
	t.Helper()
	dir := t.TempDir()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "wsplice test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, usage x509.ExtKeyUsage) ([]byte, *ecdsa.PrivateKey) {
		k := newKey()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "127.0.0.1"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			KeyUsage: x509.KeyUsageDigitalSignature,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, k
	}
	writePEM := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	srvDER, srvKey := issue(2, x509.ExtKeyUsageServerAuth)
	keyDER, _ := x509.MarshalECPrivateKey(srvKey)
	certFile = writePEM("server.pem", "CERTIFICATE", srvDER)
	keyFile = writePEM("server-key.pem", "EC PRIVATE KEY", keyDER)
	caFile = writePEM("ca.pem", "CERTIFICATE", caDER)
	cliDER, cliKey := issue(3, x509.ExtKeyUsageClientAuth)
	client = tls.Certificate{Certificate: [][]byte{cliDER}, PrivateKey: cliKey}
	return certFile, keyFile, caFile, client
}

// stopAtCleanup makes a cleanup stop the process with SIGTERM, and kill
// it (failing the test) if it is still running binWait later.
func (p *binProc) stopAtCleanup(t *testing.T) {
	t.Cleanup(func() {
		select {
		case <-p.exited:
			return
		default:
		}
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(binWait):
			p.cmd.Process.Kill()
			<-p.exited
			t.Errorf("%s ignored SIGTERM for %v", p.cmd.Path, binWait)
		}
	})
}
