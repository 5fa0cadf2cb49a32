package supervisor

import (
	"errors"
	"fmt"
	"time"
)

// Exit reasons. A child's exit reason is the value of [Child.Err]; [Classify]
// sorts it into one of three classes, exactly as OTP does.
var (
	// ErrShutdown is the exit reason of a child that stopped because it was
	// asked to (the OTP reason shutdown). Wrap it, or use [Shutdown], to add
	// detail; the class stays [ExitShutdown].
	ErrShutdown = errors.New("supervisor: shutdown")

	// ErrNormal is an explicit normal exit reason. A nil reason is normal too.
	ErrNormal = errors.New("supervisor: normal exit")

	// ErrKilled is the exit reason of a child ended by [Child.Kill]. It is
	// abnormal, except after a brutal kill during shutdown, where it is expected.
	ErrKilled = errors.New("supervisor: killed")

	// ErrReplaced is the exit reason of a child that ended so as to be
	// replaced, through no failure of its own: a worker whose caller
	// abandoned it midway, a subtree handing over to a fresh incarnation.
	// Wrap it, or use [Replaced], to add detail; the class is
	// [ExitReplaced]: the child is restarted (unless Temporary), and the
	// restart counts neither towards the restart intensity nor as a quick
	// restart (no slow-cycle count, no backoff). Not an OTP reason; see
	// RATIONALE.md, "Containment and quarantine".
	ErrReplaced = errors.New("supervisor: replaced")

	// ErrIgnore, returned by a [Spec] Start function, means "do not start
	// this child, and that is fine" (the OTP start result ignore). The spec is
	// kept without an incarnation, except a Temporary child's, which is dropped.
	ErrIgnore = errors.New("supervisor: ignore")
)

// Errors returned by the supervisor API.
var (
	// ErrInvalidSpec is matched by every [*SpecError], returned by [New] and
	// [Supervisor.StartChild] for an invalid [Spec] or [Config].
	ErrInvalidSpec = errors.New("supervisor: invalid spec")

	// ErrDuplicateID is matched by the [*SpecError] for two specs with one ID
	// passed to [New].
	ErrDuplicateID = errors.New("supervisor: duplicate child ID")

	// ErrAlreadyPresent is returned by [Supervisor.StartChild] when a child
	// with that ID already exists (running or not).
	ErrAlreadyPresent = errors.New("supervisor: child already present")

	// ErrStopped is returned by calls on a supervisor that is stopping, has
	// stopped, or was never started.
	ErrStopped = errors.New("supervisor: not running")

	// ErrNotFound is returned for a child ID the supervisor does not hold.
	ErrNotFound = errors.New("supervisor: no such child")

	// ErrRunning is returned by [Supervisor.RestartChild] and
	// [Supervisor.DeleteChild] for a running child, and by [Supervisor.Start]
	// when called twice.
	ErrRunning = errors.New("supervisor: running")

	// ErrRestarting is returned by [Supervisor.RestartChild] and
	// [Supervisor.DeleteChild] for a child that is waiting to be restarted
	// (after a failed restart or during its backoff).
	ErrRestarting = errors.New("supervisor: child is restarting")

	// ErrDependency is returned when an operation would leave a dependency
	// graph broken: deleting a child others depend on, or restarting a child
	// whose dependencies are not running.
	ErrDependency = errors.New("supervisor: dependency")

	// ErrStaleHandle is returned by [Handle] methods once the incarnation the
	// handle was issued for has ended. It never reaches a successor.
	ErrStaleHandle = errors.New("supervisor: stale handle")

	// ErrMaxChildren is returned by [Supervisor.StartChild] on a [Dynamic]
	// supervisor that already holds [Config.MaxChildren] children.
	ErrMaxChildren = errors.New("supervisor: maximum number of children reached")

	// ErrMaxIntensity is matched by [*IntensityError], the exit reason of a
	// supervisor that reached its maximum restart intensity.
	ErrMaxIntensity = errors.New("supervisor: reached maximum restart intensity")

	// ErrUnstopped is reported (in an EventShutdownError) for a child that
	// was still running Config.KillTimeout after Kill, and was abandoned.
	ErrUnstopped = errors.New("supervisor: child did not stop after Kill")
)

// Shutdown is the OTP reason {shutdown, Reason}: a requested stop that
// carries detail. It is in the class [ExitShutdown].
type Shutdown struct {
	// Reason is the detail; it may be nil.
	Reason error
}

func (e Shutdown) Error() string {
	if e.Reason == nil {
		return ErrShutdown.Error()
	}
	return ErrShutdown.Error() + ": " + e.Reason.Error()
}

// Is reports whether target is [ErrShutdown].
func (e Shutdown) Is(target error) bool { return target == ErrShutdown }

// Unwrap returns the Reason.
func (e Shutdown) Unwrap() error { return e.Reason }

// Replaced is an exit reason of the class [ExitReplaced] that carries why
// the child was replaced (for example the caller's cancellation that ended
// it).
type Replaced struct {
	// Reason is the detail; it may be nil.
	Reason error
}

func (e Replaced) Error() string {
	if e.Reason == nil {
		return ErrReplaced.Error()
	}
	return ErrReplaced.Error() + ": " + e.Reason.Error()
}

// Is reports whether target is [ErrReplaced].
func (e Replaced) Is(target error) bool { return target == ErrReplaced }

// Unwrap returns the Reason.
func (e Replaced) Unwrap() error { return e.Reason }

// ExitClass is the class of an exit reason, which decides a restart.
type ExitClass uint8

const (
	// ExitNormal: a nil reason or [ErrNormal].
	ExitNormal ExitClass = iota
	// ExitShutdown: [ErrShutdown], [Shutdown] or anything wrapping them.
	ExitShutdown
	// ExitAbnormal: any other reason, including [ErrKilled] and [*IntensityError].
	ExitAbnormal
	// ExitReplaced: [ErrReplaced], [Replaced] or anything wrapping them (and
	// not [ErrMaxIntensity]). The child is restarted as after an abnormal exit
	// (unless Temporary), but the restart is not counted towards the
	// intensity, the slow-cycle rule or the backoff. Not an OTP class.
	ExitReplaced
)

func (c ExitClass) String() string {
	switch c {
	case ExitNormal:
		return "normal"
	case ExitShutdown:
		return "shutdown"
	case ExitReplaced:
		return "replaced"
	default:
		return "abnormal"
	}
}

// Classify returns the class of an exit reason. A supervisor that stopped at
// its maximum restart intensity is abnormal even though its children were
// shut down, so that a Transient parent restarts it (see RATIONALE.md). A
// reason matching [ErrReplaced] is [ExitReplaced] whatever it wraps, unless
// it matches [ErrMaxIntensity].
func Classify(reason error) ExitClass {
	switch {
	case reason == nil:
		return ExitNormal
	case errors.Is(reason, ErrMaxIntensity):
		return ExitAbnormal
	case errors.Is(reason, ErrReplaced):
		return ExitReplaced
	case errors.Is(reason, ErrShutdown):
		return ExitShutdown
	case errors.Is(reason, ErrNormal):
		return ExitNormal
	default:
		return ExitAbnormal
	}
}

// SpecError reports an invalid [Spec] or [Config]. It matches
// [ErrInvalidSpec], and its Err (for example [ErrDuplicateID]) when set.
type SpecError struct {
	ID     string // the child's ID; empty for a Config field
	Field  string // the offending field, e.g. "Restart" or "Config.Period"
	Reason string // what is wrong with it
	Err    error  // an optional sentinel, e.g. ErrDuplicateID
}

func (e *SpecError) Error() string {
	if e.ID == "" && len(e.Field) > 7 && e.Field[:7] == "Config." {
		return fmt.Sprintf("supervisor: invalid config: %s: %s", e.Field, e.Reason)
	}
	return fmt.Sprintf("supervisor: invalid spec for child %q: %s: %s", e.ID, e.Field, e.Reason)
}

// Is reports whether target is ErrInvalidSpec.
func (e *SpecError) Is(target error) bool { return target == ErrInvalidSpec }

// Unwrap returns Err.
func (e *SpecError) Unwrap() error { return e.Err }

// StartError is returned by [Supervisor.Start] when a child failed to start
// (the OTP {shutdown,{failed_to_start_child,Id,Reason}}), and by
// [Supervisor.StartChild] and [Supervisor.RestartChild] when the child's Start
// failed. The children started before it have been stopped in reverse order.
type StartError struct {
	Supervisor string
	ID         string
	Err        error
}

func (e *StartError) Error() string {
	return fmt.Sprintf("supervisor %q: child %q failed to start: %v", e.Supervisor, e.ID, e.Err)
}

// Unwrap returns the child's start error.
func (e *StartError) Unwrap() error { return e.Err }

// IntensityError is the exit reason of a supervisor that reached its maximum
// restart intensity. It matches [ErrMaxIntensity] and unwraps to the exit
// reason of the child that tripped it, so that nested escalations form a
// chain from the root down to the leaf.
type IntensityError struct {
	Supervisor string        // the name of the supervisor that gave up
	Child      string        // the ID of the child whose exit tripped the limit
	Restarts   int           // the restarts counted, including the refused one
	Period     time.Duration // the window they were counted in
	// SlowCycle is true when the limit was tripped by consecutive restarts of
	// incarnations that lived less than Config.MinUptime, rather than by the
	// Period window.
	SlowCycle bool
	Err       error // the exit reason of Child
}

func (e *IntensityError) Error() string {
	rule := fmt.Sprintf("%d restarts in %v", e.Restarts, e.Period)
	if e.SlowCycle {
		rule = fmt.Sprintf("%d consecutive restarts below minimum uptime", e.Restarts)
	}
	return fmt.Sprintf("supervisor %q: child %q: %s (%s): %v", e.Supervisor, e.Child, ErrMaxIntensity.Error(), rule, e.Err)
}

// Is reports whether target is ErrMaxIntensity.
func (e *IntensityError) Is(target error) bool { return target == ErrMaxIntensity }

// Unwrap returns the exit reason of the child that tripped the limit.
func (e *IntensityError) Unwrap() error { return e.Err }
