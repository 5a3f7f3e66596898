package bench

// Reference figures from wsplice's performance issue, for the old
// implementation (mixer/wsplice, whose README table users compare with)
// and for the direct path, measured on a 2-core machine of this kind with
// 32 clients. They come from another machine and another method: the
// report prints them beside the measured cells for orientation only, never
// as a ratio. The old README's own latency column timed a write call only
// (its benchmark read nothing back), so it is not a round trip; the issue
// gives no figure from it, and none is reproduced here.

// Reference is one published figure.
type Reference struct {
	// Impl is "old" (the old implementation) or "direct" (no
	// multiplexer).
	Impl    string `json:"impl"`
	Clients int    `json:"clients"`
	// Payload is the payload size of the grid row the figure belongs to
	// (the "4 KiB" figures sit on the old grid's 4098-byte row).
	Payload int `json:"payload"`
	// BytesPerSec is goodput in bytes per second, 0 when not given.
	BytesPerSec float64 `json:"bytes_per_sec,omitempty"`
	// MessagesPerSec is 0 when not given.
	MessagesPerSec float64 `json:"messages_per_sec,omitempty"`
	// CPUSecondsPerGB is the server's CPU seconds per 10^9 bytes, 0 when
	// not given.
	CPUSecondsPerGB float64 `json:"cpu_seconds_per_gb,omitempty"`
	// Text is the figure as the issue states it.
	Text string `json:"text"`
}

// ReferenceLatency is the published round-trip figure.
type ReferenceLatency struct {
	Impl             string  `json:"impl"`
	Clients          int     `json:"clients"`
	Inflight         int     `json:"inflight"`
	RoundTripsPerSec float64 `json:"round_trips_per_sec"`
	RatioToDirect    float64 `json:"ratio_to_direct"`
	Text             string  `json:"text"`
}

// References are the throughput figures, 32 clients.
var References = []Reference{
	{Impl: "old", Clients: 32, Payload: 32, BytesPerSec: 8.9e6, MessagesPerSec: 300e3, CPUSecondsPerGB: 173,
		Text: "about 300k msg/s, 8.9 MB/s; 173 CPU s per GB"},
	{Impl: "old", Clients: 32, Payload: 128, MessagesPerSec: 300e3,
		Text: "about 300k msg/s (every size up to 1 KiB)"},
	{Impl: "old", Clients: 32, Payload: 1024, BytesPerSec: 247e6, MessagesPerSec: 300e3,
		Text: "about 300k msg/s, 247 MB/s"},
	{Impl: "old", Clients: 32, Payload: 4098, BytesPerSec: 585e6,
		Text: "585 MB/s (4 KiB)"},
	{Impl: "old", Clients: 32, Payload: 65536, BytesPerSec: 1.07e9,
		Text: "1.07 GB/s"},
	{Impl: "direct", Clients: 32, Payload: 32, BytesPerSec: 2.5e9,
		Text: "2.5 GB/s"},
	{Impl: "direct", Clients: 32, Payload: 4098, BytesPerSec: 6.5e9,
		Text: "6.5 GB/s (4 KiB)"},
}

// ReferenceRoundTrips is the latency figure: one message in flight per
// client.
var ReferenceRoundTrips = ReferenceLatency{
	Impl: "old", Clients: 32, Inflight: 1, RoundTripsPerSec: 30e3, RatioToDirect: 0.42,
	Text: "30k round trips/s with one message in flight per client, 0.42x the direct path",
}

// reference returns the figure of impl for a grid cell, if any.
func reference(impl string, clients, payload int) (Reference, bool) {
	for _, r := range References {
		if r.Impl == impl && r.Clients == clients && r.Payload == payload {
			return r, true
		}
	}
	return Reference{}, false
}

// OldREADME is the table the old implementation's README published
// (mixer/wsplice, "measurements were taken on an B8 Azure VM using the
// binary in ./cmd/bench"): throughput in its "mbps" (bytes x 8 / 2^20 per
// second) and a latency that timed a write call only. Another machine
// and another method: printed beside the cells, never divided by.
type OldREADMECell struct {
	Clients   int     `json:"clients"`
	Payload   int     `json:"payload"`
	Mbps      float64 `json:"mbps"`
	LatencyUS float64 `json:"latency_us"`
}

// OldREADME holds every cell of that table.
var OldREADME = []OldREADMECell{
	{32, 32, 231, 11.2}, {32, 128, 235, 9.2}, {32, 1024, 2940, 10.7}, {32, 4098, 11200, 14.8},
	{128, 32, 327, 9.3}, {128, 128, 333, 10.4}, {128, 1024, 2520, 11.4}, {128, 4098, 14600, 11.3},
	{512, 32, 46.3, 7.3}, {512, 128, 533, 7.9}, {512, 1024, 3570, 10.3}, {512, 4098, 11200, 14.2},
}

// oldREADME returns the old README's cell, if it has one.
func oldREADME(clients, payload int) (OldREADMECell, bool) {
	for _, c := range OldREADME {
		if c.Clients == clients && c.Payload == payload {
			return c, true
		}
	}
	return OldREADMECell{}, false
}
