// Command wsplice-bench measures wsplice, the direct path and any other
// server of the protocol with the same load in one run, and prints a
// Markdown table (or JSON with --json). See package bench.
//
// Usage:
//
//	wsplice-bench [--mode all|throughput|latency|sessions] [--clients 32,128,512]
//	    [--payloads 32,128,1024,4098,65536,1048576] [--duration 5s] [--warmup 1s]
//	    [--inflight 1] [--sessions 2000] [--server ws://127.0.0.1:PORT]...
//	    [--no-direct] [--no-ours] [--relay] [--wsplice-bin PATH] [--quiet-wait 20s] [--retries 2] [--json]
//	wsplice-bench --render results.json
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wsplice/wsplice/bench"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == bench.ChildArg {
		os.Exit(bench.ChildMain(os.Stdin, os.Stdout))
	}
	if len(os.Args) > 1 && os.Args[1] == bench.RelayArg {
		os.Exit(bench.RelayMain(os.Args[2:]))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("wsplice-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		mode       = fs.String("mode", "all", "what to measure: all, or a comma-separated list of throughput, latency, sessions")
		clients    = fs.String("clients", "32,128,512", "client counts, comma-separated")
		payloads   = fs.String("payloads", "32,128,1024,4098,65536,1048576", "payload sizes in bytes, comma-separated (KiB and MiB suffixes accepted)")
		duration   = fs.Duration("duration", bench.DefaultDuration, "measured window of each cell")
		warmup     = fs.Duration("warmup", bench.DefaultWarmup, "load before each window, not counted")
		inflight   = fs.Int("inflight", 1, "latency: messages in flight per client")
		sessions   = fs.Int("sessions", bench.DefaultSessions, "sessions: idle sessions with one upstream each (up to about 9000 with a 20000 fd limit)")
		perProc    = fs.Int("sessions-per-process", bench.DefaultSessionsPerProcess, "sessions one harness process holds before spreading over child processes")
		quietWait  = fs.Duration("quiet-wait", bench.DefaultQuietWait, "before each cell, wait up to this long for the machine to be idle (0: do not wait)")
		retries    = fs.Int("retries", 2, "run a cell up to this many more times when the rest of the machine was busy during it, keeping the least disturbed attempt")
		render     = fs.String("render", "", "print the Markdown report of a results file written with --json, and measure nothing")
		noDirect   = fs.Bool("no-direct", false, "skip the direct path")
		noOurs     = fs.Bool("no-ours", false, "skip the wsplice binary")
		relay      = fs.Bool("relay", false, "also measure the direct path through a bare TCP relay process (io.Copy both ways, parsing nothing): what any proxy process costs on this machine")
		wspliceBin = fs.String("wsplice-bin", "", "wsplice binary to measure (default: go build "+bench.ServerPackage+" into a temporary directory)")
		jsonOut    = fs.Bool("json", false, "write machine-readable JSON to stdout instead of Markdown")
		tlsOn      = fs.Bool("tls", false, "measure over TLS: wsplice serves TLS with a throwaway certificate, the direct path's upstreams too; clients dial wss://")
		servers    listFlag
	)
	fs.Var(&servers, "server", "another server of the protocol to measure, ws://HOST:PORT on loopback (repeatable)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: wsplice-bench [flags]\n\nMeasures wsplice (ours), the direct path and --server targets with the same load; prints Markdown (or --json) to stdout and progress to stderr.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "wsplice-bench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if *render != "" {
		return renderFile(*render, stdout, stderr)
	}
	o := bench.Options{
		TLS:      *tlsOn,
		Duration: *duration, Warmup: *warmup, Inflight: *inflight, Sessions: *sessions,
		SessionsPerProcess: *perProc, Log: stderr, QuietWait: *quietWait,
		Retries: *retries,
	}
	if *quietWait == 0 {
		o.QuietWait = -1
	}
	var err error
	if o.Modes, err = parseModes(*mode); err == nil {
		if o.Clients, err = parseInts(*clients); err == nil {
			o.Payloads, err = parseInts(*payloads)
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "wsplice-bench:", err)
		return 2
	}

	var notes []string
	if !*noOurs {
		bin := *wspliceBin
		if bin == "" {
			dir, err := os.MkdirTemp("", "wsplice-bench-")
			if err != nil {
				fmt.Fprintln(stderr, "wsplice-bench:", err)
				return 1
			}
			defer os.RemoveAll(dir)
			fmt.Fprintf(stderr, "building %s\n", bench.ServerPackage)
			bin, err = bench.BuildServer(ctx, dir)
			if err != nil {
				fmt.Fprintf(stderr, "wsplice-bench: ours is skipped: %v\n", err)
				notes = append(notes, "ours was not measured: the wsplice binary did not build (use --wsplice-bin PATH).")
				bin = ""
			}
		} else if _, err := os.Stat(bin); err != nil {
			fmt.Fprintln(stderr, "wsplice-bench: --wsplice-bin:", err)
			return 2
		}
		if bin != "" {
			o.Targets = append(o.Targets, bench.Target{Name: "ours", Kind: bench.KindOurs, Bin: bin})
		}
	}
	if !*noDirect {
		o.Targets = append(o.Targets, bench.Target{Name: "direct", Kind: bench.KindDirect})
	}
	if *relay {
		exe, err := os.Executable()
		if err != nil {
			fmt.Fprintln(stderr, "wsplice-bench: --relay:", err)
			return 1
		}
		o.Targets = append(o.Targets, bench.Target{Name: "relay", Kind: bench.KindRelay, Bin: exe})
	}
	for _, s := range servers {
		t, err := bench.ExternalTarget(s)
		if err != nil {
			fmt.Fprintln(stderr, "wsplice-bench:", err)
			return 2
		}
		o.Targets = append(o.Targets, t)
	}
	if len(o.Targets) == 0 {
		fmt.Fprintln(stderr, "wsplice-bench: nothing to measure")
		return 2
	}

	start := time.Now()
	res, err := bench.Run(ctx, o)
	if res == nil {
		fmt.Fprintln(stderr, "wsplice-bench:", err)
		return 2
	}
	res.Notes = append(notes, res.Notes...)
	var werr error
	if *jsonOut {
		werr = bench.WriteJSON(stdout, res)
	} else {
		werr = bench.WriteMarkdown(stdout, res)
	}
	fmt.Fprintf(stderr, "done in %v\n", time.Since(start).Round(time.Second))
	switch {
	case werr != nil:
		fmt.Fprintln(stderr, "wsplice-bench:", werr)
		return 1
	case err != nil:
		fmt.Fprintln(stderr, "wsplice-bench:", err)
		return 1
	case res.Failed() > 0 || len(notes) > 0:
		fmt.Fprintf(stderr, "wsplice-bench: %d cells failed, %d targets skipped\n", res.Failed(), len(notes))
		return 1
	}
	return 0
}

// renderFile prints the Markdown report of a --json results file.
func renderFile(path string, stdout, stderr io.Writer) int {
	b, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(stderr, "wsplice-bench: --render:", err)
		return 2
	}
	var res bench.Results
	if err := json.Unmarshal(b, &res); err != nil {
		fmt.Fprintf(stderr, "wsplice-bench: --render %s: %v\n", path, err)
		return 2
	}
	if err := bench.WriteMarkdown(stdout, &res); err != nil {
		fmt.Fprintln(stderr, "wsplice-bench:", err)
		return 1
	}
	return 0
}

func parseModes(s string) ([]bench.Mode, error) {
	if s == "all" || s == "" {
		return []bench.Mode{bench.ModeThroughput, bench.ModeLatency, bench.ModeSessions}, nil
	}
	var modes []bench.Mode
	for _, m := range strings.Split(s, ",") {
		switch m := bench.Mode(strings.TrimSpace(m)); m {
		case bench.ModeThroughput, bench.ModeLatency, bench.ModeSessions:
			modes = append(modes, m)
		default:
			return nil, fmt.Errorf("--mode: unknown mode %q", m)
		}
	}
	return modes, nil
}

// parseInts parses "32,128,64KiB,1MiB".
func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		mult := 1
		for _, suf := range []struct {
			s string
			m int
		}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"K", 1 << 10}, {"M", 1 << 20}} {
			if strings.HasSuffix(f, suf.s) {
				f, mult = strings.TrimSuffix(f, suf.s), suf.m
				break
			}
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("bad number %q in %q", f, s)
		}
		out = append(out, n*mult)
	}
	return out, nil
}
