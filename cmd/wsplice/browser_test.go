//go:build linux

package main

// TestBrowser runs testdata/browser/index.html in headless Chromium against
// the real binary: the browser's own WebSocket is the strictest client
// wsplice has (a text frame that is not UTF-8, or a masked frame from the
// server, ends the session), and the one its users run. Chromium is driven
// by chromedriver through a minimal W3C WebDriver client below; everything
// listens on loopback, and every wait is bounded.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

const (
	// chromiumPath and chromedriverPath are where Debian's chromium and
	// chromium-driver packages put them (make test-deps installs both).
	chromiumPath     = "/usr/bin/chromium"
	chromedriverPath = "/usr/bin/chromedriver"

	// browserWait bounds the start of a browser session and the page's run.
	// The page gives up by itself after 20 s and says why.
	browserWait = 30 * time.Second
)

// TestBrowser checks interop with Chromium's WebSocket: the page reports
// "ok" or "fail: why" in its title; this side checks what the upstream
// received (text stays text; messageType "text" turns binary into text) and
// the close codes terminate sent. Without Chromium the test is skipped, and
// under CI that is a failure.
func TestBrowser(t *testing.T) {
	t.Parallel()
	for _, path := range []string{chromiumPath, chromedriverPath} {
		if _, err := exec.LookPath(path); err != nil {
			msg := fmt.Sprintf("%s is missing (Debian packages chromium and chromium-driver; make test-deps installs them): %v", path, err)
			if os.Getenv("CI") != "" {
				t.Fatal(msg + "; CI must run the browser test")
			}
			t.Skip(msg)
		}
	}
	up := browserUpstream(t)
	page := httptest.NewServer(http.FileServer(http.Dir(filepath.Join("testdata", "browser"))))
	t.Cleanup(page.Close)
	// A browser sends its page's origin; list it as a deployment would.
	p := binStart(t, nil, "--allow-private-upstreams", "--allowed-origins", page.URL)
	wd := chromedriverStart(t)
	sess := wd.newSession(t)

	start := time.Now()
	q := url.Values{"wsplice": {"ws://" + p.addr + "/"}, "upstream": {up.url}}
	if err := wd.do(http.MethodPost, "/session/"+sess+"/url", map[string]any{"url": page.URL + "/?" + q.Encode()}, nil, binWait); err != nil {
		t.Fatal(err)
	}
	title, err := wd.waitTitle(sess, func(s string) bool { return s == "ok" || strings.HasPrefix(s, "fail") })
	var pageLog string
	if lerr := wd.do(http.MethodPost, "/session/"+sess+"/execute/sync",
		map[string]any{"script": `return document.getElementById("log").textContent`, "args": []any{}}, &pageLog, binWait); lerr != nil {
		pageLog = lerr.Error()
	}
	if err != nil || title != "ok" {
		t.Fatalf("page title %q (%v) after %v\npage log:\n%s\nwsplice log:\n%s\nchromedriver log (end):\n%s",
			title, err, time.Since(start).Round(time.Millisecond), pageLog, p.log(), wd.logTail())
	}
	t.Logf("page ok after %v:\n%s", time.Since(start).Round(time.Millisecond), pageLog)

	// What the upstream received mirrors index.html: five binary messages
	// and a text frame on /plain, a binary frame delivered as text on
	// /astext, and nothing for the terminated index.
	want := []upstreamMsg{
		{"/plain", websocket.BinaryMessage, 0},
		{"/plain", websocket.BinaryMessage, 125},
		{"/plain", websocket.BinaryMessage, 126},
		{"/plain", websocket.BinaryMessage, 65536},
		{"/plain", websocket.BinaryMessage, 262147},
		{"/plain", websocket.TextMessage, len("héllo, wsplice ✓ 🌍")},
		{"/astext", websocket.TextMessage, len("sent binary, delivered as text ✓")},
	}
	if got := up.received(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("upstream received (path, opcode, bytes):\n%v\nwant:\n%v", got, want)
	}
	closes := map[string]string{}
	for range 2 {
		select {
		case c := <-up.closes:
			closes[c.path] = c.close
		case <-time.After(binWait):
			t.Fatalf("upstream closes within %v: %v, want one for /plain and one for /astext", binWait, closes)
		}
	}
	wantCloses := map[string]string{"/plain": `4000 "browser done"`, "/astext": `1000 ""`}
	if fmt.Sprint(closes) != fmt.Sprint(wantCloses) {
		t.Errorf("upstream close frames after terminate: %v, want %v", closes, wantCloses)
	}
}

// --- an upstream that records what it receives -----------------------------

// upstreamMsg is one message an upstream received.
type upstreamMsg struct {
	path string // of the upstream connection's URL
	typ  int    // websocket.TextMessage or websocket.BinaryMessage
	size int
}

// upstreamClose is how an upstream connection ended: `code "reason"` of
// the close frame it received, or "no close frame: err".
type upstreamClose struct {
	path  string
	close string
}

// recordingUpstream is an echo upstream like binUpstream (each message
// comes back with the same bytes and opcode) that records what it received,
// by the path each connection was opened with.
type recordingUpstream struct {
	url    string // ws://127.0.0.1:port/; connect to url+"name"
	closes chan upstreamClose

	mu   sync.Mutex
	msgs []upstreamMsg // guarded by mu
}

func (u *recordingUpstream) received() []upstreamMsg {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]upstreamMsg(nil), u.msgs...)
}

// browserUpstream starts a recordingUpstream; a cleanup stops it and waits
// for its handlers.
func browserUpstream(t *testing.T) *recordingUpstream {
	t.Helper()
	u := &recordingUpstream{closes: make(chan upstreamClose, 16)}
	u.url = serveUpstream(t, nil, func(r *http.Request, c *websocket.Conn) {
		for {
			mt, p, err := c.ReadMessage()
			if err != nil {
				end := "no close frame: " + err.Error()
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					end = fmt.Sprintf("%d %q", ce.Code, ce.Text)
				}
				u.closes <- upstreamClose{r.URL.Path, end}
				return
			}
			u.mu.Lock()
			u.msgs = append(u.msgs, upstreamMsg{r.URL.Path, mt, len(p)})
			u.mu.Unlock()
			if err := c.WriteMessage(mt, p); err != nil {
				u.closes <- upstreamClose{r.URL.Path, "echo: " + err.Error()}
				return
			}
		}
	})
	return u
}

// --- chromedriver and a minimal WebDriver client ---------------------------

// webDriver is a running chromedriver and a client for the few W3C
// WebDriver commands the test needs (https://www.w3.org/TR/webdriver2/).
type webDriver struct {
	base    string // http://127.0.0.1:port
	logPath string // chromedriver's --log-path
	client  *http.Client
}

// chromedriverStart starts chromedriver on a free loopback port and waits
// until it is ready. Chromedriver and Chromium get their own process group
// and a temporary directory as TMPDIR (profiles, crash reports; and the
// mark by which the cleanup finds their processes); a cleanup ends the
// group and checks that no process is left.
func chromedriverStart(t *testing.T) *webDriver {
	t.Helper()
	// Registered before the processes start, the directory's cleanup runs
	// after theirs.
	dir := t.TempDir()
	var errs []error
	// The port is free when chosen but may be taken before chromedriver
	// binds it: then it exits, and another port is tried.
	for range 3 {
		d, err := chromedriverTry(t, dir)
		if err == nil {
			return d
		}
		errs = append(errs, err)
	}
	t.Fatal(errors.Join(errs...))
	return nil
}

func chromedriverTry(t *testing.T, dir string) (*webDriver, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	d := &webDriver{
		base:    "http://127.0.0.1:" + port,
		logPath: filepath.Join(dir, "chromedriver-"+port+".log"),
		client:  &http.Client{Transport: &http.Transport{}},
	}
	out, err := os.Create(filepath.Join(dir, "chromedriver-"+port+".out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close() // the child has its own copy
	cmd := exec.Command(chromedriverPath, "--port="+port, "--log-path="+d.logPath)
	cmd.Env = append(os.Environ(), "TMPDIR="+dir)
	cmd.Stdout, cmd.Stderr = out, out
	// Setpgid: Chromium inherits the group, so the cleanup can end all of
	// it. Pdeathsig: chromedriver dies with the test process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start chromedriver: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	pgid := cmd.Process.Pid
	t.Cleanup(func() {
		d.client.CloseIdleConnections()
		stopGroup(t, pgid, exited, dir)
	})

	deadline := time.Now().Add(binWait)
	for {
		var status struct {
			Ready bool `json:"ready"`
		}
		err := d.do(http.MethodGet, "/status", nil, &status, time.Second)
		if err == nil && status.Ready {
			return d, nil
		}
		select {
		case <-exited:
			text, _ := os.ReadFile(out.Name())
			return nil, fmt.Errorf("chromedriver on port %s exited before it was ready (%v):\n%s", port, cmd.ProcessState, text)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("chromedriver on port %s not ready within %v: %v\n%s", port, binWait, err, d.logTail())
		}
	}
}

// stopGroup ends chromedriver's process group (SIGTERM, then SIGKILL),
// and fails the test if a live process that inherited TMPDIR=dir outlives
// chromedriver by more than a moment: once the session is deleted,
// Chromium must be gone too, and its crash handler, which leaves the group,
// with it. Such processes are killed. Zombies do not count: Chromium's
// helpers, orphaned as the browser exits, are left for init to reap.
func stopGroup(t *testing.T, pgid int, exited chan struct{}, dir string) {
	syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(binWait):
		t.Errorf("chromedriver ignored SIGTERM for %v", binWait)
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-exited
	}
	deadline := time.Now().Add(2 * time.Second)
	for live := liveWithTMPDIR(dir); len(live) > 0; live = liveWithTMPDIR(dir) {
		if time.Now().After(deadline) {
			t.Errorf("processes started by chromedriver outlived it; killing them:\n%s", strings.Join(live, "\n"))
			syscall.Kill(-pgid, syscall.SIGKILL)
			for _, p := range live {
				pid, _ := strconv.Atoi(strings.Fields(p)[0])
				syscall.Kill(pid, syscall.SIGKILL)
			}
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// liveWithTMPDIR lists the processes, other than zombies, whose environment
// holds TMPDIR=dir, as "pid (comm)". It reads /proc/PID/stat ("pid (comm)
// state ...", proc(5)) and /proc/PID/environ.
func liveWithTMPDIR(dir string) []string {
	mark := []byte("\x00TMPDIR=" + dir + "\x00")
	procs, _ := os.ReadDir("/proc")
	var live []string
	for _, p := range procs {
		if _, err := strconv.Atoi(p.Name()); err != nil {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", p.Name(), "environ"))
		if err != nil || !bytes.Contains(append([]byte{0}, env...), mark) {
			continue // gone meanwhile, not ours, or not readable
		}
		stat, err := os.ReadFile(filepath.Join("/proc", p.Name(), "stat"))
		i := bytes.LastIndexByte(stat, ')')
		if err != nil || i < 0 || i+3 > len(stat) || stat[i+2] == 'Z' || stat[i+2] == 'X' {
			continue
		}
		live = append(live, string(stat[:i+1]))
	}
	return live
}

// newSession starts headless Chromium; a cleanup deletes the session,
// which quits the browser.
func (d *webDriver) newSession(t *testing.T) string {
	t.Helper()
	caps := map[string]any{"capabilities": map[string]any{"alwaysMatch": map[string]any{
		"goog:chromeOptions": map[string]any{
			"binary": chromiumPath,
			"args":   []string{"--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"},
		},
	}}}
	var v struct {
		SessionID    string `json:"sessionId"`
		Capabilities struct {
			BrowserVersion string `json:"browserVersion"`
		} `json:"capabilities"`
	}
	if err := d.do(http.MethodPost, "/session", caps, &v, browserWait); err != nil {
		t.Fatalf("%v\nchromedriver log (end):\n%s", err, d.logTail())
	}
	t.Cleanup(func() {
		if err := d.do(http.MethodDelete, "/session/"+v.SessionID, nil, nil, binWait); err != nil {
			t.Errorf("%v\nchromedriver log (end):\n%s", err, d.logTail())
		}
	})
	t.Logf("Chromium %s", v.Capabilities.BrowserVersion)
	return v.SessionID
}

// waitTitle polls the session's title until done accepts it, for at most
// browserWait, and returns the last title read.
func (d *webDriver) waitTitle(session string, done func(string) bool) (string, error) {
	deadline := time.Now().Add(browserWait)
	var title string
	for {
		err := d.do(http.MethodGet, "/session/"+session+"/title", nil, &title, binWait)
		if err == nil && done(title) {
			return title, nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("no result within %v", browserWait)
			}
			return title, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// do sends a WebDriver command with body as JSON (nil: none) and decodes
// the response's "value" into out (nil: ignored). An error response
// becomes an error naming the command, the WebDriver error code and its
// message.
func (d *webDriver) do(method, path string, body, out any, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("webdriver %s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, d.base+path, rd)
	if err != nil {
		return fmt.Errorf("webdriver %s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return fmt.Errorf("webdriver %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("webdriver %s %s: %w", method, path, err)
	}
	var env struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		return fmt.Errorf("webdriver %s %s: HTTP %d, body %.200q: %w", method, path, resp.StatusCode, raw, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error   string `json:"error"`
			Message string `json:"message"`
		}
		json.Unmarshal(env.Value, &e)
		return fmt.Errorf("webdriver %s %s: HTTP %d: %s: %s", method, path, resp.StatusCode, e.Error, e.Message)
	}
	if out != nil {
		if err := json.Unmarshal(env.Value, out); err != nil {
			return fmt.Errorf("webdriver %s %s: value %.200q: %w", method, path, env.Value, err)
		}
	}
	return nil
}

// logTail returns the end of chromedriver's log, for failure messages.
func (d *webDriver) logTail() string {
	b, err := os.ReadFile(d.logPath)
	if err != nil {
		return err.Error()
	}
	const max = 8 << 10
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}
