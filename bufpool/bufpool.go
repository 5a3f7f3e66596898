// Package bufpool hands out size-classed byte buffers to a single owner.
//
// A Pool belongs to one goroutine (an event loop): Get and Put take no lock
// and allocate nothing once a class has buffers to reuse. Buffers are kept
// per class up to a bound, so an idle loop holds at most that many; the
// rest go back to the garbage collector.
package bufpool

// Classes are the buffer sizes handed out, smallest first. A request
// larger than the biggest class gets a buffer of exactly its size that is
// never pooled.
var Classes = [...]int{256, 2 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20}

// keep bounds the buffers retained per class.
const keep = 64

// Pool is a free list per size class. The zero value is ready to use.
//
// Invariant: every slice in free[i] has cap == Classes[i] and len == 0.
type Pool struct {
	free [len(Classes)][][]byte
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
