package rpc

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// FuzzHostPolicy feeds NewHostPolicy and the checks arbitrary strings. They
// must never panic, errors must wrap the package sentinels, the canonical
// entries must be a fixed point of NewHostPolicy, and every entry must
// admit the host it names.
func FuzzHostPolicy(f *testing.F) {
	for _, seed := range [][2]string{
		{"example.com", "example.com"},
		{"a.com, b.com c.com", "B.COM."},
		{"*.example.com", "a.b.example.com"},
		{"*.example.com", "example.com"},
		{"[::1] 10.0.0.1", "[::ffff:10.0.0.1]"},
		{"fe80::1%eth0", "fe80::1%eth0"},
		{"", "127.0.0.1"},
		{"", "[]"},
		{"*", "."},
		{"example.com:443", "a..b"},
		{"\u212aey.com", "ſ.com"},
		{"0x7f.1", "1.2.3"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, entries, host string) {
		for _, allowPrivate := range []bool{false, true} {
			p, err := NewHostPolicy([]string{entries}, allowPrivate)
			if err != nil {
				if !errors.Is(err, ErrBadHostEntry) {
					t.Fatalf("NewHostPolicy(%q) = %v, want ErrBadHostEntry", entries, err)
				}
				p = &HostPolicy{AllowPrivate: allowPrivate}
			}
			checkFuzzErr(t, p.CheckHost(host))
			if h, ok := parseHost(host); ok && h.isIP {
				checkFuzzErr(t, p.CheckAddr(host, h.addr))
			}
			checkFuzzErr(t, p.CheckAddr(host, netip.AddrFrom4([4]byte{127, 0, 0, 1})))
			if err != nil {
				continue
			}
			again, err := NewHostPolicy([]string{strings.Join(p.Allowed, ",")}, allowPrivate)
			if err != nil || !slices.Equal(again.Allowed, p.Allowed) {
				t.Fatalf("NewHostPolicy(%q) = %q, %v; want the fixed point %q", strings.Join(p.Allowed, ","), again.Allowed, err, p.Allowed)
			}
			for _, e := range p.Allowed {
				name := e
				if strings.HasPrefix(e, "*.") {
					name = "x" + e[1:]
				}
				if err := p.CheckHost(name); err != nil {
					t.Fatalf("entry %q: CheckHost(%q) = %v", e, name, err)
				}
				if err := p.CheckAddr(name, netip.IPv6Loopback()); err != nil {
					t.Fatalf("entry %q: CheckAddr(%q, ::1) = %v", e, name, err)
				}
			}
		}
	})
}

func checkFuzzErr(t *testing.T, err error) {
	t.Helper()
	if err != nil && !errors.Is(err, ErrHostNotAllowed) {
		t.Fatalf("error %v does not wrap ErrHostNotAllowed", err)
	}
}
