//go:build linux

package poller

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// recorder is a Handler that forwards events to a channel.
type recorder struct {
	events chan [2]uint64
	ticks  atomic.Int32
	turns  atomic.Int32
}

func (r *recorder) Event(token uint64, ev Events) { r.events <- [2]uint64{token, uint64(ev)} }
func (r *recorder) Turn() bool                    { r.turns.Add(1); return false }
func (r *recorder) Tick(time.Time)                { r.ticks.Add(1) }

func startLoop(t *testing.T, tick time.Duration) (*Loop, *recorder, chan error) {
	t.Helper()
	l, err := New(tick)
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{events: make(chan [2]uint64, 16)}
	done := make(chan error, 1)
	go func() { done <- l.Run(r) }()
	t.Cleanup(func() {
		l.Stop()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after Stop")
		}
	})
	return l, r, done
}

func TestEventCarriesToken(t *testing.T) {
	l, r, _ := startLoop(t, 0)
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	const token = 7<<32 | 42
	added := make(chan error, 1)
	l.Submit(func() { added <- l.Add(fds[0], In|Edge, token) })
	if err := <-added; err != nil {
		t.Fatal(err)
	}
	unix.Write(fds[1], []byte("x"))
	select {
	case ev := <-r.events:
		if ev[0] != token || Events(ev[1])&In == 0 {
			t.Fatalf("event %x %x, want token %x with In", ev[0], ev[1], uint64(token))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no event")
	}
	deleted := make(chan error, 1)
	l.Submit(func() { deleted <- l.Delete(fds[0]) })
	if err := <-deleted; err != nil {
		t.Fatal(err)
	}
}

func TestSubmitRunsInOrderAndMerges(t *testing.T) {
	l, r, _ := startLoop(t, 0)
	var mu sync.Mutex
	var got []int
	var wg sync.WaitGroup
	wg.Add(100)
	for i := range 100 {
		if !l.Submit(func() { mu.Lock(); got = append(got, i); mu.Unlock(); wg.Done() }) {
			t.Fatal("Submit refused on a running loop")
		}
	}
	wg.Wait()
	for i, v := range got {
		if v != i {
			t.Fatalf("order: got[%d] = %d", i, v)
		}
	}
	if r.turns.Load() > 100 {
		t.Fatalf("%d turns for 100 submissions", r.turns.Load())
	}
}

func TestTick(t *testing.T) {
	_, r, _ := startLoop(t, 5*time.Millisecond)
	deadline := time.Now().Add(5 * time.Second)
	for r.ticks.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatal("fewer than 3 ticks in 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSubmitAfterStop(t *testing.T) {
	l, err := New(0)
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan struct{})
	l.Submit(func() { close(ran) })
	l.Stop()
	if err := l.Run(&recorder{events: make(chan [2]uint64, 1)}); err != ErrClosed {
		t.Fatalf("Run: %v", err)
	}
	select {
	case <-ran:
	default:
		t.Fatal("work submitted before Stop did not run")
	}
	if l.Submit(func() {}) {
		t.Fatal("Submit accepted after the loop closed")
	}
}

func TestWritev(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	iov := make([]unix.Iovec, 4)
	bufs := [][]byte{[]byte("ab"), nil, []byte("cde"), []byte("f")}
	n, err := Writev(fds[0], bufs, iov)
	if err != nil || n != 6 {
		t.Fatalf("Writev: %d %v", n, err)
	}
	b := make([]byte, 16)
	m, _ := unix.Read(fds[1], b)
	if string(b[:m]) != "abcdef" {
		t.Fatalf("read %q", b[:m])
	}
	if a := testing.AllocsPerRun(100, func() {
		Writev(fds[0], bufs, iov)
		unix.Read(fds[1], b)
	}); a != 0 {
		t.Fatalf("Writev allocates %v times", a)
	}
}
