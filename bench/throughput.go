package bench

import (
	"context"
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
	// batchSize is how many bytes of pre-encoded frames a sender hands to
	// one write call, so that the sender costs little per frame.
	batchSize = 256 << 10
	// sinkListeners is how many loopback ports the sinks listen on.
	sinkListeners = 2
	// drainScanSize is the read buffer of a throughput client, which reads
	// only what the server sends unasked (control messages, pings).
	drainScanSize = 4 << 10
	// sockBuf is the kernel buffer the harness asks for on each side it
	// owns of a throughput connection (the clients' send buffers, the
	// sinks' receive buffers). Left to autotuning they grow to many MiB
	// each (tcp_rmem's maximum is 32 MiB here), and at 512 clients the
	// harness alone would push the host into TCP memory pressure
	// (tcp_mem), where the kernel drops and stalls connections for whole
	// seconds. Linux doubles the value for its bookkeeping.
	sockBuf = 256 << 10
	// stopTimeout bounds the wait for a cell's goroutines after its
	// sockets are closed.
	stopTimeout = 10 * time.Second
)

// ServerCost is what a local server process spent during a window.
type ServerCost struct {
	CPUSeconds float64 `json:"cpu_seconds"`
	// CPUPercent is CPU time over wall time: 100 is one core.
	CPUPercent float64 `json:"cpu_percent"`
	// CPUSecondsPerGB is CPU seconds per 10^9 payload bytes forwarded.
	CPUSecondsPerGB float64 `json:"cpu_seconds_per_gb,omitempty"`
	RSSBytes        int64   `json:"rss_bytes"`      // VmRSS at the window's end
	PeakRSSBytes    int64   `json:"peak_rss_bytes"` // VmHWM over the process's life
	FDs             int     `json:"fds"`
}

// ThroughputResult is one cell of the throughput grid for one target.
type ThroughputResult struct {
	Target  string     `json:"target"`
	Kind    TargetKind `json:"kind"`
	Clients int        `json:"clients"`
	Payload int        `json:"payload"`

	WindowSeconds float64 `json:"window_seconds"`
	// Bytes and Messages are payload bytes and whole messages counted by
	// the upstream sinks in the window (no frame headers, no index).
	Bytes          int64   `json:"bytes"`
	Messages       int64   `json:"messages"`
	BytesPerSec    float64 `json:"bytes_per_sec"`
	MessagesPerSec float64 `json:"messages_per_sec"`
	// MbitPerSec is goodput in 10^6 bit/s.
	MbitPerSec float64 `json:"mbit_per_sec"`
	// OldMbps is goodput in the old README's unit: bytes*8/2^20 per s.
	OldMbps float64 `json:"old_mbps"`
	// Fairness is the smallest client's share over the mean (1 is even).
	Fairness float64 `json:"fairness"`

	Server            *ServerCost `json:"server,omitempty"`
	HarnessCPUPercent float64     `json:"harness_cpu_percent"`
	// OtherCPUPercent is the machine's busy CPU outside the server and
	// the harness processes (other programs, and kernel softirq work not
	// charged to a process): high values mean the cell was disturbed.
	OtherCPUPercent float64 `json:"other_cpu_percent"`
	// Attempts is how many times the cell ran (see Options.Retries).
	Attempts int `json:"attempts"`

	// Events are warn and onSocketDisconnect messages the clients got.
	Events     []string `json:"events,omitempty"`
	EventCount int      `json:"event_count,omitempty"`
	Error      string   `json:"error,omitempty"`
}

// window is a measurement taken at both ends of a measured interval.
type window struct {
	at      time.Time
	server  procStat
	hasProc bool
	self    procStat
	system  time.Duration // busy CPU time of the whole machine
}

func takeWindow(in *instance) window {
	w := window{at: time.Now()}
	w.server, w.hasProc = in.sample()
	w.self, _ = readProc(0)
	w.system, _ = readSystemCPU()
	return w
}

// usage is the CPU a window saw outside the server: the harness's own,
// and everything else on the machine.
type usage struct {
	harness float64 // percent of one core
	other   float64 // percent of one core, never negative
}

// cost fills a ServerCost between a and b for the given payload bytes.
func cost(a, b window, bytes int64) (*ServerCost, usage) {
	secs := b.at.Sub(a.at).Seconds()
	u := usage{harness: 100 * (b.self.CPU - a.self.CPU).Seconds() / secs}
	system := 100 * (b.system - a.system).Seconds() / secs
	server := 0.0
	if a.hasProc && b.hasProc {
		server = 100 * (b.server.CPU - a.server.CPU).Seconds() / secs
	}
	if b.system > 0 {
		u.other = max(system-u.harness-server, 0)
	}
	if !a.hasProc || !b.hasProc {
		return nil, u
	}
	cpu := (b.server.CPU - a.server.CPU).Seconds()
	sc := &ServerCost{
		CPUSeconds:   cpu,
		CPUPercent:   100 * cpu / secs,
		RSSBytes:     b.server.RSS,
		PeakRSSBytes: b.server.HWM,
		FDs:          b.server.FDs,
	}
	if bytes > 0 {
		sc.CPUSecondsPerGB = cpu / (float64(bytes) / 1e9)
	}
	return sc, u
}

// buildBatch returns whole masked binary frames, each carrying prefix and
// payload bytes, filling at least batchSize bytes (at least one frame).
func buildBatch(prefix []byte, payload int, mask [4]byte) []byte {
	p := make([]byte, len(prefix)+payload)
	copy(p, prefix)
	for i := len(prefix); i < len(p); i++ {
		p[i] = byte(i*7 + 1)
	}
	frame := appendFrame(nil, ws.OpBinary, &mask, p)
	n := max(1, batchSize/len(frame))
	batch := make([]byte, 0, n*len(frame))
	for range n {
		batch = append(batch, frame...)
	}
	return batch
}

// runThroughput measures one cell: clients pipelined senders of payload
// bytes per message.
func runThroughput(ctx context.Context, t *Target, clients, payload int, o *Options) ThroughputResult {
	res := ThroughputResult{Target: t.Name, Kind: t.Kind, Clients: clients, Payload: payload}
	if err := res.run(ctx, t, o); err != nil {
		res.Error = err.Error()
	}
	return res
}

func (res *ThroughputResult) run(ctx context.Context, t *Target, o *Options) (err error) {
	env, err := openCell(t, kindSink, res.Clients, drainScanSize)
	if err != nil {
		return err
	}
	defer func() { err = env.close(err) }()
	up, in, cs := env.up, env.in, env.cs
	if n := up.connCount(); n != res.Clients {
		closeClients(cs)
		return fmt.Errorf("bench: %d upstream connections for %d clients", n, res.Clients)
	}

	batches := map[string][]byte{}
	for _, c := range cs {
		if tc, ok := c.conn.(*net.TCPConn); ok {
			tc.SetWriteBuffer(sockBuf)
		}
		if _, ok := batches[string(c.prefix)]; !ok {
			batches[string(c.prefix)] = buildBatch(c.prefix, res.Payload, c.mask)
		}
	}

	var (
		stop       atomic.Bool
		wg         sync.WaitGroup
		sendErrs   atomic.Int64
		firstErrMu sync.Mutex
		firstErr   error
	)
	fail := func(err error) {
		if stop.Load() {
			return // errors after the end are the harness closing sockets
		}
		sendErrs.Add(1)
		firstErrMu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		firstErrMu.Unlock()
	}
	cols := make([]*collector, len(cs))
	hardEnd := time.Now().Add(o.Warmup + o.Duration + stopTimeout)
	for i, c := range cs {
		cols[i] = &collector{c: c}
		c.conn.SetDeadline(hardEnd)
		wg.Add(2)
		go func() { // drain what the server sends unasked
			defer wg.Done()
			for j := 0; j < maxConnReads; j++ {
				if err := c.sc.readOnce(c.conn, cols[i]); err != nil {
					if !errors.Is(err, errClosed) {
						fail(fmt.Errorf("client read: %w", err))
					} else {
						fail(errors.New("client: server sent close"))
					}
					return
				}
			}
		}()
		batch := batches[string(c.prefix)]
		go func() { // the pipelined sender
			defer wg.Done()
			for j := 0; j < maxConnReads && !stop.Load(); j++ {
				if err := c.write(batch); err != nil {
					fail(fmt.Errorf("client write: %w", err))
					return
				}
			}
		}()
	}

	werr := sleepWatching(ctx, o.Warmup, in.proc)
	var a, b window
	var bytesA, msgsA int64
	var perA []int64
	if werr == nil {
		a = takeWindow(in)
		bytesA, msgsA, perA = up.counts()
		werr = sleepWatching(ctx, o.Duration, in.proc)
		b = takeWindow(in)
	}
	bytesB, msgsB, perB := up.counts()

	stop.Store(true)
	now := time.Now()
	for _, c := range cs {
		c.interrupt(now)
	}
	closeClients(cs)
	if !waitTimeout(&wg, stopTimeout) {
		return errors.New("bench: client goroutines did not end")
	}
	if werr != nil {
		return werr
	}

	secs := b.at.Sub(a.at).Seconds()
	res.WindowSeconds = secs
	res.Bytes = bytesB - bytesA
	res.Messages = msgsB - msgsA
	res.BytesPerSec = float64(res.Bytes) / secs
	res.MessagesPerSec = float64(res.Messages) / secs
	res.MbitPerSec = res.BytesPerSec * 8 / 1e6
	res.OldMbps = res.BytesPerSec * 8 / (1 << 20)
	res.Fairness = fairness(perA, perB)
	var u usage
	res.Server, u = cost(a, b, res.Bytes)
	res.HarnessCPUPercent, res.OtherCPUPercent = u.harness, u.other
	for _, col := range cols {
		res.EventCount += col.nEvents
		for _, e := range col.events {
			if len(res.Events) < maxEvents {
				res.Events = append(res.Events, e)
			}
		}
	}
	if n, err := up.failure(); n > 0 {
		return fmt.Errorf("bench: %d upstream connections failed: %w", n, err)
	}
	if n := sendErrs.Load(); n > 0 {
		return fmt.Errorf("bench: %d client errors during the run, first: %w", n, firstErr)
	}
	if res.Bytes <= 0 {
		return errors.New("bench: no payload bytes reached the upstreams in the window")
	}
	return nil
}

// fairness returns the smallest per-connection delta between two
// snapshots over the mean delta (1 is perfectly even). Connection i is the
// same in both: upstream keeps them in accept order.
func fairness(a, b []int64) float64 {
	if len(b) == 0 || len(a) > len(b) {
		return 0
	}
	d := make([]int64, len(b))
	var sum int64
	for i := range b {
		d[i] = b[i]
		if i < len(a) {
			d[i] -= a[i]
		}
		sum += d[i]
	}
	if sum <= 0 {
		return 0
	}
	return float64(slices.Min(d)) / (float64(sum) / float64(len(d)))
}

// waitTimeout waits for wg at most d and reports whether it finished.
func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}
