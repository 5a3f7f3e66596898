//go:build linux

package main

import (
	"bytes"
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want int64 // 0: an error
	}{
		{"1", 1},
		{"1048576", 1048576},
		{"007", 7},
		{"512B", 512},
		{"512KB", 512 << 10},
		{"512kb", 512 << 10},
		{"512Kb", 512 << 10},
		{"512K", 512 << 10},
		{"512KiB", 512 << 10},
		{"512kib", 512 << 10},
		{"5MB", 5 << 20},
		{"5M", 5 << 20},
		{"5MiB", 5 << 20},
		{"5mb", 5 << 20},
		{"1GB", 1 << 30},
		{"1G", 1 << 30},
		{"1GiB", 1 << 30},
		{"5 MB", 5 << 20},
		{" 5MB ", 5 << 20},
		{"1.5MB", 3 << 19},
		{"1.5KB", 1536},
		{"0.5K", 512},
		{"1.0009765625KB", 1025},
		{"1.0009765624KB", 1024}, // rounds down
		{"0.001KB", 1},           // 1.024 bytes
		{"1.25gb", 5 << 28},
		{"9223372036854775807", 1<<63 - 1},
		{"8589934591GB", 8589934591 << 30},
		{"8589934591.999999999GB", 8589934591<<30 + 1073741822}, // .999999999 × 2^30 = 1073741822.93

		{"", 0},
		{"   ", 0},
		{"0", 0},
		{"0KB", 0},
		{"0.0001KB", 0}, // rounds down to 0
		{"-1", 0},
		{"-5MB", 0},
		{"+5MB", 0},
		{"5XB", 0},
		{"5TB", 0},
		{"MB", 0},
		{"5MBB", 0},
		{"5 M B", 0},
		{"1.5", 0}, // bytes are whole
		{"1.5B", 0},
		{".5MB", 0},
		{"5.MB", 0},
		{"1.2.3MB", 0},
		{"1e6", 0},
		{"0x10", 0},
		{"1_000", 0},
		{"5MB5", 0},
		{"9223372036854775808", 0},
		{"8589934592GB", 0},
		{"99999999999999999999999999999999999999GB", 0},
		{strings.Repeat("0", 100) + "1", 0},
		{"٣MB", 0}, // non-ASCII digit
	}
	for _, tt := range tests {
		got, err := parseSize(tt.in)
		switch {
		case tt.want == 0 && err == nil:
			t.Errorf("parseSize(%q) = %d, want an error", tt.in, got)
		case tt.want == 0 && !strings.Contains(err.Error(), `bad size "`):
			t.Errorf("parseSize(%q) error %q, want it to start with bad size", tt.in, err)
		case tt.want != 0 && (err != nil || got != tt.want):
			t.Errorf("parseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestParseSizeMessage(t *testing.T) {
	t.Parallel()
	_, err := parseSize("5XB")
	const want = `bad size "5XB": want bytes or a number with KB, MB or GB`
	if err == nil || err.Error() != want {
		t.Errorf("parseSize(5XB) error %v, want %s", err, want)
	}
}

func TestFormatSize(t *testing.T) {
	t.Parallel()
	for n, want := range map[int64]string{1: "1", 1023: "1023", 1024: "1KB", 1536: "1536", 5 << 20: "5MB", 3 << 30: "3GB", 1<<63 - 1: "9223372036854775807"} {
		if got := formatSize(n); got != want {
			t.Errorf("formatSize(%d) = %q, want %q", n, got, want)
		}
		if back, err := parseSize(formatSize(n)); err != nil || back != n {
			t.Errorf("parseSize(formatSize(%d)) = %d, %v", n, back, err)
		}
	}
}

func TestParseOptionsDefaults(t *testing.T) {
	t.Parallel()
	o := mustParse(t, nil, []string{"HOME=/root", "PATH=/bin", "WSPLICEX=1", "wsplice_listen=x"})
	want := &options{
		Listen:                 "127.0.0.1:3000",
		Network:                "tcp",
		FrameSizeLimit:         5 * 1024 * 1024,
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
	if !reflect.DeepEqual(o, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", o, want)
	}
	if err := o.validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
}

// everyFlag sets every flag to a value other than its default; wantEvery
// is the result.
var everyFlag = map[string]string{
	"listen":                    "0.0.0.0:8080",
	"network":                   "tcp6",
	"allowed-hostnames":         "a.example, *.b.example",
	"tls-cert":                  "cert.pem",
	"tls-key":                   "key.pem",
	"tls-ca":                    "ca.pem",
	"frame-size-limit":          "512KB",
	"write-timeout":             "1s",
	"read-timeout":              "2s",
	"dial-timeout":              "3s",
	"pprof-address":             "127.0.0.1:6060",
	"allow-private-upstreams":   "true",
	"upstream-ca":               "up.pem",
	"max-sessions":              "100",
	"max-upstreams-per-session": "16",
	"max-sessions-per-ip":       "4",
	"ping-interval":             "10s",
	"idle-timeout":              "1m",
	"allowed-origins":           "https://a.example, https://b.example",
	"metrics-address":           ":9090",
	"shutdown-timeout":          "500ms",
	"log-format":                "json",
	"log-level":                 "debug",
	"proxy-protocol":            "true",
	"reuseport":                 "true",
	"upstream-source-addrs":     "10.0.0.1 10.0.0.2",
}

var wantEvery = &options{
	Listen:                 "0.0.0.0:8080",
	Network:                "tcp6",
	AllowedHostnames:       []string{"a.example, *.b.example"},
	TLSCert:                "cert.pem",
	TLSKey:                 "key.pem",
	TLSCA:                  "ca.pem",
	FrameSizeLimit:         512 << 10,
	WriteTimeout:           time.Second,
	ReadTimeout:            2 * time.Second,
	DialTimeout:            3 * time.Second,
	PprofAddress:           "127.0.0.1:6060",
	AllowPrivateUpstreams:  true,
	UpstreamCA:             "up.pem",
	MaxSessions:            100,
	MaxUpstreamsPerSession: 16,
	MaxSessionsPerIP:       4,
	PingInterval:           10 * time.Second,
	IdleTimeout:            time.Minute,
	AllowedOrigins:         []string{"https://a.example", "https://b.example"},
	MetricsAddress:         ":9090",
	ShutdownTimeout:        500 * time.Millisecond,
	LogFormat:              "json",
	LogLevel:               "debug",
	ProxyProtocol:          true,
	Reuseport:              true,
	UpstreamSourceAddrs:    []string{"10.0.0.1", "10.0.0.2"},
}

func TestParseOptionsEveryFlag(t *testing.T) {
	t.Parallel()
	if n := len(defaultOptions().optionFlags()); n != len(everyFlag) {
		t.Fatalf("%d flags, everyFlag has %d", n, len(everyFlag))
	}
	var args, env []string
	for name, value := range everyFlag {
		args = append(args, "--"+name+"="+value)
		env = append(env, envName(name)+"="+value)
	}
	t.Run("flags", func(t *testing.T) {
		t.Parallel()
		if o := mustParse(t, args, nil); !reflect.DeepEqual(o, wantEvery) {
			t.Errorf("\n got %+v\nwant %+v", o, wantEvery)
		}
	})
	t.Run("env", func(t *testing.T) {
		t.Parallel()
		if o := mustParse(t, nil, env); !reflect.DeepEqual(o, wantEvery) {
			t.Errorf("\n got %+v\nwant %+v", o, wantEvery)
		}
	})
}

func TestParseOptionsPrecedence(t *testing.T) {
	t.Parallel()
	env := []string{
		"WSPLICE_LISTEN=:1111",
		"WSPLICE_WRITE_TIMEOUT=7s",
		"WSPLICE_ALLOWED_HOSTNAMES=env.example, env2.example",
		"WSPLICE_ALLOWED_ORIGINS=https://env.example",
		"WSPLICE_UPSTREAM_SOURCE_ADDRS=10.0.0.9",
		"WSPLICE_REUSEPORT=true",
		"WSPLICE_FRAME_SIZE_LIMIT=1MB",
	}
	tests := []struct {
		name  string
		args  []string
		check func(*options) bool
	}{
		{"env alone", nil, func(o *options) bool {
			return o.Listen == ":1111" && o.WriteTimeout == 7*time.Second && o.Reuseport && o.FrameSizeLimit == 1<<20 &&
				reflect.DeepEqual(o.AllowedHostnames, []string{"env.example, env2.example"}) &&
				reflect.DeepEqual(o.AllowedOrigins, []string{"https://env.example"}) &&
				reflect.DeepEqual(o.UpstreamSourceAddrs, []string{"10.0.0.9"})
		}},
		{"flag replaces env", []string{"--listen", ":2222", "-write-timeout=1s", "--reuseport=false"}, func(o *options) bool {
			return o.Listen == ":2222" && o.WriteTimeout == time.Second && !o.Reuseport && o.FrameSizeLimit == 1<<20
		}},
		{"list flag replaces env list", []string{"--allowed-hostnames", "a.example", "--allowed-hostnames=b.example c.example"}, func(o *options) bool {
			return reflect.DeepEqual(o.AllowedHostnames, []string{"a.example", "b.example c.example"}) && o.Listen == ":1111"
		}},
		{"split lists", []string{"--allowed-origins", "https://a.example,https://b.example", "--allowed-origins= https://c.example ", "--upstream-source-addrs=10.0.0.1,,10.0.0.2\t10.0.0.3"}, func(o *options) bool {
			return reflect.DeepEqual(o.AllowedOrigins, []string{"https://a.example", "https://b.example", "https://c.example"}) &&
				reflect.DeepEqual(o.UpstreamSourceAddrs, []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"})
		}},
		{"list flag given empty still replaces", []string{"--allowed-hostnames="}, func(o *options) bool {
			return reflect.DeepEqual(o.AllowedHostnames, []string{""})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if o := mustParse(t, tt.args, env); !tt.check(o) {
				t.Errorf("parseOptions(%q) = %+v", tt.args, o)
			}
		})
	}
}

func TestParseOptionsEnvEdges(t *testing.T) {
	t.Parallel()
	// An empty variable is unset; the first of duplicates wins.
	o := mustParse(t, nil, []string{"WSPLICE_LISTEN=", "WSPLICE_NETWORK=tcp4", "WSPLICE_NETWORK=tcp6", "WSPLICE_FRAME_SIZE_LIMIT="})
	if o.Listen != "127.0.0.1:3000" || o.Network != "tcp4" || o.FrameSizeLimit != 5<<20 {
		t.Errorf("got %+v", o)
	}
	// A variable replaced by its flag is not parsed.
	o = mustParse(t, []string{"--write-timeout=2s"}, []string{"WSPLICE_WRITE_TIMEOUT=garbage"})
	if o.WriteTimeout != 2*time.Second {
		t.Errorf("write timeout %v", o.WriteTimeout)
	}
}

func TestParseOptionsErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  []string
		want []string // parts of the message
	}{
		{"unknown flag", []string{"--no-such-flag"}, nil, []string{"no-such-flag", "--help"}},
		{"positional", []string{"--listen", ":1", "extra"}, nil, []string{`unexpected argument "extra"`}},
		{"after --", []string{"--", "x"}, nil, []string{`unexpected argument "x"`}},
		{"missing value", []string{"--listen"}, nil, []string{"listen"}},
		{"duration without unit", []string{"--write-timeout=5"}, nil, []string{`"5"`, "write-timeout", "with a unit"}},
		{"bad int", []string{"--max-sessions=lots"}, nil, []string{"max-sessions", "whole number"}},
		{"bad bool", []string{"--reuseport=maybe"}, nil, []string{"reuseport", "true or false"}},
		{"bad size", []string{"--frame-size-limit=5XB"}, nil, []string{"frame-size-limit", `bad size "5XB"`}},
		{"bad env value", nil, []string{"WSPLICE_FRAME_SIZE_LIMIT=5XB"}, []string{"WSPLICE_FRAME_SIZE_LIMIT", `bad size "5XB"`}},
		{"bad env duration", nil, []string{"WSPLICE_IDLE_TIMEOUT=90"}, []string{"WSPLICE_IDLE_TIMEOUT", `"90"`, "with a unit"}},
		{"bad env bool", nil, []string{"WSPLICE_REUSEPORT=yes please"}, []string{"WSPLICE_REUSEPORT", "true or false"}},
		{"unknown env", nil, []string{"WSPLICE_FRAM_SIZE_LIMIT=5MB"}, []string{"unknown environment variable WSPLICE_FRAM_SIZE_LIMIT"}},
		{"unknown envs", nil, []string{"WSPLICE_A=1", "WSPLICE_LISTEN=:1", "WSPLICE_B=2"}, []string{"WSPLICE_A, WSPLICE_B"}},
		{"env not canonical", nil, []string{"WSPLICE_allowed_hostnames=a"}, []string{"WSPLICE_allowed_hostnames"}},
		{"env with dash", nil, []string{"WSPLICE_ALLOWED-HOSTNAMES=a"}, []string{"WSPLICE_ALLOWED-HOSTNAMES"}},
		{"bare prefix", nil, []string{"WSPLICE_=1"}, []string{"WSPLICE_"}},
		{"unknown env even when overridden", []string{"--listen=:1"}, []string{"WSPLICE_LISTN=:2"}, []string{"WSPLICE_LISTN"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var stderr bytes.Buffer
			o, err := parseOptions(tt.args, tt.env, &stderr)
			if err == nil {
				t.Fatalf("parseOptions(%q, %q) = %+v, want an error", tt.args, tt.env, o)
			}
			if errors.Is(err, flag.ErrHelp) {
				t.Fatalf("got ErrHelp")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if stderr.Len() != 0 {
				t.Errorf("wrote %q to stderr; errors are returned, not printed", stderr.String())
			}
		})
	}
}

func TestParseOptionsHelp(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"--help", "-h", "-help", "--h"} {
		t.Run(arg, func(t *testing.T) {
			t.Parallel()
			var stderr bytes.Buffer
			// Help wins over a bad environment.
			o, err := parseOptions([]string{"--listen=:1", arg}, []string{"WSPLICE_TYPO=1"}, &stderr)
			if !errors.Is(err, flag.ErrHelp) || o != nil {
				t.Fatalf("parseOptions(%s) = %v, %v; want flag.ErrHelp", arg, o, err)
			}
			out := stderr.String()
			for _, d := range defaultOptions().optionFlags() {
				if !strings.Contains(out, "--"+d.name) || !strings.Contains(out, envName(d.name)) {
					t.Errorf("usage does not show --%s and %s", d.name, envName(d.name))
				}
			}
			for _, want := range []string{"Usage: wsplice", "(default 127.0.0.1:3000)", "(default 5MB)", "(default 10s)", "(default 1024)", "WSPLICE_ plus the flag name"} {
				if !strings.Contains(out, want) {
					t.Errorf("usage does not say %q:\n%s", want, out)
				}
			}
		})
	}
}

func TestOptionsValidate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pem := filepath.Join(dir, "x.pem")
	if err := os.WriteFile(pem, []byte("-----BEGIN CERTIFICATE-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")

	tests := []struct {
		name   string
		change func(*options)
		want   string // part of the error; "" for none
	}{
		{"defaults", func(*options) {}, ""},
		{"tls", func(o *options) { o.TLSCert, o.TLSKey = pem, pem }, ""},
		{"mutual tls", func(o *options) { o.TLSCert, o.TLSKey, o.TLSCA = pem, pem, pem }, ""},
		{"cert without key", func(o *options) { o.TLSCert = pem }, "--tls-cert needs --tls-key"},
		{"key without cert", func(o *options) { o.TLSKey = pem }, "--tls-key needs --tls-cert"},
		{"ca without tls", func(o *options) { o.TLSCA = pem }, "--tls-ca needs"},
		{"missing cert", func(o *options) { o.TLSCert, o.TLSKey = missing, pem }, "--tls-cert: open " + missing},
		{"missing key", func(o *options) { o.TLSCert, o.TLSKey = pem, missing }, "--tls-key: open"},
		{"missing ca", func(o *options) { o.TLSCert, o.TLSKey, o.TLSCA = pem, pem, missing }, "--tls-ca: open"},
		{"directory", func(o *options) { o.UpstreamCA = dir }, "--upstream-ca: read"},
		{"missing upstream ca", func(o *options) { o.UpstreamCA = missing }, "--upstream-ca: open"},
		{"upstream ca", func(o *options) { o.UpstreamCA = pem }, ""},
		{"tcp4", func(o *options) { o.Network = "tcp4" }, ""},
		{"tcp6", func(o *options) { o.Network = "tcp6" }, ""},
		{"udp", func(o *options) { o.Network = "udp" }, `--network "udp"`},
		{"listen any", func(o *options) { o.Listen = ":0" }, ""},
		{"listen ipv6", func(o *options) { o.Listen = "[::1]:3000" }, ""},
		{"listen no port", func(o *options) { o.Listen = "127.0.0.1" }, "--listen"},
		{"listen bad port", func(o *options) { o.Listen = "127.0.0.1:70000" }, "bad port"},
		{"listen named port", func(o *options) { o.Listen = ":http" }, "bad port"},
		{"listen empty", func(o *options) { o.Listen = "" }, "--listen"},
		{"pprof", func(o *options) { o.PprofAddress = "localhost:6060" }, ""},
		{"bad pprof", func(o *options) { o.PprofAddress = "6060" }, "--pprof-address"},
		{"bad metrics", func(o *options) { o.MetricsAddress = "localhost:" }, "--metrics-address"},
		{"zero size", func(o *options) { o.FrameSizeLimit = 0 }, "--frame-size-limit"},
		{"negative size", func(o *options) { o.FrameSizeLimit = -1 }, "--frame-size-limit"},
		{"zero write timeout", func(o *options) { o.WriteTimeout = 0 }, "--write-timeout"},
		{"zero read timeout", func(o *options) { o.ReadTimeout = 0 }, "--read-timeout"},
		{"zero dial timeout", func(o *options) { o.DialTimeout = 0 }, "--dial-timeout"},
		{"negative ping", func(o *options) { o.PingInterval = -time.Second }, "--ping-interval"},
		{"negative idle", func(o *options) { o.IdleTimeout = -time.Second }, "--idle-timeout"},
		{"negative shutdown", func(o *options) { o.ShutdownTimeout = -time.Second }, "--shutdown-timeout"},
		{"pings off", func(o *options) { o.PingInterval = 0 }, ""},
		{"idle off", func(o *options) { o.IdleTimeout = 0 }, ""},
		{"no drain", func(o *options) { o.ShutdownTimeout = 0 }, ""},
		{"idle not above ping", func(o *options) { o.IdleTimeout = o.PingInterval }, "--idle-timeout"},
		{"negative max sessions", func(o *options) { o.MaxSessions = -1 }, "--max-sessions"},
		{"negative per ip", func(o *options) { o.MaxSessionsPerIP = -1 }, "--max-sessions-per-ip"},
		{"upstreams 0", func(o *options) { o.MaxUpstreamsPerSession = 0 }, "--max-upstreams-per-session"},
		{"upstreams 1", func(o *options) { o.MaxUpstreamsPerSession = 1 }, ""},
		{"upstreams 65535", func(o *options) { o.MaxUpstreamsPerSession = 65535 }, ""},
		{"upstreams 65536", func(o *options) { o.MaxUpstreamsPerSession = 65536 }, "--max-upstreams-per-session"},
		{"json", func(o *options) { o.LogFormat = "json" }, ""},
		{"bad format", func(o *options) { o.LogFormat = "xml" }, "--log-format"},
		{"levels", func(o *options) { o.LogLevel = "warn" }, ""},
		{"bad level", func(o *options) { o.LogLevel = "trace" }, "--log-level"},
		{"hostnames", func(o *options) { o.AllowedHostnames = []string{"a.example, *.b.example [::1]"} }, ""},
		{"bad hostname", func(o *options) { o.AllowedHostnames = []string{"a.example:443"} }, `--allowed-hostnames: rpc: bad --allowed-hostnames entry "a.example:443"`},
		{"source addrs", func(o *options) { o.UpstreamSourceAddrs = []string{"10.0.0.1", "::1"} }, ""},
		{"bad source addr", func(o *options) { o.UpstreamSourceAddrs = []string{"eth0"} }, `--upstream-source-addrs "eth0"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o := defaultOptions()
			tt.change(o)
			err := o.validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("validate() = %v, want nil", err)
			case tt.want != "" && err == nil:
				t.Errorf("validate() = nil, want an error saying %q", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Errorf("validate() = %q, want it to say %q", err, tt.want)
			}
		})
	}
}

func TestOptionsValidateFileErrorWraps(t *testing.T) {
	t.Parallel()
	o := defaultOptions()
	o.UpstreamCA = filepath.Join(t.TempDir(), "missing.pem")
	if err := o.validate(); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("validate() = %v, want it to wrap fs.ErrNotExist", err)
	}
}

// mustParse is parseOptions that fails t on an error or on output.
func mustParse(t *testing.T, args, env []string) *options {
	t.Helper()
	var stderr bytes.Buffer
	o, err := parseOptions(args, env, &stderr)
	if err != nil {
		t.Fatalf("parseOptions(%q, %q): %v", args, env, err)
	}
	if stderr.Len() != 0 {
		t.Errorf("parseOptions wrote %q", stderr.String())
	}
	return o
}
