//go:build linux

package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestNodeInterop runs testdata/node/interop.mjs: Node's ws library as the
// client and as the upstream, an implementation independent of both the
// server's (gobwas/ws) and the other tests' (gorilla), against the real
// binary. `make test` installs the module (npm ci); without node the test
// is skipped, and under CI that is a failure.
func TestNodeInterop(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("node is not installed: CI must run the interop test")
		}
		t.Skip("node is not installed")
	}
	dir := filepath.Join("testdata", "node")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "ws")); err != nil {
		t.Fatalf("%s/node_modules/ws is missing: run `npm ci --prefix %s` (make test does)", dir, dir)
	}
	p := binStart(t, nil, "--allow-private-upstreams")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, node, filepath.Join(dir, "interop.mjs"), "ws://"+p.addr+"/").CombinedOutput()
	if err != nil {
		t.Fatalf("node interop: %v\n%s\nwsplice log:\n%s", err, out, p.log())
	}
	t.Logf("%s", out)
}
