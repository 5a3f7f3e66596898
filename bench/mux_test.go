package bench

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"testing"

	"github.com/gobwas/ws"
)

// testMux is a minimal multiplexer of the protocol for the harness's own
// tests: one goroutine per connection, whole messages buffered. It lets
// the external-target path and the index handling be tested without the
// wsplice binary.
type testMux struct {
	ln net.Listener
	wg sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func startTestMux(t *testing.T) *testMux {
	t.Helper()
	m, err := listenTestMux()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.close)
	return m
}

func listenTestMux() (*testMux, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	m := &testMux{ln: ln, conns: map[net.Conn]struct{}{}}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			m.track(c)
			m.wg.Add(1)
			go func() {
				defer m.wg.Done()
				m.session(c)
			}()
		}
	}()
	return m, nil
}

func (m *testMux) url() string { return "ws://" + m.ln.Addr().String() + "/" }

func (m *testMux) track(c net.Conn) {
	m.mu.Lock()
	m.conns[c] = struct{}{}
	m.mu.Unlock()
}

func (m *testMux) close() {
	m.ln.Close()
	m.mu.Lock()
	for c := range m.conns {
		c.Close()
	}
	m.mu.Unlock()
	m.wg.Wait()
}

// assembler collects whole unmasked messages.
type assembler struct {
	cur  []byte
	op   ws.OpCode
	msgs []message
	ping [][]byte
	done bool
}

type message struct {
	op ws.OpCode
	p  []byte
}

func (a *assembler) frame(h *ws.Header, p []byte, off int64, end bool) error {
	if h.Masked {
		ws.Cipher(p, h.Mask, int(off))
	}
	if h.OpCode.IsControl() {
		switch h.OpCode {
		case ws.OpPing:
			a.ping = append(a.ping, append([]byte(nil), p...))
		case ws.OpClose:
			a.done = true
		}
		return nil
	}
	if off == 0 && h.OpCode != ws.OpContinuation {
		a.op, a.cur = h.OpCode, a.cur[:0]
	}
	a.cur = append(a.cur, p...)
	if end && h.Fin {
		a.msgs = append(a.msgs, message{a.op, append([]byte(nil), a.cur...)})
	}
	return nil
}

func (m *testMux) session(c net.Conn) {
	defer c.Close()
	rest, err := serverHandshake(c)
	if err != nil {
		return
	}
	var (
		wmu  sync.Mutex
		ups  = map[uint16]*client{}
		wg   sync.WaitGroup
		sc   = newScanner(64<<10, rest)
		asm  = &assembler{}
		mask = [4]byte{9, 8, 7, 6}
	)
	send := func(p []byte) {
		wmu.Lock()
		c.Write(appendFrame(nil, ws.OpBinary, nil, p))
		wmu.Unlock()
	}
	defer func() {
		for _, u := range ups {
			u.conn.Close()
		}
		wg.Wait()
	}()
	for !asm.done {
		if err := sc.readOnce(c, asm); err != nil {
			return
		}
		for _, p := range asm.ping {
			wmu.Lock()
			c.Write(appendFrame(nil, ws.OpPong, nil, p))
			wmu.Unlock()
		}
		asm.ping = asm.ping[:0]
		for _, msg := range asm.msgs {
			if len(msg.p) < 2 {
				continue
			}
			idx := binary.BigEndian.Uint16(msg.p)
			if idx != controlIndex {
				if u := ups[idx]; u != nil {
					u.write(appendFrame(nil, msg.op, &mask, msg.p[2:]))
				}
				continue
			}
			var req struct {
				ID     int64 `json:"id"`
				Method string
				Params struct{ URL string }
			}
			if err := json.Unmarshal(msg.p[2:], &req); err != nil || req.Method != "connect" {
				continue
			}
			var n uint16
			for ups[n] != nil {
				n++
			}
			u, err := openClient("", req.Params.URL, mask, 64<<10)
			var reply []byte
			if err != nil {
				reply, _ = json.Marshal(map[string]any{"id": req.ID, "type": "reply",
					"error": map[string]any{"code": 4007, "message": err.Error()}})
			} else {
				ups[n] = u
				reply, _ = json.Marshal(map[string]any{"id": req.ID, "type": "reply",
					"result": map[string]any{"index": n, "subprotocol": ""}})
			}
			send(append([]byte{0xff, 0xff}, reply...))
			if err != nil {
				continue
			}
			wg.Add(1)
			go func() { // upstream to client
				defer wg.Done()
				ua := &assembler{}
				for !ua.done {
					if err := u.sc.readOnce(u.conn, ua); err != nil {
						return
					}
					for _, um := range ua.msgs {
						send(append(binary.BigEndian.AppendUint16(nil, n), um.p...))
					}
					ua.msgs = ua.msgs[:0]
				}
			}()
		}
		asm.msgs = asm.msgs[:0]
	}
}

// muxEnv makes the test binary a stand-in for the wsplice binary: it
// serves testMux and logs like wsplice does (see TestMain).
const muxEnv = "WSPLICE_BENCH_TEST_MUX"

// muxMain is the stand-in server's main: it ignores its flags, logs the
// listening line wsplice logs, and serves until SIGTERM.
func muxMain() int {
	m, err := listenTestMux()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	slog.New(slog.NewTextHandler(os.Stderr, nil)).Info("listening", "addr", m.ln.Addr().String(), "network", "tcp")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	<-sig
	m.close()
	return 0
}

// TestSmokeStandIn runs the tiny grid as the ours target with the test
// binary standing in for wsplice, so that starting, watching, sampling
// and stopping a server process is tested whatever state wsplice is in.
func TestSmokeStandIn(t *testing.T) {
	t.Setenv(muxEnv, "1")
	t.Setenv("GORACE", "atexit_sleep_ms=0") // else each stop takes a second
	smoke(t, Target{Name: "ours", Kind: KindOurs, Bin: os.Args[0]})
}

// TestSmokeExternal runs the tiny grid against testMux as an external
// server of the protocol.
func TestSmokeExternal(t *testing.T) {
	m := startTestMux(t)
	target, err := ExternalTarget(m.url())
	if err != nil {
		t.Fatal(err)
	}
	smoke(t, target)
}

func TestExternalTargetRefusesNonLoopback(t *testing.T) {
	for _, u := range []string{"ws://10.0.0.1:3000/", "ws://example.com:3000/", "wss://127.0.0.1:3000/", "ws://127.0.0.1/", "http://127.0.0.1:3000/"} {
		if _, err := ExternalTarget(u); err == nil {
			t.Errorf("ExternalTarget(%q) accepted it", u)
		}
	}
	for _, u := range []string{"ws://127.0.0.1:3000", "ws://[::1]:3000/", "ws://localhost:3000/x"} {
		if _, err := ExternalTarget(u); err != nil {
			t.Errorf("ExternalTarget(%q): %v", u, err)
		}
	}
}
