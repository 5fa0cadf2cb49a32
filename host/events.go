package host

import (
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wasmvisor/wasmvisor/supervisor"
	"github.com/wasmvisor/wasmvisor/supervisor/supervisorzap"
)

// EventKind is the kind of an Event.
type EventKind uint8

// Event kinds.
const (
	// EventLoaded: a plugin was loaded and all its instances are ready.
	EventLoaded EventKind = iota + 1
	// EventUnloaded: a plugin was unloaded.
	EventUnloaded
	// EventInstanceStarted: an instance (Instance, Incarnation) is serving.
	EventInstanceStarted
	// EventInstanceEnded: an instance ended (Err); its slot was released before this event.
	EventInstanceEnded
	// EventConfigApplied: an instance holds the desired config (Version).
	EventConfigApplied
	// EventConfigRejected: the guest refused a config (Err); the previous one stays desired.
	EventConfigRejected
	// EventDelivered: a bus message (Topic) reached a subscriber plugin's instance.
	EventDelivered
	// EventDeliveryFailed: a bus message could not be delivered to a plugin (Err).
	EventDeliveryFailed
	// EventDropped: bus messages did not fit in a subscription's buffer (Topic, Subscriber;
	// Count messages of Bytes bytes in all, since the subscription's previous EventDropped).
	// At most one per subscription per second, and one for what is left when the
	// subscription ends or a Flush returns: never one per message.
	EventDropped
	// EventSupervisor: a supervisor event (Supervisor holds it).
	EventSupervisor
	// EventQuarantined: the plugin exceeded its restart intensity and is quarantined (Err:
	// the cause; RetryAt: when the first probe is due). Its calls fail at once.
	EventQuarantined
	// EventProbing: a quarantined plugin's probe instance is starting (Err: the cause of the
	// quarantine).
	EventProbing
	// EventRecovered: a quarantined plugin's pool started again after its probe; it runs.
	EventRecovered
	// EventProbeFailed: a probe (or the pool start that followed it) failed (Err); the plugin
	// stays quarantined and the next probe is due at RetryAt, after a doubled backoff.
	EventProbeFailed
	// EventPoisonInput: an input (Handler, and a hash of the input) has ended instances of the
	// plugin K times within the poison window and is refused from now on (Err is the
	// *PoisonInputError later calls get). Reported once per input and window, not per
	// refusal; refusals are counted in wasmvisor_poison_refused_total.
	EventPoisonInput
	// EventStoreViolation: a read found a store of an instance (Instance, Incarnation)
	// malformed (Err, a *sandbox.ViolationError). Reported once per store and instance; the
	// instance keeps serving calls, and that store is not read again.
	EventStoreViolation
	// EventTelemetryDropped: a plugin's guest telemetry started being left out (Err: matches
	// ErrSeriesLimit when a series cap was reached, sandbox.ErrReadBudget when a scrape's or a
	// listing's read budget ran out). Reported once per transition, not per scrape; the
	// counters in Metrics count every loss.
	EventTelemetryDropped
	// EventOutputDropped: an instance of Plugin dropped output or publishes under its
	// Limits.Output or Limits.Publish (Stream; Bytes, and Count records: see
	// sandbox.DropReport). At most one per stream per instance per second, and one when the
	// instance closes.
	EventOutputDropped
)

var eventNames = [...]string{"", "loaded", "unloaded", "instance started", "instance ended",
	"config applied", "config rejected", "delivered", "delivery failed", "dropped", "supervisor",
	"quarantined", "probing", "recovered", "probe failed", "poison input",
	"store violation", "telemetry dropped", "output dropped"}

func (k EventKind) String() string {
	if int(k) < len(eventNames) {
		return eventNames[k]
	}
	return "unknown"
}

// Event is something that happened in a host. Which fields are set depends on Kind.
type Event struct {
	Kind        EventKind
	Time        time.Time
	Plugin      string
	Instance    int    // the pool slot
	Incarnation uint64 // unique within the host, increasing, never reused
	Version     uint64 // config version
	Topic       string
	Data        []byte // EventDelivered: the payload (do not modify)
	Subscriber  string // "plugin:<name>" or "func:<id>"
	Stream      string // EventOutputDropped: sandbox.StreamStdout, StreamStderr, StreamLog or StreamPublish
	Count       uint64 // EventDropped: messages; EventOutputDropped: records
	Bytes       uint64 // EventDropped, EventOutputDropped: the bytes dropped
	Err         error
	Supervisor  *supervisor.Event
	RetryAt     time.Time // EventQuarantined, EventProbeFailed: the next probe (host clock)
	Handler     string    // EventPoisonInput
}

func (h *Host) emit(e Event) {
	if h.opts.eventHook == nil && !h.log.Core().Enabled(e.level()) {
		return
	}
	e.Time = time.Now()
	if h.opts.eventHook != nil {
		h.opts.eventHook(e)
	}
	if ce := h.log.Check(e.level(), "host: "+e.Kind.String()); ce != nil {
		ce.Write(e.fields()...)
	}
}

func (e Event) level() zapcore.Level {
	switch e.Kind {
	case EventDelivered, EventConfigApplied:
		return zapcore.DebugLevel
	case EventConfigRejected, EventDeliveryFailed, EventDropped, EventPoisonInput, EventProbeFailed,
		EventStoreViolation, EventTelemetryDropped, EventOutputDropped:
		return zapcore.WarnLevel
	case EventQuarantined:
		return zapcore.ErrorLevel
	case EventInstanceEnded:
		if e.Err != nil && supervisor.Classify(e.Err) == supervisor.ExitAbnormal {
			return zapcore.WarnLevel
		}
		return zapcore.InfoLevel
	case EventSupervisor:
		return supervisorzap.Level(*e.Supervisor)
	}
	return zapcore.InfoLevel
}

func (e Event) fields() []zap.Field {
	if e.Kind == EventSupervisor {
		return supervisorzap.Fields(*e.Supervisor)
	}
	f := make([]zap.Field, 0, 8)
	if e.Plugin != "" {
		f = append(f, zap.String("plugin", e.Plugin))
	}
	if e.Incarnation != 0 {
		f = append(f, zap.Int("instance", e.Instance), zap.Uint64("incarnation", e.Incarnation))
	}
	if e.Version != 0 {
		f = append(f, zap.Uint64("config_version", e.Version))
	}
	if e.Topic != "" {
		f = append(f, zap.String("topic", e.Topic))
	}
	if e.Subscriber != "" {
		f = append(f, zap.String("subscriber", e.Subscriber))
	}
	if e.Handler != "" {
		f = append(f, zap.String("handler", e.Handler))
	}
	if !e.RetryAt.IsZero() {
		f = append(f, zap.Time("retry_at", e.RetryAt))
	}
	if e.Stream != "" {
		f = append(f, zap.String("stream", e.Stream))
	}
	if e.Count != 0 || e.Bytes != 0 {
		f = append(f, zap.Uint64("count", e.Count), zap.Uint64("bytes", e.Bytes))
	}
	if e.Err != nil {
		f = append(f, zap.Error(e.Err))
	}
	return f
}

// supervisorHook turns supervisor events into host events: one adapter, never blocking (the
// supervisor already calls it from its own event goroutine).
func (h *Host) supervisorHook(e supervisor.Event) {
	h.emit(Event{Kind: EventSupervisor, Supervisor: &e})
}

// supervisorWants is the supervisors' EventFilter: what supervisorHook would pass on, an event
// emit does not discard (there is an event hook, or the logger logs its level). The others are
// not queued, so that a supervisor does not wake its event goroutine for them: a restart's
// three events did so at every restart, a thread woken through the kernel each time.
func (h *Host) supervisorWants(e supervisor.Event) bool {
	return h.opts.eventHook != nil || h.log.Core().Enabled(supervisorzap.Level(e))
}
