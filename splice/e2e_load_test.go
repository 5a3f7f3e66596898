//go:build linux

package splice_test

// The heavy tests are not parallel: Go runs them one at a time before the
// parallel ones, so their memory and fd figures are their own.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsplice/wsplice/splice"
)

// loadHeader is what each load message carries before its body: a
// sequence number per index and the SHA-256 of the body.
const loadHeader = 4 + sha256.Size

// TestIntegrityUnderLoad runs 50 sessions of 4 upstreams each through one
// server, with messages of random size up to 64 KiB and random opcode both
// ways through echoing upstreams, and checks every message's checksum and
// its order per index. Interleaving of upstream messages on a client socket
// would fail gorilla's reader.
func TestIntegrityUnderLoad(t *testing.T) {
	sessions, perSession, perIndex := 50, 4, 12
	if testing.Short() {
		sessions, perIndex = 10, 4
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("WSPLICE_TEST_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (set WSPLICE_TEST_SEED to repeat)", seed)

	ts := startServer(t, splice.Config{})
	up := startUpstream(t, echo)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	var total sync.Map
	for i := range sessions {
		s := dialSession(t, ts.url)
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := loadSession(s, up.url, perSession, perIndex, seed+uint64(i))
			total.Store(i, n)
			if err != nil {
				errs <- fmt.Errorf("session %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var bytesMoved int
	total.Range(func(_, v any) bool { bytesMoved += v.(int); return true })
	t.Logf("%d sessions x %d upstreams x %d messages: %d MiB each way in %v",
		sessions, perSession, perIndex, bytesMoved>>20, time.Since(start).Round(time.Millisecond))
}

// loadSession opens n upstreams on s, sends perIndex messages to each in a
// random interleaving, and checks the echoes. It returns the bytes sent.
func loadSession(s *session, url string, n, perIndex int, seed uint64) (int, error) {
	indices := make([]uint16, n)
	for i := range indices {
		idx, _, err := s.connectErr(map[string]any{"url": url})
		if err != nil {
			return 0, err
		}
		indices[i] = idx
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	src := rand.NewChaCha8(key)

	sent := 0
	werr := make(chan error, 1)
	go func() {
		left := make([]int, n)
		for i := range left {
			left[i] = perIndex
		}
		remaining := n * perIndex
		buf := make([]byte, 64<<10)
		for remaining > 0 {
			k := rng.IntN(n)
			for left[k] == 0 {
				k = (k + 1) % n
			}
			seq := perIndex - left[k]
			left[k]--
			remaining--
			size := rng.IntN(len(buf) - 2 - loadHeader + 1)
			msg := buf[:2+loadHeader+size]
			binary.BigEndian.PutUint16(msg, indices[k])
			binary.BigEndian.PutUint32(msg[2:], uint32(seq))
			body := msg[2+loadHeader:]
			src.Read(body)
			sum := sha256.Sum256(body)
			copy(msg[6:], sum[:])
			mt := websocket.BinaryMessage
			if rng.IntN(2) == 0 {
				mt = websocket.TextMessage
			}
			if err := s.writeMessage(mt, msg); err != nil {
				werr <- err
				return
			}
			sent += len(msg)
		}
		werr <- nil
	}()

	next := map[uint16]uint32{}
	for got := 0; got < n*perIndex; got++ {
		e, err := s.takeErr("load echo", isData, 30*time.Second)
		if err != nil {
			return 0, err
		}
		if len(e.data) < loadHeader {
			return 0, fmt.Errorf("index %d: message of %d bytes", e.index, len(e.data))
		}
		seq := binary.BigEndian.Uint32(e.data)
		if seq != next[e.index] {
			return 0, fmt.Errorf("index %d: message %d, want %d (reordered or lost)", e.index, seq, next[e.index])
		}
		next[e.index]++
		if sha256.Sum256(e.data[loadHeader:]) != [32]byte(e.data[4:loadHeader]) {
			return 0, fmt.Errorf("index %d message %d: checksum mismatch (%d bytes)", e.index, seq, len(e.data))
		}
	}
	if err := <-werr; err != nil {
		return 0, err
	}
	for _, idx := range indices {
		if next[idx] != uint32(perIndex) {
			return 0, fmt.Errorf("index %d: %d messages, want %d", idx, next[idx], perIndex)
		}
	}
	return sent, nil
}

// TestSlowUpstreamBoundedMemory pushes 64 MiB from the client to an
// upstream that reads slowly: wsplice must apply backpressure rather than
// buffer (the heap grows by less than 48 MiB), and every byte must arrive
// in order.
func TestSlowUpstreamBoundedMemory(t *testing.T) {
	const (
		total   = 64 << 20
		msgSize = 64 << 10
		bound   = 48 << 20
	)
	ts := startServer(t, splice.Config{})
	type result struct {
		sum  [32]byte
		n    int
		msgs int
		err  error
	}
	results := make(chan result, 1)
	up := startUpstream(t, func(uc *upConn) {
		var r result
		defer func() { results <- r }()
		h := sha256.New()
		buf := make([]byte, 16<<10)
		// Read nothing for a while, then slowly (well within the write timeout).
		time.Sleep(time.Second)
		for r.n < total {
			_, rd, err := uc.c.NextReader()
			if err != nil {
				r.err = err
				return
			}
			n, err := io.CopyBuffer(h, rd, buf)
			if err != nil {
				r.err = err
				return
			}
			r.n += int(n)
			r.msgs++
			if r.msgs%8 == 0 {
				time.Sleep(2 * time.Millisecond)
			}
		}
		copy(r.sum[:], h.Sum(nil))
	})
	s := dialSession(t, ts.url)
	idx := s.connect(up.url)
	s.barrier()

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	baseHeap, baseRSS := ms.HeapInuse, vmRSS()
	peakHeap, peakRSS := baseHeap, baseRSS
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
			runtime.ReadMemStats(&ms)
			peakHeap = max(peakHeap, ms.HeapInuse)
			peakRSS = max(peakRSS, vmRSS())
		}
	}()

	start := time.Now()
	var key [32]byte
	copy(key[:], "wsplice slow upstream stream....")
	src := rand.NewChaCha8(key)
	h := sha256.New()
	msg := withIndex(idx, make([]byte, msgSize))
	for sent := 0; sent < total; sent += msgSize {
		src.Read(msg[2:])
		h.Write(msg[2:])
		noErr(t, s.writeMessage(websocket.BinaryMessage, msg), "send")
	}
	var r result
	select {
	case r = <-results:
	case <-time.After(4 * waitTimeout):
		t.Fatalf("upstream did not get 64 MiB within %v", 4*waitTimeout)
	}
	close(stopSampling)
	<-sampled
	noErr(t, r.err, "upstream read")
	equal(t, r.n, total, "bytes upstream")
	equal(t, r.msgs, total/msgSize, "messages upstream")
	if !bytes.Equal(r.sum[:], h.Sum(nil)) {
		t.Fatalf("upstream's SHA-256 differs: bytes lost, altered or reordered")
	}
	t.Logf("64 MiB in %v; heap +%d MiB, RSS +%d MiB (race: %v)", time.Since(start).Round(time.Millisecond),
		(int64(peakHeap)-int64(baseHeap))>>20, (peakRSS-baseRSS)>>20, raceEnabled)
	if growth := int64(peakHeap) - int64(baseHeap); growth > bound {
		t.Errorf("heap grew by %d MiB while pushing 64 MiB to a slow upstream, want < %d MiB", growth>>20, bound>>20)
	}
	if !raceEnabled && peakRSS-baseRSS > bound {
		t.Errorf("RSS grew by %d MiB while pushing 64 MiB to a slow upstream, want < %d MiB", (peakRSS-baseRSS)>>20, bound>>20)
	}
	// The session is still usable.
	s.barrier()
}

// vmRSS returns this process's resident set size in bytes (0 if unknown).
func vmRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var kb int64
		if _, err := fmt.Sscanf(sc.Text(), "VmRSS: %d kB", &kb); err == nil {
			return kb << 10
		}
	}
	return 0
}

// TestSessionEndReleasesResources runs rounds of sessions with four
// upstreams each and ends them (half by dropping TCP, half by close), and
// checks that every upstream is closed (1001 for a drop) and that fds and
// goroutines come back to their level after a warm-up round.
func TestSessionEndReleasesResources(t *testing.T) {
	ts := startServer(t, splice.Config{})
	up := startUpstream(t, nil)
	round := func() {
		t.Helper()
		var sessions []*session
		var ups [][]*upConn
		for range 10 {
			s := dialSession(t, ts.url)
			var mine []*upConn
			for range 4 {
				idx := s.connect(up.url)
				uc := up.accept(t)
				s.send(idx, []byte("x"))
				uc.read(t)
				uc.write(t, websocket.BinaryMessage, []byte("y"))
				s.readDataFrom(idx)
				mine = append(mine, uc)
			}
			sessions = append(sessions, s)
			ups = append(ups, mine)
		}
		for i, s := range sessions {
			if i%2 == 0 {
				s.conn.NetConn().Close()
			} else {
				noErr(t, s.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, "bye"),
					time.Now().Add(waitTimeout)), "close")
			}
		}
		for i, mine := range ups {
			want := 1001
			if i%2 == 1 {
				want = 1000
				if code, _ := sessions[i].closeFrame(); code != 1000 {
					t.Errorf("session %d: close echo %d, want 1000", i, code)
				}
				sessions[i].conn.Close()
			}
			for j, uc := range mine {
				if code, _ := uc.closeCode(t); code != want {
					t.Errorf("session %d upstream %d: close %d, want %d", i, j, code, want)
				}
			}
		}
	}
	round() // warm-up: pools and lazily made resources fill up here
	baseFD, baseG := steady(countFDs), steady(runtime.NumGoroutine)
	round()
	if !settle(5*time.Second, func() bool { return countFDs() <= baseFD && runtime.NumGoroutine() <= baseG }) {
		t.Errorf("after sessions ended: %d fds (was %d), %d goroutines (was %d)\nfds:\n%s",
			countFDs(), baseFD, runtime.NumGoroutine(), baseG, describeFDs())
	}
}

// steady returns count's value once it has stopped changing for 100ms
// (or after 3s).
func steady(count func() int) int {
	last := count()
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		n := count()
		if n == last {
			return n
		}
		last = n
	}
	return last
}
