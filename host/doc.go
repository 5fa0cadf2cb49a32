// Package host joins sandbox and supervisor into the object a program embeds: a Host is one
// service context holding an engine (and its compiled-module cache), a root supervisor, a
// registry of plugins, an event bus, a Prometheus registry, a logger and a clock. There is no
// package-level mutable state: two hosts in one process, using the same plugin names, share
// nothing. Package hosttest gives each test a host of its own.
//
//	h, err := host.New(ctx, host.WithLogger(log))
//	defer h.Close(ctx)
//	err = h.Load(ctx, host.Plugin{Name: "authz", Wasm: wasm, Instances: 4,
//		Config: map[string]string{"default": "deny"}})
//	out, err := h.Call(ctx, "authz", "evaluate", input) // survives the plugin crashing
//
// # Supervision
//
// Each plugin is a child of the host's root supervisor (one_for_one): a supervised goroutine
// that owns the plugin's own supervisor over its pool, one child per pool slot, whose Start
// instantiates a fresh sandbox instance and returns it as a supervisor.Child. The child ends
// when a call finds the instance dead (trap, deadline, memory limit, exit, ABI violation),
// when it is killed, or when the supervisor stops it; the supervisor then starts a
// successor, which is a new instance with new memory. Instance restarts count against the
// plugin's own restart intensity (WithRestartIntensity), except two kinds of end that say
// nothing about the plugin's health: a call ended by its caller (cancelled, or past the
// caller's own deadline: sandbox.CallerEnded), and an operation that ran out of the plugin's
// own budget (past its call timeout, or at its memory limit), which the input asked for. Such
// an instance cannot be resumed, but it did not crash: it ends with supervisor.Replaced and is
// restarted without counting (wasmvisor_caller_ended_total, wasmvisor_budget_ended_total), so
// no client can quarantine a plugin by cancelling calls or sending expensive inputs. Traps,
// exits, ABI violations and failed starts count. (A budget end still counts against its
// input in the poison-input window.)
//
// A plugin that exceeds its intensity is contained (Plugin.OnFailure):
//
//   - Quarantine, the default: the plugin enters the failed state (PluginFailed). Its calls
//     fail at once with a *FailedError (ErrPluginFailed) that carries the retry time, and
//     the host probes it in the background after an exponential backoff on its clock
//     (WithQuarantineBackoff): one probe instance first (PluginProbing); if it starts, the
//     plugin is restarted as a whole with the probe in its first slot, and its dependents
//     after it, and it runs again; if not, the backoff doubles. The root supervisor never
//     counts any of this, so no plugin can stop the host. The plugins that depend on a
//     quarantined plugin keep running; they are restarted when it recovers, as after any
//     restart of a dependency. Replace and Reset retry at once. Every transition is an
//     Event (EventQuarantined, EventProbing, EventRecovered, EventProbeFailed) and a metric
//     (wasmvisor_plugin_state, wasmvisor_plugin_transitions_total); PluginState and
//     PluginInfo.State report it without touching an instance.
//   - Escalate, OTP's rule: the root restarts the plugin as a whole (and its dependents
//     after it), counting it against its own intensity, and past it gives up: the host
//     stops (Done, Err) with every plugin.
//
// Independently, an input that has ended instances of a plugin K times within a window
// (WithPoisonInput; 3 in a minute by default) is refused with a *PoisonInputError
// (ErrPoisonInput) without entering an instance, so that one client cannot grind a pool down
// with the same crashing request; the table of such inputs is bounded per host, and a
// healthy call pays one atomic load for it.
//
// Reset, RestartInstance (one pool slot), Unload and Close go through the supervisor
// (terminate, restart, delete child). The background tasks (config retry, bus delivery, and
// each plugin's watcher and prober) are supervised children of the root; the host starts no
// other goroutine, except one per instance reset in flight under InstancePerCall (none for a
// call through CallThen, whose caller runs it), which its member's end cancels and waits for.
//
// # Registry and pool
//
// Names map to plugins in a copy-on-write map behind an atomic pointer, so a call's lookup
// takes no lock. A plugin's pool is a fixed array of slots, each holding its current
// incarnation (an atomic pointer, nil while it restarts). An instance locks itself for each operation and answers sandbox.ErrBusy at once
// when busy, so a call goes to the first instance that takes it, with no lock of the pool's
// own; only when none takes it does the call wait, within its context, on a channel that the
// end of every operation and every start signal. A supervisor stop drains an instance: the
// operation in progress finishes, then the instance ends (sandbox.Instance.Retire). An incarnation clears its slot before it reports its end to
// the supervisor, so the name is released synchronously and the successor's registration can
// never find it taken. Handles (Lookup) name one incarnation and go stale when it ends.
//
// # Isolation
//
// By default (SharedInstance) an instance serves call after call, and a call may see what an
// earlier call left in its memory. Under Plugin.Isolation InstancePerCall every call, bus
// delivery and Handle.Call runs in an instance that has served nothing: after the operation
// the caller starts a reset in the background (a fresh instance from the module, with the
// desired config, as a restart's) and returns; the slot takes no operation until the fresh
// instance is in place, and a call that finds every slot resetting waits within its context
// as for a busy pool. A reset keeps the incarnation and is not a restart: it is counted in
// PluginInfo.Resets and wasmvisor_instance_resets_total, and touches neither the restart
// intensity nor the event stream. An operation that ends its instance (trap, deadline,
// memory) takes the failure path of the default mode. A fresh instance costs what
// sandbox.Code.Instantiate costs (BENCHMARKS.md, "Instance per call"). A caller that calls
// through CallThen gets the result in a callback and then runs the reset itself, on its own
// goroutine: its result does not wait for a goroutine's start, which wakes an idle CPU.
//
// # Config
//
// The host keeps each plugin's desired config, versioned. A new instance starts with it.
// Configure pushes it into every free instance at once; a busy instance gets it when its call
// ends and a restarting one when its successor starts, both by the supervised config task,
// whose work is triggered by the operation end or start that finds the instance stale: latest
// wins, and nothing polls. A config the guest rejects is reported to Configure's caller and
// the last accepted config becomes desired again.
//
// # Bus
//
// Subscribers are Go functions (Subscribe) or plugins (Plugin.Subscribe), each with a
// bounded buffer: a message that does not fit is dropped, counted at once and reported in an
// EventDropped carrying a count (at most one per subscription per second, emitted outside the
// bus lock), never silently and never once per message. Subscribing and monitoring are one step under the bus lock;
// Unsubscribe, Unload and Close remove a subscription before its subscriber ends, and a
// plugin message goes only to an instance currently in its slot, so nothing reaches an ended
// subscriber. Messages for a plugin whose instances are busy or restarting wait in its
// buffer and are delivered by the bus task when an operation ends or an instance starts. Guests
// publish through the ABI's publish import, within Plugin.Limits.Publish. A bridge to other
// nodes (wasmvisor's cluster bus) publishes their messages with PublishRemote, which records
// the node in Message.Node, and forwards only messages without one: nothing is echoed back.
//
// # Guest output
//
// What instances write to stdout, stderr and the log import goes to the logger as lines,
// within Plugin.Limits.Output per operation and per second; the excess is dropped, counted
// (wasmvisor_guest_output_dropped_bytes_total and _total, by plugin and stream) and reported
// as EventOutputDropped, at most once per stream per instance per second.
//
// # Telemetry
//
// Host metrics (calls, errors by kind, latency of every call by default, restarts, live
// instances, memory pages, bus outcomes) and each instance's own telemetry, read from its
// memory at scrape time, are served by a per-host Prometheus registry (Metrics). No series has
// a label named instance or job (Prometheus sets those on every target): a pool position is
// slot. A guest's counters and histograms are also summed per plugin over every instance it
// has had (GuestTotals, wasmvisor_guest_metric_total, wasmvisor_guest_observations): what an
// instance counted is read once more before it is closed, so the sums never go down across
// crashes and restarts. The events guests record go into a per-plugin log with a sequence
// number that goes on across instances (GuestEvents; GuestEventLogSize events,
// GuestEventLogBytes bytes). Host events are typed (Event) and go to the injected zap logger
// (no-op by default) and an optional hook.
package host
