package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// disturbedCPU is the share of a core, in percent, used outside the
// server and the harness above which the report flags a cell.
const disturbedCPU = 25

// WriteJSON writes the results as indented JSON.
func WriteJSON(w io.Writer, r *Results) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// MethodNotes explain how the figures were measured; the Markdown report
// ends with them.
var MethodNotes = []string{
	"Throughput: every client opens one session and one upstream to a sink; a pipelined sender writes pre-encoded masked frames, about 256 KiB per write call, so the load generator costs little per frame and the figure is the server's, not the harness's.",
	"Goodput counts payload bytes delivered to the upstream sinks in the measured window: frame headers and the 2-byte index are not counted. It is given in 10^6 bit/s and in the old README's \"mbps\", which meant bytes × 8 / 2^20 per second.",
	"The direct path runs the same clients and sinks with no multiplexer (frames without the index): it is the ceiling on this machine.",
	"The relay target (--relay), where run, is the direct path through a bare TCP relay in a process of its own: a goroutine per direction copying bytes with io.Copy (splice(2) on Linux), parsing nothing. It shows what any proxy process costs on this machine; its server cost is the relay's.",
	"Latency: every client keeps a fixed number of messages in flight through an echo upstream; each payload carries its send time and a sequence number, and every echoed message is timed and checked. One-way is RTT/2. The old README's latency column timed only a write call (its benchmark read nothing back), so it is not comparable with a round trip.",
	"Server cost is read from /proc for the server process the harness starts, wsplice or the relay (a fresh one for every cell): CPU seconds (utime + stime) in the window per 10^9 payload bytes, and VmHWM for the peak RSS. The harness runs on the same cores; its own CPU is shown beside.",
	"Sessions: N idle sessions with one upstream each, opened 32 at a time; server VmRSS and open fds after startup and again once all are open and idle for a second. The harness spreads sessions over child processes when one process would hold too many fds.",
	"The harness asks for 256 KiB kernel buffers on the sockets it owns in throughput mode (clients' send side, sinks' receive side): left to autotuning, 512 pipelined connections push the host into TCP memory pressure, where the kernel stalls connections for seconds. The server's own sockets are left as the server sets them.",
	"Before each cell the harness waits (--quiet-wait) for the machine to be idle; \"other CPU\" is the machine's busy time outside the server and the harness during the window. A cell where it exceeded a quarter of a core runs again (--retries) and the least disturbed attempt is kept, chosen by that figure alone; cells still disturbed are listed.",
	"Reference figures come from the performance issue: another machine and another method. They are printed for orientation, never divided by.",
}

// WriteMarkdown writes the report: tables per mode, references and notes.
func WriteMarkdown(w io.Writer, r *Results) error {
	p := &printer{w: w}
	p.f("## wsplice benchmark\n\n")
	m := r.Machine
	mem := ""
	if m.MemTotalBytes > 0 {
		mem = fmt.Sprintf(", %s RAM", bytesName(m.MemTotalBytes))
	}
	p.f("Machine: %s, %d cores (GOMAXPROCS %d)%s, %s, %s", m.CPU, m.Cores, m.GOMAXPROCS, mem, m.Kernel, m.GoVersion)
	if m.FDLimit > 0 {
		p.f(", fd limit %d", m.FDLimit)
	}
	p.f(". Server and harness share these cores; all traffic is on loopback.")
	if r.LoadStart != "" {
		p.f(" Load average (1 min) %s at the start, %s at the end.", r.LoadStart, r.LoadEnd)
	}
	p.f("\n\n")
	names := make([]string, len(r.Targets))
	for i, t := range r.Targets {
		names[i] = t.Name
	}
	p.f("Run: %s UTC; each cell measures %s after %s of warmup. Targets: %s.\n\n",
		r.Started.Format("2006-01-02 15:04"), secs(r.Settings.DurationSeconds), secs(r.Settings.WarmupSeconds), strings.Join(names, ", "))
	if r.Settings.TLS {
		p.f("Over TLS (--tls): clients dial wss:// to wsplice, and to the upstreams on the direct path; wsplice reaches the upstreams in plain ws://.\n\n")
	}
	for _, n := range r.Notes {
		p.f("- %s\n", n)
	}
	if len(r.Notes) > 0 {
		p.f("\n")
	}
	g := newGrid(r)
	if len(r.Throughput) > 0 {
		g.throughput(p, r)
	}
	if len(r.Latency) > 0 {
		g.latency(p, r)
	}
	if len(r.Sessions) > 0 {
		sessionsTable(p, r)
	}
	errorsList(p, r)
	p.f("### Method\n\n")
	for _, n := range MethodNotes {
		p.f("- %s\n", n)
	}
	return p.err
}

type printer struct {
	w   io.Writer
	err error
}

func (p *printer) f(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format, args...)
	}
}

// grid orders cells: rows are payloads, columns client counts, and in
// every cell the targets in run order.
type grid struct {
	targets  []string
	baseline string // the direct target's name, or ""
	clients  []int
	payloads []int
}

func newGrid(r *Results) *grid {
	g := &grid{clients: r.Settings.Clients, payloads: r.Settings.Payloads}
	for _, t := range r.Targets {
		g.targets = append(g.targets, t.Name)
		if t.Kind == KindDirect && g.baseline == "" {
			g.baseline = t.Name
		}
	}
	if g.baseline == "" {
		// Without the direct path, compare everything with the first
		// target that is not ours, if any.
		for _, t := range r.Targets {
			if t.Kind == KindExternal {
				g.baseline = t.Name
				break
			}
		}
	}
	return g
}

// legend explains a cell: "ours / direct (ours ÷ direct)".
func (g *grid) legend() string {
	s := strings.Join(g.targets, " / ")
	var ratios []string
	for _, t := range g.targets {
		if g.baseline != "" && t != g.baseline {
			ratios = append(ratios, t+" ÷ "+g.baseline)
		}
	}
	if len(ratios) > 0 {
		s += " (" + strings.Join(ratios, ", ") + ")"
	}
	return s + fmt.Sprintf("; %s: the rest of the machine used more than %d%% of a core during that measurement", disturbedMark, disturbedCPU)
}

// cell formats one value per target plus the ratios to the baseline;
// value returns ok false for a failed or missing measurement.
// measured is one figure of one target in a cell.
type measured struct {
	v         float64
	ok        bool // false: failed or missing
	disturbed bool // the rest of the machine was busy during it
}

// disturbedMark follows a figure measured while the rest of the machine
// was busy.
const disturbedMark = "†"

func (g *grid) cell(value func(target string) measured, format func(float64) string) string {
	vals := map[string]float64{}
	var parts []string
	for _, t := range g.targets {
		m := value(t)
		if !m.ok {
			parts = append(parts, "error")
			continue
		}
		vals[t] = m.v
		s := format(m.v)
		if m.disturbed {
			s += disturbedMark
		}
		parts = append(parts, s)
	}
	s := strings.Join(parts, " / ")
	base, ok := vals[g.baseline]
	if g.baseline == "" || !ok || base == 0 {
		return s
	}
	var ratios []string
	for _, t := range g.targets {
		if t == g.baseline {
			continue
		}
		if v, ok := vals[t]; ok {
			ratios = append(ratios, fmt.Sprintf("%.2fx", v/base))
		} else {
			ratios = append(ratios, "–")
		}
	}
	if len(ratios) > 0 {
		s += " (" + strings.Join(ratios, ", ") + ")"
	}
	return s
}

func (g *grid) header(p *printer, extra ...string) {
	p.f("| payload |")
	for _, c := range g.clients {
		p.f(" %d clients |", c)
	}
	for _, e := range extra {
		p.f(" %s |", e)
	}
	p.f("\n|--:|")
	for range len(g.clients) + len(extra) {
		p.f("--:|")
	}
	p.f("\n")
}

func findThroughput(r *Results, target string, clients, payload int) *ThroughputResult {
	for i := range r.Throughput {
		c := &r.Throughput[i]
		if c.Target == target && c.Clients == clients && c.Payload == payload {
			return c
		}
	}
	return nil
}

func findLatency(r *Results, target string, clients, payload int) *LatencyResult {
	for i := range r.Latency {
		c := &r.Latency[i]
		if c.Target == target && c.Clients == clients && c.Payload == payload {
			return c
		}
	}
	return nil
}

func (g *grid) throughput(p *printer, r *Results) {
	tp := func(clients, payload int, f func(*ThroughputResult) float64) func(string) measured {
		return func(t string) measured {
			c := findThroughput(r, t, clients, payload)
			if c == nil || c.Error != "" {
				return measured{}
			}
			return measured{f(c), true, c.OtherCPUPercent > disturbedCPU}
		}
	}
	p.f("### Throughput\n\n")
	p.f("Goodput, 10^6 bit/s of payload (frame headers and the 2-byte index not counted). Cell: %s.\n\n", g.legend())
	g.header(p)
	for _, pl := range g.payloads {
		p.f("| %s |", sizeName(pl))
		for _, c := range g.clients {
			p.f(" %s |", g.cell(tp(c, pl, func(t *ThroughputResult) float64 { return t.MbitPerSec }), num))
		}
		p.f("\n")
	}

	p.f("\nGoodput in the old README's unit, \"mbps\" = bytes × 8 / 2^20 per second. Cell: %s. "+
		"Last column: the performance issue's figures for 32 clients, converted to this unit (other machine and method, for reference only).\n\n", g.legend())
	g.header(p, "reference, 32 clients (other machine/method)")
	for _, pl := range g.payloads {
		p.f("| %s |", sizeName(pl))
		for _, c := range g.clients {
			p.f(" %s |", g.cell(tp(c, pl, func(t *ThroughputResult) float64 { return t.OldMbps }), num))
		}
		var refs []string
		for _, impl := range []string{"old", "direct"} {
			if ref, ok := reference(impl, 32, pl); ok && ref.BytesPerSec > 0 {
				refs = append(refs, fmt.Sprintf("%s %s (%s)", impl, num(ref.BytesPerSec*8/(1<<20)), decimalRate(ref.BytesPerSec)))
			}
		}
		p.f(" %s |\n", orDash(strings.Join(refs, "; ")))
	}

	p.f("\nThe old README's published table, same unit and grid, for comparison with the table above: " +
		"measured on a B8 Azure VM with its own cmd/bench (another machine and method; its benchmark read nothing back).\n\n")
	p.f("| payload |")
	for _, c := range g.clients {
		p.f(" %d clients (old README) |", c)
	}
	p.f("\n|--:|")
	for range g.clients {
		p.f("--:|")
	}
	p.f("\n")
	for _, pl := range g.payloads {
		p.f("| %s |", sizeName(pl))
		for _, c := range g.clients {
			if o, ok := oldREADME(c, pl); ok {
				p.f(" %s mbps |", num(o.Mbps))
			} else {
				p.f(" – |")
			}
		}
		p.f("\n")
	}

	p.f("\nMessages per second delivered to the upstreams. Cell: %s.\n\n", g.legend())
	g.header(p, "reference, 32 clients (other machine/method)")
	for _, pl := range g.payloads {
		p.f("| %s |", sizeName(pl))
		for _, c := range g.clients {
			p.f(" %s |", g.cell(tp(c, pl, func(t *ThroughputResult) float64 { return t.MessagesPerSec }), si))
		}
		ref := "–"
		if rf, ok := reference("old", 32, pl); ok && rf.MessagesPerSec > 0 {
			ref = "old ~" + si(rf.MessagesPerSec)
		}
		p.f(" %s |\n", ref)
	}

	p.f("\nServer cost, read from /proc for the server process (a fresh one per cell). CPU is a share of one core (the machine has %d); "+
		"CPU s/GB is CPU seconds per 10^9 payload bytes forwarded; peak RSS is VmHWM. "+
		"Harness CPU is the load generator and sinks on the same cores (for the direct path it is all the work); "+
		"other CPU is the rest of the machine's busy time (other programs, and kernel network work not charged to a process); "+
		"fairness is the slowest client's goodput over the mean.\n\n", r.Machine.Cores)
	p.f("| payload | clients | target | server CPU | CPU s/GB | peak RSS | fds | harness CPU | other CPU | fairness |\n")
	p.f("|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, pl := range g.payloads {
		for _, c := range g.clients {
			for _, t := range g.targets {
				x := findThroughput(r, t, c, pl)
				if x == nil || x.Error != "" {
					continue
				}
				if x.Server == nil {
					p.f("| %s | %d | %s | – | – | – | – | %.0f%% | %.0f%% | %.2f |\n", sizeName(pl), c, t, x.HarnessCPUPercent, x.OtherCPUPercent, x.Fairness)
					continue
				}
				s := x.Server
				p.f("| %s | %d | %s | %.0f%% | %s | %s | %d | %.0f%% | %.0f%% | %.2f |\n", sizeName(pl), c, t,
					s.CPUPercent, fixed(s.CPUSecondsPerGB), bytesName(s.PeakRSSBytes), s.FDs, x.HarnessCPUPercent, x.OtherCPUPercent, x.Fairness)
			}
		}
	}
	if ref, ok := reference("old", 32, 32); ok {
		p.f("\nReference (other machine/method): the old implementation spent %.0f CPU s per GB at 32 B with 32 clients.\n", ref.CPUSecondsPerGB)
	}
	p.f("\n")
}

func (g *grid) latency(p *printer, r *Results) {
	p.f("### Latency\n\n")
	p.f("Round trips through an echo upstream, %d message(s) in flight per client, timestamps carried in the payload. "+
		"Cell: %s. Times are round trips (RTT) unless marked one-way (= RTT/2).\n\n", r.Settings.Inflight, g.legend())
	lat := func(clients, payload int, f func(*LatencyResult) float64) func(string) measured {
		return func(t string) measured {
			c := findLatency(r, t, clients, payload)
			if c == nil || c.Error != "" {
				return measured{}
			}
			return measured{f(c), true, c.OtherCPUPercent > disturbedCPU}
		}
	}
	p.f("| payload | clients | round trips/s | p50 RTT | p99 RTT | p99.9 RTT | one-way p50 (RTT/2) | old README latency column |\n")
	p.f("|--:|--:|--:|--:|--:|--:|--:|---|\n")
	for _, pl := range g.payloads {
		for _, c := range g.clients {
			old := "–"
			if o, ok := oldREADME(c, pl); ok {
				old = fmt.Sprintf("%.1f µs (a write call, not comparable)", o.LatencyUS)
			}
			p.f("| %s | %d | %s | %s | %s | %s | %s | %s |\n", sizeName(pl), c,
				g.cell(lat(c, pl, func(x *LatencyResult) float64 { return x.RoundTripsPerSec }), si),
				g.cell(lat(c, pl, func(x *LatencyResult) float64 { return x.P50Micros }), micros),
				g.cell(lat(c, pl, func(x *LatencyResult) float64 { return x.P99Micros }), micros),
				g.cell(lat(c, pl, func(x *LatencyResult) float64 { return x.P999Micros }), micros),
				g.cell(lat(c, pl, func(x *LatencyResult) float64 { return x.OneWayP50Micros }), micros), old)
		}
	}
	p.f("\nReference (other machine/method): the old implementation made %s round trips/s with one message in flight per each of %d clients, %.2fx the direct path. "+
		"The old README's latency column (shown in the last column) timed only a write call (its benchmark read nothing back): it is not a round trip.\n\n",
		si(r.ReferenceRoundTrips.RoundTripsPerSec), r.ReferenceRoundTrips.Clients, r.ReferenceRoundTrips.RatioToDirect)
}

func sessionsTable(p *printer, r *Results) {
	p.f("### Sessions\n\n")
	p.f("Idle sessions with one upstream each. Server RSS (VmRSS) and fds after startup → after all sessions are open and idle for a second.\n\n")
	p.f("| target | sessions | harness processes | open time | sessions/s | server RSS | KiB per session | server fds | fds per session |\n")
	p.f("|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, s := range r.Sessions {
		if s.Error != "" {
			p.f("| %s | %d | – | error | – | – | – | – | – |\n", s.Target, s.Sessions)
			continue
		}
		mem, per, fds, fper := "–", "–", "–", "–"
		if s.RSSAfterBytes > 0 {
			mem = bytesName(s.RSSBeforeBytes) + " → " + bytesName(s.RSSAfterBytes)
			per = fmt.Sprintf("%.2f", s.KiBPerSession)
			fds = fmt.Sprintf("%d → %d", s.FDsBefore, s.FDsAfter)
			fper = fmt.Sprintf("%.2f", s.FDsPerSession)
		}
		p.f("| %s | %d | %d | %.2f s | %s | %s | %s | %s | %s |\n", s.Target, s.Sessions, s.Processes,
			s.ConnectSeconds, si(s.SessionsPerSec), mem, per, fds, fper)
	}
	p.f("\nReference: the old implementation used about 40 KiB per idle session with one upstream.\n\n")
}

func errorsList(p *printer, r *Results) {
	var lines []string
	for _, c := range r.Throughput {
		if c.Error != "" {
			lines = append(lines, fmt.Sprintf("throughput, %s, %d clients, %s: %s", c.Target, c.Clients, sizeName(c.Payload), c.Error))
		}
		if c.EventCount > 0 {
			lines = append(lines, fmt.Sprintf("throughput, %s, %d clients, %s: %d server events, e.g. %s", c.Target, c.Clients, sizeName(c.Payload), c.EventCount, strings.Join(c.Events, "; ")))
		}
	}
	for _, c := range r.Latency {
		if c.Error != "" {
			lines = append(lines, fmt.Sprintf("latency, %s, %d clients, %s: %s", c.Target, c.Clients, sizeName(c.Payload), c.Error))
		}
		if c.EventCount > 0 {
			lines = append(lines, fmt.Sprintf("latency, %s, %d clients, %s: %d server events, e.g. %s", c.Target, c.Clients, sizeName(c.Payload), c.EventCount, strings.Join(c.Events, "; ")))
		}
	}
	for _, c := range r.Sessions {
		if c.Error != "" {
			lines = append(lines, fmt.Sprintf("sessions, %s, %d: %s", c.Target, c.Sessions, c.Error))
		}
	}
	var disturbed []string
	for _, c := range r.Throughput {
		if c.Error == "" && c.OtherCPUPercent > disturbedCPU {
			disturbed = append(disturbed, fmt.Sprintf("throughput %s %d×%s (%.0f%%, best of %d)", c.Target, c.Clients, sizeName(c.Payload), c.OtherCPUPercent, c.Attempts))
		}
	}
	for _, c := range r.Latency {
		if c.Error == "" && c.OtherCPUPercent > disturbedCPU {
			disturbed = append(disturbed, fmt.Sprintf("latency %s %d×%s (%.0f%%, best of %d)", c.Target, c.Clients, sizeName(c.Payload), c.OtherCPUPercent, c.Attempts))
		}
	}
	if len(disturbed) > 0 {
		lines = append(lines, fmt.Sprintf("cells where the rest of the machine was busy for more than %d%% of a core (other programs or kernel network work), so their figures are less reliable: %s",
			disturbedCPU, strings.Join(disturbed, ", ")))
	}
	if len(lines) == 0 {
		return
	}
	p.f("### Errors and server events\n\n")
	for _, l := range lines {
		p.f("- %s\n", strings.ReplaceAll(l, "\n", " "))
	}
	p.f("\n")
}

// sizeName writes a payload size as the grid shows it: 32 B, 4098 B,
// 64 KiB, 1 MiB.
func sizeName(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.Itoa(n>>20) + " MiB"
	case n >= 1<<10 && n%(1<<10) == 0 && n > 1024:
		return strconv.Itoa(n>>10) + " KiB"
	}
	return strconv.Itoa(n) + " B"
}

// bytesName writes a byte count in binary units.
func bytesName(n int64) string {
	f := float64(n)
	switch {
	case f >= 1<<30:
		return fmt.Sprintf("%.1f GiB", f/(1<<30))
	case f >= 1<<20:
		return fmt.Sprintf("%.1f MiB", f/(1<<20))
	case f >= 1<<10:
		return fmt.Sprintf("%.0f KiB", f/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// num writes a number with thousands separators and no decimals (one
// below 100).
func num(f float64) string {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "–"
	}
	if f < 100 {
		return strconv.FormatFloat(f, 'f', 1, 64)
	}
	s := strconv.FormatInt(int64(math.Round(f)), 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// si writes a rate with a k or M suffix and three significant digits.
func si(f float64) string {
	switch {
	case f >= 1e6:
		return strconv.FormatFloat(f/1e6, 'f', digits(f/1e6), 64) + "M"
	case f >= 1e3:
		return strconv.FormatFloat(f/1e3, 'f', digits(f/1e3), 64) + "k"
	}
	return strconv.FormatFloat(f, 'f', 0, 64)
}

func digits(f float64) int {
	switch {
	case f >= 100:
		return 0
	case f >= 10:
		return 1
	}
	return 2
}

// micros writes a duration given in microseconds.
func micros(us float64) string {
	switch {
	case us >= 1000:
		return strconv.FormatFloat(us/1000, 'f', digits(us/1000), 64) + " ms"
	}
	return strconv.FormatFloat(us, 'f', digits(us), 64) + " µs"
}

// decimalRate writes bytes per second in decimal units, as the
// performance issue quotes them.
func decimalRate(bps float64) string {
	if bps >= 1e9 {
		return strconv.FormatFloat(bps/1e9, 'f', -1, 64) + " GB/s"
	}
	return strconv.FormatFloat(bps/1e6, 'f', -1, 64) + " MB/s"
}

func fixed(f float64) string { return strconv.FormatFloat(f, 'f', digits(f), 64) }

func secs(s float64) string { return strconv.FormatFloat(s, 'f', -1, 64) + " s" }

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}
