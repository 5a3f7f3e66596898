package bench

import (
	"bytes"
	"errors"
	"testing"

	"github.com/gobwas/ws"
)

// headerCases is shared by the parse and the encode tests.
var headerCases = []struct {
	name string
	h    ws.Header
	wire []byte
}{
	{"empty binary", ws.Header{Fin: true, OpCode: ws.OpBinary}, []byte{0x82, 0x00}},
	{"7-bit length", ws.Header{Fin: true, OpCode: ws.OpText, Length: 125}, []byte{0x81, 125}},
	{"16-bit length", ws.Header{Fin: true, OpCode: ws.OpBinary, Length: 126}, []byte{0x82, 126, 0, 126}},
	{"16-bit max", ws.Header{OpCode: ws.OpBinary, Length: 0xffff}, []byte{0x02, 126, 0xff, 0xff}},
	{"64-bit length", ws.Header{Fin: true, OpCode: ws.OpContinuation, Length: 1 << 16}, []byte{0x80, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
	{"masked", ws.Header{Fin: true, OpCode: ws.OpBinary, Length: 4, Masked: true, Mask: [4]byte{1, 2, 3, 4}}, []byte{0x82, 0x84, 1, 2, 3, 4}},
	{"masked 64-bit", ws.Header{Fin: true, OpCode: ws.OpBinary, Length: 1 << 20, Masked: true, Mask: [4]byte{9, 9, 9, 9}},
		[]byte{0x82, 0xff, 0, 0, 0, 0, 0, 0x10, 0, 0, 9, 9, 9, 9}},
	{"ping", ws.Header{Fin: true, OpCode: ws.OpPing, Length: 3}, []byte{0x89, 3}},
	{"rsv1", ws.Header{Fin: true, Rsv: 4, OpCode: ws.OpBinary}, []byte{0xc2, 0}},
}

func TestParseHeader(t *testing.T) {
	for _, tc := range headerCases {
		t.Run(tc.name, func(t *testing.T) {
			h, n, err := parseHeader(tc.wire)
			if err != nil || n != len(tc.wire) || h != tc.h {
				t.Fatalf("parseHeader = %+v, %d, %v; want %+v, %d", h, n, err, tc.h, len(tc.wire))
			}
			for i := range len(tc.wire) {
				if _, n, err := parseHeader(tc.wire[:i]); n != 0 || err != nil {
					t.Fatalf("parseHeader of %d bytes = %d, %v; want need-more", i, n, err)
				}
			}
		})
	}
}

func TestAppendHeader(t *testing.T) {
	for _, tc := range headerCases {
		t.Run(tc.name, func(t *testing.T) {
			if got := appendHeader(nil, tc.h); !bytes.Equal(got, tc.wire) {
				t.Fatalf("appendHeader = %x, want %x", got, tc.wire)
			}
		})
	}
}

func TestParseHeaderErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		wire []byte
		want error
	}{
		{"reserved opcode", []byte{0x83, 0}, errReservedOpCode},
		{"long ping", []byte{0x89, 126, 0, 126}, errControlTooLong},
		{"length over 2^63", []byte{0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0}, errFrameTooLong},
	} {
		if _, _, err := parseHeader(tc.wire); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
}

// recorder keeps what a scanner hands it, unmasked.
type recorder struct {
	frames []ws.Header
	data   []byte
}

func (r *recorder) frame(h *ws.Header, p []byte, off int64, end bool) error {
	if h.Masked {
		ws.Cipher(p, h.Mask, int(off))
	}
	r.data = append(r.data, p...)
	if end {
		r.frames = append(r.frames, *h)
	}
	return nil
}

// oneByteReader returns one byte per Read, the hardest split for a
// scanner.
type oneByteReader struct{ b []byte }

func (r *oneByteReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, errClosed
	}
	p[0] = r.b[0]
	r.b = r.b[1:]
	return 1, nil
}

func TestScannerSplits(t *testing.T) {
	mask := [4]byte{0xa, 0xb, 0xc, 0xd}
	big := bytes.Repeat([]byte("0123456789"), 7000)
	var stream []byte
	stream = appendFrame(stream, ws.OpBinary, &mask, []byte("hello"))
	stream = appendFrame(stream, ws.OpPing, &mask, []byte("ping"))
	stream = appendFrame(stream, ws.OpBinary, nil, nil)
	stream = appendFrame(stream, ws.OpText, &mask, big)
	want := append(append([]byte("hello"), "ping"...), big...)

	for _, size := range []int{256, 4096, 1 << 20} {
		rec := &recorder{}
		sc := newScanner(size, stream[:3]) // a partial header as leftover
		r := &oneByteReader{b: stream[3:]}
		for i := 0; i < len(stream)+10; i++ {
			if err := sc.readOnce(r, rec); err != nil {
				break
			}
		}
		if len(rec.frames) != 4 || !bytes.Equal(rec.data, want) {
			t.Errorf("buffer %d: %d frames, %d bytes; want 4 frames, %d bytes", size, len(rec.frames), len(rec.data), len(want))
		}
	}
}

func TestBuildBatch(t *testing.T) {
	mask := [4]byte{1, 2, 3, 4}
	for _, payload := range []int{1, 32, 4098, 1 << 20} {
		b := buildBatch([]byte{0, 7}, payload, mask)
		frames := 0
		for r := 0; r < len(b); frames++ {
			h, n, err := parseHeader(b[r:])
			if err != nil || n == 0 || !h.Masked || h.Length != int64(payload+2) {
				t.Fatalf("payload %d: frame %d: %+v, %d, %v", payload, frames, h, n, err)
			}
			idx := append([]byte(nil), b[r+n:r+n+2]...)
			ws.Cipher(idx, h.Mask, 0)
			if idx[0] != 0 || idx[1] != 7 {
				t.Fatalf("payload %d: index %x", payload, idx)
			}
			r += n + int(h.Length)
		}
		if frames < 1 || (payload < 1000 && len(b) < batchSize-payload-maxHeaderSize-2) {
			t.Errorf("payload %d: %d frames, %d bytes", payload, frames, len(b))
		}
	}
}
