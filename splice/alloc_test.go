//go:build linux

package splice

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/wsplice/wsplice/poller"
	"github.com/wsplice/wsplice/rpc"
	"github.com/wsplice/wsplice/wsframe"
)

// engineRig is one engine, not running its loop, with a session whose
// client and upstream are socketpairs: the test drives the engine's
// per-event path directly on its own goroutine, over real sockets.
type engineRig struct {
	e              *engine
	s              *session
	client, up     *conn
	clientPeer     int // what the client writes and reads
	upPeer         int // what the upstream writes and reads
	buf            []byte
	toUp, toClient []byte // pre-encoded frames
}

func newRig(t testing.TB, payload int, frames int) *engineRig {
	t.Helper()
	l, err := poller.New(0)
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{cfg: Config{FrameSizeLimit: 1 << 20, WriteTimeout: DefaultWriteTimeout,
		MaxUpstreamsPerSession: 16, Policy: &rpc.HostPolicy{}}}
	e := newEngine(srv, 0, l)
	srv.engs = []*engine{e}
	pair := func() (int, int) {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		return fds[0], fds[1]
	}
	r := &engineRig{e: e, buf: make([]byte, 4<<20)}
	cfd, cpeer := pair()
	ufd, upeer := pair()
	r.clientPeer, r.upPeer = cpeer, upeer
	r.client, _ = e.add(cfd, kindClient, nil)
	r.s = &session{e: e, client: r.client}
	r.client.sess, r.client.st = r.s, stOpen
	r.up, _ = e.add(ufd, kindUpstream, r.s)
	r.up.st = stOpen
	r.s.ups = []*conn{r.up}
	t.Cleanup(func() {
		e.closeFD(r.client)
		e.closeFD(r.up)
		unix.Close(cpeer)
		unix.Close(upeer)
		l.Stop()
		l.Run(nopHandler{})
	})
	// Client frames: masked, index 0, then payload.
	p := make([]byte, 2+payload)
	for i := 0; i < frames; i++ {
		h := ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Mask: [4]byte{1, 2, 3, byte(i)}, Length: int64(len(p))}
		f := make([]byte, wsframe.Size(&h)+len(p))
		n := wsframe.Put(f, &h)
		copy(f[n:], p)
		wsframe.Cipher(f[n:], h.Mask, 0)
		r.toUp = append(r.toUp, f...)
	}
	// Upstream frames: unmasked.
	for i := 0; i < frames; i++ {
		h := ws.Header{Fin: true, OpCode: ws.OpBinary, Length: int64(payload)}
		f := make([]byte, wsframe.Size(&h)+payload)
		wsframe.Put(f, &h)
		r.toClient = append(r.toClient, f...)
	}
	return r
}

type nopHandler struct{}

func (nopHandler) Event(uint64, poller.Events) {}
func (nopHandler) Turn() bool                  { return false }
func (nopHandler) Tick(time.Time)              {}

// round sends the batch through the engine both ways and drains the far
// ends, checking the byte counts.
func (r *engineRig) round(t testing.TB) {
	writeAll(t, r.clientPeer, r.toUp)
	writeAll(t, r.upPeer, r.toClient)
	for _, c := range []*conn{r.client, r.up} {
		c.readable = true
		r.e.serve(c)
	}
	r.e.flushAll()
	r.e.inPos = 0
	for c := r.client; c.readable || len(c.carry) > 0; {
		r.e.serve(c)
		r.e.flushAll()
		r.e.inPos = 0
	}
	for c := r.up; c.readable || len(c.carry) > 0; {
		r.e.serve(c)
		r.e.flushAll()
		r.e.inPos = 0
	}
	r.e.ready = r.e.ready[:0]
	for _, c := range []*conn{r.client, r.up} {
		c.inReady = false
	}
}

func writeAll(t testing.TB, fd int, b []byte) {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err != nil {
			t.Fatalf("write: %v", err)
		}
		b = b[n:]
	}
}

// drain reads what fd holds and returns the byte count.
func drain(fd int, buf []byte) int {
	total := 0
	for {
		n, err := unix.Read(fd, buf)
		if n <= 0 || err != nil {
			return total
		}
		total += n
	}
}

// TestForwardZeroAlloc asserts the hot-path rule: forwarding frames in
// both directions allocates nothing in steady state.
func TestForwardZeroAlloc(t *testing.T) {
	for _, size := range []int{32, 1024, 4098, 16 << 10} {
		r := newRig(t, size, 8)
		wantUp := 8 * (size + wsframe.Size(&ws.Header{Length: int64(size), Masked: true}))
		r.round(t) // warm the pools and slices
		if got := drain(r.upPeer, r.buf); got != wantUp {
			t.Fatalf("size %d: upstream got %d bytes, want %d", size, got, wantUp)
		}
		drain(r.clientPeer, r.buf)
		allocs := testing.AllocsPerRun(50, func() {
			r.round(t)
			drain(r.upPeer, r.buf)
			drain(r.clientPeer, r.buf)
		})
		if allocs != 0 {
			t.Errorf("payload %d: %v allocations per round of 8+8 frames, want 0", size, allocs)
		}
	}
}

// TestForwardRewritesInPlace checks the bytes the upstream receives: the
// rewritten header with the rotated mask and the payload after the index.
func TestForwardRewritesInPlace(t *testing.T) {
	r := newRig(t, 300, 1)
	r.round(t)
	n := drain(r.upPeer, r.buf)
	h, hn, err := wsframe.Parse(r.buf[:n])
	if err != nil || hn == 0 {
		t.Fatalf("parse: %v %d", err, hn)
	}
	if !h.Masked || h.Length != 300 || h.OpCode != ws.OpBinary || !h.Fin {
		t.Fatalf("header %+v", h)
	}
	p := r.buf[hn : hn+300]
	wsframe.Cipher(p, h.Mask, 0)
	for i, b := range p {
		if b != 0 {
			t.Fatalf("payload byte %d = %d, want 0", i, b)
		}
	}
	m := drain(r.clientPeer, r.buf)
	h, hn, _ = wsframe.Parse(r.buf[:m])
	if h.Masked || h.Length != 302 || binary.BigEndian.Uint16(r.buf[hn:]) != 0 {
		t.Fatalf("client frame %+v index %x", h, r.buf[hn:hn+2])
	}
}

// BenchmarkForward measures the engine alone forwarding a batch of frames
// each way per op over socketpairs (batches fit the socket buffers).
func BenchmarkForward(b *testing.B) {
	for _, size := range []int{32, 128, 1024, 4098} {
		b.Run(itoa(size), func(b *testing.B) {
			frames := min(64, (96<<10)/size)
			r := newRig(b, size, frames)
			b.ReportAllocs()
			b.SetBytes(int64(2 * frames * size))
			for range b.N {
				r.round(b)
				drain(r.upPeer, r.buf)
				drain(r.clientPeer, r.buf)
			}
		})
	}
}
