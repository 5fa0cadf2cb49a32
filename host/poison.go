package host

import (
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wasmvisor/wasmvisor/sandbox"
)

// PoisonInputError is returned, without entering an instance, for an input that has ended
// instances of the plugin Ends times within Window (see WithPoisonInput). It matches
// ErrPoisonInput. Times are on the host's clock.
type PoisonInputError struct {
	Plugin  string
	Handler string
	Ends    int           // the instance ends that made the input poison
	Window  time.Duration // the window they fell in
	// RetryAt is when the input stops being refused: Window after the first of those ends.
	RetryAt time.Time
}

// Error does not name the plugin and handler: Call wraps it in "plugin %q: call %q: ".
func (e *PoisonInputError) Error() string {
	return fmt.Sprintf("%s: this input ended %d instances within %v; refused until %s",
		ErrPoisonInput.Error(), e.Ends, e.Window, e.RetryAt.Format(time.RFC3339))
}

// Is reports whether target is ErrPoisonInput.
func (e *PoisonInputError) Is(target error) bool { return target == ErrPoisonInput }

// poisonous reports whether a call's error is an instance end the input is to blame for: a
// fatal error other than a cancellation (the caller's, or a Kill) and the caller's deadline.
func poisonous(err error) bool {
	return sandbox.Fatal(err) && !errors.Is(err, sandbox.ErrCanceled) && !sandbox.CallerEnded(err)
}

// poisonKey names one input of one plugin: the plugin (a reloaded plugin starts clean) and a
// seeded hash of the handler and the input's bytes.
type poisonKey struct {
	p   *plugin
	sum uint64
}

type poisonEntry struct {
	key        poisonKey
	handler    string
	prev, next *poisonEntry
	ends       []time.Time // the last ends, oldest first, at most limit
	poisoned   bool        // refusing; counted in key.p.poisoned
	reported   time.Time   // the last EventPoisonInput
}

// poisonTable counts, per input, the instance ends it caused, and refuses the inputs that
// reached the limit within the window. One per host, bounded by capacity: entries are kept in
// a list ordered by their last end (which is also expiry order), the oldest evicted first.
//
// The call path pays only when the plugin has a refusing entry (plugin.poisoned, one atomic
// load, is not zero): then it hashes the input and looks it up under the table's lock. An
// end (rare: an instance died) always hashes and records.
type poisonTable struct {
	limit    int // 0: disabled
	window   time.Duration
	capacity int
	seed     maphash.Seed
	h        *Host

	mu         sync.Mutex
	m          map[poisonKey]*poisonEntry
	head, tail *poisonEntry
	evictions  atomic.Uint64
}

func (t *poisonTable) init(h *Host, o poisonOptions) {
	t.h, t.limit, t.window, t.capacity = h, o.limit, o.window, o.capacity
	t.seed = maphash.MakeSeed()
	t.m = map[poisonKey]*poisonEntry{}
}

func (t *poisonTable) key(p *plugin, handler string, input []byte) poisonKey {
	var mh maphash.Hash
	mh.SetSeed(t.seed)
	_, _ = mh.WriteString(handler)
	_ = mh.WriteByte(0)
	_, _ = mh.Write(input)
	return poisonKey{p: p, sum: mh.Sum64()}
}

// refuse returns a *PoisonInputError if the input is refused. The caller checked
// p.poisoned first.
func (t *poisonTable) refuse(p *plugin, handler string, input []byte) error {
	k := t.key(p, handler, input)
	now := t.h.clk.Now()
	t.mu.Lock()
	t.expire(now)
	e := t.m[k]
	if e == nil || !e.poisoned {
		t.mu.Unlock()
		return nil
	}
	until := e.ends[0].Add(t.window)
	if now.After(until) {
		e.poisoned = false
		p.poisoned.Add(-1)
		t.mu.Unlock()
		return nil
	}
	n := len(e.ends)
	t.mu.Unlock()
	p.stats.poisonRefused.Add(1)
	return &PoisonInputError{Plugin: p.name, Handler: handler, Ends: n, Window: t.window, RetryAt: until}
}

// record counts an instance end caused by the input, and makes the input poison when it is
// the limit-th within the window.
func (t *poisonTable) record(p *plugin, handler string, input []byte) {
	if t.limit == 0 {
		return
	}
	k := t.key(p, handler, input)
	now := t.h.clk.Now()
	t.mu.Lock()
	t.expire(now)
	e := t.m[k]
	if e == nil {
		if len(t.m) >= t.capacity {
			t.remove(t.head)
			t.evictions.Add(1)
		}
		e = &poisonEntry{key: k, handler: handler, ends: make([]time.Time, 0, t.limit)}
		t.m[k] = e
	} else {
		t.unlink(e)
	}
	t.pushBack(e)
	if len(e.ends) == t.limit {
		copy(e.ends, e.ends[1:])
		e.ends = e.ends[:t.limit-1]
	}
	e.ends = append(e.ends, now)
	var report *PoisonInputError
	if len(e.ends) == t.limit && now.Sub(e.ends[0]) <= t.window {
		if !e.poisoned {
			e.poisoned = true
			p.poisoned.Add(1)
		}
		if e.reported.IsZero() || now.Sub(e.reported) > t.window {
			e.reported = now
			report = &PoisonInputError{Plugin: p.name, Handler: handler, Ends: len(e.ends), Window: t.window,
				RetryAt: e.ends[0].Add(t.window)}
		}
	}
	t.mu.Unlock()
	if report != nil {
		p.stats.poisonInputs.Add(1)
		t.h.emit(Event{Kind: EventPoisonInput, Plugin: p.name, Handler: handler, Err: report})
	}
}

// expire removes the entries whose last end is older than the window: none of them refuses
// any more (a refusal ends a window after the first of the last ends). Under mu.
func (t *poisonTable) expire(now time.Time) {
	for t.head != nil && now.Sub(t.head.ends[len(t.head.ends)-1]) > t.window {
		t.remove(t.head)
	}
}

// drop removes every entry of p (Unload).
func (t *poisonTable) drop(p *plugin) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for e := t.head; e != nil; {
		next := e.next
		if e.key.p == p {
			t.remove(e)
		}
		e = next
	}
}

// entries is the number of inputs tracked.
func (t *poisonTable) entries() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

// remove deletes e from the map and the list. Under mu.
func (t *poisonTable) remove(e *poisonEntry) {
	if e.poisoned {
		e.key.p.poisoned.Add(-1)
		e.poisoned = false
	}
	delete(t.m, e.key)
	t.unlink(e)
}

func (t *poisonTable) unlink(e *poisonEntry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		t.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		t.tail = e.prev
	}
	e.prev, e.next = nil, nil
}

func (t *poisonTable) pushBack(e *poisonEntry) {
	e.prev = t.tail
	if t.tail != nil {
		t.tail.next = e
	} else {
		t.head = e
	}
	t.tail = e
}
