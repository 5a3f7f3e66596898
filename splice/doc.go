// Package splice is the forwarding engine of wsplice: sessions, their
// upstreams, and the frames between them, run on the poller's event
// loops (PROTOCOL.md is the contract, README.md's Architecture section
// the design).
//
// A session and all its upstreams live on one loop and are touched only
// by its goroutine. Client frames are forwarded to upstreams with their
// header rewritten in place (the payload stays masked, the key rotated by
// the 2-byte index); upstream frames go to the client behind a new header
// and the index. Payloads are streamed as they arrive, never buffered
// whole. The control channel is decoded by package rpc on a worker pool.
//
// The engine is built on epoll and runs on Linux only; on other systems
// this package holds nothing but this documentation.
package splice
