//go:build !linux

// Command wsplice is the WebSocket multiplexer. It is built on epoll and
// runs on Linux only; elsewhere it says so and exits.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "wsplice: runs on Linux only (its event loops use epoll)")
	os.Exit(1)
}
