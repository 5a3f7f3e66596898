//go:build linux

package splice_test

// Security tests: wsplice dials on behalf of clients from the internet, so
// it must not become an open relay into the machine's own network (SSRF),
// must not let a client shape the upstream handshake beyond its own
// headers, must drop peers that break the protocol without disturbing
// anyone else, and must not let a few bytes of hostile input pin large
// amounts of memory.

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsplice/wsplice/splice"
)

// --- header hygiene -----------------------------------------------------------

// TestConnectHeaderHygiene: a client's connect headers may not set
// hop-by-hop headers, Host or Sec-WebSocket-*, in any letter case, nor
// hold CR, LF or NUL in a value or anything but a token as a name: each is
// 4009 with path "headers.<name as given>", and nothing is dialed. Headers
// that pass reach the upstream unchanged, and the handshake wsplice sends
// keeps the URL's host and its own WebSocket headers.
func TestConnectHeaderHygiene(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{})
	var dialed atomic.Int32
	up := startUpstream(t, func(uc *upConn) { dialed.Add(1); uc.record() })
	bad := []struct{ name, value string }{
		{"Connection", "close"},
		{"connection", "keep-alive, Upgrade"},
		{"Upgrade", "h2c"},
		{"Host", "evil.example"},
		{"host", "evil.example"},
		{"Keep-Alive", "timeout=5"},
		{"Transfer-Encoding", "chunked"},
		{"TE", "trailers"},
		{"Trailer", "X-A"},
		{"Content-Length", "0"},
		{"Proxy-Authorization", "Basic Zm9vOmJhcg=="},
		{"Proxy-Authenticate", "Basic"},
		{"Proxy-Connection", "keep-alive"},
		{"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="},
		{"sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="},
		{"SEC-WEBSOCKET-VERSION", "8"},
		{"Sec-WebSocket-Protocol", "chat"},
		{"Sec-WebSocket-Extensions", "permessage-deflate"},
		{"Sec-WebSocket-Accept", "x"},
		{"X-Injected", "a\rb"},
		{"X-Injected", "a\nHost: evil.example"},
		{"X-Injected", "a\r\nX-Evil: 1"},
		{"X-Injected", "a\x00b"},
		{"X-Injected\r\nHost", "evil.example"},
		{"X-Injected: 1\r\nX-B", "2"},
		{"X Injected", "1"},
		{"X-Injected:", "1"},
		{"", "1"},
		{"X-\u00c4", "1"},
	}
	for _, tc := range bad {
		t.Run(fmt.Sprintf("%q=%q", tc.name, tc.value), func(t *testing.T) {
			t.Parallel()
			s := dialSession(t, ts.url)
			r := s.call("connect", map[string]any{"url": up.url, "headers": map[string]string{tc.name: tc.value}})
			wantError(t, r, 4009, "headers."+tc.name)
		})
	}
	t.Run("allowed headers pass unchanged", func(t *testing.T) {
		// Not parallel with the refusals above: it counts the dials.
		s := dialSession(t, ts.url)
		h := map[string]string{
			"Authorization": "Bearer abc.def",
			"Cookie":        "a=b; c=d",
			"X-Trace":       "t-1",
			"Origin":        "https://app.example",
			"User-Agent":    "client/1.0",
		}
		s.connectWith(map[string]any{"url": up.url, "headers": h})
		uc := up.accept(t)
		for k, v := range h {
			equal(t, strings.Join(uc.req.Header.Values(k), ","), v, "upstream header "+k)
		}
		equal(t, uc.req.Host, up.addr, "Host at the upstream")
		equal(t, uc.req.Header.Get("Sec-WebSocket-Version"), "13", "Sec-WebSocket-Version")
	})
	t.Cleanup(func() {
		if n := dialed.Load(); n != 1 {
			t.Errorf("%d connections reached the upstream, want 1 (refused headers must not be dialed)", n)
		}
	})
}

// --- upstream policy ----------------------------------------------------------

// connTrap is a listener that counts the connections reaching it.
type connTrap struct {
	port string
	hits atomic.Int32
}

// startConnTrap listens on addr (skipping the test when it cannot).
func startConnTrap(t testing.TB, network, addr string) *connTrap {
	t.Helper()
	tr, err := tryConnTrap(t, network, addr)
	if err != nil {
		t.Skipf("listen %s %s: %v", network, addr, err)
	}
	return tr
}

// tryConnTrap listens on addr, closed by a cleanup.
func tryConnTrap(t testing.TB, network, addr string) (*connTrap, error) {
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, err
	}
	tr := &connTrap{}
	_, tr.port, _ = net.SplitHostPort(ln.Addr().String())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tr.hits.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return tr, nil
}

// TestUpstreamAddressForms: with the default policy (any public host, no
// --allow-private-upstreams), no spelling of a loopback, private,
// link-local or otherwise local address gets through: IPv6, IPv4-mapped
// and other IPv4-embedding IPv6 forms, zones, names that resolve locally,
// and the numeric forms that inet_aton and the WHATWG URL parser read as
// IPv4 (127.1, 2130706433, 0x7f.0.0.1, 0177.0.0.1, 127.0.0.1.). Each is
// 4006 (or 4005, an invalid URL): rpc/policy.go refuses a host whose last
// label is a number because URL parsers and inet_aton read it as IPv4, so
// such a host must not be handed to the resolver, whose answer varies
// (Go's own resolver calls all-numeric names "no such host" without a
// query, queries hex forms in DNS; getaddrinfo reads them all as IPv4).
// No connection reaches the loopback listeners. URLs
// with userinfo, fragments, or ports outside 1-65535 are 4005 on any
// policy.
func TestUpstreamAddressForms(t *testing.T) {
	t.Parallel()
	public := startServer(t, splice.Config{Policy: mustPolicy(t, nil, false)})
	open := startServer(t, splice.Config{})
	v4 := startConnTrap(t, "tcp4", "127.0.0.1:0")
	v6, _ := tryConnTrap(t, "tcp6", "[::1]:"+v4.port) // nil without IPv6
	P := v4.port
	refused := []int{4006, 4005}
	invalid := []int{4005}
	// A name is checked at the addresses it resolves to; one that does
	// not resolve here fails its DNS lookup (4007).
	nameRefused := []int{4006, 4007}
	cases := []struct {
		name string
		srv  *testServer
		url  string
		want []int
	}{
		{"localhost", public, "ws://localhost:" + P + "/", refused},
		{"localhost upper case, trailing dot", public, "ws://LOCALHOST.:" + P + "/", nameRefused},
		{"127.0.0.1", public, "ws://127.0.0.1:" + P + "/", refused},
		{"127.0.0.1 trailing dot", public, "ws://127.0.0.1.:" + P + "/", refused},
		{"127.255.255.254", public, "ws://127.255.255.254:" + P + "/", refused},
		{"percent-encoded 127.0.0.1", public, "ws://%31%32%37.0.0.1:" + P + "/", refused},
		{"::1", public, "ws://[::1]:" + P + "/", refused},
		{"::1 long form", public, "ws://[0:0:0:0:0:0:0:1]:" + P + "/", refused},
		{"IPv4-mapped dotted", public, "ws://[::ffff:127.0.0.1]:" + P + "/", refused},
		{"IPv4-mapped hex", public, "ws://[::ffff:7f00:1]:" + P + "/", refused},
		{"IPv4-mapped long form", public, "ws://[0:0:0:0:0:ffff:7f00:0001]:" + P + "/", refused},
		{"IPv4-compatible", public, "ws://[::127.0.0.1]:" + P + "/", refused},
		{"NAT64", public, "ws://[64:ff9b::7f00:1]:" + P + "/", refused},
		{"6to4", public, "ws://[2002:7f00:1::1]:" + P + "/", refused},
		{"IPv6 link-local with zone", public, "ws://[fe80::1%25lo]:" + P + "/", refused},
		{"IPv6 unique local", public, "ws://[fd00::2]:" + P + "/", refused},
		{"IPv6 unspecified", public, "ws://[::]:" + P + "/", refused},
		{"0.0.0.0", public, "ws://0.0.0.0:" + P + "/", refused},
		{"cloud metadata", public, "ws://169.254.169.254/", refused},
		{"cloud metadata IPv6", public, "ws://[fd00:ec2::254]/", refused},
		{"CGNAT metadata", public, "ws://100.100.100.200/", refused},
		{"RFC 1918", public, "ws://10.0.0.1/", refused},
		{"multicast", public, "ws://224.0.0.1/", refused},
		{"broadcast", public, "ws://255.255.255.255/", refused},
		{"short 127.1", public, "ws://127.1:" + P + "/", refused},
		{"decimal 2130706433", public, "ws://2130706433:" + P + "/", refused},
		{"hex 0x7f000001", public, "ws://0x7f000001:" + P + "/", refused},
		{"hex 0x7f.0.0.1", public, "ws://0x7f.0.0.1:" + P + "/", refused},
		{"octal 0177.0.0.1", public, "ws://0177.0.0.1:" + P + "/", refused},
		{"octal 017700000001", public, "ws://017700000001:" + P + "/", refused},
		{"bare 0", public, "ws://0:" + P + "/", refused},
		{"userinfo", open, "ws://user:pass@127.0.0.1:" + P + "/", invalid},
		{"userinfo naming another host", public, "ws://example.com@127.0.0.1:" + P + "/", invalid},
		{"host in userinfo", public, "ws://127.0.0.1:" + P + "@example.com/", invalid},
		{"fragment hiding a host", public, "ws://127.0.0.1:" + P + "#@example.com/", invalid},
		{"backslash", public, `ws://127.0.0.1\@example.com/`, invalid},
		{"NUL in host", public, "ws://127.0.0.1%00.example.com/", invalid},
		{"port 0", open, "ws://127.0.0.1:0/", invalid},
		{"port 65536", open, "ws://127.0.0.1:65536/", invalid},
		{"port 65536+" + P, open, "ws://127.0.0.1:" + strconv.Itoa(65536+mustAtoi(P)) + "/", invalid},
		{"port overflow", open, "ws://127.0.0.1:99999999999999999999/", invalid},
		{"negative port", open, "ws://127.0.0.1:-1/", invalid},
		{"hex port", open, "ws://127.0.0.1:0x50/", invalid},
		{"signed port", open, "ws://127.0.0.1:+" + P + "/", invalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := dialSession(t, tc.srv.url)
			r := s.call("connect", map[string]any{"url": tc.url, "timeout": 2000})
			switch {
			case r.Error == nil:
				t.Errorf("connect %s succeeded: %s", tc.url, r)
			case !containsCode(tc.want, r.Error.Code):
				t.Errorf("connect %s: error %d (%s), want one of %v", tc.url, r.Error.Code, r.Error.Message, tc.want)
			case r.Error.Code == 4006 && r.Error.Path != "url":
				t.Errorf("4006 with path %q, want \"url\"", r.Error.Path)
			}
		})
	}
	t.Run("leading zeros in the port are decimal", func(t *testing.T) {
		t.Parallel()
		up := startUpstream(t, nil)
		_, port, _ := net.SplitHostPort(up.addr)
		s := dialSession(t, open.url)
		idx := s.connect("ws://127.0.0.1:00" + port + "/")
		s.send(idx, []byte("x"))
		equal(t, string(up.accept(t).read(t).data), "x", "message")
	})
	t.Cleanup(func() {
		if n := v4.hits.Load(); n > 0 {
			t.Errorf("%d connections reached 127.0.0.1:%s through the public policy", n, P)
		}
		if v6 != nil && v6.hits.Load() > 0 {
			t.Errorf("%d connections reached [::1]:%s through the public policy", v6.hits.Load(), P)
		}
	})
}

func containsCode(list []int, v int) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

func mustAtoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// TestAllowlistExplicit: an address or name listed in --allowed-hostnames
// is dialed even when private (it is explicit configuration), in any of
// its spellings; an address not listed is refused even when the listed
// one is the same machine.
func TestAllowlistExplicit(t *testing.T) {
	t.Parallel()
	up := startUpstream(t, nil)
	_, port, _ := net.SplitHostPort(up.addr)
	cases := []struct {
		name    string
		allowed []string
		url     string
		ok      bool
	}{
		{"listed name resolving to loopback", []string{"localhost"}, "ws://localhost:" + port + "/", true},
		{"listed IPv4, URL in IPv4-mapped form", []string{"127.0.0.1"}, "ws://[::ffff:127.0.0.1]:" + port + "/", true},
		{"listed IPv4-mapped, URL in IPv4", []string{"[::ffff:127.0.0.1]"}, "ws://127.0.0.1:" + port + "/", true},
		{"listed IPv4, other loopback address", []string{"127.0.0.1"}, "ws://127.0.0.2:" + port + "/", false},
		{"listed IPv4, short form", []string{"127.0.0.1"}, "ws://127.1:" + port + "/", false},
		{"listed IPv4, IPv6 loopback", []string{"127.0.0.1"}, "ws://[::1]:" + port + "/", false},
		{"listed name, URL by address", []string{"localhost"}, "ws://127.0.0.1:" + port + "/", false},
		{"listed wildcard, its apex resolving to loopback", []string{"*.localhost"}, "ws://localhost:" + port + "/", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, splice.Config{Policy: mustPolicy(t, tc.allowed, false)})
			s := dialSession(t, ts.url)
			r := s.call("connect", map[string]any{"url": tc.url, "timeout": 2000})
			if tc.ok {
				if r.Error != nil {
					t.Fatalf("connect %s with %q listed: %s", tc.url, tc.allowed, r)
				}
				return
			}
			wantError(t, r, 4006, "url")
		})
	}
}

// fakeDNS is a DNS server for tests: answers come from a function of the
// name, the query type (1: A, 28: AAAA) and how many queries of that name
// and type came before. It is the resolver of net.DefaultResolver while a
// test runs (see useFakeDNS).
type fakeDNS struct {
	pc     net.PacketConn
	answer func(name string, qtype uint16, n int) []netip.Addr
	mu     sync.Mutex
	seen   map[string]int // "name/qtype" -> queries so far
	done   chan struct{}
}

// useFakeDNS makes net.DefaultResolver ask a fakeDNS for the rest of the
// test. It must run before the servers that resolve start (their
// goroutines then see the new resolver), and the test must not be
// parallel: net.DefaultResolver is process-wide.
func useFakeDNS(t *testing.T, answer func(name string, qtype uint16, n int) []netip.Addr) *fakeDNS {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	noErr(t, err, "fake DNS listen")
	f := &fakeDNS{pc: pc, answer: answer, seen: map[string]int{}, done: make(chan struct{})}
	go f.serve()
	old := net.DefaultResolver
	net.DefaultResolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", pc.LocalAddr().String())
	}}
	t.Cleanup(func() {
		net.DefaultResolver = old
		pc.Close()
		<-f.done
	})
	return f
}

func (f *fakeDNS) queries(name string, qtype uint16) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seen[fmt.Sprintf("%s/%d", name, qtype)]
}

// serve answers queries (RFC 1035 section 4) until the socket closes.
func (f *fakeDNS) serve() {
	defer close(f.done)
	buf := make([]byte, 1500)
	for {
		n, from, err := f.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		q := buf[:n]
		if len(q) < 12 {
			continue
		}
		// The question: labels, then type and class.
		off := 12
		var labels []string
		for off < len(q) && q[off] != 0 {
			l := int(q[off])
			if off+1+l > len(q) {
				break
			}
			labels = append(labels, strings.ToLower(string(q[off+1:off+1+l])))
			off += 1 + l
		}
		off++
		if off+4 > len(q) {
			continue
		}
		qtype := binary.BigEndian.Uint16(q[off:])
		qend := off + 4
		name := strings.Join(labels, ".")
		f.mu.Lock()
		key := fmt.Sprintf("%s/%d", name, qtype)
		count := f.seen[key]
		f.seen[key]++
		f.mu.Unlock()
		addrs := f.answer(name, qtype, count)
		var rr []netip.Addr
		for _, a := range addrs {
			if (qtype == 1 && a.Is4()) || (qtype == 28 && a.Is6()) {
				rr = append(rr, a)
			}
		}
		flags := uint16(0x8180) // response, recursion desired and available
		if addrs == nil {
			flags |= 3 // NXDOMAIN
		}
		resp := binary.BigEndian.AppendUint16(nil, binary.BigEndian.Uint16(q))
		resp = binary.BigEndian.AppendUint16(resp, flags)
		resp = binary.BigEndian.AppendUint16(resp, 1)
		resp = binary.BigEndian.AppendUint16(resp, uint16(len(rr)))
		resp = append(resp, 0, 0, 0, 0)
		resp = append(resp, q[12:qend]...)
		for _, a := range rr {
			resp = append(resp, 0xc0, 12) // the name: a pointer to the question's
			resp = binary.BigEndian.AppendUint16(resp, qtype)
			resp = binary.BigEndian.AppendUint16(resp, 1) // IN
			resp = append(resp, 0, 0, 0, 0)               // TTL 0: never cache
			raw := a.AsSlice()
			resp = binary.BigEndian.AppendUint16(resp, uint16(len(raw)))
			resp = append(resp, raw...)
		}
		f.pc.WriteTo(resp, from)
	}
}

// TestDNSRebinding: the policy holds for the address actually dialed. A
// name is resolved once; every address is checked; only checked addresses
// are dialed. A fake DNS server answers "rebind.test" with a public
// address the first time and with loopback after; a name with a mix of
// public and loopback addresses must be dialed at the public one only;
// names resolving only to local addresses (IPv4, IPv4-mapped IPv6, NAT64)
// are 4006; an IP literal with a trailing dot is not looked up in DNS;
// and a listed name may resolve to loopback. Not parallel: it replaces
// net.DefaultResolver.
func TestDNSRebinding(t *testing.T) {
	// 198.51.100.0/24 (TEST-NET-2) is public to the policy and reaches
	// nothing: a dial there fails (4007) or times out.
	const public4 = "198.51.100.7"
	pub := netip.MustParseAddr(public4)
	lo := netip.MustParseAddr("127.0.0.1")
	dns := useFakeDNS(t, func(name string, qtype uint16, n int) []netip.Addr {
		switch name {
		case "rebind.test":
			if qtype == 1 && n == 0 {
				return []netip.Addr{pub}
			}
			return []netip.Addr{lo}
		case "mixed.test":
			return []netip.Addr{lo, pub}
		case "private.test":
			return []netip.Addr{netip.MustParseAddr("10.0.0.1"), lo}
		case "mapped.test":
			return []netip.Addr{netip.MustParseAddr("::ffff:127.0.0.1")}
		case "nat64.test":
			return []netip.Addr{netip.MustParseAddr("64:ff9b::7f00:1")}
		case "listed.test", "10.1.2.3":
			return []netip.Addr{lo}
		}
		return nil
	})
	tr := startConnTrap(t, "tcp4", "127.0.0.1:0")
	public := startServer(t, splice.Config{Policy: mustPolicy(t, nil, false)})
	s := dialSession(t, public.url)

	cases := []struct {
		host    string
		code    int
		mention string
	}{
		{"rebind.test", 4007, public4},
		{"mixed.test", 4007, public4},
		{"private.test", 4006, ""},
		{"mapped.test", 4006, ""},
		{"nat64.test", 4006, ""},
	}
	for _, tc := range cases {
		r := s.call("connect", map[string]any{"url": "ws://" + tc.host + ":" + tr.port + "/", "timeout": 1000})
		if r.Error == nil {
			t.Errorf("%s: connect succeeded: %s", tc.host, r)
			continue
		}
		if r.Error.Code != tc.code || !strings.Contains(r.Error.Message, tc.mention) {
			t.Errorf("%s: error %d %q, want %d mentioning %q", tc.host, r.Error.Code, r.Error.Message, tc.code, tc.mention)
		}
	}
	if n := dns.queries("rebind.test", 1); n != 1 {
		t.Errorf("rebind.test was resolved %d times for one connect, want once", n)
	}
	if n := tr.hits.Load(); n > 0 {
		t.Errorf("%d connections reached 127.0.0.1:%s through names that resolve there", n, tr.port)
	}

	// An IP literal with a trailing dot names the address, not a DNS name:
	// with that address listed, what DNS says about "10.1.2.3." must not
	// be dialed.
	listedIP := startServer(t, splice.Config{Policy: mustPolicy(t, []string{"10.1.2.3"}, false)})
	is := dialSession(t, listedIP.url)
	r := is.call("connect", map[string]any{"url": "ws://10.1.2.3.:" + tr.port + "/", "timeout": 500})
	if n := tr.hits.Load(); n > 0 || r.Error == nil {
		t.Errorf("ws://10.1.2.3.:%s/ with 10.1.2.3 listed: %s; %d connections reached 127.0.0.1:%s, where DNS points \"10.1.2.3.\"",
			tr.port, r, n, tr.port)
	}

	// A listed name is explicit: its loopback address is dialed.
	up := startUpstream(t, nil)
	_, port, _ := net.SplitHostPort(up.addr)
	listed := startServer(t, splice.Config{Policy: mustPolicy(t, []string{"listed.test"}, false)})
	ls := dialSession(t, listed.url)
	idx := ls.connect("ws://listed.test:" + port + "/")
	ls.send(idx, []byte("through"))
	uc := up.accept(t)
	equal(t, string(uc.read(t).data), "through", "message through a listed name")
	equal(t, uc.req.Host, "listed.test:"+port, "Host header keeps the URL's host")
}

// --- protocol violations ------------------------------------------------------

// TestUpstreamProtocolViolations: an upstream that breaks RFC 6455 gets a
// close frame (1002, or 1009 for a control frame over 125 bytes) and the
// client gets onSocketDisconnect with that code and a message; the other
// upstream of the session and other sessions carry on.
func TestUpstreamProtocolViolations(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{})
	bystander := dialSession(t, ts.url)
	long := make([]byte, 126)
	cases := []struct {
		name string
		raw  []byte
		code int
	}{
		{"masked frame", appendFrame(nil, frame{fin: true, op: opBinary, masked: true, payload: []byte("x")}), 1002},
		{"opcode 0x3", appendFrame(nil, frame{fin: true, op: 0x3, payload: []byte("x")}), 1002},
		{"opcode 0x7", appendFrame(nil, frame{fin: true, op: 0x7}), 1002},
		{"opcode 0xb", appendFrame(nil, frame{fin: true, op: 0xb}), 1002},
		{"opcode 0xf", appendFrame(nil, frame{fin: true, op: 0xf, payload: []byte("x")}), 1002},
		{"RSV1", appendFrame(nil, frame{fin: true, rsv: 4, op: opText, payload: []byte("x")}), 1002},
		{"RSV2", appendFrame(nil, frame{fin: true, rsv: 2, op: opBinary, payload: []byte("x")}), 1002},
		{"RSV3 on a ping", appendFrame(nil, frame{fin: true, rsv: 1, op: opPing}), 1002},
		{"close code 999", appendFrame(nil, frame{fin: true, op: opClose, payload: closePayload(999, "")}), 1002},
		{"close code 1004", appendFrame(nil, frame{fin: true, op: opClose, payload: closePayload(1004, "")}), 1002},
		{"close code 1005", appendFrame(nil, frame{fin: true, op: opClose, payload: closePayload(1005, "")}), 1002},
		{"close code 1006", appendFrame(nil, frame{fin: true, op: opClose, payload: closePayload(1006, "")}), 1002},
		{"close code 1015", appendFrame(nil, frame{fin: true, op: opClose, payload: closePayload(1015, "")}), 1002},
		{"close code 2999", appendFrame(nil, frame{fin: true, op: opClose, payload: closePayload(2999, "")}), 1002},
		{"close code 5000", appendFrame(nil, frame{fin: true, op: opClose, payload: closePayload(5000, "")}), 1002},
		{"close with 1 byte", appendFrame(nil, frame{fin: true, op: opClose, payload: []byte{3}}), 1002},
		{"close reason not UTF-8", appendFrame(nil, frame{fin: true, op: opClose, payload: closePayload(1000, "\xff\xfe")}), 1002},
		{"ping of 126 bytes", appendFrame(nil, frame{fin: true, op: opPing, payload: long}), 1009},
		{"close of 126 bytes", appendFrame(nil, frame{fin: true, op: opClose, payload: append(closePayload(1000, ""), long[2:]...)}), 1009},
		{"fragmented ping", appendFrame(nil, frame{fin: false, op: opPing, payload: []byte("x")}), 1002},
		{"fragmented close", appendFrame(nil, frame{fin: false, op: opClose, payload: closePayload(1000, "")}), 1002},
		{"continuation without a message", appendFrame(nil, frame{fin: true, op: opCont, payload: []byte("x")}), 1002},
		{"64-bit length with the top bit set", []byte{0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1}, 1002},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			closeCode := make(chan int, 1)
			bad := startRawUpstream(t, func(conn net.Conn, br *bufio.Reader) {
				if _, err := rawAccept(conn, br, nil); err != nil {
					closeCode <- -2
					return
				}
				conn.Write(tc.raw)
				for {
					f, err := readFrame(br)
					if err != nil {
						closeCode <- -1
						return
					}
					if f.op == opClose {
						code, _ := parseClose(f.payload)
						closeCode <- code
						return
					}
				}
			})
			good := startUpstream(t, nil)
			s := dialSession(t, ts.url)
			b := s.connect(good.url)
			ucB := good.accept(t)
			a := s.connect(bad.url)
			d := s.waitDisconnect()
			equal(t, *d.Index, int(a), "index")
			equal(t, d.Code, tc.code, "onSocketDisconnect code")
			if d.Message == "" {
				t.Errorf("onSocketDisconnect %d without a message", d.Code)
			}
			select {
			case got := <-closeCode:
				if got != 1002 && got != tc.code {
					t.Errorf("the upstream got close %d (-1: none), want %d", got, tc.code)
				}
			case <-time.After(waitTimeout):
				t.Errorf("the upstream was neither sent a close nor disconnected")
			}
			checkSessionWorks(t, s, b, ucB)
			bystander.barrier()
		})
	}
}

// TestClientProtocolViolations: a client that breaks RFC 6455 gets a close
// frame with 1002 (1009 for a control frame over 125 bytes is also
// accepted) and a reason, then the connection is closed; its upstreams get
// 1001 and other sessions carry on.
func TestClientProtocolViolations(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{})
	bystander := dialSession(t, ts.url)
	bup := startUpstream(t, echo)
	bi := bystander.connect(bup.url)
	long := make([]byte, 126)
	cases := []struct {
		name  string
		build func(idx uint16) []byte
		codes []int
		fwd   string // a first fragment already forwarded (then completed)
	}{
		{"unmasked data", func(idx uint16) []byte {
			return appendFrame(nil, frame{fin: true, op: opBinary, payload: withIndex(idx, []byte("x"))})
		}, []int{1002}, ""},
		{"opcode 0x3", func(idx uint16) []byte {
			return appendFrame(nil, frame{fin: true, op: 0x3, masked: true, payload: withIndex(idx, []byte("x"))})
		}, []int{1002}, ""},
		{"opcode 0xb", func(uint16) []byte { return appendFrame(nil, frame{fin: true, op: 0xb, masked: true}) }, []int{1002}, ""},
		{"RSV1", func(idx uint16) []byte {
			return appendFrame(nil, frame{fin: true, rsv: 4, op: opBinary, masked: true, payload: withIndex(idx, []byte("x"))})
		}, []int{1002}, ""},
		{"RSV3", func(idx uint16) []byte {
			return appendFrame(nil, frame{fin: true, rsv: 1, op: opText, masked: true, payload: withIndex(idx, []byte("x"))})
		}, []int{1002}, ""},
		{"close code 999", func(uint16) []byte {
			return appendFrame(nil, frame{fin: true, op: opClose, masked: true, payload: closePayload(999, "")})
		}, []int{1002}, ""},
		{"close code 1005", func(uint16) []byte {
			return appendFrame(nil, frame{fin: true, op: opClose, masked: true, payload: closePayload(1005, "")})
		}, []int{1002}, ""},
		{"close code 1006", func(uint16) []byte {
			return appendFrame(nil, frame{fin: true, op: opClose, masked: true, payload: closePayload(1006, "")})
		}, []int{1002}, ""},
		{"close code 1015", func(uint16) []byte {
			return appendFrame(nil, frame{fin: true, op: opClose, masked: true, payload: closePayload(1015, "")})
		}, []int{1002}, ""},
		{"close code 2000", func(uint16) []byte {
			return appendFrame(nil, frame{fin: true, op: opClose, masked: true, payload: closePayload(2000, "")})
		}, []int{1002}, ""},
		{"close code 5000", func(uint16) []byte {
			return appendFrame(nil, frame{fin: true, op: opClose, masked: true, payload: closePayload(5000, "")})
		}, []int{1002}, ""},
		{"close with 1 byte", func(uint16) []byte {
			return appendFrame(nil, frame{fin: true, op: opClose, masked: true, payload: []byte{3}})
		}, []int{1002}, ""},
		{"close reason not UTF-8", func(uint16) []byte {
			return appendFrame(nil, frame{fin: true, op: opClose, masked: true, payload: closePayload(1000, "\xc3\x28")})
		}, []int{1002}, ""},
		{"ping of 126 bytes", func(uint16) []byte {
			return appendFrame(nil, frame{fin: true, op: opPing, masked: true, payload: long})
		}, []int{1002, 1009}, ""},
		{"fragmented ping", func(uint16) []byte {
			return appendFrame(nil, frame{fin: false, op: opPing, masked: true, payload: []byte("x")})
		}, []int{1002}, ""},
		{"continuation without a message", func(uint16) []byte {
			return appendFrame(nil, frame{fin: true, op: opCont, masked: true, payload: []byte("x")})
		}, []int{1002}, ""},
		{"new message inside a fragmented one", func(idx uint16) []byte {
			return joinBytes(appendFrame(nil, frame{fin: false, op: opBinary, masked: true, payload: withIndex(idx, []byte("a"))}),
				appendFrame(nil, frame{fin: true, op: opBinary, masked: true, payload: withIndex(idx, []byte("b"))}))
		}, []int{1002}, "a"},
		{"64-bit length with the top bit set", func(uint16) []byte {
			return []byte{0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4}
		}, []int{1002}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := startUpstream(t, nil)
			c := dialRaw(t, ts.addr)
			idx := c.openUpstream(1, up.url)
			uc := up.accept(t)
			c.writeBytes(tc.build(idx))
			for {
				c.conn.SetReadDeadline(time.Now().Add(waitTimeout))
				f, err := readFrame(c.br)
				if err != nil {
					t.Fatalf("connection ended (%v) without a close frame", err)
				}
				if f.op != opClose {
					continue
				}
				code, reason := parseClose(f.payload)
				if !containsCode(tc.codes, code) {
					t.Errorf("close %d (%q), want %v", code, reason, tc.codes)
				}
				if reason == "" {
					t.Errorf("close %d without a reason", code)
				}
				break
			}
			readUntilEOF(t, c.conn, waitTimeout)
			if tc.fwd != "" {
				// Fragments are streamed: the one before the bad frame
				// went through, and its message was ended for the
				// upstream before the close.
				equal(t, string(uc.read(t).data), tc.fwd, "message completed at the upstream")
			}
			code, _ := uc.closeCode(t)
			equal(t, code, 1001, "upstream close code")
			select {
			case m := <-uc.msgs:
				t.Errorf("the bad frame's payload reached the upstream: %q", trunc(m.data))
			default:
			}
			bystander.send(bi, []byte("unaffected"))
			equal(t, string(bystander.readDataFrom(bi)), "unaffected", "bystander echo")
		})
	}
}

// --- resource exhaustion ------------------------------------------------------

// TestPaddingBounded: completing a frame whose source died must not let a
// few bytes pin megabytes or hold up the loop. Hostile upstreams each
// declare a 16 MiB frame, send one byte of it and die, toward clients that
// do not read; hostile clients do the same toward upstreams that do not
// read. The zero padding wsplice owes is output like any other, bounded by
// the per-connection output cap (256 KiB above which nothing more is
// taken on, plus a turn's worth): 8 such sessions must not grow the heap
// by 32 MiB (unbounded padding holds up to 8 x 16 MiB), and a bystander
// session on the same loop keeps doing round trips within a second each.
// Not parallel: it measures the heap.
func TestPaddingBounded(t *testing.T) {
	const (
		sessions = 8
		declared = 16<<20 - 1
		bound    = 32 << 20
		rtBound  = time.Second
	)
	// bystand does round trips on s until stop is closed and returns the
	// slowest.
	bystand := func(s *session, idx uint16, stop <-chan struct{}) <-chan time.Duration {
		out := make(chan time.Duration, 1)
		go func() {
			var slowest time.Duration
			defer func() { out <- slowest }()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				m := []byte(strconv.Itoa(i))
				start := time.Now()
				if s.writeMessage(websocket.BinaryMessage, withIndex(idx, m)) != nil {
					slowest = -1
					return
				}
				if _, err := s.takeErr("bystander echo", isDataFrom(idx), 4*waitTimeout); err != nil {
					slowest = -1
					return
				}
				slowest = max(slowest, time.Since(start))
				time.Sleep(5 * time.Millisecond)
			}
		}()
		return out
	}
	check := func(t *testing.T, base uint64, growth int64, slowest time.Duration) {
		t.Helper()
		t.Logf("%d hostile sessions: heap +%d MiB; slowest bystander round trip %v", sessions, growth>>20, slowest)
		if growth > bound {
			t.Errorf("heap grew by %d MiB, want < %d MiB: the zero padding is not bounded by the output cap", growth>>20, bound>>20)
		}
		switch {
		case slowest < 0:
			t.Errorf("the bystander session failed while the padding was queued")
		case slowest > rtBound:
			t.Errorf("a bystander round trip on the same loop took %v, want < %v: the padding holds up the loop", slowest, rtBound)
		}
	}
	t.Run("toward clients", func(t *testing.T) {
		ts := startServer(t, splice.Config{WriteTimeout: 3 * time.Second, Loops: 1})
		die := make(chan struct{})
		dying := startRawUpstream(t, func(conn net.Conn, br *bufio.Reader) {
			if _, err := rawAccept(conn, br, nil); err != nil {
				return
			}
			<-die
			conn.Write(append(binary.BigEndian.AppendUint64([]byte{0x82, 127}, declared), 'x'))
		})
		eup := startUpstream(t, echo)
		by := dialSession(t, ts.url)
		bi := by.connect(eup.url)
		var clients []*rawClient
		for i := range sessions {
			c := dialRaw(t, ts.addr)
			c.openUpstream(i+1, dying.url) // from here on the client reads nothing
			clients = append(clients, c)
		}
		base := heapAfterGC()
		hs := startHeapSampler()
		stop := make(chan struct{})
		slowest := bystand(by, bi, stop)
		close(die)
		time.Sleep(time.Second)
		close(stop)
		check(t, base, hs.growth(), <-slowest)
		for _, c := range clients {
			c.conn.Close()
		}
		if !settle(10*time.Second, func() bool { return heapAfterGC() < base+16<<20 }) {
			t.Errorf("heap %d MiB after the sessions ended, %d MiB before", heapAfterGC()>>20, base>>20)
		}
	})
	t.Run("toward upstreams", func(t *testing.T) {
		ts := startServer(t, splice.Config{WriteTimeout: 3 * time.Second, Loops: 1})
		release := make(chan struct{})
		deaf := startRawUpstream(t, func(conn net.Conn, br *bufio.Reader) {
			if _, err := rawAccept(conn, br, nil); err != nil {
				return
			}
			<-release // reads nothing until the test is done
		})
		defer close(release)
		eup := startUpstream(t, echo)
		by := dialSession(t, ts.url)
		bi := by.connect(eup.url)
		var clients []*rawClient
		var frames [][]byte
		for i := range sessions {
			c := dialRaw(t, ts.addr)
			idx := c.openUpstream(i+1, deaf.url)
			// A masked data frame header for 16 MiB, the index and one byte.
			h := binary.BigEndian.AppendUint64([]byte{0x82, 0x80 | 127}, declared)
			key := randBytes(4)
			h = append(h, key...)
			for i, b := range []byte{byte(idx >> 8), byte(idx), 'x'} {
				h = append(h, b^key[i])
			}
			clients = append(clients, c)
			frames = append(frames, h)
		}
		base := heapAfterGC()
		hs := startHeapSampler()
		stop := make(chan struct{})
		slowest := bystand(by, bi, stop)
		for i, c := range clients {
			c.writeBytes(frames[i])
			c.conn.Close()
		}
		time.Sleep(time.Second)
		close(stop)
		check(t, base, hs.growth(), <-slowest)
	})
}
