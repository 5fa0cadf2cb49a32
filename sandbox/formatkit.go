package sandbox

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/tetratelabs/wazero"
	"go.uber.org/zap"

	"github.com/wasmvisor/wasmvisor/internal/guestio"
)

// What a Format (see Format) needs from the sandbox to honour a Config as the native ABI
// does: the limits' and grants' validation, the grants as wazero module configs, and the
// trap parser. Written once, here; packages sandbox/extism and sandbox/opa use them. (An internal package
// cannot hold them: they are methods of this package's public types, and a copy of those
// types below the package would be the second copy this avoids.)

// Validate reports limits that cannot be honoured (a memory limit above 65,536 pages) as
// ErrInvalidConfig. The zero fields are the defaults and valid.
func (l Limits) Validate() error {
	if l.MemoryPages > 65536 {
		return fmt.Errorf("sandbox: memory limit %d pages: at most 65536: %w", l.MemoryPages, ErrInvalidConfig)
	}
	return nil
}

// Validate reports grants that cannot be honoured as ErrInvalidConfig: a relative guest
// path, a host directory that does not exist or is not a directory, an unknown clock or
// random source. Host function grants are checked against the offered functions by
// Config.GrantedHostFuncs.
func (c Capabilities) Validate() error { return c.validate() }

// ModuleConfig is the wazero module config the grants give every instance of a module:
// environment variables (Env, InheritEnv read now), clocks, an anonymous name and no start
// functions. InstanceConfig adds each instance's own part.
func (c Capabilities) ModuleConfig() wazero.ModuleConfig { return c.baseConfig(wasiAll) }

// InstanceConfig adds one instance's own part to base (a ModuleConfig): its stdout and
// stderr, its random source (the same seeded sequence for every instance, or the host's with
// RandomCrypto), its directory grants, opened now and confined (each an os.Root, mounted
// read-only), and, with ClockReal, sleep as its nanosleep (nil: an uninterruptible sleep). The returned
// Closer closes the directories: call it when the instance is closed, or when starting it
// fails. A directory that cannot be opened is ErrInvalidConfig.
func (c Capabilities) InstanceConfig(base wazero.ModuleConfig, stdout, stderr io.Writer, sleep func(ns int64)) (wazero.ModuleConfig, io.Closer, error) {
	roots, err := c.openDirs()
	if err != nil {
		return nil, nil, err
	}
	if sleep == nil {
		sleep = func(ns int64) { time.Sleep(time.Duration(ns)) }
	}
	mc := c.withInstance(base, wasiAll, stdout, stderr, c.randSource(), sleep, roots, nil)
	return mc, rootsCloser(roots), nil
}

type rootsCloser []*os.Root

func (r rootsCloser) Close() error {
	closeRoots(r)
	return nil
}

// ParseTrap turns the message of an error wazero returned from a guest's code into a
// *TrapError: its trap kind when wazero names one, the first line as the message otherwise,
// and the guest's stack.
func ParseTrap(msg string) *TrapError { return trapOf(msg) }

// DropReporter is how a format's instances report the output they drop (internal/guestio),
// as the native ABI's do: each drop to c.OnDrop, or, without one, as one warning on logger.
func (c Config) DropReporter(logger *zap.Logger) func(guestio.Drop) {
	report := c.OnDrop
	if report == nil {
		report = func(d DropReport) { logDrop(logger, d) }
	}
	return func(d guestio.Drop) { report(dropReport(d)) }
}

// Budget is l as internal/guestio meters a stream of guest output.
func (l OutputLimits) Budget() guestio.Limits { return l.budget() }
