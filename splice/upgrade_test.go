//go:build linux

package splice

import (
	"bytes"
	"strings"
	"testing"
)

const goodReq = "GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"

func TestUpgrade(t *testing.T) {
	origins, err := NewOriginPolicy([]string{"https://app.example.com", "https://*.example.org"})
	if err != nil {
		t.Fatal(err)
	}
	withNone, _ := NewOriginPolicy([]string{"https://app.example.com", "none"})
	cases := []struct {
		name   string
		req    string
		pol    *OriginPolicy
		status int
	}{
		{"valid", goodReq + "\r\n", nil, 101},
		{"valid with any origin and no policy", goodReq + "Origin: https://evil.test\r\n\r\n", nil, 101},
		{"POST", strings.Replace(goodReq, "GET", "POST", 1) + "\r\n", nil, 400},
		{"no key", strings.Replace(goodReq, "Sec-WebSocket-Key", "X-Key", 1) + "\r\n", nil, 400},
		{"HTTP/1.0", strings.Replace(goodReq, "HTTP/1.1", "HTTP/1.0", 1) + "\r\n", nil, 400},
		{"plain GET", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", nil, 400},
		{"allowed origin", goodReq + "Origin: https://APP.example.com\r\n\r\n", origins, 101},
		{"wildcard origin", goodReq + "Origin: https://a.b.example.org\r\n\r\n", origins, 101},
		{"wildcard apex refused", goodReq + "Origin: https://example.org\r\n\r\n", origins, 403},
		{"other origin", goodReq + "Origin: https://evil.test\r\n\r\n", origins, 403},
		{"scheme matters", goodReq + "Origin: http://app.example.com\r\n\r\n", origins, 403},
		{"absent origin refused", goodReq + "\r\n", origins, 403},
		{"absent origin with none", goodReq + "\r\n", withNone, 101},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, status, reason := upgrade([]byte(tc.req), tc.pol)
			if status != tc.status {
				t.Fatalf("status %d (%s), want %d", status, reason, tc.status)
			}
			if status == 101 && !bytes.HasPrefix(resp, []byte("HTTP/1.1 101 ")) {
				t.Fatalf("response %q", resp)
			}
			if status != 101 && (reason == "" || strings.ContainsAny(reason, "\r\n")) {
				t.Fatalf("reason %q must be one line", reason)
			}
		})
	}
}

func TestNewOriginPolicyRejects(t *testing.T) {
	for _, bad := range []string{"app.example.com", "https://a.*.com", "https://*", "ftp://x"} {
		if _, err := NewOriginPolicy([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// FuzzHandshake drives the upgrade request parser with arbitrary bytes:
// it never panics, answers 101 or a refusal with a one-line reason, and
// never echoes a request header back.
func FuzzHandshake(f *testing.F) {
	f.Add([]byte(goodReq + "\r\n"))
	f.Add([]byte(goodReq + "Origin: https://a.example.com\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte("\r\n\r\n"))
	f.Add([]byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n" + goodReq + "\r\n"))
	pol, _ := NewOriginPolicy([]string{"https://a.example.com"})
	f.Fuzz(func(t *testing.T, req []byte) {
		for _, p := range []*OriginPolicy{nil, pol} {
			resp, status, reason := upgrade(req, p)
			switch status {
			case 101:
				if !bytes.HasPrefix(resp, []byte("HTTP/1.1 101 ")) {
					t.Fatalf("101 with response %q", resp)
				}
			case 400, 403:
				if reason == "" || strings.ContainsAny(reason, "\r\n") {
					t.Fatalf("reason %q", reason)
				}
			default:
				t.Fatalf("status %d", status)
			}
			if bytes.Contains(resp, []byte("X-Marker-7f3a")) {
				t.Fatal("request header echoed")
			}
		}
	})
}
