//go:build linux

package main

// HAProxy in front of wsplice (README "Scaling out"): the shipped
// configurations are valid, and the setup of deploy/haproxy.cfg works with
// two real wsplice processes behind a real HAProxy on loopback.

import (
	"bufio"
	"encoding/binary"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// needHAProxy returns the path of haproxy. Without it the test is skipped,
// unless CI is set: CI installs it (make test-deps), so there it is a
// failure.
func needHAProxy(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("haproxy")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("haproxy is not installed, and CI is set: `make test-deps` installs it (apt-get install haproxy)")
		}
		t.Skip("haproxy is not installed (`make test-deps` or apt-get install haproxy installs it); skipped as CI is unset")
	}
	return path
}

// shippedConfig reads a configuration of deploy/.
func shippedConfig(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// shippedCert is the certificate path of deploy/haproxy-tls.cfg.
const shippedCert = "/etc/haproxy/certs/wsplice.pem"

// TestHAProxyConfigsValid checks deploy/haproxy.cfg and
// deploy/haproxy-tls.cfg with `haproxy -c` (the TLS one with a generated
// certificate in place of its own), and that they keep what README
// "Scaling out" says of them.
func TestHAProxyConfigsValid(t *testing.T) {
	t.Parallel()
	hp := needHAProxy(t)
	certFile, keyFile, _, _ := binCerts(t)
	dir := t.TempDir()
	cert, _ := os.ReadFile(certFile)
	key, _ := os.ReadFile(keyFile)
	pemFile := filepath.Join(dir, "wsplice.pem")
	if err := os.WriteFile(pemFile, append(cert, key...), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		want []string // directives it must hold
	}{
		{"haproxy.cfg", nil},
		{"haproxy-tls.cfg", []string{"bind :443 ssl crt " + shippedCert, "alpn http/1.1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := shippedConfig(t, tc.name)
			for _, want := range append([]string{
				"mode tcp", "balance leastconn", "send-proxy-v2", "option httpchk GET /healthz",
				"check port ", "timeout tunnel 1h", "timeout client-fin", "option redispatch",
			}, tc.want...) {
				if !strings.Contains(cfg, want) {
					t.Errorf("%s has no %q", tc.name, want)
				}
			}
			cfg = strings.ReplaceAll(cfg, shippedCert, pemFile)
			path := filepath.Join(dir, tc.name)
			if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(hp, "-c", "-f", path).CombinedOutput()
			if err != nil {
				t.Fatalf("haproxy -c -f %s: %v\n%s", tc.name, err, out)
			}
			if strings.Contains(string(out), "[WARNING]") || strings.Contains(string(out), "[ALERT]") {
				t.Errorf("haproxy -c -f %s warns:\n%s", tc.name, out)
			}
		})
	}
}

// --- HAProxy ----------------------------------------------------------------

// hpServer is a wsplice behind HAProxy: its WebSocket address and its
// --metrics-address port, where HAProxy checks /healthz.
type hpServer struct {
	name, addr  string
	metricsPort int
}

// haproxyTestConfig turns deploy/haproxy.cfg into one for this machine:
// the frontend on 127.0.0.1:port, the servers given, logs to stderr, the
// stats socket at sock, small limits (no root needed) and health checks
// every 200ms. Timeouts, retries, redispatch, balancing and the check
// itself stay as shipped.
func haproxyTestConfig(shipped string, port int, sock string, servers []hpServer) (string, error) {
	var out []string
	var binds, defaults int
	for _, line := range strings.Split(shipped, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			out = append(out, line)
			continue
		}
		switch {
		case f[0] == "log" && f[1] != "global":
			line = "    log stderr format raw local0 info"
		case f[0] == "stats" && f[1] == "socket":
			line = "    stats socket " + sock + " mode 600 level admin"
		case f[0] == "maxconn":
			line = "    maxconn 4096"
		case f[0] == "bind":
			line = fmt.Sprintf("    bind 127.0.0.1:%d", port)
			binds++
		case f[0] == "default-server":
			var keep []string
			for i := 0; i < len(f); i++ {
				switch f[i] {
				case "port", "inter", "fall", "rise", "slowstart", "maxconn":
					i++ // and its value
					continue
				}
				keep = append(keep, f[i])
			}
			line = "    " + strings.Join(keep, " ") + " inter 200ms fall 1 rise 1"
			defaults++
		case f[0] == "server":
			continue
		}
		out = append(out, line)
	}
	if binds != 1 || defaults != 1 {
		return "", fmt.Errorf("deploy/haproxy.cfg has %d bind and %d default-server lines, want 1 and 1", binds, defaults)
	}
	// The backend is the file's last section: the servers go at its end.
	for len(out) > 0 && strings.TrimSpace(out[len(out)-1]) == "" {
		out = out[:len(out)-1]
	}
	for _, s := range servers {
		out = append(out, fmt.Sprintf("    server %s %s port %d", s.name, s.addr, s.metricsPort))
	}
	return strings.Join(out, "\n") + "\n", nil
}

// haproxyProc is a running HAProxy.
type haproxyProc struct {
	addr string // its frontend
	sock string // its stats socket

	mu     sync.Mutex
	stderr strings.Builder
}

func (h *haproxyProc) log() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.stderr.String()
}

// startHAProxy runs HAProxy in the foreground with the shipped
// configuration made local (haproxyTestConfig), and waits until it has
// every server UP. A cleanup stops it.
func startHAProxy(t *testing.T, hp string, servers []hpServer) *haproxyProc {
	t.Helper()
	dir := t.TempDir()
	h := &haproxyProc{sock: filepath.Join(dir, "admin.sock")}
	port := loopbackPort(t)
	h.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	cfg, err := haproxyTestConfig(shippedConfig(t, "haproxy.cfg"), port, h.sock, servers)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(hp, "-db", "-f", path)
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start haproxy: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			h.mu.Lock()
			h.stderr.WriteString(sc.Text() + "\n")
			h.mu.Unlock()
		}
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(binWait):
			cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(binWait)
	for {
		st, err := h.serverStatus()
		up := err == nil
		for _, s := range servers {
			up = up && st[s.name] == "UP"
		}
		if up {
			return h
		}
		select {
		case <-exited:
			t.Fatalf("haproxy exited; configuration:\n%s\nstderr:\n%s", cfg, h.log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy servers not all UP within %v: %v (%v); configuration:\n%s\nstderr:\n%s",
				binWait, st, err, cfg, h.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tcplogState is the termination state of an "option tcplog" line.
var tcplogState = regexp.MustCompile(`^\S+ \[[^]]+\] \S+ \S+ \S+ \d+ (\S\S) `)

// unusual returns HAProxy's log lines but for sessions that ended
// normally: termination state "--", or "CD", the client closed.
func (h *haproxyProc) unusual() string {
	var keep []string
	for _, line := range strings.Split(h.log(), "\n") {
		if m := tcplogState.FindStringSubmatch(line); m != nil && (m[1] == "--" || m[1] == "CD") {
			continue
		}
		keep = append(keep, line)
	}
	return strings.Join(keep, "\n")
}

// serverStatus asks the stats socket for the status of each server
// ("UP", "DOWN", ...).
func (h *haproxyProc) serverStatus() (map[string]string, error) {
	c, err := net.DialTimeout("unix", h.sock, time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, "show stat\n"); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(c)
	if err != nil {
		return nil, err
	}
	r := csv.NewReader(strings.NewReader(strings.TrimPrefix(string(b), "# ")))
	r.FieldsPerRecord = -1
	rows, err := r.ReadAll()
	if err != nil || len(rows) == 0 {
		return nil, fmt.Errorf("show stat: %q: %v", b, err)
	}
	col := slices.Index(rows[0], "status")
	if col < 0 {
		return nil, fmt.Errorf("show stat has no status column: %q", rows[0])
	}
	st := map[string]string{}
	for _, row := range rows[1:] {
		if len(row) > col && row[1] != "FRONTEND" && row[1] != "BACKEND" {
			st[row[1]] = row[col]
		}
	}
	return st, nil
}

// loopbackPort returns a TCP port free on 127.0.0.1 a moment ago.
func loopbackPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// --- an upstream that says whom it talks to ---------------------------------

// viaUpstream is an echo upstream that first sends "via IP", IP being the
// address the connection came from: with --upstream-source-addrs it names
// the wsplice instance. It records the close codes it gets per IP.
type viaUpstream struct {
	url string

	mu     sync.Mutex
	closes map[string][]int // by source IP: close codes (-1: none)
}

// newViaUpstream starts a viaUpstream; a cleanup stops it and waits for
// its handlers.
func newViaUpstream(t *testing.T) *viaUpstream {
	t.Helper()
	u := &viaUpstream{closes: map[string][]int{}}
	u.url = serveUpstream(t, nil, func(r *http.Request, c *websocket.Conn) {
		ip, _, _ := net.SplitHostPort(r.RemoteAddr)
		code := -1
		defer func() {
			u.mu.Lock()
			u.closes[ip] = append(u.closes[ip], code)
			u.mu.Unlock()
		}()
		if c.WriteMessage(websocket.TextMessage, []byte("via "+ip)) != nil {
			return
		}
		for {
			mt, p, err := c.ReadMessage()
			if err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					code = ce.Code
				}
				return
			}
			if c.WriteMessage(mt, p) != nil {
				return
			}
		}
	})
	return u
}

// closesFrom returns the close codes from ip so far.
func (u *viaUpstream) closesFrom(ip string) []int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.closes[ip])
}

// --- sessions through HAProxy -----------------------------------------------

// hpSession is a session opened through HAProxy with one upstream.
type hpSession struct {
	c    *websocket.Conn
	port int    // the client's source port: what HAProxy saw and sends on
	idx  uint16 // its upstream
	via  string // the upstream's "via": the wsplice instance's source address
}

// openHPSession opens a session at addr, connects it to the upstream at
// url, reads the upstream's "via" and checks one echo. It returns the
// session, or what went wrong.
func openHPSession(addr, url string) (*hpSession, error) {
	d := websocket.Dialer{HandshakeTimeout: attemptTimeout}
	c, _, err := d.Dial("ws://"+addr+"/", nil)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	s := &hpSession{c: c, port: c.NetConn().LocalAddr().(*net.TCPAddr).Port}
	fail := func(err error) (*hpSession, error) {
		c.Close()
		return nil, fmt.Errorf("session from port %d: %w", s.port, err)
	}
	req, _ := json.Marshal(map[string]any{"id": 1, "type": "method", "method": "connect", "params": map[string]any{"url": url}})
	if err := s.send(binControl, req); err != nil {
		return fail(err)
	}
	for s.via == "" {
		idx, p, err := s.next()
		if err != nil {
			return fail(fmt.Errorf("connect: %w", err))
		}
		switch {
		case idx == binControl:
			var r binReply
			if err := json.Unmarshal(p, &r); err != nil || r.Type != "reply" {
				return fail(fmt.Errorf("control message %q while connecting", p))
			}
			if r.Error != nil {
				return fail(fmt.Errorf("connect: error %d %s", r.Error.Code, r.Error.Message))
			}
			var res struct{ Index int }
			json.Unmarshal(r.Result, &res)
			s.idx = uint16(res.Index)
		case idx == s.idx && strings.HasPrefix(string(p), "via "):
			s.via = strings.TrimPrefix(string(p), "via ")
		default:
			return fail(fmt.Errorf("message %q at index %d while connecting", p, idx))
		}
	}
	if err := s.echo("hello"); err != nil {
		return fail(err)
	}
	return s, nil
}

func (s *hpSession) send(idx uint16, p []byte) error {
	s.c.SetWriteDeadline(time.Now().Add(binWait))
	return s.c.WriteMessage(websocket.BinaryMessage, append(binary.BigEndian.AppendUint16(nil, idx), p...))
}

func (s *hpSession) next() (uint16, []byte, error) {
	s.c.SetReadDeadline(time.Now().Add(binWait))
	mt, p, err := s.c.ReadMessage()
	if err != nil {
		return 0, nil, err
	}
	if mt != websocket.BinaryMessage || len(p) < 2 {
		return 0, nil, fmt.Errorf("message of type %d and %d bytes", mt, len(p))
	}
	return binary.BigEndian.Uint16(p), p[2:], nil
}

// echo sends msg to the upstream and expects it back, and nothing else.
func (s *hpSession) echo(msg string) error {
	if err := s.send(s.idx, []byte(msg)); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	idx, p, err := s.next()
	switch {
	case err != nil:
		return fmt.Errorf("echo: %w", err)
	case idx != s.idx || string(p) != msg:
		return fmt.Errorf("echo: got %q at index %d, want %q at %d", p, idx, msg, s.idx)
	}
	return nil
}

// closeCode reads until the session ends and returns the close code
// (-1: it ended without a close frame), and any data that came first.
func (s *hpSession) closeCode() (int, error) {
	for {
		idx, p, err := s.next()
		var ce *websocket.CloseError
		switch {
		case errors.As(err, &ce):
			return ce.Code, nil
		case err != nil:
			return -1, err
		case idx != binControl:
			return -1, fmt.Errorf("data %q at index %d before the close", p, idx)
		}
	}
}

// sessionEnds returns the client addresses of the "session end" lines of
// a wsplice log.
var sessionEndRemote = regexp.MustCompile(`msg="session end" remote=([0-9.]+):([0-9]+)`)

func sessionEnds(log string) (ips map[string]int, ports map[int]bool) {
	ips, ports = map[string]int{}, map[int]bool{}
	for _, m := range sessionEndRemote.FindAllStringSubmatch(log, -1) {
		ips[m[1]]++
		p, _ := strconv.Atoi(m[2])
		ports[p] = true
	}
	return ips, ports
}

// --- the test ---------------------------------------------------------------

// Sizes of TestHAProxyTwoInstances.
const (
	hpSessions    = 200 // opened before the SIGTERM
	hpOpeners     = 20  // at once
	hpNewMin      = 40  // new sessions opened from the SIGTERM on, at least
	hpNewMax      = 400 // and at most
	hpSourceA     = "127.0.0.2"
	hpSourceB     = "127.0.0.3"
	hpTestTimeout = 55 * time.Second
)

// TestHAProxyTwoInstances runs deploy/haproxy.cfg's setup on loopback:
// HAProxy (send-proxy-v2, leastconn, /healthz checks) in front of two
// wsplice processes with --proxy-protocol. 200 sessions, each with an
// echo upstream, spread over both. Then SIGTERM to A: A's sessions end
// with 1001 (and their upstreams get 1001), sessions opened from then on
// all reach B, and B's sessions see no error. The client address that
// HAProxy sent in the PROXY header (127.0.0.1 and the client's own source
// port) is the remote= of each session end line.
func TestHAProxyTwoInstances(t *testing.T) {
	t.Parallel()
	hp := needHAProxy(t)
	testStart := time.Now()
	up := newViaUpstream(t)
	start := func(name, src string) (*binProc, hpServer) {
		mport := loopbackPort(t)
		p, err := binStartErr(t, nil, "--proxy-protocol",
			"--metrics-address", "127.0.0.1:"+strconv.Itoa(mport),
			"--allow-private-upstreams", "--upstream-source-addrs", src,
			"--shutdown-timeout", "5s")
		if err != nil {
			if strings.Contains(p.log(), "not implemented") {
				t.Skipf("a flag this test needs is not implemented yet: %s", strings.TrimSpace(p.log()))
			}
			t.Fatal(err)
		}
		return p, hpServer{name: name, addr: p.addr, metricsPort: mport}
	}
	a, sa := start("a", hpSourceA)
	b, sb := start("b", hpSourceB)
	h := startHAProxy(t, hp, []hpServer{sa, sb})
	t.Logf("%v: HAProxy on %s, both servers UP: a=%s (metrics :%d), b=%s (metrics :%d)",
		since(testStart), h.addr, sa.addr, sa.metricsPort, sb.addr, sb.metricsPort)
	dump := func() {
		t.Logf("HAProxy stderr, but for sessions that ended normally:\n%s", tail(h.unusual(), 40))
		t.Logf("A's stderr:\n%s", tail(a.log(), 20))
		t.Logf("B's stderr:\n%s", tail(b.log(), 20))
	}

	// 200 sessions, 20 being opened at a time.
	sessions := make([]*hpSession, hpSessions)
	errs := make([]error, hpSessions)
	var wg sync.WaitGroup
	next := make(chan int)
	for range hpOpeners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				sessions[i], errs[i] = openHPSession(h.addr, up.url)
			}
		}()
	}
	for i := range hpSessions {
		next <- i
	}
	close(next)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		dump()
		t.Fatalf("opening %d sessions through HAProxy:\n%v", hpSessions, err)
	}
	t.Cleanup(func() {
		for _, s := range sessions {
			s.c.Close()
		}
	})
	var onA, onB []*hpSession
	for _, s := range sessions {
		switch s.via {
		case hpSourceA:
			onA = append(onA, s)
		case hpSourceB:
			onB = append(onB, s)
		default:
			t.Fatalf("session from port %d: upstream dialed from %s, neither A's %s nor B's %s", s.port, s.via, hpSourceA, hpSourceB)
		}
	}
	t.Logf("%v: %d sessions open: %d on A, %d on B", since(testStart), hpSessions, len(onA), len(onB))
	if len(onA) < hpSessions/4 || len(onB) < hpSessions/4 {
		dump()
		t.Fatalf("sessions not spread over both instances by leastconn: %d on A, %d on B", len(onA), len(onB))
	}

	// SIGTERM to A. Meanwhile: A's sessions wait for their close, and new
	// sessions keep coming until A has exited.
	term := time.Now()
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	codes := make([]int, len(onA))
	codeErrs := make([]error, len(onA))
	draining := make(chan struct{}) // closed when a session on A got its close
	var drainingOnce sync.Once
	for i, s := range onA {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], codeErrs[i] = s.closeCode()
			drainingOnce.Do(func() { close(draining) })
		}()
	}
	type newSession struct {
		at  time.Duration // after the SIGTERM
		via string
		err error
	}
	var (
		newMu   sync.Mutex
		news    []newSession
		aExited = a.exited
	)
	newDone := make(chan struct{})
	go func() {
		defer close(newDone)
		// New sessions: from when A is seen draining (one of its clients
		// got the close), so none was accepted by A before the signal.
		select {
		case <-draining:
		case <-time.After(binWait):
			return
		}
		// Until 500ms after A exited, and at least hpNewMin of them.
		var tooLate <-chan time.Time
		late := false
		for n := 0; n < hpNewMax; n++ {
			select {
			case <-aExited:
				aExited = nil
				tooLate = time.After(500 * time.Millisecond)
			case <-tooLate:
				late = true
			default:
			}
			if late && n >= hpNewMin {
				return
			}
			if time.Since(testStart) > hpTestTimeout-10*time.Second {
				return
			}
			at := time.Since(term)
			s, err := openHPSession(h.addr, up.url)
			ns := newSession{at: at, err: err}
			if err == nil {
				ns.via = s.via
				s.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(binWait))
				s.c.Close()
			}
			newMu.Lock()
			news = append(news, ns)
			newMu.Unlock()
		}
	}()
	wg.Wait()
	tClosed := time.Since(term)
	select {
	case <-a.exited:
	case <-time.After(binWait):
		dump()
		t.Fatalf("A still running %v after SIGTERM", binWait)
	}
	tExit := time.Since(term)
	<-newDone
	t.Logf("%v: SIGTERM to A; its %d sessions closed within %v, A exited after %v (%v); %d new sessions opened",
		since(testStart), len(onA), tClosed.Round(time.Millisecond), tExit.Round(time.Millisecond), a.waitErr, len(news))
	if a.waitErr != nil {
		t.Errorf("A exited with %v after SIGTERM, want 0", a.waitErr)
	}

	// A's sessions ended with 1001, and so did their upstreams.
	for i, s := range onA {
		if codeErrs[i] != nil || codes[i] != websocket.CloseGoingAway {
			t.Errorf("session from port %d on A: close %d (%v), want 1001", s.port, codes[i], codeErrs[i])
		}
	}
	waitFor(t, func() bool { return len(up.closesFrom(hpSourceA)) >= len(onA) })
	for _, code := range up.closesFrom(hpSourceA) {
		if code != websocket.CloseGoingAway {
			t.Errorf("upstream of a session on A got close %d, want 1001 (all: %v)", code, up.closesFrom(hpSourceA))
			break
		}
	}

	// New sessions all reached B.
	var badNew []string
	for _, ns := range news {
		if ns.err != nil || ns.via != hpSourceB {
			badNew = append(badNew, fmt.Sprintf("%v after SIGTERM: via %q, %v", ns.at.Round(time.Millisecond), ns.via, ns.err))
		}
	}
	if len(badNew) > 0 {
		t.Errorf("%d of %d sessions opened after SIGTERM to A (A exited %v after it) did not reach B:\n  %s",
			len(badNew), len(news), tExit.Round(time.Millisecond), strings.Join(badNew, "\n  "))
	}

	// B's sessions saw nothing of it: no close, no message, echo works.
	// The only upstreams of B that closed are those of the new sessions,
	// with their 1000.
	okNew := len(news) - len(badNew)
	waitFor(t, func() bool { return len(up.closesFrom(hpSourceB)) >= okNew })
	c := up.closesFrom(hpSourceB)
	if len(c) != okNew || slices.ContainsFunc(c, func(code int) bool { return code != websocket.CloseNormalClosure }) {
		t.Errorf("upstreams of B closed %d times (codes %v); want only the %d new sessions', with 1000", len(c), slices.Compact(slices.Sorted(slices.Values(c))), okNew)
	}
	for _, s := range onB {
		if err := s.echo("after"); err != nil {
			t.Errorf("session from port %d on B after A's shutdown: %v", s.port, err)
		}
	}

	// The logs name the clients as HAProxy saw them: 127.0.0.1 and each
	// client's own port, not HAProxy's connection to wsplice.
	aIPs, aPorts := sessionEnds(a.log())
	want := map[int]bool{}
	for _, s := range onA {
		want[s.port] = true
	}
	if len(aIPs) != 1 || aIPs["127.0.0.1"] != len(onA) || !maps.Equal(aPorts, want) {
		t.Errorf("A's session end lines: remote IPs %v, %d ports; want 127.0.0.1 and the %d client ports of its sessions (missing: %v)",
			aIPs, len(aPorts), len(onA), missing(want, aPorts))
	}
	for _, s := range onB {
		s.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(binWait))
	}
	wantB := map[int]bool{}
	for _, s := range onB {
		wantB[s.port] = true
	}
	waitFor(t, func() bool { _, p := sessionEnds(b.log()); return len(missing(wantB, p)) == 0 })
	if _, bPorts := sessionEnds(b.log()); len(missing(wantB, bPorts)) > 0 {
		t.Errorf("B's session end lines lack the client ports %v", missing(wantB, bPorts))
	}
	if t.Failed() {
		dump()
	}
	if d := time.Since(testStart); d > hpTestTimeout {
		t.Errorf("the test took %v, over its %v", d.Round(time.Millisecond), hpTestTimeout)
	}
}

func since(t0 time.Time) time.Duration { return time.Since(t0).Round(time.Millisecond) }

// waitFor polls cond until it holds or binWait has passed.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(binWait)
	for !cond() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
}

// missing returns the keys of want not in got, sorted.
func missing(want, got map[int]bool) []int {
	var m []int
	for k := range want {
		if !got[k] {
			m = append(m, k)
		}
	}
	slices.Sort(m)
	return m
}
