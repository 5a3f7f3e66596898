package splice

import (
	"time"

	"github.com/gobwas/ws"
)

// Kinds of connection.
const (
	kindClient   = 1
	kindUpstream = 2
)

// Connection states, in the order a connection goes through them.
const (
	stHandshake = iota // client: reading the HTTP upgrade request
	stOpen             // frames flow
	stClosing          // flushing its last output, then shutdown(SHUT_WR)
	stLinger           // write side shut; reading and dropping until EOF
	stClosed           // fd closed; the struct may still be referenced
)

// Modes for the payload of the frame being received.
const (
	modeDiscard = iota // drop the bytes
	modeForward        // stream them to rx.dst
	modeControl        // unmask and collect them as a control message
)

// rxState is where a connection's input stands between two reads.
//
// Invariant: remain > 0 only inside a data frame; control frames are
// handled whole (they are at most 125 bytes) and never streamed.
type rxState struct {
	remain  int64    // payload bytes left in the current frame
	mode    uint8    // what to do with them
	fin     bool     // the current frame ends its message
	dst     *conn    // modeForward: the receiving connection
	mask    [4]byte  // modeControl: key of the current frame
	maskOff int      // modeControl: mask offset of the next byte
	inMsg   bool     // a fragmented message has started and not ended
	msgMode uint8    // mode of its continuation frames
	msgDst  *conn    // and their receiver
	_       struct{} // keep fields grouped
}

// conn is one socket: a session's client or one of its upstreams. All
// fields are owned by the goroutine of the engine (loop) it belongs to.
type conn struct {
	e    *engine
	sess *session
	fd   int
	slot uint32 // index in e.conns
	gen  uint32 // generation of slot, so a reused slot is never confused
	kind uint8
	st   uint8

	// Input.
	readable bool   // the last read did not drain the socket
	eof      bool   // the peer shut its write side, or the socket failed
	rdhup    bool   // epoll reported the peer's shutdown or an error
	gotClose bool   // closing: the peer's close frame has arrived
	proxied  bool   // client: its PROXY protocol header has been read
	inReady  bool   // queued in e.ready
	waiting  bool   // upstream: parked in sess.waiters for the client stream
	carry    []byte // bytes read but not consumed yet (pooled)
	rx       rxState

	// Output. Segments queued this turn live in e.segs as a chain;
	// bytes that could not be written are copied into pend (pooled).
	head, tail int32
	dirty      bool // queued in e.dirty
	pend       []byte
	poff       int
	stall      time.Time // when pend stopped shrinking; zero when empty
	hot        bool      // pend is over the high watermark

	// Keepalive, in e.now.UnixNano units: the last byte read, the last
	// ping sent (PROTOCOL.md --ping-interval, --idle-timeout).
	lastIn, pingedAt int64

	// deadline bounds the handshake (stHandshake) and the close
	// (stClosing, stLinger).
	deadline time.Time

	// Upstream only.
	index   uint16
	msgType ws.OpCode // forced opcode toward the upstream, or 0
}

func (c *conn) token() uint64 { return uint64(c.slot) | uint64(c.gen)<<32 }

// pending reports the bytes waiting to be written.
func (c *conn) pending() int { return len(c.pend) - c.poff }
