package supervisor

import (
	"fmt"
	"sync/atomic"
	"time"
)

// EventKind is the kind of an Event.
type EventKind uint8

const (
	// EventStarted: an incarnation is ready (Incarnation set).
	EventStarted EventKind = iota + 1
	// EventExited: an incarnation ended by itself (Err, Class set).
	EventExited
	// EventStopped: the supervisor stopped an incarnation and it ended as
	// expected (Err, Class set).
	EventStopped
	// EventShutdownError: the supervisor stopped an incarnation and it did
	// not end cleanly: it crashed meanwhile, had to be killed after its
	// timeout, or (Permanent) exited normally. It is not restarted.
	EventShutdownError
	// EventRestarting: a restart was decided for the child (Restarts is
	// the number of its incarnations so far).
	EventRestarting
	// EventStartFailed: a Start returned an error (Err set).
	EventStartFailed
	// EventBackoff: the child's restart waits Delay.
	EventBackoff
	// EventMaxIntensity: the supervisor gives up (Err is the *IntensityError).
	EventMaxIntensity
)

func (k EventKind) String() string {
	switch k {
	case EventStarted:
		return "started"
	case EventExited:
		return "exited"
	case EventStopped:
		return "stopped"
	case EventShutdownError:
		return "shutdown_error"
	case EventRestarting:
		return "restarting"
	case EventStartFailed:
		return "start_failed"
	case EventBackoff:
		return "backoff"
	case EventMaxIntensity:
		return "max_intensity"
	}
	return fmt.Sprintf("EventKind(%d)", uint8(k))
}

// Event is something that happened in a supervisor. Which fields are set
// depends on Kind.
type Event struct {
	Kind        EventKind
	Time        time.Time // on the supervisor's Clock
	Supervisor  string    // the supervisor's name
	Child       string    // the child's ID
	Incarnation uint64    // the incarnation concerned, if any
	Restarts    int       // restarts of this child so far
	Err         error     // an exit reason or start error
	Class       ExitClass // the class of Err, for exits
	Delay       time.Duration
}

// dispatcher delivers events to a hook on its own goroutine through a
// bounded queue; emit never blocks.
type dispatcher struct {
	q       chan Event
	hook    func(Event)
	want    func(Event) bool // Config.EventFilter; nil: every event
	dropped atomic.Uint64
	done    chan struct{}
}

func newDispatcher(hook func(Event), want func(Event) bool, n int) *dispatcher {
	if n == 0 {
		n = DefaultEventBuffer
	}
	d := &dispatcher{q: make(chan Event, n), hook: hook, want: want, done: make(chan struct{})}
	go d.run()
	return d
}

func (d *dispatcher) run() {
	defer close(d.done)
	for e := range d.q {
		d.deliver(e)
	}
}

func (d *dispatcher) deliver(e Event) {
	defer func() {
		if recover() != nil {
			d.dropped.Add(1)
		}
	}()
	d.hook(e)
}

// wants reports whether e is to be queued: there is a dispatcher, and its filter, if any,
// takes e (or panics on it).
func (d *dispatcher) wants(e Event) (ok bool) {
	if d == nil {
		return false
	}
	if d.want == nil {
		return true
	}
	defer func() {
		if recover() != nil {
			ok = true
		}
	}()
	return d.want(e)
}

func (d *dispatcher) emit(e Event) {
	if d == nil {
		return
	}
	select {
	case d.q <- e:
	default:
		d.dropped.Add(1)
	}
}

func (d *dispatcher) close() {
	if d != nil {
		close(d.q)
		<-d.done
	}
}
