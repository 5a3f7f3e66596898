//go:build !linux

package bench

import (
	"errors"
	"time"
)

// readProc needs /proc: elsewhere the server cost columns stay empty.
func readProc(pid int) (procStat, error) { return procStat{}, errors.ErrUnsupported }

// raiseFDLimit is a no-op outside Linux.
func raiseFDLimit() (uint64, error) { return 0, errors.ErrUnsupported }

// readSystemCPU needs /proc.
func readSystemCPU() (time.Duration, error) { return 0, errors.ErrUnsupported }

// loadAverage needs /proc.
func loadAverage() string { return "" }
