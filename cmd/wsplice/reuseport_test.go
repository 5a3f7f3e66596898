//go:build linux

package main

// The zero-downtime restart of README "Scaling out": with --reuseport a new
// wsplice binds the port of the running one, the old one gets SIGTERM and
// drains, and no client trying to connect meanwhile is refused.

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/sys/unix"
)

// outcome is what became of one attempt to open a session.
type outcome int

const (
	served  outcome = iota // upgraded, and a control request answered
	drained                // upgraded, then closed with 1001 (its server is draining)
	stalled                // served or drained, but only after stallLimit
	refused                // the TCP connection was refused (ECONNREFUSED)
	reset                  // the connection was reset or closed before the upgrade
	broken                 // anything else: a timeout, an HTTP error, a bad reply
)

func (o outcome) String() string {
	return [...]string{"served", "drained", "stalled", "refused", "reset", "broken"}[o]
}

// stallLimit is how long an attempt may take, upgrade and reply, before it
// counts as a failure: on loopback one takes about a millisecond, and a
// client kept waiting for seconds by a restart saw downtime.
const stallLimit = time.Second

// attemptTimeout bounds each step of one attempt.
const attemptTimeout = 3 * time.Second

// openSession dials ws://addr/, upgrades, sends a control request and
// waits for its reply (4003: the method is unknown, which proves a
// session answered), then closes with 1000. err says what went wrong for
// every outcome but served.
func openSession(addr string) (outcome, error) {
	d := websocket.Dialer{HandshakeTimeout: attemptTimeout}
	c, resp, err := d.Dial("ws://"+addr+"/", nil)
	if err != nil {
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			return refused, err
		case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
			errors.Is(err, syscall.EPIPE):
			return reset, err
		case resp != nil:
			return broken, fmt.Errorf("HTTP %s: %w", resp.Status, err)
		}
		return broken, err
	}
	defer c.Close()
	o, err := sessionCall(c)
	if o == served {
		c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(attemptTimeout))
	}
	return o, err
}

// sessionCall sends one control request on an open session and reads its
// reply: served, drained (a 1001 close instead) or broken.
func sessionCall(c *websocket.Conn) (outcome, error) {
	req := binary.BigEndian.AppendUint16(nil, binControl)
	req = append(req, `{"id":1,"type":"method","method":"frobnicate"}`...)
	c.SetWriteDeadline(time.Now().Add(attemptTimeout))
	if err := c.WriteMessage(websocket.BinaryMessage, req); err != nil {
		return broken, fmt.Errorf("send: %w", err)
	}
	c.SetReadDeadline(time.Now().Add(attemptTimeout))
	for {
		_, p, err := c.ReadMessage()
		if websocket.IsCloseError(err, websocket.CloseGoingAway) {
			return drained, err
		}
		if err != nil {
			return broken, fmt.Errorf("read: %w", err)
		}
		if len(p) < 2 || binary.BigEndian.Uint16(p) != binControl {
			continue
		}
		var r binReply
		if err := json.Unmarshal(p[2:], &r); err != nil {
			return broken, fmt.Errorf("reply %q: %w", p[2:], err)
		}
		if r.Type != "reply" || r.ID != 1 {
			continue
		}
		if r.Error == nil || r.Error.Code != 4003 {
			return broken, fmt.Errorf("reply %s, want error 4003", p[2:])
		}
		return served, nil
	}
}

// attemptLog records the outcome of every attempt, with its time.
type attemptLog struct {
	mu       sync.Mutex
	counts   [broken + 1]int
	failures []string // one line per stalled, refused, reset or broken attempt
	last     outcome
}

func (l *attemptLog) add(o outcome, at time.Duration, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.counts[o]++
	l.last = o
	if o >= stalled {
		l.failures = append(l.failures, fmt.Sprintf("%v %s: %v", at.Round(time.Millisecond), o, err))
	}
}

func (l *attemptLog) snapshot() (counts [broken + 1]int, failures []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.counts, append([]string(nil), l.failures...)
}

func (l *attemptLog) String() string {
	c, _ := l.snapshot()
	var parts []string
	for o, n := range c {
		parts = append(parts, fmt.Sprintf("%s=%d", outcome(o), n))
	}
	return strings.Join(parts, " ")
}

// Bounds of the restart test's client loop.
const (
	restartMaxAttempts = 20000
	restartMaxTime     = 15 * time.Second
)

// TestReuseportRestart replaces one wsplice by another on the same port
// while clients keep connecting: A listens with --reuseport, B starts on
// A's port with --reuseport, A gets SIGTERM and drains. Every attempt
// must be served (or, when A took it before draining, closed with 1001);
// none may be refused or reset.
//
// The procedure needs net.ipv4.tcp_migrate_req=1 (README "Scaling out"):
// without it, connections the kernel queued on A's listener in the
// instant before A closes it are reset. The setting is per network
// namespace, so as root the test runs itself in a namespace of its own
// with it set, leaving the machine's alone.
func TestReuseportRestart(t *testing.T) {
	t.Parallel()
	switch {
	case os.Getenv(netnsChildEnv) != "":
		// The child of runInNetns, in its own network namespace.
		if bin := os.Getenv(netnsBinEnv); bin != "" {
			binOnce.Do(func() { binPath = bin })
		}
		if err := netnsSetup(); err != nil {
			t.Fatalf("network namespace setup: %v", err)
		}
	case migrateReq() == "1":
	case os.Geteuid() == 0:
		runInNetns(t, "TestReuseportRestart")
		return
	default:
		t.Skipf("a zero-downtime restart needs net.ipv4.tcp_migrate_req=1 (it is %q here), "+
			"and only root can run the test in a network namespace with it set", migrateReq())
	}
	testReuseportRestart(t)
}

// Environment of runInNetns's child: it is the child, and the wsplice
// binary the parent built.
const (
	netnsChildEnv = "REUSEPORT_TEST_NETNS"
	netnsBinEnv   = "REUSEPORT_TEST_BIN"
)

// migrateReq returns net.ipv4.tcp_migrate_req in this network namespace
// ("" when the kernel has none: before Linux 5.14).
func migrateReq() string {
	v, _ := os.ReadFile("/proc/sys/net/ipv4/tcp_migrate_req")
	return strings.TrimSpace(string(v))
}

// runInNetns runs test alone in a copy of this test binary started in a
// new network namespace (CLONE_NEWNET), and fails with its output if it
// fails.
func runInNetns(t *testing.T, test string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := wsplice(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "-test.run=^"+test+"$", "-test.v", "-test.count=1", "-test.timeout=55s")
	cmd.Env = append(os.Environ(), netnsChildEnv+"=1", netnsBinEnv+"="+bin)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Skipf("cannot start the test in a network namespace of its own (%v), and "+
			"net.ipv4.tcp_migrate_req is %q here", err, migrateReq())
	}
	if err != nil || !strings.Contains(string(out), "--- PASS: "+test) {
		t.Fatalf("%s in a network namespace with tcp_migrate_req=1: %v\n%s", test, err, out)
	}
	t.Logf("%s passed in a network namespace with tcp_migrate_req=1:\n%s", test, out)
}

// netnsSetup brings up the loopback interface of a new network namespace
// and sets net.ipv4.tcp_migrate_req=1 there.
func netnsSetup() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	return os.WriteFile("/proc/sys/net/ipv4/tcp_migrate_req", []byte("1\n"), 0)
}

func testReuseportRestart(t *testing.T) {
	a := binStart(t, nil, "--reuseport", "--shutdown-timeout", "5s")
	addr := a.addr
	t.Logf("A (pid %d) listens on %s; net.ipv4.tcp_migrate_req=%s", a.cmd.Process.Pid, addr, migrateReq())

	// Long-lived sessions on A, as a restart meets them: they stay open
	// and do not answer A's going-away close, so A's drain lasts (up to
	// its close timeout) while new clients keep coming.
	const lingering = 8
	var linger []*websocket.Conn
	for range lingering {
		d := websocket.Dialer{HandshakeTimeout: attemptTimeout}
		c, _, err := d.Dial("ws://"+addr+"/", nil)
		if err != nil {
			t.Fatalf("long-lived session: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		if o, err := sessionCall(c); o != served {
			t.Fatalf("long-lived session: %s: %v", o, err)
		}
		linger = append(linger, c)
	}

	var (
		log      attemptLog
		stop     = make(chan struct{})
		attempts atomic.Int64
		wg       sync.WaitGroup
		start    = time.Now()
	)
	const workers = 4
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if attempts.Add(1) > restartMaxAttempts || time.Since(start) > restartMaxTime {
					return
				}
				t0 := time.Now()
				o, err := openSession(addr)
				if d := time.Since(t0); o <= drained && d > stallLimit {
					o, err = stalled, fmt.Errorf("%s after %v", o, d.Round(time.Millisecond))
				}
				log.add(o, time.Since(start), err)
			}
		}()
	}
	stopClients := func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}
	t.Cleanup(stopClients)

	time.Sleep(300 * time.Millisecond)
	b := binStart(t, nil, "--listen", addr, "--reuseport", "--shutdown-timeout", "5s")
	if b.addr != addr {
		t.Fatalf("B listens on %s, want A's %s", b.addr, addr)
	}
	tB := time.Since(start)
	t.Logf("%v: B (pid %d) listens on %s too; %s", tB.Round(time.Millisecond), b.cmd.Process.Pid, addr, &log)

	// Both serve for a while: the kernel spreads new connections.
	time.Sleep(500 * time.Millisecond)
	tTerm := time.Since(start)
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	t.Logf("%v: SIGTERM to A; %s", tTerm.Round(time.Millisecond), &log)
	select {
	case <-a.exited:
	case <-time.After(binWait):
		t.Fatalf("A still running %v after SIGTERM; stderr:\n%s", binWait, a.log())
	}
	tExit := time.Since(start)
	t.Logf("%v: A exited (%v); %s", tExit.Round(time.Millisecond), a.waitErr, &log)
	before, _ := log.snapshot()

	// B alone, for a while.
	time.Sleep(500 * time.Millisecond)
	stopClients()
	counts, failures := log.snapshot()
	total := 0
	for _, n := range counts {
		total += n
	}
	t.Logf("%v: done, %d attempts: %s", time.Since(start).Round(time.Millisecond), total, &log)

	// A's long-lived sessions got its going-away close.
	for i, c := range linger {
		c.SetReadDeadline(time.Now().Add(binWait))
		var err error
		for err == nil {
			_, _, err = c.ReadMessage()
		}
		if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
			t.Errorf("long-lived session %d on A ended with %v, want close 1001", i, err)
		}
	}

	aSessions := strings.Count(a.log(), "session end")
	bSessions := strings.Count(b.log(), "session end")
	t.Logf("sessions logged: A %d, B %d", aSessions, bSessions)

	if a.waitErr != nil {
		t.Errorf("A exited with %v after SIGTERM, want 0", a.waitErr)
	}
	if n := len(failures); n > 0 {
		if n > 20 {
			failures = append(failures[:20], fmt.Sprintf("... and %d more", n-20))
		}
		t.Errorf("%d connection attempts failed during the restart (B listening at %v, SIGTERM to A at %v, A exited at %v):\n  %s",
			n, tB.Round(time.Millisecond), tTerm.Round(time.Millisecond), tExit.Round(time.Millisecond), strings.Join(failures, "\n  "))
	}
	if counts[served] == before[served] {
		t.Errorf("no session served after A exited: B does not serve")
	}
	if bSessions == 0 {
		t.Errorf("B logged no session end")
	}
	if t.Failed() {
		t.Logf("A's stderr:\n%s", tail(a.log(), 20))
		t.Logf("B's stderr:\n%s", tail(b.log(), 20))
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[%d lines before]", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
