package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"time"
)

// Mode is one kind of measurement.
type Mode string

const (
	ModeThroughput Mode = "throughput"
	ModeLatency    Mode = "latency"
	ModeSessions   Mode = "sessions"
)

// Defaults of the command line.
var (
	DefaultClients  = []int{32, 128, 512}
	DefaultPayloads = []int{32, 128, 1024, 4098, 65536, 1 << 20}
)

const (
	DefaultDuration = 5 * time.Second
	DefaultWarmup   = time.Second
	DefaultSessions = 2000
	// DefaultQuietWait is the default of Options.QuietWait.
	DefaultQuietWait = 20 * time.Second
	// quietCPU and quietSample define an idle machine for QuietWait.
	quietCPU    = 15 // percent of one core
	quietSample = 500 * time.Millisecond
	// MaxPayload bounds a payload: 64 MB is the control-message limit the
	// harness starts wsplice with, and data messages stream anyway.
	MaxPayload = 64 << 20
	// MaxClients bounds the clients of one cell: each costs the harness
	// two fds and the server two.
	MaxClients = 4000
	// MaxDuration bounds one measured window.
	MaxDuration = 10 * time.Minute
	// MaxRetries bounds Options.Retries.
	MaxRetries = 10
	// MaxInflight bounds the messages in flight per latency client.
	MaxInflight = 1024
)

// Options configures a run. The zero value of a field takes the default.
type Options struct {
	Modes    []Mode
	Clients  []int
	Payloads []int
	Duration time.Duration // measured window of each cell
	Warmup   time.Duration // load before the window, not counted
	Inflight int           // latency: messages in flight per client
	Sessions int           // sessions: idle sessions
	// SessionsIdle is how long the sessions stay open and idle before the
	// server is measured (default one second).
	SessionsIdle time.Duration

	// TLS measures over TLS: wsplice serves TLS (a throwaway CA and
	// certificate), the direct path's upstreams answer TLS too, and every
	// client dials wss://. wsplice reaches the upstreams in plain ws://.
	TLS bool

	// Targets run in this order in every cell.
	Targets []Target

	// QuietWait is how long Run waits before each cell for the machine to
	// be idle (less than quietCPU percent of a core busy over
	// quietSample); after that the cell runs anyway and its other-CPU
	// figure shows the disturbance. Zero means the default; negative
	// disables the wait.
	QuietWait time.Duration

	// Retries is how many more times a cell runs when the rest of the
	// machine was busy during it (its other CPU over disturbedCPU); the
	// least disturbed attempt is kept. Zero means none.
	Retries int

	// SessionsPerProcess is how many sessions one harness process holds;
	// more are spread over child processes.
	SessionsPerProcess int
	// ChildCommand returns the command that runs ChildMain. By default
	// the running binary is re-executed with ChildArg.
	ChildCommand func() *exec.Cmd
	// Log receives one progress line per measured cell.
	Log io.Writer
}

func (o *Options) childCommand() *exec.Cmd {
	if o.ChildCommand != nil {
		return o.ChildCommand()
	}
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	return exec.Command(exe, ChildArg)
}

var errOptions = errors.New("bench: bad options")

func (o *Options) setDefaults() error {
	if len(o.Modes) == 0 {
		o.Modes = []Mode{ModeThroughput, ModeLatency, ModeSessions}
	}
	if len(o.Clients) == 0 {
		o.Clients = DefaultClients
	}
	if len(o.Payloads) == 0 {
		o.Payloads = DefaultPayloads
	}
	if o.Duration == 0 {
		o.Duration = DefaultDuration
	}
	if o.Inflight == 0 {
		o.Inflight = 1
	}
	if o.Sessions == 0 {
		o.Sessions = DefaultSessions
	}
	if o.QuietWait == 0 {
		o.QuietWait = DefaultQuietWait
	}
	if o.SessionsIdle == 0 {
		o.SessionsIdle = sessionsIdle
	}
	if o.SessionsPerProcess == 0 {
		o.SessionsPerProcess = DefaultSessionsPerProcess
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	for _, m := range o.Modes {
		switch m {
		case ModeThroughput, ModeLatency, ModeSessions:
		default:
			return fmt.Errorf("%w: unknown mode %q", errOptions, m)
		}
	}
	for _, c := range o.Clients {
		if c < 1 || c > MaxClients {
			return fmt.Errorf("%w: clients %d not in [1, %d]", errOptions, c, MaxClients)
		}
	}
	for _, p := range o.Payloads {
		if p < 1 || p > MaxPayload {
			return fmt.Errorf("%w: payload %d not in [1, %d]", errOptions, p, MaxPayload)
		}
	}
	switch {
	case o.Duration < 0 || o.Duration > MaxDuration:
		return fmt.Errorf("%w: duration %v not in (0, %v]", errOptions, o.Duration, MaxDuration)
	case o.Warmup < 0 || o.Warmup > MaxDuration:
		return fmt.Errorf("%w: warmup %v not in [0, %v]", errOptions, o.Warmup, MaxDuration)
	case o.Inflight < 1 || o.Inflight > MaxInflight:
		return fmt.Errorf("%w: inflight %d not in [1, %d]", errOptions, o.Inflight, MaxInflight)
	case o.Sessions < 1 || o.Sessions > 65535:
		return fmt.Errorf("%w: sessions %d not in [1, 65535]", errOptions, o.Sessions)
	case o.Retries < 0 || o.Retries > MaxRetries:
		return fmt.Errorf("%w: retries %d not in [0, %d]", errOptions, o.Retries, MaxRetries)
	case len(o.Targets) == 0:
		return fmt.Errorf("%w: no target", errOptions)
	}
	return nil
}

// Settings records the options a run used.
type Settings struct {
	Modes           []Mode   `json:"modes"`
	Clients         []int    `json:"clients"`
	Payloads        []int    `json:"payloads"`
	DurationSeconds float64  `json:"duration_seconds"`
	WarmupSeconds   float64  `json:"warmup_seconds"`
	Inflight        int      `json:"inflight"`
	Sessions        int      `json:"sessions"`
	ServerArgs      []string `json:"server_args"`
	TLS             bool     `json:"tls"`
}

// Results is everything a run measured.
type Results struct {
	Started    time.Time          `json:"started"`
	Machine    Machine            `json:"machine"`
	Settings   Settings           `json:"settings"`
	Targets    []Target           `json:"targets"`
	Throughput []ThroughputResult `json:"throughput,omitempty"`
	Latency    []LatencyResult    `json:"latency,omitempty"`
	Sessions   []SessionsResult   `json:"sessions,omitempty"`
	// Notes are things the reader must know (a target that could not run).
	Notes []string `json:"notes,omitempty"`
	// LoadStart and LoadEnd are the 1-minute load average before and
	// after the run: a busy machine makes every figure less reliable.
	LoadStart string `json:"load_start,omitempty"`
	LoadEnd   string `json:"load_end,omitempty"`

	References          []Reference      `json:"references"`
	ReferenceRoundTrips ReferenceLatency `json:"reference_round_trips"`
}

// Failed counts the cells that ended with an error.
func (r *Results) Failed() int {
	n := 0
	for _, c := range r.Throughput {
		n += btoi(c.Error != "")
	}
	for _, c := range r.Latency {
		n += btoi(c.Error != "")
	}
	for _, c := range r.Sessions {
		n += btoi(c.Error != "")
	}
	return n
}

// Run measures every mode, payload and client count against every target.
// A cell that fails keeps its error and the run goes on; Run returns an
// error only for bad options or a cancelled context.
func Run(ctx context.Context, o Options) (*Results, error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	if o.TLS {
		m, err := newTLSMaterial()
		if err != nil {
			return nil, fmt.Errorf("bench: TLS material: %w", err)
		}
		useTLS = m
		defer func() { m.remove(); useTLS = nil }()
	}
	limit, _ := raiseFDLimit()
	res := &Results{
		Started: time.Now().UTC(),
		Machine: DescribeMachine(),
		Settings: Settings{
			Modes: o.Modes, Clients: o.Clients, Payloads: o.Payloads,
			DurationSeconds: o.Duration.Seconds(), WarmupSeconds: o.Warmup.Seconds(),
			Inflight: o.Inflight, Sessions: o.Sessions, ServerArgs: ServerArgs, TLS: o.TLS,
		},
		Targets:             o.Targets,
		References:          References,
		ReferenceRoundTrips: ReferenceRoundTrips,
	}
	res.Machine.FDLimit = limit
	res.LoadStart = loadAverage()
	defer func() { res.LoadEnd = loadAverage() }()
	for _, m := range o.Modes {
		switch m {
		case ModeThroughput:
			for _, p := range o.Payloads {
				for _, c := range o.Clients {
					for i := range o.Targets {
						if err := ctx.Err(); err != nil {
							return res, err
						}
						r := leastDisturbed(ctx, &o, func() ThroughputResult {
							return runThroughput(ctx, &o.Targets[i], c, p, &o)
						}, func(r *ThroughputResult) (float64, bool) { return r.OtherCPUPercent, r.Error == "" },
							func(r *ThroughputResult, n int) { r.Attempts = n })
						logThroughput(o.Log, &r)
						res.Throughput = append(res.Throughput, r)
					}
				}
			}
		case ModeLatency:
			for _, p := range o.Payloads {
				for _, c := range o.Clients {
					for i := range o.Targets {
						if err := ctx.Err(); err != nil {
							return res, err
						}
						r := leastDisturbed(ctx, &o, func() LatencyResult {
							return runLatency(ctx, &o.Targets[i], c, p, &o)
						}, func(r *LatencyResult) (float64, bool) { return r.OtherCPUPercent, r.Error == "" },
							func(r *LatencyResult, n int) { r.Attempts = n })
						logLatency(o.Log, &r)
						res.Latency = append(res.Latency, r)
					}
				}
			}
		case ModeSessions:
			for i := range o.Targets {
				if k := o.Targets[i].Kind; k == KindDirect || k == KindRelay {
					continue // no multiplexer: no sessions
				}
				if err := ctx.Err(); err != nil {
					return res, err
				}
				waitQuiet(ctx, o.QuietWait)
				r := runSessions(ctx, &o.Targets[i], o.Sessions, &o)
				logSessions(o.Log, &r)
				res.Sessions = append(res.Sessions, r)
			}
		}
	}
	return res, ctx.Err()
}

// leastDisturbed runs a cell after waiting for a quiet machine, and again
// up to o.Retries times while the rest of the machine was busy during it;
// it keeps the attempt the rest of the machine disturbed least. The choice
// looks only at the disturbance, never at the measured figures. A failed
// attempt is returned at once: failures are findings, not noise.
func leastDisturbed[R any](ctx context.Context, o *Options, run func() R, other func(*R) (float64, bool), setAttempts func(*R, int)) R {
	var best R
	bestOther := math.Inf(1)
	n := 0
	for n < 1+max(o.Retries, 0) {
		if n > 0 && ctx.Err() != nil {
			break
		}
		waitQuiet(ctx, o.QuietWait)
		r := run()
		n++
		busy, ok := other(&r)
		if !ok {
			setAttempts(&r, n)
			return r
		}
		if busy < bestOther {
			best, bestOther = r, busy
		}
		if busy <= disturbedCPU {
			break
		}
	}
	setAttempts(&best, n)
	return best
}

// waitQuiet waits at most d for the machine to be idle: less than
// quietCPU percent of one core busy over quietSample. It reports whether
// it was.
func waitQuiet(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	end := time.Now().Add(d)
	for i := 0; i < int(d/quietSample)+1 && time.Now().Before(end); i++ {
		a, err := readSystemCPU()
		if err != nil {
			return true // no /proc: nothing to wait for
		}
		t := time.NewTimer(quietSample)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
		b, err := readSystemCPU()
		if err == nil && 100*(b-a).Seconds()/quietSample.Seconds() < quietCPU {
			return true
		}
	}
	return false
}

func logThroughput(w io.Writer, r *ThroughputResult) {
	if r.Error != "" {
		fmt.Fprintf(w, "throughput %-8s %4d clients %8s: error: %s\n", r.Target, r.Clients, sizeName(r.Payload), r.Error)
		return
	}
	fmt.Fprintf(w, "throughput %-8s %4d clients %8s: %s Mbit/s, %s msg/s%s\n",
		r.Target, r.Clients, sizeName(r.Payload), num(r.MbitPerSec), si(r.MessagesPerSec), costNote(r.Server))
}

func logLatency(w io.Writer, r *LatencyResult) {
	if r.Error != "" {
		fmt.Fprintf(w, "latency    %-8s %4d clients %8s: error: %s\n", r.Target, r.Clients, sizeName(r.Payload), r.Error)
		return
	}
	fmt.Fprintf(w, "latency    %-8s %4d clients %8s: %s rt/s, p50 %s p99 %s p99.9 %s\n",
		r.Target, r.Clients, sizeName(r.Payload), si(r.RoundTripsPerSec),
		micros(r.P50Micros), micros(r.P99Micros), micros(r.P999Micros))
}

func logSessions(w io.Writer, r *SessionsResult) {
	if r.Error != "" {
		fmt.Fprintf(w, "sessions   %-8s %d: error: %s\n", r.Target, r.Sessions, r.Error)
		return
	}
	mem := ", server memory not measured (not a local process)"
	if r.RSSAfterBytes > 0 {
		mem = fmt.Sprintf(", %.2f KiB and %.2f fds per session", r.KiBPerSession, r.FDsPerSession)
	}
	fmt.Fprintf(w, "sessions   %-8s %d: open in %.2fs%s\n", r.Target, r.Sessions, r.ConnectSeconds, mem)
}

func costNote(c *ServerCost) string {
	if c == nil {
		return ""
	}
	return fmt.Sprintf(", server %.0f%% CPU, %.1f CPU s/GB, peak RSS %s", c.CPUPercent, c.CPUSecondsPerGB, bytesName(c.PeakRSSBytes))
}
