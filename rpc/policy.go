package rpc

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"unicode"
)

// ErrHostNotAllowed is wrapped by every refusal of CheckHost and CheckAddr.
// The control channel answers it with 4006 InvalidHostname (PROTOCOL.md
// section 3); the wrapping message says which host or address and why, and
// goes to the client as it is.
var ErrHostNotAllowed = errors.New("rpc: host not allowed")

// ErrBadHostEntry is wrapped by NewHostPolicy when an --allowed-hostnames
// entry is neither a hostname, a "*.suffix" wildcard nor an IP address.
var ErrBadHostEntry = errors.New("rpc: bad --allowed-hostnames entry")

// HostPolicy decides which upstream hosts may be dialed (PROTOCOL.md
// section 5, "Upstream host policy"). A connect is checked twice: CheckHost
// on the URL host before DNS, CheckAddr on every address actually dialed.
//
// A nil *HostPolicy behaves like &HostPolicy{}: any public host.
// Immutable after construction; safe for concurrent use.
type HostPolicy struct {
	// Allowed holds the --allowed-hostnames entries, lower-cased: names,
	// "*.suffix" wildcards and IP addresses (IPv6 without brackets).
	// NewHostPolicy fills it in canonical form; the checks also tolerate
	// upper case and a trailing dot in entries set by hand.
	Allowed []string
	// AllowPrivate admits loopback, private, link-local and unspecified
	// addresses (and the other ranges of classifyAddr) when Allowed is
	// empty. With a non-empty Allowed, listed hosts may have any address.
	AllowPrivate bool
}

// NewHostPolicy builds a policy from raw --allowed-hostnames values. Each
// value may hold several entries separated by commas and/or white space.
// Entries are lower-cased, a trailing dot is dropped, brackets around an
// IPv6 address are removed, IPv4-mapped IPv6 addresses become IPv4, and
// duplicates are dropped. An entry that is not a hostname, a "*.suffix"
// wildcard or an IP address is an error wrapping ErrBadHostEntry that
// quotes the entry and says what is wrong with it.
func NewHostPolicy(values []string, allowPrivate bool) (*HostPolicy, error) {
	p := &HostPolicy{AllowPrivate: allowPrivate}
	for _, v := range values {
		for _, raw := range strings.FieldsFunc(v, isEntrySeparator) {
			e, why := normalizeEntry(raw)
			if why != "" {
				return nil, fmt.Errorf("%w %q: %s", ErrBadHostEntry, raw, why)
			}
			if !slices.Contains(p.Allowed, e) {
				p.Allowed = append(p.Allowed, e)
			}
		}
	}
	return p, nil
}

// CheckHost is the check before DNS: may the URL host (without port; an IP
// literal may be in brackets) be dialed by name? With a non-empty Allowed
// the host must match an entry: a name exactly (ASCII case-insensitive,
// trailing dot ignored), "*.example.com" any name below example.com but not
// example.com itself, an IP literal an identical IP entry (IPv4-mapped IPv6
// compared as IPv4; an IPv6 zone must match too). With Allowed empty every
// non-empty host passes here and CheckAddr decides.
func (p *HostPolicy) CheckHost(host string) error {
	h, ok := parseHost(host)
	if !ok {
		return fmt.Errorf("%w: the URL has no host", ErrHostNotAllowed)
	}
	// A name must be a valid hostname whatever the list: in particular
	// numeric forms (127.1, 2130706433, 0x7f.0.0.1) that some resolvers
	// read as IPv4 addresses never reach a resolver.
	if !h.isIP {
		if why := checkHostname(h.name); why != "" {
			return fmt.Errorf("%w: %q is not a valid hostname: %s", ErrHostNotAllowed, host, why)
		}
	}
	if p == nil || len(p.Allowed) == 0 {
		return nil
	}
	if p.listedHost(h) {
		return nil
	}
	return fmt.Errorf("%w: %s is not in --allowed-hostnames", ErrHostNotAllowed, h.name)
}

// CheckAddr is the check on the address actually dialed, after DNS; host
// is the URL host it came from. A host or address listed in Allowed
// (wildcards count: they are explicit configuration) is always allowed,
// whatever the address. With a non-empty Allowed anything else is refused,
// as CheckHost would. With Allowed empty, addresses that reach the local
// machine or network (see classifyAddr) are refused unless AllowPrivate.
func (p *HostPolicy) CheckAddr(host string, addr netip.Addr) error {
	if !addr.IsValid() {
		return fmt.Errorf("%w: no address to dial for %s", ErrHostNotAllowed, host)
	}
	addr = addr.Unmap()
	if p != nil && len(p.Allowed) > 0 {
		if p.listedAddr(addr) {
			return nil
		}
		return p.CheckHost(host)
	}
	if p != nil && p.AllowPrivate {
		return nil
	}
	why := classifyAddr(addr)
	if why == "" {
		return nil
	}
	h, ok := parseHost(host)
	if !ok {
		return fmt.Errorf("%w: %s is %s (use --allow-private-upstreams)", ErrHostNotAllowed, addr, why)
	}
	if h.isIP && h.addr == addr {
		// The URL named the address itself.
		return fmt.Errorf("%w: %s is %s (use --allow-private-upstreams)", ErrHostNotAllowed, h.name, why)
	}
	return fmt.Errorf("%w: %s resolves to %s, %s (use --allow-private-upstreams)", ErrHostNotAllowed, h.name, addr, why)
}

// listedHost reports whether h matches an entry of p.Allowed.
func (p *HostPolicy) listedHost(h urlHost) bool {
	for _, e := range p.Allowed {
		if a, ok := parseEntryAddr(e); ok {
			if h.isIP && a == h.addr {
				return true
			}
			continue
		}
		if h.isIP {
			continue
		}
		e = strings.TrimSuffix(e, ".")
		if suffix, ok := strings.CutPrefix(e, "*."); ok {
			// Invariant: h.name has no trailing dot. "*.example.com"
			// needs at least one label before ".example.com".
			n := len(h.name) - len(suffix)
			if n >= 2 && h.name[n-1] == '.' && h.name[n-2] != '.' && asciiEqualFold(h.name[n:], suffix) {
				return true
			}
			continue
		}
		if asciiEqualFold(h.name, e) {
			return true
		}
	}
	return false
}

// listedAddr reports whether addr (unmapped) is an IP entry of p.Allowed.
func (p *HostPolicy) listedAddr(addr netip.Addr) bool {
	for _, e := range p.Allowed {
		if a, ok := parseEntryAddr(e); ok && a == addr {
			return true
		}
	}
	return false
}

// urlHost is a URL host taken apart: brackets and one trailing dot removed.
type urlHost struct {
	name string // without brackets or trailing dot
	addr netip.Addr
	isIP bool // addr is valid: name is an IP literal (unmapped in addr)
}

// parseHost takes a URL host apart. ok is false for an empty host.
func parseHost(s string) (h urlHost, ok bool) {
	if len(s) >= 2 && s[0] == '[' && s[len(s)-1] == ']' {
		s = s[1 : len(s)-1]
	} else {
		s = strings.TrimSuffix(s, ".")
	}
	if s == "" {
		return urlHost{}, false
	}
	h.name = s
	h.addr, h.isIP = parseIP(s)
	return h, true
}

// parseIP is netip.ParseAddr with the address unmapped, and without the
// allocation of ParseAddr's error for the common case of a hostname.
func parseIP(s string) (netip.Addr, bool) {
	// Hostnames hold no ':' and do not end in a digit (checkHostname).
	if s == "" || (strings.IndexByte(s, ':') < 0 && !isHostDigit(s[len(s)-1])) {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// parseEntryAddr parses an IP entry of Allowed (brackets tolerated).
func parseEntryAddr(e string) (netip.Addr, bool) {
	if len(e) >= 2 && e[0] == '[' && e[len(e)-1] == ']' {
		e = e[1 : len(e)-1]
	}
	return parseIP(e)
}

// normalizeEntry returns the canonical form of one --allowed-hostnames
// entry, or why it is not valid.
func normalizeEntry(raw string) (entry, why string) {
	s := raw
	if strings.HasPrefix(s, "[") {
		inner, rest, found := strings.Cut(s[1:], "]")
		switch {
		case !found:
			return "", "missing ]"
		case rest != "" && rest[0] == ':':
			return "", "entries are hosts without a port"
		case rest != "":
			return "", "text after ]"
		}
		a, err := netip.ParseAddr(inner)
		if err != nil || !a.Is6() {
			return "", "brackets hold only an IPv6 address"
		}
		return a.Unmap().String(), ""
	}
	s = strings.TrimSuffix(s, ".")
	if s == "" {
		return "", "empty name"
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().String(), ""
	}
	if strings.Contains(s, ":") {
		if strings.Count(s, ":") == 1 {
			return "", "entries are hosts without a port"
		}
		return "", "not a valid IPv6 address"
	}
	s = asciiLower(s)
	if suffix, ok := strings.CutPrefix(s, "*."); ok {
		if _, err := netip.ParseAddr(suffix); err == nil {
			return "", "a wildcard takes a domain name, not an IP address"
		}
		if why := checkHostname(suffix); why != "" {
			return "", why
		}
		return s, ""
	}
	if s == "*" {
		return "", "a bare * is not allowed; leave --allowed-hostnames empty to allow any public host"
	}
	if strings.Contains(s, "*") {
		return "", `a wildcard is a leading "*." as in *.example.com`
	}
	if why := checkHostname(s); why != "" {
		return "", why
	}
	return s, ""
}

// checkHostname returns why s (no trailing dot) is not a valid hostname, or
// "". Labels are 1 to 63 ASCII letters, digits, '-' and '_' (DNS names of
// services often hold '_'), and do not start or end with '-'; the name is
// at most 253 bytes. A name whose last label is a number is refused: URL
// parsers and inet_aton read such names as IPv4 addresses ("1.2.3.256",
// "0x7f.1").
func checkHostname(s string) string {
	if s == "" {
		return "empty name"
	}
	if len(s) > 253 {
		return "longer than 253 characters"
	}
	var label string
	for rest, more := s, true; more; {
		label, rest, more = strings.Cut(rest, ".")
		if label == "" {
			return "empty label (two dots in a row, or a leading or trailing dot)"
		}
		if len(label) > 63 {
			return fmt.Sprintf("label %q is longer than 63 characters", label)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !isHostDigit(c) && !isHostLetter(c) && c != '-' && c != '_' {
				r := []rune(label[i:])[0]
				return fmt.Sprintf("%q is not allowed in a hostname", r)
			}
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Sprintf("label %q starts or ends with '-'", label)
		}
	}
	if isNumericLabel(label) {
		return "looks like an IPv4 address but is not a valid one"
	}
	return ""
}

// isNumericLabel reports whether a label reads as a number in an IPv4
// address: decimal digits, or 0x and hex digits.
func isNumericLabel(l string) bool {
	if len(l) >= 2 && l[0] == '0' && (l[1] == 'x' || l[1] == 'X') {
		for i := 2; i < len(l); i++ {
			if !isHostDigit(l[i]) && !('a' <= l[i]|0x20 && l[i]|0x20 <= 'f') {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(l); i++ {
		if !isHostDigit(l[i]) {
			return false
		}
	}
	return true
}

// Address ranges of classifyAddr that netip has no method for.
var (
	thisNetwork4  = netip.MustParsePrefix("0.0.0.0/8")
	sharedCGNAT4  = netip.MustParsePrefix("100.64.0.0/10")
	reserved4     = netip.MustParsePrefix("240.0.0.0/4")
	broadcast4    = netip.MustParseAddr("255.255.255.255")
	siteLocal6    = netip.MustParsePrefix("fec0::/10")
	nat64Local6   = netip.MustParsePrefix("64:ff9b:1::/48")
	nat64Well6    = netip.MustParsePrefix("64:ff9b::/96")
	v4Compatible6 = netip.MustParsePrefix("::/96")
	sixToFour6    = netip.MustParsePrefix("2002::/16")
	teredo6       = netip.MustParsePrefix("2001::/32")
)

// classifyAddr says why addr must not be dialed without
// --allow-private-upstreams ("a loopback address"), or "" for a public
// address. Refused: loopback, private (RFC 1918, fc00::/7, fec0::/10),
// link-local (169.254/16, fe80::/10, link-local multicast), unspecified,
// 0.0.0.0/8, shared 100.64/10, multicast, 240.0.0.0/4 and broadcast, and
// IPv6 addresses that embed such an IPv4 address: IPv4-mapped (unmapped
// first), IPv4-compatible ::/96, NAT64 64:ff9b::/96 (RFC 6052), 6to4
// 2002::/16 (RFC 3056) and Teredo 2001::/32 (RFC 4380); the local-use NAT64
// prefix 64:ff9b:1::/48 (RFC 8215) is refused whole.
func classifyAddr(addr netip.Addr) string {
	// netip.Prefix.Contains is false for any address with a zone.
	a := addr.WithZone("").Unmap()
	if a.Is4() {
		return classify4(a)
	}
	switch {
	case a.IsUnspecified():
		return "the unspecified address"
	case a.IsLoopback():
		return "a loopback address"
	case a.IsLinkLocalUnicast():
		return "a link-local address"
	case a.IsLinkLocalMulticast():
		return "a link-local multicast address"
	case a.IsMulticast():
		return "a multicast address"
	case a.IsPrivate():
		return "a private address"
	case siteLocal6.Contains(a):
		return "a site-local address"
	case nat64Local6.Contains(a):
		return "a local-use NAT64 address"
	}
	b := a.As16()
	var kind string
	var v4 netip.Addr
	switch {
	case nat64Well6.Contains(a):
		kind, v4 = "NAT64", netip.AddrFrom4([4]byte(b[12:16]))
	case v4Compatible6.Contains(a):
		kind, v4 = "IPv4-compatible", netip.AddrFrom4([4]byte(b[12:16]))
	case sixToFour6.Contains(a):
		kind, v4 = "6to4", netip.AddrFrom4([4]byte(b[2:6]))
	case teredo6.Contains(a):
		// Server at bits 32-63, client obfuscated (inverted) at 96-127.
		server := netip.AddrFrom4([4]byte(b[4:8]))
		client := netip.AddrFrom4([4]byte{^b[12], ^b[13], ^b[14], ^b[15]})
		if why := classify4(server); why != "" {
			return fmt.Sprintf("a Teredo address with server %s, %s", server, why)
		}
		kind, v4 = "Teredo", client
	default:
		return ""
	}
	if why := classify4(v4); why != "" {
		return fmt.Sprintf("a %s address embedding %s, %s", kind, v4, why)
	}
	return ""
}

// classify4 is classifyAddr for an IPv4 address.
func classify4(a netip.Addr) string {
	switch {
	case a.IsUnspecified():
		return "the unspecified address"
	case thisNetwork4.Contains(a):
		return "a this-network address (0.0.0.0/8)"
	case a.IsLoopback():
		return "a loopback address"
	case a.IsPrivate():
		return "a private address"
	case sharedCGNAT4.Contains(a):
		return "a shared address (carrier-grade NAT, 100.64.0.0/10)"
	case a.IsLinkLocalUnicast():
		return "a link-local address"
	case a.IsLinkLocalMulticast():
		return "a link-local multicast address"
	case a.IsMulticast():
		return "a multicast address"
	case a == broadcast4:
		return "the broadcast address"
	case reserved4.Contains(a):
		return "a reserved address (240.0.0.0/4)"
	}
	return ""
}

func isEntrySeparator(r rune) bool { return r == ',' || unicode.IsSpace(r) }

func isHostDigit(c byte) bool  { return '0' <= c && c <= '9' }
func isHostLetter(c byte) bool { return 'a' <= c|0x20 && c|0x20 <= 'z' }

// asciiLower lower-cases ASCII letters only. strings.ToLower would map
// U+212A KELVIN SIGN to 'k' and let a non-ASCII entry pass as ASCII.
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// asciiEqualFold is strings.EqualFold for ASCII only: with Unicode folding
// "ſ" (U+017F) would match "s", and a name that is not the listed one
// would pass.
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
