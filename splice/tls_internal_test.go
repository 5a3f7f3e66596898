//go:build linux

package splice

import (
	"bytes"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"
)

// TestRecordConnBoundaries feeds recordConn a stream of TLS-shaped
// records (empty ones too) delivered in random pieces, read with random
// buffer sizes: no Read may return bytes of two records, the bytes must
// come out unchanged, and wholeRecord must be true only when the next
// record is buffered entirely.
func TestRecordConnBoundaries(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	for round := range 50 {
		var stream []byte
		var ends []int // offset just past each record
		for range 1 + rng.IntN(40) {
			n := rng.IntN(3000)
			if rng.IntN(10) == 0 {
				n = 0
			}
			rec := []byte{23, 3, 3, byte(n >> 8), byte(n)}
			for range n {
				rec = append(rec, byte(rng.Uint32()))
			}
			stream = append(stream, rec...)
			ends = append(ends, len(stream))
		}
		a, b := net.Pipe()
		wrng := rand.New(rand.NewPCG(seed, uint64(round)+3))
		go func() {
			defer a.Close()
			for rest := stream; len(rest) > 0; {
				k := min(1+wrng.IntN(5000), len(rest))
				a.Write(rest[:k])
				rest = rest[k:]
			}
		}()
		rc := newRecordConn(b)
		var got []byte
		buf := make([]byte, 20000)
		for {
			if rc.wholeRecord() {
				// The next record is in the buffer: one Read of any
				// size returns it without blocking.
				next := ends[0]
				for _, e := range ends {
					if e > len(got) {
						next = e
						break
					}
				}
				before := (*rc.buf)[rc.off:rc.end]
				if len(before) < next-len(got) {
					t.Fatalf("round %d: wholeRecord with %d bytes buffered, record needs %d", round, len(before), next-len(got))
				}
			}
			n, err := rc.Read(buf[:1+rng.IntN(len(buf)-1)])
			if n > 0 {
				start := len(got)
				got = append(got, buf[:n]...)
				for _, e := range ends {
					if e > start && e < len(got) {
						t.Fatalf("round %d: a Read of bytes %d..%d crossed the record end at %d", round, start, len(got), e)
					}
				}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		rc.release()
		b.Close()
		if !bytes.Equal(got, stream) {
			t.Fatalf("round %d: %d bytes out, %d in, or altered", round, len(got), len(stream))
		}
	}
}
