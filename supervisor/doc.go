// Package supervisor implements OTP supervision trees: it starts children in
// order, restarts them by the OTP rules when they exit, and gives up, by
// stopping everything and escalating to its parent, when they crash too
// often. It knows nothing about WebAssembly: a child is anything that can be
// started, waited on, stopped and killed ([Child]), such as a goroutine
// ([Func]) or a sandboxed instance.
//
// # Using it
//
// Declare the children with [Spec] values (ID, Start, and optional restart
// type, shutdown, dependencies, backoff), build a [Supervisor] with [New] and
// a [Config] (strategy, intensity, period), and run it with Start/Stop or
// Serve. [Subtree] nests a supervisor; a [Dynamic] supervisor takes children
// at run time, and [Go] runs awaitable tasks under it. [Supervisor.Children]
// reports each child's state, incarnation and restart count; a [Handle]
// names one incarnation and fails with [ErrStaleHandle] once it has ended.
// Events go to Config.EventHook (see package supervisorzap for zap).
// [Supervisor.RequestStop] asks for a stop without waiting; Done and Err
// report its end. A method that returns ErrStopped or its ctx's error did
// nothing; once the supervisor has taken a request it returns the request's
// own result (see [Supervisor.StartChild]).
//
// # Semantics
//
// The rules are OTP's, documented on each identifier: the restart type ×
// exit class table ([Classify]), the strategies, the intensity check before
// each restart (one crash counts once), the shutdown order and the
// classification of how a child ends while being stopped. The differences,
// each argued in RATIONALE.md under "supervisor":
//
//   - The intensity window uses full Duration precision on an injected
//     [Clock], boundary inclusive (OTP truncates to whole seconds).
//   - A supervisor that reaches its maximum intensity exits with an
//     [*IntensityError], which is abnormal: a Transient parent restarts it.
//     OTP exits with shutdown, and escalation through a transient parent is
//     silently lost.
//   - The slow-cycle loophole is closed by Config.MinUptime: more than
//     Intensity consecutive restarts of one child whose incarnations never
//     lived MinUptime end the supervisor whatever the period.
//   - Dependencies (Spec.DependsOn) extend every strategy: a child's
//     restart also restarts its transitive dependents, stopped in reverse
//     and started in order; a dependent never runs while a dependency is down.
//   - Per-child backoff (Spec.Backoff) delays restarts with timer messages.
//   - A fourth exit class, [ExitReplaced] ([ErrReplaced], [Replaced]): a
//     child that ended so as to be replaced, through no failure of its own
//     (the host's instance whose caller went away mid-call), is restarted
//     without counting towards the intensity, the slow-cycle rule or the
//     backoff; [ChildInfo].Replaced counts such restarts.
//
// # Design
//
// Each supervisor is an event loop: one goroutine owns all its state, and
// API calls, child exits and timers reach it as messages, so there are no
// locks on the state and no lock-ordering bugs. Child exits and timers are
// queued without blocking; while the loop starts or stops a child it is
// busy, as an OTP supervisor is, but a retry after a failed restart is
// re-queued so that calls are served between attempts. Events are copied
// into a bounded queue and delivered by one goroutine per tree; a slow or
// panicking hook loses events (counted by [Supervisor.DroppedEvents]) but
// never blocks the loop.
//
// Every goroutine the package starts ends before [Supervisor.Done] is
// closed, except those of a child that ignores its stop (see [Func]).
package supervisor
