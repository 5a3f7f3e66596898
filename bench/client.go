package bench

import (
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/gobwas/ws"
)

const (
	rpcTimeout = 10 * time.Second
	// maxControlMessage bounds a control message the harness assembles.
	maxControlMessage = 1 << 20
	// maxEvents bounds the server events a client keeps for the report.
	maxEvents = 8
)

var (
	errRPC          = errors.New("bench: control call failed")
	errShortMessage = errors.New("bench: message shorter than its index")
)

// client is one WebSocket of the harness: a session on a multiplexer with
// one upstream opened (prefix holds that upstream's 2-byte index), or for
// the direct target a connection straight to the upstream (prefix empty).
type client struct {
	conn   net.Conn
	sc     *scanner // owned by the goroutine that reads conn
	prefix []byte   // immutable after openClient
	mask   [4]byte  // immutable; every frame of this client uses it

	wmu sync.Mutex // serializes writes by more than one goroutine
}

// rpcMessage is a control-channel message (PROTOCOL.md section 3).
type rpcMessage struct {
	ID     int64           `json:"id"`
	Type   string          `json:"type"`
	Method string          `json:"method,omitempty"`
	Params json.RawMessage `json:"params,omitempty"`
	Result *struct {
		Index       int    `json:"index"`
		Subprotocol string `json:"subprotocol"`
	} `json:"result,omitempty"`
	Error *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Path    string `json:"path"`
	} `json:"error,omitempty"`
}

// openClient connects to upstreamURL, through the multiplexer at
// sessionURL unless sessionURL is empty. scanSize sizes the read buffer.
func openClient(sessionURL, upstreamURL string, mask [4]byte, scanSize int) (*client, error) {
	direct := sessionURL == ""
	dialURL := sessionURL
	if direct {
		dialURL = secureURL(upstreamURL)
	}
	conn, rest, err := dialWebSocket(dialURL)
	if err != nil {
		return nil, err
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	c := &client{conn: conn, sc: newScanner(scanSize, rest), mask: mask}
	if direct {
		return c, nil
	}
	index, err := c.connect(upstreamURL)
	if err != nil {
		conn.Close()
		return nil, err
	}
	c.prefix = binary.BigEndian.AppendUint16(nil, uint16(index))
	return c, nil
}

// connect opens an upstream with the connect method and returns its index.
func (c *client) connect(upstreamURL string) (int, error) {
	const id = 1
	req, err := json.Marshal(map[string]any{
		"id": id, "type": "method", "method": "connect",
		"params": map[string]string{"url": upstreamURL},
	})
	if err != nil {
		return 0, err
	}
	payload := append([]byte{0xff, 0xff}, req...)
	if err := c.write(appendFrame(nil, ws.OpBinary, &c.mask, payload)); err != nil {
		return 0, fmt.Errorf("%w: connect: %w", errRPC, err)
	}
	c.conn.SetReadDeadline(time.Now().Add(rpcTimeout))
	defer c.conn.SetReadDeadline(time.Time{})
	col := &collector{c: c}
	for i := 0; i < 1000; i++ { // bounded by count and by the deadline
		for _, m := range col.take() {
			if m.Type != "reply" || m.ID != id {
				continue
			}
			switch {
			case m.Error != nil:
				return 0, fmt.Errorf("%w: connect: error %d: %s", errRPC, m.Error.Code, m.Error.Message)
			case m.Result == nil:
				return 0, fmt.Errorf("%w: connect: reply without result", errRPC)
			}
			return m.Result.Index, nil
		}
		if err := c.sc.readOnce(c.conn, col); err != nil {
			return 0, fmt.Errorf("%w: connect: %w", errRPC, err)
		}
	}
	return 0, fmt.Errorf("%w: connect: no reply", errRPC)
}

// interrupt ends the client's blocked reads and writes at the end of a
// cell. Over TLS a write cut by a deadline leaves half a record on the
// wire, which the server would report as a bad record MAC; closing the
// TCP connection under the TLS one ends it cleanly (an EOF, mid-record).
func (c *client) interrupt(now time.Time) {
	if tc, ok := c.conn.(*tls.Conn); ok {
		tc.NetConn().Close()
		return
	}
	c.conn.SetDeadline(now)
}

// write writes b whole.
func (c *client) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.conn.Write(b)
	return err
}

// writePong answers a ping from the server.
func (c *client) writePong(p []byte) error {
	return c.write(appendFrame(make([]byte, 0, maxHeaderSize+len(p)), ws.OpPong, &c.mask, p))
}

// collector reads what a server sends a client that is not waiting for
// data: it assembles control-channel messages, counts data messages,
// answers pings and stops at close.
type collector struct {
	c *client

	// Current message.
	inMsg   bool
	isCtl   bool
	head    [2]byte
	headLen int
	body    []byte

	msgs     []rpcMessage // decoded, not yet taken
	dataMsgs int64
	events   []string // warn and onSocketDisconnect, at most maxEvents
	nEvents  int
}

func (col *collector) frame(h *ws.Header, p []byte, off int64, end bool) error {
	if h.OpCode.IsControl() {
		switch h.OpCode {
		case ws.OpPing:
			return col.c.writePong(p)
		case ws.OpClose:
			return errClosed
		}
		return nil
	}
	if off == 0 && h.OpCode != ws.OpContinuation {
		col.inMsg, col.isCtl, col.headLen, col.body = true, false, 0, col.body[:0]
	}
	if !col.inMsg {
		return nil
	}
	if col.headLen < 2 {
		k := copy(col.head[col.headLen:], p)
		col.headLen += k
		p = p[k:]
		if col.headLen == 2 {
			col.isCtl = binary.BigEndian.Uint16(col.head[:]) == controlIndex
		}
	}
	if col.isCtl && len(col.body)+len(p) <= maxControlMessage {
		col.body = append(col.body, p...)
	}
	if !end || !h.Fin {
		return nil
	}
	col.inMsg = false
	if col.headLen < 2 {
		return errShortMessage
	}
	if !col.isCtl {
		col.dataMsgs++
		return nil
	}
	var m rpcMessage
	if err := json.Unmarshal(col.body, &m); err != nil {
		col.event(fmt.Sprintf("undecodable control message: %v", err))
		return nil
	}
	if m.Type == "method" && (m.Method == "warn" || m.Method == "onSocketDisconnect") {
		col.event(m.Method + " " + string(m.Params))
	}
	col.msgs = append(col.msgs, m)
	return nil
}

func (col *collector) event(s string) {
	col.nEvents++
	if len(col.events) < maxEvents {
		col.events = append(col.events, s)
	}
}

// take returns the control messages decoded since the last call.
func (col *collector) take() []rpcMessage {
	m := col.msgs
	col.msgs = nil
	return m
}
