// Package watchdog enforces operation deadlines and context cancellation for every instance
// of a sandbox.Engine, whatever its format, with one goroutine instead of wazero's goroutine
// per call (see RATIONALE.md, "Deadlines: instrumented safe points and one watchdog").
//
// It knows nothing of instances: a Watched reports, when asked, whether it runs an
// operation that needs watching, and stops it itself when overdue. Package sandbox's native
// instances stop a guest by setting its interrupt global; package sandbox/extism's by closing
// the instance's SDK plugin.
package watchdog

import (
	"sync"
	"sync/atomic"
	"time"
)

// Watched is an instance the watchdog looks at.
type Watched interface {
	// Watch is called on the watchdog's goroutine on every tick while it is awake, with the
	// time since the watchdog's epoch. It stops an operation that is past its deadline or
	// whose context is done, and reports whether the instance runs an operation that needs
	// watching. It must not block.
	Watch(now time.Duration) bool
}

// Watchdog ticks every resolution while awake and calls Watch on each watched instance.
//
// With no operation to watch for ParkAfter ticks it parks. It stores parked and then asks
// every instance once more; an operation publishes its state and then reads Parked (and calls
// WakeUp if so): one of the two always sees the other, so an operation that needs watching
// either is seen or wakes the watchdog. An operation thus costs one plain load and no locked
// instruction, timer, goroutine or allocation for its deadline.
//
// Add, Remove, Parked and WakeUp may be called from any goroutine. Close stops the goroutine;
// it is called once, by the watchdog's owner.
type Watchdog struct {
	res   time.Duration
	epoch time.Time

	parked atomic.Bool
	wake   chan struct{}
	onPark func() // tests only: called each time the watchdog parks, before it waits

	mu    sync.Mutex
	insts map[Watched]struct{}

	stop chan struct{}
	done chan struct{}
}

// ParkAfter is the number of idle ticks before the watchdog parks.
const ParkAfter = 64

// New starts a watchdog that ticks every res while awake; it starts parked. onPark, if not
// nil, is called on the watchdog's goroutine each time it parks (for tests).
func New(res time.Duration, onPark func()) *Watchdog {
	w := &Watchdog{
		res:    res,
		onPark: onPark,
		epoch:  time.Now(),
		wake:   make(chan struct{}, 1),
		insts:  make(map[Watched]struct{}),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	w.parked.Store(true)
	go w.run()
	return w
}

// Close stops the watchdog's goroutine and waits for it to return.
func (w *Watchdog) Close() {
	close(w.stop)
	<-w.done
}

// Add watches i.
func (w *Watchdog) Add(i Watched) {
	w.mu.Lock()
	w.insts[i] = struct{}{}
	w.mu.Unlock()
}

// Remove stops watching i.
func (w *Watchdog) Remove(i Watched) {
	w.mu.Lock()
	delete(w.insts, i)
	w.mu.Unlock()
}

// Parked reports whether the watchdog is parked: an operation that needs watching, once
// published, calls WakeUp if so.
func (w *Watchdog) Parked() bool { return w.parked.Load() }

// WakeUp wakes a parked watchdog.
func (w *Watchdog) WakeUp() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Idle reports whether the watchdog is parked with no wake-up pending (for tests).
func (w *Watchdog) Idle() bool { return w.parked.Load() && len(w.wake) == 0 }

func (w *Watchdog) run() {
	defer close(w.done)
	t := time.NewTicker(w.res)
	t.Stop()
	for {
		// Parked.
		if w.onPark != nil {
			w.onPark()
		}
		select {
		case <-w.stop:
			return
		case <-w.wake:
		}
		w.parked.Store(false)
		t.Reset(w.res)
		for idle := 0; ; {
			select {
			case <-w.stop:
				t.Stop()
				return
			case <-t.C:
			}
			if w.scan() {
				idle = 0
				continue
			}
			if idle++; idle < ParkAfter {
				continue
			}
			w.parked.Store(true)
			if !w.scan() { // an operation that entered before it could see parked
				break
			}
			w.parked.Store(false)
			idle = 0
		}
		t.Stop()
	}
}

// scan watches every instance once, and reports whether any runs an operation that needs
// watching.
func (w *Watchdog) scan() bool {
	now := time.Since(w.epoch)
	w.mu.Lock()
	defer w.mu.Unlock()
	busy := false
	for i := range w.insts {
		if i.Watch(now) {
			busy = true
		}
	}
	return busy
}

// OfEngine returns the watchdog of a *sandbox.Engine, for the formats under package sandbox
// (sandbox/extism) that watch their instances with the engine's one watchdog. Package sandbox
// sets it at init; the argument is untyped because this package sits below sandbox.
var OfEngine func(engine any) *Watchdog
