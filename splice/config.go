//go:build linux

package splice

import (
	"crypto/x509"
	"log/slog"
	"net/netip"
	"time"

	"github.com/wsplice/wsplice/rpc"
)

// Config holds what the engine needs. Zero values take the defaults of
// PROTOCOL.md section 5 (see withDefaults).
type Config struct {
	// FrameSizeLimit bounds a control message (after its index), in bytes.
	FrameSizeLimit int64
	// WriteTimeout disconnects a peer that accepts no bytes for this long.
	WriteTimeout time.Duration
	// ReadTimeout bounds the client's WebSocket handshake.
	ReadTimeout time.Duration
	// DialTimeout bounds an upstream dial plus handshake.
	DialTimeout time.Duration
	// MaxUpstreamsPerSession bounds the indices in use per session.
	MaxUpstreamsPerSession int
	// MaxSessions bounds concurrent sessions (0: none).
	MaxSessions int
	// PingInterval is the keepalive period (0: off).
	PingInterval time.Duration
	// IdleTimeout drops a peer silent this long (0: off).
	IdleTimeout time.Duration
	// Policy decides which upstream hosts and addresses may be dialed.
	// Nil means rpc.HostPolicy{} (any public host).
	Policy *rpc.HostPolicy
	// SourceAddrs are local addresses upstream dials are spread over (one
	// of the dialed address's family, round robin); empty: the kernel
	// chooses.
	SourceAddrs []netip.Addr
	// UpstreamRootCAs returns the roots that wss:// upstreams are
	// verified against. It is called on every such dial, so the pool may
	// change while the server runs (a reload). Nil, or a nil pool: the
	// system roots.
	UpstreamRootCAs func() *x509.CertPool
	// ProxyProtocol expects a PROXY protocol v1 or v2 header (HAProxy's
	// send-proxy-v2) before the upgrade request; its source address is
	// the client's in logs and per-address limits. Off, such a header is
	// a bad request.
	ProxyProtocol bool
	// MaxSessionsPerIP bounds concurrent sessions per client address
	// (0: none); beyond it the upgrade gets HTTP 429.
	MaxSessionsPerIP int
	// Origins, when not empty, restricts the browser origins that may
	// open a session (HTTP 403 before the upgrade otherwise).
	Origins *OriginPolicy
	// NoSplice turns off splice(2) for the rest of large client frames
	// (16 KiB and more), which otherwise move to their upstream kernel to
	// kernel instead of through a read and a write (for benchmarks).
	NoSplice bool
	// Hooks receive instrumentation events (metrics); nil fields are
	// skipped.
	Hooks Hooks
	// Loops is the number of event loops (0: GOMAXPROCS).
	Loops int
	// Logger receives session-level events, never per-frame ones.
	Logger *slog.Logger
}
