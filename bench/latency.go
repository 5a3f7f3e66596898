package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

const (
	// stampSize is what every latency payload starts with: the send time
	// (nanoseconds since the cell's base, big-endian) and a sequence
	// number.
	stampSize = 16
	// latencyScanSize is a latency client's read buffer.
	latencyScanSize = 64 << 10
	// maxOwnFrame is the largest frame a latency client keeps its own copy
	// of; larger frames share one masked template and are sent with
	// writev, a private head plus the shared tail.
	maxOwnFrame = 64 << 10
	// maxInlineInflight bounds the bytes in flight for which the reading
	// goroutine also sends. Above it a writer goroutine sends, so a client
	// never blocks in a write while its socket's receive side fills.
	maxInlineInflight = 256 << 10
	// maxEventBody bounds a control message a latency client keeps.
	maxEventBody = 4 << 10
)

var errLatencyPayload = fmt.Errorf("bench: latency payloads must be at least %d bytes (timestamp and sequence number)", stampSize)

// LatencyResult is one cell of the latency grid for one target.
type LatencyResult struct {
	Target   string     `json:"target"`
	Kind     TargetKind `json:"kind"`
	Clients  int        `json:"clients"`
	Payload  int        `json:"payload"`
	Inflight int        `json:"inflight"`

	WindowSeconds float64 `json:"window_seconds"`
	// RoundTrips counts messages sent and echoed back within the window.
	RoundTrips       int64   `json:"round_trips"`
	RoundTripsPerSec float64 `json:"round_trips_per_sec"`
	// Round-trip time quantiles, microseconds.
	P50Micros  float64 `json:"p50_us"`
	P99Micros  float64 `json:"p99_us"`
	P999Micros float64 `json:"p999_us"`
	MeanMicros float64 `json:"mean_us"`
	MaxMicros  float64 `json:"max_us"`
	// OneWayP50Micros is half the median round trip.
	OneWayP50Micros float64 `json:"one_way_p50_us"`
	// Fairness is the fewest round trips of a client over the mean.
	Fairness float64 `json:"fairness"`
	// Outstanding counts messages still unanswered when the clients
	// stopped (at most Inflight per client when nothing is lost).
	Outstanding int64 `json:"outstanding"`

	Server            *ServerCost `json:"server,omitempty"`
	HarnessCPUPercent float64     `json:"harness_cpu_percent"`
	OtherCPUPercent   float64     `json:"other_cpu_percent"`
	// Attempts is how many times the cell ran (see Options.Retries).
	Attempts   int      `json:"attempts"`
	Events     []string `json:"events,omitempty"`
	EventCount int      `json:"event_count,omitempty"`
	Error      string   `json:"error,omitempty"`
}

// latencyClient keeps a fixed number of messages in flight on one client
// and times each round trip.
type latencyClient struct {
	c         *client
	base      time.Time
	from, to  time.Duration // a round trip counts if sent at or after from and back by to
	stop      *atomic.Bool
	prefixLen int // 2 through a multiplexer, 0 direct
	msgLen    int // prefixLen + payload
	hdrLen    int // frame header size

	// Sending: owned by the reading goroutine when inline, else by the
	// writer goroutine.
	inline  bool
	buf     []byte // own frame copy (small frames) or own head (large)
	tail    []byte // shared rest of a large frame; nil for small frames
	nextSeq uint64
	tokens  chan struct{} // one per answered message, when not inline
	sent    atomic.Int64

	// Receiving: owned by the reading goroutine.
	inMsg   bool
	got     int
	head    [2 + stampSize]byte
	ctlBody []byte
	expSeq  uint64
	hist    histogram
	rts     int64 // round trips in the window
	recv    int64
	bad     int64 // messages with a wrong length or sequence number
	events  []string
	nEvents int
}

// send writes the next message with the current time in it.
func (lc *latencyClient) send() error {
	var stamp [stampSize]byte
	binary.BigEndian.PutUint64(stamp[0:8], uint64(time.Since(lc.base)))
	binary.BigEndian.PutUint64(stamp[8:16], lc.nextSeq)
	lc.nextSeq++
	at := lc.hdrLen + lc.prefixLen
	for k, v := range stamp {
		lc.buf[at+k] = v ^ lc.c.mask[(lc.prefixLen+k)%4]
	}
	lc.sent.Add(1)
	if lc.tail == nil {
		return lc.c.write(lc.buf)
	}
	lc.c.wmu.Lock()
	defer lc.c.wmu.Unlock()
	bufs := net.Buffers{lc.buf, lc.tail}
	_, err := bufs.WriteTo(lc.c.conn)
	return err
}

func (lc *latencyClient) frame(h *ws.Header, p []byte, off int64, end bool) error {
	if h.OpCode.IsControl() {
		switch h.OpCode {
		case ws.OpPing:
			return lc.c.writePong(p)
		case ws.OpClose:
			return errClosed
		}
		return nil
	}
	if off == 0 && h.OpCode != ws.OpContinuation {
		lc.inMsg, lc.got, lc.ctlBody = true, 0, lc.ctlBody[:0]
	}
	if !lc.inMsg {
		return nil
	}
	if lc.got < len(lc.head) {
		copy(lc.head[lc.got:], p)
	}
	isCtl := lc.prefixLen == 2 && lc.got+len(p) >= 2 && binary.BigEndian.Uint16(lc.head[:2]) == controlIndex
	if isCtl && len(lc.ctlBody)+len(p) <= maxEventBody {
		lc.ctlBody = append(lc.ctlBody, p...)
	}
	lc.got += len(p)
	if !end || !h.Fin {
		return nil
	}
	lc.inMsg = false
	if isCtl {
		lc.nEvents++
		if len(lc.events) < maxEvents && len(lc.ctlBody) > 2 {
			lc.events = append(lc.events, string(lc.ctlBody[2:]))
		}
		return nil
	}
	now := time.Since(lc.base)
	stamp := lc.head[lc.prefixLen:]
	sentAt := time.Duration(binary.BigEndian.Uint64(stamp[0:8]))
	seq := binary.BigEndian.Uint64(stamp[8:16])
	if lc.got != lc.msgLen || seq != lc.expSeq {
		lc.bad++
	}
	lc.expSeq = seq + 1
	lc.recv++
	if sentAt >= lc.from && now <= lc.to {
		lc.hist.record(now - sentAt)
		lc.rts++
	}
	if lc.stop.Load() {
		return nil
	}
	if lc.inline {
		return lc.send()
	}
	select {
	case lc.tokens <- struct{}{}:
	default: // cannot happen: at most inflight tokens are outstanding
	}
	return nil
}

// runLatency measures one cell: clients each keeping inflight messages of
// payload bytes on a round trip through an echo upstream.
func runLatency(ctx context.Context, t *Target, clients, payload int, o *Options) LatencyResult {
	res := LatencyResult{Target: t.Name, Kind: t.Kind, Clients: clients, Payload: payload, Inflight: o.Inflight}
	if err := res.run(ctx, t, o); err != nil {
		res.Error = err.Error()
	}
	return res
}

func (res *LatencyResult) run(ctx context.Context, t *Target, o *Options) (err error) {
	if res.Payload < stampSize {
		return errLatencyPayload
	}
	env, err := openCell(t, kindEcho, res.Clients, latencyScanSize)
	if err != nil {
		return err
	}
	defer func() { err = env.close(err) }()
	up, in, cs := env.up, env.in, env.cs

	var stop atomic.Bool
	base := time.Now()
	lcs := make([]*latencyClient, len(cs))
	templates := map[string][]byte{}
	for i, c := range cs {
		tmpl, ok := templates[string(c.prefix)]
		if !ok {
			p := make([]byte, len(c.prefix)+res.Payload)
			copy(p, c.prefix)
			for k := len(c.prefix) + stampSize; k < len(p); k++ {
				p[k] = byte(k*7 + 1)
			}
			tmpl = appendFrame(nil, ws.OpBinary, &c.mask, p)
			templates[string(c.prefix)] = tmpl
		}
		lc := &latencyClient{
			c: c, base: base, stop: &stop,
			from: o.Warmup, to: o.Warmup + o.Duration,
			prefixLen: len(c.prefix),
			msgLen:    len(c.prefix) + res.Payload,
			inline:    o.Inflight*len(tmpl) <= maxInlineInflight,
			tokens:    make(chan struct{}, o.Inflight),
		}
		lc.hdrLen = len(tmpl) - lc.msgLen
		if len(tmpl) <= maxOwnFrame {
			lc.buf = slices.Clone(tmpl)
		} else {
			n := lc.hdrLen + lc.prefixLen + stampSize
			lc.buf, lc.tail = slices.Clone(tmpl[:n]), tmpl[n:]
		}
		lcs[i] = lc
	}

	var (
		wg       sync.WaitGroup
		nErrs    atomic.Int64
		errMu    sync.Mutex
		firstErr error
	)
	fail := func(err error) {
		if stop.Load() {
			return
		}
		nErrs.Add(1)
		errMu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		errMu.Unlock()
	}
	done := make(chan struct{})
	hardEnd := time.Now().Add(o.Warmup + o.Duration + stopTimeout)
	for _, lc := range lcs {
		lc.c.conn.SetDeadline(hardEnd)
		if lc.inline {
			for range o.Inflight {
				if err := lc.send(); err != nil {
					fail(fmt.Errorf("client write: %w", err))
					break
				}
			}
		} else {
			for range o.Inflight {
				lc.tokens <- struct{}{}
			}
			wg.Add(1)
			go func() { // the writer, for large messages in flight
				defer wg.Done()
				for j := 0; j < maxConnReads; j++ {
					select {
					case <-lc.tokens:
					case <-done:
						return
					}
					if err := lc.send(); err != nil {
						fail(fmt.Errorf("client write: %w", err))
						return
					}
				}
			}()
		}
		wg.Add(1)
		go func() { // the reader; inline, it also sends
			defer wg.Done()
			for j := 0; j < maxConnReads; j++ {
				if err := lc.c.sc.readOnce(lc.c.conn, lc); err != nil {
					if errors.Is(err, errClosed) {
						err = errors.New("server sent close")
					}
					fail(fmt.Errorf("client read: %w", err))
					return
				}
			}
		}()
	}

	werr := sleepWatching(ctx, o.Warmup-time.Since(base), in.proc)
	var a, b window
	if werr == nil {
		a = takeWindow(in)
		werr = sleepWatching(ctx, o.Warmup+o.Duration-time.Since(base), in.proc)
		b = takeWindow(in)
	}
	stop.Store(true)
	close(done)
	now := time.Now()
	for _, lc := range lcs {
		lc.c.interrupt(now)
	}
	closeClients(cs)
	if !waitTimeout(&wg, stopTimeout) {
		return errors.New("bench: client goroutines did not end")
	}
	if werr != nil {
		return werr
	}

	var (
		h   histogram
		rts = make([]int64, len(lcs))
		bad int64
	)
	for i, lc := range lcs {
		h.merge(&lc.hist)
		rts[i] = lc.rts
		res.Outstanding += lc.sent.Load() - lc.recv
		bad += lc.bad
		res.EventCount += lc.nEvents
		for _, e := range lc.events {
			if len(res.Events) < maxEvents {
				res.Events = append(res.Events, e)
			}
		}
	}
	secs := o.Duration.Seconds()
	us := func(d time.Duration) float64 { return float64(d) / 1e3 }
	res.WindowSeconds = secs
	res.RoundTrips = int64(h.n)
	res.RoundTripsPerSec = float64(h.n) / secs
	res.P50Micros = us(h.quantile(0.50))
	res.P99Micros = us(h.quantile(0.99))
	res.P999Micros = us(h.quantile(0.999))
	res.MeanMicros = us(h.mean())
	res.MaxMicros = us(time.Duration(h.max))
	res.OneWayP50Micros = res.P50Micros / 2
	res.Fairness = fairness(nil, rts)
	var u usage
	res.Server, u = cost(a, b, 0)
	res.HarnessCPUPercent, res.OtherCPUPercent = u.harness, u.other

	if n, err := up.failure(); n > 0 {
		return fmt.Errorf("bench: %d upstream connections failed: %w", n, err)
	}
	if n := nErrs.Load(); n > 0 {
		return fmt.Errorf("bench: %d client errors during the run, first: %w", n, firstErr)
	}
	if bad > 0 {
		return fmt.Errorf("bench: %d echoed messages had a wrong length or sequence number", bad)
	}
	if h.n == 0 {
		return errors.New("bench: no round trip completed in the window")
	}
	return nil
}
