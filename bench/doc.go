// Package bench is wsplice's benchmark harness. It measures a server from
// the outside, through the wire protocol only (PROTOCOL.md): it never
// imports another wsplice package.
//
// One run drives the same load against several targets:
//
//   - ours: the wsplice binary, started and watched by the harness, one
//     fresh process per measured cell so that peak RSS and CPU belong to
//     that cell;
//   - direct: the clients talk straight to the upstream servers with no
//     multiplexer in between, the ceiling on this machine;
//   - external: any server given by URL that speaks the protocol;
//   - relay: the direct path through a bare TCP relay process (RelayMain),
//     the floor under any proxy's cost on this machine.
//
// Three modes exist. Throughput: pipelined senders write many pre-encoded
// masked frames per write call and upstream sinks count payload bytes
// (goodput: frame headers and the 2-byte index are not counted). Latency:
// real round trips through an echo upstream, with a send timestamp carried
// in the payload and a fixed number of messages in flight per client.
// Sessions: many idle sessions with one upstream each, to read the
// server's memory and file descriptors per session.
//
// All sockets are on loopback. Every loop in the harness is bounded in
// count and in time.
package bench
