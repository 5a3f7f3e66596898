package rpc

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestNewHostPolicy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		values []string
		want   []string
	}{
		{"none", nil, nil},
		{"empty values", []string{"", " ", ",, ,"}, nil},
		{"one", []string{"example.com"}, []string{"example.com"}},
		{"several in one value", []string{"a.com, b.com c.com"}, []string{"a.com", "b.com", "c.com"}},
		{"tabs and newlines", []string{"a.com\tb.com\n c.com,"}, []string{"a.com", "b.com", "c.com"}},
		{"several values", []string{"a.com", "b.com,c.com"}, []string{"a.com", "b.com", "c.com"}},
		{"lower-cased", []string{"API.Example.COM"}, []string{"api.example.com"}},
		{"trailing dot", []string{"example.com."}, []string{"example.com"}},
		{"duplicates", []string{"a.com,A.com a.com."}, []string{"a.com"}},
		{"wildcard", []string{"*.Example.com."}, []string{"*.example.com"}},
		{"underscore", []string{"my_service.internal"}, []string{"my_service.internal"}},
		{"single label", []string{"localhost"}, []string{"localhost"}},
		{"ipv4", []string{"10.0.0.1"}, []string{"10.0.0.1"}},
		{"ipv6", []string{"2001:DB8::1"}, []string{"2001:db8::1"}},
		{"ipv6 brackets", []string{"[::1]"}, []string{"::1"}},
		{"ipv6 zone", []string{"fe80::1%eth0"}, []string{"fe80::1%eth0"}},
		{"ipv4-mapped", []string{"::ffff:192.0.2.1", "[::ffff:10.0.0.1]"}, []string{"192.0.2.1", "10.0.0.1"}},
		{"63-byte label", []string{strings.Repeat("a", 63) + ".com"}, []string{strings.Repeat("a", 63) + ".com"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := NewHostPolicy(tt.values, true)
			if err != nil {
				t.Fatalf("NewHostPolicy(%q): %v", tt.values, err)
			}
			if !slices.Equal(p.Allowed, tt.want) {
				t.Errorf("NewHostPolicy(%q).Allowed = %q, want %q", tt.values, p.Allowed, tt.want)
			}
			if !p.AllowPrivate {
				t.Error("AllowPrivate lost")
			}
		})
	}
}

func TestNewHostPolicyBadEntry(t *testing.T) {
	t.Parallel()
	tests := []struct {
		value string
		bad   string // the entry the error must quote
		why   string // part of the reason
	}{
		{"good.com, bad$.com", "bad$.com", `'$' is not allowed`},
		{"exa_mple.com ex/ample.com", "ex/ample.com", `'/' is not allowed`},
		{"exämple.com", "exämple.com", `'ä' is not allowed`},
		{"\u212aey.com", "\u212aey.com", "is not allowed"}, // KELVIN SIGN, not 'K'
		{"example.com:443", "example.com:443", "without a port"},
		{"10.0.0.1:80", "10.0.0.1:80", "without a port"},
		{"[::1]:443", "[::1]:443", "without a port"},
		{"[::1", "[::1", "missing ]"},
		{"[::1]x", "[::1]x", "text after ]"},
		{"[10.0.0.1]", "[10.0.0.1]", "only an IPv6"},
		{"[example.com]", "[example.com]", "only an IPv6"},
		{"fe80::zz", "fe80::zz", "not a valid IPv6"},
		{"*", "*", "bare *"},
		{"*.", "*.", "bare *"},
		{"*.*.example.com", "*.*.example.com", "not allowed"},
		{"a.*.example.com", "a.*.example.com", "leading"},
		{"*example.com", "*example.com", "leading"},
		{"*.10.0.0.1", "*.10.0.0.1", "not an IP"},
		{".", ".", "empty name"},
		{"a..com", "a..com", "empty label"},
		{".a.com", ".a.com", "empty label"},
		{"a.com..", "a.com..", "empty label"},
		{"-a.com", "-a.com", "starts or ends with '-'"},
		{"a-.com", "a-.com", "starts or ends with '-'"},
		{strings.Repeat("a", 64) + ".com", strings.Repeat("a", 64) + ".com", "longer than 63"},
		{strings.Repeat("a.", 127) + "aa", strings.Repeat("a.", 127) + "aa", "longer than 253"},
		{"1.2.3.256", "1.2.3.256", "IPv4"},
		{"1.2.3", "1.2.3", "IPv4"},
		{"0x7f.1", "0x7f.1", "IPv4"},
		{"example.0x10", "example.0x10", "IPv4"},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			t.Parallel()
			p, err := NewHostPolicy([]string{tt.value}, false)
			if !errors.Is(err, ErrBadHostEntry) {
				t.Fatalf("NewHostPolicy(%q) = %v, %v; want ErrBadHostEntry", tt.value, p, err)
			}
			msg := err.Error()
			if !strings.Contains(msg, fmt.Sprintf("%q", tt.bad)) || !strings.Contains(msg, tt.why) {
				t.Errorf("NewHostPolicy(%q) error %q; want it to quote %q and say %q", tt.value, msg, tt.bad, tt.why)
			}
		})
	}
}

func TestHostPolicyCheckHost(t *testing.T) {
	t.Parallel()
	list := []string{"example.com, *.wild.example.org API.Upper.net 10.1.2.3 2001:db8::1 [fe80::1%eth0] ::ffff:192.0.2.7"}
	tests := []struct {
		allowed []string
		host    string
		ok      bool
	}{
		// Empty list: every name passes, the address check decides.
		{nil, "example.com", true},
		{nil, "localhost", true},
		{nil, "127.0.0.1", true},
		{nil, "[::1]", true},
		{nil, "", false},
		{nil, "[]", false},
		{nil, ".", false},

		{list, "example.com", true},
		{list, "EXAMPLE.com", true},
		{list, "example.com.", true},
		{list, "example.com..", false},
		{list, "www.example.com", false},
		{list, "example.co", false},
		{list, "xexample.com", false},
		{list, "example.com.evil.net", false},
		{list, "", false},

		{list, "a.wild.example.org", true},
		{list, "A.Wild.Example.Org.", true},
		{list, "a.b.wild.example.org", true},
		{list, "wild.example.org", false},
		{list, ".wild.example.org", false},
		{list, "a..wild.example.org", false},
		{list, "awild.example.org", false},
		{list, "a.wild.example.org.evil.net", false},
		{list, "bad$.wild.example.org", false},
		{list, "a.wild.example.org:443", false},

		{list, "api.upper.net", true},
		{list, "API.UPPER.NET", true},
		{list, "api.upper.ſet", false}, // U+017F folds to 's' in Unicode, not in ASCII
		{list, "api.upper.\u212aet", false},

		{list, "10.1.2.3", true},
		{list, "10.1.2.3.", true},
		{list, "::ffff:10.1.2.3", true},
		{list, "[::ffff:10.1.2.3]", true},
		{list, "10.1.2.4", false},
		{list, "2001:db8::1", true},
		{list, "[2001:db8::1]", true},
		{list, "[2001:DB8:0::1]", true},
		{list, "[2001:db8::2]", false},
		{list, "fe80::1%eth0", true},
		{list, "fe80::1", false}, // zones must match
		{list, "fe80::1%eth1", false},
		{list, "192.0.2.7", true},
		{list, "[::ffff:192.0.2.7]", true},
		{list, "127.0.0.1", false},
		{list, "[::1]", false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d/%s", len(tt.allowed), tt.host), func(t *testing.T) {
			t.Parallel()
			p, err := NewHostPolicy(tt.allowed, false)
			if err != nil {
				t.Fatal(err)
			}
			err = p.CheckHost(tt.host)
			checkResult(t, fmt.Sprintf("CheckHost(%q)", tt.host), err, tt.ok)
		})
	}
}

func TestHostPolicyCheckAddr(t *testing.T) {
	t.Parallel()
	private := map[string]string{
		"0.0.0.0":                        "unspecified",
		"0.1.2.3":                        "this-network",
		"127.0.0.1":                      "loopback",
		"127.255.255.254":                "loopback",
		"10.0.0.1":                       "private",
		"172.16.0.1":                     "private",
		"172.31.255.255":                 "private",
		"192.168.1.1":                    "private",
		"100.64.0.1":                     "carrier-grade NAT",
		"100.127.255.255":                "carrier-grade NAT",
		"169.254.169.254":                "link-local",
		"224.0.0.1":                      "link-local multicast",
		"239.1.2.3":                      "multicast",
		"255.255.255.255":                "broadcast",
		"240.0.0.1":                      "reserved",
		"::":                             "unspecified",
		"::1":                            "loopback",
		"fc00::1":                        "private",
		"fd12:3456::1":                   "private",
		"fe80::1":                        "link-local",
		"fe80::1%eth0":                   "link-local",
		"fec0::1":                        "site-local",
		"ff02::1":                        "link-local multicast",
		"ff0e::1":                        "multicast",
		"::ffff:127.0.0.1":               "loopback",
		"::ffff:10.0.0.1":                "private",
		"::ffff:0.0.0.0":                 "unspecified",
		"::ffff:169.254.169.254":         "link-local",
		"::127.0.0.1":                    "IPv4-compatible address embedding 127.0.0.1, a loopback",
		"::10.0.0.1":                     "IPv4-compatible",
		"64:ff9b::10.0.0.1":              "NAT64 address embedding 10.0.0.1, a private",
		"64:ff9b::127.0.0.1":             "NAT64",
		"64:ff9b::169.254.169.254":       "NAT64",
		"64:ff9b:1::1":                   "local-use NAT64",
		"2002:7f00:1::1":                 "6to4 address embedding 127.0.0.1",
		"2002:c0a8:101::1":               "6to4 address embedding 192.168.1.1",
		"2002:a9fe:a9fe::":               "6to4",
		"2001:0:a00:1::1":                "Teredo address with server 10.0.0.1",
		"2001:0:4136:e378:0:0:f5ff:fffe": "Teredo address embedding 10.0.0.1", // client ^0xf5fffffe
	}
	public := []string{
		"1.1.1.1", "8.8.8.8", "93.184.216.34", "100.63.255.255", "100.128.0.0",
		"172.15.255.255", "172.32.0.0", "192.167.255.255", "169.253.0.1", "223.255.255.255",
		"2606:4700:4700::1111", "2001:4860:4860::8888", "::ffff:8.8.8.8",
		"64:ff9b::8.8.8.8", "2002:808:808::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2",
		"::ffff:0:a00:1", // SIIT translated form is not an embedding we know
	}
	for addr, why := range private {
		t.Run(addr, func(t *testing.T) {
			t.Parallel()
			a := netip.MustParseAddr(addr)
			for _, p := range []*HostPolicy{nil, {}, {AllowPrivate: false}} {
				err := p.CheckAddr("upstream.example", a)
				checkResult(t, fmt.Sprintf("CheckAddr(%s)", addr), err, false)
				if err != nil && !strings.Contains(err.Error(), why) {
					t.Errorf("CheckAddr(%s) = %q; want it to say %q", addr, err, why)
				}
			}
			err := (&HostPolicy{AllowPrivate: true}).CheckAddr("upstream.example", a)
			checkResult(t, fmt.Sprintf("AllowPrivate CheckAddr(%s)", addr), err, true)
		})
	}
	for _, addr := range public {
		t.Run(addr, func(t *testing.T) {
			t.Parallel()
			a := netip.MustParseAddr(addr)
			var nilPolicy *HostPolicy
			checkResult(t, fmt.Sprintf("nil.CheckAddr(%s)", addr), nilPolicy.CheckAddr("upstream.example", a), true)
			checkResult(t, fmt.Sprintf("CheckAddr(%s)", addr), (&HostPolicy{}).CheckAddr("upstream.example", a), true)
		})
	}
}

func TestHostPolicyCheckAddrListed(t *testing.T) {
	t.Parallel()
	p, err := NewHostPolicy([]string{"internal.example, *.corp.example 10.9.9.9 [::1]"}, false)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		host string
		addr string
		ok   bool
	}{
		// A listed name may resolve anywhere, private included.
		{"internal.example", "10.0.0.1", true},
		{"INTERNAL.example.", "127.0.0.1", true},
		{"db.corp.example", "192.168.1.1", true},
		{"db.corp.example", "::ffff:192.168.1.1", true},
		// A listed address is allowed whatever name led to it.
		{"10.9.9.9", "10.9.9.9", true},
		{"[::1]", "::1", true},
		{"localhost", "::1", true},
		{"other.example", "10.9.9.9", true},
		{"other.example", "::ffff:10.9.9.9", true},
		// Anything else is refused when the list is not empty, public or not.
		{"other.example", "8.8.8.8", false},
		{"other.example", "10.0.0.1", false},
		{"corp.example", "8.8.8.8", false},
		{"127.0.0.1", "127.0.0.1", false},
		{"", "8.8.8.8", false},
		{"internal.example", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.host+"/"+tt.addr, func(t *testing.T) {
			t.Parallel()
			var a netip.Addr
			if tt.addr != "" {
				a = netip.MustParseAddr(tt.addr)
			}
			checkResult(t, fmt.Sprintf("CheckAddr(%q, %s)", tt.host, tt.addr), p.CheckAddr(tt.host, a), tt.ok)
		})
	}
}

// TestHostPolicyHandBuilt checks a HostPolicy built as a literal, with
// entries that NewHostPolicy would have normalized.
func TestHostPolicyHandBuilt(t *testing.T) {
	t.Parallel()
	p := &HostPolicy{Allowed: []string{"Example.COM.", "*.Wild.Example.", "[::1]", "::ffff:10.0.0.1"}}
	for _, host := range []string{"example.com", "a.wild.example", "::1", "10.0.0.1", "[::ffff:10.0.0.1]"} {
		checkResult(t, fmt.Sprintf("CheckHost(%q)", host), p.CheckHost(host), true)
	}
	checkResult(t, "CheckAddr", p.CheckAddr("example.com", netip.MustParseAddr("127.0.0.1")), true)
	checkResult(t, "CheckAddr", p.CheckAddr("x.example", netip.MustParseAddr("::ffff:10.0.0.1")), true)
	checkResult(t, "CheckHost", p.CheckHost("wild.example"), false)
}

func TestHostPolicyMessages(t *testing.T) {
	t.Parallel()
	list := &HostPolicy{Allowed: []string{"a.example"}}
	tests := []struct {
		err  error
		want string
	}{
		{(*HostPolicy)(nil).CheckAddr("10.0.0.1", netip.MustParseAddr("10.0.0.1")),
			"rpc: host not allowed: 10.0.0.1 is a private address (use --allow-private-upstreams)"},
		{(*HostPolicy)(nil).CheckAddr("[::ffff:127.0.0.1]", netip.MustParseAddr("::ffff:127.0.0.1")),
			"rpc: host not allowed: ::ffff:127.0.0.1 is a loopback address (use --allow-private-upstreams)"},
		{(*HostPolicy)(nil).CheckAddr("localhost", netip.MustParseAddr("::1")),
			"rpc: host not allowed: localhost resolves to ::1, a loopback address (use --allow-private-upstreams)"},
		{(*HostPolicy)(nil).CheckAddr("", netip.MustParseAddr("0.0.0.0")),
			"rpc: host not allowed: 0.0.0.0 is the unspecified address (use --allow-private-upstreams)"},
		{list.CheckHost("b.example"), "rpc: host not allowed: b.example is not in --allowed-hostnames"},
		{list.CheckHost("[::1]"), "rpc: host not allowed: ::1 is not in --allowed-hostnames"},
		{list.CheckHost("a b"), `rpc: host not allowed: "a b" is not a valid hostname: ' ' is not allowed in a hostname`},
		{list.CheckHost(""), "rpc: host not allowed: the URL has no host"},
	}
	for _, tt := range tests {
		if tt.err == nil || tt.err.Error() != tt.want {
			t.Errorf("got error %v\nwant         %s", tt.err, tt.want)
		}
	}
}

func TestHostPolicyAllocs(t *testing.T) {
	p, err := NewHostPolicy([]string{"a.example *.b.example 10.0.0.1 2001:db8::1"}, false)
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddr("93.184.216.34")
	allocs := testing.AllocsPerRun(100, func() {
		if p.CheckHost("x.b.example") != nil || p.CheckHost("2001:db8::1") != nil ||
			p.CheckAddr("x.b.example", addr) != nil || (*HostPolicy)(nil).CheckAddr("x.example", addr) != nil {
			t.Fatal("refused")
		}
	})
	if allocs != 0 {
		t.Errorf("allowed path: %v allocations, want 0", allocs)
	}
}

func ExampleNewHostPolicy() {
	p, err := NewHostPolicy([]string{"api.example.com, *.internal.example", "[::1]"}, false)
	if err != nil {
		panic(err)
	}
	fmt.Println(p.Allowed)
	fmt.Println(p.CheckHost("API.example.com"))
	fmt.Println(p.CheckHost("db.internal.example"))
	fmt.Println(p.CheckHost("internal.example"))
	// Output:
	// [api.example.com *.internal.example ::1]
	// <nil>
	// <nil>
	// rpc: host not allowed: internal.example is not in --allowed-hostnames
}

func ExampleHostPolicy_CheckAddr() {
	var p *HostPolicy // no list: any public host
	fmt.Println(p.CheckAddr("example.com", netip.MustParseAddr("93.184.216.34")))
	fmt.Println(p.CheckAddr("example.com", netip.MustParseAddr("::ffff:127.0.0.1")))
	// Output:
	// <nil>
	// rpc: host not allowed: example.com resolves to 127.0.0.1, a loopback address (use --allow-private-upstreams)
}

// checkResult fails t unless err is nil when ok, or wraps ErrHostNotAllowed
// when not.
func checkResult(t *testing.T, what string, err error, ok bool) {
	t.Helper()
	switch {
	case ok && err != nil:
		t.Errorf("%s = %v, want nil", what, err)
	case !ok && err == nil:
		t.Errorf("%s = nil, want an error", what)
	case !ok && !errors.Is(err, ErrHostNotAllowed):
		t.Errorf("%s = %v, want ErrHostNotAllowed", what, err)
	}
}
