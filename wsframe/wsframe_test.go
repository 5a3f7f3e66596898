package wsframe_test

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"testing"

	"github.com/gobwas/ws"

	"github.com/wsplice/wsplice/wsframe"
)

// testMask is the masking key of every masked case: four distinct bytes, so
// a key copied in the wrong order or rotated by mistake shows.
var testMask = [4]byte{0xa1, 0xb2, 0xc3, 0xd4}

// headerCase is one valid header and its exact encoding (RFC 6455 section
// 5.2). The same table drives Parse (bytes to header) and Put/Size/PutBefore
// (header to bytes), and is cross-checked against gobwas/ws.
type headerCase struct {
	name string
	h    ws.Header
	enc  []byte
}

var headerCases = []headerCase{
	// Payload length boundaries, unmasked (server to client).
	{
		name: "len0",
		h:    ws.Header{Fin: true, OpCode: ws.OpBinary, Length: 0},
		enc:  []byte{0x82, 0x00},
	},
	{
		name: "len1",
		h:    ws.Header{Fin: true, OpCode: ws.OpBinary, Length: 1},
		enc:  []byte{0x82, 0x01},
	},
	{
		name: "len125/last7bit",
		h:    ws.Header{Fin: true, OpCode: ws.OpBinary, Length: 125},
		enc:  []byte{0x82, 0x7d},
	},
	{
		name: "len126/first16bit",
		h:    ws.Header{Fin: true, OpCode: ws.OpBinary, Length: 126},
		enc:  []byte{0x82, 0x7e, 0x00, 0x7e},
	},
	{
		name: "len127",
		h:    ws.Header{Fin: true, OpCode: ws.OpBinary, Length: 127},
		enc:  []byte{0x82, 0x7e, 0x00, 0x7f},
	},
	{
		name: "len256",
		h:    ws.Header{Fin: true, OpCode: ws.OpBinary, Length: 256},
		enc:  []byte{0x82, 0x7e, 0x01, 0x00},
	},
	{
		name: "len65535/last16bit",
		h:    ws.Header{Fin: true, OpCode: ws.OpBinary, Length: 65535},
		enc:  []byte{0x82, 0x7e, 0xff, 0xff},
	},
	{
		name: "len65536/first64bit",
		h:    ws.Header{Fin: true, OpCode: ws.OpBinary, Length: 65536},
		enc:  []byte{0x82, 0x7f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00},
	},
	{
		name: "len2^32",
		h:    ws.Header{Fin: true, OpCode: ws.OpBinary, Length: 1 << 32},
		enc:  []byte{0x82, 0x7f, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00},
	},
	{
		name: "lenMaxInt64",
		h:    ws.Header{Fin: true, OpCode: ws.OpBinary, Length: math.MaxInt64},
		enc:  []byte{0x82, 0x7f, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
	},

	// The same boundaries, masked (client to server): the key follows the
	// extended length.
	{
		name: "masked/len0",
		h:    ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Mask: testMask, Length: 0},
		enc:  []byte{0x82, 0x80, 0xa1, 0xb2, 0xc3, 0xd4},
	},
	{
		name: "masked/len125",
		h:    ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Mask: testMask, Length: 125},
		enc:  []byte{0x82, 0xfd, 0xa1, 0xb2, 0xc3, 0xd4},
	},
	{
		name: "masked/len126",
		h:    ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Mask: testMask, Length: 126},
		enc:  []byte{0x82, 0xfe, 0x00, 0x7e, 0xa1, 0xb2, 0xc3, 0xd4},
	},
	{
		name: "masked/len65535",
		h:    ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Mask: testMask, Length: 65535},
		enc:  []byte{0x82, 0xfe, 0xff, 0xff, 0xa1, 0xb2, 0xc3, 0xd4},
	},
	{
		name: "masked/len65536",
		h:    ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Mask: testMask, Length: 65536},
		enc:  []byte{0x82, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0xa1, 0xb2, 0xc3, 0xd4},
	},
	{
		name: "masked/lenMaxInt64",
		h:    ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Mask: testMask, Length: math.MaxInt64},
		enc:  []byte{0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xa1, 0xb2, 0xc3, 0xd4},
	},
	{
		name: "masked/zeroKey",
		h:    ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Length: 5},
		enc:  []byte{0x82, 0x85, 0x00, 0x00, 0x00, 0x00},
	},

	// Every non-reserved opcode, with FIN on and, for data frames, off
	// (RFC 6455 section 5.4: only data frames may be fragmented).
	{
		name: "continuation/fin",
		h:    ws.Header{Fin: true, OpCode: ws.OpContinuation, Length: 3},
		enc:  []byte{0x80, 0x03},
	},
	{
		name: "continuation/nofin",
		h:    ws.Header{OpCode: ws.OpContinuation, Length: 3},
		enc:  []byte{0x00, 0x03},
	},
	{
		name: "continuation/nofin/masked/len126",
		h:    ws.Header{OpCode: ws.OpContinuation, Masked: true, Mask: testMask, Length: 126},
		enc:  []byte{0x00, 0xfe, 0x00, 0x7e, 0xa1, 0xb2, 0xc3, 0xd4},
	},
	{
		name: "text/fin",
		h:    ws.Header{Fin: true, OpCode: ws.OpText, Length: 5},
		enc:  []byte{0x81, 0x05},
	},
	{
		name: "text/nofin",
		h:    ws.Header{OpCode: ws.OpText, Length: 5},
		enc:  []byte{0x01, 0x05},
	},
	{
		name: "text/nofin/masked/len65536",
		h:    ws.Header{OpCode: ws.OpText, Masked: true, Mask: testMask, Length: 65536},
		enc:  []byte{0x01, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0xa1, 0xb2, 0xc3, 0xd4},
	},
	{
		name: "binary/nofin",
		h:    ws.Header{OpCode: ws.OpBinary, Length: 5},
		enc:  []byte{0x02, 0x05},
	},
	{
		name: "binary/nofin/masked",
		h:    ws.Header{OpCode: ws.OpBinary, Masked: true, Mask: testMask, Length: 5},
		enc:  []byte{0x02, 0x85, 0xa1, 0xb2, 0xc3, 0xd4},
	},
	{
		name: "close/len0",
		h:    ws.Header{Fin: true, OpCode: ws.OpClose, Length: 0},
		enc:  []byte{0x88, 0x00},
	},
	{
		name: "close/len125/masked",
		h:    ws.Header{Fin: true, OpCode: ws.OpClose, Masked: true, Mask: testMask, Length: 125},
		enc:  []byte{0x88, 0xfd, 0xa1, 0xb2, 0xc3, 0xd4},
	},
	{
		name: "ping/len0",
		h:    ws.Header{Fin: true, OpCode: ws.OpPing, Length: 0},
		enc:  []byte{0x89, 0x00},
	},
	{
		name: "ping/len125",
		h:    ws.Header{Fin: true, OpCode: ws.OpPing, Length: 125},
		enc:  []byte{0x89, 0x7d},
	},
	{
		name: "ping/masked",
		h:    ws.Header{Fin: true, OpCode: ws.OpPing, Masked: true, Mask: testMask, Length: 4},
		enc:  []byte{0x89, 0x84, 0xa1, 0xb2, 0xc3, 0xd4},
	},
	{
		name: "pong/len0",
		h:    ws.Header{Fin: true, OpCode: ws.OpPong, Length: 0},
		enc:  []byte{0x8a, 0x00},
	},
	{
		name: "pong/len125/masked",
		h:    ws.Header{Fin: true, OpCode: ws.OpPong, Masked: true, Mask: testMask, Length: 125},
		enc:  []byte{0x8a, 0xfd, 0xa1, 0xb2, 0xc3, 0xd4},
	},
}

// errorCase is a complete header that Parse must refuse with err.
type errorCase struct {
	name string
	enc  []byte
	err  error
}

// errorCases returns the headers Parse refuses: RSV bits (no extension is
// negotiated), reserved opcodes, long or fragmented control frames (RFC 6455
// section 5.5) and a 64-bit length with its top bit set (section 5.2).
func errorCases() []errorCase {
	cases := []errorCase{
		{
			name: "rsv1",
			enc:  []byte{0xc2, 0x00},
			err:  wsframe.ErrReservedBits,
		},
		{
			name: "rsv2",
			enc:  []byte{0xa2, 0x00},
			err:  wsframe.ErrReservedBits,
		},
		{
			name: "rsv3",
			enc:  []byte{0x92, 0x00},
			err:  wsframe.ErrReservedBits,
		},
		{
			name: "rsv1/masked/len126",
			enc:  []byte{0xc1, 0xfe, 0x00, 0x7e, 0xa1, 0xb2, 0xc3, 0xd4},
			err:  wsframe.ErrReservedBits,
		},
		{
			name: "ping/len126",
			enc:  []byte{0x89, 0x7e, 0x00, 0x7e},
			err:  wsframe.ErrControlTooLong,
		},
		{
			name: "close/len126/masked",
			enc:  []byte{0x88, 0xfe, 0x00, 0x7e, 0xa1, 0xb2, 0xc3, 0xd4},
			err:  wsframe.ErrControlTooLong,
		},
		{
			name: "pong/len65536",
			enc:  []byte{0x8a, 0x7f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00},
			err:  wsframe.ErrControlTooLong,
		},
		{
			name: "ping/nofin",
			enc:  []byte{0x09, 0x00},
			err:  wsframe.ErrControlFragmented,
		},
		{
			name: "ping/nofin/masked",
			enc:  []byte{0x09, 0x84, 0xa1, 0xb2, 0xc3, 0xd4},
			err:  wsframe.ErrControlFragmented,
		},
		{
			name: "close/nofin",
			enc:  []byte{0x08, 0x02},
			err:  wsframe.ErrControlFragmented,
		},
		{
			name: "pong/nofin",
			enc:  []byte{0x0a, 0x00},
			err:  wsframe.ErrControlFragmented,
		},
		{
			name: "len64/msb",
			enc:  []byte{0x82, 0x7f, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00},
			err:  wsframe.ErrLengthOverflow,
		},
		{
			name: "len64/allOnes",
			enc:  []byte{0x82, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
			err:  wsframe.ErrLengthOverflow,
		},
		{
			name: "len64/msb/masked",
			enc:  []byte{0x82, 0xff, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xa1, 0xb2, 0xc3, 0xd4},
			err:  wsframe.ErrLengthOverflow,
		},
	}
	for _, op := range []byte{0x3, 0x4, 0x5, 0x6, 0x7, 0xb, 0xc, 0xd, 0xe, 0xf} {
		cases = append(cases, errorCase{
			name: fmt.Sprintf("opcode%#x", op),
			enc:  []byte{0x80 | op, 0x00},
			err:  wsframe.ErrReservedOpCode,
		})
		cases = append(cases, errorCase{
			name: fmt.Sprintf("opcode%#x/nofin/masked", op),
			enc:  []byte{op, 0x81, 0xa1, 0xb2, 0xc3, 0xd4},
			err:  wsframe.ErrReservedOpCode,
		})
	}
	return cases
}

// parseErrors are all the sentinels Parse may return.
var parseErrors = []error{
	wsframe.ErrReservedBits,
	wsframe.ErrReservedOpCode,
	wsframe.ErrControlTooLong,
	wsframe.ErrControlFragmented,
	wsframe.ErrLengthOverflow,
}

func TestParse(t *testing.T) {
	t.Parallel()
	for _, tc := range headerCases {
		t.Run(tc.name, func(t *testing.T) {
			h, n, err := wsframe.Parse(tc.enc)
			if err != nil || n != len(tc.enc) || h != tc.h {
				t.Fatalf(
					"Parse(% x) = %+v, %d, %v\nwant %+v, %d, nil",
					tc.enc, h, n, err, tc.h, len(tc.enc),
				)
			}

			// Bytes after the header (the payload, the next frame) are
			// not part of it.
			more := append(bytes.Clone(tc.enc), 0xff, 0x00, 0x81, 0x7f)
			h, n, err = wsframe.Parse(more)
			if err != nil || n != len(tc.enc) || h != tc.h {
				t.Fatalf(
					"Parse(% x) with trailing bytes = %+v, %d, %v\nwant %+v, %d, nil",
					more, h, n, err, tc.h, len(tc.enc),
				)
			}
		})
	}
}

// TestParsePrefix checks that a header cut anywhere asks for more bytes
// (n == 0, err == nil) rather than failing or guessing: on a non-blocking
// socket any split is normal.
func TestParsePrefix(t *testing.T) {
	t.Parallel()
	for _, tc := range headerCases {
		t.Run(tc.name, func(t *testing.T) {
			for i := range len(tc.enc) {
				_, n, err := wsframe.Parse(tc.enc[:i])
				if n != 0 || err != nil {
					t.Fatalf(
						"Parse(% x), a %d-byte prefix of % x: n = %d, err = %v; want 0, nil",
						tc.enc[:i], i, tc.enc, n, err,
					)
				}
			}
		})
	}
	_, n, err := wsframe.Parse(nil)
	if n != 0 || err != nil {
		t.Fatalf(
			"Parse(nil): n = %d, err = %v; want 0, nil",
			n, err,
		)
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range errorCases() {
		t.Run(tc.name, func(t *testing.T) {
			_, n, err := wsframe.Parse(tc.enc)
			if n != 0 || !errors.Is(err, tc.err) {
				t.Fatalf(
					"Parse(% x): n = %d, err = %v; want 0, %v",
					tc.enc, n, err, tc.err,
				)
			}
			// A prefix is either still incomplete or already known bad
			// (a 64-bit length is refused before its masking key
			// arrives); it is never accepted nor refused for another
			// reason.
			for i := range len(tc.enc) {
				_, n, err := wsframe.Parse(tc.enc[:i])
				if n != 0 || (err != nil && !errors.Is(err, tc.err)) {
					t.Fatalf(
						"Parse(% x), a %d-byte prefix: n = %d, err = %v; want 0 and nil or %v",
						tc.enc[:i], i, n, err, tc.err,
					)
				}
			}
		})
	}
}

// TestParseNonMinimal pins that Parse, like gobwas/ws, accepts a length in a
// longer form than needed: RFC 6455 section 5.2 makes the minimal form a duty
// of the sender, not a check of the receiver. Size and Put then give the
// shorter form.
func TestParseNonMinimal(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		enc  []byte
		h    ws.Header
	}{
		{
			name: "len5/in16bit",
			enc:  []byte{0x82, 0x7e, 0x00, 0x05},
			h:    ws.Header{Fin: true, OpCode: ws.OpBinary, Length: 5},
		},
		{
			name: "len125/in64bit/masked",
			enc:  []byte{0x82, 0xff, 0, 0, 0, 0, 0, 0, 0, 0x7d, 0xa1, 0xb2, 0xc3, 0xd4},
			h:    ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Mask: testMask, Length: 125},
		},
		{
			name: "len65535/in64bit",
			enc:  []byte{0x82, 0x7f, 0, 0, 0, 0, 0, 0, 0xff, 0xff},
			h:    ws.Header{Fin: true, OpCode: ws.OpBinary, Length: 65535},
		},
		{
			name: "ping/len125/in16bit",
			enc:  []byte{0x89, 0x7e, 0x00, 0x7d},
			h:    ws.Header{Fin: true, OpCode: ws.OpPing, Length: 125},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, n, err := wsframe.Parse(tc.enc)
			if err != nil || n != len(tc.enc) || h != tc.h {
				t.Fatalf(
					"Parse(% x) = %+v, %d, %v\nwant %+v, %d, nil",
					tc.enc, h, n, err, tc.h, len(tc.enc),
				)
			}
			if s := wsframe.Size(&h); s >= n {
				t.Fatalf(
					"Size(%+v) = %d; want less than the %d bytes parsed",
					h, s, n,
				)
			}
		})
	}
}

func TestPutSize(t *testing.T) {
	t.Parallel()
	for _, tc := range headerCases {
		t.Run(tc.name, func(t *testing.T) {
			if s := wsframe.Size(&tc.h); s != len(tc.enc) {
				t.Fatalf(
					"Size(%+v) = %d; want %d",
					tc.h, s, len(tc.enc),
				)
			}

			// Put writes exactly Size bytes and nothing past them.
			buf := bytes.Repeat([]byte{0xee}, wsframe.MaxHeaderSize+4)
			n := wsframe.Put(buf, &tc.h)
			if n != len(tc.enc) || !bytes.Equal(buf[:n], tc.enc) {
				t.Fatalf(
					"Put(%+v) = %d, % x; want %d, % x",
					tc.h, n, buf[:n], len(tc.enc), tc.enc,
				)
			}
			for i := n; i < len(buf); i++ {
				if buf[i] != 0xee {
					t.Fatalf(
						"Put(%+v) wrote byte %d, past its %d bytes: % x",
						tc.h, i, n, buf,
					)
				}
			}

			// A buffer of exactly Size bytes is enough.
			exact := make([]byte, len(tc.enc))
			if n := wsframe.Put(exact, &tc.h); n != len(tc.enc) || !bytes.Equal(exact, tc.enc) {
				t.Fatalf(
					"Put(%+v) into %d bytes = %d, % x; want % x",
					tc.h, len(exact), n, exact, tc.enc,
				)
			}
		})
	}
}

// TestGobwasAgrees checks every table case against gobwas/ws's own
// blocking reader and writer, so that wsframe and the library it stands in
// for cannot drift apart.
func TestGobwasAgrees(t *testing.T) {
	t.Parallel()
	for _, tc := range headerCases {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := ws.WriteHeader(&buf, tc.h)
			if err != nil || !bytes.Equal(buf.Bytes(), tc.enc) {
				t.Fatalf(
					"ws.WriteHeader(%+v) = % x, %v; want % x",
					tc.h, buf.Bytes(), err, tc.enc,
				)
			}
			h, err := ws.ReadHeader(bytes.NewReader(tc.enc))
			if err != nil || h != tc.h {
				t.Fatalf(
					"ws.ReadHeader(% x) = %+v, %v; want %+v",
					tc.enc, h, err, tc.h,
				)
			}
		})
	}
}

// TestMatrix runs every valid combination of opcode, FIN, mask and boundary
// length through Put, Parse and gobwas/ws.
func TestMatrix(t *testing.T) {
	t.Parallel()
	ops := []ws.OpCode{ws.OpContinuation, ws.OpText, ws.OpBinary, ws.OpClose, ws.OpPing, ws.OpPong}
	lengths := []int64{0, 1, 125, 126, 127, 65535, 65536, math.MaxInt64}
	for _, op := range ops {
		for _, fin := range []bool{false, true} {
			for _, masked := range []bool{false, true} {
				for _, l := range lengths {
					h := ws.Header{Fin: fin, OpCode: op, Masked: masked, Length: l}
					if masked {
						h.Mask = testMask
					}
					if op.IsControl() && (!fin || l > wsframe.MaxControlPayload) {
						continue // refused by Parse; see TestParseErrors
					}
					var want bytes.Buffer
					err := ws.WriteHeader(&want, h)
					if err != nil {
						t.Fatalf(
							"ws.WriteHeader(%+v): %v",
							h, err,
						)
					}
					var buf [wsframe.MaxHeaderSize]byte
					n := wsframe.Put(buf[:], &h)
					if !bytes.Equal(buf[:n], want.Bytes()) || wsframe.Size(&h) != n {
						t.Fatalf(
							"Put(%+v) = % x, Size %d; ws.WriteHeader gives % x",
							h, buf[:n], wsframe.Size(&h), want.Bytes(),
						)
					}
					got, m, err := wsframe.Parse(buf[:n])
					if err != nil || m != n || got != h {
						t.Fatalf(
							"Parse(% x) = %+v, %d, %v; want %+v, %d, nil",
							buf[:n], got, m, err, h, n,
						)
					}
				}
			}
		}
	}
}

func TestPutBefore(t *testing.T) {
	t.Parallel()
	for _, tc := range headerCases {
		t.Run(tc.name, func(t *testing.T) {
			const end = 20
			buf := bytes.Repeat([]byte{0xee}, end+8)
			start := wsframe.PutBefore(buf, end, &tc.h)
			if start != end-len(tc.enc) || !bytes.Equal(buf[start:end], tc.enc) {
				t.Fatalf(
					"PutBefore(buf, %d, %+v) = %d, buf[start:end] = % x; want %d, % x",
					end, tc.h, start, buf[start:end], end-len(tc.enc), tc.enc,
				)
			}
			for i, c := range buf {
				if (i < start || i >= end) && c != 0xee {
					t.Fatalf(
						"PutBefore(buf, %d, %+v) wrote byte %d outside [%d, %d): % x",
						end, tc.h, i, start, end, buf,
					)
				}
			}

			// The tightest fit: end == Size(h) puts the header at 0.
			exact := make([]byte, len(tc.enc))
			if s := wsframe.PutBefore(exact, len(exact), &tc.h); s != 0 || !bytes.Equal(exact, tc.enc) {
				t.Fatalf(
					"PutBefore(%d bytes, %d, %+v) = %d, % x; want 0, % x",
					len(exact), len(exact), tc.h, s, exact, tc.enc,
				)
			}
		})
	}
}

// payloadByte is the plaintext used throughout: not periodic in 4, so a
// mask applied at the wrong offset cannot cancel out.
func payloadByte(i int) byte { return byte(i*7 + i>>8 + 3) }

func plaintext(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = payloadByte(i)
	}
	return p
}

// naiveCipher is RFC 6455 section 5.3 as written: octet i of the payload is
// XORed with octet i MOD 4 of the key, counting from the payload start.
func naiveCipher(p []byte, m [4]byte, off int) {
	for i := range p {
		p[i] ^= m[(off+i)%4]
	}
}

func TestRotateMaskValues(t *testing.T) {
	t.Parallel()
	m := [4]byte{1, 2, 3, 4}
	want := [8][4]byte{
		{1, 2, 3, 4},
		{2, 3, 4, 1},
		{3, 4, 1, 2},
		{4, 1, 2, 3},
		{1, 2, 3, 4},
		{2, 3, 4, 1},
		{3, 4, 1, 2},
		{4, 1, 2, 3},
	}
	for k := range 8 {
		if got := wsframe.RotateMask(m, k); got != want[k] {
			t.Errorf(
				"RotateMask(%v, %d) = %v; want %v",
				m, k, got, want[k],
			)
		}
	}
	// Rotations compose: by a then by b is by a+b.
	for a := range 8 {
		for b := range 8 {
			got := wsframe.RotateMask(wsframe.RotateMask(testMask, a), b)
			if want := wsframe.RotateMask(testMask, a+b); got != want {
				t.Errorf(
					"RotateMask(RotateMask(m, %d), %d) = %v; want RotateMask(m, %d) = %v",
					a, b, got, a+b, want,
				)
			}
		}
	}
}

// TestRotateMaskBy2 is the wsplice case: the client masks
// [index (2 bytes)][body] as one payload; the body forwarded alone, still
// masked, is unmasked from offset 0 with the key rotated by 2.
func TestRotateMaskBy2(t *testing.T) {
	t.Parallel()
	for _, n := range []int{2, 3, 5, 6, 17, 18, 19, 64, 130, 1000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			plain := plaintext(n)
			p := bytes.Clone(plain)
			ws.Cipher(p, testMask, 0)

			body := bytes.Clone(p[2:])
			wsframe.Cipher(body, wsframe.RotateMask(testMask, 2), 0)
			if !bytes.Equal(body, plain[2:]) {
				t.Fatalf(
					"unmasking p[2:] with RotateMask(m, 2):\ngot  % x\nwant % x",
					body, plain[2:],
				)
			}
		})
	}
}

// TestRotateMaskBy checks every k in 0..7 against both the naive cipher and
// ws.Cipher continued at offset k.
func TestRotateMaskBy(t *testing.T) {
	t.Parallel()
	const n = 67
	plain := plaintext(n)
	p := bytes.Clone(plain)
	ws.Cipher(p, testMask, 0)
	for k := range 8 {
		got := bytes.Clone(p[k:])
		wsframe.Cipher(got, wsframe.RotateMask(testMask, k), 0)
		if !bytes.Equal(got, plain[k:]) {
			t.Errorf(
				"k=%d: unmasking p[k:] with RotateMask(m, k) from offset 0:\ngot  % x\nwant % x",
				k, got, plain[k:],
			)
		}
		ref := bytes.Clone(p[k:])
		naiveCipher(ref, testMask, k)
		if !bytes.Equal(ref, plain[k:]) {
			t.Fatalf(
				"k=%d: test setup: naive cipher at offset k does not unmask",
				k,
			)
		}
	}
}

func TestCipher(t *testing.T) {
	t.Parallel()
	// Lengths around the 16-byte blocks and 64-byte loops of the vector
	// paths, at every offset.
	for _, n := range []int{0, 1, 3, 4, 15, 16, 17, 19, 31, 32, 33, 63, 64, 65, 67, 79, 80, 127, 128, 129, 1000} {
		for off := range 8 {
			plain := plaintext(n)
			want := bytes.Clone(plain)
			naiveCipher(want, testMask, off)
			got := bytes.Clone(plain)
			wsframe.Cipher(got, testMask, off)
			if !bytes.Equal(got, want) {
				t.Fatalf(
					"Cipher(%d bytes, m, %d):\ngot  % x\nwant % x",
					n, off, got, want,
				)
			}
			wsframe.Cipher(got, testMask, off)
			if !bytes.Equal(got, plain) {
				t.Fatalf(
					"Cipher(%d bytes, m, %d) twice is not the identity",
					n, off,
				)
			}
		}
	}
}

func TestIndex(t *testing.T) {
	t.Parallel()
	for _, idx := range []uint16{0, 1, 0x00ff, 0x0100, 0x1234, 0xfffe, 0xffff} {
		p := []byte{byte(idx >> 8), byte(idx), 0x55, 0x66}
		if got := wsframe.Index(p, testMask, false); got != idx {
			t.Errorf(
				"Index(% x, m, false) = %#04x; want %#04x",
				p, got, idx,
			)
		}
		// With masked false the key is ignored.
		if got := wsframe.Index(p, [4]byte{0xff, 0xff, 0xff, 0xff}, false); got != idx {
			t.Errorf(
				"Index(% x, ff.., false) = %#04x; want %#04x",
				p, got, idx,
			)
		}
		ws.Cipher(p, testMask, 0)
		if got := wsframe.Index(p, testMask, true); got != idx {
			t.Errorf(
				"Index(% x, m, true) = %#04x; want %#04x",
				p, got, idx,
			)
		}
		// Exactly two bytes are enough.
		if got := wsframe.Index(p[:2], testMask, true); got != idx {
			t.Errorf(
				"Index(% x, m, true) = %#04x; want %#04x",
				p[:2], got, idx,
			)
		}
	}
}

// clientFrame builds what a client sends: a masked frame whose payload is a
// 2-byte big-endian index followed by body.
func clientFrame(t testing.TB, idx uint16, body []byte, m [4]byte) []byte {
	t.Helper()
	h := ws.Header{
		Fin:    true,
		OpCode: ws.OpBinary,
		Masked: true,
		Mask:   m,
		Length: int64(2 + len(body)),
	}
	var buf bytes.Buffer
	err := ws.WriteHeader(&buf, h)
	if err != nil {
		t.Fatal(err)
	}
	payload := append([]byte{byte(idx >> 8), byte(idx)}, body...)
	ws.Cipher(payload, m, 0)
	buf.Write(payload)
	return buf.Bytes()
}

// TestRewriteInPlace is the reactor's hot path: a client frame
// [header][index][body] becomes the upstream frame [header'][body] without
// copying or re-masking the body. header' has length L-2 and the key rotated
// by 2, and PutBefore writes it so that it ends where the body starts. The
// lengths cross every length-form boundary on either side.
func TestRewriteInPlace(t *testing.T) {
	t.Parallel()
	for _, l := range []int{2, 3, 125, 126, 127, 128, 129, 65535, 65536, 65537, 65538, 65539} {
		t.Run(fmt.Sprint(l), func(t *testing.T) {
			const idx = 0xbeef
			body := plaintext(l - 2)
			frame := clientFrame(t, idx, body, testMask)

			h, n, err := wsframe.Parse(frame)
			if err != nil || n == 0 || h.Length != int64(l) || !h.Masked {
				t.Fatalf(
					"Parse(client frame) = %+v, %d, %v",
					h, n, err,
				)
			}
			if got := wsframe.Index(frame[n:], h.Mask, h.Masked); got != idx {
				t.Fatalf(
					"Index = %#04x; want %#04x",
					got, idx,
				)
			}
			up := ws.Header{
				Fin:    h.Fin,
				OpCode: h.OpCode,
				Masked: true,
				Mask:   wsframe.RotateMask(h.Mask, 2),
				Length: h.Length - 2,
			}
			bodyStart := n + 2
			start := wsframe.PutBefore(frame, bodyStart, &up)
			if start < 0 || start+wsframe.Size(&up) != bodyStart {
				t.Fatalf(
					"PutBefore(frame, %d, %+v) = %d; want the header to end at %d",
					bodyStart, up, start, bodyStart,
				)
			}
			out := frame[start:]

			// Read back as the upstream server would.
			r := bytes.NewReader(out)
			got, err := ws.ReadHeader(r)
			if err != nil || got != up {
				t.Fatalf(
					"ws.ReadHeader(upstream frame) = %+v, %v; want %+v",
					got, err, up,
				)
			}
			rest := out[len(out)-r.Len():]
			if int64(len(rest)) != got.Length {
				t.Fatalf(
					"upstream payload is %d bytes; header says %d",
					len(rest), got.Length,
				)
			}
			ws.Cipher(rest, got.Mask, 0)
			if !bytes.Equal(rest, body) {
				t.Fatalf(
					"upstream payload unmasked differs from the client body (%d bytes)",
					len(body),
				)
			}
		})
	}
}

// Sinks keep the compiler from dropping the calls measured below.
var (
	sinkHeader ws.Header
	sinkInt    int
	sinkErr    error
	sinkMask   [4]byte
	sinkIndex  uint16
)

// TestNoAllocs asserts the per-event path allocates nothing (STYLE.md
// convention 3). Not parallel: AllocsPerRun counts the whole process.
func TestNoAllocs(t *testing.T) {
	masked := caseNamed(t, "pong/len125/masked")
	long := ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Mask: testMask, Length: 65536}
	bad := errorCases()[0].enc
	buf := make([]byte, 64)
	payload := plaintext(4096)
	cases := []struct {
		name string
		f    func()
	}{
		{
			name: "Parse",
			f: func() {
				sinkHeader, sinkInt, sinkErr = wsframe.Parse(masked.enc)
			},
		},
		{
			name: "Parse/error",
			f: func() {
				sinkHeader, sinkInt, sinkErr = wsframe.Parse(bad)
			},
		},
		{
			name: "Parse/partial",
			f: func() {
				sinkHeader, sinkInt, sinkErr = wsframe.Parse(masked.enc[:3])
			},
		},
		{
			name: "Put",
			f: func() {
				sinkInt = wsframe.Put(buf, &long)
			},
		},
		{
			name: "Size",
			f: func() {
				sinkInt = wsframe.Size(&long)
			},
		},
		{
			name: "PutBefore",
			f: func() {
				sinkInt = wsframe.PutBefore(buf, 20, &long)
			},
		},
		{
			name: "RotateMask",
			f: func() {
				sinkMask = wsframe.RotateMask(sinkMask, 2)
			},
		},
		{
			name: "Index",
			f: func() {
				sinkIndex = wsframe.Index(payload, testMask, true)
			},
		},
		{
			name: "Cipher",
			f: func() {
				wsframe.Cipher(payload, testMask, 3)
			},
		},
	}
	for _, tc := range cases {
		if a := testing.AllocsPerRun(100, tc.f); a != 0 {
			t.Errorf(
				"%s: %v allocations per run; want 0",
				tc.name, a,
			)
		}
	}
}

// caseNamed returns the headerCases entry called name.
func caseNamed(t testing.TB, name string) headerCase {
	t.Helper()
	for _, tc := range headerCases {
		if tc.name == name {
			return tc
		}
	}
	t.Fatalf(
		"no header case %q",
		name,
	)
	return headerCase{}
}

// benchCases are one header of each length form.
var benchCases = []string{"len0", "masked/len125", "masked/len65536"}

func BenchmarkParse(b *testing.B) {
	for _, name := range benchCases {
		tc := caseNamed(b, name)
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sinkHeader, sinkInt, sinkErr = wsframe.Parse(tc.enc)
			}
		})
	}
}

func BenchmarkPut(b *testing.B) {
	var buf [wsframe.MaxHeaderSize]byte
	for _, name := range benchCases {
		tc := caseNamed(b, name)
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sinkInt = wsframe.Put(buf[:], &tc.h)
			}
		})
	}
}

// TestParseIntoReusesHeader: the engine parses every frame of a read into
// one ws.Header, so ParseInto must set each field, whatever the previous
// frame left there: here a masked final frame with a 64-bit length, then an
// unmasked continuation with a 7-bit length.
func TestParseIntoReusesHeader(t *testing.T) {
	first := ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Mask: [4]byte{9, 8, 7, 6}, Length: 70000}
	second := ws.Header{OpCode: ws.OpContinuation, Length: 5}
	var h ws.Header
	for _, want := range []ws.Header{first, second} {
		buf := make([]byte, wsframe.MaxHeaderSize)
		n := wsframe.Put(buf, &want)
		got, err := wsframe.ParseInto(&h, buf[:n])
		if err != nil || got != n || h != want {
			t.Fatalf("ParseInto(% x) = %d, %v, header %+v; want %d, nil, %+v", buf[:n], got, err, h, n, want)
		}
	}
}
