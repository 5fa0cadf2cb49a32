package supervisor

import (
	"context"
	"fmt"
	"math"
	"time"
)

// RestartType says when a child is restarted after it exits by itself.
type RestartType uint8

const (
	// Permanent children are always restarted. The default.
	Permanent RestartType = iota
	// Transient children are restarted only after an abnormal exit.
	Transient
	// Temporary children are never restarted; their spec is dropped when
	// they exit.
	Temporary
)

func (r RestartType) String() string {
	switch r {
	case Permanent:
		return "permanent"
	case Transient:
		return "transient"
	case Temporary:
		return "temporary"
	}
	return fmt.Sprintf("RestartType(%d)", uint8(r))
}

// ChildType tells a worker from a nested supervisor. It changes the default
// shutdown timeout and is reported by [Supervisor.Children].
type ChildType uint8

const (
	// TypeWorker is the default.
	TypeWorker ChildType = iota
	// TypeSupervisor marks a child that is itself a supervisor (see [Subtree]).
	TypeSupervisor
)

func (c ChildType) String() string {
	if c == TypeSupervisor {
		return "supervisor"
	}
	return "worker"
}

// Shutdown timeouts with a special meaning, for [Spec].Shutdown.
const (
	// BrutalKill ends the child with [Child.Kill] at once.
	BrutalKill time.Duration = -1
	// Infinity waits for the child to stop, however long it takes. The
	// default for supervisor children.
	Infinity time.Duration = math.MaxInt64
	// DefaultShutdown is the default for workers.
	DefaultShutdown = 5 * time.Second
	// DefaultKillTimeout is how long a supervisor waits for a killed child
	// to end when Config.KillTimeout is zero.
	DefaultKillTimeout = 5 * time.Second
)

// Spec describes one child. Only ID and Start are required; the zero value
// of every other field is a working default.
type Spec struct {
	// ID names the child within its supervisor. Required, and unique within
	// it, except under a Dynamic supervisor, where an empty ID is replaced
	// by a generated one.
	ID string

	// Start starts one incarnation of the child and returns only when it is
	// ready. ctx bounds the start only (it is cancelled when the supervisor
	// stops, when StartTimeout expires, or when a StartChild caller gives
	// up); the child's lifetime is governed by Stop and Kill. Returning
	// ErrIgnore skips the child. Start runs on the supervisor's goroutine: it
	// must not call back into its own supervisor. See [Func].
	Start func(ctx context.Context) (Child, error)

	// Restart is the restart type. Default Permanent.
	Restart RestartType

	// Shutdown is how long a stop waits for the child before killing it:
	// BrutalKill, Infinity, or a positive timeout. Zero means
	// DefaultShutdown for a worker and Infinity for a supervisor.
	Shutdown time.Duration

	// StartTimeout bounds Start, measured on the supervisor's Clock. Zero
	// means no bound.
	StartTimeout time.Duration

	// Type is TypeWorker (default) or TypeSupervisor.
	Type ChildType

	// Significant children end their supervisor when they exit by themselves
	// and are not restarted, as Config.AutoShutdown says. Invalid for
	// Permanent children and when AutoShutdown is Never.
	Significant bool

	// DependsOn lists the IDs of children this one needs. They must be
	// declared (or added) before it and must not be Temporary. The child
	// starts only after they are ready; when one of them is restarted or
	// stops, this child is stopped first and restarted after it. Not
	// allowed under a Dynamic supervisor.
	DependsOn []string

	// Backoff delays this child's restarts. The zero value restarts at once,
	// as OTP does.
	Backoff Backoff

	// final, when set, is called from the supervisor's goroutine once the
	// child is gone for good (used by tasks).
	final func(reason error)
}

// Backoff is a per-child restart delay. The n-th consecutive quick restart
// of a child (one whose previous incarnation lived less than
// Config.MinUptime, or Period when that rule is disabled) waits Initial·2^(n-1), capped at Max, then stretched by
// a random factor in [1, 1+Jitter). The wait is a timer message to the
// supervisor, which stays responsive; terminating the child cancels it.
// Restarts still count towards the restart intensity when they are decided,
// before the wait.
type Backoff struct {
	Initial time.Duration // first delay; zero disables backoff
	Max     time.Duration // cap; zero means no cap
	Jitter  float64       // fraction of random stretch, in [0, 1]
}

func (b Backoff) delay(n int, rnd func() float64) time.Duration {
	if b.Initial <= 0 {
		return 0
	}
	d := b.Initial
	for i := 1; i < n; i++ {
		if (b.Max > 0 && d >= b.Max) || d > math.MaxInt64/4 {
			break
		}
		d *= 2
	}
	if b.Max > 0 && d > b.Max {
		d = b.Max
	}
	if b.Jitter > 0 {
		d += time.Duration(float64(d) * b.Jitter * rnd())
	}
	return d
}

// Strategy says which children are restarted with a crashed one.
type Strategy uint8

const (
	// OneForOne restarts the crashed child (and its dependents). The default.
	OneForOne Strategy = iota
	// OneForAll stops all other children in reverse start order and restarts
	// them all in start order.
	OneForAll
	// RestForOne stops the children started after the crashed one, in
	// reverse order, and restarts it and them in start order.
	RestForOne
	// Dynamic is one-for-one over children added at run time with
	// StartChild (OTP simple_one_for_one, Elixir DynamicSupervisor): IDs are
	// optional, MaxChildren caps the count, a child that is not restarted is
	// removed, and shutdown stops all children concurrently.
	Dynamic
)

func (s Strategy) String() string {
	switch s {
	case OneForOne:
		return "one_for_one"
	case OneForAll:
		return "one_for_all"
	case RestForOne:
		return "rest_for_one"
	case Dynamic:
		return "dynamic"
	}
	return fmt.Sprintf("Strategy(%d)", uint8(s))
}

// AutoShutdown says whether significant children end their supervisor.
type AutoShutdown uint8

const (
	// Never: significant children are not allowed. The default.
	Never AutoShutdown = iota
	// AnySignificant: the supervisor stops when any significant child exits
	// by itself and is not restarted.
	AnySignificant
	// AllSignificant: the supervisor stops when the last significant child
	// still alive (running or waiting to restart) exits by itself and is not
	// restarted.
	AllSignificant
)

// Defaults for Config.
const (
	// DefaultIntensity is the restart intensity when Config.Intensity is
	// zero: Elixir's 3, rather than OTP's 1 (see RATIONALE.md).
	DefaultIntensity = 3
	// DefaultPeriod is the window when Config.Period is zero: 5 s, as in
	// OTP and Elixir.
	DefaultPeriod = 5 * time.Second
	// NoRestarts, as Config.Intensity, allows no restart at all (OTP
	// intensity 0): the first restart ends the supervisor.
	NoRestarts = -1
	// DefaultEventBuffer is the event queue length when Config.EventBuffer is
	// zero.
	DefaultEventBuffer = 1024
)

// Config configures a supervisor. The zero value is a working one-for-one
// supervisor allowing 3 restarts in 5 seconds.
type Config struct {
	// Name identifies the supervisor in events and errors. A nested
	// supervisor with no name is called "<parent>/<child ID>".
	Name string

	// Strategy is the restart strategy. Default OneForOne.
	Strategy Strategy

	// Intensity is the number of restarts allowed within Period; one more
	// ends the supervisor with an *IntensityError. Zero means
	// DefaultIntensity; NoRestarts means none.
	Intensity int

	// Period is the sliding window for Intensity, measured on Clock with
	// full Duration precision and an inclusive boundary: a restart exactly
	// Period ago still counts. Zero means DefaultPeriod.
	Period time.Duration

	// MinUptime closes the slow-cycle loophole: a restart whose previous
	// incarnation lived less than MinUptime (or never became ready) is
	// "quick", and more than Intensity consecutive quick restarts of one
	// child end the supervisor whatever the Period. Zero means Period;
	// negative disables the rule.
	MinUptime time.Duration

	// AutoShutdown says whether significant children end the supervisor.
	AutoShutdown AutoShutdown

	// MaxChildren caps the children of a Dynamic supervisor; zero means no
	// cap. Not allowed with other strategies.
	MaxChildren int

	// Clock measures intensity windows, uptimes, backoffs and timeouts.
	// Nil means real time; a nested supervisor inherits its parent's.
	Clock Clock

	// EventHook receives every Event, in order, on a goroutine of its own:
	// it can be slow or panic without affecting the supervisor. Events that
	// do not fit in the queue are dropped and counted (DroppedEvents). The
	// hook must not call Stop on a supervisor it observes and wait for it.
	// Nil discards events; a nested supervisor inherits its parent's.
	EventHook func(Event)

	// EventFilter, if set with EventHook, says which events the hook wants:
	// the others are not queued (nor counted as dropped), so a supervisor
	// whose hook would discard them does not wake the hook's goroutine for
	// them. It runs on the goroutine that emits the event, under the
	// supervisor's turn, before Time is set: it must be quick, must not
	// block and must not call the supervisor. An event it panics on is
	// queued. A nested supervisor that inherits its parent's hook inherits
	// its filter too.
	EventFilter func(Event) bool

	// EventBuffer is the length of the event queue. Zero means
	// DefaultEventBuffer.
	EventBuffer int

	// KillTimeout bounds the wait for a child to end after Kill. A child
	// still running then (one that ignores Kill, such as a goroutine blocked
	// in code that never looks at its context) is abandoned: the stop goes
	// on without it, an EventShutdownError reports it with ErrUnstopped, and
	// Unstopped counts it. Zero means DefaultKillTimeout; Infinity waits for
	// ever, as OTP does.
	KillTimeout time.Duration
}

// limits holds the normalized restart-limit settings.
type limits struct {
	intensity   int
	period      time.Duration
	minUptime   time.Duration
	killTimeout time.Duration
}

func (c *Config) validate() (limits, error) {
	bad := func(field, reason string) (limits, error) {
		return limits{}, &SpecError{Field: "Config." + field, Reason: reason}
	}
	var l limits
	switch {
	case c.Intensity == 0:
		l.intensity = DefaultIntensity
	case c.Intensity == NoRestarts:
		l.intensity = 0
	case c.Intensity < 0:
		return bad("Intensity", fmt.Sprintf("%d is negative (use NoRestarts for none)", c.Intensity))
	default:
		l.intensity = c.Intensity
	}
	switch {
	case c.Period == 0:
		l.period = DefaultPeriod
	case c.Period < 0:
		return bad("Period", fmt.Sprintf("%v is negative", c.Period))
	default:
		l.period = c.Period
	}
	switch {
	case c.MinUptime == 0:
		l.minUptime = l.period
	case c.MinUptime < 0:
		l.minUptime = 0
	default:
		l.minUptime = c.MinUptime
	}
	if c.Strategy > Dynamic {
		return bad("Strategy", fmt.Sprintf("unknown strategy %d", c.Strategy))
	}
	if c.AutoShutdown > AllSignificant {
		return bad("AutoShutdown", fmt.Sprintf("unknown value %d", c.AutoShutdown))
	}
	if c.MaxChildren < 0 {
		return bad("MaxChildren", "negative")
	}
	if c.MaxChildren > 0 && c.Strategy != Dynamic {
		return bad("MaxChildren", "only a Dynamic supervisor has a maximum child count")
	}
	if c.EventBuffer < 0 {
		return bad("EventBuffer", "negative")
	}
	switch {
	case c.KillTimeout == 0:
		l.killTimeout = DefaultKillTimeout
	case c.KillTimeout < 0:
		return bad("KillTimeout", fmt.Sprintf("%v is negative", c.KillTimeout))
	default:
		l.killTimeout = c.KillTimeout
	}
	return l, nil
}

// validateSpec checks one spec on its own and against the supervisor's
// config. exists reports whether an ID is already taken and, if so, whether
// it is Temporary.
func validateSpec(sp *Spec, cfg *Config, exists func(id string) (found, temporary bool)) error {
	bad := func(field, reason string) error { return &SpecError{ID: sp.ID, Field: field, Reason: reason} }
	if sp.ID == "" && cfg.Strategy != Dynamic {
		return bad("ID", "empty")
	}
	if sp.Start == nil {
		return bad("Start", "nil")
	}
	if sp.Restart > Temporary {
		return bad("Restart", fmt.Sprintf("unknown restart type %d", sp.Restart))
	}
	if sp.Type > TypeSupervisor {
		return bad("Type", fmt.Sprintf("unknown child type %d", sp.Type))
	}
	if sp.Shutdown < 0 && sp.Shutdown != BrutalKill {
		return bad("Shutdown", fmt.Sprintf("%v is negative and not BrutalKill", sp.Shutdown))
	}
	if sp.StartTimeout < 0 {
		return bad("StartTimeout", "negative")
	}
	if sp.Significant && sp.Restart == Permanent {
		return bad("Significant", "a permanent child cannot be significant")
	}
	if sp.Significant && cfg.AutoShutdown == Never {
		return bad("Significant", "significant child under a supervisor with AutoShutdown Never")
	}
	b := sp.Backoff
	if b.Initial < 0 || b.Max < 0 || (b.Max > 0 && b.Max < b.Initial) {
		return bad("Backoff", "delays must be non-negative and Max at least Initial")
	}
	if b.Jitter < 0 || b.Jitter > 1 || b.Jitter != b.Jitter {
		return bad("Backoff", "Jitter must be in [0, 1]")
	}
	if len(sp.DependsOn) > 0 && cfg.Strategy == Dynamic {
		return bad("DependsOn", "not allowed under a Dynamic supervisor")
	}
	seen := make(map[string]bool, len(sp.DependsOn))
	for _, d := range sp.DependsOn {
		if d == sp.ID {
			return bad("DependsOn", "a child cannot depend on itself")
		}
		if seen[d] {
			return bad("DependsOn", fmt.Sprintf("%q listed twice", d))
		}
		seen[d] = true
		found, temp := exists(d)
		if !found {
			return bad("DependsOn", fmt.Sprintf("%q is not declared before this child", d))
		}
		if temp {
			return bad("DependsOn", fmt.Sprintf("%q is temporary", d))
		}
	}
	return nil
}

func (sp *Spec) shutdownTimeout() time.Duration {
	if sp.Shutdown != 0 {
		return sp.Shutdown
	}
	if sp.Type == TypeSupervisor {
		return Infinity
	}
	return DefaultShutdown
}
