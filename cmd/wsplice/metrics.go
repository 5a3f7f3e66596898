//go:build linux

package main

// metrics.go: --metrics-address, Prometheus /metrics and /healthz.
//
// Nothing here runs per frame. The event loops count in plain per-loop
// fields (splice/stats.go); statsCollector reads their sum, splice.Server
// Stats, only when Prometheus scrapes. The two vectors below are updated
// from splice.Hooks, which run on worker goroutines once per dial and per
// control request.

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wsplice/wsplice/splice"
)

// metrics is the registry behind /metrics. A nil *metrics (no
// --metrics-address) is valid: it installs no hooks and serves nothing.
type metrics struct {
	reg  *prometheus.Registry
	dial *prometheus.HistogramVec // wsplice_dial_duration_seconds{result}
	rpc  *prometheus.CounterVec   // wsplice_rpc_calls_total{method,result}
}

// dialResults are the results splice.Hooks.Dial reports. They are set to
// zero up front so that rate() and absent() work before the first failure.
var dialResults = []string{"ok", "refused_by_policy", "dns_error", "tcp_error", "tls_error", "handshake_error"}

// newMetrics returns the metrics for --metrics-address, or nil when it is
// empty. Go runtime and process metrics are included.
func newMetrics(addr string) *metrics {
	if addr == "" {
		return nil
	}
	m := &metrics{
		reg: prometheus.NewRegistry(),
		dial: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "wsplice_dial_duration_seconds",
			Help: "Upstream dials (DNS, TCP, TLS and WebSocket handshake) by result, and how long they took.",
			// 5ms to 10s: the default --dial-timeout is the top bucket.
			Buckets: prometheus.DefBuckets,
		}, []string{"result"}),
		rpc: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsplice_rpc_calls_total",
			Help: "Control channel requests by method and result (ok, or the error code).",
		}, []string{"method", "result"}),
	}
	for _, r := range dialResults {
		m.dial.WithLabelValues(r)
	}
	for _, method := range []string{"connect", "terminate"} {
		m.rpc.WithLabelValues(method, "ok")
	}
	m.reg.MustRegister(m.dial, m.rpc,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// hooks returns the splice.Hooks that feed the dial and RPC metrics.
func (m *metrics) hooks() splice.Hooks {
	if m == nil {
		return splice.Hooks{}
	}
	return splice.Hooks{
		Dial: func(result string, d time.Duration) {
			m.dial.WithLabelValues(result).Observe(d.Seconds())
		},
		RPC: func(method, result string) {
			m.rpc.WithLabelValues(rpcMethodLabel(method), result).Inc()
		},
	}
}

// rpcMethodLabel bounds the method label: the method name comes from the
// client, and every distinct label value would be a new time series.
func rpcMethodLabel(method string) string {
	switch method {
	case "connect", "terminate":
		return method
	case "":
		return "none"
	}
	return "unknown"
}

// watch adds the server's own counters (sessions, frames, bytes...) to the
// registry.
func (m *metrics) watch(srv *splice.Server) {
	if m != nil {
		m.reg.MustRegister(statsCollector{stats: srv.Stats})
	}
}

// handler serves /metrics and /healthz: 200 "ok" while serving, 503
// "draining" once draining reports true (SIGTERM arrived).
func (m *metrics) handler(draining func() bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		// A few scrapes at a time are plenty; more wait, so a burst of
		// scrapes cannot pile up collections.
		MaxRequestsInFlight: 4,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if draining() {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "draining\n")
			return
		}
		io.WriteString(w, "ok\n")
	})
	return mux
}

// serve listens on addr (a listen error is returned, so a taken port is a
// startup error) and serves the handler until the returned stop is called.
func (m *metrics) serve(addr string, lc net.ListenConfig, draining func() bool, log *slog.Logger) (stop func(), err error) {
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, err
	}
	hs := &http.Server{
		Handler:           m.handler(draining),
		ReadHeaderTimeout: 5 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics", "err", err)
		}
	}()
	log.Info("metrics", "addr", ln.Addr().String(), "paths", "/metrics /healthz")
	return func() {
		hs.Close()
		<-done
	}, nil
}

// statsCollector exposes splice.Server.Stats as constant metrics, read at
// scrape time: the loops never take a lock or allocate for the sake of a
// metric.
type statsCollector struct {
	stats func() splice.Stats
}

var (
	descSessions = prometheus.NewDesc("wsplice_sessions",
		"Client sessions open now.", nil, nil)
	descSessionsOpened = prometheus.NewDesc("wsplice_sessions_opened_total",
		"Client sessions opened (WebSocket handshake done).", nil, nil)
	descUpstreams = prometheus.NewDesc("wsplice_upstreams",
		"Upstream WebSockets open now.", nil, nil)
	descUpstreamsOpened = prometheus.NewDesc("wsplice_upstreams_opened_total",
		"Upstream WebSockets opened.", nil, nil)
	descFrames = prometheus.NewDesc("wsplice_frames_total",
		"Data frames forwarded, by direction.", []string{"direction"}, nil)
	descBytes = prometheus.NewDesc("wsplice_bytes_total",
		"Data payload bytes forwarded, by direction.", []string{"direction"}, nil)
	descPauses = prometheus.NewDesc("wsplice_backpressure_pauses_total",
		"Times a connection's output queue went over its high watermark, pausing the side that feeds it.", nil, nil)
	descSpliced = prometheus.NewDesc("wsplice_spliced_bytes_total",
		"Of the client-to-upstream payload bytes, those moved kernel to kernel with splice(2) (the rest of large frames).", nil, nil)
	descCloses = prometheus.NewDesc("wsplice_closes_total",
		"Close codes seen or sent for sessions and upstreams: 1000 to 1015 each, 3xxx, 4xxx, other.", []string{"code"}, nil)
	descDialsInFlight = prometheus.NewDesc("wsplice_dials_in_flight",
		"Upstream dials in progress.", nil, nil)
	descLoopClients = prometheus.NewDesc("wsplice_loop_clients",
		"Client connections on each event loop: how evenly they are spread.", []string{"loop"}, nil)
	descPooled = prometheus.NewDesc("wsplice_pooled_bytes",
		"Buffer bytes the event loops keep for reuse, as of their last sweep; back to 0 within about two seconds of the traffic ending.", nil, nil)
)

// Directions of wsplice_frames_total and wsplice_bytes_total.
const (
	dirClientToUpstream = "client_to_upstream"
	dirUpstreamToClient = "upstream_to_client"
)

func (c statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSessions, descSessionsOpened, descUpstreams, descUpstreamsOpened,
		descFrames, descBytes, descPauses, descSpliced, descCloses, descDialsInFlight, descLoopClients, descPooled} {
		ch <- d
	}
}

func (c statsCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(descSessions, float64(st.Sessions))
	counter(descSessionsOpened, st.SessionsOpened)
	gauge(descUpstreams, float64(st.Upstreams))
	counter(descUpstreamsOpened, st.UpstreamsOpened)
	counter(descFrames, st.FramesIn, dirClientToUpstream)
	counter(descFrames, st.FramesOut, dirUpstreamToClient)
	counter(descBytes, st.BytesIn, dirClientToUpstream)
	counter(descBytes, st.BytesOut, dirUpstreamToClient)
	counter(descPauses, st.BackpressurePauses)
	counter(descSpliced, st.SplicedBytes)
	for code, n := range st.Closes {
		counter(descCloses, n, code)
	}
	gauge(descDialsInFlight, float64(st.DialsInFlight))
	for i, n := range st.LoopClients {
		gauge(descLoopClients, float64(n), strconv.Itoa(i))
	}
	gauge(descPooled, float64(st.PooledBytes))
}
