//go:build linux

package splice

import (
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
	remain  int64   // payload bytes left in the current frame
	dst     *conn   // modeForward: the receiving connection
	msgDst  *conn   // the receiver of the message's continuation frames
	mask    [4]byte // modeControl: key of the current frame
	maskOff int32   // modeControl: mask offset of the next byte
	mode    uint8   // what to do with the current frame's payload
	msgMode uint8   // mode of the message's continuation frames
	fin     bool    // the current frame ends its message
	inMsg   bool    // a fragmented message has started and not ended
}

// conn is one socket: a session's client or one of its upstreams. All
// fields are owned by the goroutine of the engine (loop) it belongs to.
type conn struct {
	e    *engine
	sess *session
	fd   int
	slot uint32 // index in e.conns
	gen  uint32 // generation of slot, so a reused slot is never confused

	// Input.
	carry []byte // bytes read but not consumed yet (pooled)
	rx    rxState

	// Output. Segments queued this turn live in e.segs as a chain;
	// bytes that could not be written are copied into pend (pooled).
	pend       []byte
	poff       int32
	head, tail int32

	// Times, in e.ns units (UnixNano; 0: none). stall: when pend stopped
	// shrinking. deadline: bounds the handshake (stHandshake) and the
	// close (stClosing, stLinger). lastIn, pingedAt: the last byte read
	// and the last keepalive ping (--ping-interval, --idle-timeout).
	stall, deadline  int64
	lastIn, pingedAt int64

	// Upstream only.
	index   uint16
	msgType ws.OpCode // forced opcode toward the upstream, or 0

	kind     uint8
	st       uint8
	readable bool // the last read did not drain the socket
	eof      bool // the peer shut its write side, or the socket failed
	rdhup    bool // epoll reported the peer's shutdown or an error
	gotClose bool // closing: the peer's close frame has arrived
	proxied  bool // client: its PROXY protocol header has been read
	hasSrc   bool // client: e.srcAddr holds its address
	inReady  bool // queued in e.ready
	waiting  bool // upstream: parked in sess.waiters for the client stream
	dirty    bool // queued in e.dirty
	hot      bool // pend is over the high watermark
}

func (c *conn) token() uint64 { return uint64(c.slot) | uint64(c.gen)<<32 }

// pending reports the bytes waiting to be written.
func (c *conn) pending() int { return len(c.pend) - int(c.poff) }
