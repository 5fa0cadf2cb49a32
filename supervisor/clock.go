package supervisor

import "time"

// Clock is the supervisor's source of time, injected through Config.Clock
// so that intensity windows, uptimes, backoffs and timeouts can be driven by
// tests. Implementations must be safe for concurrent use.
type Clock interface {
	// Now returns the current time; only differences between two values
	// are used.
	Now() time.Time
	// AfterFunc calls f once, in its own goroutine or in the goroutine that
	// advances the clock, after d has elapsed. The supervisor's f never
	// blocks.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc call.
type Timer interface {
	// Stop prevents the call; it reports false if the call already ran or
	// is running.
	Stop() bool
}

type realClock struct{}

func (realClock) Now() time.Time                            { return time.Now() }
func (realClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }
