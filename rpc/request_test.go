package rpc

import (
	"encoding/json"
	"sync"
	"testing"

	"github.com/gobwas/ws"
)

// recorder is a Handler that keeps what it was asked to do.
type recorder struct {
	mu        sync.Mutex
	sent      [][]byte
	connects  []*ConnectParams
	terminate []*TerminateParams
	ids       []int64
}

func (r *recorder) Send(msg []byte) {
	r.mu.Lock()
	r.sent = append(r.sent, msg)
	r.mu.Unlock()
}
func (r *recorder) Connect(id int64, p *ConnectParams) {
	r.connects = append(r.connects, p)
	r.ids = append(r.ids, id)
}
func (r *recorder) Terminate(id int64, p *TerminateParams) {
	r.terminate = append(r.terminate, p)
	r.ids = append(r.ids, id)
}

type answer struct {
	ID     *int64 `json:"id"`
	Type   string `json:"type"`
	Method string `json:"method"`
	Error  *Error `json:"error"`
	Params *Error `json:"params"`
}

func handle(t *testing.T, msg string) (*recorder, *answer) {
	t.Helper()
	r := &recorder{}
	Handle(r, []byte(msg))
	if len(r.sent) == 0 {
		return r, nil
	}
	if len(r.sent) > 1 {
		t.Fatalf("%s: %d messages sent, want at most 1", msg, len(r.sent))
	}
	var a answer
	if err := json.Unmarshal(r.sent[0], &a); err != nil {
		t.Fatalf("%s: answer %q is not JSON: %v", msg, r.sent[0], err)
	}
	return r, &a
}

func TestHandleErrors(t *testing.T) {
	cases := []struct {
		name, msg string
		code      int
		path      string
		warn      bool  // answered with a warn (no id)
		id        int64 // for replies
	}{
		{"not JSON", `{nope`, BadJSON, "", true, 0},
		{"truncated with id", `{"id": 7, "type": "method", "method": "connect", "params": {`, BadJSON, "", false, 7},
		{"not an object", `[1,2]`, BadJSON, "", true, 0},
		{"id a string", `{"id": "7", "type": "method", "method": "connect"}`, InvalidParams, "id", true, 0},
		{"id a fraction", `{"id": 1.5, "type": "method", "method": "connect"}`, InvalidParams, "id", true, 0},
		{"unknown method", `{"id": 3, "type": "method", "method": "frobnicate"}`, UnknownMethod, "method", false, 3},
		{"method not a string", `{"id": 3, "type": "method", "method": 5}`, InvalidParams, "method", false, 3},
		{"bad type", `{"id": 3, "type": "event", "method": "connect"}`, InvalidParams, "type", false, 3},
		{"url missing", `{"id": 4, "type": "method", "method": "connect", "params": {}}`, InvalidURL, "url", false, 4},
		{"url a number", `{"id": 4, "method": "connect", "params": {"url": 5}}`, InvalidParams, "url", false, 4},
		{"bad scheme", `{"id": 4, "method": "connect", "params": {"url": "http://10.0.0.1/"}}`, InvalidURL, "url", false, 4},
		{"unparsable url", `{"id": 4, "method": "connect", "params": {"url": "ws://[::1/"}}`, InvalidURL, "url", false, 4},
		{"userinfo", `{"id": 4, "method": "connect", "params": {"url": "ws://u:p@example.com/"}}`, InvalidURL, "url", false, 4},
		{"bad port", `{"id": 4, "method": "connect", "params": {"url": "ws://example.com:99999/"}}`, InvalidURL, "url", false, 4},
		{"fragment", `{"id": 4, "method": "connect", "params": {"url": "ws://example.com/#x"}}`, InvalidURL, "url", false, 4},
		{"params not object", `{"id": 4, "method": "connect", "params": [1]}`, InvalidParams, "params", false, 4},
		{"headers not strings", `{"id": 4, "method": "connect", "params": {"url": "ws://a.com/", "headers": {"a": 1}}}`, InvalidParams, "headers", false, 4},
		{"hop header", `{"id": 4, "method": "connect", "params": {"url": "ws://a.com/", "headers": {"Connection": "x"}}}`, InvalidParams, "headers.Connection", false, 4},
		{"sec header", `{"id": 4, "method": "connect", "params": {"url": "ws://a.com/", "headers": {"sec-websocket-key": "x"}}}`, InvalidParams, "headers.sec-websocket-key", false, 4},
		{"crlf header", `{"id": 4, "method": "connect", "params": {"url": "ws://a.com/", "headers": {"X-A": "a\r\nB: c"}}}`, InvalidParams, "headers.X-A", false, 4},
		{"subprotocols not array", `{"id": 4, "method": "connect", "params": {"url": "ws://a.com/", "subprotocols": "x"}}`, InvalidParams, "subprotocols", false, 4},
		{"subprotocol not token", `{"id": 4, "method": "connect", "params": {"url": "ws://a.com/", "subprotocols": ["a b"]}}`, InvalidParams, "subprotocols.0", false, 4},
		{"negative timeout", `{"id": 4, "method": "connect", "params": {"url": "ws://a.com/", "timeout": -1}}`, InvalidParams, "timeout", false, 4},
		{"bad messageType", `{"id": 4, "method": "connect", "params": {"url": "ws://a.com/", "messageType": "blob"}}`, InvalidParams, "messageType", false, 4},
		{"terminate no index", `{"id": 5, "method": "terminate", "params": {}}`, InvalidParams, "index", false, 5},
		{"terminate control index", `{"id": 5, "method": "terminate", "params": {"index": 65535}}`, InvalidParams, "index", false, 5},
		{"terminate code 1005", `{"id": 5, "method": "terminate", "params": {"index": 0, "code": 1005}}`, InvalidParams, "code", false, 5},
		{"terminate code 999", `{"id": 5, "method": "terminate", "params": {"index": 0, "code": 999}}`, InvalidParams, "code", false, 5},
		{"terminate code 5000", `{"id": 5, "method": "terminate", "params": {"index": 0, "code": 5000}}`, InvalidParams, "code", false, 5},
		{"terminate long reason", `{"id": 5, "method": "terminate", "params": {"index": 0, "reason": "` + string(make([]byte, 0)) + `xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}`, InvalidParams, "reason", false, 5},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, a := handle(t, tc.msg)
			if a == nil {
				t.Fatal("no answer")
			}
			var e *Error
			if tc.warn {
				if a.Type != "method" || a.Method != "warn" || a.Params == nil {
					t.Fatalf("want a warn, got %+v", a)
				}
				e = a.Params
			} else {
				if a.Type != "reply" || a.Error == nil || a.ID == nil || *a.ID != tc.id {
					t.Fatalf("want an error reply to %d, got %+v", tc.id, a)
				}
				e = a.Error
			}
			if e.Code != tc.code || e.Path != tc.path || e.Message == "" {
				t.Fatalf("error %+v, want code %d path %q", e, tc.code, tc.path)
			}
		})
	}
}

func TestHandleDispatch(t *testing.T) {
	r, a := handle(t, `{"id": 9, "type": "method", "method": "connect", "params": {"url": "WS://Example.com:8080/p?q=1", "headers": {"X-Token": "t"}, "subprotocols": ["v1", "v2"], "timeout": 250, "messageType": "text"}}`)
	if a != nil || len(r.connects) != 1 || r.ids[0] != 9 {
		t.Fatalf("connect not dispatched: %+v %+v", a, r)
	}
	p := r.connects[0]
	if p.URL.Scheme != "ws" || p.Host != "example.com" || p.Port != "8080" || p.Header.Get("X-Token") != "t" ||
		len(p.Subprotocols) != 2 || p.Timeout.Milliseconds() != 250 || p.MessageType != ws.OpText {
		t.Fatalf("params %+v", p)
	}
	r, _ = handle(t, `{"method": "connect", "params": {"url": "wss://example.com"}}`)
	if len(r.connects) != 1 || r.ids[0] != 0 || r.connects[0].Port != "443" {
		t.Fatalf("id default or wss port: %+v", r)
	}
	r, _ = handle(t, `{"id": 2, "type": "method", "method": "terminate", "params": {"index": 3, "code": 4000, "reason": "bye"}}`)
	if len(r.terminate) != 1 || *r.terminate[0] != (TerminateParams{Index: 3, Code: 4000, Reason: "bye"}) {
		t.Fatalf("terminate: %+v", r.terminate)
	}
	r, _ = handle(t, `{"id": 2, "method": "terminate", "params": {"index": 3}}`)
	if r.terminate[0].Code != 1000 {
		t.Fatalf("default code %d", r.terminate[0].Code)
	}
	r, a = handle(t, `{"id": 2, "type": "reply", "result": {}}`)
	if a != nil || len(r.connects)+len(r.terminate) != 0 {
		t.Fatal("a client reply must be ignored")
	}
}

func TestEncode(t *testing.T) {
	cases := []struct {
		got  []byte
		want string
	}{
		{EncodeResult(3, ConnectResult{Index: 2, Subprotocol: ""}), `{"id":3,"type":"reply","result":{"index":2,"subprotocol":""}}`},
		{EncodeResult(4, nil), `{"id":4,"type":"reply","result":{}}`},
		{EncodeError(5, &Error{Code: 4006, Message: "no", Path: "url"}), `{"id":5,"type":"reply","error":{"code":4006,"message":"no","path":"url"}}`},
		{EncodeWarn(4004, "x"), `{"id":0,"type":"method","method":"warn","params":{"code":4004,"message":"x"}}`},
		{EncodeDisconnect(7, 4123, "r"), `{"id":0,"type":"method","method":"onSocketDisconnect","params":{"index":7,"code":4123,"message":"r"}}`},
	}
	for _, tc := range cases {
		if string(tc.got) != tc.want {
			t.Errorf("got  %s\nwant %s", tc.got, tc.want)
		}
	}
}

func TestPoolBounded(t *testing.T) {
	p := NewPool(1, 1)
	block := make(chan struct{})
	started := make(chan struct{})
	if !p.Go(func() { close(started); <-block }) {
		t.Fatal("first job refused")
	}
	<-started
	if !p.Go(func() {}) {
		t.Fatal("queued job refused")
	}
	if p.Go(func() {}) {
		t.Fatal("job beyond the queue accepted")
	}
	close(block)
	p.Close()
	if p.Go(func() {}) {
		t.Fatal("job accepted after Close")
	}
}

// FuzzDecode feeds arbitrary control messages to Handle: it must never
// panic, answer at most once, and every answer must be valid JSON.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"id": 1, "type": "method", "method": "connect", "params": {"url": "ws://a.com/"}}`,
		`{"id": 1, "type": "method", "method": "terminate", "params": {"index": 0, "code": 1000}}`,
		`{"id": 1e3, "method": "terminate", "params": {"index": 1.0}}`,
		`{"id": 7, "params": {`, `[]`, `null`, `"x"`, `{"type":"reply"}`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		r := &recorder{}
		Handle(r, msg)
		if len(r.sent) > 1 {
			t.Fatalf("%d answers", len(r.sent))
		}
		for _, s := range r.sent {
			if !json.Valid(s) {
				t.Fatalf("answer %q is not JSON", s)
			}
		}
	})
}
