//go:build linux

package poller

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailru/easygo/netpoll"
	"golang.org/x/sys/unix"
)

// The reactor drops below easygo's netpoll.Epoll to golang.org/x/sys/unix
// (DESIGN.md: "where it measurably costs less"). These benchmarks measure
// the same work both ways: a batch of edge-triggered readiness events, one
// per socketpair, each read by its handler. easygo keeps a callback per fd
// in a map under a lock and calls it from its own goroutine; the Loop
// hands a token to one handler on the goroutine that owns the state.
//
// Measured on the 2-core machine (5 runs each, shared and noisy): both
// about 3-7 us per event, dominated by the read and write system calls;
// no difference beyond the noise. The Loop is kept for what easygo's
// Epoll cannot give: the handler runs on the goroutine that owns every
// connection's state (no lock, no closure per fd), submitted work and the
// tick share that goroutine with an eventfd wake-up merged by a flag, and
// listeners can be watched with EPOLLEXCLUSIVE.
// Compare with: go test -run '^$' -bench Readiness -count 10 ./poller/ | benchstat

const benchFDs = 256

type batchHandler struct {
	fds  []int
	left atomic.Int32
	done chan struct{}
	buf  [1]byte
}

func (h *batchHandler) Event(token uint64, ev Events) { h.read(h.fds[token]) }
func (h *batchHandler) Turn() bool                    { return false }
func (h *batchHandler) Tick(time.Time)                {}

func (h *batchHandler) read(fd int) {
	if _, err := unix.Read(fd, h.buf[:]); err == nil && h.left.Add(-1) == 0 {
		h.done <- struct{}{}
	}
}

func pairs(b *testing.B) (mine, peers []int) {
	for range benchFDs {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
		mine, peers = append(mine, fds[0]), append(peers, fds[1])
	}
	return mine, peers
}

func runBatches(b *testing.B, h *batchHandler, peers []int) {
	one := []byte{1}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		h.left.Store(benchFDs)
		for _, p := range peers {
			unix.Write(p, one)
		}
		<-h.done
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchFDs), "ns/event")
}

func BenchmarkReadinessLoop(b *testing.B) {
	mine, peers := pairs(b)
	l, err := New(0)
	if err != nil {
		b.Fatal(err)
	}
	h := &batchHandler{fds: mine, done: make(chan struct{})}
	for i, fd := range mine {
		if err := l.Add(fd, In|Edge, uint64(i)); err != nil {
			b.Fatal(err)
		}
	}
	stopped := make(chan error)
	go func() { stopped <- l.Run(h) }()
	b.Cleanup(func() { l.Stop(); <-stopped })
	runBatches(b, h, peers)
}

func BenchmarkReadinessEasygo(b *testing.B) {
	mine, peers := pairs(b)
	ep, err := netpoll.EpollCreate(nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ep.Close() })
	h := &batchHandler{fds: mine, done: make(chan struct{})}
	for _, fd := range mine {
		err := ep.Add(fd, netpoll.EPOLLIN|netpoll.EPOLLET, func(netpoll.EpollEvent) { h.read(fd) })
		if err != nil {
			b.Fatal(err)
		}
	}
	runBatches(b, h, peers)
}
