package wsframe_test

import (
	"fmt"

	"github.com/gobwas/ws"

	"github.com/wsplice/wsplice/wsframe"
)

// ExamplePutBefore rewrites a client frame [header][index][body] into the
// upstream frame [header'][body] in the same buffer. The body is neither
// copied nor unmasked: header' has the length minus the 2 index bytes and the
// masking key rotated by 2, since the body starts 2 bytes into the client's
// masked stream (RFC 6455 section 5.3).
func ExamplePutBefore() {
	// What a client sends: upstream 7, then the message, masked.
	mask := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	payload := append([]byte{0x00, 0x07}, "hello, upstream"...)
	client := ws.Header{Fin: true, OpCode: ws.OpText, Masked: true, Mask: mask, Length: int64(len(payload))}
	frame := make([]byte, wsframe.Size(&client)+len(payload))
	n := wsframe.Put(frame, &client)
	copy(frame[n:], payload)
	wsframe.Cipher(frame[n:], mask, 0)

	// The reactor: parse the header, read the index, write the upstream
	// header so that it ends where the body starts.
	h, n, err := wsframe.Parse(frame)
	if err != nil || n == 0 {
		fmt.Println("bad frame:", n, err)
		return
	}
	idx := wsframe.Index(frame[n:], h.Mask, h.Masked)
	up := h
	up.Length -= 2
	up.Mask = wsframe.RotateMask(h.Mask, 2)
	start := wsframe.PutBefore(frame, n+2, &up)
	out := frame[start:]
	fmt.Printf("upstream %d: send frame[%d:], %d bytes of %d\n", idx, start, len(out), len(frame))

	// What the upstream server reads.
	uh, un, _ := wsframe.Parse(out)
	body := out[un:]
	wsframe.Cipher(body, uh.Mask, 0)
	fmt.Printf("length %d, key % x: %q\n", uh.Length, uh.Mask, body)
	// Output:
	// upstream 7: send frame[2:], 21 bytes of 23
	// length 15, key 21 3d 37 fa: "hello, upstream"
}
