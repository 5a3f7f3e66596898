package bench

import "time"

// procStat is one sample of a process's resource use.
type procStat struct {
	CPU time.Duration // user plus system CPU time so far
	RSS int64         // resident set size (VmRSS), bytes
	HWM int64         // peak resident set size (VmHWM), bytes
	FDs int           // open file descriptors
}
