package host

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wasmvisor/wasmvisor/sandbox"
	"github.com/wasmvisor/wasmvisor/supervisor"
)

// Message is one bus message.
type Message struct {
	Topic string
	Data  []byte
	// From names the plugin that published it; empty for Host.Publish.
	From string
	// Node names the node a message came from when it was published on another node and
	// brought here by a bridge (PublishRemote); empty for a message published on this host.
	// A bridge forwards only messages without a Node, so that none is echoed back.
	Node string
}

// Subscription is one subscriber's interest in one topic, with its own bounded buffer.
type Subscription struct {
	b     *bus
	id    uint64
	topic string
	fn    func(Message) // a Go subscriber
	p     *plugin       // or a plugin

	qmu   sync.Mutex
	queue []Message

	ended atomic.Bool
	dmu   sync.Mutex // held while fn runs, so that Unsubscribe can wait for it

	delivered, dropped, failed atomic.Uint64

	// Dropped and not yet reported (see bus.reportDrops): messages and their bytes.
	unreported, unreportedBytes atomic.Uint64
}

// Topic returns the subscription's topic.
func (s *Subscription) Topic() string { return s.topic }

// Delivered, Dropped and Failed count the subscription's messages: handed over, refused
// because the buffer was full, and lost because the subscriber failed on them (a panic, a
// guest error, an instance that died).
func (s *Subscription) Delivered() uint64 { return s.delivered.Load() }

// Dropped counts messages refused because the buffer was full.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Failed counts messages the subscriber failed on.
func (s *Subscription) Failed() uint64 { return s.failed.Load() }

func (s *Subscription) name() string {
	if s.p != nil {
		return "plugin:" + s.p.name
	}
	return "func:" + strconv.FormatUint(s.id, 10)
}

// Unsubscribe ends the subscription: its buffered messages are dropped and, once Unsubscribe
// returns, its function is never called again (a call in progress is waited for, so
// Unsubscribe must not be called from inside the subscription's own function). It is
// idempotent.
func (s *Subscription) Unsubscribe() {
	s.b.remove(s)
	s.dmu.Lock()
	s.dmu.Unlock() //nolint:staticcheck // an empty critical section: wait for a delivery in progress
}

type bus struct {
	h        *Host
	buf      int
	mu       sync.Mutex
	topics   map[string]map[*Subscription]struct{}
	all      map[*Subscription]struct{}
	nextID   uint64
	kick     chan struct{}
	flushers []chan struct{}

	delivered, dropped, failed atomic.Uint64 // host totals

	// Drop reports (see reportDrops). dirty lists the subscriptions that dropped since the
	// last report, under mu; dropsPending is set when it is not empty.
	dirty        []*Subscription
	dropsPending atomic.Bool
	rmu          sync.Mutex // orders reports; taken before mu, never under it
	lastReport   time.Time  // under rmu
	reported     bool       // under rmu
	timer        supervisor.Timer
	stopped      bool // under rmu: the bus task ended; no timer is armed any more
}

// dropReportInterval is the shortest time between two EventDropped reports of the host's
// bus, whatever the number of subscriptions dropping.
const dropReportInterval = time.Second

func (b *bus) init(h *Host, buf int) {
	b.h, b.buf = h, buf
	b.topics = map[string]map[*Subscription]struct{}{}
	b.all = map[*Subscription]struct{}{}
	b.kick = make(chan struct{}, 1)
}

// add records s. Recording and monitoring are one step: s is in the maps exactly while it
// is live, under b.mu, and ending it (remove) takes the same lock.
func (b *bus) add(s *Subscription) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.nextID++
	s.id = b.nextID
	t := b.topics[s.topic]
	if t == nil {
		t = map[*Subscription]struct{}{}
		b.topics[s.topic] = t
	}
	t[s] = struct{}{}
	b.all[s] = struct{}{}
}

func (b *bus) remove(s *Subscription) {
	b.mu.Lock()
	if t := b.topics[s.topic]; t != nil {
		delete(t, s)
		if len(t) == 0 {
			delete(b.topics, s.topic)
		}
	}
	delete(b.all, s)
	b.mu.Unlock()
	s.qmu.Lock()
	s.ended.Store(true)
	if s.p != nil {
		s.p.pending.Add(-int64(len(s.queue)))
	}
	s.queue = nil
	s.qmu.Unlock()
	b.reportSub(s)   // what it dropped since the last report
	b.h.kick(b.kick) // answer flushers waiting on this subscription
}

func (b *bus) addPlugin(p *plugin) {
	for _, t := range p.spec.Subscribe {
		s := &Subscription{b: b, topic: t, p: p}
		b.add(s)
		b.mu.Lock()
		p.subs = append(p.subs, s)
		b.mu.Unlock()
	}
}

func (b *bus) removePlugin(p *plugin) {
	b.mu.Lock()
	subs := p.subs
	p.subs = nil
	b.mu.Unlock()
	for _, s := range subs {
		b.remove(s)
	}
}

// Subscribe calls fn with every message published on topic from now on, in order, on the
// host's bus task (one goroutine for all Go subscribers: fn should be quick, and must not
// call Unsubscribe on its own subscription). Messages wait in a buffer of WithBusBuffer
// messages; one that does not fit is dropped and counted.
func (h *Host) Subscribe(topic string, fn func(Message)) (*Subscription, error) {
	if h.closed.Load() {
		return nil, fmt.Errorf("host: subscribe %q: %w", topic, ErrClosed)
	}
	s := &Subscription{b: &h.bus, topic: topic, fn: fn}
	h.bus.add(s)
	return s, nil
}

// Publish sends data to every subscriber of topic: Go functions and plugins. It does not
// wait for the deliveries; it returns the number of subscribers whose buffer took the
// message. data is copied.
func (h *Host) Publish(topic string, data []byte) (int, error) {
	if h.closed.Load() {
		return 0, fmt.Errorf("host: publish %q: %w", topic, ErrClosed)
	}
	return h.bus.publish(Message{Topic: topic, Data: append([]byte(nil), data...)}), nil
}

// PublishRemote is Publish for a message published on another node, with m.Node naming that
// node (required: ErrInvalidMessage without one) and m.From the plugin that published it
// there, if any. Its subscribers see m as it is, bounds and drop accounting as for Publish.
// m.Data is copied.
func (h *Host) PublishRemote(m Message) (int, error) {
	if m.Node == "" {
		return 0, fmt.Errorf("host: publish %q from another node: no node: %w", m.Topic, ErrInvalidMessage)
	}
	if h.closed.Load() {
		return 0, fmt.Errorf("host: publish %q: %w", m.Topic, ErrClosed)
	}
	m.Data = append([]byte(nil), m.Data...)
	return h.bus.publish(m), nil
}

// onPublish is the sandbox hook for the guest's wasmvisor.publish.
func (p *plugin) onPublish(topic string, data []byte) bool {
	if p.h.closed.Load() {
		return false
	}
	p.h.bus.publish(Message{Topic: topic, Data: data, From: p.name})
	return true
}

func (b *bus) publish(m Message) int {
	n := 0
	b.mu.Lock()
	for s := range b.topics[m.Topic] {
		if s.enqueue(m) {
			n++
		}
	}
	b.mu.Unlock()
	b.h.kick(b.kick)
	if b.dropsPending.Load() {
		b.reportDrops(false)
	}
	return n
}

func (s *Subscription) enqueue(m Message) bool {
	s.qmu.Lock()
	if s.ended.Load() {
		s.qmu.Unlock()
		return false
	}
	if len(s.queue) >= s.b.buf {
		s.qmu.Unlock()
		s.dropped.Add(1)
		s.b.dropped.Add(1)
		// Counted now, reported later, outside the bus lock (which publish holds here): see
		// reportDrops.
		s.unreportedBytes.Add(uint64(len(m.Data)))
		if s.unreported.Add(1) == 1 {
			s.b.dirty = append(s.b.dirty, s)
			s.b.dropsPending.Store(true)
		}
		return false
	}
	s.queue = append(s.queue, m)
	if s.p != nil {
		s.p.pending.Add(1)
	}
	s.qmu.Unlock()
	return true
}

func (s *Subscription) pop() (Message, bool) {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if len(s.queue) == 0 {
		return Message{}, false
	}
	m := s.queue[0]
	s.queue[0] = Message{}
	s.queue = s.queue[1:]
	if len(s.queue) == 0 {
		s.queue = nil
	}
	if s.p != nil {
		s.p.pending.Add(-1)
	}
	return m, true
}

// unpop puts back at the head a message that pop took but no instance could take (all
// busy or down). A subscription that ended meanwhile discarded its queue: the message goes
// with it.
func (s *Subscription) unpop(m Message) {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if s.ended.Load() {
		return
	}
	s.queue = append(s.queue, Message{})
	copy(s.queue[1:], s.queue)
	s.queue[0] = m
	if s.p != nil {
		s.p.pending.Add(1)
	}
}

func (s *Subscription) empty() bool {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	return len(s.queue) == 0
}

// Flush waits until every message published before it has been handed to its subscribers
// (or dropped): the bus buffers are empty. A plugin subscriber with no live instance keeps
// Flush waiting until one starts, or until ctx ends.
func (h *Host) Flush(ctx context.Context) error {
	ch := make(chan struct{})
	h.bus.mu.Lock()
	h.bus.flushers = append(h.bus.flushers, ch)
	h.bus.mu.Unlock()
	h.kick(h.bus.kick)
	select {
	case <-ch:
		h.bus.reportDrops(true)
		return nil
	case <-ctx.Done():
		return fmt.Errorf("host: flush: %w", context.Cause(ctx))
	case <-h.root.Done():
		return fmt.Errorf("host: flush: %w", ErrClosed)
	}
}

// loop is the supervised bus task: it hands buffered messages to their subscribers whenever
// something changes (a publish, a release of a subscriber plugin's instance, a start).
func (b *bus) loop(ctx context.Context, ready func()) error {
	ready()
	defer b.stopReports()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-b.kick:
		}
		b.drain(ctx)
		if b.dropsPending.Load() {
			b.reportDrops(false)
		}
	}
}

func (b *bus) drain(ctx context.Context) {
	var subs []*Subscription
	for ctx.Err() == nil {
		subs = subs[:0]
		b.mu.Lock()
		for s := range b.all {
			subs = append(subs, s)
		}
		b.mu.Unlock()
		progress := false
		for _, s := range subs {
			if b.deliver(ctx, s) {
				progress = true
			}
		}
		if !progress {
			break
		}
	}
	b.mu.Lock()
	idle := true
	for s := range b.all {
		if !s.empty() {
			idle = false
			break
		}
	}
	var fl []chan struct{}
	if idle {
		fl, b.flushers = b.flushers, nil
	}
	b.mu.Unlock()
	for _, ch := range fl {
		close(ch)
	}
}

// deliver hands s what it can take now; it reports whether it handed anything.
func (b *bus) deliver(ctx context.Context, s *Subscription) bool {
	progress := false
	for {
		if s.p == nil {
			m, ok := s.pop()
			if !ok {
				return progress
			}
			progress = true
			b.callFunc(s, m)
			continue
		}
		if s.empty() {
			return progress
		}
		m, ok := s.pop()
		if !ok {
			return progress
		}
		inst, err := s.p.each(0, func(mb *member) error {
			r := mb.take()
			if r == nil {
				return sandbox.ErrBusy // served its delivery, resetting
			}
			err := r.Deliver(ctx, m.Topic, m.Data)
			if errors.Is(err, sandbox.ErrBusy) || beforeEntry(err) {
				mb.untake(r)
			}
			return err
		})
		if inst == nil {
			s.unpop(m)
			return progress // busy or restarting: retried when an operation ends, or on start
		}
		progress = true
		if err != nil {
			s.failed.Add(1)
			b.failed.Add(1)
			b.h.emit(Event{Kind: EventDeliveryFailed, Plugin: s.p.name, Instance: inst.idx,
				Incarnation: inst.inc, Topic: m.Topic, Subscriber: s.name(), Err: err})
		} else {
			s.delivered.Add(1)
			b.delivered.Add(1)
			// Reported while the instance is still held: it cannot have ended yet.
			b.h.emit(Event{Kind: EventDelivered, Plugin: s.p.name, Instance: inst.idx,
				Incarnation: inst.inc, Topic: m.Topic, Subscriber: s.name(), Data: m.Data})
		}
		s.p.afterUse(inst, err)
	}
}

func (b *bus) callFunc(s *Subscription, m Message) {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	if s.ended.Load() {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			s.failed.Add(1)
			b.failed.Add(1)
			b.h.emit(Event{Kind: EventDeliveryFailed, Topic: m.Topic, Subscriber: s.name(),
				Err: fmt.Errorf("subscriber panicked: %v", r)})
		}
	}()
	s.fn(m)
	s.delivered.Add(1)
	b.delivered.Add(1)
}

// reportDrops emits one EventDropped per subscription that dropped messages since the last
// report, with their count and bytes, unless the last report is less than
// dropReportInterval old (and force is false): a timer then kicks the bus task to report them
// when the interval is over. It is called after a publish that dropped (by
// the publisher, outside the bus lock: a slow subscriber can hold up the bus task, not the
// report), by the bus task after each round, by Flush and when the bus task stops.
// Each drop is in exactly one report; Subscription.Dropped and the metrics count them at once.
func (b *bus) reportDrops(force bool) {
	b.rmu.Lock()
	if !b.dropsPending.Load() {
		b.rmu.Unlock()
		return
	}
	now := b.h.clock().Now()
	if next := b.lastReport.Add(dropReportInterval); !force && b.reported && now.Before(next) {
		if b.timer == nil && !b.stopped { // the bus task reports them when it fires
			b.timer = b.h.clock().AfterFunc(next.Sub(now), func() {
				b.rmu.Lock()
				b.timer = nil
				b.rmu.Unlock()
				b.h.kick(b.kick)
			})
		}
		b.rmu.Unlock()
		return
	}
	b.lastReport, b.reported = now, true
	b.mu.Lock()
	dirty := b.dirty
	b.dirty = nil
	b.dropsPending.Store(false)
	b.mu.Unlock()
	b.rmu.Unlock()
	for _, s := range dirty {
		b.reportSub(s)
	}
}

// reportSub emits what s dropped since it was last reported, if anything.
func (b *bus) reportSub(s *Subscription) {
	n := s.unreported.Swap(0)
	nb := s.unreportedBytes.Swap(0)
	if n == 0 && nb == 0 {
		return
	}
	e := Event{Kind: EventDropped, Topic: s.topic, Subscriber: s.name(), Count: n, Bytes: nb}
	if s.p != nil {
		e.Plugin = s.p.name
	}
	b.h.emit(e)
}

// stopReports ends the reports' timer and reports what is left: when the bus task ends.
func (b *bus) stopReports() {
	b.rmu.Lock()
	b.stopped = true
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	b.rmu.Unlock()
	b.reportDrops(true)
}

// clock is the host's clock (WithClock), or real time.
func (h *Host) clock() supervisor.Clock { return h.clk }
