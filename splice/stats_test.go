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
