// Package poller is the reactor: event loops over raw, non-blocking file
// descriptors, one epoll instance each.
//
// A Loop runs on one goroutine. Everything registered with it is touched by
// that goroutine only, so its users need no locks on the per-event path.
// Work from other goroutines enters through Submit: a queue plus an eventfd
// wake-up, merged so that many submissions cost one write(2). Time comes
// from one coarse tick per loop, not a timer per descriptor.
//
// The package knows nothing of WebSockets or sessions: a descriptor is an
// int and a token is what the handler asked to get back with its events.
package poller

import (
	"errors"
	"time"
)

// Events is a set of readiness bits, as epoll reports them.
type Events uint32

// Handler receives a Loop's events, all on the loop's goroutine.
type Handler interface {
	// Event reports readiness of the descriptor registered with token.
	Event(token uint64, ev Events)
	// Turn is called after each batch of events and submitted work. It
	// returns true while the handler has work left (data it chose not to
	// read yet, for fairness); the loop then polls without sleeping.
	Turn() (busy bool)
	// Tick is called about once per tick period with the current time.
	Tick(now time.Time)
}

// ErrClosed is returned by Run after Stop, and by registration calls on a
// loop that has stopped.
var ErrClosed = errors.New("poller: loop closed")
