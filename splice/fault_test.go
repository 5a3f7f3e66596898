//go:build linux

package splice_test

// Fault tests: peers that die in the middle of a frame (FIN or RST), that
// half-close, that never finish a closing handshake, and that stop reading.
// In every case the stream toward the survivor stays a valid WebSocket
// stream, the session (or the rest of it) keeps working, and other
// sessions do not notice.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsplice/wsplice/splice"
)

// --- helpers shared by the hardening tests ------------------------------------

// patternBytes returns n bytes none of which is zero, so that zero padding is
// told apart from data; seed shifts the pattern.
func patternBytes(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte((i+int(seed))%251) + 1
	}
	return b
}

// joinBytes joins byte slices.
func joinBytes(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// framePrefix returns the first n bytes of f encoded: what a peer that
// dies after n bytes has sent (n below the header length: part of the
// header only).
func framePrefix(f frame, n int) []byte {
	b := appendFrame(nil, f)
	return b[:n]
}

// frameHeaderLen is the encoded header length of f.
func frameHeaderLen(f frame) int {
	return len(appendFrame(nil, f)) - len(f.payload)
}

// resetClose closes conn with an RST instead of a FIN (SO_LINGER 0).
func resetClose(conn net.Conn) {
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	conn.Close()
}

// zeroPadded returns prefix followed by zero bytes up to n bytes: a message
// whose source went away after prefix, as the survivor must receive it.
func zeroPadded(prefix []byte, n int) []byte {
	return append(append(make([]byte, 0, n), prefix...), make([]byte, n-len(prefix))...)
}

// checkPaddedMessage checks a message completed with zero padding. exact
// requires got == want; otherwise the split between data and padding may
// come earlier (after an RST, data in flight may be lost): got must be
// want with its tail, from some byte on, zero.
func checkPaddedMessage(t testing.TB, got, want []byte, exact bool, what string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d bytes, want %d", what, len(got), len(want))
	}
	for i := range got {
		if got[i] == want[i] {
			continue
		}
		if exact {
			t.Fatalf("%s: byte %d is %#x, want %#x; bytes %d..: % x", what, i, got[i], want[i], i, got[i:min(len(got), i+12)])
		}
		for j := i; j < len(got); j++ {
			if got[j] != 0 {
				t.Fatalf("%s: byte %d is %#x, want zero padding after the data that ends at byte %d; bytes %d..: % x",
					what, j, got[j], i, j, got[j:min(len(got), j+12)])
			}
		}
		return
	}
}

// openUpstream opens an upstream from a raw client and returns its index.
func (c *rawClient) openUpstream(id int, url string) uint16 {
	c.t.Helper()
	body, _ := json.Marshal(map[string]any{"id": id, "type": "method", "method": "connect", "params": map[string]any{"url": url}})
	c.write(frame{fin: true, op: opBinary, masked: true, payload: withIndex(controlIndex, body)})
	for {
		r := c.readControl()
		if r.Type != "reply" || r.ID != int64(id) {
			continue
		}
		if r.Error != nil {
			c.t.Fatalf("raw connect %s: %s", url, r)
		}
		var res connectResult
		noErr(c.t, json.Unmarshal(r.Result, &res), "connect result")
		return uint16(*res.Index)
	}
}

// progressUpstream is an upstream whose connections read each message
// through a stream reader, counting bytes as they arrive, so a test knows
// when part of a frame has come through before the message ends.
type progressUpstream struct {
	*upstream
	got atomic.Int64 // payload bytes read so far, over all messages
}

func startProgressUpstream(t testing.TB) *progressUpstream {
	t.Helper()
	pu := &progressUpstream{}
	pu.upstream = startUpstream(t, func(uc *upConn) {
		buf := make([]byte, 16<<10)
		for {
			mt, r, err := uc.c.NextReader()
			if err != nil {
				uc.err = err
				return
			}
			var msg bytes.Buffer
			for {
				n, err := r.Read(buf)
				msg.Write(buf[:n])
				pu.got.Add(int64(n))
				if err == io.EOF {
					break
				}
				if err != nil {
					uc.err = err
					return
				}
			}
			select {
			case uc.msgs <- upMsg{mt, msg.Bytes()}:
			case <-uc.stop:
				return
			}
		}
	})
	return pu
}

// waitUntil fails t unless cond holds within waitTimeout.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	if !settle(waitTimeout, cond) {
		t.Fatalf("timed out after %v waiting for %s", waitTimeout, what)
	}
}

// readUntilEOF reads conn until it ends and reports how long that took; it
// fails when conn stays open for d.
func readUntilEOF(t testing.TB, conn net.Conn, d time.Duration) time.Duration {
	t.Helper()
	elapsed := timeToEOF(conn, conn, d)
	if elapsed < 0 {
		t.Fatalf("connection still open after %v", d)
	}
	return elapsed
}

// checkSessionWorks checks that s still works: a control round trip and, when
// idx names a recording upstream uc, a message to it.
func checkSessionWorks(t testing.TB, s *session, idx uint16, uc *upConn) {
	t.Helper()
	s.barrier()
	if uc == nil {
		return
	}
	m := marker()
	s.send(idx, []byte(m))
	equal(t, string(uc.read(t).data), m, "message through the surviving upstream")
}

// --- peers that die mid-frame -------------------------------------------------

// TestUpstreamDiesMidFrame: an upstream that dies (FIN or RST) inside a
// frame it is sending leaves the client with that message completed by zero
// bytes (and ended by an empty final continuation when fragmented), then
// onSocketDisconnect 1006. The client stream stays valid (gorilla parses
// it), an upstream that was waiting for the client stream gets its message
// through whole, and the session and other sessions keep working.
func TestUpstreamDiesMidFrame(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{})
	body := patternBytes(100_000, 0)
	p1, p2 := patternBytes(1000, 7), patternBytes(50_000, 13)
	whole := frame{fin: true, op: opBinary, payload: body}
	cases := []struct {
		name  string
		write []byte // what the upstream sends before it dies
		want  []byte // the message the client gets (nil: none); zero-padded
		rst   bool
	}{
		{"mid-payload then FIN", framePrefix(whole, frameHeaderLen(whole)+30_000), zeroPadded(body[:30_000], len(body)), false},
		{"mid-payload then RST", framePrefix(whole, frameHeaderLen(whole)+30_000), zeroPadded(body[:30_000], len(body)), true},
		{"small frame", framePrefix(frame{fin: true, op: opText, payload: body[:1000]}, 4+10), zeroPadded(body[:10], 1000), false},
		{"header only", framePrefix(whole, frameHeaderLen(whole)), zeroPadded(nil, len(body)), false},
		{"in a non-final fragment", joinBytes(
			appendFrame(nil, frame{fin: false, op: opBinary, payload: p1}),
			framePrefix(frame{fin: false, op: opCont, payload: p2}, 4+2000)), joinBytes(p1, zeroPadded(p2[:2000], len(p2))), false},
		{"in the final fragment", joinBytes(
			appendFrame(nil, frame{fin: false, op: opBinary, payload: p1}),
			framePrefix(frame{fin: true, op: opCont, payload: p2}, 4+2000)), joinBytes(p1, zeroPadded(p2[:2000], len(p2))), true},
		{"between fragments", appendFrame(nil, frame{fin: false, op: opBinary, payload: p1}), p1, false},
		{"mid-header", framePrefix(whole, 1), nil, false},
		{"mid-header after a whole message", joinBytes(appendFrame(nil, frame{fin: true, op: opBinary, payload: p1}), framePrefix(whole, 3)), p1, true},
	}
	other := dialSession(t, ts.url)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			start, wrote, die := make(chan struct{}), make(chan struct{}), make(chan struct{})
			dying := startRawUpstream(t, func(conn net.Conn, br *bufio.Reader) {
				if _, err := rawAccept(conn, br, nil); err != nil {
					return
				}
				<-start
				conn.Write(tc.write)
				close(wrote)
				<-die
				if tc.rst {
					resetClose(conn)
				}
			})
			healthy := startUpstream(t, nil)
			s := dialSession(t, ts.url)
			b := s.connect(healthy.url)
			ucB := healthy.accept(t)
			a := s.connect(dying.url)
			close(start)
			<-wrote
			// B has a message for the client while A holds the stream.
			fromB := patternBytes(5000, 99)
			ucB.write(t, websocket.BinaryMessage, fromB)
			time.Sleep(50 * time.Millisecond)
			close(die)

			var msgSeq = -1
			if tc.want != nil {
				ev := s.take("A's completed message", isDataFrom(a))
				checkPaddedMessage(t, ev.data, tc.want, !tc.rst, "A's message")
				msgSeq = ev.seq
			}
			dev := s.take("onSocketDisconnect", isMethod("onSocketDisconnect"))
			var d disconnectParams
			noErr(t, json.Unmarshal(dev.ctrl.Params, &d), "params")
			equal(t, *d.Index, int(a), "disconnect index")
			equal(t, d.Code, 1006, "disconnect code")
			if dev.seq < msgSeq {
				t.Errorf("onSocketDisconnect (#%d) before A's message (#%d)", dev.seq, msgSeq)
			}
			if got := s.readDataFrom(b); !bytes.Equal(got, fromB) {
				t.Errorf("B's message: %d bytes, want its %d bytes intact", len(got), len(fromB))
			}
			s.assertNone("more data from A", isDataFrom(a), 50*time.Millisecond)
			checkSessionWorks(t, s, b, ucB)
			wantError(t, s.call("terminate", map[string]any{"index": a}), 4004, "")
			other.barrier()
		})
	}
}

// TestClientDiesMidFrame: a client that dies (FIN or RST) inside a frame it
// is streaming to an upstream leaves that upstream with the message
// completed by zero bytes (and an empty final continuation when
// fragmented), then a close 1001. Its other upstreams get 1001 and nothing
// else.
func TestClientDiesMidFrame(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{})
	body := patternBytes(100_000, 1)
	p1, p2 := patternBytes(1000, 3), patternBytes(50_000, 5)
	cases := []struct {
		name  string
		build func(idx uint16) []byte // what the client sends before it dies
		seen  int                     // upstream payload bytes to wait for first
		want  []byte                  // the message the upstream gets (nil: none)
		rst   bool
	}{
		{"mid-payload then FIN", func(idx uint16) []byte {
			f := frame{fin: true, op: opBinary, masked: true, payload: withIndex(idx, body)}
			return framePrefix(f, frameHeaderLen(f)+2+30_000)
		}, 30_000, zeroPadded(body[:30_000], len(body)), false},
		{"mid-payload then RST", func(idx uint16) []byte {
			f := frame{fin: true, op: opText, masked: true, payload: withIndex(idx, body)}
			return framePrefix(f, frameHeaderLen(f)+2+30_000)
		}, 30_000, zeroPadded(body[:30_000], len(body)), true},
		{"in a non-final fragment", func(idx uint16) []byte {
			return joinBytes(appendFrame(nil, frame{fin: false, op: opBinary, masked: true, payload: withIndex(idx, p1)}),
				framePrefix(frame{fin: false, op: opCont, masked: true, payload: p2}, 8+2000))
		}, 3000, joinBytes(p1, zeroPadded(p2[:2000], len(p2))), false},
		{"in the final fragment", func(idx uint16) []byte {
			return joinBytes(appendFrame(nil, frame{fin: false, op: opBinary, masked: true, payload: withIndex(idx, p1)}),
				framePrefix(frame{fin: true, op: opCont, masked: true, payload: p2}, 8+2000))
		}, 3000, joinBytes(p1, zeroPadded(p2[:2000], len(p2))), true},
		{"between fragments", func(idx uint16) []byte {
			return appendFrame(nil, frame{fin: false, op: opBinary, masked: true, payload: withIndex(idx, p1)})
		}, 1000, p1, false},
		{"mid-header of the next fragment", func(idx uint16) []byte {
			return joinBytes(appendFrame(nil, frame{fin: false, op: opBinary, masked: true, payload: withIndex(idx, p1)}),
				framePrefix(frame{fin: true, op: opCont, masked: true, payload: p2}, 3))
		}, 1000, p1, false},
		{"inside the index", func(idx uint16) []byte {
			f := frame{fin: true, op: opBinary, masked: true, payload: withIndex(idx, body)}
			return framePrefix(f, frameHeaderLen(f)+1)
		}, 0, nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			target := startProgressUpstream(t)
			bystander := startUpstream(t, nil)
			c := dialRaw(t, ts.addr)
			c.openUpstream(1, bystander.url)
			ucBy := bystander.accept(t)
			idx := c.openUpstream(2, target.url)
			uc := target.accept(t)
			c.writeBytes(tc.build(idx))
			waitUntil(t, fmt.Sprintf("%d bytes at the upstream", tc.seen), func() bool { return target.got.Load() >= int64(tc.seen) })
			if tc.seen == 0 {
				time.Sleep(50 * time.Millisecond) // let the server read the bytes
			}
			if tc.rst {
				resetClose(c.conn)
			} else {
				c.conn.Close()
			}
			if tc.want != nil {
				m := uc.read(t)
				checkPaddedMessage(t, m.data, tc.want, !tc.rst, "the upstream's message")
			}
			code, _ := uc.closeCode(t)
			equal(t, code, 1001, "close code at the upstream the client was writing to")
			select {
			case m := <-uc.msgs:
				t.Errorf("a second message of %d bytes reached the upstream", len(m.data))
			default:
			}
			code, _ = ucBy.closeCode(t)
			equal(t, code, 1001, "close code at the other upstream")
			select {
			case m := <-ucBy.msgs:
				t.Errorf("a message of %d bytes reached the other upstream", len(m.data))
			default:
			}
		})
	}
}

// --- resets ------------------------------------------------------------------

// TestTCPReset: a client that resets its connection loses its session (its
// upstreams get 1001); an upstream that resets, idle or while the client is
// streaming a large message to it, gets onSocketDisconnect 1006, the rest
// of the client's message is dropped, and the session keeps working.
func TestTCPReset(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{})
	bystander := dialSession(t, ts.url)

	t.Run("client", func(t *testing.T) {
		t.Parallel()
		up := startUpstream(t, nil)
		c := dialRaw(t, ts.addr)
		var ucs []*upConn
		for i := range 3 {
			idx := c.openUpstream(i+1, up.url)
			uc := up.accept(t)
			c.write(frame{fin: true, op: opBinary, masked: true, payload: withIndex(idx, []byte("hello"))})
			equal(t, string(uc.read(t).data), "hello", "message")
			ucs = append(ucs, uc)
		}
		resetClose(c.conn)
		for i, uc := range ucs {
			code, _ := uc.closeCode(t)
			equal(t, code, 1001, fmt.Sprintf("upstream %d close code", i))
		}
		bystander.barrier()
	})
	t.Run("idle upstream", func(t *testing.T) {
		t.Parallel()
		resets := make(chan struct{})
		rst := startUpstream(t, func(uc *upConn) {
			<-resets
			resetClose(uc.c.NetConn())
		})
		ok := startUpstream(t, nil)
		s := dialSession(t, ts.url)
		a := s.connect(rst.url)
		b := s.connect(ok.url)
		ucB := ok.accept(t)
		close(resets)
		d := s.waitDisconnect()
		equal(t, *d.Index, int(a), "index")
		equal(t, d.Code, 1006, "code")
		checkSessionWorks(t, s, b, ucB)
		bystander.barrier()
	})
	t.Run("upstream while the client streams to it", func(t *testing.T) {
		t.Parallel()
		rst := startUpstream(t, func(uc *upConn) {
			_, r, err := uc.c.NextReader()
			if err != nil {
				return
			}
			io.CopyN(io.Discard, r, 100<<10)
			resetClose(uc.c.NetConn())
		})
		ok := startUpstream(t, nil)
		s := dialSession(t, ts.url)
		a := s.connect(rst.url)
		b := s.connect(ok.url)
		ucB := ok.accept(t)
		big := withIndex(a, patternBytes(4<<20, 9))
		noErr(t, s.writeMessage(websocket.BinaryMessage, big), "4 MiB message")
		d := s.waitDisconnect()
		equal(t, *d.Index, int(a), "index")
		equal(t, d.Code, 1006, "code")
		checkSessionWorks(t, s, b, ucB)
		s.send(a, []byte("to the reset index"))
		equal(t, s.waitWarn().Code, 4004, "warn for data to the reset index")
		bystander.barrier()
	})
}

// --- half-open connections and unfinished closes ------------------------------

// TestHalfOpen: a peer that shuts its write side without a close frame is
// a peer that went away (client: the session ends, upstreams get 1001;
// upstream: onSocketDisconnect 1006), and the server then closes the
// connection instead of keeping it half open. A handshake cut by a FIN is
// dropped at once, not at --read-timeout. Peers that never answer a close
// frame are cut once the closing handshake times out.
func TestHalfOpen(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{ReadTimeout: 10 * time.Second})
	bystander := dialSession(t, ts.url)

	t.Run("client shuts its write side", func(t *testing.T) {
		t.Parallel()
		up := startUpstream(t, nil)
		c := dialRaw(t, ts.addr)
		c.openUpstream(1, up.url)
		uc := up.accept(t)
		noErr(t, c.conn.(*net.TCPConn).CloseWrite(), "shutdown")
		code, _ := uc.closeCode(t)
		equal(t, code, 1001, "upstream close code")
		readUntilEOF(t, c.conn, waitTimeout)
		bystander.barrier()
	})
	t.Run("upstream shuts its write side", func(t *testing.T) {
		t.Parallel()
		eof := make(chan time.Duration, 1)
		half := startRawUpstream(t, func(conn net.Conn, br *bufio.Reader) {
			if _, err := rawAccept(conn, br, nil); err != nil {
				return
			}
			conn.(*net.TCPConn).CloseWrite()
			eof <- timeToEOF(conn, br, waitTimeout)
		})
		up := startUpstream(t, nil)
		s := dialSession(t, ts.url)
		b := s.connect(up.url)
		ucB := up.accept(t)
		a := s.connect(half.url)
		d := s.waitDisconnect()
		equal(t, *d.Index, int(a), "index")
		equal(t, d.Code, 1006, "code")
		if got := <-eof; got < 0 {
			t.Errorf("the half-closed upstream's connection was left open")
		}
		checkSessionWorks(t, s, b, ucB)
	})
	t.Run("handshake cut by FIN", func(t *testing.T) {
		t.Parallel()
		conn := rawConn(t, ts.addr)
		req, _ := upgradeRequest(ts.addr)
		conn.Write(req[:len(req)/2])
		noErr(t, conn.(*net.TCPConn).CloseWrite(), "shutdown")
		if d := readUntilEOF(t, conn, waitTimeout); d > 3*time.Second {
			t.Errorf("closed after %v; a FIN during the handshake should close at once, not at --read-timeout", d)
		}
	})
	t.Run("client never answers the close", func(t *testing.T) {
		t.Parallel()
		up := startUpstream(t, nil)
		c := dialRaw(t, ts.addr)
		c.openUpstream(1, up.url)
		uc := up.accept(t)
		c.write(frame{fin: true, op: opClose, masked: true, payload: closePayload(4000, "bye")})
		// Read the echoed close, then neither close nor send anything.
		for {
			if f := c.next(); f.op == opClose {
				code, _ := parseClose(f.payload)
				equal(t, code, 4000, "echoed close code")
				break
			}
		}
		code, _ := uc.closeCode(t)
		equal(t, code, 4000, "upstream close code")
		if d := readUntilEOF(t, c.conn, waitTimeout); d > 5*time.Second {
			t.Errorf("lingering client closed after %v", d)
		}
	})
	t.Run("upstream never answers the close", func(t *testing.T) {
		t.Parallel()
		closed := make(chan time.Duration, 1)
		mute := startRawUpstream(t, func(conn net.Conn, br *bufio.Reader) {
			if _, err := rawAccept(conn, br, nil); err != nil {
				return
			}
			for { // read until the close frame, answer nothing
				f, err := readFrame(br)
				if err != nil {
					return
				}
				if f.op == opClose {
					break
				}
			}
			closed <- timeToEOF(conn, br, waitTimeout)
		})
		s := dialSession(t, ts.url)
		a := s.connect(mute.url)
		r := s.call("terminate", map[string]any{"index": a})
		if r.Error != nil {
			t.Fatalf("terminate: %s", r)
		}
		if d := <-closed; d < 0 || d > 5*time.Second {
			t.Errorf("upstream that never answered the close: closed after %v (-1: not at all)", d)
		}
		s.barrier()
	})
}

// --- peers that stop reading --------------------------------------------------

// heapSampler records the peak HeapInuse while it runs.
type heapSampler struct {
	base, peak uint64
	stop, done chan struct{}
}

func startHeapSampler() *heapSampler {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	h := &heapSampler{base: ms.HeapInuse, peak: ms.HeapInuse, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-h.stop:
				return
			case <-tick.C:
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			h.peak = max(h.peak, ms.HeapInuse)
		}
	}()
	return h
}

// growth stops the sampler and returns the peak growth in bytes.
func (h *heapSampler) growth() int64 {
	close(h.stop)
	<-h.done
	return int64(h.peak) - int64(h.base)
}

// heapAfterGC returns HeapInuse after a GC.
func heapAfterGC() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestStalledUpstream: an upstream that stops reading while the client
// floods it is dropped after --write-timeout with onSocketDisconnect 1006,
// and meanwhile: another upstream of the session still gets its messages
// to the client, another session does round trips, and the server holds a
// bounded amount of memory for the stalled one. Afterwards that memory is
// freed and the session works. Not parallel: it measures the heap.
func TestStalledUpstream(t *testing.T) {
	const wt = time.Second
	// One loop: the other session shares it with the stalled one.
	ts := startServer(t, splice.Config{WriteTimeout: wt, Loops: 1})
	stalled := startUpstream(t, func(uc *upConn) { <-uc.stop })
	pusher := startUpstream(t, nil)
	s := dialSession(t, ts.url)
	other := dialSession(t, ts.url)
	oup := startUpstream(t, echo)
	oi := other.connect(oup.url)
	b := s.connect(pusher.url)
	ucB := pusher.accept(t)
	a := s.connect(stalled.url)
	s.barrier()
	base := heapAfterGC()
	hs := startHeapSampler()

	stopFlood := s.flood(a, 256<<10) // the client floods A
	// While A is stalled: B's messages reach the client, and the other
	// session does round trips.
	start := time.Now()
	var during int
	for i := 0; ; i++ {
		if _, err := s.takeErr("", isMethod("onSocketDisconnect"), 0); err == nil {
			t.Fatalf("A dropped after %v, before the checks during the stall ran", time.Since(start))
		}
		m := []byte(fmt.Sprintf("push %d", i))
		ucB.write(t, websocket.BinaryMessage, m)
		equal(t, string(s.readDataFrom(b)), string(m), "B's message during the stall")
		other.send(oi, m)
		equal(t, string(other.readDataFrom(oi)), string(m), "other session's echo during the stall")
		during++
		if time.Since(start) > wt/2 {
			break
		}
	}
	d := s.waitDisconnect()
	elapsed := time.Since(start)
	sent := stopFlood()
	growth := hs.growth()
	equal(t, *d.Index, int(a), "index")
	equal(t, d.Code, 1006, "code")
	t.Logf("stalled upstream dropped after %v (%q); %d MiB written by the client; %d checks during the stall; heap +%d MiB",
		elapsed.Round(time.Millisecond), d.Message, sent>>20, during, growth>>20)
	if elapsed > wt+5*time.Second {
		t.Errorf("dropped after %v, want about --write-timeout %v", elapsed, wt)
	}
	if growth > 32<<20 {
		t.Errorf("heap grew by %d MiB for one stalled upstream, want < 32 MiB", growth>>20)
	}
	// The session works, and the memory held for A is freed.
	checkSessionWorks(t, s, b, ucB)
	if !settle(5*time.Second, func() bool { return heapAfterGC() < base+16<<20 }) {
		t.Errorf("heap %d MiB after the stalled upstream was dropped, %d MiB before", heapAfterGC()>>20, base>>20)
	}
}

// TestStalledClient: a client that stops reading while its upstream floods
// it loses its session after --write-timeout (upstreams get 1001), with
// the server's memory for it bounded all along and freed after; other
// sessions do round trips during the stall. Not parallel: it measures the
// heap.
func TestStalledClient(t *testing.T) {
	const wt = time.Second
	// One loop: the other session shares it with the stalled one.
	ts := startServer(t, splice.Config{WriteTimeout: wt, Loops: 1})
	var flooded atomic.Int64
	flooder := startUpstream(t, func(uc *upConn) {
		go func() { // answers pings and sees the close; the data goes nowhere
			for {
				if _, _, err := uc.c.ReadMessage(); err != nil {
					return
				}
			}
		}()
		msg := patternBytes(64<<10, 0)
		for {
			uc.c.SetWriteDeadline(time.Now().Add(2 * waitTimeout))
			if uc.c.WriteMessage(websocket.BinaryMessage, msg) != nil {
				return
			}
			flooded.Add(int64(len(msg)))
		}
	})
	idle := startUpstream(t, nil)
	oup := startUpstream(t, echo)
	other := dialSession(t, ts.url)
	oi := other.connect(oup.url)

	base := heapAfterGC()
	hs := startHeapSampler()
	c := dialRaw(t, ts.addr)
	c.openUpstream(1, idle.url)
	ucIdle := idle.accept(t)
	start := time.Now()
	c.openUpstream(2, flooder.url)
	// From here on the client reads nothing.
	var during int
	for time.Since(start) < wt/2 {
		m := []byte(fmt.Sprintf("ping %d", during))
		other.send(oi, m)
		equal(t, string(other.readDataFrom(oi)), string(m), "other session's echo during the stall")
		during++
	}
	code, _ := ucIdle.closeCode(t)
	elapsed := time.Since(start)
	growth := hs.growth()
	equal(t, code, 1001, "close code at the client's idle upstream")
	t.Logf("stalled client dropped after %v; upstream wrote %d MiB; %d checks during the stall; heap +%d MiB",
		elapsed.Round(time.Millisecond), flooded.Load()>>20, during, growth>>20)
	if elapsed > wt+5*time.Second {
		t.Errorf("dropped after %v, want about --write-timeout %v", elapsed, wt)
	}
	if growth > 32<<20 {
		t.Errorf("heap grew by %d MiB for one stalled client, want < 32 MiB", growth>>20)
	}
	c.conn.Close()
	other.barrier()
	if !settle(5*time.Second, func() bool { return heapAfterGC() < base+16<<20 }) {
		t.Errorf("heap %d MiB after the stalled client was dropped, %d MiB before", heapAfterGC()>>20, base>>20)
	}
}
