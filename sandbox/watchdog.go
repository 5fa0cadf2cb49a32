package sandbox

import (
	"sync"
	"sync/atomic"
	"time"
)

// watchdog enforces call deadlines and context cancellation for every instance of an Engine
// with one goroutine, instead of wazero's goroutine per call (see RATIONALE.md, "Deadlines").
//
// While awake it ticks every resolution and reads each instance's state word with one atomic
// load: a busy instance's word holds the operation's id and kind, and the kind gives its time
// limit, so an operation publishes nothing for its deadline (see Instance.watch). An
// operation with a cancellable context publishes it under the instance's ctxMu. The watchdog
// interrupts an operation past its deadline, or whose context is done, by setting the
// instance's interrupt global (see Instance.stop), which the instrumented code checks at its
// safe points.
//
// With no operation to watch for parkAfter ticks it parks. It stores parked and then reads
// every state word once more; an operation publishes its state word and then reads parked
// (Instance.enter): one of the two always sees the other, so an operation that needs watching
// either is seen or wakes the watchdog. A call thus costs one plain load and no locked
// instruction, timer, goroutine or allocation for its deadline.
type watchdog struct {
	res   time.Duration
	epoch time.Time

	parked atomic.Bool
	wake   chan struct{}
	onPark func() // tests only: called each time the watchdog parks, before it waits

	mu    sync.Mutex
	insts map[*Instance]struct{}

	stop chan struct{}
	done chan struct{}
}

const parkAfter = 64 // idle ticks before the watchdog parks

func newWatchdog(res time.Duration, onPark func()) *watchdog {
	w := &watchdog{
		res:    res,
		onPark: onPark,
		epoch:  time.Now(),
		wake:   make(chan struct{}, 1),
		insts:  make(map[*Instance]struct{}),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
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

// wakeUp wakes a parked watchdog.
func (w *watchdog) wakeUp() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *watchdog) run() {
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
			if idle++; idle < parkAfter {
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
func (w *watchdog) scan() bool {
	now := time.Since(w.epoch)
	w.mu.Lock()
	defer w.mu.Unlock()
	busy := false
	for i := range w.insts {
		if i.watch(now) {
			busy = true
		}
	}
	return busy
}
