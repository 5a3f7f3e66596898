//go:build linux

package splice_test

// The soak: a mixed load for a chosen duration (make soak SOAK=5m; make
// test runs 30 seconds of it without the race detector). It skips itself
// unless -soak is given.

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsplice/wsplice/splice"
)

var soakFor = flag.Duration("soak", 0, "run TestSoak for this long: mixed load with checksums and resource sampling (0: skip)")

// Soak parameters.
const (
	soakSessions     = 40
	soakMaxHealthy   = 4       // echo and slow-echo upstreams per session
	soakMaxBatch     = 8       // messages sent per round before collecting
	soakMaxPayload   = 1 << 20 // message sizes are 1 B .. 1 MiB, log-uniform
	soakWriteTimeout = 2 * time.Second
	soakSampleEvery  = 5 * time.Second
	soakCollectLimit = 60 * time.Second // a round's echoes must be back by then
)

// TestSoak runs soakSessions sessions, each doing rounds of a random mix:
// open echo and slow-reading echo upstreams, send batches of random
// messages (1 B to 1 MiB, text or binary, fragmented at random sizes by
// the client library's write buffer) and check every echo's SHA-256 and
// order per index; open upstreams that die mid-frame (FIN or RST, in a
// first or a continuation frame) and check the zero-padded message and the
// onSocketDisconnect 1006; open upstreams that stop reading and flood them
// until --write-timeout drops them; terminate upstreams; close sessions
// (close frame, FIN, RST, some with data in flight) and open new ones.
//
// Every 5 seconds all sessions pause at a round boundary with their
// upstreams terminated, the process settles, and fds, goroutines, heap and
// RSS (after debug.FreeOSMemory) are sampled. At the end: zero loss on the
// healthy channels (every message sent to an echo upstream came back
// intact and in order, except those deliberately abandoned with their
// session), no error of any kind, and no growth between the first and the
// last window (a quarter of the run, at most a minute): fds +10,
// goroutines +20, RSS +32 MiB.
func TestSoak(t *testing.T) {
	if *soakFor <= 0 {
		t.Skip("soak: run with -soak=DURATION (make soak)")
	}
	d := *soakFor
	watchdog := time.AfterFunc(d+3*time.Minute, func() {
		buf := make([]byte, 8<<20)
		buf = buf[:runtime.Stack(buf, true)]
		fmt.Fprintf(os.Stderr, "TestSoak still running %v after its %v: stuck\n%s\n", 3*time.Minute, d, buf)
		os.Exit(2)
	})
	defer watchdog.Stop()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("WSPLICE_TEST_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("soak for %v, %d sessions, seed %d (set WSPLICE_TEST_SEED to repeat the choices)", d, soakSessions, seed)

	env := &soakEnv{t: t, st: newSoakStats(), gate: make(chan struct{})}
	env.ts = startServer(t, splice.Config{WriteTimeout: soakWriteTimeout})
	env.echoURL = env.startGorilla(t, func(c *websocket.Conn) { soakEcho(c, nil) })
	env.slowURL = env.startGorilla(t, func(c *websocket.Conn) {
		rng := rand.New(rand.NewPCG(rand.Uint64(), 2))
		soakEcho(c, rng)
	})
	env.dyingURL = env.startRaw(t, 0, env.dying)
	env.stuckURL = env.startRaw(t, 8<<10, env.stuck)

	start := time.Now()
	env.deadline = start.Add(d)
	var wg sync.WaitGroup
	workers := make([]*soakWorker, soakSessions)
	for i := range workers {
		w := &soakWorker{env: env, id: i, rng: rand.New(rand.NewPCG(seed, uint64(i))), healthy: map[uint16]*soakChan{}}
		var key [32]byte
		binary.LittleEndian.PutUint64(key[:], seed+uint64(i))
		w.src = rand.NewChaCha8(key)
		workers[i] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run()
		}()
	}

	var samples []soakSample
	for next := start.Add(soakSampleEvery); next.Before(env.deadline); next = next.Add(soakSampleEvery) {
		time.Sleep(time.Until(next))
		if s, ok := env.quiesceAndSample(start); ok {
			samples = append(samples, s)
		}
	}
	wg.Wait()
	if s, ok := env.quiesceAndSample(start); ok {
		samples = append(samples, s)
	}
	for _, w := range workers {
		w.closeSession(true)
	}

	// Report.
	st := env.st
	srv := env.ts.srv.Stats()
	t.Logf("echoed %d messages, %d MiB, intact and in order; %d abandoned with their session",
		st.echoed.Load(), st.echoedBytes.Load()>>20, st.abandoned.Load())
	t.Logf("sessions %d (closed: %d by close frame, %d by FIN/RST, %d with data in flight); upstreams: %d echo, %d slow, %d terminated",
		st.sessions.Load(), st.graceful.Load(), st.abrupt.Load(), st.inFlight.Load(),
		st.echoUps.Load(), st.slowUps.Load(), st.terminated.Load())
	t.Logf("dying upstreams %d (%d padded messages checked); stalled upstreams dropped %d (%d MiB flooded)",
		st.dying.Load(), st.padded.Load(), st.stuckDrops.Load(), st.flooded.Load()>>20)
	t.Logf("server: %d sessions and %d upstreams opened, %d frames/%d MiB in, %d frames/%d MiB out, %d backpressure pauses, closes %v",
		srv.SessionsOpened, srv.UpstreamsOpened, srv.FramesIn, srv.BytesIn>>20, srv.FramesOut, srv.BytesOut>>20, srv.BackpressurePauses, srv.Closes)
	for _, s := range samples {
		t.Logf("  t=%-6v fds %4d  goroutines %4d  heap %4d MiB  rss %4d MiB", s.at.Round(time.Second), s.fds, s.goroutines, s.heap>>20, s.rss>>20)
	}
	if errs := st.summary(); errs != "" {
		t.Errorf("errors by kind:\n%s", errs)
	}
	if st.echoed.Load() == 0 {
		t.Errorf("no message was echoed")
	}

	// Growth between the first and the last window.
	if len(samples) < 2 {
		t.Logf("fewer than two samples: no growth check")
		return
	}
	window := min(time.Minute, d/4)
	var first, last soakSample
	for _, s := range samples {
		if s.at <= window || s == samples[0] {
			first = first.max(s)
		}
		if s.at >= d-window || s == samples[len(samples)-1] {
			last = last.max(s)
		}
	}
	t.Logf("first window (<= %v) peak: fds %d, goroutines %d, heap %d MiB, rss %d MiB; last window (>= %v) peak: fds %d, goroutines %d, heap %d MiB, rss %d MiB",
		window, first.fds, first.goroutines, first.heap>>20, first.rss>>20, d-window, last.fds, last.goroutines, last.heap>>20, last.rss>>20)
	if last.fds > first.fds+10 {
		t.Errorf("fds grew from %d to %d", first.fds, last.fds)
	}
	if last.goroutines > first.goroutines+20 {
		t.Errorf("goroutines grew from %d to %d", first.goroutines, last.goroutines)
	}
	if !raceEnabled && last.rss > first.rss+32<<20 {
		t.Errorf("RSS grew from %d MiB to %d MiB", first.rss>>20, last.rss>>20)
	}
	if last.heap > first.heap+32<<20 {
		t.Errorf("heap grew from %d MiB to %d MiB", first.heap>>20, last.heap>>20)
	}
}

// --- environment ---------------------------------------------------------------

type soakSample struct {
	at              time.Duration
	fds, goroutines int
	heap            uint64
	rss             int64
}

func (a soakSample) max(b soakSample) soakSample {
	return soakSample{at: max(a.at, b.at), fds: max(a.fds, b.fds), goroutines: max(a.goroutines, b.goroutines),
		heap: max(a.heap, b.heap), rss: max(a.rss, b.rss)}
}

type soakEnv struct {
	t                                    *testing.T
	ts                                   *testServer
	st                                   *soakStats
	echoURL, slowURL, dyingURL, stuckURL string
	deadline                             time.Time

	live atomic.Int64 // upstream handlers running on the test side

	// Quiescing: pause asks the workers to stop at a round boundary;
	// each parks on gate, counted in parked.
	pause  atomic.Bool
	gateMu sync.Mutex
	gate   chan struct{}
	parked atomic.Int32

	stuckRelease sync.Map // id -> chan struct{}: a stalled upstream may read again
	nextStuck    atomic.Int64
}

// park waits, counted in parked, until the sampler lets the workers go.
func (env *soakEnv) park() {
	env.gateMu.Lock()
	gate := env.gate
	env.gateMu.Unlock()
	env.parked.Add(1)
	<-gate
	env.parked.Add(-1)
}

// quiesceAndSample pauses every worker at a round boundary (sessions open,
// no upstream, nothing in flight), waits for the process to settle, and
// samples it.
func (env *soakEnv) quiesceAndSample(start time.Time) (soakSample, bool) {
	env.gateMu.Lock()
	env.gate = make(chan struct{})
	gate := env.gate
	env.gateMu.Unlock()
	env.pause.Store(true)
	defer func() {
		env.pause.Store(false)
		close(gate)
	}()
	if !settle(soakCollectLimit+30*time.Second, func() bool { return env.parked.Load() == soakSessions }) {
		env.st.fail("quiesce", "only %d of %d workers reached a round boundary", env.parked.Load(), soakSessions)
		return soakSample{}, false
	}
	if !settle(15*time.Second, func() bool {
		st := env.ts.srv.Stats()
		return env.live.Load() == 0 && st.Upstreams == 0 && st.Sessions == soakSessions
	}) {
		st := env.ts.srv.Stats()
		env.st.fail("quiesce", "%d upstream handlers, %d server upstreams and %d sessions at a quiet point, want 0, 0 and %d",
			env.live.Load(), st.Upstreams, st.Sessions, soakSessions)
		return soakSample{}, false
	}
	fds := steady(countFDs)
	g := steady(runtime.NumGoroutine)
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return soakSample{at: time.Since(start), fds: fds, goroutines: g, heap: ms.HeapInuse, rss: vmRSS()}, true
}

// startGorilla serves WebSocket upstreams that run handler, counted in
// env.live.
func (env *soakEnv) startGorilla(t *testing.T, handler func(*websocket.Conn)) string {
	t.Helper()
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }, HandshakeTimeout: waitTimeout}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	noErr(t, err, "listen")
	var (
		mu   sync.Mutex
		live = map[*websocket.Conn]bool{}
		wg   sync.WaitGroup
		done bool
	)
	srv := &http.Server{ReadHeaderTimeout: waitTimeout, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		mu.Lock()
		if done {
			mu.Unlock()
			c.Close()
			return
		}
		live[c] = true
		wg.Add(1)
		env.live.Add(1)
		mu.Unlock()
		defer func() {
			c.Close()
			mu.Lock()
			delete(live, c)
			mu.Unlock()
			env.live.Add(-1)
			wg.Done()
		}()
		handler(c)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() {
		mu.Lock()
		done = true
		for c := range live {
			c.Close()
		}
		mu.Unlock()
		srv.Close()
		wg.Wait()
	})
	return "ws://" + ln.Addr().String() + "/"
}

// startRaw serves raw upstreams; rcvbuf, when not 0, is the listener's
// SO_RCVBUF (inherited by accepted sockets), so a peer that stops reading
// stalls wsplice after little data.
func (env *soakEnv) startRaw(t *testing.T, rcvbuf int, handler func(net.Conn, *bufio.Reader)) string {
	t.Helper()
	lc := net.ListenConfig{}
	if rcvbuf > 0 {
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			return c.Control(func(fd uintptr) {
				syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
			})
		}
	}
	ln, err := lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
	noErr(t, err, "listen")
	serveRaw(t, ln, 2*soakCollectLimit, &env.live, handler)
	return "ws://" + ln.Addr().String() + "/"
}

// soakEcho echoes every message; with rng it is slow: a few milliseconds
// per message and now and then a pause (shorter than --write-timeout).
func soakEcho(c *websocket.Conn, rng *rand.Rand) {
	for {
		mt, p, err := c.ReadMessage()
		if err != nil {
			return
		}
		if rng != nil {
			time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
			if rng.IntN(50) == 0 {
				time.Sleep(time.Duration(200+rng.IntN(400)) * time.Millisecond)
			}
		}
		c.SetWriteDeadline(time.Now().Add(soakCollectLimit))
		if err := c.WriteMessage(mt, p); err != nil {
			return
		}
	}
}

// dying is an upstream that sends part of a message and dies: inside a
// frame header, inside the payload of a single frame, or inside the
// continuation of a fragmented message; by FIN or RST. The payload starts
// with its length (4 bytes, big-endian) and how it dies (1: FIN, 2: RST),
// then pattern bytes.
func (env *soakEnv) dying(conn net.Conn, br *bufio.Reader) {
	if _, err := rawAccept(conn, br, nil); err != nil {
		return
	}
	time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
	n := 16 + rand.IntN(256<<10)
	rst := rand.IntN(2) == 0
	payload := soakDyingPayload(n, rst)
	var b []byte
	switch rand.IntN(6) {
	case 0: // inside the header (possibly before it)
		f := frame{fin: true, op: opBinary, payload: payload}
		b = framePrefix(f, rand.IntN(frameHeaderLen(f)))
	case 1, 2: // a fragmented message, inside the continuation's payload
		k := 5 + rand.IntN(n-8)
		first := appendFrame(nil, frame{fin: false, op: opBinary, payload: payload[:k]})
		cont := frame{fin: rand.IntN(2) == 0, op: opCont, payload: payload[k:]}
		b = joinBytes(first, framePrefix(cont, frameHeaderLen(cont)+1+rand.IntN(n-k-1)))
	default: // inside the payload of a single frame
		f := frame{fin: true, op: opBinary, payload: payload}
		b = framePrefix(f, frameHeaderLen(f)+5+rand.IntN(n-5))
	}
	conn.Write(b)
	time.Sleep(time.Duration(rand.IntN(10)) * time.Millisecond)
	if rst {
		resetClose(conn)
	}
}

func soakDyingPayload(n int, rst bool) []byte {
	p := patternBytes(n, 0)
	binary.BigEndian.PutUint32(p, uint32(n))
	p[4] = 1
	if rst {
		p[4] = 2
	}
	return p
}

// stuck is an upstream that reads nothing until its worker has seen it
// dropped, then drains what is left and closes.
func (env *soakEnv) stuck(conn net.Conn, br *bufio.Reader) {
	req, err := rawAccept(conn, br, nil)
	if err != nil {
		return
	}
	if ch, ok := env.stuckRelease.Load(req.URL.Query().Get("id")); ok {
		select {
		case <-ch.(chan struct{}):
		case <-time.After(soakCollectLimit):
		}
	}
	conn.SetReadDeadline(time.Now().Add(waitTimeout))
	io.Copy(io.Discard, br)
}

// --- statistics ------------------------------------------------------------------

type soakStats struct {
	mu     sync.Mutex
	errs   map[string]int
	sample map[string]string // first message of each kind

	echoed, echoedBytes, abandoned       atomic.Int64
	sessions, graceful, abrupt, inFlight atomic.Int64
	echoUps, slowUps, terminated         atomic.Int64
	dying, padded, stuckDrops, flooded   atomic.Int64
}

func newSoakStats() *soakStats {
	return &soakStats{errs: map[string]int{}, sample: map[string]string{}}
}

func (st *soakStats) fail(kind, format string, args ...any) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.errs[kind]++
	if _, ok := st.sample[kind]; !ok {
		st.sample[kind] = fmt.Sprintf(format, args...)
	}
}

func (st *soakStats) summary() string {
	st.mu.Lock()
	defer st.mu.Unlock()
	var kinds []string
	for k := range st.errs {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	var b strings.Builder
	for _, k := range kinds {
		fmt.Fprintf(&b, "  %s: %d (first: %s)\n", k, st.errs[k], st.sample[k])
	}
	return b.String()
}

// --- workers ---------------------------------------------------------------------

// soakChan is a healthy upstream: the SHA-256 and length of every message
// sent to it and not echoed yet, in order.
type soakChan struct {
	slow bool
	sums [][32]byte
	lens []int
}

type soakWorker struct {
	env     *soakEnv
	id      int
	rng     *rand.Rand
	src     *rand.ChaCha8
	s       *session
	healthy map[uint16]*soakChan
	dying   map[uint16]bool // dying upstreams whose onSocketDisconnect is due
	buf     []byte
}

// run does rounds until the deadline. At a sample it parks with its
// session open and no upstream, so that every sample sees the same state.
func (w *soakWorker) run() {
	env := w.env
	for time.Now().Before(env.deadline) {
		if w.s == nil && !w.dial() {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if env.pause.Load() {
			if w.quiesce() {
				env.park()
			}
			continue
		}
		w.round()
	}
	for w.s == nil || !w.quiesce() {
		if w.s == nil && !w.dial() {
			time.Sleep(100 * time.Millisecond)
		}
	}
	env.parked.Add(1) // parked for good: the sampler counts it
}

// soakDial opens a session without the test's cleanups (the soak opens
// thousands) and with a random write buffer size, so the client library
// fragments large messages at different sizes.
func (w *soakWorker) dial() bool {
	wbs := []int{512, 4096, 65536}[w.rng.IntN(3)]
	d := &websocket.Dialer{HandshakeTimeout: waitTimeout, WriteBufferSize: wbs}
	conn, _, err := d.Dial(w.env.ts.url, nil)
	if err != nil {
		w.env.st.fail("dial", "%v", err)
		return false
	}
	s := &session{t: w.env.t, conn: conn, changed: make(chan struct{}), done: make(chan struct{})}
	conn.SetPingHandler(func(p string) error {
		err := conn.WriteControl(websocket.PongMessage, []byte(p), time.Now().Add(waitTimeout))
		if errors.Is(err, websocket.ErrCloseSent) {
			return nil
		}
		return err
	})
	go s.readLoop()
	w.s = s
	w.healthy = map[uint16]*soakChan{}
	w.dying = map[uint16]bool{}
	w.env.st.sessions.Add(1)
	return true
}

// closeSession ends the session: with a close frame when graceful (after
// everything was collected), else by FIN or RST.
func (w *soakWorker) closeSession(graceful bool) {
	s := w.s
	if s == nil {
		return
	}
	w.s = nil
	st := w.env.st
	if graceful {
		err := s.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, "soak"), time.Now().Add(waitTimeout))
		select {
		case <-s.done:
			var ce *websocket.CloseError
			if err == nil && (!errors.As(s.readErr, &ce) || ce.Code != 1000) {
				st.fail("close-echo", "session closed with %v, want the close 1000 echoed", s.readErr)
			}
		case <-time.After(waitTimeout):
			st.fail("close-echo", "no close echo within %v", waitTimeout)
		}
		st.graceful.Add(1)
	} else {
		if w.rng.IntN(2) == 0 {
			resetClose(s.conn.NetConn())
		} else {
			s.conn.NetConn().Close()
		}
		st.abrupt.Add(1)
	}
	s.conn.Close()
	<-s.done
	s.mu.Lock()
	for _, b := range s.bad {
		st.fail("client-stream", "%s", b)
	}
	s.mu.Unlock()
}

// abandon drops the session after an error, counting what was in flight.
func (w *soakWorker) abandon() {
	for _, ch := range w.healthy {
		w.env.st.abandoned.Add(int64(len(ch.sums)))
	}
	w.closeSession(false)
}

// round is one step of the mix.
func (w *soakWorker) round() {
	st := w.env.st
	switch r := w.rng.IntN(1000); {
	case r < 30: // close the session and open another
		w.closeSession(w.rng.IntN(2) == 0)
		return
	case r < 45: // drop it with data in flight
		if len(w.healthy) > 0 {
			w.sendBatch()
			for _, ch := range w.healthy {
				st.abandoned.Add(int64(len(ch.sums)))
			}
			st.inFlight.Add(1)
		}
		w.closeSession(false)
		return
	}
	if len(w.healthy) == 0 || (len(w.healthy) < soakMaxHealthy && w.rng.IntN(3) == 0) {
		slow := w.rng.IntN(3) == 0
		url := w.env.echoURL
		if slow {
			url = w.env.slowURL
		}
		idx, _, err := w.s.connectErr(map[string]any{"url": url})
		if err != nil {
			st.fail("connect", "%v", err)
			w.abandon()
			return
		}
		w.healthy[idx] = &soakChan{slow: slow}
		if slow {
			st.slowUps.Add(1)
		} else {
			st.echoUps.Add(1)
		}
	}
	if w.rng.IntN(15) == 0 {
		idx, _, err := w.s.connectErr(map[string]any{"url": w.env.dyingURL})
		if err != nil {
			st.fail("connect", "dying: %v", err)
			w.abandon()
			return
		}
		w.dying[idx] = true
		st.dying.Add(1)
	}
	if !w.sendBatch() || !w.collect() {
		w.abandon()
		return
	}
	if len(w.healthy) > 1 && w.rng.IntN(8) == 0 {
		for idx := range w.healthy {
			if !w.terminate(idx) {
				w.abandon()
				return
			}
			break
		}
	}
	if w.rng.IntN(80) == 0 && !w.stall() {
		w.abandon()
	}
}

// size returns a message size, log-uniform over 1 B .. soakMaxPayload.
func (w *soakWorker) size() int {
	lo := 1 << w.rng.IntN(20)
	return lo + w.rng.IntN(lo+1)
}

// sendBatch sends 1..soakMaxBatch random messages to healthy upstreams.
func (w *soakWorker) sendBatch() bool {
	if len(w.healthy) == 0 {
		return true
	}
	idxs := make([]uint16, 0, len(w.healthy))
	for idx := range w.healthy {
		idxs = append(idxs, idx)
	}
	sort.Slice(idxs, func(i, j int) bool { return idxs[i] < idxs[j] })
	for range 1 + w.rng.IntN(soakMaxBatch) {
		idx := idxs[w.rng.IntN(len(idxs))]
		n := min(w.size(), soakMaxPayload)
		if cap(w.buf) < 2+n {
			w.buf = make([]byte, 2+soakMaxPayload)
		}
		msg := w.buf[:2+n]
		binary.BigEndian.PutUint16(msg, idx)
		w.src.Read(msg[2:])
		mt := websocket.BinaryMessage
		if w.rng.IntN(2) == 0 {
			mt = websocket.TextMessage
		}
		if err := w.s.writeMessage(mt, msg); err != nil {
			w.env.st.fail("write", "%v", err)
			return false
		}
		ch := w.healthy[idx]
		ch.sums = append(ch.sums, sha256.Sum256(msg[2:]))
		ch.lens = append(ch.lens, n)
	}
	return true
}

// outstanding counts echoes and disconnects still due.
func (w *soakWorker) outstanding() int {
	n := len(w.dying)
	for _, ch := range w.healthy {
		n += len(ch.sums)
	}
	return n
}

// collect takes, in arrival order, every echo and dying upstream's events
// due, checking each.
func (w *soakWorker) collect() bool {
	st := w.env.st
	limit := time.Now().Add(soakCollectLimit)
	for w.outstanding() > 0 {
		ev, err := w.s.takeErr("soak event", func(event) bool { return true }, time.Until(limit))
		if err != nil {
			kind := "lost"
			w.s.mu.Lock()
			if w.s.readErr != nil {
				kind = "session-ended"
			}
			w.s.mu.Unlock()
			st.fail(kind, "%d echoes/disconnects outstanding: %v", w.outstanding(), err)
			return false
		}
		switch {
		case ev.ctrl != nil && ev.ctrl.Method == "onSocketDisconnect":
			var p disconnectParams
			json.Unmarshal(ev.ctrl.Params, &p)
			if p.Index == nil {
				st.fail("disconnect-params", "%s", ev.ctrl.Params)
				return false
			}
			idx := uint16(*p.Index)
			switch {
			case w.dying[idx]:
				if p.Code != 1006 {
					st.fail("dying-code", "onSocketDisconnect %d %q, want 1006", p.Code, p.Message)
				}
				delete(w.dying, idx)
			case w.healthy[idx] != nil:
				st.fail("healthy-disconnect", "healthy upstream %d went away: %d %q with %d echoes due",
					idx, p.Code, p.Message, len(w.healthy[idx].sums))
				return false
			default:
				st.fail("stray-disconnect", "onSocketDisconnect for index %d, not open", idx)
			}
		case ev.ctrl != nil:
			st.fail("unexpected-control", "%s", ev.ctrl)
		case w.healthy[ev.index] != nil:
			ch := w.healthy[ev.index]
			if len(ch.sums) == 0 {
				st.fail("extra-echo", "index %d: %d bytes nobody sent", ev.index, len(ev.data))
				return false
			}
			sum := sha256.Sum256(ev.data)
			if len(ev.data) != ch.lens[0] || sum != ch.sums[0] {
				kind := "corrupt"
				for i := 1; i < len(ch.sums); i++ {
					if sum == ch.sums[i] {
						kind = "reordered"
					}
				}
				st.fail(kind, "index %d: echo of %d bytes, want %d bytes with the SHA-256 sent", ev.index, len(ev.data), ch.lens[0])
				return false
			}
			ch.sums, ch.lens = ch.sums[1:], ch.lens[1:]
			st.echoed.Add(1)
			st.echoedBytes.Add(int64(len(ev.data)))
		case w.dying[ev.index]:
			if why := soakPaddedOK(ev.data); why != "" {
				st.fail("padding", "index %d: message of %d bytes from a dying upstream is not its data then zeros: %s", ev.index, len(ev.data), why)
			}
			st.padded.Add(1)
		default:
			st.fail("stray-data", "%d bytes for index %d, not open", len(ev.data), ev.index)
		}
	}
	return true
}

// soakPaddedOK checks a dying upstream's message: its payload up to some
// byte, then zeros to the announced length. After an RST the data in
// flight may be lost: the message may then end at a fragment boundary
// before the announced length, or be zeros only (the length lost too).
// It returns what is wrong, or "".
func soakPaddedOK(got []byte) string {
	if len(got) < 5 {
		return "shorter than its 5-byte prefix"
	}
	n := int(binary.BigEndian.Uint32(got))
	rst := got[4] == 2
	var want []byte
	switch {
	case n == 0 && got[4] == 0:
		want = make([]byte, len(got)) // an RST lost everything
	case got[4] != 1 && got[4] != 2:
		return fmt.Sprintf("mode byte %d", got[4])
	case n == len(got), rst && n > len(got):
		want = soakDyingPayload(n, rst)[:len(got)]
	default:
		return fmt.Sprintf("announces %d bytes (rst %v)", n, rst)
	}
	for i := range got {
		if got[i] == want[i] {
			continue
		}
		for j := i; j < len(got); j++ {
			if got[j] != 0 {
				return fmt.Sprintf("byte %d is %#x, want %#x or padding (data ends at byte %d); bytes %d..: % x",
					j, got[j], want[j], i, j, got[j:min(len(got), j+16)])
			}
		}
		return ""
	}
	return ""
}

// terminate closes a healthy upstream whose echoes are all in.
func (w *soakWorker) terminate(idx uint16) bool {
	r, err := w.s.callErr("terminate", map[string]any{"index": idx, "code": 1000, "reason": "soak"})
	if err != nil || r.Error != nil {
		w.env.st.fail("terminate", "index %d: %v %v", idx, err, r)
		return false
	}
	delete(w.healthy, idx)
	w.env.st.terminated.Add(1)
	return true
}

// quiesce terminates every healthy upstream (nothing is in flight at a
// round boundary). It reports whether the session is still open.
func (w *soakWorker) quiesce() bool {
	if w.s == nil {
		return false
	}
	for idx := range w.healthy {
		if !w.terminate(idx) {
			w.abandon()
			return false
		}
	}
	return true
}

// stall opens an upstream that stops reading and floods it until wsplice
// drops it with onSocketDisconnect 1006; messages sent after the drop get
// warn 4004, which a barrier then collects.
func (w *soakWorker) stall() bool {
	st := w.env.st
	id := strconv.FormatInt(w.env.nextStuck.Add(1), 10)
	release := make(chan struct{})
	w.env.stuckRelease.Store(id, release)
	defer func() {
		close(release)
		w.env.stuckRelease.Delete(id)
	}()
	idx, _, err := w.s.connectErr(map[string]any{"url": w.env.stuckURL + "?id=" + id})
	if err != nil {
		st.fail("connect", "stuck: %v", err)
		return false
	}
	msg := withIndex(idx, make([]byte, 256<<10))
	start := time.Now()
	var sent int64
	isDrop := func(e event) bool {
		if e.ctrl == nil || e.ctrl.Method != "onSocketDisconnect" {
			return false
		}
		var p disconnectParams
		json.Unmarshal(e.ctrl.Params, &p)
		return p.Index != nil && *p.Index == int(idx)
	}
	for {
		if ev, err := w.s.takeErr("", isDrop, 0); err == nil {
			var p disconnectParams
			json.Unmarshal(ev.ctrl.Params, &p)
			if p.Code != 1006 {
				st.fail("stuck-code", "onSocketDisconnect %d %q, want 1006", p.Code, p.Message)
			}
			break
		}
		if time.Since(start) > soakWriteTimeout+20*time.Second || sent > 256<<20 {
			st.fail("stuck-not-dropped", "upstream that reads nothing still open after %v and %d MiB", time.Since(start), sent>>20)
			return false
		}
		if err := w.s.writeMessage(websocket.BinaryMessage, msg); err != nil {
			st.fail("write", "flooding a stalled upstream: %v", err)
			return false
		}
		sent += int64(len(msg))
	}
	st.stuckDrops.Add(1)
	st.flooded.Add(sent)
	r, err := w.s.callErr("wsplice-soak-barrier", map[string]any{})
	if err != nil || r.Error == nil || r.Error.Code != 4003 {
		st.fail("barrier", "%v %v", err, r)
		return false
	}
	for {
		if _, err := w.s.takeErr("", func(e event) bool {
			return e.ctrl != nil && e.ctrl.Method == "warn" && strings.Contains(string(e.ctrl.Params), "4004")
		}, 0); err != nil {
			break
		}
	}
	return true
}
