package bufpool

import "testing"

func TestGetPutReuse(t *testing.T) {
	var p Pool
	for _, n := range []int{1, 256, 257, 2048, 70000, 1 << 20} {
		b := p.Get(n)
		if len(b) != 0 || cap(b) < n {
			t.Fatalf("Get(%d): len %d cap %d", n, len(b), cap(b))
		}
		p.Put(b)
		c := p.Get(n)
		if &c[:1][0] != &b[:1][0] {
			t.Fatalf("Get(%d) after Put did not reuse the buffer", n)
		}
		p.Put(c)
	}
}

func TestOversizedNotPooled(t *testing.T) {
	var p Pool
	b := p.Get(3 << 20)
	if cap(b) != 3<<20 {
		t.Fatalf("cap %d", cap(b))
	}
	p.Put(b) // must not panic nor be kept
	for _, f := range p.free {
		if len(f) != 0 {
			t.Fatal("oversized buffer was pooled")
		}
	}
}

func TestGrowKeepsBytes(t *testing.T) {
	var p Pool
	b := append(p.Get(10), "hello"...)
	b = p.Grow(b, 5000)
	if string(b) != "hello" || cap(b)-len(b) < 5000 {
		t.Fatalf("Grow: %q cap %d", b, cap(b))
	}
}

func TestBounded(t *testing.T) {
	var p Pool
	bufs := make([][]byte, 2*keep)
	for i := range bufs {
		bufs[i] = p.Get(100)
	}
	for _, b := range bufs {
		p.Put(b)
	}
	if len(p.free[0]) != keep {
		t.Fatalf("kept %d, want %d", len(p.free[0]), keep)
	}
}

func TestZeroAlloc(t *testing.T) {
	var p Pool
	p.Put(p.Get(1000))
	if a := testing.AllocsPerRun(100, func() { p.Put(p.Get(1000)) }); a != 0 {
		t.Fatalf("Get/Put allocates %v times", a)
	}
}

// TestTrim checks that Trim lets go of what no Get needed since the
// previous Trim, the least recently used first, and keeps the rest.
func TestTrim(t *testing.T) {
	var p Pool
	bufs := make([][]byte, 10)
	for i := range bufs {
		bufs[i] = p.Get(64 << 10)
	}
	for _, b := range bufs {
		p.Put(b)
	}
	// The burst is over: all ten sat in the free list since the last Trim
	// (there was none, and the zero value's low is 0), so the first Trim
	// only starts the period.
	if got := p.Trim(); got != 0 {
		t.Fatalf("first Trim released %d bytes, want 0", got)
	}
	// Three are used (and given back) during the next period; seven were
	// never needed.
	for range 2 {
		a, b, c := p.Get(1), p.Get(1<<10), p.Get(64<<10)
		_, _ = a, b
		p.Put(c)
	}
	used := [3][]byte{p.Get(64 << 10), p.Get(64 << 10), p.Get(64 << 10)}
	for _, b := range used {
		p.Put(b)
	}
	if got, want := p.Held(), 10*(64<<10); got != want {
		t.Fatalf("Held = %d before the trim, want %d", got, want)
	}
	if got, want := p.Trim(), 7*(64<<10); got != want {
		t.Fatalf("Trim released %d bytes, want %d", got, want)
	}
	if got, want := p.Held(), 3*(64<<10); got != want {
		t.Fatalf("Held = %d after the trim, want %d", got, want)
	}
	if n := len(p.free[3]); n != 3 {
		t.Fatalf("%d buffers kept, want the 3 used in the period", n)
	}
	// The three kept are the ones used last.
	for _, b := range used {
		found := false
		for _, f := range p.free[3] {
			if &f[:1][0] == &b[:1][0] {
				found = true
			}
		}
		if !found {
			t.Fatal("Trim dropped a buffer used in the period")
		}
	}
	// A period without any Get: everything goes.
	if got, want := p.Trim(), 3*(64<<10); got != want {
		t.Fatalf("idle Trim released %d bytes, want %d", got, want)
	}
	for i, f := range p.free {
		if len(f) != 0 || p.low[i] != 0 {
			t.Fatalf("class %d: %d buffers, low %d after an idle period", i, len(f), p.low[i])
		}
	}
	if p.Held() != 0 {
		t.Fatalf("Held = %d after an idle period", p.Held())
	}
}

// TestTrimSteady checks that a pool in steady use keeps what each period
// needs: buffers taken and given back every period are never released.
func TestTrimSteady(t *testing.T) {
	var p Pool
	for range 5 {
		bufs := [4][]byte{}
		for i := range bufs {
			bufs[i] = p.Get(2 << 10)
		}
		for _, b := range bufs {
			p.Put(b)
		}
		p.Trim()
	}
	if n := len(p.free[1]); n != 4 {
		t.Fatalf("%d buffers kept in steady use of 4, want 4", n)
	}
}

func TestTrimZeroAlloc(t *testing.T) {
	var p Pool
	p.Put(p.Get(1000))
	if n := testing.AllocsPerRun(100, func() {
		p.Put(p.Get(1000))
		p.Trim()
	}); n != 0 {
		t.Fatalf("Get, Put and Trim allocated %v times per run", n)
	}
}
