// Package bufpool hands out size-classed byte buffers to a single owner.
//
// A Pool belongs to one goroutine (an event loop): Get and Put take no lock
// and allocate nothing once a class has buffers to reuse. Buffers are kept
// per class up to a bound, and Trim, called periodically, lets go of those
// that no Get needed for a whole period, so a pool that grew in a burst
// shrinks back once the burst is over; what a pool lets go of goes back to
// the garbage collector.
package bufpool

// Classes are the buffer sizes handed out, smallest first. A request
// larger than the biggest class gets a buffer of exactly its size that is
// never pooled.
var Classes = [...]int{256, 2 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20}

// keep bounds the buffers retained per class.
const keep = 64

// Pool is a free list per size class. The zero value is ready to use.
//
// Invariant: every slice in free[i] has cap == Classes[i] and len == 0,
// and low[i] <= len(free[i]).
type Pool struct {
	// free[i] is a stack: Get takes from the top, Put pushes on it, so the
	// bottom holds the buffers used least recently.
	free [len(Classes)][][]byte
	// low[i] is the fewest buffers free[i] held since the last Trim: the
	// bottom low[i] were not needed in that time.
	low [len(Classes)]int
}

// Held returns the bytes the pool keeps for reuse.
func (p *Pool) Held() (n int) {
	for i, f := range p.free {
		n += len(f) * Classes[i]
	}
	return n
}

// class returns the index of the smallest class holding n bytes, or -1.
func class(n int) int {
	for i, c := range Classes {
		if n <= c {
			return i
		}
	}
	return -1
}

// Get returns a buffer with len 0 and cap at least n. It stays valid until
// it is given back with Put; after that the caller must not touch it.
func (p *Pool) Get(n int) []byte {
	i := class(n)
	if i < 0 {
		return make([]byte, 0, n)
	}
	if f := p.free[i]; len(f) > 0 {
		b := f[len(f)-1]
		f[len(f)-1] = nil
		p.free[i] = f[:len(f)-1]
		p.low[i] = min(p.low[i], len(f)-1)
		return b
	}
	return make([]byte, 0, Classes[i])
}

// Put gives b back. Buffers whose capacity is not exactly a class size
// (grown by append, or oversized) are dropped for the collector.
func (p *Pool) Put(b []byte) {
	i := class(cap(b))
	if i < 0 || cap(b) != Classes[i] || len(p.free[i]) >= keep {
		return
	}
	p.free[i] = append(p.free[i], b[:0])
}

// Grow returns a buffer holding b's bytes with room for at least n more,
// reusing b when it has room and otherwise moving to a bigger class (b goes
// back to the pool).
func (p *Pool) Grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b
	}
	want := len(b) + n
	if want > Classes[len(Classes)-1] {
		// Past the classes, grow geometrically: growing by exactly
		// what is asked would copy the whole buffer on every call.
		want = max(want, 2*cap(b))
	}
	nb := p.Get(want)[:len(b)]
	copy(nb, b)
	if b != nil {
		p.Put(b)
	}
	return nb
}

// Trim lets go of the buffers that no Get needed since the previous Trim
// (the bottom of each free list, which stayed untouched) and returns how
// many bytes they held. Called every period, it bounds what an idle pool
// keeps to what the last period used: a burst's buffers are released one
// period after it ends.
func (p *Pool) Trim() (released int) {
	for i, f := range p.free {
		n := p.low[i]
		if n > 0 {
			m := copy(f, f[n:])
			clear(f[m:])
			f = f[:m]
			p.free[i] = f
			released += n * Classes[i]
		}
		p.low[i] = len(f)
	}
	return released
}
