//go:build linux

package poller

import (
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Readiness bits, as epoll(7) names them.
const (
	In    Events = unix.EPOLLIN
	Out   Events = unix.EPOLLOUT
	RDHup Events = unix.EPOLLRDHUP
	Err   Events = unix.EPOLLERR
	Hup   Events = unix.EPOLLHUP
	// Edge asks for edge-triggered notification (EPOLLET): an event is
	// reported when readiness changes, so the handler must remember what
	// it has not consumed yet.
	Edge Events = unix.EPOLLET
	// Exclusive wakes one of the loops watching the same descriptor
	// (EPOLLEXCLUSIVE): for a listener shared by every loop.
	Exclusive Events = unix.EPOLLEXCLUSIVE
)

// wakeToken marks the loop's own eventfd among the events.
const wakeToken = ^uint64(0)

// Loop is one event loop: an epoll instance, an eventfd for wake-ups and
// a queue of submitted work.
type Loop struct {
	// Immutable after New.
	epfd   int
	wakefd int
	tick   time.Duration

	// woken is set by the first Submit after the loop last drained its
	// queue; later submissions see it set and skip the eventfd write.
	woken atomic.Bool
	stop  atomic.Bool

	// mu guards queue and closed.
	mu     sync.Mutex
	queue  []func()
	closed bool

	// Owned by the loop goroutine.
	spare  []func()
	events [256]unix.EpollEvent
}

// New creates a loop whose handler gets a Tick about every tick.
func New(tick time.Duration) (*Loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, os.NewSyscallError("eventfd", err)
	}
	l := &Loop{epfd: epfd, wakefd: wakefd, tick: tick}
	if err := l.ctl(unix.EPOLL_CTL_ADD, wakefd, In, wakeToken); err != nil {
		unix.Close(wakefd)
		unix.Close(epfd)
		return nil, err
	}
	return l, nil
}

func (l *Loop) ctl(op, fd int, ev Events, token uint64) error {
	e := unix.EpollEvent{Events: uint32(ev), Fd: int32(uint32(token)), Pad: int32(uint32(token >> 32))}
	for {
		err := unix.EpollCtl(l.epfd, op, fd, &e)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("epoll_ctl", err)
		}
		return nil
	}
}

// Add registers fd for ev; its events come back with token. Loop
// goroutine only (or before Run).
func (l *Loop) Add(fd int, ev Events, token uint64) error {
	return l.ctl(unix.EPOLL_CTL_ADD, fd, ev, token)
}

// Mod changes the events and token of a registered fd. Loop goroutine only.
func (l *Loop) Mod(fd int, ev Events, token uint64) error {
	return l.ctl(unix.EPOLL_CTL_MOD, fd, ev, token)
}

// Delete removes fd from the loop. Call it before closing fd (a closed fd
// leaves epoll only once every duplicate is closed). Loop goroutine only.
func (l *Loop) Delete(fd int) error {
	return l.ctl(unix.EPOLL_CTL_DEL, fd, 0, 0)
}

// Submit queues f to run on the loop goroutine and wakes the loop. It
// returns false, without queueing, once the loop has stopped: the caller
// then owns whatever f would have handed over. Safe from any goroutine.
func (l *Loop) Submit(f func()) bool {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	l.queue = append(l.queue, f)
	l.mu.Unlock()
	if l.woken.CompareAndSwap(false, true) {
		l.wake()
	}
	return true
}

func (l *Loop) wake() {
	var one = [8]byte{1}
	for {
		_, err := unix.Write(l.wakefd, one[:])
		if err != unix.EINTR {
			// EAGAIN means the counter is already non-zero: the loop
			// will wake anyway.
			return
		}
	}
}

// Stop asks Run to return after its current turn. Safe from any goroutine.
func (l *Loop) Stop() {
	l.stop.Store(true)
	l.wake()
}

// runQueue runs the submitted work. It swaps the queue with a spare slice
// so the lock is held only for the swap.
func (l *Loop) runQueue() {
	l.woken.Store(false)
	var b [8]byte
	unix.Read(l.wakefd, b[:])
	l.mu.Lock()
	q := l.queue
	l.queue = l.spare[:0]
	l.mu.Unlock()
	for i, f := range q {
		f()
		q[i] = nil
	}
	l.spare = q
}

// Run dispatches events to h until Stop. On return the loop is closed:
// work submitted before it closed has run, later Submit calls return false,
// and the epoll and eventfd descriptors are released. Descriptors that h
// registered remain h's to close.
func (l *Loop) Run(h Handler) error {
	defer l.close()
	next := time.Now().Add(l.tick)
	busy := false
	for !l.stop.Load() {
		timeout := -1
		if busy {
			timeout = 0
		} else if l.tick > 0 {
			timeout = int(time.Until(next)/time.Millisecond) + 1
			if timeout < 0 {
				timeout = 0
			}
		}
		n, err := l.wait(timeout)
		if err != nil && err != unix.EINTR {
			return os.NewSyscallError("epoll_wait", err)
		}
		for i := 0; i < n; i++ {
			e := &l.events[i]
			token := uint64(uint32(e.Fd)) | uint64(uint32(e.Pad))<<32
			if token == wakeToken {
				l.runQueue()
				continue
			}
			h.Event(token, Events(e.Events))
		}
		if l.woken.Load() {
			l.runQueue()
		}
		busy = h.Turn()
		if l.tick > 0 {
			if now := time.Now(); !now.Before(next) {
				h.Tick(now)
				next = now.Add(l.tick)
			}
		}
	}
	return ErrClosed
}

// wait is epoll_wait(2). A wait with timeout 0 cannot block, and goes as
// a raw system call (see Read); any other may sleep, and goes through the
// runtime so the loop's P serves other goroutines meanwhile.
func (l *Loop) wait(timeout int) (int, error) {
	if timeout != 0 {
		return unix.EpollWait(l.epfd, l.events[:], timeout)
	}
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(l.epfd), uintptr(unsafe.Pointer(&l.events[0])), uintptr(len(l.events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

func (l *Loop) close() {
	for {
		l.mu.Lock()
		if len(l.queue) == 0 {
			l.closed = true
			l.mu.Unlock()
			break
		}
		l.mu.Unlock()
		l.runQueue()
	}
	unix.Close(l.wakefd)
	unix.Close(l.epfd)
}

// Read reads from the non-blocking fd into b with one read(2), as a raw
// system call (see Writev).
func Read(fd int, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	r, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// Splice moves up to n bytes from in to out with splice(2)
// (SPLICE_F_MOVE|SPLICE_F_NONBLOCK), as a raw system call (see Writev):
// one side must be a pipe, the other non-blocking.
func Splice(in, out, n int) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// Writev writes bufs to fd with one writev(2), retrying on EINTR. It
// returns the bytes written; EAGAIN comes back as an error for the caller
// to park on Out. iov is the caller's scratch space, reused across calls so
// the call allocates nothing; at most len(iov) buffers are written.
//
// fd must be non-blocking: the call is a raw system call, which the
// runtime does not track. A tracked call that runs longer than sysmon's
// 20 µs tick (a large writev on loopback does the receiver's TCP work too)
// has its P handed to another thread, and keeps sysmon polling at that
// tick; on a busy loop that cost some 5% of the server's CPU and a thread
// switch per hand-off. A raw call that cannot block loses nothing by it.
func Writev(fd int, bufs [][]byte, iov []unix.Iovec) (int, error) {
	n := 0
	for _, b := range bufs {
		if n == len(iov) {
			break
		}
		if len(b) == 0 {
			continue
		}
		iov[n].Base = &b[0]
		iov[n].SetLen(len(b))
		n++
	}
	if n == 0 {
		return 0, nil
	}
	for {
		r, _, e := unix.RawSyscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(n))
		if e == unix.EINTR {
			continue
		}
		for i := 0; i < n; i++ {
			iov[i].Base = nil
		}
		if e != 0 {
			return 0, e
		}
		return int(r), nil
	}
}
