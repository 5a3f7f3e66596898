package bench

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os/exec"
	"sync"
)

// TargetKind says how the harness reaches the upstreams.
type TargetKind string

const (
	// KindOurs is the wsplice binary, started by the harness.
	KindOurs TargetKind = "ours"
	// KindDirect is no multiplexer: clients talk to the upstreams.
	KindDirect TargetKind = "direct"
	// KindExternal is a server that speaks the protocol, given by URL.
	KindExternal TargetKind = "external"
	// KindRelay is the direct path through a bare TCP relay process (see
	// RelayMain): what any proxy in a process of its own costs here.
	KindRelay TargetKind = "relay"
)

// Target is one way to run the load.
type Target struct {
	Name string     // shown in the report: "ours", "direct", "ext 127.0.0.1:3000"
	Kind TargetKind //
	URL  string     // session URL, KindExternal only
	Bin  string     // wsplice binary (KindOurs), or a binary that runs RelayMain given RelayArg (KindRelay)
}

// ExternalTarget checks that rawURL is a ws:// URL on loopback (the
// harness's upstreams listen on loopback only, and all traffic stays on
// this machine) and returns its target.
func ExternalTarget(rawURL string) (Target, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return Target{}, fmt.Errorf("bench: --server %q: %w", rawURL, err)
	}
	if u.Scheme != "ws" {
		return Target{}, fmt.Errorf("bench: --server %q: want ws://HOST:PORT (with --tls it is dialed as wss://)", rawURL)
	}
	ip := net.ParseIP(u.Hostname())
	if u.Hostname() == "localhost" {
		ip = net.IPv4(127, 0, 0, 1)
	}
	if ip == nil || !ip.IsLoopback() {
		return Target{}, fmt.Errorf("bench: --server %q: the host must be a loopback address (127.0.0.0/8, ::1 or localhost)", rawURL)
	}
	if u.Port() == "" {
		return Target{}, fmt.Errorf("bench: --server %q: missing port", rawURL)
	}
	if u.Path == "" {
		u.Path = "/"
	}
	return Target{Name: "ext " + u.Host, Kind: KindExternal, URL: u.String()}, nil
}

// instance is a target made ready for one cell.
type instance struct {
	t          *Target
	proc       *serverProc // KindOurs and KindRelay
	sessionURL string      // "" for KindDirect and KindRelay
	upURLs     []string    // KindRelay: the relay's URL for each of up's
}

// start makes t ready for a cell whose upstreams are up (nil in sessions
// mode, which has upstreams of its own per harness process).
func (t *Target) start(up *upstream) (*instance, error) {
	in := &instance{t: t}
	switch t.Kind {
	case KindOurs:
		p, err := startServer(t.Bin)
		if err != nil {
			return nil, err
		}
		in.proc, in.sessionURL = p, p.url()
	case KindExternal:
		in.sessionURL = secureURL(t.URL)
	case KindRelay:
		if up == nil {
			return nil, errors.New("bench: the relay target needs the cell's upstreams")
		}
		args := []string{RelayArg}
		for _, ln := range up.lns {
			args = append(args, ln.Addr().String())
		}
		p, err := startProc(exec.Command(t.Bin, args...), len(up.lns))
		if err != nil {
			return nil, err
		}
		in.proc = p
		for _, a := range p.addrs {
			in.upURLs = append(in.upURLs, "ws://"+a+"/")
		}
	}
	return in, nil
}

// upstreamURL is the URL client i dials, or asks its session to connect,
// for the upstreams up.
func (in *instance) upstreamURL(up *upstream, i int) string {
	if in.upURLs != nil {
		return in.upURLs[i%len(in.upURLs)]
	}
	return up.url(i)
}

// stop ends the server process, if the harness started one.
func (in *instance) stop() error {
	if in.proc == nil {
		return nil
	}
	return in.proc.Stop()
}

// stopErr combines the error of stopping a server with the error of the
// cell: a server that died explains the cell's failure, so it comes first.
func stopErr(stop, cell error) error {
	switch {
	case stop == nil:
		return cell
	case cell == nil:
		return stop
	case errors.Is(cell, errServerExited):
		return cell
	}
	return fmt.Errorf("%w; the cell saw: %w", stop, cell)
}

// check returns an error if the server process died.
func (in *instance) check() error {
	if in.proc == nil {
		return nil
	}
	return in.proc.check()
}

// sample reads the server process's resource use; ok is false when the
// server is not a local process of the harness.
func (in *instance) sample() (st procStat, ok bool) {
	if in.proc == nil {
		return st, false
	}
	st, err := readProc(in.proc.pid())
	return st, err == nil
}

// cell is what a throughput or latency cell runs on: upstreams of one
// kind, the target started, and a client per session through it.
type cell struct {
	up *upstream
	in *instance
	cs []*client
}

// openCell starts upstreams of kind and the target, then opens clients;
// on an error it undoes what it did.
func openCell(t *Target, kind upstreamKind, clients, scanSize int) (*cell, error) {
	up, err := startUpstream(kind, sinkListeners)
	if err != nil {
		return nil, err
	}
	in, err := t.start(up)
	if err != nil {
		up.Close()
		return nil, err
	}
	cs, err := openClients(in, up, clients, scanSize)
	if err != nil {
		err = stopErr(in.stop(), err)
		up.Close()
		return nil, err
	}
	return &cell{up: up, in: in, cs: cs}, nil
}

// close stops the target, then the upstreams; err is the cell's error,
// returned combined with the target's (stopErr).
func (c *cell) close(err error) error {
	err = stopErr(c.in.stop(), err)
	c.up.Close()
	return err
}

// dialConcurrency bounds the handshakes in progress at once.
const dialConcurrency = 32

// openClients opens n clients, client i to upstream in.upstreamURL(up,
// i), through the instance's multiplexer if it has one.
func openClients(in *instance, up *upstream, n, scanSize int) ([]*client, error) {
	var mask [4]byte
	rand.Read(mask[:])
	clients := make([]*client, n)
	errs := make([]error, n)
	sem := make(chan struct{}, dialConcurrency)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			clients[i], errs[i] = openClient(in.sessionURL, in.upstreamURL(up, i), mask, scanSize)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			closeClients(clients)
			return nil, fmt.Errorf("client %d of %d: %w", i, n, err)
		}
	}
	return clients, nil
}

func closeClients(cs []*client) {
	for _, c := range cs {
		if c != nil {
			c.conn.Close()
		}
	}
}
