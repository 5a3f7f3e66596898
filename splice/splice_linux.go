//go:build linux

package splice

import (
	"golang.org/x/sys/unix"

	"github.com/wsplice/wsplice/poller"
)

// spliceMin is the smallest rest of a client frame moved with splice(2)
// instead of read and write: below it the two extra system calls cost
// more than the copy they save.
const spliceMin = 16 << 10

// spliceChunk bounds one splice(2) pass, and sizes the loop's pipe.
const spliceChunk = 256 << 10

// pipe is a loop's pipe for splice(2). Invariant: it is empty between
// calls of spliceForward, so it is never part of any connection's output
// and never needs to be flushed, pooled or closed with data in it.
type pipe struct {
	r, w int
	ok   bool // created; false after an error: the copy path stands
}

// spliceForward moves the rest of the client frame being forwarded,
// kernel to kernel: client socket, pipe, upstream socket. handled is
// false when the fast path does not apply (nothing was done: the caller
// reads and writes as usual). It applies inside a frame to an open
// upstream with nothing queued (so order holds), when the client has no
// carried bytes and is readable.
func (e *engine) spliceForward(c *conn) (handled bool) {
	rx := &c.rx
	u := rx.dst
	if rx.mode != modeForward || rx.remain < spliceMin || len(c.carry) > 0 || !c.readable || c.eof ||
		u == nil || u.st != stOpen || u.head >= 0 || u.pending() > 0 || u.hot || !e.pipeReady() {
		return false
	}
	want := int(min(rx.remain, spliceChunk))
	m, err := poller.Splice(c.fd, e.pipe.w, want)
	n := int64(m)
	switch {
	case err == unix.EINTR:
		e.markReady(c) // try again next turn: no new edge would come
		return true
	case err == unix.EAGAIN:
		c.readable = false
		return true
	case err != nil:
		c.eof, c.readable = true, false
		e.peerGone(c)
		return true
	case n == 0:
		c.eof, c.readable = true, false
		e.peerGone(c)
		return true
	}
	// A short count does not prove the socket drained: a pipe holds a
	// bounded number of buffers (64 here, a page at most each), and
	// the socket's data can fill them before want bytes; no new edge
	// would then announce what is left. Only EAGAIN says the socket
	// is empty.
	c.lastIn = e.ns
	// Out to the upstream; what the socket does not take now is read
	// back from the pipe into the upstream's pending bytes, so the pipe
	// is empty again.
	left := int(n)
	for left > 0 {
		m, err := poller.Splice(e.pipe.r, u.fd, left)
		if err == unix.EINTR {
			continue
		}
		if err != nil || m <= 0 {
			break
		}
		left -= int(m)
	}
	if left > 0 {
		e.drainPipe(u, left)
	}
	rx.remain -= n
	rx.maskOff += int32(n)
	s := c.sess
	s.bytesIn += n
	e.cnt[cntBytesIn] += uint64(n)
	e.cnt[cntSpliced] += uint64(n)
	if rx.remain == 0 {
		e.clientFrameEnd(c)
	}
	if c.readable || len(c.carry) > 0 {
		e.markReady(c)
	}
	return true
}

// drainPipe reads n bytes left in the pipe into u's pending output.
func (e *engine) drainPipe(u *conn, n int) {
	if u.pend == nil {
		u.pend = e.pool.Get(n)
	}
	u.pend = e.pool.Grow(u.pend, n)
	for n > 0 {
		m, err := poller.Read(e.pipe.r, u.pend[len(u.pend):len(u.pend)+n])
		if err == unix.EINTR {
			continue
		}
		if err != nil || m <= 0 {
			// The pipe cannot be trusted any more: close it, drop
			// u (its stream lost bytes), and copy from now on.
			e.closePipe()
			e.upstreamGone(u, 1006, "internal error moving data", nil)
			return
		}
		u.pend = u.pend[:len(u.pend)+m]
		n -= m
	}
	if u.stall == 0 {
		u.stall = e.ns
	}
	e.watermark(u)
}

// pipeReady makes the loop's pipe on first use.
func (e *engine) pipeReady() bool {
	if e.pipe.ok {
		return true
	}
	if e.pipe.r < 0 {
		return false // failed before: do not retry every frame
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		e.pipe.r = -1
		return false
	}
	unix.FcntlInt(uintptr(fds[1]), unix.F_SETPIPE_SZ, spliceChunk)
	e.pipe = pipe{r: fds[0], w: fds[1], ok: true}
	return true
}

func (e *engine) closePipe() {
	if e.pipe.ok {
		unix.Close(e.pipe.r)
		unix.Close(e.pipe.w)
	}
	e.pipe = pipe{r: -1}
}
