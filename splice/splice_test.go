//go:build linux

package splice_test

import (
	"bytes"
	"crypto/sha256"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/wsplice/wsplice/splice"
)

// TestSpliceForwardsLargeFrames: the rest of a large client frame goes to
// the upstream with splice(2), and arrives intact and in order; with
// NoSplice the same traffic is copied.
func TestSpliceForwardsLargeFrames(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		noSplice bool
	}{{"splice", false}, {"copy", true}} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, splice.Config{NoSplice: tc.noSplice})
			up := startUpstream(t, nil)
			// A write buffer larger than the messages: gorilla then
			// sends each message as one frame.
			s := dialSessionWith(t, ts.url, &websocket.Dialer{HandshakeTimeout: waitTimeout, WriteBufferSize: 2 << 20})
			idx := s.connect(up.url)
			uc := up.accept(t)
			var want [][32]byte
			for i := range 8 {
				p := randBytes(1<<20 + i*4097)
				want = append(want, sha256.Sum256(p))
				s.send(idx, p)
			}
			for i, w := range want {
				m := uc.read(t)
				if m.typ != websocket.BinaryMessage || sha256.Sum256(m.data) != w {
					t.Fatalf("message %d: type %d, %d bytes, checksum differs", i, m.typ, len(m.data))
				}
			}
			st := ts.srv.Stats()
			if tc.noSplice && st.SplicedBytes != 0 {
				t.Fatalf("NoSplice: %d bytes spliced", st.SplicedBytes)
			}
			if !tc.noSplice && st.SplicedBytes == 0 {
				t.Fatalf("no byte of 8 MiB of large frames went through splice(2): %+v", st)
			}
			t.Logf("%s: %d of %d bytes spliced", tc.name, st.SplicedBytes, st.BytesIn)
			s.send(idx, bytes.Repeat([]byte("z"), 10))
			equal(t, string(uc.read(t).data), "zzzzzzzzzz", "small message after")
		})
	}
}
