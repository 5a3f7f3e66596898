//go:build linux

package splice

// The PROXY protocol (haproxy's doc/proxy-protocol.txt, versions 1 and 2):
// a load balancer that relays TCP (HAProxy with send-proxy or
// send-proxy-v2, a cloud load balancer) puts one header in front of the
// bytes of every connection it opens to wsplice, naming the client it
// accepted. With --proxy-protocol that client, not the balancer, is the
// session's address in logs, metrics and per-address limits.
//
// Version 1 is one line of text, at most 107 bytes with its CRLF:
//
//	PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n
//	PROXY TCP6 2001:db8::1 2001:db8::2 56324 443\r\n
//	PROXY UNKNOWN\r\n                  (anything up to the CRLF is ignored)
//
// Version 2 is binary (all integers big-endian):
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-------------------------------------------------------------+
//	|   signature: \r \n \r \n \0 \r \n Q U I T \n   (12 bytes)    |
//	+---------------+---------------+-------------------------------+
//	| ver=2 | cmd   |  fam  | proto |     len (bytes after this)    |
//	+---------------+---------------+-------------------------------+
//	| addresses: TCP4 src[4] dst[4] sport[2] dport[2]      (12)     |
//	|            TCP6 src[16] dst[16] sport[2] dport[2]    (36)     |
//	|            UNIX src[108] dst[108]                    (216)    |
//	+-------------------------------------------------------------+
//	| TLVs to the end: type[1] length[2] value[length] ...         |
//	+-------------------------------------------------------------+
//
// cmd 0 (LOCAL) is the balancer's own connection, a health check: the
// socket's peer address stands. cmd 1 (PROXY) relays a client.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// ErrProxyHeader is the error of every malformed PROXY protocol header;
// ParseProxyHeader wraps it with what is wrong.
var ErrProxyHeader = errors.New("splice: bad PROXY protocol header")

// MaxProxyHeaderLen bounds a PROXY header: ParseProxyHeader given this
// many bytes returns a header or an error, never "read more". A version 1
// header is at most 107 bytes; a version 2 header (addresses and TLVs)
// longer than this is refused. Senders keep theirs far below it: HAProxy's
// with TLS details is a few hundred bytes.
const MaxProxyHeaderLen = 4096

const (
	proxyV1Prefix = "PROXY "
	proxyV1MaxLen = 107 // the spec's bound, CRLF included

	proxyV2Sig       = "\r\n\r\n\x00\r\nQUIT\n"
	proxyV2HeaderLen = 16 // signature, ver/cmd, fam/proto, len

	proxyV2Local = 0x0 // command: the balancer's own connection
	proxyV2Proxy = 0x1 // command: a relayed client

	// Family (high nibble) and transport (low nibble): the only values
	// the spec allows; others "must be rejected as invalid by receivers".
	proxyV2Unspec = 0x00
	proxyV2TCP4   = 0x11
	proxyV2UDP4   = 0x12
	proxyV2TCP6   = 0x21
	proxyV2UDP6   = 0x22
	proxyV2Stream = 0x31 // AF_UNIX
	proxyV2Dgram  = 0x32 // AF_UNIX
)

// The errors ParseProxyHeader returns, all wrapping ErrProxyHeader. They
// are built once so a refused header costs no allocation.
var (
	errProxyNotHeader = fmt.Errorf("%w: no PROXY signature", ErrProxyHeader)
	errProxyV1TooLong = fmt.Errorf("%w: v1 line without CRLF within %d bytes", ErrProxyHeader, proxyV1MaxLen)
	errProxyV1Proto   = fmt.Errorf("%w: v1 protocol is not TCP4, TCP6 or UNKNOWN", ErrProxyHeader)
	errProxyV1Syntax  = fmt.Errorf("%w: v1 line is not PROXY TCPn SRC DST SPORT DPORT CRLF", ErrProxyHeader)
	errProxyV1Addr    = fmt.Errorf("%w: v1 address is not an IP address of the protocol's family", ErrProxyHeader)
	errProxyV1Port    = fmt.Errorf("%w: v1 port is not a number from 0 to 65535", ErrProxyHeader)
	errProxyV2Version = fmt.Errorf("%w: v2 version is not 2", ErrProxyHeader)
	errProxyV2Command = fmt.Errorf("%w: v2 command is neither LOCAL nor PROXY", ErrProxyHeader)
	errProxyV2Family  = fmt.Errorf("%w: v2 address family or transport is invalid", ErrProxyHeader)
	errProxyV2Short   = fmt.Errorf("%w: v2 length is shorter than its addresses", ErrProxyHeader)
	errProxyV2TooLong = fmt.Errorf("%w: v2 header longer than %d bytes", ErrProxyHeader, MaxProxyHeaderLen)
	errProxyV2TLV     = fmt.Errorf("%w: v2 TLV runs past the header", ErrProxyHeader)
)

// ParseProxyHeader reads a PROXY protocol v1 or v2 header at the start of
// b. n is its length; n == 0 with a nil error means b holds only part of
// one (read more), which is reported for every strict prefix of a valid
// header. Bytes that cannot begin a valid header are an error as soon as
// they are seen (a "GET" is refused at its "G"). src is the client address
// the header carries; it is invalid (zero) for LOCAL and UNKNOWN headers
// (health checks, or a family wsplice has no use for), where the
// connection's own peer address stands. IPv4-mapped IPv6 addresses are
// returned as IPv4, as the engine reports peers.
//
// It does not allocate and keeps no reference to b.
func ParseProxyHeader(b []byte) (src netip.AddrPort, n int, err error) {
	if len(b) == 0 {
		return netip.AddrPort{}, 0, nil
	}
	switch b[0] {
	case proxyV1Prefix[0]:
		return parseProxyV1(b)
	case proxyV2Sig[0]:
		return parseProxyV2(b)
	}
	return netip.AddrPort{}, 0, errProxyNotHeader
}

// LooksLikeProxyHeader reports whether b starts like a PROXY header: with
// the version 1 "PROXY " or the 12-byte version 2 signature. Without
// --proxy-protocol such a connection is refused as a bad request, with a
// reason that says what it is.
func LooksLikeProxyHeader(b []byte) bool {
	return bytes.HasPrefix(b, []byte(proxyV1Prefix)) || bytes.HasPrefix(b, []byte(proxyV2Sig))
}

// hasPrefixPart reports whether b and s agree on their common length: b
// is s's start, or starts with s.
func hasPrefixPart(b []byte, s string) bool {
	k := min(len(b), len(s))
	return string(b[:k]) == s[:k]
}

// parseProxyV1 parses a version 1 line; b starts with 'P'. A partial line
// is checked field by field as far as it goes, so garbage is refused
// before its CRLF: a finished field (followed by a space or the CR) must
// be whole and valid, the field being received must still be able to
// become one.
func parseProxyV1(b []byte) (netip.AddrPort, int, error) {
	if !hasPrefixPart(b, proxyV1Prefix) {
		return netip.AddrPort{}, 0, errProxyNotHeader
	}
	line := b[:min(len(b), proxyV1MaxLen)]
	end := bytes.IndexByte(line, '\n')
	complete := end >= 0
	switch {
	case complete:
		line = line[:end+1]
	case len(b) >= proxyV1MaxLen:
		return netip.AddrPort{}, 0, errProxyV1TooLong
	}
	if len(line) <= len(proxyV1Prefix) {
		return netip.AddrPort{}, 0, nil // the '\n' cannot be in the prefix
	}
	body := line[len(proxyV1Prefix):]
	// A CR may only end the line, right before its LF. ended: the last
	// field is finished (the CR is here), whether or not the LF is.
	if complete {
		body = body[:len(body)-1]
	}
	ended := false
	if i := bytes.IndexByte(body, '\r'); i >= 0 {
		if i != len(body)-1 {
			return netip.AddrPort{}, 0, errProxyV1Syntax
		}
		body, ended = body[:i], true
	}
	if complete && !ended {
		return netip.AddrPort{}, 0, errProxyV1Syntax // a bare LF
	}

	proto, rest, more := cutSpace(body)
	if !more && !ended {
		for _, p := range [...]string{"TCP4", "TCP6", "UNKNOWN"} {
			if hasPrefixPart(proto, p) && len(proto) <= len(p) {
				return netip.AddrPort{}, 0, nil
			}
		}
		return netip.AddrPort{}, 0, errProxyV1Proto
	}
	var v6 bool
	switch string(proto) {
	case "UNKNOWN":
		// "the receiver must ignore anything presented before the CRLF".
		if !complete {
			return netip.AddrPort{}, 0, nil
		}
		return netip.AddrPort{}, end + 1, nil
	case "TCP4":
	case "TCP6":
		v6 = true
	default:
		return netip.AddrPort{}, 0, errProxyV1Proto
	}
	if !more {
		return netip.AddrPort{}, 0, errProxyV1Syntax // "PROXY TCP4\r"
	}
	// Four fields: source and destination address, then their ports.
	var addr netip.Addr
	var port uint16
	for f := 0; ; f++ {
		if f == 4 {
			return netip.AddrPort{}, 0, errProxyV1Syntax // a fifth field
		}
		var fld []byte
		fld, rest, more = cutSpace(rest)
		done := more || ended
		switch {
		case f < 2 && done:
			a, ok := parseProxyV1Addr(fld, v6)
			if !ok {
				return netip.AddrPort{}, 0, errProxyV1Addr
			}
			if f == 0 {
				addr = a
			}
		case f < 2:
			if !proxyV1AddrPart(fld, v6) {
				return netip.AddrPort{}, 0, errProxyV1Addr
			}
		case done:
			p, ok := parseProxyV1Port(fld)
			if !ok {
				return netip.AddrPort{}, 0, errProxyV1Port
			}
			if f == 2 {
				port = p
			}
		default:
			if !proxyV1PortPart(fld) {
				return netip.AddrPort{}, 0, errProxyV1Port
			}
		}
		if !more {
			if ended && f != 3 {
				return netip.AddrPort{}, 0, errProxyV1Syntax // too few fields
			}
			break
		}
	}
	if !complete {
		return netip.AddrPort{}, 0, nil
	}
	return netip.AddrPortFrom(addr, port), end + 1, nil
}

// cutSpace splits b at its first space; more reports whether there was
// one.
func cutSpace(b []byte) (field, rest []byte, more bool) {
	if i := bytes.IndexByte(b, ' '); i >= 0 {
		return b[:i], b[i+1:], true
	}
	return b, nil, false
}

// Longest address texts: "255.255.255.255" and
// "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255".
const (
	proxyV1Addr4Max = 15
	proxyV1Addr6Max = 45
)

// proxyV1AddrPart reports whether fld, an address field still being
// received, can grow into an address of the family.
func proxyV1AddrPart(fld []byte, v6 bool) bool {
	if v6 {
		return proxyV1Addr6Part(fld)
	}
	_, ok := parseProxyV1Addr4(fld, false)
	return ok
}

// parseProxyV1Addr parses a whole address field of the family; an
// IPv4-mapped IPv6 address comes back as IPv4.
func parseProxyV1Addr(fld []byte, v6 bool) (netip.Addr, bool) {
	if v6 {
		a, ok := parseProxyV1Addr6(fld)
		return netip.AddrFrom16(a).Unmap(), ok
	}
	a, ok := parseProxyV1Addr4(fld, true)
	return netip.AddrFrom4(a), ok
}

// parseProxyV1Addr4 parses dotted-quad IPv4 text as netip.ParseAddr does
// (no leading zeros: "010" is octal to some parsers). With whole false it
// only reports whether s can still grow into an address.
func parseProxyV1Addr4(s []byte, whole bool) (a [4]byte, ok bool) {
	if len(s) > proxyV1Addr4Max {
		return a, false
	}
	k, digits, v := 0, 0, 0
	for _, c := range s {
		switch {
		case '0' <= c && c <= '9':
			if digits == 1 && v == 0 {
				return a, false // a leading zero
			}
			v = v*10 + int(c-'0')
			digits++
			if v > 255 {
				return a, false
			}
		case c == '.':
			if digits == 0 || k == 3 {
				return a, false
			}
			a[k] = byte(v)
			k, digits, v = k+1, 0, 0
		default:
			return a, false
		}
	}
	if whole {
		if k != 3 || digits == 0 {
			return a, false
		}
		a[3] = byte(v)
	}
	return a, true
}

// proxyV1Addr6Part reports whether s can still grow into IPv6 text: hex
// groups of at most 4 digits, one "::" at most, at most 8 colons, and
// dots only in an IPv4 address that ends it.
func proxyV1Addr6Part(s []byte) bool {
	if len(s) > proxyV1Addr6Max {
		return false
	}
	colons, run, ellipsis := 0, 0, false
	for i, c := range s {
		switch {
		case c == ':':
			colons++
			if colons > 8 {
				return false
			}
			if i > 0 && s[i-1] == ':' {
				if ellipsis {
					return false
				}
				ellipsis = true
			}
			run = 0
		case unhex(c) >= 0:
			run++
			if run > 4 {
				return false
			}
		case c == '.':
			if colons < 2 {
				return false
			}
			_, ok := parseProxyV1Addr4(s[i-run:], false)
			return ok
		default:
			return false
		}
	}
	return true
}

// parseProxyV1Addr6 parses IPv6 text as netip.ParseAddr does, zones
// excepted (refused): "::" stands for one or more zero groups, and an
// IPv4 address may end it.
func parseProxyV1Addr6(s []byte) (a [16]byte, ok bool) {
	if !proxyV1Addr6Part(s) {
		return a, false
	}
	ellipsis := -1 // where in a the "::" stands
	if len(s) >= 2 && s[0] == ':' && s[1] == ':' {
		ellipsis = 0
		s = s[2:]
	}
	i := 0
	for len(s) > 0 && i < 16 {
		v, k := 0, 0
		for k < len(s) && k < 4 && unhex(s[k]) >= 0 {
			v = v<<4 | unhex(s[k])
			k++
		}
		if k == 0 {
			return a, false
		}
		if k < len(s) && s[k] == '.' {
			if ellipsis < 0 && i != 12 || i > 12 {
				return a, false
			}
			v4, ok := parseProxyV1Addr4(s, true)
			if !ok {
				return a, false
			}
			copy(a[i:], v4[:])
			i += 4
			s = nil
			break
		}
		a[i], a[i+1] = byte(v>>8), byte(v)
		i += 2
		s = s[k:]
		if len(s) == 0 {
			break
		}
		if s[0] != ':' || len(s) == 1 {
			return a, false // not a separator, or a lone colon at the end
		}
		s = s[1:]
		if s[0] == ':' {
			if ellipsis >= 0 {
				return a, false
			}
			ellipsis = i
			s = s[1:]
		}
	}
	if len(s) > 0 {
		return a, false
	}
	switch {
	case ellipsis < 0 && i != 16:
		return a, false
	case ellipsis >= 0 && i == 16:
		return a, false // "::" must stand for at least one group
	case ellipsis >= 0:
		n := 16 - i
		copy(a[ellipsis+n:], a[ellipsis:i])
		clear(a[ellipsis : ellipsis+n])
	}
	return a, true
}

// unhex returns the value of the hex digit c, or -1.
func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// proxyV1PortPart reports whether fld can still grow into a port.
func proxyV1PortPart(fld []byte) bool {
	if len(fld) > 5 {
		return false
	}
	for _, c := range fld {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// parseProxyV1Port parses a whole port field: decimal, 0 to 65535
// (leading zeros accepted, as HAProxy accepts them).
func parseProxyV1Port(fld []byte) (uint16, bool) {
	if len(fld) == 0 || !proxyV1PortPart(fld) {
		return 0, false
	}
	v := 0
	for _, c := range fld {
		v = v*10 + int(c-'0')
	}
	if v > 0xffff {
		return 0, false
	}
	return uint16(v), true
}

// parseProxyV2 parses a version 2 header; b starts with '\r'. Each part
// is checked as soon as it is in: the signature byte by byte, the version
// and command, the family, the length against the addresses it must hold
// and MaxProxyHeaderLen.
func parseProxyV2(b []byte) (netip.AddrPort, int, error) {
	if !hasPrefixPart(b, proxyV2Sig) {
		return netip.AddrPort{}, 0, errProxyNotHeader
	}
	if len(b) <= len(proxyV2Sig) {
		return netip.AddrPort{}, 0, nil
	}
	if b[12]>>4 != 2 {
		return netip.AddrPort{}, 0, errProxyV2Version
	}
	cmd := b[12] & 0x0f
	if cmd != proxyV2Local && cmd != proxyV2Proxy {
		return netip.AddrPort{}, 0, errProxyV2Command
	}
	if len(b) < 14 {
		return netip.AddrPort{}, 0, nil
	}
	// For LOCAL "the receiver must ... discard the protocol block
	// including the family": only PROXY's family is checked.
	fam := b[13]
	addrLen := 0
	if cmd == proxyV2Proxy {
		switch fam {
		case proxyV2Unspec:
		case proxyV2TCP4, proxyV2UDP4:
			addrLen = 12
		case proxyV2TCP6, proxyV2UDP6:
			addrLen = 36
		case proxyV2Stream, proxyV2Dgram:
			addrLen = 216
		default:
			return netip.AddrPort{}, 0, errProxyV2Family
		}
	}
	if len(b) < proxyV2HeaderLen {
		return netip.AddrPort{}, 0, nil
	}
	n := proxyV2HeaderLen + int(binary.BigEndian.Uint16(b[14:16]))
	if n > MaxProxyHeaderLen {
		return netip.AddrPort{}, 0, errProxyV2TooLong
	}
	if n-proxyV2HeaderLen < addrLen {
		return netip.AddrPort{}, 0, errProxyV2Short
	}
	if len(b) < n {
		return netip.AddrPort{}, 0, nil
	}
	if cmd == proxyV2Local || fam == proxyV2Unspec {
		// The block is ignored, TLVs included.
		return netip.AddrPort{}, n, nil
	}
	// TLVs are skipped, but one that runs past the header is an error,
	// as it is for HAProxy.
	for t := b[proxyV2HeaderLen+addrLen : n]; len(t) > 0; {
		if len(t) < 3 || 3+int(binary.BigEndian.Uint16(t[1:3])) > len(t) {
			return netip.AddrPort{}, 0, errProxyV2TLV
		}
		t = t[3+int(binary.BigEndian.Uint16(t[1:3])):]
	}
	a := b[proxyV2HeaderLen:n]
	switch fam {
	case proxyV2TCP4:
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(a[0:4])), binary.BigEndian.Uint16(a[8:10])), n, nil
	case proxyV2TCP6:
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte(a[0:16])).Unmap(), binary.BigEndian.Uint16(a[32:34])), n, nil
	}
	// UDP or AF_UNIX: no TCP client address wsplice could use; the peer
	// address stands, as HAProxy keeps its own for these.
	return netip.AddrPort{}, n, nil
}
