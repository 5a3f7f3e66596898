// Package rpc is the control channel of a session (index 0xffff, PROTOCOL.md
// section 3): it decodes requests with strict types, validates their
// params, dispatches them to a Handler on a small worker pool, and encodes
// replies and wsplice's own calls.
//
// rpc never touches a file descriptor: the Handler (the splice engine)
// dials and owns connections, and carries encoded messages to the client.
package rpc

import (
	"encoding/json"
	"strconv"
)

// Error codes of PROTOCOL.md section 3.
const (
	BadJSON            = 4000
	FrameTooShort      = 4001
	FrameTooLong       = 4002
	UnknownMethod      = 4003
	UnknownConnection  = 4004
	InvalidURL         = 4005
	InvalidHostname    = 4006
	DialError          = 4007
	TooManyConnections = 4008
	InvalidParams      = 4009
)

// Error is the error object of a reply, or the params of a warn.
type Error struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	// Path names the offending field, when there is one.
	Path string `json:"path,omitempty"`
}

func (e *Error) Error() string {
	s := "rpc: " + strconv.Itoa(e.Code) + " " + e.Message
	if e.Path != "" {
		s += " (" + e.Path + ")"
	}
	return s
}

// newError keeps call sites short.
func newError(code int, path, msg string) *Error {
	return &Error{Code: code, Message: msg, Path: path}
}

type reply struct {
	ID     int64  `json:"id"`
	Type   string `json:"type"`
	Result any    `json:"result,omitempty"`
	Error  *Error `json:"error,omitempty"`
}

type call struct {
	ID     int64  `json:"id"`
	Type   string `json:"type"`
	Method string `json:"method"`
	Params any    `json:"params"`
}

func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own fixed shapes are marshalled here.
		panic("rpc: marshal: " + err.Error())
	}
	return b
}

// ConnectResult is the result of a successful connect.
type ConnectResult struct {
	Index       int    `json:"index"`
	Subprotocol string `json:"subprotocol"`
}

// EncodeResult returns the reply to request id carrying result.
func EncodeResult(id int64, result any) []byte {
	if result == nil {
		result = struct{}{}
	}
	return mustMarshal(reply{ID: id, Type: "reply", Result: result})
}

// EncodeError returns the error reply to request id.
func EncodeError(id int64, e *Error) []byte {
	return mustMarshal(reply{ID: id, Type: "reply", Error: e})
}

// EncodeWarn returns a warn call for a problem that belongs to no request.
func EncodeWarn(code int, msg string) []byte {
	return encodeWarn(&Error{Code: code, Message: msg})
}

func encodeWarn(e *Error) []byte {
	return mustMarshal(call{Type: "method", Method: "warn", Params: e})
}

// EncodeDisconnect returns the onSocketDisconnect call for an upstream that
// went away on its own.
func EncodeDisconnect(index uint16, code int, msg string) []byte {
	return mustMarshal(call{Type: "method", Method: "onSocketDisconnect", Params: struct {
		Index   int    `json:"index"`
		Code    int    `json:"code"`
		Message string `json:"message"`
	}{int(index), code, msg}})
}
