//go:build linux

package splice

import (
	"context"
	"fmt"
)

// Ping reports whether every event loop is turning: each must run a no-op
// submitted to it before ctx is done. A loop stuck in a handler, or
// spinning without draining its queue, fails it. It is for a service
// manager's watchdog (cmd/wsplice pings systemd only while Ping passes);
// it costs one queued function per loop. After shutdown it returns
// ErrServerClosed.
func (s *Server) Ping(ctx context.Context) error {
	done := make(chan struct{}, len(s.engs))
	for _, e := range s.engs {
		if !e.loop.Submit(func() { done <- struct{}{} }) {
			return ErrServerClosed
		}
	}
	for range s.engs {
		select {
		case <-done:
		case <-ctx.Done():
			return fmt.Errorf("splice: event loops not answering: %w", ctx.Err())
		}
	}
	return nil
}
