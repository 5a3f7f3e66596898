//go:build linux

package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsplice/wsplice/splice"
)

// parseMetrics reads Prometheus text exposition into series (name and
// labels as printed) -> value. Comments are skipped.
func parseMetrics(t *testing.T, body string) map[string]float64 {
	t.Helper()
	out := make(map[string]float64)
	for line := range strings.SplitSeq(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// scrape serves one GET of path from h.
func scrape(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(body)
}

// TestMetricsCollector checks the names, labels and values that a Stats
// snapshot becomes, and the hooks' vectors.
func TestMetricsCollector(t *testing.T) {
	t.Parallel()
	m := newMetrics("127.0.0.1:0")
	m.reg.MustRegister(statsCollector{stats: func() splice.Stats {
		return splice.Stats{
			Sessions: 3, Upstreams: 7, SessionsOpened: 10, UpstreamsOpened: 20,
			FramesIn: 100, FramesOut: 200, BytesIn: 1000, BytesOut: 2000,
			BackpressurePauses: 4, DialsInFlight: 2,
			Closes:      map[string]uint64{"1000": 5, "1001": 6, "4xxx": 1},
			LoopClients: []int64{4, 5},
			PooledBytes: 3 << 20,
		}
	}})
	h := m.hooks()
	h.Dial("ok", 30*time.Millisecond)
	h.Dial("ok", 2*time.Second)
	h.Dial("tcp_error", time.Millisecond)
	h.RPC("connect", "ok")
	h.RPC("terminate", "4004")
	h.RPC("frobnicate", "4003") // rpc.Handle says "unknown"; a client's name must never become a label
	h.RPC("", "4000")

	draining := false
	code, body := scrape(t, m.handler(func() bool { return draining }), "/metrics")
	equalInt(t, code, http.StatusOK, "/metrics status")
	got := parseMetrics(t, body)
	for series, want := range map[string]float64{
		`wsplice_sessions`:                                            3,
		`wsplice_upstreams`:                                           7,
		`wsplice_sessions_opened_total`:                               10,
		`wsplice_upstreams_opened_total`:                              20,
		`wsplice_frames_total{direction="client_to_upstream"}`:        100,
		`wsplice_frames_total{direction="upstream_to_client"}`:        200,
		`wsplice_bytes_total{direction="client_to_upstream"}`:         1000,
		`wsplice_bytes_total{direction="upstream_to_client"}`:         2000,
		`wsplice_backpressure_pauses_total`:                           4,
		`wsplice_dials_in_flight`:                                     2,
		`wsplice_loop_clients{loop="0"}`:                              4,
		`wsplice_loop_clients{loop="1"}`:                              5,
		`wsplice_pooled_bytes`:                                        3 << 20,
		`wsplice_closes_total{code="1000"}`:                           5,
		`wsplice_closes_total{code="1001"}`:                           6,
		`wsplice_closes_total{code="4xxx"}`:                           1,
		`wsplice_dial_duration_seconds_count{result="ok"}`:            2,
		`wsplice_dial_duration_seconds_bucket{result="ok",le="0.05"}`: 1,
		`wsplice_dial_duration_seconds_bucket{result="ok",le="2.5"}`:  2,
		`wsplice_dial_duration_seconds_count{result="tcp_error"}`:     1,
		`wsplice_dial_duration_seconds_count{result="dns_error"}`:     0,
		`wsplice_rpc_calls_total{method="connect",result="ok"}`:       1,
		`wsplice_rpc_calls_total{method="terminate",result="ok"}`:     0,
		`wsplice_rpc_calls_total{method="terminate",result="4004"}`:   1,
		`wsplice_rpc_calls_total{method="unknown",result="4003"}`:     1,
		`wsplice_rpc_calls_total{method="none",result="4000"}`:        1,
		`go_goroutines`:              -1, // present
		`process_open_fds`:           -1,
		`process_start_time_seconds`: -1,
		`wsplice_dial_duration_seconds_bucket{result="handshake_error",le="+Inf"}`: 0,
	} {
		v, ok := got[series]
		switch {
		case !ok:
			t.Errorf("no series %s", series)
		case want >= 0 && v != want:
			t.Errorf("%s = %v, want %v", series, v, want)
		}
	}
	if strings.Contains(body, "frobnicate") {
		t.Errorf("a client's method name became a label:\n%s", body)
	}

	code, body = scrape(t, m.handler(func() bool { return draining }), "/healthz")
	if code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz while serving: %d %q", code, body)
	}
	draining = true
	code, body = scrape(t, m.handler(func() bool { return draining }), "/healthz")
	if code != http.StatusServiceUnavailable || body != "draining\n" {
		t.Errorf("/healthz while draining: %d %q", code, body)
	}
}

// TestMetricsOff checks that without --metrics-address there is nothing
// to feed: no hooks.
func TestMetricsOff(t *testing.T) {
	t.Parallel()
	m := newMetrics("")
	if h := m.hooks(); h.Dial != nil || h.RPC != nil {
		t.Errorf("hooks installed without --metrics-address")
	}
	m.watch(nil) // no-op on nil
}

// TestBinaryMetrics checks /metrics and /healthz of the real binary after
// real traffic: sessions, upstreams, frames and bytes each way, dials by
// result, RPC calls, closes, and the Go and process collectors.
func TestBinaryMetrics(t *testing.T) {
	t.Parallel()
	p := binStart(t, nil, "--allow-private-upstreams", "--metrics-address", "127.0.0.1:0")
	maddr := p.waitLog(t, metricsAddrLine)[1]
	status, body := httpGet(t, "http://"+maddr+"/healthz")
	if status != http.StatusOK || body != "ok\n" {
		t.Fatalf("/healthz: %d %q, want 200 ok", status, body)
	}
	upURL, closes := binUpstream(t)
	c := binDial(t, "ws://"+p.addr+"/", nil)
	idx, code := c.connect(upURL)
	equalInt(t, code, 0, "connect")
	for range 5 {
		c.sendRaw(uint16(idx), []byte("hello"))
		c.readData()
	}
	_, code = c.connect("ws://127.0.0.1:" + freePort(t) + "/") // nothing listens there
	equalInt(t, code, 4007, "connect to a closed port")
	wantBinReply(t, c.call("frobnicate", map[string]any{}), 4003)

	want := map[string]float64{
		`wsplice_sessions`:                                        1,
		`wsplice_upstreams`:                                       1,
		`wsplice_sessions_opened_total`:                           1,
		`wsplice_upstreams_opened_total`:                          1,
		`wsplice_frames_total{direction="client_to_upstream"}`:    5,
		`wsplice_frames_total{direction="upstream_to_client"}`:    5,
		`wsplice_bytes_total{direction="client_to_upstream"}`:     25,
		`wsplice_bytes_total{direction="upstream_to_client"}`:     25,
		`wsplice_dials_in_flight`:                                 0,
		`wsplice_dial_duration_seconds_count{result="ok"}`:        1,
		`wsplice_dial_duration_seconds_count{result="tcp_error"}`: 1,
		`wsplice_rpc_calls_total{method="connect",result="ok"}`:   1,
		`wsplice_rpc_calls_total{method="connect",result="4007"}`: 1,
		`wsplice_rpc_calls_total{method="unknown",result="4003"}`: 1,
		`wsplice_dial_duration_seconds_count{result="dns_error"}`: 0,
		`wsplice_rpc_calls_total{method="terminate",result="ok"}`: 0,
		`wsplice_backpressure_pauses_total`:                       0,
	}
	got := waitMetrics(t, maddr, want)
	for _, series := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "process_open_fds", "process_resident_memory_bytes"} {
		if got[series] <= 0 {
			t.Errorf("%s = %v, want a positive value", series, got[series])
		}
	}

	c.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4100, "bye"), time.Now().Add(binWait))
	equalInt(t, binWaitClose(t, closes), 4100, "upstream close code")
	equalInt(t, c.closeCode(), 4100, "close echoed")
	got = waitMetrics(t, maddr, map[string]float64{`wsplice_sessions`: 0, `wsplice_upstreams`: 0})
	if got[`wsplice_closes_total{code="4xxx"}`] < 1 {
		t.Errorf("wsplice_closes_total{code=\"4xxx\"} = %v after a 4100 close", got[`wsplice_closes_total{code="4xxx"}`])
	}
}

// waitMetrics scrapes until every series in want has its value, and
// returns the last scrape. The loops publish their counters once per
// turn, so a scrape may briefly lag the traffic.
func waitMetrics(t *testing.T, maddr string, want map[string]float64) map[string]float64 {
	t.Helper()
	return waitScrape(t, maddr, func(got map[string]float64) string {
		var diff []string
		for series, v := range want {
			if g, ok := got[series]; !ok || g != v {
				diff = append(diff, fmt.Sprintf("%s = %v (present: %v), want %v", series, g, ok, v))
			}
		}
		return strings.Join(diff, "\n")
	})
}

// waitScrape scrapes maddr's /metrics until check finds nothing to say
// about it, and returns that scrape.
func waitScrape(t *testing.T, maddr string, check func(map[string]float64) string) map[string]float64 {
	t.Helper()
	deadline := time.Now().Add(binWait)
	for {
		_, body := httpGet(t, "http://"+maddr+"/metrics")
		got := parseMetrics(t, body)
		msg := check(got)
		if msg == "" {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics after %v:\n%s", binWait, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestBinaryMetricsAddressInUse checks that a metrics address wsplice
// cannot listen on is a startup error naming the flag.
func TestBinaryMetricsAddressInUse(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	code, _, stderr := binRun(t, nil, "--listen", "127.0.0.1:0", "--metrics-address", ln.Addr().String())
	if code == 0 || !strings.Contains(stderr, "--metrics-address") || !strings.Contains(stderr, "in use") {
		t.Errorf("exit %d, want non-zero with a message naming --metrics-address; stderr:\n%s", code, stderr)
	}
}

// TestBinaryGCPercent checks the garbage collector's target as the
// binary's own Go collector reports it: defaultGCPercent when GOGC is
// unset or empty, the operator's GOGC otherwise.
func TestBinaryGCPercent(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		env  string
		want float64
	}{
		{"GOGC=", defaultGCPercent},
		{"GOGC=200", 200},
	} {
		t.Run(tc.env, func(t *testing.T) {
			t.Parallel()
			p := binStart(t, []string{tc.env}, "--metrics-address", "127.0.0.1:0")
			maddr := p.waitLog(t, metricsAddrLine)[1]
			waitMetrics(t, maddr, map[string]float64{"go_gc_gogc_percent": tc.want})
		})
	}
}
