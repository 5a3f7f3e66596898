//go:build linux

package splice

import (
	"time"
)

// Counter indices. Each loop counts in plain fields on its own goroutine
// and publishes them to atomics once per turn, so counting costs no lock
// and no atomic instruction per frame, and a scrape sums the loops.
const (
	cntFramesIn  = iota // client -> upstream data frames forwarded
	cntFramesOut        // upstream -> client data frames forwarded
	cntBytesIn          // payload bytes client -> upstream
	cntBytesOut         // payload bytes upstream -> client
	cntPauses           // a connection went over the high watermark
	cntSessionsOpened
	cntSessionsClosed
	cntUpstreamsOpened
	cntUpstreamsClosed
	cntSpliced   // payload bytes client -> upstream moved with splice(2)
	cntCloseBase // closeSlots counters of close codes follow
)

// Close codes are counted per code for 1000-1015 (RFC 6455 section 7.4.1)
// and in three buckets otherwise.
const (
	closeSlotOther = 16 // anything else
	closeSlot3xxx  = 17 // 3000-3999: libraries and frameworks
	closeSlot4xxx  = 18 // 4000-4999: applications
	closeSlots     = 19
	numCounters    = cntCloseBase + closeSlots
)

func closeSlot(code int) int {
	switch {
	case code >= 1000 && code <= 1015:
		return code - 1000
	case code >= 3000 && code <= 3999:
		return closeSlot3xxx
	case code >= 4000 && code <= 4999:
		return closeSlot4xxx
	}
	return closeSlotOther
}

// countClose records a close code seen or sent for an upstream or a
// session.
func (e *engine) countClose(code int) { e.cnt[cntCloseBase+closeSlot(code)]++ }

// publish copies the loop's counters to their atomic mirrors.
func (e *engine) publish() {
	for i := range e.cnt {
		if v := e.cnt[i]; v != e.pubSeen[i] {
			e.pubSeen[i] = v
			e.pub[i].Store(v)
		}
	}
}

// Stats is a snapshot of the server's counters, summed over its loops.
// Counters only grow; Sessions and Upstreams are current values.
type Stats struct {
	Sessions, Upstreams int64
	SessionsOpened      uint64
	UpstreamsOpened     uint64
	FramesIn, FramesOut uint64 // data frames client->upstream, upstream->client
	BytesIn, BytesOut   uint64 // payload bytes, same directions
	BackpressurePauses  uint64 // times a connection went over the high watermark
	SplicedBytes        uint64 // of BytesIn, moved kernel to kernel with splice(2)
	Closes              map[string]uint64
	DialsInFlight       int64
	Loops               int
	// LoopClients is the client connections on each loop (handshaking
	// ones included): how evenly new connections were spread.
	LoopClients []int64
	// PooledBytes is what the loops' buffer pools keep for reuse, as of
	// their last keepalive sweep (about once a second). A sweep lets go
	// of the buffers no connection needed since the one before, so it
	// falls back to zero within two sweeps of the traffic ending.
	PooledBytes int64
	Uptime      time.Duration
}

// closeLabel names a close slot: the code, or its range.
func closeLabel(slot int) string {
	switch slot {
	case closeSlotOther:
		return "other"
	case closeSlot3xxx:
		return "3xxx"
	case closeSlot4xxx:
		return "4xxx"
	}
	return itoa(1000 + slot)
}

// Stats sums the loops' published counters. Safe from any goroutine; it
// takes no lock the loops take.
func (s *Server) Stats() Stats {
	var sum [numCounters]uint64
	for _, e := range s.engs {
		for i := range sum {
			sum[i] += e.pub[i].Load()
		}
	}
	st := Stats{
		Sessions:           int64(sum[cntSessionsOpened] - sum[cntSessionsClosed]),
		Upstreams:          int64(sum[cntUpstreamsOpened] - sum[cntUpstreamsClosed]),
		SessionsOpened:     sum[cntSessionsOpened],
		UpstreamsOpened:    sum[cntUpstreamsOpened],
		FramesIn:           sum[cntFramesIn],
		FramesOut:          sum[cntFramesOut],
		BytesIn:            sum[cntBytesIn],
		BytesOut:           sum[cntBytesOut],
		BackpressurePauses: sum[cntPauses],
		SplicedBytes:       sum[cntSpliced],
		Closes:             map[string]uint64{},
		DialsInFlight:      s.dialing.Load(),
		Loops:              len(s.engs),
		Uptime:             time.Since(s.started),
		LoopClients:        make([]int64, len(s.engs)),
	}
	for i, e := range s.engs {
		st.LoopClients[i] = e.clients.Load()
		st.PooledBytes += e.pooled.Load()
	}
	for i := range closeSlots {
		if v := sum[cntCloseBase+i]; v > 0 {
			st.Closes[closeLabel(i)] = v
		}
	}
	return st
}

// Hooks are optional callbacks for instrumentation (metrics). They run on
// worker goroutines, never on a loop's per-frame path.
type Hooks struct {
	// Dial is called after every upstream dial with its result ("ok",
	// "refused_by_policy", "dns_error", "tcp_error", "tls_error",
	// "handshake_error") and how long it took.
	Dial func(result string, d time.Duration)
	// RPC is called after every control request with its method ("" for
	// a message that named none) and result ("ok" or the error code).
	RPC func(method, result string)
}
