//go:build linux

package splice

import (
	"bytes"
	"errors"
	"io"
	"strings"

	"github.com/gobwas/ws"
)

// OriginPolicy decides which browser origins may open a session
// (--allowed-origins). Entries are origins as browsers send them
// ("https://app.example.com", scheme and host, port when not the
// default), compared case-insensitively; "https://*.example.com" admits
// the subdomains of example.com. The special entry "none" admits requests
// without an Origin header (non-browser clients); with a non-empty list
// and no "none", such requests are refused. An empty policy admits all.
type OriginPolicy struct {
	exact    map[string]bool
	suffixes []string // "https://" + ".example.com" for wildcards
	none     bool
}

// NewOriginPolicy builds a policy from --allowed-origins entries.
func NewOriginPolicy(entries []string) (*OriginPolicy, error) {
	p := &OriginPolicy{exact: map[string]bool{}}
	for _, raw := range entries {
		o := strings.ToLower(strings.TrimSpace(raw))
		switch {
		case o == "":
			continue
		case o == "none":
			p.none = true
		case !strings.HasPrefix(o, "http://") && !strings.HasPrefix(o, "https://"):
			return nil, errors.New("splice: allowed origin " + raw + ": want http(s)://host[:port], https://*.domain or none")
		case strings.Contains(o, "*"):
			scheme, host, _ := strings.Cut(o, "://")
			if !strings.HasPrefix(host, "*.") || strings.Count(host, "*") != 1 || len(host) < 4 {
				return nil, errors.New("splice: allowed origin " + raw + ": a wildcard must be the first label, as in https://*.example.com")
			}
			p.suffixes = append(p.suffixes, scheme+"://"+host[1:])
		default:
			p.exact[strings.TrimSuffix(o, "/")] = true
		}
	}
	return p, nil
}

// empty reports whether p admits everything.
func (p *OriginPolicy) empty() bool {
	return p == nil || (len(p.exact) == 0 && len(p.suffixes) == 0 && !p.none)
}

// allows reports whether a request with this Origin header value may
// upgrade.
func (p *OriginPolicy) allows(origin []byte) bool {
	o := strings.ToLower(string(origin))
	if p.exact[o] {
		return true
	}
	for _, s := range p.suffixes {
		scheme, dot, _ := strings.Cut(s, "://")
		if rest, ok := strings.CutPrefix(o, scheme+"://"); ok && strings.HasSuffix(rest, dot) && len(rest) > len(dot) {
			return true
		}
	}
	return false
}

var errOrigin = errors.New("origin not allowed")

// upgrade answers one complete HTTP upgrade request (RFC 6455 section
// 4.2) with gobwas/ws over memory. It returns the 101 response, or the
// status and a one-line reason to refuse with. Nothing of the request is
// ever put in a response. It does no I/O, so a fuzzer can drive it.
func upgrade(req []byte, origins *OriginPolicy) (resp []byte, status int, reason string) {
	var out bytes.Buffer
	sawOrigin := false
	u := ws.Upgrader{}
	if !origins.empty() {
		u.OnHeader = func(key, value []byte) error {
			if !strings.EqualFold(string(key), "Origin") {
				return nil
			}
			sawOrigin = true
			if !origins.allows(value) {
				return errOrigin
			}
			return nil
		}
	}
	_, err := u.Upgrade(reqRW{bytes.NewReader(req), &out})
	switch {
	case errors.Is(err, errOrigin):
		return nil, 403, "origin not allowed"
	case err != nil:
		return nil, 400, handshakeReason(err)
	case !origins.empty() && !sawOrigin && !origins.none:
		return nil, 403, "an Origin header is required"
	}
	return out.Bytes(), 101, ""
}

// reqRW hands a buffered request to gobwas/ws and collects its response.
type reqRW struct {
	r   *bytes.Reader
	out *bytes.Buffer
}

func (rw reqRW) Read(p []byte) (int, error)  { return rw.r.Read(p) }
func (rw reqRW) Write(p []byte) (int, error) { return rw.out.Write(p) }

// handshakeReason turns a gobwas/ws handshake error into one line.
func handshakeReason(err error) string {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "incomplete request"
	}
	return "not a WebSocket upgrade: " + err.Error()
}
