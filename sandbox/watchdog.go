package sandbox

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// watchdog enforces call deadlines and context cancellation for every instance of an Engine
// with one goroutine, instead of wazero's goroutine per call (see RATIONALE.md, "Deadlines").
//
// A guarded call publishes its id and deadline (in ticks) in its instance and increments
// inflight; the watchdog ticks every resolution while calls are in flight, reads each
// instance's published call with atomics, and interrupts the calls that are past their
// deadline or whose context is done by setting the instance's interrupt global (see
// Instance.stop), which the instrumented code checks at its safe points. With no
// call in flight for parkAfter ticks it parks; the first guarded call to find it parked wakes
// it. A call therefore costs a few atomic operations and no timer, goroutine or allocation.
type watchdog struct {
	res   time.Duration
	epoch time.Time

	now      atomic.Int64 // ticks since epoch, refreshed by the watchdog
	inflight atomic.Int64 // guarded calls in progress
	parked   atomic.Bool
	wake     chan struct{}

	mu    sync.Mutex
	insts map[*Instance]struct{}

	stop chan struct{}
	done chan struct{}
}

const parkAfter = 64 // idle ticks before the watchdog parks

// noDeadline is the deadline of a call watched only for its context.
const noDeadline = math.MaxInt64

func newWatchdog(res time.Duration) *watchdog {
	w := &watchdog{
		res:   res,
		epoch: time.Now(),
		wake:  make(chan struct{}, 1),
		insts: make(map[*Instance]struct{}),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	w.parked.Store(true)
	go w.run()
	return w
}

func (w *watchdog) close() {
	close(w.stop)
	<-w.done
}

func (w *watchdog) add(i *Instance) {
	w.mu.Lock()
	w.insts[i] = struct{}{}
	w.mu.Unlock()
}

func (w *watchdog) remove(i *Instance) {
	w.mu.Lock()
	delete(w.insts, i)
	w.mu.Unlock()
}

// ticksUntil converts a timeout into a deadline in ticks, rounded up so that a call is never
// stopped before its timeout; enter must have been called first so that now is fresh.
func (w *watchdog) deadline(timeout time.Duration) int64 {
	return w.now.Load() + int64((timeout+w.res-1)/w.res) + 1
}

// enter counts a guarded call in, waking the watchdog if it is parked. Order matters: the
// increment comes before the read of parked, and park stores parked before it reads inflight,
// so one of the two always sees the other.
func (w *watchdog) enter() {
	w.inflight.Add(1)
	if w.parked.Load() {
		w.now.Store(w.ticks())
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

func (w *watchdog) exit() { w.inflight.Add(-1) }

func (w *watchdog) ticks() int64 { return int64(time.Since(w.epoch) / w.res) }

func (w *watchdog) run() {
	defer close(w.done)
	t := time.NewTicker(w.res)
	t.Stop()
	for {
		// Parked.
		select {
		case <-w.stop:
			return
		case <-w.wake:
		}
		w.parked.Store(false)
		t.Reset(w.res)
		idle := 0
		for idle < parkAfter {
			select {
			case <-w.stop:
				t.Stop()
				return
			case <-t.C:
			}
			now := w.ticks()
			w.now.Store(now)
			if w.inflight.Load() == 0 {
				idle++
				continue
			}
			idle = 0
			w.scan(now)
		}
		t.Stop()
		w.parked.Store(true)
		if w.inflight.Load() > 0 { // a call slipped in: do not sleep on it
			select {
			case w.wake <- struct{}{}:
			default:
			}
		}
	}
}

func (w *watchdog) scan(now int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := range w.insts {
		i.watch(now)
	}
}
