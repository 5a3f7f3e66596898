package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/wsplice/wsplice/bench"
)

func TestParseInts(t *testing.T) {
	got, err := parseInts("32, 128,4098,64KiB,1MiB,2K")
	want := []int{32, 128, 4098, 65536, 1 << 20, 2048}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("parseInts = %v, %v; want %v", got, err, want)
	}
	for _, bad := range []string{"", "x", "0", "-1", "1.5"} {
		if _, err := parseInts(bad); err == nil {
			t.Errorf("parseInts(%q) accepted it", bad)
		}
	}
}

func TestParseModes(t *testing.T) {
	if m, err := parseModes("all"); err != nil || len(m) != 3 {
		t.Errorf("all = %v, %v", m, err)
	}
	if m, err := parseModes("latency,sessions"); err != nil || !slices.Equal(m, []bench.Mode{bench.ModeLatency, bench.ModeSessions}) {
		t.Errorf("latency,sessions = %v, %v", m, err)
	}
	if _, err := parseModes("speed"); err == nil {
		t.Error("unknown mode accepted")
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--no-ours", "--no-direct"},
		{"--no-ours", "--server", "ws://192.0.2.1:3000/"},
		{"--no-ours", "--clients", "0"},
		{"--no-ours", "--mode", "speed"},
		{"--bogus"},
		{"extra"},
	} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), args, &out, &errOut); code != 2 {
			t.Errorf("%q: exit %d, want 2; stderr: %s", args, code, errOut.String())
		}
	}
}

// TestJSONRun runs one tiny throughput cell on the direct path.
func TestJSONRun(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"--no-ours", "--mode", "throughput", "--clients", "1",
		"--payloads", "32", "--duration", "100ms", "--warmup", "0s", "--quiet-wait", "0", "--json"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d; stderr: %s", code, errOut.String())
	}
	var res bench.Results
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, out.String())
	}
	if len(res.Throughput) != 1 || res.Throughput[0].Bytes <= 0 {
		t.Errorf("results: %+v", res.Throughput)
	}

	// --render turns the saved JSON into the Markdown report.
	path := filepath.Join(t.TempDir(), "results.json")
	if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	var md bytes.Buffer
	if code := run(context.Background(), []string{"--render", path}, &md, &errOut); code != 0 {
		t.Fatalf("--render: exit %d; stderr: %s", code, errOut.String())
	}
	if !strings.Contains(md.String(), "| 32 B |") {
		t.Errorf("--render output:\n%s", md.String())
	}
}

func TestMain(m *testing.M) {
	// --relay re-executes the running binary, here the test binary.
	if len(os.Args) > 1 && os.Args[1] == bench.RelayArg {
		os.Exit(bench.RelayMain(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// TestRelayRun measures one tiny latency cell on the direct path and
// through the relay, and finds both in the report with their ratio.
func TestRelayRun(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"--no-ours", "--relay", "--mode", "latency", "--clients", "2",
		"--payloads", "32", "--duration", "200ms", "--warmup", "0s", "--quiet-wait", "0"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d; stderr: %s", code, errOut.String())
	}
	for _, want := range []string{"direct / relay (relay ÷ direct)", "Targets: direct, relay."} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}
