package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"
)

// childEnv makes the test binary a sessions child (see TestMain).
const childEnv = "WSPLICE_BENCH_TEST_CHILD"

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == RelayArg {
		os.Exit(RelayMain(os.Args[2:]))
	}
	if os.Getenv(childEnv) == "1" {
		os.Exit(ChildMain(os.Stdin, os.Stdout))
	}
	if os.Getenv(muxEnv) == "1" {
		os.Exit(muxMain())
	}
	os.Exit(m.Run())
}

// smokeOptions is a tiny grid: every mode, two clients, a small payload
// and one with a 64-bit length that latency sends with writev, four
// messages in flight (so the large payload takes the writer goroutine),
// and four sessions spread over two child processes.
func smokeOptions(t Target) Options {
	return Options{
		Clients:            []int{2},
		Payloads:           []int{32, 70000},
		Duration:           300 * time.Millisecond,
		Warmup:             100 * time.Millisecond,
		Inflight:           4,
		Sessions:           4,
		SessionsPerProcess: 2,
		SessionsIdle:       100 * time.Millisecond,
		QuietWait:          -1, // never wait: nothing here is timed
		Targets:            []Target{t},
		ChildCommand: func() *exec.Cmd {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			// The race detector sleeps a second at exit unless told not to.
			cmd.Env = append(os.Environ(), childEnv+"=1", "GORACE=atexit_sleep_ms=0")
			return cmd
		},
	}
}

// TestSmokeDirect runs the tiny grid against the direct path.
func TestSmokeDirect(t *testing.T) {
	smoke(t, Target{Name: "direct", Kind: KindDirect})
}

// TestSmokeRelay runs the tiny grid through the bare relay, the test
// binary serving as the relay's process.
func TestSmokeRelay(t *testing.T) {
	smoke(t, Target{Name: "relay", Kind: KindRelay, Bin: os.Args[0]})
}

// TestSmokeOurs runs the tiny grid against the wsplice binary, built for
// the test; it is skipped only when the binary does not build.
func TestSmokeOurs(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the server")
	}
	bin, err := BuildServer(context.Background(), t.TempDir())
	if err != nil {
		t.Skipf("wsplice does not build, so ours is not smoke-tested: %v", err)
	}
	smoke(t, Target{Name: "ours", Kind: KindOurs, Bin: bin})
}

func smoke(t *testing.T, target Target) {
	goroutines := runtime.NumGoroutine()
	fds := openFDs(t)

	var log bytes.Buffer
	o := smokeOptions(target)
	o.Log = &log
	start := time.Now()
	res, err := Run(context.Background(), o)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	t.Logf("run took %v; progress:\n%s", time.Since(start), log.String())

	if got, want := len(res.Throughput), len(o.Payloads); got != want {
		t.Fatalf("%d throughput cells, want %d", got, want)
	}
	for _, c := range res.Throughput {
		if c.Error != "" {
			t.Errorf("throughput %d B: %s", c.Payload, c.Error)
			continue
		}
		if c.Bytes <= 0 || c.Messages <= 0 {
			t.Errorf("throughput %d B: %d bytes, %d messages", c.Payload, c.Bytes, c.Messages)
		}
		// Every message counted was whole, so the bytes cover them, but
		// for those of each client that straddle the window's start.
		if c.Bytes < (c.Messages-int64(c.Clients))*int64(c.Payload) {
			t.Errorf("throughput %d B: %d bytes for %d messages", c.Payload, c.Bytes, c.Messages)
		}
		finite(t, "goodput", c.MbitPerSec, c.OldMbps, c.MessagesPerSec, c.Fairness, c.HarnessCPUPercent)
		if target.Kind == KindOurs || target.Kind == KindRelay {
			if c.Server == nil {
				t.Errorf("throughput %d B: no server cost for a local server", c.Payload)
			} else if c.Server.PeakRSSBytes <= 0 || c.Server.FDs <= 0 {
				t.Errorf("throughput %d B: server cost %+v", c.Payload, *c.Server)
			}
			// Every client's bytes pass through the server: both of its
			// connections are open there, and it did work.
			if c.Server != nil && (c.Server.FDs < 2*c.Clients || c.Server.CPUSeconds <= 0) {
				t.Errorf("throughput %d B: %d clients, but the server has %d fds and used %v CPU s", c.Payload, c.Clients, c.Server.FDs, c.Server.CPUSeconds)
			}
		}
	}

	if got, want := len(res.Latency), len(o.Payloads); got != want {
		t.Fatalf("%d latency cells, want %d", got, want)
	}
	for _, c := range res.Latency {
		if c.Error != "" {
			t.Errorf("latency %d B: %s", c.Payload, c.Error)
			continue
		}
		if c.RoundTrips <= 0 {
			t.Errorf("latency %d B: no round trips", c.Payload)
		}
		if !(c.P50Micros <= c.P99Micros && c.P99Micros <= c.P999Micros && c.P999Micros <= c.MaxMicros) {
			t.Errorf("latency %d B: quantiles out of order: %+v", c.Payload, c)
		}
		if max := int64(c.Clients * c.Inflight); c.Outstanding < 0 || c.Outstanding > max {
			t.Errorf("latency %d B: %d messages outstanding, at most %d may be", c.Payload, c.Outstanding, max)
		}
		finite(t, "latency", c.RoundTripsPerSec, c.P50Micros, c.OneWayP50Micros, c.Fairness)
	}

	wantSessions := 1
	if target.Kind == KindDirect || target.Kind == KindRelay {
		wantSessions = 0
	}
	if got := len(res.Sessions); got != wantSessions {
		t.Fatalf("%d sessions results, want %d", got, wantSessions)
	}
	for _, s := range res.Sessions {
		if s.Error != "" {
			t.Errorf("sessions: %s", s.Error)
			continue
		}
		if s.Processes != 3 {
			t.Errorf("sessions: %d harness processes, want 3 (two children)", s.Processes)
		}
		if target.Kind == KindOurs && s.FDsAfter <= s.FDsBefore {
			t.Errorf("sessions: server fds %d -> %d with %d sessions open", s.FDsBefore, s.FDsAfter, s.Sessions)
		}
	}

	var md, js bytes.Buffer
	if err := WriteMarkdown(&md, res); err != nil {
		t.Fatalf("WriteMarkdown: %v", err)
	}
	if !strings.Contains(md.String(), "| 32 B |") || !strings.Contains(md.String(), "### Method") {
		t.Errorf("Markdown lacks the grid or the method:\n%s", md.String())
	}
	if err := WriteJSON(&js, res); err != nil {
		t.Fatalf("WriteJSON: %v", err)
	}
	var back Results
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatalf("JSON does not decode: %v", err)
	}
	if len(back.Throughput) != len(res.Throughput) || back.Machine.Cores != res.Machine.Cores {
		t.Errorf("JSON round trip lost data")
	}

	// Nothing the run started may outlive it.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && (runtime.NumGoroutine() > goroutines || openFDs(t) > fds) {
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("leak check done %v after the run", time.Since(start))
	if n := runtime.NumGoroutine(); n > goroutines {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines before the run, %d after:\n%s", goroutines, n, buf[:runtime.Stack(buf, true)])
	}
	if n := openFDs(t); n > fds {
		t.Errorf("%d fds before the run, %d after", fds, n)
	}
}

func finite(t *testing.T, what string, vs ...float64) {
	t.Helper()
	for i, v := range vs {
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			t.Errorf("%s: value %d is %v", what, i, v)
		}
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	st, err := readProc(0)
	if err != nil {
		return 0 // no /proc: the fd check is skipped
	}
	return st.FDs
}
