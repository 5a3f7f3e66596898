//go:build linux

package splice

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"testing"
)

// appendProxyV1 appends a version 1 header for a TCP connection from src
// to dst (both of one family), as HAProxy's send-proxy writes it.
func appendProxyV1(b []byte, src, dst netip.AddrPort) []byte {
	proto := "TCP4 "
	if src.Addr().Is6() {
		proto = "TCP6 "
	}
	b = append(b, proxyV1Prefix+proto...)
	b = append(b, src.Addr().String()+" "+dst.Addr().String()+" "...)
	b = strconv.AppendUint(b, uint64(src.Port()), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(dst.Port()), 10)
	return append(b, "\r\n"...)
}

// appendProxyV2 appends a version 2 PROXY header for a TCP connection from
// src to dst (both of one family), followed by the TLVs tlvs (already
// encoded), as HAProxy's send-proxy-v2 writes it.
func appendProxyV2(b []byte, src, dst netip.AddrPort, tlvs []byte) []byte {
	b = append(b, proxyV2Sig...)
	b = append(b, 0x20|proxyV2Proxy)
	var addrs []byte
	if src.Addr().Is4() {
		b = append(b, proxyV2TCP4)
		s, d := src.Addr().As4(), dst.Addr().As4()
		addrs = append(append(addrs, s[:]...), d[:]...)
	} else {
		b = append(b, proxyV2TCP6)
		s, d := src.Addr().As16(), dst.Addr().As16()
		addrs = append(append(addrs, s[:]...), d[:]...)
	}
	addrs = binary.BigEndian.AppendUint16(addrs, src.Port())
	addrs = binary.BigEndian.AppendUint16(addrs, dst.Port())
	b = binary.BigEndian.AppendUint16(b, uint16(len(addrs)+len(tlvs)))
	return append(append(b, addrs...), tlvs...)
}

// proxyV2Raw builds a version 2 header from its parts: ver/cmd byte,
// fam/proto byte and the block after the length.
func proxyV2Raw(verCmd, fam byte, block []byte) []byte {
	b := append([]byte(proxyV2Sig), verCmd, fam)
	b = binary.BigEndian.AppendUint16(b, uint16(len(block)))
	return append(b, block...)
}

func tlv(typ byte, v string) []byte {
	return append(binary.BigEndian.AppendUint16([]byte{typ}, uint16(len(v))), v...)
}

var (
	ppSrc4 = netip.MustParseAddrPort("192.0.2.1:56324")
	ppDst4 = netip.MustParseAddrPort("198.51.100.7:443")
	ppSrc6 = netip.MustParseAddrPort("[2001:db8::1]:65535")
	ppDst6 = netip.MustParseAddrPort("[2001:db8::2]:0")
)

// proxyCase is one header. A valid one has a nil err and n == its
// length; an invalid one names its error, and errAt is the length of the
// shortest prefix already refused (every shorter prefix must ask for
// more): garbage is refused as early as it can be told from a header.
type proxyCase struct {
	name  string
	in    []byte
	src   netip.AddrPort // want; zero for LOCAL/UNKNOWN
	err   error
	errAt int
}

func proxyCases() []proxyCase {
	v4 := appendProxyV2(nil, ppSrc4, ppDst4, nil)
	v4bad := func(i int, c byte) []byte { b := bytes.Clone(v4); b[i] = c; return b }
	unixBlock := make([]byte, 216)
	return []proxyCase{
		// Version 1.
		{name: "v1 TCP4", in: appendProxyV1(nil, ppSrc4, ppDst4), src: ppSrc4},
		{name: "v1 TCP6", in: appendProxyV1(nil, ppSrc6, ppDst6), src: ppSrc6},
		{name: "v1 TCP4 longest", in: []byte("PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"),
			src: netip.MustParseAddrPort("255.255.255.255:65535")},
		{name: "v1 TCP6 107 bytes", in: []byte("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"),
			src: netip.MustParseAddrPort("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535")},
		{name: "v1 TCP6 mapped v4", in: []byte("PROXY TCP6 ::ffff:192.0.2.1 ::1 80 443\r\n"),
			src: netip.MustParseAddrPort("192.0.2.1:80")},
		{name: "v1 port leading zeros", in: []byte("PROXY TCP4 192.0.2.1 192.0.2.2 00080 443\r\n"),
			src: netip.MustParseAddrPort("192.0.2.1:80")},
		{name: "v1 UNKNOWN", in: []byte("PROXY UNKNOWN\r\n")},
		{name: "v1 UNKNOWN with addresses", in: []byte("PROXY UNKNOWN ffff:f::1 ffff:f::2 1 2\r\n")},
		{name: "not a header", in: []byte("GET / HTTP/1.1\r\n"), err: errProxyNotHeader, errAt: 1},
		{name: "v1 prefix typo", in: []byte("PROXX TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), err: errProxyNotHeader, errAt: 5},
		{name: "PUT", in: []byte("PUT / HTTP/1.1\r\n"), err: errProxyNotHeader, errAt: 2},
		{name: "v1 lower case", in: []byte("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), err: errProxyNotHeader, errAt: 1},
		{name: "v1 TCP5", in: []byte("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"), err: errProxyV1Proto, errAt: 10},
		{name: "v1 TCP4X", in: []byte("PROXY TCP4X 1.2.3.4 5.6.7.8 1 2\r\n"), err: errProxyV1Proto, errAt: 11},
		{name: "v1 UNKNOWNX", in: []byte("PROXY UNKNOWNX\r\n"), err: errProxyV1Proto, errAt: 14},
		{name: "v1 UDP4", in: []byte("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"), err: errProxyV1Proto, errAt: 8},
		{name: "v1 TCP4 only", in: []byte("PROXY TCP4\r\n"), err: errProxyV1Syntax, errAt: 11},
		{name: "v1 IPv6 in TCP4", in: []byte("PROXY TCP4 ::1 ::1 1 2\r\n"), err: errProxyV1Addr, errAt: 12},
		{name: "v1 IPv4 in TCP6", in: []byte("PROXY TCP6 1.2.3.4 ::1 1 2\r\n"), err: errProxyV1Addr, errAt: 13},
		{name: "v1 octet over 255", in: []byte("PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n"), err: errProxyV1Addr, errAt: 20},
		{name: "v1 octal-looking octet", in: []byte("PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n"), err: errProxyV1Addr, errAt: 19},
		{name: "v1 address too long", in: []byte("PROXY TCP4 1111.2.3.4 5.6.7.8 1 2\r\n"), err: errProxyV1Addr, errAt: 15},
		{name: "v1 zone", in: []byte("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n"), err: errProxyV1Addr, errAt: 19},
		{name: "v1 IPv6 five hex digits", in: []byte("PROXY TCP6 2001:0db80::1 ::1 1 2\r\n"), err: errProxyV1Addr, errAt: 21},
		{name: "v1 IPv6 two ellipses", in: []byte("PROXY TCP6 1::2::3 ::1 1 2\r\n"), err: errProxyV1Addr, errAt: 17},
		{name: "v1 IPv6 too short", in: []byte("PROXY TCP6 1:2:3 ::1 1 2\r\n"), err: errProxyV1Addr, errAt: 17},
		{name: "v1 host name", in: []byte("PROXY TCP4 localhost 5.6.7.8 1 2\r\n"), err: errProxyV1Addr, errAt: 12},
		{name: "v1 double space", in: []byte("PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n"), err: errProxyV1Addr, errAt: 12},
		{name: "v1 port over 65535", in: []byte("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"), err: errProxyV1Port, errAt: 33},
		{name: "v1 port of 6 digits", in: []byte("PROXY TCP4 1.2.3.4 5.6.7.8 000001 2\r\n"), err: errProxyV1Port, errAt: 33},
		{name: "v1 negative port", in: []byte("PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n"), err: errProxyV1Port, errAt: 28},
		{name: "v1 missing dst port", in: []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"), err: errProxyV1Syntax, errAt: 29},
		{name: "v1 fifth field", in: []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"), err: errProxyV1Syntax, errAt: 31},
		{name: "v1 trailing space", in: []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n"), err: errProxyV1Syntax, errAt: 31},
		{name: "v1 bare LF", in: []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), err: errProxyV1Syntax, errAt: 31},
		{name: "v1 CR inside", in: []byte("PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n"), err: errProxyV1Syntax, errAt: 19},
		{name: "v1 UNKNOWN with CR inside", in: []byte("PROXY UNKNOWN \r \r\n"), err: errProxyV1Syntax, errAt: 16},
		{name: "v1 oversized", in: []byte("PROXY UNKNOWN " + strings.Repeat("x", 100) + "\r\n"), err: errProxyV1TooLong, errAt: 107},
		{name: "v1 CRLF at byte 108", in: []byte("PROXY UNKNOWN " + strings.Repeat("x", 92) + "\r\n"), err: errProxyV1TooLong, errAt: 107},
		{name: "v1 CRLF at byte 107", in: []byte("PROXY UNKNOWN " + strings.Repeat("x", 91) + "\r\n")},
		// Version 2.
		{name: "v2 PROXY TCP4", in: v4, src: ppSrc4},
		{name: "v2 PROXY TCP6", in: appendProxyV2(nil, ppSrc6, ppDst6, nil), src: ppSrc6},
		{name: "v2 PROXY TCP6 mapped v4", in: appendProxyV2(nil, netip.MustParseAddrPort("[::ffff:192.0.2.1]:80"), ppDst6, nil),
			src: netip.MustParseAddrPort("192.0.2.1:80")},
		{name: "v2 PROXY with TLVs", in: appendProxyV2(nil, ppSrc4, ppDst4, append(append(
			tlv(0x01, "http/1.1"), // PP2_TYPE_ALPN
			tlv(0x04, "")...),     // PP2_TYPE_NOOP, empty
			tlv(0x20, "\x07\x00\x00\x00\x00")...)), // PP2_TYPE_SSL
			src: ppSrc4},
		{name: "v2 LOCAL", in: proxyV2Raw(0x20, proxyV2Unspec, nil)},
		{name: "v2 LOCAL with addresses", in: proxyV2Raw(0x20, proxyV2TCP4, v4[16:])},
		{name: "v2 LOCAL ignores its family", in: proxyV2Raw(0x20, 0xff, []byte("anything"))},
		{name: "v2 PROXY UNSPEC", in: proxyV2Raw(0x21, proxyV2Unspec, []byte("ignored"))},
		{name: "v2 PROXY UNIX", in: proxyV2Raw(0x21, proxyV2Stream, unixBlock)},
		{name: "v2 PROXY UDP4", in: proxyV2Raw(0x21, proxyV2UDP4, v4[16:])},
		{name: "v2 bad signature", in: v4bad(6, 'X'), err: errProxyNotHeader, errAt: 7},
		{name: "v2 CRLF CRLF then GET", in: []byte("\r\n\r\nGET / HTTP/1.1\r\n"), err: errProxyNotHeader, errAt: 5},
		{name: "v2 version 1", in: v4bad(12, 0x11), err: errProxyV2Version, errAt: 13},
		{name: "v2 version 3", in: v4bad(12, 0x31), err: errProxyV2Version, errAt: 13},
		{name: "v2 command 2", in: v4bad(12, 0x22), err: errProxyV2Command, errAt: 13},
		{name: "v2 family 4", in: v4bad(13, 0x41), err: errProxyV2Family, errAt: 14},
		{name: "v2 transport 3", in: v4bad(13, 0x13), err: errProxyV2Family, errAt: 14},
		{name: "v2 TCP4 family 0x10", in: v4bad(13, 0x10), err: errProxyV2Family, errAt: 14},
		{name: "v2 TCP4 truncated addresses", in: proxyV2Raw(0x21, proxyV2TCP4, v4[16:27]), err: errProxyV2Short, errAt: 16},
		{name: "v2 TCP6 with TCP4 addresses", in: proxyV2Raw(0x21, proxyV2TCP6, v4[16:]), err: errProxyV2Short, errAt: 16},
		{name: "v2 UNIX truncated", in: proxyV2Raw(0x21, proxyV2Stream, unixBlock[:215]), err: errProxyV2Short, errAt: 16},
		{name: "v2 oversized", in: proxyV2Raw(0x21, proxyV2TCP4, append(bytes.Clone(v4[16:]), make([]byte, MaxProxyHeaderLen)...)),
			err: errProxyV2TooLong, errAt: 16},
		{name: "v2 largest", in: appendProxyV2(nil, ppSrc4, ppDst4, tlv(0x04, strings.Repeat("\x00", MaxProxyHeaderLen-16-12-3))),
			src: ppSrc4},
		{name: "v2 TLV header cut", in: appendProxyV2(nil, ppSrc4, ppDst4, []byte{0x04, 0x00}), err: errProxyV2TLV, errAt: 30},
		{name: "v2 TLV value overruns", in: appendProxyV2(nil, ppSrc4, ppDst4, append(tlv(0x01, "h2"), 0x04, 0x00, 0x09, 0x00)),
			err: errProxyV2TLV, errAt: 37},
	}
}

// TestParseProxyHeader checks every case whole, followed by the bytes of
// the request (which are not the header's), and every prefix of it.
func TestParseProxyHeader(t *testing.T) {
	t.Parallel()
	const request = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
	for _, tc := range proxyCases() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, tail := range []string{"", request} {
				in := append(bytes.Clone(tc.in), tail...)
				src, n, err := ParseProxyHeader(in)
				if tc.err != nil {
					if err != tc.err || !errors.Is(err, ErrProxyHeader) || n != 0 {
						t.Fatalf("tail %q: got (%v, %d, %v), want (%v)", tail, src, n, err, tc.err)
					}
					continue
				}
				if err != nil || n != len(tc.in) || src != tc.src {
					t.Fatalf("tail %q: got (%v, %d, %v), want (%v, %d, nil)", tail, src, n, err, tc.src, len(tc.in))
				}
				if tc.src.IsValid() != src.IsValid() {
					t.Fatalf("src validity %v, want %v", src.IsValid(), tc.src.IsValid())
				}
			}
			// Every strict prefix of a valid header, and every prefix of an
			// invalid one shorter than errAt, asks for more.
			stop := len(tc.in)
			if tc.err != nil {
				stop = tc.errAt
			}
			for k := range stop {
				src, n, err := ParseProxyHeader(tc.in[:k])
				if n != 0 || err != nil || src.IsValid() {
					t.Fatalf("prefix of %d bytes %q: got (%v, %d, %v), want need-more", k, tc.in[:k], src, n, err)
				}
			}
			if tc.err != nil {
				if _, n, err := ParseProxyHeader(tc.in[:tc.errAt]); err != tc.err || n != 0 {
					t.Fatalf("prefix of %d bytes %q: got (%d, %v), want %v", tc.errAt, tc.in[:tc.errAt], n, err, tc.err)
				}
			}
		})
	}
}

// TestParseProxyHeaderBound checks MaxProxyHeaderLen: with that many bytes
// the parser never asks for more.
func TestParseProxyHeaderBound(t *testing.T) {
	t.Parallel()
	for _, tc := range proxyCases() {
		in := append(bytes.Clone(tc.in), make([]byte, MaxProxyHeaderLen)...)[:MaxProxyHeaderLen]
		if _, n, err := ParseProxyHeader(in); n == 0 && err == nil {
			t.Errorf("%s: need-more with %d bytes", tc.name, len(in))
		}
	}
}

// proxyAddrTexts are address texts for the differential checks against
// netip.ParseAddr.
var proxyAddrTexts = []string{
	"0.0.0.0", "1.2.3.4", "255.255.255.255", "1.2.3", "1.2.3.4.5", "1.2.3.", ".1.2.3", "1..2.3",
	"01.2.3.4", "0.0.0.00", "256.1.1.1", "1.2.3.4 ", "",
	"::", "::1", "1::", "1::2", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7::", "::2:3:4:5:6:7:8",
	"1:2:3:4:5:6:7::8", "1::2:3:4:5:6:7:8", "1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9", ":1", "1:", ":::",
	"1:::2", "1::2::3", "00001::", "0001::", "ABCD:ef01::", "g::", "::ffff:1.2.3.4", "::1.2.3.4",
	"1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:1.2.3.4", "1:2:3:4:5:6:7:1.2.3.4", "1::1.2.3.4",
	"::ffff:1.2.3.04", "::ffff:1.2.3", "1.2.3.4::", "::1.2.3.4:1", "fe80::1%eth0", "::a.2.3.4",
	"ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
}

// checkProxyAddr compares the v1 address parsers on s with netip's: the
// same verdict and address, and every prefix of an address netip accepts
// still accepted as partial (or a valid header would be refused early).
func checkProxyAddr(t *testing.T, s string) {
	t.Helper()
	want, err := netip.ParseAddr(s)
	for _, v6 := range []bool{false, true} {
		ok := err == nil && want.Zone() == "" && want.Is6() == v6
		got, gotOK := parseProxyV1Addr([]byte(s), v6)
		if gotOK != ok || ok && got != want.Unmap() {
			t.Errorf("parseProxyV1Addr(%q, v6=%v) = %v, %v; netip: %v, %v", s, v6, got, gotOK, want, err)
		}
		if !ok {
			continue
		}
		for k := range len(s) + 1 {
			if !proxyV1AddrPart([]byte(s[:k]), v6) {
				t.Errorf("proxyV1AddrPart(%q, v6=%v) = false, a prefix of %q", s[:k], v6, s)
			}
		}
	}
}

func TestProxyV1AddrMatchesNetip(t *testing.T) {
	t.Parallel()
	for _, s := range proxyAddrTexts {
		checkProxyAddr(t, s)
	}
}

func TestLooksLikeProxyHeader(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", true},
		{"PROXY UNKNOWN\r\n", true},
		{"PROXY ", true},
		{proxyV2Sig + "\x21\x11\x00\x0c", true},
		{proxyV2Sig, true},
		{"PROXY", false},
		{"proxy ", false},
		{"GET / HTTP/1.1\r\n\r\n", false},
		{"\r\n\r\n", false},
		{"", false},
	} {
		if got := LooksLikeProxyHeader([]byte(tc.in)); got != tc.want {
			t.Errorf("LooksLikeProxyHeader(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// TestParseProxyHeaderAllocs: the parser runs on the engine's per-event
// path, so neither a header nor a refusal allocates.
func TestParseProxyHeaderAllocs(t *testing.T) {
	for _, tc := range proxyCases() {
		in := tc.in
		if a := testing.AllocsPerRun(100, func() { ParseProxyHeader(in) }); a != 0 {
			t.Errorf("%s: %v allocations, want 0", tc.name, a)
		}
		half := in[:len(in)/2]
		if a := testing.AllocsPerRun(100, func() { ParseProxyHeader(half) }); a != 0 {
			t.Errorf("%s, half: %v allocations, want 0", tc.name, a)
		}
	}
	if a := testing.AllocsPerRun(100, func() { LooksLikeProxyHeader([]byte("PROXY TCP4 ")) }); a != 0 {
		t.Errorf("LooksLikeProxyHeader: %v allocations, want 0", a)
	}
}

func BenchmarkParseProxyHeader(b *testing.B) {
	for _, in := range []struct {
		name string
		b    []byte
	}{
		{"v1-tcp4", appendProxyV1(nil, ppSrc4, ppDst4)},
		{"v1-tcp6", appendProxyV1(nil, ppSrc6, ppDst6)},
		{"v2-tcp4", appendProxyV2(nil, ppSrc4, ppDst4, nil)},
		{"v2-tcp6", appendProxyV2(nil, ppSrc6, ppDst6, tlv(0x01, "http/1.1"))},
	} {
		b.Run(in.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(in.b)))
			for b.Loop() {
				ParseProxyHeader(in.b)
			}
		})
	}
}

// FuzzProxyHeader checks that the parser never panics, that n stays in
// b, that an accepted header is self-delimiting (parsing b[:n] gives the
// same, every strict prefix of it asks for more), that MaxProxyHeaderLen
// bytes always decide, and that an address it returns round-trips through
// both encodings. Short inputs are also address texts, parsed by the v1
// address parsers and by netip.ParseAddr, which must agree.
func FuzzProxyHeader(f *testing.F) {
	for _, tc := range proxyCases() {
		f.Add(tc.in)
	}
	f.Add([]byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte(proxyV2Sig))
	for _, s := range proxyAddrTexts {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) <= 64 {
			checkProxyAddr(t, string(b))
		}
		src, n, err := ParseProxyHeader(b)
		if n < 0 || n > len(b) || n > MaxProxyHeaderLen {
			t.Fatalf("n = %d for %d bytes", n, len(b))
		}
		if err != nil {
			if n != 0 || src.IsValid() || !errors.Is(err, ErrProxyHeader) {
				t.Fatalf("error %v with n = %d, src %v", err, n, src)
			}
			return
		}
		if n == 0 {
			if src.IsValid() {
				t.Fatalf("need-more with src %v", src)
			}
			if len(b) >= MaxProxyHeaderLen {
				t.Fatalf("need-more with %d bytes", len(b))
			}
			return
		}
		if !LooksLikeProxyHeader(b) {
			t.Fatalf("accepted %q, which LooksLikeProxyHeader denies", b[:n])
		}
		if src2, n2, err2 := ParseProxyHeader(b[:n]); src2 != src || n2 != n || err2 != nil {
			t.Fatalf("b[:n]: got (%v, %d, %v), want (%v, %d, nil)", src2, n2, err2, src, n)
		}
		for k := range n {
			if _, n2, err2 := ParseProxyHeader(b[:k]); n2 != 0 || err2 != nil {
				t.Fatalf("strict prefix of %d bytes: n %d, err %v; want need-more", k, n2, err2)
			}
		}
		if !src.IsValid() {
			return
		}
		if src.Addr().Is4In6() || src.Addr().Zone() != "" {
			t.Fatalf("src %v: mapped or zoned", src)
		}
		dst := netip.AddrPortFrom(netip.IPv6Loopback(), 443)
		if src.Addr().Is4() {
			dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), 443)
		}
		for _, enc := range [][]byte{appendProxyV1(nil, src, dst), appendProxyV2(nil, src, dst, nil)} {
			if src2, n2, err2 := ParseProxyHeader(enc); src2 != src || n2 != len(enc) || err2 != nil {
				t.Fatalf("round trip of %v through %q: (%v, %d, %v)", src, enc, src2, n2, err2)
			}
		}
	})
}
