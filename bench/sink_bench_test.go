package bench

import (
	"net"
	"testing"
)

// BenchmarkSink measures the sink's per-frame cost on 32-byte payloads.
func BenchmarkSink(b *testing.B) {
	batch := buildBatch(nil, 32, [4]byte{1, 2, 3, 4})
	frames := 0
	for r := 0; r < len(batch); {
		_, n, _ := parseHeader(batch[r:])
		r += n + 32
		frames++
	}
	c1, c2 := net.Pipe()
	st := &connStat{}
	done := make(chan struct{})
	go func() {
		serveSink(c2, nil, st)
		close(done)
	}()
	b.SetBytes(int64(len(batch)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		c1.Write(batch)
	}
	c1.Close()
	<-done
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*frames), "ns/frame")
}
