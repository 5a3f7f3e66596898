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
