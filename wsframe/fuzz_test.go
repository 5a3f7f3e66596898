package wsframe_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"slices"
	"testing"

	"github.com/gobwas/ws"

	"github.com/wsplice/wsplice/wsframe"
)

// violations lists the errors that apply to a decoded header, in no
// particular order: Parse must report one of them, or succeed when there is
// none. It restates RFC 6455 sections 5.2 and 5.5 independently of Parse.
func violations(h ws.Header) []error {
	var errs []error
	if h.Rsv != 0 {
		errs = append(errs, wsframe.ErrReservedBits)
	}
	op := byte(h.OpCode)
	if (op >= 0x3 && op <= 0x7) || op >= 0xb {
		errs = append(errs, wsframe.ErrReservedOpCode)
	}
	if op&0x8 != 0 {
		if h.Length > 125 {
			errs = append(errs, wsframe.ErrControlTooLong)
		}
		if !h.Fin {
			errs = append(errs, wsframe.ErrControlFragmented)
		}
	}
	return errs
}

// isMinimal reports whether the length of the header encoded at the start of
// b uses the shortest form (RFC 6455 section 5.2), which is the only one Put
// writes. b holds a complete header that decodes to length l.
func isMinimal(b []byte, l int64) bool {
	switch b[1] & 0x7f {
	case 126:
		return l > 125
	case 127:
		return l > 0xffff
	default:
		return true
	}
}

func FuzzParse(f *testing.F) {
	for _, tc := range headerCases {
		f.Add(tc.enc)
		f.Add(tc.enc[:len(tc.enc)-1])
		f.Add(append(bytes.Clone(tc.enc), 0x81, 0x85, 0x01))
	}
	for _, tc := range errorCases() {
		f.Add(tc.enc)
		f.Add(tc.enc[:len(tc.enc)-1])
	}
	f.Add([]byte{})
	f.Add([]byte{0x82})
	f.Add([]byte{0x82, 0x7e, 0x00, 0x05})                   // 16-bit form of 5
	f.Add([]byte{0x82, 0x7f, 0, 0, 0, 0, 0, 0, 0xff, 0xff}) // 64-bit form of 65535
	f.Add([]byte{0x89, 0xfe, 0x00, 0x7d, 1, 2, 3, 4})       // ping, 16-bit form of 125
	f.Add([]byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0})    // MSB set, key missing

	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := wsframe.Parse(b)
		gh, gerr := ws.ReadHeader(bytes.NewReader(b))

		switch {
		case err != nil:
			if n != 0 {
				t.Fatalf(
					"Parse(% x) = n %d with err %v; want n 0",
					b, n, err,
				)
			}
			if !slices.ContainsFunc(parseErrors, func(e error) bool { return errors.Is(err, e) }) {
				t.Fatalf(
					"Parse(% x): unknown error %v",
					b, err,
				)
			}
			if errors.Is(err, wsframe.ErrLengthOverflow) {
				// gobwas/ws reads the key along with the length, so a
				// short key is a short read there.
				if gerr != ws.ErrHeaderLengthMSB && gerr != io.ErrUnexpectedEOF {
					t.Fatalf(
						"Parse(% x): %v but ws.ReadHeader: %v",
						b, err, gerr,
					)
				}
				return
			}
			if gerr != nil {
				t.Fatalf(
					"Parse(% x): %v but ws.ReadHeader could not read the header: %v",
					b, err, gerr,
				)
			}
			if !slices.Contains(violations(gh), err) {
				t.Fatalf(
					"Parse(% x): %v, which does not apply to %+v (applies: %v)",
					b, err, gh, violations(gh),
				)
			}

		case n == 0:
			// Need more bytes: the header really is incomplete.
			if gerr != io.EOF && gerr != io.ErrUnexpectedEOF {
				t.Fatalf(
					"Parse(% x) asks for more bytes but ws.ReadHeader = %+v, %v",
					b, gh, gerr,
				)
			}

		default:
			if n < 2 || n > wsframe.MaxHeaderSize || n > len(b) {
				t.Fatalf(
					"Parse(% x): n = %d out of range",
					b, n,
				)
			}
			if gerr != nil || gh != h {
				t.Fatalf(
					"Parse(% x) = %+v but ws.ReadHeader = %+v, %v",
					b, h, gh, gerr,
				)
			}
			if v := violations(h); len(v) != 0 {
				t.Fatalf(
					"Parse(% x) accepted %+v despite %v",
					b, h, v,
				)
			}
			for i := range n {
				_, m, err := wsframe.Parse(b[:i])
				if m != 0 || err != nil {
					t.Fatalf(
						"Parse(% x), a prefix of the %d-byte header: %d, %v; want 0, nil",
						b[:i], n, m, err,
					)
				}
			}

			var buf [wsframe.MaxHeaderSize]byte
			m := wsframe.Put(buf[:], &h)
			if m != wsframe.Size(&h) {
				t.Fatalf(
					"Put(%+v) = %d; Size = %d",
					h, m, wsframe.Size(&h),
				)
			}
			if isMinimal(b, h.Length) {
				if m != n || !bytes.Equal(buf[:m], b[:n]) {
					t.Fatalf(
						"Put(Parse(% x)) = % x; want the same bytes",
						b[:n], buf[:m],
					)
				}
				return
			}
			if m >= n {
				t.Fatalf(
					"non-minimal % x re-encoded in %d bytes, not fewer",
					b[:n], m,
				)
			}
			h2, n2, err := wsframe.Parse(buf[:m])
			if err != nil || n2 != m || h2 != h {
				t.Fatalf(
					"Parse(Put(%+v)) = %+v, %d, %v",
					h, h2, n2, err,
				)
			}
		}
	})
}

func FuzzRoundTrip(f *testing.F) {
	for _, tc := range headerCases {
		h := tc.h
		f.Add(h.Fin, h.Rsv, byte(h.OpCode), h.Masked, binary.BigEndian.Uint32(h.Mask[:]), h.Length)
	}
	f.Add(true, byte(4), byte(0x2), false, uint32(0), int64(10))                // RSV1
	f.Add(true, byte(0), byte(0x3), true, uint32(0xdeadbeef), int64(1))         // reserved opcode
	f.Add(true, byte(0), byte(0x9), false, uint32(0), int64(126))               // long ping
	f.Add(false, byte(0), byte(0x8), true, uint32(0x01020304), int64(2))        // fragmented close
	f.Add(true, byte(0), byte(0x1), true, uint32(0x01020304), int64(-1))        // not encodable
	f.Add(true, byte(0xff), byte(0xff), true, uint32(0xffffffff), int64(1<<40)) // high bits dropped

	f.Fuzz(func(t *testing.T, fin bool, rsv, op byte, masked bool, mask uint32, length int64) {
		if length < 0 {
			return // no encoding exists (RFC 6455 section 5.2)
		}
		// Keep the fields to the bits the wire has, and the key only when
		// masked: an unmasked frame carries none, so Parse leaves it zero.
		h := ws.Header{
			Fin:    fin,
			Rsv:    rsv & 0x7,
			OpCode: ws.OpCode(op & 0xf),
			Masked: masked,
			Length: length,
		}
		if masked {
			binary.BigEndian.PutUint32(h.Mask[:], mask)
		}

		var buf [wsframe.MaxHeaderSize]byte
		n := wsframe.Put(buf[:], &h)
		if n != wsframe.Size(&h) {
			t.Fatalf(
				"Put(%+v) = %d; Size = %d",
				h, n, wsframe.Size(&h),
			)
		}
		var want bytes.Buffer
		err := ws.WriteHeader(&want, h)
		if err != nil || !bytes.Equal(buf[:n], want.Bytes()) {
			t.Fatalf(
				"Put(%+v) = % x; ws.WriteHeader = % x, %v",
				h, buf[:n], want.Bytes(), err,
			)
		}

		got, m, err := wsframe.Parse(buf[:n])
		if v := violations(h); len(v) != 0 {
			if m != 0 || !slices.Contains(v, err) {
				t.Fatalf(
					"Parse(Put(%+v)) = %d, %v; want 0 and one of %v",
					h, m, err, v,
				)
			}
			return
		}
		if err != nil || m != n || got != h {
			t.Fatalf(
				"Parse(Put(%+v)) = %+v, %d, %v; want the header, %d, nil",
				h, got, m, err, n,
			)
		}

		// PutBefore writes the same bytes, ending at end.
		var big [2 * wsframe.MaxHeaderSize]byte
		start := wsframe.PutBefore(big[:], len(big), &h)
		if start != len(big)-n || !bytes.Equal(big[start:], buf[:n]) {
			t.Fatalf(
				"PutBefore(%+v) = %d, % x; want %d, % x",
				h, start, big[start:], len(big)-n, buf[:n],
			)
		}
	})
}
