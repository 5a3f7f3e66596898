//go:build linux

package splice_test

import (
	"sync"
	"testing"
	"time"

	"github.com/wsplice/wsplice/splice"
)

// TestStats checks the counters a scrape sums over the loops, and the
// instrumentation hooks.
func TestStats(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	dials := map[string]int{}
	rpcs := map[string]int{}
	ts := startServer(t, splice.Config{Hooks: splice.Hooks{
		Dial: func(result string, d time.Duration) { mu.Lock(); dials[result]++; mu.Unlock() },
		RPC:  func(method, result string) { mu.Lock(); rpcs[method+" "+result]++; mu.Unlock() },
	}})
	up := startUpstream(t, echo)
	s := dialSession(t, ts.url)
	idx := s.connect(up.url)
	for range 10 {
		s.send(idx, []byte("0123456789"))
		equal(t, string(s.readDataFrom(idx)), "0123456789", "echo")
	}
	s.call("frobnicate", nil)
	var st splice.Stats
	ok := settle(waitTimeout, func() bool {
		st = ts.srv.Stats()
		return st.FramesIn == 10 && st.FramesOut == 10
	})
	if !ok {
		t.Fatalf("stats after 10 echoes: %+v", st)
	}
	equal(t, st.BytesIn, uint64(100), "bytes in")
	equal(t, st.BytesOut, uint64(100), "bytes out")
	equal(t, st.Sessions, int64(1), "sessions")
	equal(t, st.Upstreams, int64(1), "upstreams")
	s.call("terminate", map[string]any{"index": idx, "code": 4000})
	if !settle(waitTimeout, func() bool { st = ts.srv.Stats(); return st.Upstreams == 0 }) {
		t.Fatalf("upstreams after terminate: %+v", st)
	}
	equal(t, st.Closes["4xxx"], uint64(1), "4xxx closes")
	mu.Lock()
	defer mu.Unlock()
	equal(t, dials["ok"], 1, "ok dials")
	equal(t, rpcs["connect ok"], 1, "connect ok")
	equal(t, rpcs["terminate ok"], 1, "terminate ok")
	equal(t, rpcs["unknown 4003"], 1, "unknown method")
}

// TestPoolShrinksAfterBurst checks that a loop lets go of a burst's
// buffers once the burst is over. While an upstream reads nothing, the
// client's data waits in wsplice's pooled buffers; when the session ends
// they go back to the loop's pool (Stats.PooledBytes rises), and the
// sweeps that follow release them (it falls back to zero) instead of
// keeping them for good.
func TestPoolShrinksAfterBurst(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{Loops: 1})
	stalled := startUpstream(t, func(uc *upConn) { <-uc.stop })
	s := dialSession(t, ts.url)
	idx := s.connect(stalled.url)
	stop := s.flood(idx, 64<<10)
	if !settle(waitTimeout, func() bool { return ts.srv.Stats().BackpressurePauses > 0 }) {
		t.Fatalf("the client was never paused: %+v", ts.srv.Stats())
	}
	s.conn.Close() // the session ends; its buffers go back to the pool
	stop()
	var st splice.Stats
	if !settle(waitTimeout, func() bool { st = ts.srv.Stats(); return st.PooledBytes > 0 }) {
		t.Fatalf("no pooled bytes after the session ended: %+v", st)
	}
	t.Logf("pooled after the burst: %d bytes", st.PooledBytes)
	if !settle(waitTimeout, func() bool { st = ts.srv.Stats(); return st.PooledBytes == 0 }) {
		t.Fatalf("the pool kept %d bytes with no traffic", st.PooledBytes)
	}
}
