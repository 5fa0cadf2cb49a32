package natsbus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/wasmvisor/wasmvisor/host"
)

// Headers of a bridged message.
const (
	// HeaderNode names the node that published the message: a node skips its own.
	HeaderNode = "Wasmvisor-Node"
	// HeaderFrom names the plugin that published it, absent for Host.Publish.
	HeaderFrom = "Wasmvisor-From"
)

const (
	maxNodeBytes   = 64
	maxFromBytes   = 255
	reportInterval = 10 * time.Second
)

// Errors of New and Close.
var (
	// ErrInvalidOptions is wrapped by New for Options it cannot use (no connection, no host,
	// no node name, a node name too long); a Config error is a *ConfigError instead.
	ErrInvalidOptions = errors.New("natsbus: invalid options")
	// ErrClosed is returned by a second Close.
	ErrClosed = errors.New("natsbus: closed")
)

// Options are what New bridges: a host's bus and a NATS connection, as one node.
type Options struct {
	// Conn is the node's NATS connection, connected (the cluster's). The bridge neither
	// closes it nor changes its handlers.
	Conn *nats.Conn
	// Host is the node's host: its bus is bridged.
	Host *host.Host
	// Node names this node in the cluster: unique, 1 to 64 bytes. It is in every message the
	// node sends (HeaderNode) and in its durable consumer's name.
	Node string
	// Config says which topics cross and the bounds; it is validated by New.
	Config Config
	// Registerer receives the metrics (wasmvisor_cluster_bus_*); nil registers nowhere.
	Registerer prometheus.Registerer
	// Logger reports drops (at most one line every 10 s) and consumer errors; nil is a no-op.
	Logger *zap.Logger
}

// Bridge carries the messages of Config.Topics between the local bus and the other nodes.
//
// Out: a Go subscription per topic on the host's bus (the bus's own per-subscriber buffer
// and drop accounting apply) hands local messages to a queue of Config.OutQueue, which one
// goroutine publishes on Subject(prefix, topic); an at-least-once topic is published to the
// stream with async acks, at most Config.MaxInFlight awaiting theirs. Messages another node
// published (host.Message.Node set) are never sent out again.
//
// In: a NATS subscription per at-most-once topic, and one durable JetStream consumer of this
// node for the at-least-once topics, publish each message of another node on the local bus
// with Host.PublishRemote (the bus's per-subscriber bounds and drop accounting apply); the
// consumer acks once the local publish is done. A message of this node itself is skipped.
//
// Every message not carried is counted by direction and reason (Stats, the
// wasmvisor_cluster_bus_dropped_total metric) and reported in a log line. Stats may be called
// from any goroutine; Close once, when the bridge is no longer wanted, before the host's
// Close.
type Bridge struct {
	o      Options
	c      Config
	log    *zap.Logger
	js     jetstream.JetStream // nil without at-least-once topics
	alo    map[string]bool
	topics map[string]bool

	out     chan host.Message
	outDone chan struct{}
	abort   chan struct{} // closed when Close's context ends: what is queued is dropped

	locals []*host.Subscription
	subs   []*nats.Subscription
	cc     jetstream.ConsumeContext

	inMu     sync.RWMutex
	inClosed bool // under inMu: handlers no longer publish on the bus

	n          counters
	slowGone   atomic.Uint64 // slow_consumer drops of the subscriptions already ended
	reported   atomic.Int64  // unix nanoseconds of the last drop report
	closed     atomic.Bool
	collector  prometheus.Collector
	registered bool

	hooks hooks // tests only
}

// hooks are called by a bridge in tests, which wait on them instead of polling.
type hooks struct {
	afterReceive func(data []byte) // after each message from NATS is handled
	afterSend    func(data []byte) // after each local message is handed to NATS (or dropped)
}

// New checks o, creates the stream and this node's durable consumer when Config.AtLeastOnce
// is not empty (ctx bounds these requests, startTimeout when it has no deadline: New fails if
// JetStream cannot be reached), and
// starts the bridge. Without topics it bridges nothing and starts nothing but the sending
// goroutine.
func New(ctx context.Context, o Options) (*Bridge, error) { return newBridge(ctx, o, hooks{}) }

// startTimeout bounds New's talk to NATS when ctx has no deadline of its own.
const startTimeout = 10 * time.Second

func newBridge(ctx context.Context, o Options, hk hooks) (*Bridge, error) {
	switch {
	case o.Conn == nil:
		return nil, fmt.Errorf("%w: no NATS connection", ErrInvalidOptions)
	case o.Host == nil:
		return nil, fmt.Errorf("%w: no host", ErrInvalidOptions)
	case o.Node == "" || len(o.Node) > maxNodeBytes:
		return nil, fmt.Errorf("%w: node name %q: want 1 to %d bytes", ErrInvalidOptions, o.Node, maxNodeBytes)
	}
	if err := o.Config.Validate(); err != nil {
		return nil, err
	}
	b := &Bridge{o: o, c: o.Config.withDefaults(), log: o.Logger, alo: map[string]bool{}, topics: map[string]bool{},
		outDone: make(chan struct{}), abort: make(chan struct{})}
	if b.log == nil {
		b.log = zap.NewNop()
	}
	b.out = make(chan host.Message, b.c.OutQueue)
	for _, t := range b.c.Topics {
		b.topics[t] = true
	}
	for _, t := range b.c.AtLeastOnce {
		b.alo[t] = true
	}
	b.collector = collector{b}
	b.hooks = hk
	if _, ok := ctx.Deadline(); !ok {
		// The start talks to NATS (the stream, the consumer, a flush of the subscriptions),
		// which wants a deadline: a caller without one gets startTimeout.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, startTimeout)
		defer cancel()
	}
	if err := b.start(ctx); err != nil {
		b.stopIn()
		return nil, err
	}
	if o.Registerer != nil {
		if err := o.Registerer.Register(b.collector); err != nil {
			b.stopIn()
			return nil, fmt.Errorf("natsbus: metrics: %w", err)
		}
		b.registered = true
	}
	for _, t := range b.c.Topics {
		s, err := o.Host.Subscribe(t, b.onLocal)
		if err != nil {
			b.stopLocal()
			b.stopIn()
			if b.registered {
				o.Registerer.Unregister(b.collector)
			}
			return nil, fmt.Errorf("natsbus: topic %q: %w", t, err)
		}
		b.locals = append(b.locals, s)
	}
	go b.send()
	return b, nil
}

// start opens the inbound side: the stream and consumer, the core subscriptions.
func (b *Bridge) start(ctx context.Context) error {
	var aloSubjects []string
	for _, t := range b.c.AtLeastOnce {
		aloSubjects = append(aloSubjects, Subject(b.c.SubjectPrefix, t))
	}
	if len(aloSubjects) > 0 {
		js, err := jetstream.New(b.o.Conn,
			jetstream.WithPublishAsyncMaxPending(b.c.MaxInFlight),
			jetstream.WithPublishAsyncTimeout(defaultPublishAckTimeout),
			jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *nats.Msg, error) {
				b.drop(dropOutPublishError)
			}))
		if err != nil {
			return fmt.Errorf("natsbus: jetstream: %w", err)
		}
		b.js = js
		if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name: b.c.Stream, Subjects: aloSubjects, Storage: jetstream.FileStorage, Replicas: b.c.Replicas,
			MaxAge: b.c.StreamMaxAge, MaxBytes: b.c.StreamMaxBytes, Discard: jetstream.DiscardOld,
		}); err != nil {
			return fmt.Errorf("natsbus: stream %q: %w", b.c.Stream, err)
		}
		cons, err := js.CreateOrUpdateConsumer(ctx, b.c.Stream, jetstream.ConsumerConfig{
			Durable:           ConsumerName(b.o.Node),
			FilterSubjects:    aloSubjects,
			AckPolicy:         jetstream.AckExplicitPolicy,
			AckWait:           b.c.AckWait,
			MaxDeliver:        b.c.MaxDeliver,
			MaxAckPending:     b.c.MaxInFlight,
			DeliverPolicy:     jetstream.DeliverNewPolicy,
			InactiveThreshold: b.c.ConsumerInactive,
		})
		if err != nil {
			return fmt.Errorf("natsbus: stream %q: consumer %q: %w", b.c.Stream, ConsumerName(b.o.Node), err)
		}
		b.cc, err = cons.Consume(b.onStream, jetstream.PullMaxMessages(b.c.MaxInFlight),
			jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
				b.log.Debug("cluster bus: consumer", zap.Error(err))
			}))
		if err != nil {
			return fmt.Errorf("natsbus: stream %q: consume: %w", b.c.Stream, err)
		}
	}
	for _, t := range b.c.Topics {
		if b.alo[t] {
			continue
		}
		s, err := b.o.Conn.Subscribe(Subject(b.c.SubjectPrefix, t), b.onCore)
		if err != nil {
			return fmt.Errorf("natsbus: subscribe %q: %w", t, err)
		}
		// The client's buffer for this subscription: past it NATS drops (slow_consumer).
		if err := s.SetPendingLimits(b.c.InQueue, min(b.c.InQueue*b.c.MaxMessageBytes, maxInQueueBytes)); err != nil {
			_ = s.Unsubscribe()
			return fmt.Errorf("natsbus: subscribe %q: %w", t, err)
		}
		b.subs = append(b.subs, s)
	}
	// The server holds the subscriptions when New returns (a round trip), so that a message
	// another node publishes after it reaches this one. A connection that is down sends them
	// when it is back.
	if len(b.subs) > 0 && b.o.Conn.IsConnected() {
		if err := b.o.Conn.FlushWithContext(ctx); err != nil {
			return fmt.Errorf("natsbus: subscribe: %w", err)
		}
	}
	return nil
}

// ConsumerName is the durable consumer of node on the bus's stream.
func ConsumerName(node string) string { return "wasmvisor-bus-" + escapeToken(node) }

// onLocal runs on the host's bus task for every message of a bridged topic: it only queues.
func (b *Bridge) onLocal(m host.Message) {
	if m.Node != "" {
		return // another node's: it reached the others already
	}
	if len(m.Data) > b.c.MaxMessageBytes {
		b.drop(dropOutTooLarge)
		return
	}
	select {
	case b.out <- m:
	default:
		b.drop(dropOutQueueFull)
	}
}

// send publishes the out queue on NATS until Close closes it.
func (b *Bridge) send() {
	defer close(b.outDone)
	for m := range b.out {
		select {
		case <-b.abort:
			b.drop(dropOutShutdown)
			continue
		default:
		}
		msg := &nats.Msg{Subject: Subject(b.c.SubjectPrefix, m.Topic), Data: m.Data,
			Header: nats.Header{HeaderNode: []string{b.o.Node}}}
		if m.From != "" {
			msg.Header[HeaderFrom] = []string{m.From}
		}
		var err error
		if b.alo[m.Topic] {
			_, err = b.js.PublishMsgAsync(msg, jetstream.WithStallWait(defaultPublishStallWait))
		} else {
			err = b.o.Conn.PublishMsg(msg)
		}
		switch {
		case errors.Is(err, jetstream.ErrTooManyStalledMsgs):
			b.drop(dropOutInFlightFull)
		case err != nil:
			b.drop(dropOutPublishError)
		default:
			b.n.sent.Add(1)
		}
		if b.hooks.afterSend != nil {
			b.hooks.afterSend(m.Data)
		}
	}
}

func (b *Bridge) onCore(msg *nats.Msg) { b.receive(msg.Subject, msg.Header, msg.Data) }

func (b *Bridge) onStream(msg jetstream.Msg) {
	if md, err := msg.Metadata(); err == nil && md.NumDelivered > 1 {
		b.n.redelivered.Add(1)
	}
	if b.receive(msg.Subject(), msg.Headers(), msg.Data()) {
		_ = msg.Nak() // this node's next run, or this one, gets it again (max_deliver bounds it)
		return
	}
	_ = msg.Ack()
}

// receive publishes one message from NATS on the local bus; it reports whether the message
// could not be published now and should come again (the bridge or the host is closing).
func (b *Bridge) receive(subject string, h nats.Header, data []byte) (again bool) {
	if b.hooks.afterReceive != nil {
		defer b.hooks.afterReceive(data)
	}
	node := h.Get(HeaderNode)
	if node == b.o.Node {
		b.n.echoes.Add(1)
		return false
	}
	from := h.Get(HeaderFrom)
	topic, err := b.topic(subject)
	if node == "" || len(node) > maxNodeBytes || len(from) > maxFromBytes || err != nil {
		b.drop(dropInBadMessage)
		return false
	}
	if len(data) > b.c.MaxMessageBytes {
		b.drop(dropInTooLarge)
		return false
	}
	b.inMu.RLock()
	defer b.inMu.RUnlock()
	if b.inClosed {
		b.drop(dropInClosed)
		return true
	}
	if _, err := b.o.Host.PublishRemote(host.Message{Topic: topic, Data: data, From: from, Node: node}); err != nil {
		b.drop(dropInClosed)
		return true
	}
	b.n.received.Add(1)
	return false
}

// topic is the bridged topic subject names.
func (b *Bridge) topic(subject string) (string, error) {
	p := b.c.SubjectPrefix
	if len(subject) <= len(p)+1 || subject[:len(p)] != p || subject[len(p)] != '.' {
		return "", errBadToken
	}
	t, err := unescapeToken(subject[len(p)+1:])
	if err != nil || !b.topics[t] {
		return "", errBadToken
	}
	return t, nil
}

func (b *Bridge) drop(k dropKey) {
	total := b.n.drops[k].Add(1)
	now := time.Now().UnixNano()
	last := b.reported.Load()
	if now-last >= int64(reportInterval) && b.reported.CompareAndSwap(last, now) {
		d := dropNames[k]
		b.log.Warn("cluster bus: messages dropped", zap.String("direction", d.Direction),
			zap.String("reason", d.Reason), zap.Uint64("dropped_total", total))
	}
}

// Stats returns the bridge's counts.
func (b *Bridge) Stats() Stats {
	s := Stats{Sent: b.n.sent.Load(), Received: b.n.received.Load(), Redelivered: b.n.redelivered.Load(),
		Echoes: b.n.echoes.Load(), Dropped: map[Drop]uint64{}}
	for k := range nDrops {
		if v := b.n.drops[k].Load(); v > 0 {
			s.Dropped[dropNames[k]] = v
		}
	}
	if v := b.slowConsumer(); v > 0 {
		s.Dropped[dropNames[dropInSlowConsumer]] += v
	}
	return s
}

// slowConsumer is what the NATS client dropped for the subscriptions, live and ended.
func (b *Bridge) slowConsumer() uint64 {
	n := b.slowGone.Load()
	b.inMu.RLock()
	defer b.inMu.RUnlock()
	for _, s := range b.subs {
		if d, err := s.Dropped(); err == nil && d > 0 {
			n += uint64(d)
		}
	}
	return n
}

// Close stops the bridge: no local message is taken any more, what the out queue holds is
// published (or, once ctx ends, dropped with reason shutdown), the at-least-once publishes
// are awaited until ctx ends, and the subscriptions and the consumer end (unacked messages
// come again to this node's next run). The metrics stay registered with their last values
// until Close; Close unregisters them. A second Close returns ErrClosed.
func (b *Bridge) Close(ctx context.Context) error {
	if b.closed.Swap(true) {
		return ErrClosed
	}
	b.stopLocal()
	close(b.out)
	var err error
	select {
	case <-b.outDone:
	case <-ctx.Done():
		err = context.Cause(ctx)
		close(b.abort)
		<-b.outDone // each remaining message is counted and skipped
	}
	if b.js != nil && err == nil {
		select {
		case <-b.js.PublishAsyncComplete():
		case <-ctx.Done():
			err = context.Cause(ctx)
		}
	}
	b.stopIn()
	if b.registered {
		b.o.Registerer.Unregister(b.collector)
	}
	if err != nil {
		return fmt.Errorf("natsbus: close: %w", err)
	}
	return nil
}

func (b *Bridge) stopLocal() {
	for _, s := range b.locals {
		s.Unsubscribe() // waits for an onLocal in progress
	}
	b.locals = nil
}

// stopIn ends the inbound side and waits for its handlers.
func (b *Bridge) stopIn() {
	if b.cc != nil {
		b.cc.Stop()
		<-b.cc.Closed()
	}
	var gone uint64
	for _, s := range b.subs {
		if d, err := s.Dropped(); err == nil && d > 0 {
			gone += uint64(d)
		}
		_ = s.Unsubscribe()
	}
	b.inMu.Lock() // waits for a handler in progress
	b.inClosed = true
	b.slowGone.Add(gone)
	b.subs = nil
	b.inMu.Unlock()
}
