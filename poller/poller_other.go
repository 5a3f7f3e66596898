//go:build !linux

package poller

import (
	"errors"
	"time"
)

// Readiness bits; on this platform they only keep callers compiling.
const (
	In Events = 1 << iota
	Out
	RDHup
	Err
	Hup
	Edge
	Exclusive
)

// Loop is unavailable outside Linux.
type Loop struct{}

// New reports errors.ErrUnsupported: the reactor is epoll-based.
func New(time.Duration) (*Loop, error) { return nil, errors.ErrUnsupported }

func (*Loop) Add(int, Events, uint64) error { return errors.ErrUnsupported }
func (*Loop) Mod(int, Events, uint64) error { return errors.ErrUnsupported }
func (*Loop) Delete(int) error              { return errors.ErrUnsupported }
func (*Loop) Submit(func()) bool            { return false }
func (*Loop) Stop()                         {}
func (*Loop) Run(Handler) error             { return errors.ErrUnsupported }
