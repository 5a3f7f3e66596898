//go:build linux

package splice_test

// End-to-end test harness: an in-process wsplice server, gorilla/websocket
// clients and upstreams (a different WebSocket library from the server's, so
// the tests check the protocol of PROTOCOL.md rather than the
// implementation), and raw frame helpers for what a conforming library will
// not send (unmasked client frames, split handshakes, protocol violations).

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsplice/wsplice/rpc"
	"github.com/wsplice/wsplice/splice"
)

// waitTimeout bounds every single wait in the suite.
const waitTimeout = 10 * time.Second

// controlIndex is the control channel (PROTOCOL.md section 2).
const controlIndex = 0xffff

// TestMain fails the run when goroutines or file descriptors outlive the
// tests: every server, session and upstream a test starts is closed by its
// cleanups, so the counts must come back to where they started.
func TestMain(m *testing.M) {
	// Start the runtime's network poller first: its epoll and event fds
	// live as long as the process and are not a leak.
	if ln, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		ln.Close()
	}
	// Likewise os/signal's watcher, which `go test -fuzz` starts (the
	// fuzzing engine calls signal.Notify) and which never exits.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGWINCH)
	signal.Stop(sig)
	baseG := runtime.NumGoroutine()
	baseFD := countFDs()

	code := m.Run()

	if code == 0 {
		if !settle(10*time.Second, func() bool { return runtime.NumGoroutine() <= baseG }) {
			buf := make([]byte, 4<<20)
			buf = buf[:runtime.Stack(buf, true)]
			fmt.Fprintf(os.Stderr, "goroutine leak: %d goroutines left, %d at start\n%s\n",
				runtime.NumGoroutine(), baseG, buf)
			code = 1
		}
		if !settle(10*time.Second, func() bool { return countFDs() <= baseFD }) {
			fmt.Fprintf(os.Stderr, "fd leak: %d fds open, %d at start:\n%s\n",
				countFDs(), baseFD, describeFDs())
			code = 1
		}
	}
	os.Exit(code)
}

// settle polls cond every 10ms until it holds or d has passed.
func settle(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// countFDs counts this process's open file descriptors.
func countFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

// describeFDs lists the open fds and what they point at, for leak reports.
func describeFDs() string {
	ents, _ := os.ReadDir("/proc/self/fd")
	var b strings.Builder
	for _, e := range ents {
		target, _ := os.Readlink("/proc/self/fd/" + e.Name())
		fmt.Fprintf(&b, "  %s -> %s\n", e.Name(), target)
	}
	return b.String()
}

// --- small assertions -------------------------------------------------------

func equal[T comparable](t testing.TB, got, want T, what string) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
}

func noErr(t testing.TB, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// randBytes returns n random bytes.
func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// marker returns a value unique to one test, to look for in the output.
func marker() string {
	return "mk" + base64.RawURLEncoding.EncodeToString(randBytes(12))
}

// withIndex prefixes payload with the 2-byte big-endian index.
func withIndex(index uint16, payload []byte) []byte {
	b := make([]byte, 2, 2+len(payload))
	binary.BigEndian.PutUint16(b, index)
	return append(b, payload...)
}

// --- the server -------------------------------------------------------------

// testServer is an in-process wsplice on an ephemeral loopback port.
type testServer struct {
	srv   *splice.Server
	addr  string // host:port
	url   string // ws://host:port/
	serve chan error
}

// mustPolicy builds a host policy or fails the test.
func mustPolicy(t testing.TB, allowed []string, allowPrivate bool) *rpc.HostPolicy {
	t.Helper()
	pol, err := rpc.NewHostPolicy(allowed, allowPrivate)
	noErr(t, err, "rpc.NewHostPolicy")
	return pol
}

// testLogger discards the server's logs unless WSPLICE_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("WSPLICE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startServer starts wsplice with cfg; a nil Policy admits loopback
// upstreams, which is what most tests dial. The server is closed by a
// cleanup, which also checks that Serve returned.
func startServer(t testing.TB, cfg splice.Config) *testServer {
	t.Helper()
	return startServing(t, cfg, "ws", (*splice.Server).Serve)
}

// startServing is startServer with the serving method and URL scheme
// given (ServeTLS and wss for the TLS tests). The cleanup checks that
// serve returned ErrServerClosed.
func startServing(t testing.TB, cfg splice.Config, scheme string, serve func(*splice.Server, net.Listener) error) *testServer {
	t.Helper()
	if cfg.Policy == nil {
		cfg.Policy = mustPolicy(t, nil, true)
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger()
	}
	srv, err := splice.New(cfg)
	noErr(t, err, "splice.New")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	noErr(t, err, "listen")
	ts := &testServer{srv: srv, addr: ln.Addr().String(), serve: make(chan error, 1)}
	ts.url = scheme + "://" + ts.addr + "/"
	go func() { ts.serve <- serve(srv, ln) }()
	t.Cleanup(func() {
		start := time.Now()
		srv.Close()
		if d := time.Since(start); d > time.Second {
			t.Logf("srv.Close took %v", d.Round(time.Millisecond))
		}
		ln.Close()
		select {
		case err := <-ts.serve:
			if !errors.Is(err, splice.ErrServerClosed) {
				t.Errorf("serving returned %v, want ErrServerClosed", err)
			}
		case <-time.After(waitTimeout):
			t.Errorf("serving did not return %v after Close", waitTimeout)
		}
	})
	return ts
}

// --- the client session (gorilla) -------------------------------------------

// control is one control-channel message, in either direction.
type control struct {
	ID     int64           `json:"id"`
	Type   string          `json:"type"`
	Method string          `json:"method,omitempty"`
	Params json.RawMessage `json:"params,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *rpcError       `json:"error,omitempty"`
}

type rpcError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Path    string `json:"path"`
}

func (c *control) String() string {
	b, _ := json.Marshal(c)
	return string(b)
}

// event is one message wsplice sent to the client.
type event struct {
	seq   int    // arrival order within the session
	index uint16 // the 2-byte prefix
	data  []byte // payload after the index (data messages)
	ctrl  *control
}

func (e event) String() string {
	if e.ctrl != nil {
		return fmt.Sprintf("#%d control %s", e.seq, e.ctrl)
	}
	d := e.data
	if len(d) > 40 {
		d = d[:40]
	}
	return fmt.Sprintf("#%d data[%d] %q (len %d)", e.seq, e.index, d, len(e.data))
}

// session is a client of wsplice. One goroutine reads everything the
// server sends into a queue; tests take events from it in order, matching
// by predicate, so replies, warns and data can be awaited independently.
// Every message is checked on arrival: it must be binary, carry an index,
// and on the control channel be a valid JSON reply or method call.
type session struct {
	t      testing.TB
	conn   *websocket.Conn
	nextID atomic.Int64
	wmu    sync.Mutex // serialises writes of data frames

	mu      sync.Mutex // guards the fields below
	queue   []event
	seq     int
	changed chan struct{} // closed and replaced on every change
	readErr error         // why the read loop ended
	bad     []string      // protocol violations seen by the read loop
	pings   []string      // ping payloads received
	pongs   []string      // pong payloads received

	done chan struct{} // closed when the read loop has ended
}

// dialSession opens a session to a wsplice at url.
func dialSession(t testing.TB, url string) *session {
	t.Helper()
	return dialSessionWith(t, url, &websocket.Dialer{HandshakeTimeout: waitTimeout})
}

func dialSessionWith(t testing.TB, url string, d *websocket.Dialer) *session {
	t.Helper()
	s, err := dialSessionErr(t, url, d)
	noErr(t, err, "dial wsplice")
	return s
}

func dialSessionErr(t testing.TB, url string, d *websocket.Dialer) (*session, error) {
	conn, resp, err := d.Dial(url, nil)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("%w (HTTP %d)", err, resp.StatusCode)
		}
		return nil, err
	}
	s := &session{t: t, conn: conn, changed: make(chan struct{}), done: make(chan struct{})}
	conn.SetPingHandler(func(p string) error {
		s.mu.Lock()
		s.pings = append(s.pings, p)
		s.signal()
		s.mu.Unlock()
		err := conn.WriteControl(websocket.PongMessage, []byte(p), time.Now().Add(waitTimeout))
		if errors.Is(err, websocket.ErrCloseSent) {
			return nil
		}
		return err
	})
	conn.SetPongHandler(func(p string) error {
		s.mu.Lock()
		s.pongs = append(s.pongs, p)
		s.signal()
		s.mu.Unlock()
		return nil
	})
	go s.readLoop()
	t.Cleanup(func() {
		conn.Close()
		select {
		case <-s.done:
		case <-time.After(waitTimeout):
			t.Errorf("session read loop did not end")
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, b := range s.bad {
			t.Errorf("wsplice broke the protocol toward the client: %s", b)
		}
	})
	return s, nil
}

// signal wakes the waiters. Invariant: s.mu is held.
func (s *session) signal() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *session) readLoop() {
	defer close(s.done)
	for {
		mt, p, err := s.conn.ReadMessage()
		s.mu.Lock()
		if err != nil {
			s.readErr = err
			s.signal()
			s.mu.Unlock()
			return
		}
		s.check(mt, p)
		s.mu.Unlock()
	}
}

// check validates and queues one message. Invariant: s.mu is held.
func (s *session) check(mt int, p []byte) {
	if mt != websocket.BinaryMessage {
		s.bad = append(s.bad, fmt.Sprintf("message of type %d, want binary (%q)", mt, trunc(p)))
	}
	if len(p) < 2 {
		s.bad = append(s.bad, fmt.Sprintf("message of %d bytes has no index", len(p)))
		return
	}
	ev := event{seq: s.seq, index: binary.BigEndian.Uint16(p)}
	s.seq++
	if ev.index == controlIndex {
		var c control
		if err := json.Unmarshal(p[2:], &c); err != nil {
			s.bad = append(s.bad, fmt.Sprintf("control message is not JSON: %v: %q", err, trunc(p[2:])))
			return
		}
		switch {
		case c.Type == "reply":
		case c.Type == "method" && c.ID != 0:
			s.bad = append(s.bad, fmt.Sprintf("wsplice call with id %d, want 0: %s", c.ID, p[2:]))
		case c.Type == "method":
		default:
			s.bad = append(s.bad, fmt.Sprintf("control message of type %q: %s", c.Type, p[2:]))
		}
		ev.ctrl = &c
	} else {
		ev.data = p[2:]
	}
	s.queue = append(s.queue, ev)
	s.signal()
}

func trunc(p []byte) []byte {
	if len(p) > 200 {
		return p[:200]
	}
	return p
}

// writeMessage sends one whole message of type mt.
func (s *session) writeMessage(mt int, p []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.conn.SetWriteDeadline(time.Now().Add(waitTimeout))
	return s.conn.WriteMessage(mt, p)
}

// flood sends messages of size bytes to index from a goroutine, as fast
// as the connection takes them, until a write fails or the returned stop
// is called; stop waits for the goroutine and returns the bytes written.
func (s *session) flood(index uint16, size int) (stop func() (sent int64)) {
	done := make(chan struct{})
	var n atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		msg := withIndex(index, make([]byte, size))
		for {
			select {
			case <-done:
				return
			default:
			}
			if s.writeMessage(websocket.BinaryMessage, msg) != nil {
				return
			}
			n.Add(int64(len(msg)))
		}
	}()
	return func() int64 {
		close(done)
		wg.Wait()
		return n.Load()
	}
}

// send sends payload to an upstream in a binary frame.
func (s *session) send(index uint16, payload []byte) {
	s.t.Helper()
	noErr(s.t, s.writeMessage(websocket.BinaryMessage, withIndex(index, payload)), "send")
}

// sendText sends payload to an upstream in a text frame.
func (s *session) sendText(index uint16, payload []byte) {
	s.t.Helper()
	noErr(s.t, s.writeMessage(websocket.TextMessage, withIndex(index, payload)), "send text")
}

// sendControl sends raw bytes on the control channel.
func (s *session) sendControl(body []byte) {
	s.t.Helper()
	s.send(controlIndex, body)
}

// request sends a request with the given id (any JSON value, or omitted
// when id is nil) without waiting for the reply.
func (s *session) request(id any, method string, params any) {
	s.t.Helper()
	m := map[string]any{"type": "method", "method": method}
	if id != nil {
		m["id"] = id
	}
	if params != nil {
		m["params"] = params
	}
	body, err := json.Marshal(m)
	noErr(s.t, err, "marshal request")
	s.sendControl(body)
}

// callErr sends a request with a fresh id and waits for its reply.
func (s *session) callErr(method string, params any) (*control, error) {
	id := s.nextID.Add(1)
	m := map[string]any{"id": id, "type": "method", "method": method}
	if params != nil {
		m["params"] = params
	}
	body, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	if err := s.writeMessage(websocket.BinaryMessage, withIndex(controlIndex, body)); err != nil {
		return nil, err
	}
	ev, err := s.takeErr(fmt.Sprintf("reply to %s id %d", method, id), isReply(id), waitTimeout)
	if err != nil {
		return nil, err
	}
	return ev.ctrl, nil
}

// call sends a request and returns its reply.
func (s *session) call(method string, params any) *control {
	s.t.Helper()
	r, err := s.callErr(method, params)
	noErr(s.t, err, "call "+method)
	return r
}

type connectResult struct {
	Index       *int    `json:"index"`
	Subprotocol *string `json:"subprotocol"`
}

// connectErr opens an upstream and returns the index and subprotocol.
func (s *session) connectErr(params map[string]any) (uint16, string, error) {
	r, err := s.callErr("connect", params)
	if err != nil {
		return 0, "", err
	}
	if r.Error != nil {
		return 0, "", fmt.Errorf("connect %v: error %+v", params, *r.Error)
	}
	var res connectResult
	if err := json.Unmarshal(r.Result, &res); err != nil {
		return 0, "", fmt.Errorf("connect result %s: %v", r.Result, err)
	}
	if res.Index == nil || res.Subprotocol == nil {
		return 0, "", fmt.Errorf("connect result %s: want both index and subprotocol", r.Result)
	}
	if *res.Index < 0 || *res.Index > 0xfffe {
		return 0, "", fmt.Errorf("connect result %s: index out of range", r.Result)
	}
	return uint16(*res.Index), *res.Subprotocol, nil
}

func (s *session) connectWith(params map[string]any) (uint16, string) {
	s.t.Helper()
	idx, sub, err := s.connectErr(params)
	noErr(s.t, err, "connect")
	return idx, sub
}

// connect opens an upstream at url and returns its index.
func (s *session) connect(url string) uint16 {
	s.t.Helper()
	idx, _ := s.connectWith(map[string]any{"url": url})
	return idx
}

// wantError checks that reply r is an error with code (and path, if given).
func wantError(t testing.TB, r *control, code int, path string) {
	t.Helper()
	if r.Error == nil {
		t.Fatalf("reply %s: want error %d", r, code)
	}
	if r.Error.Code != code {
		t.Fatalf("reply %s: error code %d, want %d", r, r.Error.Code, code)
	}
	if path != "" && r.Error.Path != path {
		t.Fatalf("reply %s: error path %q, want %q", r, r.Error.Path, path)
	}
	if r.Error.Message == "" {
		t.Errorf("reply %s: error without a message", r)
	}
}

func isReply(id int64) func(event) bool {
	return func(e event) bool { return e.ctrl != nil && e.ctrl.Type == "reply" && e.ctrl.ID == id }
}

func isMethod(method string) func(event) bool {
	return func(e event) bool { return e.ctrl != nil && e.ctrl.Type == "method" && e.ctrl.Method == method }
}

func isData(e event) bool { return e.ctrl == nil }

func isDataFrom(index uint16) func(event) bool {
	return func(e event) bool { return e.ctrl == nil && e.index == index }
}

// takeErr removes and returns the first queued event matching pred,
// waiting up to d for it.
func (s *session) takeErr(what string, pred func(event) bool, d time.Duration) (event, error) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		s.mu.Lock()
		for i, e := range s.queue {
			if pred(e) {
				s.queue = append(s.queue[:i:i], s.queue[i+1:]...)
				s.mu.Unlock()
				return e, nil
			}
		}
		ch, rerr := s.changed, s.readErr
		s.mu.Unlock()
		if rerr != nil {
			return event{}, fmt.Errorf("waiting for %s: connection ended: %v; pending: %s", what, rerr, s.pending())
		}
		select {
		case <-ch:
		case <-timer.C:
			return event{}, fmt.Errorf("timed out after %v waiting for %s; pending: %s", d, what, s.pending())
		}
	}
}

func (s *session) take(what string, pred func(event) bool) event {
	s.t.Helper()
	e, err := s.takeErr(what, pred, waitTimeout)
	noErr(s.t, err, "session")
	return e
}

// pending describes the queued events, for failure messages.
func (s *session) pending() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) == 0 {
		return "none"
	}
	var b strings.Builder
	for i, e := range s.queue {
		if i == 10 {
			fmt.Fprintf(&b, " ... (%d more)", len(s.queue)-10)
			break
		}
		fmt.Fprintf(&b, " [%s]", e)
	}
	return b.String()
}

// readData returns the next data message, whatever its index.
func (s *session) readData() (uint16, []byte) {
	s.t.Helper()
	e := s.take("data message", isData)
	return e.index, e.data
}

// readDataFrom returns the next data message of index.
func (s *session) readDataFrom(index uint16) []byte {
	s.t.Helper()
	return s.take(fmt.Sprintf("data from index %d", index), isDataFrom(index)).data
}

// waitMethod returns the next call of method from wsplice.
func (s *session) waitMethod(method string) *control {
	s.t.Helper()
	return s.take(method, isMethod(method)).ctrl
}

// warnParams is the params of warn; disconnectParams of onSocketDisconnect.
type warnParams struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

type disconnectParams struct {
	Index   *int   `json:"index"`
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// waitWarn returns the next warn's params.
func (s *session) waitWarn() warnParams {
	s.t.Helper()
	c := s.waitMethod("warn")
	var p warnParams
	noErr(s.t, json.Unmarshal(c.Params, &p), "warn params "+string(c.Params))
	return p
}

// waitDisconnect returns the next onSocketDisconnect's params.
func (s *session) waitDisconnect() disconnectParams {
	s.t.Helper()
	c := s.waitMethod("onSocketDisconnect")
	var p disconnectParams
	noErr(s.t, json.Unmarshal(c.Params, &p), "onSocketDisconnect params "+string(c.Params))
	if p.Index == nil {
		s.t.Fatalf("onSocketDisconnect without index: %s", c.Params)
	}
	return p
}

// assertNone fails if an event matching pred is queued or arrives within d.
// Absence can only be checked over a bounded window; callers first make sure
// that whatever could have produced the event has happened.
func (s *session) assertNone(what string, pred func(event) bool, d time.Duration) {
	s.t.Helper()
	if e, err := s.takeErr(what, pred, d); err == nil {
		s.t.Fatalf("unexpected %s: %s", what, e)
	}
}

// barrier makes a control round trip, so that everything wsplice did for
// earlier messages of this session has been sent before it returns.
func (s *session) barrier() {
	s.t.Helper()
	r := s.call("wsplice-test-barrier", map[string]any{})
	wantError(s.t, r, 4003, "")
}

// closeFrame returns the close code and reason wsplice ended the session
// with, waiting for the read loop to end.
func (s *session) closeFrame() (int, string) {
	s.t.Helper()
	select {
	case <-s.done:
	case <-time.After(waitTimeout):
		s.t.Fatalf("session not closed after %v; pending: %s", waitTimeout, s.pending())
	}
	var ce *websocket.CloseError
	if !errors.As(s.readErr, &ce) {
		s.t.Fatalf("session ended without a close frame: %v", s.readErr)
	}
	return ce.Code, ce.Text
}

// waitPong waits for a pong with payload.
func (s *session) waitPong(payload string) {
	s.t.Helper()
	if !s.waitList(&s.pongs, payload) {
		s.t.Fatalf("no pong %q from wsplice within %v (got %q)", payload, waitTimeout, s.pongsCopy())
	}
}

func (s *session) pongsCopy() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.pongs...)
}

// sawPing reports whether a ping with payload has reached the client.
func (s *session) sawPing(payload string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.pings {
		if p == payload {
			return true
		}
	}
	return false
}

func (s *session) waitList(list *[]string, want string) bool {
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	for {
		s.mu.Lock()
		for _, p := range *list {
			if p == want {
				s.mu.Unlock()
				return true
			}
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			return false
		}
	}
}

// --- upstreams (gorilla) ----------------------------------------------------

// upstream is a WebSocket server that wsplice dials.
type upstream struct {
	url   string
	addr  string
	conns chan *upConn
}

// upConn is one upstream connection accepted from wsplice.
type upConn struct {
	c    *websocket.Conn
	req  *http.Request
	msgs chan upMsg // what record read, in order
	stop chan struct{}

	mu    sync.Mutex
	pings []string
	pongs []string

	done chan struct{} // closed when the handler has returned
	err  error         // why record stopped; valid after done
}

type upMsg struct {
	typ  int
	data []byte
}

// startUpstream starts an upstream that runs handler on every connection
// (nil: record). The connection is closed when handler returns.
func startUpstream(t testing.TB, handler func(*upConn)) *upstream {
	t.Helper()
	return startUpstreamWith(t, websocket.Upgrader{}, handler)
}

func startUpstreamWith(t testing.TB, up websocket.Upgrader, handler func(*upConn)) *upstream {
	t.Helper()
	if handler == nil {
		handler = (*upConn).record
	}
	up.CheckOrigin = func(*http.Request) bool { return true }
	if up.HandshakeTimeout == 0 {
		up.HandshakeTimeout = waitTimeout
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	noErr(t, err, "upstream listen")
	u := &upstream{addr: ln.Addr().String(), conns: make(chan *upConn, 1024)}
	u.url = "ws://" + u.addr + "/"

	stop := make(chan struct{})
	var (
		mu   sync.Mutex
		live = map[*websocket.Conn]bool{}
		wg   sync.WaitGroup
	)
	srv := &http.Server{
		ReadHeaderTimeout: waitTimeout,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, err := up.Upgrade(w, r, nil)
			if err != nil {
				return
			}
			mu.Lock()
			select {
			case <-stop:
				mu.Unlock()
				c.Close()
				return
			default:
			}
			live[c] = true
			wg.Add(1)
			mu.Unlock()
			defer wg.Done()

			uc := &upConn{c: c, req: r, msgs: make(chan upMsg, 4096), stop: stop, done: make(chan struct{})}
			c.SetPingHandler(func(p string) error {
				uc.mu.Lock()
				uc.pings = append(uc.pings, p)
				uc.mu.Unlock()
				err := c.WriteControl(websocket.PongMessage, []byte(p), time.Now().Add(waitTimeout))
				if errors.Is(err, websocket.ErrCloseSent) {
					return nil
				}
				return err
			})
			c.SetPongHandler(func(p string) error {
				uc.mu.Lock()
				uc.pongs = append(uc.pongs, p)
				uc.mu.Unlock()
				return nil
			})
			select {
			case u.conns <- uc:
			default:
			}
			handler(uc)
			c.Close()
			mu.Lock()
			delete(live, c)
			mu.Unlock()
			close(uc.done)
		}),
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		mu.Lock()
		close(stop)
		for c := range live {
			c.Close()
		}
		mu.Unlock()
		srv.Close()
		ch := make(chan struct{})
		go func() { wg.Wait(); close(ch) }()
		select {
		case <-ch:
		case <-time.After(waitTimeout):
			t.Errorf("upstream handlers did not return")
		}
	})
	return u
}

// accept returns the next connection wsplice made to u.
func (u *upstream) accept(t testing.TB) *upConn {
	t.Helper()
	select {
	case uc := <-u.conns:
		return uc
	case <-time.After(waitTimeout):
		t.Fatalf("no connection to upstream %s within %v", u.url, waitTimeout)
		return nil
	}
}

// record reads messages into uc.msgs until the connection ends.
func (uc *upConn) record() {
	for {
		mt, p, err := uc.c.ReadMessage()
		if err != nil {
			uc.err = err
			return
		}
		select {
		case uc.msgs <- upMsg{mt, p}:
		case <-uc.stop:
			uc.err = errors.New("test over")
			return
		}
	}
}

// echo sends every message back as it came.
func echo(uc *upConn) {
	for {
		mt, p, err := uc.c.ReadMessage()
		if err != nil {
			uc.err = err
			return
		}
		if err := uc.c.WriteMessage(mt, p); err != nil {
			uc.err = err
			return
		}
	}
}

// read returns the next message the upstream received.
func (uc *upConn) read(t testing.TB) upMsg {
	t.Helper()
	select {
	case m := <-uc.msgs:
		return m
	case <-uc.done:
		select {
		case m := <-uc.msgs:
			return m
		default:
		}
		t.Fatalf("upstream connection ended (%v) while waiting for a message", uc.err)
	case <-time.After(waitTimeout):
		t.Fatalf("upstream: no message within %v", waitTimeout)
	}
	return upMsg{}
}

// write sends a message from the upstream to wsplice.
func (uc *upConn) write(t testing.TB, mt int, p []byte) {
	t.Helper()
	uc.c.SetWriteDeadline(time.Now().Add(waitTimeout))
	noErr(t, uc.c.WriteMessage(mt, p), "upstream write")
}

// closeCode waits for the connection to end and returns the close code and
// reason wsplice sent (-1 when it ended without a close frame).
func (uc *upConn) closeCode(t testing.TB) (int, string) {
	t.Helper()
	select {
	case <-uc.done:
	case <-time.After(waitTimeout):
		t.Fatalf("upstream connection still open after %v", waitTimeout)
	}
	var ce *websocket.CloseError
	if errors.As(uc.err, &ce) {
		return ce.Code, ce.Text
	}
	t.Logf("upstream connection ended without a close frame: %v", uc.err)
	return -1, ""
}

func (uc *upConn) sawPing(p string) bool {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	for _, x := range uc.pings {
		if x == p {
			return true
		}
	}
	return false
}

func (uc *upConn) sawPong(p string) bool {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	for _, x := range uc.pongs {
		if x == p {
			return true
		}
	}
	return false
}

// --- raw frames -------------------------------------------------------------

// RFC 6455 section 5.2 opcodes.
const (
	opCont   = 0x0
	opText   = 0x1
	opBinary = 0x2
	opClose  = 0x8
	opPing   = 0x9
	opPong   = 0xa
)

// frame is one RFC 6455 frame, for tests that write or check raw bytes.
type frame struct {
	fin     bool
	rsv     byte // the three RSV bits, RSV1 highest
	op      byte
	masked  bool
	payload []byte
}

func (f frame) String() string {
	return fmt.Sprintf("frame{fin:%v rsv:%d op:%d masked:%v len:%d %q}", f.fin, f.rsv, f.op, f.masked, len(f.payload), trunc(f.payload))
}

// appendFrame encodes f; a masked frame gets a random key (RFC 6455 5.3).
func appendFrame(b []byte, f frame) []byte {
	b0 := f.op&0xf | (f.rsv&7)<<4
	if f.fin {
		b0 |= 0x80
	}
	b = append(b, b0)
	var m byte
	if f.masked {
		m = 0x80
	}
	switch n := len(f.payload); {
	case n < 126:
		b = append(b, m|byte(n))
	case n <= 0xffff:
		b = append(b, m|126, byte(n>>8), byte(n))
	default:
		b = append(b, m|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if !f.masked {
		return append(b, f.payload...)
	}
	key := randBytes(4)
	b = append(b, key...)
	for i, c := range f.payload {
		b = append(b, c^key[i&3])
	}
	return b
}

// readFrame decodes one frame, unmasking its payload.
func readFrame(r io.Reader) (frame, error) {
	var h [14]byte
	if _, err := io.ReadFull(r, h[:2]); err != nil {
		return frame{}, err
	}
	f := frame{fin: h[0]&0x80 != 0, rsv: h[0] >> 4 & 7, op: h[0] & 0xf, masked: h[1]&0x80 != 0}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		if _, err := io.ReadFull(r, h[:2]); err != nil {
			return frame{}, err
		}
		n = uint64(binary.BigEndian.Uint16(h[:2]))
	case 127:
		if _, err := io.ReadFull(r, h[:8]); err != nil {
			return frame{}, err
		}
		n = binary.BigEndian.Uint64(h[:8])
	}
	if n > 128<<20 {
		return frame{}, fmt.Errorf("frame of %d bytes", n)
	}
	var key [4]byte
	if f.masked {
		if _, err := io.ReadFull(r, key[:]); err != nil {
			return frame{}, err
		}
	}
	f.payload = make([]byte, n)
	if _, err := io.ReadFull(r, f.payload); err != nil {
		return frame{}, err
	}
	if f.masked {
		for i := range f.payload {
			f.payload[i] ^= key[i&3]
		}
	}
	return f, nil
}

// closePayload is the body of a close frame (RFC 6455 5.5.1).
func closePayload(code int, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(code)), reason...)
}

func parseClose(p []byte) (int, string) {
	if len(p) < 2 {
		return 1005, ""
	}
	return int(binary.BigEndian.Uint16(p)), string(p[2:])
}

// wsGUID is the RFC 6455 section 1.3 key suffix.
const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + wsGUID))
	return base64.StdEncoding.EncodeToString(h[:])
}

// upgradeRequest is a valid client handshake (RFC 6455 4.1) plus extra
// header lines.
func upgradeRequest(host string, extra ...string) (req []byte, key string) {
	key = base64.StdEncoding.EncodeToString(randBytes(16))
	var b bytes.Buffer
	fmt.Fprintf(&b, "GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n", host)
	fmt.Fprintf(&b, "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n", key)
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	return b.Bytes(), key
}

// rawClient is a client that writes and reads frames byte by byte.
type rawClient struct {
	t    testing.TB
	conn net.Conn
	br   *bufio.Reader
}

// rawConn opens a TCP connection to addr, closed by a cleanup.
func rawConn(t testing.TB, addr string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, waitTimeout)
	noErr(t, err, "dial")
	t.Cleanup(func() { conn.Close() })
	return conn
}

// dialRaw opens a session with a raw handshake.
func dialRaw(t testing.TB, addr string) *rawClient {
	t.Helper()
	c := &rawClient{t: t, conn: rawConn(t, addr)}
	c.br = bufio.NewReader(c.conn)
	req, key := upgradeRequest(addr)
	c.writeBytes(req)
	c.readUpgrade(key)
	return c
}

// readUpgrade reads the server's handshake response and checks it.
func (c *rawClient) readUpgrade(key string) {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(waitTimeout))
	resp, err := http.ReadResponse(c.br, nil)
	noErr(c.t, err, "read handshake response")
	if resp.StatusCode != http.StatusSwitchingProtocols {
		c.t.Fatalf("handshake: HTTP %d, want 101", resp.StatusCode)
	}
	equal(c.t, resp.Header.Get("Sec-WebSocket-Accept"), acceptKey(key), "Sec-WebSocket-Accept")
	equal(c.t, strings.ToLower(resp.Header.Get("Upgrade")), "websocket", "Upgrade header")
}

func (c *rawClient) writeBytes(b []byte) {
	c.t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(waitTimeout))
	_, err := c.conn.Write(b)
	noErr(c.t, err, "raw write")
}

// write sends frames in one write.
func (c *rawClient) write(fs ...frame) {
	c.t.Helper()
	var b []byte
	for _, f := range fs {
		b = appendFrame(b, f)
	}
	c.writeBytes(b)
}

// next reads one frame; pings from wsplice's keepalive are answered and
// skipped.
func (c *rawClient) next() frame {
	c.t.Helper()
	for {
		c.conn.SetReadDeadline(time.Now().Add(waitTimeout))
		f, err := readFrame(c.br)
		noErr(c.t, err, "raw read frame")
		if f.masked {
			c.t.Errorf("wsplice sent a masked frame to the client: %s", f)
		}
		if f.op == opPing {
			c.write(frame{fin: true, op: opPong, masked: true, payload: f.payload})
			continue
		}
		return f
	}
}

// readControl reads frames until a control-channel message, which must be
// a binary frame, and decodes it.
func (c *rawClient) readControl() *control {
	c.t.Helper()
	for {
		f := c.next()
		if f.op != opBinary || !f.fin || len(f.payload) < 2 {
			c.t.Fatalf("raw client: want an unfragmented binary message, got %s", f)
		}
		if binary.BigEndian.Uint16(f.payload) != controlIndex {
			continue
		}
		var m control
		noErr(c.t, json.Unmarshal(f.payload[2:], &m), "control message "+string(f.payload[2:]))
		return &m
	}
}

// expectClose reads until a close frame, checks its code, answers it and
// checks that wsplice then closes the TCP connection.
func (c *rawClient) expectClose(code int) {
	c.t.Helper()
	for {
		c.conn.SetReadDeadline(time.Now().Add(waitTimeout))
		f, err := readFrame(c.br)
		if err != nil {
			c.t.Fatalf("connection ended (%v) without a close frame, want close %d", err, code)
		}
		if f.op != opClose {
			continue
		}
		got, reason := parseClose(f.payload)
		if got != code {
			c.t.Fatalf("close code %d (%q), want %d", got, reason, code)
		}
		break
	}
	c.conn.SetWriteDeadline(time.Now().Add(waitTimeout))
	c.conn.Write(appendFrame(nil, frame{fin: true, op: opClose, masked: true, payload: closePayload(code, "")}))
	expectEOF(c.t, c.conn, c.br)
}

// expectEOF checks that the peer closes the connection, discarding bytes.
func expectEOF(t testing.TB, conn net.Conn, r io.Reader) {
	t.Helper()
	if timeToEOF(conn, r, waitTimeout) < 0 {
		t.Fatalf("connection still open after %v", waitTimeout)
	}
}

// timeToEOF reads r (conn, or a reader over it) until it ends, discarding
// the bytes, and returns how long that took; -1 when conn was still open
// after d.
func timeToEOF(conn net.Conn, r io.Reader, d time.Duration) time.Duration {
	start := time.Now()
	conn.SetReadDeadline(start.Add(d))
	_, err := io.Copy(io.Discard, r)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return -1
	}
	return time.Since(start)
}

// --- raw upstreams ----------------------------------------------------------

// rawUpstream is an upstream that speaks bytes: handler gets each accepted
// connection with a reader over it, and does the handshake itself (see
// rawAccept). Connections are closed when handler returns.
func startRawUpstream(t testing.TB, handler func(conn net.Conn, br *bufio.Reader)) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	noErr(t, err, "raw upstream listen")
	u := &upstream{addr: ln.Addr().String()}
	u.url = "ws://" + u.addr + "/"
	serveRaw(t, ln, 2*waitTimeout, nil, handler)
	return u
}

// serveRaw accepts connections on ln until the test ends and runs handler
// on each, with a reader over it and a deadline d from the accept; the
// connection is closed when handler returns. live, if not nil, counts the
// handlers running. The cleanup closes ln and every open connection, then
// waits for the handlers (an error if they take over waitTimeout).
func serveRaw(t testing.TB, ln net.Listener, d time.Duration, live *atomic.Int64, handler func(net.Conn, *bufio.Reader)) {
	var (
		mu     sync.Mutex
		conns  = map[net.Conn]bool{} // open connections; guarded by mu
		closed bool                  // the cleanup has begun; guarded by mu
		wg     sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if closed {
				mu.Unlock()
				conn.Close()
				return
			}
			conns[conn] = true
			wg.Add(1)
			if live != nil {
				live.Add(1)
			}
			mu.Unlock()
			go func() {
				defer func() {
					conn.Close()
					mu.Lock()
					delete(conns, conn)
					mu.Unlock()
					if live != nil {
						live.Add(-1)
					}
					wg.Done()
				}()
				conn.SetDeadline(time.Now().Add(d))
				handler(conn, bufio.NewReader(conn))
			}()
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		closed = true
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		ln.Close()
		ch := make(chan struct{})
		go func() { wg.Wait(); close(ch) }()
		select {
		case <-ch:
		case <-time.After(waitTimeout):
			t.Errorf("raw upstream handlers did not return")
		}
	})
}

// rawAccept reads wsplice's handshake request, checks that it is a valid
// RFC 6455 4.1 client handshake, and writes the 101 response followed by
// extra in the same write.
func rawAccept(conn net.Conn, br *bufio.Reader, extra []byte) (*http.Request, error) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, fmt.Errorf("read handshake request: %w", err)
	}
	key := req.Header.Get("Sec-WebSocket-Key")
	if raw, err := base64.StdEncoding.DecodeString(key); err != nil || len(raw) != 16 {
		return req, fmt.Errorf("Sec-WebSocket-Key %q is not 16 bytes in base64", key)
	}
	switch {
	case req.Method != http.MethodGet:
		return req, fmt.Errorf("handshake method %s", req.Method)
	case !strings.EqualFold(req.Header.Get("Upgrade"), "websocket"):
		return req, fmt.Errorf("Upgrade header %q", req.Header.Get("Upgrade"))
	case !strings.Contains(strings.ToLower(req.Header.Get("Connection")), "upgrade"):
		return req, fmt.Errorf("Connection header %q", req.Header.Get("Connection"))
	case req.Header.Get("Sec-WebSocket-Version") != "13":
		return req, fmt.Errorf("Sec-WebSocket-Version %q", req.Header.Get("Sec-WebSocket-Version"))
	}
	resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: " + acceptKey(key) + "\r\n\r\n"
	_, err = conn.Write(append([]byte(resp), extra...))
	return req, err
}
