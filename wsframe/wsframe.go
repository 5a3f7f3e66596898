// Package wsframe parses and writes RFC 6455 frame headers on byte slices.
//
// It is the reactor's view of gobwas/ws: the same types (ws.Header,
// ws.OpCode), but parsing reports "need more bytes" instead of blocking,
// since a half-received header is normal on a non-blocking socket. Nothing
// here allocates.
package wsframe

import (
	"encoding/binary"
	"errors"
	"math/bits"

	"github.com/gobwas/ws"
)

// MaxHeaderSize is the longest frame header: 2 bytes, an 8-byte extended
// length and a 4-byte masking key (RFC 6455 section 5.2).
const MaxHeaderSize = 14

// MaxControlPayload is the largest control frame payload (RFC 6455
// section 5.5: "All control frames MUST have a payload length of 125 bytes
// or less").
const MaxControlPayload = 125

// Errors reported by Parse. Each one is a protocol violation that closes
// the connection with 1002 (RFC 6455 section 7.4.1), except ErrControlTooLong
// which PROTOCOL.md reports as 1009.
var (
	ErrReservedBits      = errors.New("wsframe: reserved bits set without a negotiated extension")
	ErrReservedOpCode    = errors.New("wsframe: reserved opcode")
	ErrControlTooLong    = errors.New("wsframe: control frame payload over 125 bytes")
	ErrControlFragmented = errors.New("wsframe: fragmented control frame")
	ErrLengthOverflow    = errors.New("wsframe: 64-bit payload length with its most significant bit set")
)

// Parse reads the frame header at the start of b. It returns the header and
// its length n. When b holds only part of a header, n is 0 and err is nil:
// the caller reads more and calls again.
//
// Parse checks what RFC 6455 section 5.2 lets a receiver check from the
// header alone: no RSV bits (wsplice negotiates no extension), no reserved
// opcode, control frames short and unfragmented.
//
// Parse returns the header by value, for callers off the hot path; the
// forwarding path uses ParseInto.
func Parse(b []byte) (h ws.Header, n int, err error) {
	n, err = ParseInto(&h, b)
	return h, n, err
}

// ParseInto is Parse writing the header into *h, which it sets whole
// when n > 0.
//
// The header functions take *ws.Header because ws.Header keeps its mask
// in an array: Go's register ABI passes such a struct through memory, so
// a header built field by field and then copied by value is read back
// with one wide load from several narrow stores. The CPU cannot forward
// those stores and stalls on every frame. Passing pointers and building
// headers field by field cut the server's CPU per GB at 32-byte frames
// from 2.8 to 2.0 s (README, Performance).
func ParseInto(h *ws.Header, b []byte) (n int, err error) {
	if len(b) < 2 {
		return 0, nil
	}
	h.Fin = b[0]&0x80 != 0
	h.Rsv = (b[0] & 0x70) >> 4
	h.OpCode = ws.OpCode(b[0] & 0x0f)
	h.Masked = b[1]&0x80 != 0
	n = 2
	switch l := b[1] & 0x7f; l {
	case 126:
		if len(b) < 4 {
			return 0, nil
		}
		h.Length = int64(binary.BigEndian.Uint16(b[2:4]))
		n = 4
	case 127:
		if len(b) < 10 {
			return 0, nil
		}
		u := binary.BigEndian.Uint64(b[2:10])
		if u>>63 != 0 {
			return 0, ErrLengthOverflow
		}
		h.Length = int64(u)
		n = 10
	default:
		h.Length = int64(l)
	}
	h.Mask = [4]byte{}
	if h.Masked {
		if len(b) < n+4 {
			return 0, nil
		}
		copy(h.Mask[:], b[n:n+4])
		n += 4
	}
	switch {
	case h.Rsv != 0:
		return 0, ErrReservedBits
	case h.OpCode.IsReserved():
		return 0, ErrReservedOpCode
	case h.OpCode.IsControl() && h.Length > MaxControlPayload:
		return 0, ErrControlTooLong
	case h.OpCode.IsControl() && !h.Fin:
		return 0, ErrControlFragmented
	}
	return n, nil
}

// Size returns the encoded length of h.
func Size(h *ws.Header) int {
	n := 2
	switch {
	case h.Length > 0xffff:
		n += 8
	case h.Length > 125:
		n += 2
	}
	if h.Masked {
		n += 4
	}
	return n
}

// Put writes h at the start of b, which must hold Size(h) bytes, and
// returns the number of bytes written. Lengths use the shortest encoding
// (RFC 6455 section 5.2: "the minimal number of bytes MUST be used").
func Put(b []byte, h *ws.Header) int {
	b[0] = byte(h.OpCode) | h.Rsv<<4
	if h.Fin {
		b[0] |= 0x80
	}
	var m byte
	if h.Masked {
		m = 0x80
	}
	n := 2
	switch {
	case h.Length > 0xffff:
		b[1] = m | 127
		binary.BigEndian.PutUint64(b[2:10], uint64(h.Length))
		n = 10
	case h.Length > 125:
		b[1] = m | 126
		binary.BigEndian.PutUint16(b[2:4], uint16(h.Length))
		n = 4
	default:
		b[1] = m | byte(h.Length)
	}
	if h.Masked {
		copy(b[n:n+4], h.Mask[:])
		n += 4
	}
	return n
}

// PutBefore writes h so that it ends right before b[end] and returns where
// it starts. The caller guarantees end >= Size(h).
func PutBefore(b []byte, end int, h *ws.Header) int {
	start := end - Size(h)
	Put(b[start:], h)
	return start
}

// RotateMask returns the masking key for a payload that starts k bytes
// later in the same masked stream: byte i of the new payload was masked
// with m[(i+k)%4] (RFC 6455 section 5.3). It works on the key as one
// 32-bit word, so the result is written with one store, not four.
func RotateMask(m [4]byte, k int) (r [4]byte) {
	binary.LittleEndian.PutUint32(r[:], bits.RotateLeft32(binary.LittleEndian.Uint32(m[:]), -8*(k&3)))
	return r
}

// Index decodes the 2-byte big-endian index at the start of a payload
// masked with m (or plain when masked is false). p must hold 2 bytes.
func Index(p []byte, m [4]byte, masked bool) uint16 {
	if masked {
		return uint16(p[0]^m[0])<<8 | uint16(p[1]^m[1])
	}
	return uint16(p[0])<<8 | uint16(p[1])
}

// Cipher XORs p in place with mask m, starting at mask offset off: it both
// masks and unmasks (RFC 6455 section 5.3). It is ws.Cipher, named here so
// callers need one import for frame work.
func Cipher(p []byte, m [4]byte, off int) { ws.Cipher(p, m, off) }
