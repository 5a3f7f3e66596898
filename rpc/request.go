package rpc

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// Handler carries out requests for one session. Its methods run on a
// worker goroutine and must be safe there.
type Handler interface {
	// Send queues a control message (JSON, without the index) to the
	// client.
	Send(msg []byte)
	// Connect opens an upstream and replies to id exactly once, with
	// EncodeResult(id, ConnectResult) or EncodeError.
	Connect(id int64, p *ConnectParams)
	// Terminate closes an upstream and replies to id exactly once.
	Terminate(id int64, p *TerminateParams)
}

// ConnectParams are the validated params of connect.
type ConnectParams struct {
	URL *url.URL
	// Host is the URL's host without port or brackets; Port is numeric.
	Host, Port   string
	Header       http.Header
	Subprotocols []string
	// Timeout is the client's dial timeout (0: none given).
	Timeout time.Duration
	// MessageType, when not zero, is the opcode of every message sent to
	// this upstream (ws.OpText or ws.OpBinary).
	MessageType ws.OpCode
}

// TerminateParams are the validated params of terminate.
type TerminateParams struct {
	Index  uint16
	Code   int
	Reason string
}

// Handle decodes one control message and dispatches it to h. Problems
// with the message itself are answered here through h.Send. It runs on a
// worker goroutine and reports, for metrics, the method named (if any)
// and the error code it answered with (0 when it dispatched the request,
// or ignored a client reply).
func Handle(h Handler, msg []byte) (method string, code int) {
	id, method, params, e := decode(msg)
	switch {
	case e != nil && id == nil:
		h.Send(encodeWarn(e))
		return method, e.Code
	case e != nil:
		h.Send(EncodeError(*id, e))
		return method, e.Code
	case method == "":
		return "", 0 // a reply from the client: ignored
	}
	switch method {
	case "connect":
		p, e := parseConnect(params)
		if e != nil {
			h.Send(EncodeError(*id, e))
			return method, e.Code
		}
		h.Connect(*id, p)
	case "terminate":
		p, e := parseTerminate(params)
		if e != nil {
			h.Send(EncodeError(*id, e))
			return method, e.Code
		}
		h.Terminate(*id, p)
	default:
		h.Send(EncodeError(*id, newError(UnknownMethod, "method", "unknown method "+strconv.Quote(method))))
		return "unknown", UnknownMethod
	}
	return method, 0
}

// decode splits a request into its parts. id is nil when no request id
// could be read (the answer is then a warn). method is "" for a client
// reply, which is ignored.
func decode(msg []byte) (id *int64, method string, params json.RawMessage, e *Error) {
	var req struct {
		ID     json.RawMessage `json:"id"`
		Type   json.RawMessage `json:"type"`
		Method json.RawMessage `json:"method"`
		Params json.RawMessage `json:"params"`
	}
	if err := json.Unmarshal(msg, &req); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, "", nil, newError(BadJSON, "", "control message is not a JSON object")
		}
		return scanID(msg), "", nil, newError(BadJSON, "", "control message is not valid JSON: "+err.Error())
	}
	var zero int64
	id = &zero
	if len(req.ID) > 0 && string(req.ID) != "null" {
		n, ok := parseInt(req.ID)
		if !ok {
			return nil, "", nil, newError(InvalidParams, "id", "id must be an integer")
		}
		id = &n
	}
	typ := "method"
	if len(req.Type) > 0 {
		if err := json.Unmarshal(req.Type, &typ); err != nil {
			return id, "", nil, newError(InvalidParams, "type", "type must be a string")
		}
	}
	switch typ {
	case "reply":
		return id, "", nil, nil
	case "method":
	default:
		return id, "", nil, newError(InvalidParams, "type", "type must be \"method\" or \"reply\"")
	}
	if len(req.Method) == 0 {
		return id, "", nil, newError(InvalidParams, "method", "method is missing")
	}
	if err := json.Unmarshal(req.Method, &method); err != nil {
		return id, "", nil, newError(InvalidParams, "method", "method must be a string")
	}
	if method == "" {
		return id, "", nil, newError(UnknownMethod, "method", "method is empty")
	}
	return id, method, req.Params, nil
}

// scanID reads the top-level "id" of a message that is not valid JSON as a
// whole, so that the BadJSON error can still be a reply.
func scanID(msg []byte) *int64 {
	d := json.NewDecoder(bytes.NewReader(msg))
	d.UseNumber()
	if t, err := d.Token(); err != nil || t != json.Delim('{') {
		return nil
	}
	for {
		k, err := d.Token()
		if err != nil {
			return nil
		}
		key, ok := k.(string)
		if !ok {
			return nil
		}
		if key == "id" {
			v, err := d.Token()
			if err != nil {
				return nil
			}
			num, ok := v.(json.Number)
			if !ok {
				return nil
			}
			n, ok := parseInt([]byte(num))
			if !ok {
				return nil
			}
			return &n
		}
		var skip json.RawMessage
		if err := d.Decode(&skip); err != nil {
			return nil
		}
	}
}

// parseInt accepts a JSON number that is an integer in int64 range,
// written with or without a zero fraction or exponent (1, 1.0, 1e3).
func parseInt(raw []byte) (int64, bool) {
	if n, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
		return n, true
	}
	if len(raw) == 0 || raw[0] == '"' || raw[0] == '{' || raw[0] == '[' || raw[0] == 't' || raw[0] == 'f' || raw[0] == 'n' {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || f != math.Trunc(f) || f < math.MinInt64 || f >= math.MaxInt64 {
		return 0, false
	}
	return int64(f), true
}

// fields decodes params as an object of raw values. Absent or null params
// are an empty object.
func fields(params json.RawMessage) (map[string]json.RawMessage, *Error) {
	m := map[string]json.RawMessage{}
	if len(params) == 0 || string(params) == "null" {
		return m, nil
	}
	d := json.NewDecoder(bytes.NewReader(params))
	if err := d.Decode(&m); err != nil {
		return nil, newError(InvalidParams, "params", "params must be an object")
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, newError(InvalidParams, "params", "params must be an object")
	}
	return m, nil
}

// hopHeaders may not be set by a client: they belong to the connection
// wsplice makes, not to the client (RFC 7230 section 6.1, RFC 6455 4.1).
var hopHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Proxy-Connection": true, "Te": true,
	"Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Host": true, "Content-Length": true,
}

func parseConnect(params json.RawMessage) (*ConnectParams, *Error) {
	f, e := fields(params)
	if e != nil {
		return nil, e
	}
	p := &ConnectParams{}
	raw, ok := f["url"]
	if !ok || string(raw) == "null" {
		return nil, newError(InvalidURL, "url", "url is required")
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, newError(InvalidParams, "url", "url must be a string")
	}
	if p.URL, p.Host, p.Port, e = parseURL(s); e != nil {
		return nil, e
	}
	if raw, ok := f["headers"]; ok && string(raw) != "null" {
		var hs map[string]string
		if err := json.Unmarshal(raw, &hs); err != nil {
			return nil, newError(InvalidParams, "headers", "headers must be an object of strings")
		}
		p.Header = make(http.Header, len(hs))
		for k, v := range hs {
			if e := checkHeader(k, v); e != nil {
				return nil, e
			}
			p.Header.Add(k, v)
		}
	}
	if raw, ok := f["subprotocols"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &p.Subprotocols); err != nil {
			return nil, newError(InvalidParams, "subprotocols", "subprotocols must be an array of strings")
		}
		for i, sp := range p.Subprotocols {
			if !isToken(sp) {
				return nil, newError(InvalidParams, "subprotocols."+strconv.Itoa(i), "subprotocol "+strconv.Quote(sp)+" is not an HTTP token")
			}
		}
	}
	if raw, ok := f["timeout"]; ok && string(raw) != "null" {
		var ms float64
		if err := json.Unmarshal(raw, &ms); err != nil || ms < 0 || ms > 1e9 {
			return nil, newError(InvalidParams, "timeout", "timeout must be a non-negative number of milliseconds")
		}
		p.Timeout = time.Duration(ms * float64(time.Millisecond))
	}
	if raw, ok := f["messageType"]; ok && string(raw) != "null" {
		var mt string
		json.Unmarshal(raw, &mt)
		switch mt {
		case "text":
			p.MessageType = ws.OpText
		case "binary":
			p.MessageType = ws.OpBinary
		default:
			return nil, newError(InvalidParams, "messageType", "messageType must be \"text\" or \"binary\"")
		}
	}
	return p, nil
}

// parseURL checks an upstream URL: ws or wss, a host, a numeric port if
// any, no userinfo and no fragment (RFC 6455 section 3).
func parseURL(s string) (u *url.URL, host, port string, e *Error) {
	bad := func(why string) (*url.URL, string, string, *Error) {
		return nil, "", "", newError(InvalidURL, "url", "invalid url "+strconv.Quote(s)+": "+why)
	}
	u, err := url.Parse(s)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return bad(err.Error())
	}
	switch u.Scheme = strings.ToLower(u.Scheme); u.Scheme {
	case "ws", "wss":
	default:
		return bad("scheme must be ws or wss")
	}
	if u.Opaque != "" {
		return bad("want ws://host/path")
	}
	if u.User != nil {
		return bad("userinfo is not allowed")
	}
	if u.Fragment != "" || strings.Contains(s, "#") {
		return bad("fragments are not allowed in WebSocket URLs")
	}
	// One trailing dot (an absolute name) is dropped: "127.0.0.1." is
	// then the IP literal it names, checked and dialed as such.
	host = strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if host == "" {
		return bad("host is missing")
	}
	port = u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "wss" {
			port = "443"
		}
	} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return bad("port must be 1 to 65535")
	}
	return u, host, port, nil
}

func checkHeader(k, v string) *Error {
	path := "headers." + k
	if !isToken(k) {
		return newError(InvalidParams, path, "header name "+strconv.Quote(k)+" is not an HTTP token")
	}
	ck := http.CanonicalHeaderKey(k)
	if hopHeaders[ck] || strings.HasPrefix(ck, "Sec-Websocket-") {
		return newError(InvalidParams, path, "header "+strconv.Quote(k)+" is set by wsplice and may not be given")
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c == '\r' || c == '\n' || c == 0 {
			return newError(InvalidParams, path, "header value may not contain CR, LF or NUL")
		}
	}
	return nil
}

// isToken reports whether s is an HTTP token (RFC 7230 section 3.2.6).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}

func parseTerminate(params json.RawMessage) (*TerminateParams, *Error) {
	f, e := fields(params)
	if e != nil {
		return nil, e
	}
	p := &TerminateParams{Code: 1000}
	raw, ok := f["index"]
	if !ok || string(raw) == "null" {
		return nil, newError(InvalidParams, "index", "index is required")
	}
	n, ok := parseInt(raw)
	if !ok || n < 0 || n > 0xfffe {
		return nil, newError(InvalidParams, "index", "index must be an integer from 0 to 65534")
	}
	p.Index = uint16(n)
	if raw, ok := f["code"]; ok && string(raw) != "null" {
		n, ok := parseInt(raw)
		if !ok || !SendableCloseCode(n) {
			return nil, newError(InvalidParams, "code", "code must be a close code that may be sent (1000-1003, 1007-1014, 3000-4999)")
		}
		p.Code = int(n)
	}
	if raw, ok := f["reason"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &p.Reason); err != nil {
			return nil, newError(InvalidParams, "reason", "reason must be a string")
		}
		if len(p.Reason) > 123 || !utf8.ValidString(p.Reason) {
			return nil, newError(InvalidParams, "reason", "reason must be valid UTF-8 of at most 123 bytes")
		}
	}
	return p, nil
}

// SendableCloseCode reports whether code may appear in a close frame
// (RFC 6455 section 7.4): 1000-1003 and 1007-1014 are defined, 1004-1006
// and 1015 are reserved or may not be sent, 1016-2999 are reserved for
// future protocol use, 3000-4999 are for libraries and applications.
func SendableCloseCode(code int64) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}
