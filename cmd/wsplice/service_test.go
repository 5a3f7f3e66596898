//go:build linux

package main

// Tests of wsplice as a service (service.go): sd_notify states through a
// NOTIFY_SOCKET of the test's own, socket activation with
// systemd-socket-activate, the drain on SIGTERM, and the logs. They run
// the real binary (binary_test.go has the helpers).

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// procRun starts cmd and keeps its stderr in a binProc. A cleanup stops
// it with SIGTERM.
func procRun(t *testing.T, cmd *exec.Cmd) *binProc {
	t.Helper()
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	p := &binProc{cmd: cmd, exited: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			p.mu.Lock()
			p.stderr.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	p.stopAtCleanup(t)
	return p
}

// procStart is procRun, then a wait for a stderr line matching ready,
// whose first group is the address the process listens on (p.addr).
func procStart(t *testing.T, cmd *exec.Cmd, ready *regexp.Regexp) (*binProc, error) {
	t.Helper()
	p := procRun(t, cmd)
	deadline := time.Now().Add(binWait)
	for {
		exited := false
		select {
		case <-p.exited:
			exited = true
		default:
		}
		for line := range strings.SplitSeq(p.log(), "\n") {
			if m := ready.FindStringSubmatch(line); m != nil {
				p.addr = m[1]
				return p, nil
			}
		}
		switch {
		case exited:
			return p, fmt.Errorf("%q exited before %q (%v); stderr:\n%s", cmd.Args, ready, p.waitErr, p.log())
		case time.Now().After(deadline):
			return p, fmt.Errorf("%q: no line matching %q within %v; stderr:\n%s", cmd.Args, ready, binWait, p.log())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitLog waits for a stderr line matching re and returns its submatches.
func (p *binProc) waitLog(t *testing.T, re *regexp.Regexp) []string {
	t.Helper()
	deadline := time.Now().Add(binWait)
	for {
		for line := range strings.SplitSeq(p.log(), "\n") {
			if m := re.FindStringSubmatch(line); m != nil {
				return m
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line matching %q within %v; stderr:\n%s", re, binWait, p.log())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitExit waits for the process to exit and fails unless it exits 0.
func (p *binProc) waitExit(t *testing.T) {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(binWait):
		t.Fatalf("still running %v after SIGTERM; stderr:\n%s", binWait, p.log())
	}
	if p.waitErr != nil {
		t.Fatalf("exit: %v, want 0; stderr:\n%s", p.waitErr, p.log())
	}
}

func (p *binProc) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// notifySocket is a stand-in for systemd's notification socket.
type notifySocket struct {
	path string
	msgs chan string
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	// A socket path holds at most 107 bytes: t.TempDir can be longer.
	dir, err := os.MkdirTemp("", "wsn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	n := &notifySocket{path: dir + "/notify", msgs: make(chan string, 256)}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			select {
			case n.msgs <- string(buf[:k]):
			default: // a test that stopped reading
			}
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	return n
}

// expect returns the next notification whose first line is want, skipping
// WATCHDOG=1 pings (unless want is that).
func (n *notifySocket) expect(t *testing.T, want string) string {
	t.Helper()
	timeout := time.After(binWait)
	for {
		select {
		case m := <-n.msgs:
			first, _, _ := strings.Cut(m, "\n")
			if first == want {
				return m
			}
			if first == "WATCHDOG=1" {
				continue
			}
			t.Fatalf("notification %q, want %s", m, want)
		case <-timeout:
			t.Fatalf("no %s notification within %v", want, binWait)
		}
	}
}

// TestBinaryNotify checks the sd_notify protocol: READY=1 once listening,
// WATCHDOG=1 when WATCHDOG_USEC asks for it, RELOADING=1 then READY=1 on
// SIGHUP (which must not kill a wsplice without TLS files), STOPPING=1 on
// SIGTERM, then exit 0.
func TestBinaryNotify(t *testing.T) {
	t.Parallel()
	ns := listenNotify(t)
	p := binStart(t, []string{"NOTIFY_SOCKET=" + ns.path, "WATCHDOG_USEC=200000"})

	m := ns.expect(t, "READY=1")
	if !strings.Contains(m, "STATUS=serving on "+p.addr) {
		t.Errorf("READY=1 notification %q does not say where wsplice serves (%s)", m, p.addr)
	}
	ns.expect(t, "WATCHDOG=1")
	ns.expect(t, "WATCHDOG=1")

	p.signal(t, syscall.SIGHUP)
	m = ns.expect(t, "RELOADING=1")
	if !regexp.MustCompile(`\nMONOTONIC_USEC=[1-9][0-9]*$`).MatchString(m) {
		t.Errorf("RELOADING=1 notification %q has no MONOTONIC_USEC", m)
	}
	ns.expect(t, "READY=1")
	p.waitLog(t, regexp.MustCompile(`msg=reload signal=SIGHUP`))
	select {
	case <-p.exited:
		t.Fatalf("SIGHUP ended wsplice (%v); stderr:\n%s", p.waitErr, p.log())
	default:
	}
	// Still serving after the reload.
	c := binDial(t, "ws://"+p.addr+"/", nil)
	wantBinReply(t, c.call("frobnicate", map[string]any{}), 4003)

	p.signal(t, syscall.SIGTERM)
	m = ns.expect(t, "STOPPING=1")
	if !strings.Contains(m, "STATUS=draining 1 sessions") {
		t.Errorf("STOPPING=1 notification %q, want STATUS=draining 1 sessions", m)
	}
	equalInt(t, c.closeCode(), 1001, "client close code")
	p.waitExit(t)
}

// TestBinaryNotifyOutsideSystemd checks that wsplice runs as usual without
// NOTIFY_SOCKET, and with one nobody listens on.
func TestBinaryNotifyOutsideSystemd(t *testing.T) {
	t.Parallel()
	for _, env := range [][]string{nil, {"NOTIFY_SOCKET=/nonexistent/wsplice-notify", "WATCHDOG_USEC=100000"}} {
		p := binStart(t, env)
		c := binDial(t, "ws://"+p.addr+"/", nil)
		wantBinReply(t, c.call("frobnicate", map[string]any{}), 4003)
		p.signal(t, syscall.SIGTERM)
		equalInt(t, c.closeCode(), 1001, "client close code")
		p.waitExit(t)
	}
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// TestBinarySocketActivation runs wsplice under systemd-socket-activate,
// which binds the port and passes it as LISTEN_FDS. --listen names the
// same address, so a wsplice that bound it itself would fail with "address
// in use".
func TestBinarySocketActivation(t *testing.T) {
	t.Parallel()
	activate, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Skip("systemd-socket-activate not installed (Debian: apt-get install systemd; make test-deps does)")
	}
	upURL, closes := binUpstream(t)
	var p *binProc
	for attempt := 1; ; attempt++ {
		addr := "127.0.0.1:" + freePort(t)
		cmd := exec.Command(activate, "--listen", addr, wsplice(t), "--listen", addr, "--allow-private-upstreams")
		cmd.Env = binEnv()
		p, err = procStart(t, cmd, regexp.MustCompile(`^Listening on (\S+) as`))
		if err == nil {
			break
		}
		// Another process took the port between freePort and the bind.
		if attempt == 5 || !strings.Contains(p.log(), "in use") {
			t.Fatal(err)
		}
	}
	// The first connection makes systemd-socket-activate exec wsplice with
	// the listening socket; the connection waits in its backlog.
	c := binDial(t, "ws://"+p.addr+"/", nil)
	idx, code := c.connect(upURL)
	equalInt(t, code, 0, "connect")
	c.sendRaw(uint16(idx), []byte("through an activated socket"))
	if m := c.readData(); string(m.data) != "through an activated socket" {
		t.Fatalf("echo %q", m.data)
	}
	m := p.waitLog(t, regexp.MustCompile(`msg="socket activation: serving the socket systemd passed.*" addr=(\S+)`))
	if m[1] != p.addr {
		t.Errorf("socket activation log names %s, want %s", m[1], p.addr)
	}
	p.signal(t, syscall.SIGTERM)
	equalInt(t, c.closeCode(), 1001, "client close code")
	equalInt(t, binWaitClose(t, closes), 1001, "upstream close code")
	p.waitExit(t)
}

var metricsAddrLine = regexp.MustCompile(`msg=metrics addr=([0-9.]+:[0-9]+)`)

// httpGet returns the status and body of a GET.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), binWait)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// pushUpstream is an upstream that sends count binary messages of size
// bytes as soon as it is connected, each starting with its sequence number
// (4 bytes) and filled with its low byte, then echoes nothing and waits for
// the close; closes receives its code.
func pushUpstream(t *testing.T, count, size int) (url string, closes chan int) {
	t.Helper()
	closes = make(chan int, 4)
	url = serveUpstream(t, nil, func(_ *http.Request, c *websocket.Conn) {
		// The writer ends at its first failed write, at the latest when
		// serveUpstream closes c.
		go func() {
			for i := range count {
				msg := make([]byte, size)
				for j := range msg {
					msg[j] = byte(i)
				}
				binary.BigEndian.PutUint32(msg, uint32(i))
				if c.WriteMessage(websocket.BinaryMessage, msg) != nil {
					return
				}
			}
		}()
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				code := -1
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					code = ce.Code
				}
				closes <- code
				return
			}
		}
	})
	return url, closes
}

// smallWindowDialer dials with a small receive buffer, so that a client
// that does not read soon makes wsplice queue what it sends it.
func smallWindowDialer() *websocket.Dialer {
	return &websocket.Dialer{NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) {
				syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
			})
		}}
		return d.DialContext(ctx, network, addr)
	}}
}

// waitPaused waits until wsplice has paused a connection for
// backpressure: its output queue went over the high watermark.
func waitPaused(t *testing.T, maddr string) {
	t.Helper()
	waitScrape(t, maddr, func(got map[string]float64) string {
		if got["wsplice_backpressure_pauses_total"] > 0 {
			return ""
		}
		return "wsplice_backpressure_pauses_total is 0"
	})
}

// TestBinaryDrainFlushesQueued checks that on SIGTERM a client gets what
// wsplice had queued for it, whole and in order, before the 1001 close,
// and that the upstream gets 1001 too.
//
// The drain cuts the upstream wherever it is, so the last message may be
// one wsplice had only begun to receive: as when an upstream dies inside
// a frame (README, "onSocketDisconnect"), the client gets the part that
// arrived and then zero bytes to the frame's end, so its stream stays
// valid.
func TestBinaryDrainFlushesQueued(t *testing.T) {
	t.Parallel()
	const size = 16 << 10
	p := binStart(t, nil, "--allow-private-upstreams", "--shutdown-timeout", "8s", "--metrics-address", "127.0.0.1:0")
	maddr := p.waitLog(t, metricsAddrLine)[1]
	upURL, closes := pushUpstream(t, 256, size) // 4 MiB, more than any socket buffer here holds
	c := binDial(t, "ws://"+p.addr+"/", smallWindowDialer())
	idx, code := c.connect(upURL)
	equalInt(t, code, 0, "connect")
	// The client does not read: wsplice queues for it until the high
	// watermark pauses the upstream.
	waitPaused(t, maddr)

	p.signal(t, syscall.SIGTERM)
	msgs := c.data // read while waiting for the connect reply
	c.data = nil
	for {
		i, data, err := c.next()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			equalInt(t, ce.Code, 1001, "client close code")
			break
		}
		if err != nil {
			t.Fatalf("after %d messages: %v, want a 1001 close", len(msgs), err)
		}
		msgs = append(msgs, binMsg{i, data})
	}
	cut := -1
	for seq, m := range msgs {
		equalInt(t, int(m.index), idx, "index")
		if len(m.data) != size {
			t.Fatalf("message %d: %d bytes, want %d", seq, len(m.data), size)
		}
		if got := binary.BigEndian.Uint32(m.data); got != uint32(seq) && !(seq == len(msgs)-1 && got == 0) {
			t.Fatalf("message %d has sequence number %d", seq, got)
		}
		for j := 4; j < len(m.data); j++ {
			if m.data[j] == byte(seq) {
				continue
			}
			if seq == len(msgs)-1 && !slices.ContainsFunc(m.data[j:], func(b byte) bool { return b != 0 }) {
				cut = j // the zero-filled end of the frame in flight
				break
			}
			t.Fatalf("message %d: byte %d is %d, want %d", seq, j, m.data[j], byte(seq))
		}
	}
	t.Logf("client got %d messages (%d KiB) after SIGTERM, then 1001; last one cut at byte %d", len(msgs), len(msgs)*size>>10, cut)
	if len(msgs) == 0 {
		t.Errorf("nothing queued reached the client before the close")
	}
	equalInt(t, binWaitClose(t, closes), 1001, "upstream close code")
	p.waitExit(t)
}

// TestBinaryDrainTimeout checks the end of a drain that cannot finish: a
// client that never reads holds data wsplice cannot flush. During the
// drain /healthz answers 503 and no new session is accepted; at
// --shutdown-timeout wsplice closes what is left and exits 0.
func TestBinaryDrainTimeout(t *testing.T) {
	t.Parallel()
	const timeout = time.Second
	p := binStart(t, nil, "--allow-private-upstreams", "--shutdown-timeout", timeout.String(),
		"--write-timeout", "30s", "--metrics-address", "127.0.0.1:0")
	maddr := p.waitLog(t, metricsAddrLine)[1]
	status, body := httpGet(t, "http://"+maddr+"/healthz")
	if status != http.StatusOK || body != "ok\n" {
		t.Fatalf("/healthz while serving: %d %q, want 200 ok", status, body)
	}
	upURL, _ := pushUpstream(t, 256, 16<<10)
	c := binDial(t, "ws://"+p.addr+"/", smallWindowDialer())
	_, code := c.connect(upURL)
	equalInt(t, code, 0, "connect")
	waitPaused(t, maddr)

	start := time.Now()
	p.signal(t, syscall.SIGTERM)
	for {
		status, body = httpGet(t, "http://"+maddr+"/healthz")
		if status == http.StatusServiceUnavailable {
			break
		}
		if time.Since(start) > timeout/2 {
			t.Fatalf("/healthz still %d %q %v after SIGTERM, want 503", status, body, time.Since(start))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if body != "draining\n" {
		t.Errorf("/healthz while draining: body %q, want draining", body)
	}
	d := websocket.Dialer{HandshakeTimeout: timeout / 4}
	if conn, _, err := d.Dial("ws://"+p.addr+"/", nil); err == nil {
		conn.Close()
		t.Errorf("a new session was accepted during the drain")
	}
	p.waitExit(t)
	elapsed := time.Since(start)
	t.Logf("exit 0 %v after SIGTERM (--shutdown-timeout %v)", elapsed.Round(time.Millisecond), timeout)
	if elapsed < timeout*8/10 || elapsed > timeout+3*time.Second {
		t.Errorf("exit %v after SIGTERM, want about --shutdown-timeout %v", elapsed, timeout)
	}
	if !strings.Contains(p.log(), "shutdown timeout") {
		t.Errorf("no shutdown timeout warning; stderr:\n%s", p.log())
	}
}

// TestBinaryLogJSON checks --log-format json: every line is a JSON object,
// and each session ends with exactly one "session end" line carrying its
// figures, whatever the number of frames.
func TestBinaryLogJSON(t *testing.T) {
	t.Parallel()
	const sessions, frames = 3, 200
	cmd := exec.Command(wsplice(t), "--listen", "127.0.0.1:0", "--log-format", "json", "--allow-private-upstreams")
	cmd.Env = binEnv()
	p, err := procStart(t, cmd, regexp.MustCompile(`"msg":"listening".*"addr":"([0-9.]+:[0-9]+)"`))
	if err != nil {
		t.Fatal(err)
	}
	upURL, closes := binUpstream(t)
	for range sessions {
		c := binDial(t, "ws://"+p.addr+"/", nil)
		idx, code := c.connect(upURL)
		equalInt(t, code, 0, "connect")
		for range frames {
			c.sendRaw(uint16(idx), []byte("0123456789"))
			c.readData()
		}
		c.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(binWait))
		equalInt(t, c.closeCode(), 1000, "close echoed")
		binWaitClose(t, closes)
	}
	for deadline := time.Now().Add(binWait); strings.Count(p.log(), `"msg":"session end"`) < sessions; {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d session end lines within %v; stderr:\n%s", sessions, binWait, p.log())
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.signal(t, syscall.SIGTERM)
	p.waitExit(t)

	lines := strings.Split(strings.TrimSpace(p.log()), "\n")
	var ends []map[string]any
	for _, line := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON (%v): %s", err, line)
		}
		for _, k := range []string{"time", "level", "msg"} {
			if _, ok := rec[k]; !ok {
				t.Errorf("log line without %q: %s", k, line)
			}
		}
		if rec["msg"] == "session end" {
			ends = append(ends, rec)
		}
	}
	equalInt(t, len(ends), sessions, "session end lines")
	for _, rec := range ends {
		num := func(k string) float64 {
			v, ok := rec[k].(float64)
			if !ok {
				t.Fatalf("session end without a number %q: %v", k, rec)
			}
			return v
		}
		if s, _ := rec["remote"].(string); !strings.HasPrefix(s, "127.0.0.1:") {
			t.Errorf("session end remote %v", rec["remote"])
		}
		if _, ok := rec["duration"]; !ok {
			t.Errorf("session end without duration: %v", rec)
		}
		equalInt(t, int(num("upstreams")), 1, "session end upstreams")
		if num("frames_in") < frames || num("frames_out") < frames || num("bytes_in") < 10*frames || num("bytes_out") < 10*frames {
			t.Errorf("session end figures %v, want at least %d frames and %d bytes each way", rec, frames, 10*frames)
		}
	}
	// Nothing is logged per frame: a handful of lines for the whole run.
	if len(lines) > 6+sessions {
		t.Errorf("%d log lines for %d sessions of %d frames:\n%s", len(lines), sessions, frames, p.log())
	}
}

// TestBinaryLogLevel checks that --log-level warn drops info lines, the
// session end among them: a quiet run logs nothing.
func TestBinaryLogLevel(t *testing.T) {
	t.Parallel()
	var p *binProc
	for attempt := 1; p == nil; attempt++ {
		// No "listening" line at warn: listen on a port chosen here and
		// wait for it to answer.
		addr := "127.0.0.1:" + freePort(t)
		cmd := exec.Command(wsplice(t), "--listen", addr, "--log-level", "warn")
		cmd.Env = binEnv()
		q := procRun(t, cmd)
		if waitListening(q, addr) {
			q.addr = addr
			p = q
		} else if attempt == 5 || !strings.Contains(q.log(), "in use") {
			t.Fatalf("wsplice did not listen on %s; stderr:\n%s", addr, q.log())
		}
	}
	c := binDial(t, "ws://"+p.addr+"/", nil)
	wantBinReply(t, c.call("frobnicate", map[string]any{}), 4003)
	c.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(binWait))
	equalInt(t, c.closeCode(), 1000, "close echoed")
	p.signal(t, syscall.SIGTERM)
	p.waitExit(t)
	if out := p.log(); out != "" {
		t.Errorf("--log-level warn printed:\n%s", out)
	}
}

// waitListening reports whether addr accepts TCP connections before p
// exits or binWait passes.
func waitListening(p *binProc, addr string) bool {
	deadline := time.Now().Add(binWait)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return true
		}
		select {
		case <-p.exited:
			return false
		case <-time.After(10 * time.Millisecond):
		}
	}
	return false
}

// TestDeployEnvFile checks deploy/wsplice.env, the example configuration:
// every flag's variable is there once, commented out, with its default.
func TestDeployEnvFile(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("../../deploy/wsplice.env")
	if err != nil {
		t.Fatal(err)
	}
	seen := make(map[string]bool)
	setting := regexp.MustCompile(`^(#?)(WSPLICE_[A-Z_]+)=(.*)$`)
	for line := range strings.SplitSeq(string(data), "\n") {
		m := setting.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if m[1] != "#" {
			t.Errorf("%s is set in the example; it should only show the default: %s", m[2], line)
		}
		if seen[m[2]] {
			t.Errorf("%s appears twice", m[2])
		}
		seen[m[2]] = true
		o, err := parseOptions(nil, []string{m[2] + "=" + m[3]}, io.Discard)
		if err != nil {
			t.Errorf("%s: %v", line, err)
			continue
		}
		if !reflect.DeepEqual(o, defaultOptions()) {
			t.Errorf("%s is not the default", line)
		}
	}
	for _, d := range defaultOptions().optionFlags() {
		if !seen[envName(d.name)] {
			t.Errorf("deploy/wsplice.env has no %s (--%s)", envName(d.name), d.name)
		}
	}
}
