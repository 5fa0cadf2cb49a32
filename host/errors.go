package host

import (
	"errors"
	"fmt"
)

// Errors returned by the host. Errors from the sandbox (a trap, a deadline, a guest error) are
// passed through wrapped, so errors.Is(err, sandbox.ErrTrap) works on what Call returns.
var (
	// ErrNotFound is returned for a plugin name the host does not hold, and by a call
	// waiting for an instance of a plugin that is unloaded meanwhile.
	ErrNotFound = errors.New("host: no such plugin")
	// ErrAlreadyLoaded is returned by Load for a name the host already holds.
	ErrAlreadyLoaded = errors.New("host: plugin already loaded")
	// ErrNoInstance is returned by Call (and Configure, Deliver) when no instance of the
	// plugin became free before the caller's context ended. It wraps the context's error.
	ErrNoInstance = errors.New("host: no free instance")
	// ErrClosed is returned by every method of a closed Host, and by calls waiting when the
	// host's supervisor gave up.
	ErrClosed = errors.New("host: closed")
	// ErrDependency is returned by Load when a plugin named in DependsOn is not loaded, and
	// by Unload when another plugin depends on the one being unloaded.
	ErrDependency = errors.New("host: dependency")
	// ErrInvalidPlugin is returned by Load for a Plugin that cannot be loaded as given (no
	// name, no code, both Wasm and Path, a negative instance count).
	ErrInvalidPlugin = errors.New("host: invalid plugin")
	// ErrPluginFailed is returned by calls to a plugin that is quarantined: it exceeded its
	// restart intensity, its calls fail at once, and the host retries it in the background.
	ErrPluginFailed = errors.New("host: plugin failed")
	// ErrPoisonInput is returned, without entering an instance, for an input that has ended
	// instances of the plugin too often within the poison window.
	ErrPoisonInput = errors.New("host: poison input")
	// ErrSeriesLimit is matched by the Err of an EventTelemetryDropped when a plugin's guest
	// metrics reached a series cap (see WithGuestSeriesLimits).
	ErrSeriesLimit = errors.New("host: guest series limit reached")
	// ErrInvalidMessage is returned by PublishRemote for a message that names no node.
	ErrInvalidMessage = errors.New("host: invalid message")
	// ErrLeak is returned by Close when an instance the host started was not closed: a bug in
	// the host, reported rather than hidden.
	ErrLeak = errors.New("host: instances leaked")
)

// errAlreadyRegistered ends the start of an instance whose slot is still held by its
// predecessor. It cannot happen (the predecessor releases its slot before it reports its
// end); it exists so that a regression is a start failure that tests see, not a silent
// double registration.
var errAlreadyRegistered = errors.New("host: instance slot still registered")

func pluginErr(name, op string, err error) error {
	return fmt.Errorf("plugin %q: %s: %w", name, op, err)
}
