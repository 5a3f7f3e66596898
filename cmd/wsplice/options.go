//go:build linux

package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/wsplice/wsplice/rpc"
)

// options is the command line of PROTOCOL.md section 5, flags and
// environment merged. parseOptions fills it and validate checks the rules
// that span fields.
type options struct {
	// Flags of the original wsplice.
	Listen           string   // --listen, host:port
	Network          string   // --network: tcp, tcp4 or tcp6
	AllowedHostnames []string // --allowed-hostnames, raw values (rpc.NewHostPolicy splits them)
	TLSCert          string   // --tls-cert, PEM file
	TLSKey           string   // --tls-key, PEM file
	TLSCA            string   // --tls-ca, PEM CA bundle for client certificates
	FrameSizeLimit   int64    // --frame-size-limit, bytes
	WriteTimeout     time.Duration
	ReadTimeout      time.Duration
	DialTimeout      time.Duration
	PprofAddress     string // --pprof-address, host:port or empty

	// Flags wsplice adds.
	AllowPrivateUpstreams  bool
	UpstreamCA             string // --upstream-ca, PEM file
	MaxSessions            int    // 0: no limit
	MaxUpstreamsPerSession int
	MaxSessionsPerIP       int           // 0: no limit
	PingInterval           time.Duration // 0: off
	IdleTimeout            time.Duration // 0: off
	AllowedOrigins         []string      // split on commas and spaces; empty: any
	MetricsAddress         string        // host:port or empty
	ShutdownTimeout        time.Duration
	LogFormat              string // text or json
	LogLevel               string // debug, info, warn or error
	ProxyProtocol          bool
	Reuseport              bool
	UpstreamSourceAddrs    []string // split on commas and spaces
}

// envPrefix starts the environment variable of every flag: WSPLICE_ plus
// the flag name upper-cased with '-' turned to '_'.
const envPrefix = "WSPLICE_"

// defaultOptions returns the defaults of PROTOCOL.md section 5.
func defaultOptions() *options {
	return &options{
		Listen:                 "127.0.0.1:3000",
		Network:                "tcp",
		FrameSizeLimit:         5 << 20,
		WriteTimeout:           5 * time.Second,
		ReadTimeout:            5 * time.Second,
		DialTimeout:            10 * time.Second,
		MaxUpstreamsPerSession: 1024,
		PingInterval:           30 * time.Second,
		IdleTimeout:            90 * time.Second,
		ShutdownTimeout:        10 * time.Second,
		LogFormat:              "text",
		LogLevel:               "info",
	}
}

// flagDef is one flag: registration, environment and help all come from
// the table of optionFlags, so they cannot drift apart.
type flagDef struct {
	name  string
	arg   string // what the value is, for --help ("" for a boolean)
	usage string
	value flag.Value
}

// optionFlags returns the flags that fill o, in the order of PROTOCOL.md
// section 5.
func (o *options) optionFlags() []flagDef {
	return []flagDef{
		{"listen", "host:port", "address to listen on", (*stringValue)(&o.Listen)},
		{"network", "name", "tcp, tcp4 or tcp6", (*stringValue)(&o.Network)},
		{"allowed-hostnames", "names", "upstream hosts allowed; repeatable, each value may hold several names separated by commas or spaces; *.example.com matches its subdomains, not example.com itself; IP addresses allowed; empty: any public host", &listValue{p: &o.AllowedHostnames}},
		{"tls-cert", "file", "PEM certificate file; with --tls-key: serve TLS", (*stringValue)(&o.TLSCert)},
		{"tls-key", "file", "PEM private key file; with --tls-cert: serve TLS", (*stringValue)(&o.TLSKey)},
		{"tls-ca", "file", "PEM CA bundle: clients must present a certificate signed by it (mutual TLS)", (*stringValue)(&o.TLSCA)},
		{"frame-size-limit", "size", "largest control message: bytes, or a number with KB, MB or GB (powers of 1024)", (*sizeValue)(&o.FrameSizeLimit)},
		{"write-timeout", "duration", "a peer that accepts no bytes for this long is disconnected", (*durationValue)(&o.WriteTimeout)},
		{"read-timeout", "duration", "time allowed for a WebSocket handshake to complete", (*durationValue)(&o.ReadTimeout)},
		{"dial-timeout", "duration", "upstream dial and handshake limit", (*durationValue)(&o.DialTimeout)},
		{"pprof-address", "host:port", "serve Go pprof there (never make it public)", (*stringValue)(&o.PprofAddress)},
		{"allow-private-upstreams", "", "allow loopback, private and link-local upstream addresses", (*boolValue)(&o.AllowPrivateUpstreams)},
		{"upstream-ca", "file", "extra PEM CAs trusted for wss:// upstreams", (*stringValue)(&o.UpstreamCA)},
		{"max-sessions", "n", "concurrent sessions, beyond: HTTP 503 (0: no limit)", (*intValue)(&o.MaxSessions)},
		{"max-upstreams-per-session", "n", "upstreams per session, beyond: error 4008 (1 to 65535)", (*intValue)(&o.MaxUpstreamsPerSession)},
		{"max-sessions-per-ip", "n", "concurrent sessions per client address (0: no limit)", (*intValue)(&o.MaxSessionsPerIP)},
		{"ping-interval", "duration", "keepalive pings to clients and upstreams (0: off)", (*durationValue)(&o.PingInterval)},
		{"idle-timeout", "duration", "a peer silent this long, no pong either, is dropped (0: off)", (*durationValue)(&o.IdleTimeout)},
		{"allowed-origins", "origins", "Origin values allowed for browser clients (https://app.example.com, https://*.example.com; none: also clients that send no Origin); others get 403; repeatable, commas or spaces between values (empty: any)", &listValue{p: &o.AllowedOrigins, split: true}},
		{"metrics-address", "host:port", "serve /metrics and /healthz there", (*stringValue)(&o.MetricsAddress)},
		{"shutdown-timeout", "duration", "drain time on SIGTERM", (*durationValue)(&o.ShutdownTimeout)},
		{"log-format", "format", "text or json", (*stringValue)(&o.LogFormat)},
		{"log-level", "level", "debug, info, warn or error", (*stringValue)(&o.LogLevel)},
		{"proxy-protocol", "", "expect a PROXY protocol v1 or v2 header on every connection", (*boolValue)(&o.ProxyProtocol)},
		{"reuseport", "", "set SO_REUSEPORT on the listener", (*boolValue)(&o.Reuseport)},
		{"upstream-source-addrs", "addrs", "local IP addresses to spread upstream dials over; repeatable, commas or spaces between values", &listValue{p: &o.UpstreamSourceAddrs, split: true}},
	}
}

// parseOptions parses args (without the program name) over environ
// (KEY=VALUE strings as from os.Environ) into options with the defaults
// of PROTOCOL.md section 5. It does not call validate.
//
// A flag given on the command line replaces its WSPLICE_ variable
// entirely, for repeatable flags too; a replaced variable is not parsed.
// An empty variable counts as unset. An unknown WSPLICE_ variable is an
// error (it is most likely a typo).
//
// parseOptions writes to stderr only for --help or -h: the usage, then it
// returns flag.ErrHelp. Every other problem is returned, not printed, so
// the caller reports it once.
func parseOptions(args, environ []string, stderr io.Writer) (*options, error) {
	o := defaultOptions()
	defs := o.optionFlags()
	fs := flag.NewFlagSet("wsplice", flag.ContinueOnError)
	// The flag package prints errors and usage to its output; errors are
	// ours to return, so it prints nothing and --help is handled below.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	for _, d := range defs {
		fs.Var(d.value, d.name, d.usage)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stderr, fs, defs)
			return nil, err
		}
		return nil, fmt.Errorf("%w (see wsplice --help)", err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q: wsplice takes only flags (see wsplice --help)", fs.Arg(0))
	}
	onCommandLine := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })
	if err := applyEnv(fs, environ, onCommandLine); err != nil {
		return nil, err
	}
	return o, nil
}

// envName is the environment variable of a flag: listen -> WSPLICE_LISTEN.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// applyEnv sets each flag not in skip from its WSPLICE_ variable in
// environ. The first of duplicate variables wins, as with os.Getenv.
func applyEnv(fs *flag.FlagSet, environ []string, skip map[string]bool) error {
	seen := make(map[string]bool)
	var unknown []string
	type setting struct{ key, name, value string }
	var settings []setting
	for _, kv := range environ {
		key, value, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(key, envPrefix) || seen[key] {
			continue
		}
		seen[key] = true
		name := strings.ToLower(strings.ReplaceAll(key[len(envPrefix):], "_", "-"))
		if fs.Lookup(name) == nil || envName(name) != key {
			unknown = append(unknown, key)
			continue
		}
		if skip[name] || value == "" {
			continue
		}
		settings = append(settings, setting{key, name, value})
	}
	switch len(unknown) {
	case 0:
	case 1:
		return fmt.Errorf("unknown environment variable %s: wsplice has no such flag (see wsplice --help)", unknown[0])
	default:
		return fmt.Errorf("unknown environment variables %s: wsplice has no such flags (see wsplice --help)", strings.Join(unknown, ", "))
	}
	for _, s := range settings {
		if err := fs.Set(s.name, s.value); err != nil {
			return fmt.Errorf("invalid value %q for environment variable %s: %w", s.value, s.key, err)
		}
	}
	return nil
}

// printUsage writes the --help text: every flag with its argument,
// meaning, default and environment variable.
func printUsage(w io.Writer, fs *flag.FlagSet, defs []flagDef) {
	var b strings.Builder
	b.WriteString("Usage: wsplice [flags]\n\n")
	b.WriteString("wsplice multiplexes many upstream WebSocket connections over one client WebSocket.\n\nFlags:\n")
	for _, d := range defs {
		fmt.Fprintf(&b, "  --%s", d.name)
		if d.arg != "" {
			fmt.Fprintf(&b, " %s", d.arg)
		}
		fmt.Fprintf(&b, "\n    \t%s", d.usage)
		if def := fs.Lookup(d.name).DefValue; def != "" && def != "false" && def != "0" {
			fmt.Fprintf(&b, " (default %s)", def)
		}
		fmt.Fprintf(&b, "\n    \tenv %s\n", envName(d.name))
	}
	b.WriteString("\nEvery flag can also be set from the environment as WSPLICE_ plus the flag name\n")
	b.WriteString("upper-cased with - turned to _ (for example WSPLICE_ALLOWED_HOSTNAMES=a.example.com,b.example.com).\n")
	b.WriteString("A flag given on the command line replaces the environment's value entirely.\n")
	io.WriteString(w, b.String())
}

// validate checks the rules that span fields or that parsing cannot: TLS
// files come in pairs, addresses are host:port, limits and timeouts are in
// range, names are known, and every file given can be read. The error
// names the flag.
func (o *options) validate() error {
	if (o.TLSCert == "") != (o.TLSKey == "") {
		if o.TLSCert == "" {
			return errors.New("--tls-key needs --tls-cert: give both to serve TLS, or neither")
		}
		return errors.New("--tls-cert needs --tls-key: give both to serve TLS, or neither")
	}
	if o.TLSCA != "" && o.TLSCert == "" {
		return errors.New("--tls-ca needs --tls-cert and --tls-key: client certificates are checked only over TLS")
	}
	switch o.Network {
	case "tcp", "tcp4", "tcp6":
	default:
		return fmt.Errorf("--network %q: want tcp, tcp4 or tcp6", o.Network)
	}
	if err := checkHostPort(o.Listen); err != nil {
		return fmt.Errorf("--listen %q: %w", o.Listen, err)
	}
	for _, a := range []struct{ flag, addr string }{{"pprof-address", o.PprofAddress}, {"metrics-address", o.MetricsAddress}} {
		if a.addr == "" {
			continue
		}
		if err := checkHostPort(a.addr); err != nil {
			return fmt.Errorf("--%s %q: %w", a.flag, a.addr, err)
		}
	}
	if o.FrameSizeLimit <= 0 {
		return fmt.Errorf("--frame-size-limit %d: want a size above 0", o.FrameSizeLimit)
	}
	for _, d := range []struct {
		flag string
		d    time.Duration
		zero bool // 0 is allowed (off, or no drain)
	}{
		{"write-timeout", o.WriteTimeout, false},
		{"read-timeout", o.ReadTimeout, false},
		{"dial-timeout", o.DialTimeout, false},
		{"ping-interval", o.PingInterval, true},
		{"idle-timeout", o.IdleTimeout, true},
		{"shutdown-timeout", o.ShutdownTimeout, true},
	} {
		switch {
		case d.d < 0:
			return fmt.Errorf("--%s %v: want a duration of 0 or more", d.flag, d.d)
		case d.d == 0 && !d.zero:
			return fmt.Errorf("--%s 0s: want a duration above 0", d.flag)
		}
	}
	if o.PingInterval > 0 && o.IdleTimeout > 0 && o.IdleTimeout <= o.PingInterval {
		return fmt.Errorf("--idle-timeout %v must be longer than --ping-interval %v: a peer that only answers pings would be dropped", o.IdleTimeout, o.PingInterval)
	}
	if o.MaxSessions < 0 {
		return fmt.Errorf("--max-sessions %d: want 0 (no limit) or more", o.MaxSessions)
	}
	if o.MaxSessionsPerIP < 0 {
		return fmt.Errorf("--max-sessions-per-ip %d: want 0 (no limit) or more", o.MaxSessionsPerIP)
	}
	if o.MaxUpstreamsPerSession < 1 || o.MaxUpstreamsPerSession > 65535 {
		return fmt.Errorf("--max-upstreams-per-session %d: want 1 to 65535", o.MaxUpstreamsPerSession)
	}
	switch o.LogFormat {
	case "text", "json":
	default:
		return fmt.Errorf("--log-format %q: want text or json", o.LogFormat)
	}
	switch o.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", o.LogLevel)
	}
	if _, err := rpc.NewHostPolicy(o.AllowedHostnames, o.AllowPrivateUpstreams); err != nil {
		return fmt.Errorf("--allowed-hostnames: %w", err)
	}
	for _, s := range o.UpstreamSourceAddrs {
		if _, err := netip.ParseAddr(s); err != nil {
			return fmt.Errorf("--upstream-source-addrs %q: want an IP address of this machine", s)
		}
	}
	for _, f := range []struct{ flag, path string }{
		{"tls-cert", o.TLSCert}, {"tls-key", o.TLSKey}, {"tls-ca", o.TLSCA}, {"upstream-ca", o.UpstreamCA},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.ReadFile(f.path); err != nil {
			return fmt.Errorf("--%s: %w", f.flag, err)
		}
	}
	return nil
}

// checkHostPort checks a listen address: host:port with an empty host for
// every interface, and a port number from 0 (any free port) to 65535.
func checkHostPort(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("want host:port, as in 127.0.0.1:3000 or :3000")
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("bad port %q: want a number from 0 to 65535", port)
	}
	return nil
}

// sizeUnits maps the suffixes parseSize accepts, lower-cased, to their
// multiplier. KB, MB and GB are powers of 1024, as in the original wsplice.
var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10,
	"m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
	"g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
}

// maxSizeLen bounds the input of parseSize, so a pathological value costs
// nothing: "9223372036854775807" is 19 digits.
const maxSizeLen = 64

// parseSize parses a --frame-size-limit value: plain bytes ("1048576") or
// a number with a unit: K, KB, KiB, M, MB, MiB, G, GB, GiB (any case, all
// powers of 1024), or B. Space may separate number and unit. With a unit
// the number may have a fraction ("1.5MB"); the result is exact, rounded
// down to whole bytes. Zero, negative, overflowing and other values are
// errors.
func parseSize(s string) (int64, error) {
	bad := func(why string) (int64, error) {
		return 0, fmt.Errorf("bad size %q: %s", s, why)
	}
	const want = "want bytes or a number with KB, MB or GB"
	t := strings.TrimSpace(s)
	if t == "" {
		return bad(want)
	}
	if len(t) > maxSizeLen {
		return bad("too long")
	}
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i < 0 {
		i = len(t)
	}
	num, unit := t[:i], strings.ToLower(strings.TrimLeftFunc(t[i:], unicode.IsSpace))
	if num == "" {
		if strings.HasPrefix(t, "-") {
			return bad("want a size above 0")
		}
		return bad(want)
	}
	mult, ok := sizeUnits[unit]
	if !ok {
		return bad(want)
	}
	whole, frac, hasDot := strings.Cut(num, ".")
	if strings.Contains(frac, ".") || (hasDot && (whole == "" || frac == "")) {
		return bad("want a number like 5 or 1.5")
	}
	if hasDot && mult == 1 {
		return bad("bytes are whole: want a number without a fraction, or a unit")
	}
	// n = whole.frac × mult exactly, rounded down: (whole·10^k + frac) ×
	// mult / 10^k with k the digits of frac.
	n, _ := new(big.Int).SetString(whole+frac, 10)
	n.Mul(n, big.NewInt(mult))
	if frac != "" {
		n.Quo(n, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(len(frac))), nil))
	}
	switch {
	case !n.IsInt64():
		return bad("too large")
	case n.Sign() == 0:
		return bad("want a size above 0")
	}
	return n.Int64(), nil
}

// formatSize writes n in the largest unit that holds it exactly.
func formatSize(n int64) string {
	for _, u := range []struct {
		name string
		mult int64
	}{{"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10}} {
		if n != 0 && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}

// Flag values. Their Set errors say what is wanted; the flag package (or
// applyEnv) adds the flag or variable and the value.

type stringValue string

func (v *stringValue) String() string     { return string(*v) }
func (v *stringValue) Set(s string) error { *v = stringValue(s); return nil }

type boolValue bool

func (v *boolValue) String() string   { return strconv.FormatBool(bool(*v)) }
func (v *boolValue) IsBoolFlag() bool { return true }
func (v *boolValue) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return errors.New("want true or false")
	}
	*v = boolValue(b)
	return nil
}

type intValue int

func (v *intValue) String() string { return strconv.Itoa(int(*v)) }
func (v *intValue) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return errors.New("want a whole number")
	}
	*v = intValue(n)
	return nil
}

type durationValue time.Duration

func (v *durationValue) String() string { return time.Duration(*v).String() }
func (v *durationValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("want a duration with a unit, like 5s, 500ms or 1m30s")
	}
	*v = durationValue(d)
	return nil
}

type sizeValue int64

func (v *sizeValue) String() string { return formatSize(int64(*v)) }
func (v *sizeValue) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	*v = sizeValue(n)
	return nil
}

// listValue is a repeatable flag. Each Set appends: the raw value, or with
// split its entries separated by commas and white space.
type listValue struct {
	p     *[]string
	split bool
}

func (v *listValue) String() string {
	if v.p == nil {
		return ""
	}
	return strings.Join(*v.p, ",")
}

func (v *listValue) Set(s string) error {
	if !v.split {
		*v.p = append(*v.p, s)
		return nil
	}
	*v.p = append(*v.p, strings.FieldsFunc(s, func(r rune) bool {
		return r == ',' || unicode.IsSpace(r)
	})...)
	return nil
}
