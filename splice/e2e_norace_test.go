//go:build !race

package splice_test

// raceEnabled reports whether the race detector is on: its shadow memory
// makes RSS figures meaningless, so memory bounds then use the Go heap only.
const raceEnabled = false
