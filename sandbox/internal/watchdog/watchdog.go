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
	"context"
	"errors"
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
// either is seen or wakes the watchdog.
//
// A tick asks only the instances that ran something to watch lately (the hot list), so that
// its cost does not grow with idle instances: ten thousand live instances of which a few
// serve calls cost a tick a few of them, not ten thousand. An instance found with nothing to
// watch for ColdAfter ticks in a row moves to the cold list: the watchdog stores its Entry's
// cold flag and then asks it once more; an operation publishes its state and then reads the
// flag (Entered), and moves its instance back if it is set: again one of the two sees the
// other. An operation thus costs two plain loads (cold, parked) and no locked instruction,
// timer, goroutine or allocation for its deadline.
//
// Add, Remove, Entered, Parked and WakeUp may be called from any goroutine. Close stops the
// goroutine; it is called once, by the watchdog's owner.
type Watchdog struct {
	res   time.Duration
	epoch time.Time

	parked atomic.Bool
	wake   chan struct{}
	onPark func() // tests only: called each time the watchdog parks, before it waits

	mu   sync.Mutex
	hot  []*Entry // asked every tick
	cold []*Entry // asked by nobody until an operation moves its instance back (Entered)

	stop chan struct{}
	done chan struct{}
}

// ParkAfter is the number of idle ticks before the watchdog parks.
const ParkAfter = 64

// ColdAfter is the number of ticks in a row an instance has nothing to watch before it moves
// to the cold list.
const ColdAfter = 64

// Entry is an instance's place in the watchdog's lists: each instance has one, for the life
// of its registration (Add to Remove).
type Entry struct {
	cold atomic.Bool // the instance is on the cold list, or about to be: see Entered
	w    Watched
	// Guarded by the watchdog's mu.
	idle   int  // ticks in a row with nothing to watch
	idx    int  // position in hot or cold
	onCold bool // which of the two lists holds it
}

// New starts a watchdog that ticks every res while awake; it starts parked. onPark, if not
// nil, is called on the watchdog's goroutine each time it parks (for tests).
func New(res time.Duration, onPark func()) *Watchdog {
	w := &Watchdog{
		res:    res,
		onPark: onPark,
		epoch:  time.Now(),
		wake:   make(chan struct{}, 1),
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

// Add watches i, whose place is e.
func (w *Watchdog) Add(e *Entry, i Watched) {
	w.mu.Lock()
	e.w, e.idle, e.onCold = i, 0, false
	e.cold.Store(false)
	e.idx = len(w.hot)
	w.hot = append(w.hot, e)
	w.mu.Unlock()
}

// Remove stops watching the instance whose place is e.
func (w *Watchdog) Remove(e *Entry) {
	w.mu.Lock()
	if e.onCold {
		w.cold = unlink(w.cold, e)
	} else {
		w.hot = unlink(w.hot, e)
	}
	e.w = nil
	w.mu.Unlock()
}

// unlink removes e from l, which holds it at e.idx, moving l's last entry into its place.
func unlink(l []*Entry, e *Entry) []*Entry {
	last := l[len(l)-1]
	l[e.idx], last.idx = last, e.idx
	l[len(l)-1] = nil
	return l[:len(l)-1]
}

// Entered is called by an operation that needs watching once it has published its state:
// it moves the instance back to the hot list if the watchdog had moved it off, and wakes a
// parked watchdog.
func (w *Watchdog) Entered(e *Entry) {
	if e.cold.Load() {
		w.reheat(e)
	}
	if w.parked.Load() {
		w.WakeUp()
	}
}

func (w *Watchdog) reheat(e *Entry) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !e.onCold || e.w == nil { // the watchdog kept it hot after all, or it was removed
		return
	}
	w.cold = unlink(w.cold, e)
	e.onCold, e.idle, e.idx = false, 0, len(w.hot)
	e.cold.Store(false)
	w.hot = append(w.hot, e)
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

// scan watches every hot instance once, moves those idle for ColdAfter ticks to the cold
// list, and reports whether any runs an operation that needs watching.
func (w *Watchdog) scan() bool {
	now := time.Since(w.epoch)
	w.mu.Lock()
	defer w.mu.Unlock()
	busy := false
	for k := 0; k < len(w.hot); {
		e := w.hot[k]
		if e.w.Watch(now) {
			e.idle, busy = 0, true
			k++
			continue
		}
		if e.idle++; e.idle < ColdAfter {
			k++
			continue
		}
		// Store cold, then ask once more: an operation that entered before it could see
		// the flag is seen here; one that enters after sees the flag and calls reheat.
		e.cold.Store(true)
		if e.w.Watch(now) {
			e.cold.Store(false)
			e.idle, busy = 0, true
			k++
			continue
		}
		w.hot = unlink(w.hot, e) // the last entry moves to k: look at it next
		e.onCold, e.idx = true, len(w.cold)
		w.cold = append(w.cold, e)
	}
	return busy
}

// Len returns how many instances are watched, and how many of them are on the hot list (for
// tests).
func (w *Watchdog) Len() (all, hot int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.hot) + len(w.cold), len(w.hot)
}

// OfEngine returns the watchdog of a *sandbox.Engine, for the formats under package sandbox
// (sandbox/extism) that watch their instances with the engine's one watchdog. Package sandbox
// sets it at init; the argument is untyped because this package sits below sandbox.
var OfEngine func(engine any) *Watchdog

// Why an operation is stopped: the watchdog's reasons (Op.Check) and the owner's (Kill).
const (
	StopNone uint32 = iota
	StopDeadline
	StopCtxDeadline
	StopCanceled
	StopKilled
)

// Op is an instance's side of the watching, the same for every format: the cancellable
// context its operation in progress published (Arm), and the watchdog's notes on when it
// first saw an operation busy. An instance embeds one.
type Op struct {
	mu    sync.Mutex
	ctx   context.Context // guarded by mu; set for cancellable contexts only
	ctxID uint64          // guarded by mu

	// The watchdog's goroutine only.
	seenID uint64
	seenAt time.Duration
}

// Arm publishes the cancellable context of operation id to the watchdog.
func (o *Op) Arm(ctx context.Context, id uint64) {
	o.mu.Lock()
	o.ctx, o.ctxID = ctx, id
	o.mu.Unlock()
}

// Disarm withdraws it.
func (o *Op) Disarm() {
	o.mu.Lock()
	o.ctx = nil
	o.mu.Unlock()
}

// Check is called from Watched.Watch, on the watchdog's goroutine, for operation id, busy
// now, whose time limit is limit (when limited). It returns why the operation must be stopped
// (StopNone: it need not) and whether it needs watching.
//
// No operation publishes a deadline: the watchdog notes when it first sees an operation id
// busy, and the operation started at or before that, so stopping it once now less that time
// reaches its limit never stops it early, and stops it at most about two ticks late (one
// before it was first seen, one for the tick itself).
func (o *Op) Check(now time.Duration, id uint64, limit time.Duration, limited bool) (why uint32, watched bool) {
	if id != o.seenID {
		o.seenID, o.seenAt = id, now
	}
	if limited && now-o.seenAt >= limit {
		return StopDeadline, true
	}
	o.mu.Lock()
	c, cid := o.ctx, o.ctxID
	o.mu.Unlock()
	if c == nil || cid != id {
		return StopNone, limited
	}
	switch err := c.Err(); {
	case errors.Is(err, context.DeadlineExceeded):
		return StopCtxDeadline, true
	case err != nil:
		return StopCanceled, true
	}
	return StopNone, true
}
