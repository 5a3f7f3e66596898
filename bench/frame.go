package bench

import (
	"encoding/binary"
	"errors"

	"github.com/gobwas/ws"
)

// Frame-level helpers on byte slices (RFC 6455 section 5.2). The harness
// parses from bytes because it reads big chunks and skips payloads; the
// blocking readers of gobwas/ws would cost a call per header.

var (
	errReservedOpCode = errors.New("bench: reserved opcode")
	errFrameTooLong   = errors.New("bench: frame length over 2^63")
	errControlTooLong = errors.New("bench: control frame payload over 125 bytes")
	errClosed         = errors.New("bench: peer sent close")
)

// maxHeaderSize is the largest frame header: 2 bytes, 8 bytes of extended
// length and a 4-byte mask key.
const maxHeaderSize = 14

// controlIndex is the index of the control channel (PROTOCOL.md section 3).
const controlIndex = 0xffff

// parseHeader parses the frame header at the start of b. It returns the
// header size n, or n == 0 when b holds only part of a header.
func parseHeader(b []byte) (h ws.Header, n int, err error) {
	if len(b) < 2 {
		return h, 0, nil
	}
	h.Fin = b[0]&0x80 != 0
	h.Rsv = (b[0] >> 4) & 0x7
	h.OpCode = ws.OpCode(b[0] & 0x0f)
	h.Masked = b[1]&0x80 != 0
	if h.OpCode.IsReserved() {
		return h, 0, errReservedOpCode
	}
	n = 2
	switch l := b[1] & 0x7f; l {
	case 126:
		if len(b) < 4 {
			return h, 0, nil
		}
		h.Length = int64(binary.BigEndian.Uint16(b[2:4]))
		n = 4
	case 127:
		if len(b) < 10 {
			return h, 0, nil
		}
		u := binary.BigEndian.Uint64(b[2:10])
		if u>>63 != 0 {
			return h, 0, errFrameTooLong
		}
		h.Length = int64(u)
		n = 10
	default:
		h.Length = int64(l)
	}
	if h.OpCode.IsControl() && h.Length > 125 {
		return h, 0, errControlTooLong
	}
	if h.Masked {
		if len(b) < n+4 {
			return h, 0, nil
		}
		copy(h.Mask[:], b[n:n+4])
		n += 4
	}
	return h, n, nil
}

// appendHeader appends the encoding of h to dst.
func appendHeader(dst []byte, h ws.Header) []byte {
	b0 := byte(h.OpCode) | h.Rsv<<4
	if h.Fin {
		b0 |= 0x80
	}
	var b1 byte
	if h.Masked {
		b1 = 0x80
	}
	switch {
	case h.Length < 126:
		dst = append(dst, b0, b1|byte(h.Length))
	case h.Length <= 0xffff:
		dst = append(dst, b0, b1|126)
		dst = binary.BigEndian.AppendUint16(dst, uint16(h.Length))
	default:
		dst = append(dst, b0, b1|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(h.Length))
	}
	if h.Masked {
		dst = append(dst, h.Mask[:]...)
	}
	return dst
}

// appendFrame appends one whole frame with payload p. When mask is non-nil
// the frame is masked with it (a client frame, RFC 6455 section 5.3).
func appendFrame(dst []byte, op ws.OpCode, mask *[4]byte, p []byte) []byte {
	h := ws.Header{Fin: true, OpCode: op, Length: int64(len(p))}
	if mask != nil {
		h.Masked = true
		h.Mask = *mask
	}
	dst = appendHeader(dst, h)
	start := len(dst)
	dst = append(dst, p...)
	if mask != nil {
		ws.Cipher(dst[start:], *mask, 0)
	}
	return dst
}
