package bench

import (
	"io"

	"github.com/gobwas/ws"
)

// frameHandler receives the frames a scanner finds. Data payloads arrive
// in pieces as they are read, never buffered whole; a control frame's
// payload (at most 125 bytes) arrives in one piece. Slices passed to the
// handler are valid only until the call returns, and the handler may
// modify them in place (to unmask, for example).
type frameHandler interface {
	// frame is called once per frame with its payload, or a piece of it;
	// off is the piece's offset within the frame payload and end reports
	// that the piece completes the frame. A frame with an empty payload
	// gets one call with an empty piece.
	frame(h *ws.Header, p []byte, off int64, end bool) error
}

// scanner splits a byte stream into frames. It is owned by one goroutine.
type scanner struct {
	buf  []byte
	r, w int // unread bytes are buf[r:w]

	// Current frame state.
	inFrame bool
	h       ws.Header
	off     int64 // payload bytes of the current frame already delivered
}

func newScanner(size int, leftover []byte) *scanner {
	s := &scanner{buf: make([]byte, max(size, len(leftover), 256))}
	s.w = copy(s.buf, leftover)
	return s
}

// readOnce reads once from r, unless the buffered bytes already make
// progress possible, and hands every complete piece to hd.
func (s *scanner) readOnce(r io.Reader, hd frameHandler) error {
	if s.r == s.w {
		s.r, s.w = 0, 0
	}
	if err := s.process(hd); err != nil {
		return err
	}
	if s.w == len(s.buf) && s.r > 0 {
		s.w = copy(s.buf, s.buf[s.r:s.w])
		s.r = 0
	}
	n, err := r.Read(s.buf[s.w:])
	s.w += n
	if n > 0 {
		if perr := s.process(hd); perr != nil {
			return perr
		}
	}
	return err
}

// process consumes as much of buf[r:w] as it can.
func (s *scanner) process(hd frameHandler) error {
	for i := 0; i < len(s.buf)+1; i++ { // each turn consumes at least one byte or returns
		if !s.inFrame {
			h, n, err := parseHeader(s.buf[s.r:s.w])
			if err != nil {
				return err
			}
			if n == 0 {
				return nil
			}
			if h.OpCode.IsControl() && int64(s.w-s.r-n) < h.Length {
				return nil // control frames are delivered whole
			}
			s.r += n
			s.h, s.off, s.inFrame = h, 0, true
			if h.Length == 0 {
				s.inFrame = false
				if err := hd.frame(&s.h, nil, 0, true); err != nil {
					return err
				}
				continue
			}
		}
		avail := int64(s.w - s.r)
		if avail == 0 {
			return nil
		}
		take := min(avail, s.h.Length-s.off)
		p := s.buf[s.r : s.r+int(take)]
		s.r += int(take)
		off := s.off
		s.off += take
		end := s.off == s.h.Length
		if end {
			s.inFrame = false
		}
		if err := hd.frame(&s.h, p, off, end); err != nil {
			return err
		}
	}
	return nil
}
