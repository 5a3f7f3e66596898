//go:build linux

package splice_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/wsplice/wsplice/splice"
)

// TestSlowHandshakes holds 1,000 connections that never complete their
// handshake (half trickle a valid request one byte a second, a quarter
// send nothing, a quarter send every header line but the blank one) while
// a normal client opens a session and does 20 echoes. The normal session
// must finish before the first trickler is cut; every trickler must be
// closed by the server, without a 101, at --read-timeout (give or take a
// sweep); and the heap must not grow by 64 MiB. Not parallel: it measures
// the heap and uses 2,000 descriptors.
func TestSlowHandshakes(t *testing.T) {
	const (
		n     = 1000
		rt    = 3 * time.Second
		slack = 3 * time.Second
	)
	ts := startServer(t, splice.Config{ReadTimeout: rt})
	up := startUpstream(t, echo)
	base := heapAfterGC()
	hs := startHeapSampler()

	type peer struct {
		conn     net.Conn
		kind     int // 0, 1: trickle; 2: silent; 3: headers without the blank line
		req      []byte
		sent     int // trickled bytes so far (trickler goroutine only)
		dialed   time.Time
		closedAt time.Time // zero: still open at the reader's deadline
		got      []byte
		err      error
	}
	peers := make([]*peer, n)
	for i := range peers {
		req, _ := upgradeRequest(ts.addr, "User-Agent: slowloris")
		peers[i] = &peer{kind: i % 4, req: req}
	}

	// Dial them all, 32 at a time; each sends its first bytes at once.
	var (
		wg      sync.WaitGroup
		readers sync.WaitGroup
		next    = make(chan *peer)
		dialErr = make(chan error, n)
	)
	dialStart := time.Now()
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range next {
				conn, err := net.DialTimeout("tcp", ts.addr, waitTimeout)
				if err != nil {
					dialErr <- err
					continue
				}
				p.conn, p.dialed = conn, time.Now()
				switch p.kind {
				case 0, 1:
					conn.Write(p.req[:1])
					p.sent = 1
				case 3:
					conn.Write(p.req[:len(p.req)-2])
				}
				readers.Add(1)
				go func() {
					defer readers.Done()
					conn.SetReadDeadline(p.dialed.Add(rt + slack + waitTimeout))
					p.got, p.err = io.ReadAll(conn)
					var ne net.Error
					if !errors.As(p.err, &ne) || !ne.Timeout() {
						p.closedAt = time.Now()
					}
				}()
			}
		}()
	}
	for _, p := range peers {
		next <- p
	}
	close(next)
	wg.Wait()
	close(dialErr)
	for err := range dialErr {
		t.Fatalf("dial: %v", err)
	}
	dialed := time.Since(dialStart)
	t.Cleanup(func() {
		for _, p := range peers {
			p.conn.Close()
		}
		readers.Wait()
	})

	// The tricklers send one more byte every second.
	stopTrickle := make(chan struct{})
	trickled := make(chan struct{})
	go func() {
		defer close(trickled)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stopTrickle:
				return
			case <-tick.C:
			}
			for _, p := range peers {
				if p.kind > 1 || p.sent >= len(p.req)-1 {
					continue
				}
				p.conn.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
				if _, err := p.conn.Write(p.req[p.sent : p.sent+1]); err == nil {
					p.sent++
				}
			}
		}
	}()

	// A normal client meanwhile.
	normalStart := time.Now()
	s := dialSession(t, ts.url)
	idx := s.connect(up.url)
	var slowest time.Duration
	for range 20 {
		m := []byte(marker())
		start := time.Now()
		s.send(idx, m)
		equal(t, string(s.readDataFrom(idx)), string(m), "echo")
		slowest = max(slowest, time.Since(start))
	}
	normalDone := time.Now()

	readers.Wait()
	close(stopTrickle)
	<-trickled
	growth := hs.growth()

	var first time.Time
	var early, late, open, upgraded int
	var longest time.Duration
	for _, p := range peers {
		if bytes.HasPrefix(p.got, []byte("HTTP/1.1 101")) {
			upgraded++
		}
		if p.closedAt.IsZero() {
			open++
			continue
		}
		if first.IsZero() || p.closedAt.Before(first) {
			first = p.closedAt
		}
		life := p.closedAt.Sub(p.dialed)
		longest = max(longest, life)
		switch {
		case life < rt/2:
			early++
		case life > rt+slack:
			late++
		}
	}
	t.Logf("%d slow handshakes dialed in %v; normal session: 20 echoes in %v (slowest %v); tricklers closed after at most %v; heap +%d MiB",
		n, dialed.Round(time.Millisecond), normalDone.Sub(normalStart).Round(time.Millisecond),
		slowest.Round(time.Microsecond), longest.Round(time.Millisecond), growth>>20)
	if upgraded > 0 {
		t.Errorf("%d incomplete handshakes got a 101", upgraded)
	}
	if open > 0 {
		t.Errorf("%d of %d slow handshakes still open %v after they started (--read-timeout %v)", open, n, rt+slack+waitTimeout, rt)
	}
	if late > 0 {
		t.Errorf("%d slow handshakes closed later than --read-timeout %v + %v", late, rt, slack)
	}
	if early > 0 {
		t.Errorf("%d slow handshakes closed before half of --read-timeout %v", early, rt)
	}
	if !first.IsZero() && normalDone.After(first) {
		t.Errorf("the normal session finished %v after the first slow handshake was cut: it was held up",
			normalDone.Sub(first).Round(time.Millisecond))
	}
	if growth > 64<<20 {
		t.Errorf("heap grew by %d MiB with %d slow handshakes, want < 64 MiB", growth>>20, n)
	}
	s.barrier()
	if !settle(5*time.Second, func() bool { return heapAfterGC() < base+16<<20 }) {
		t.Errorf("heap %d MiB after the slow handshakes were cut, %d MiB before", heapAfterGC()>>20, base>>20)
	}
}
