package sandbox

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"os"
	"path"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/sys"

	"github.com/wasmvisor/wasmvisor/abi"
)

// Clock selects the clocks a guest sees through WASI.
type Clock int

const (
	// ClockDeterministic, the default, gives every instance the same fake clocks: the wall
	// clock starts at a fixed instant and both clocks advance by one millisecond per reading,
	// and sleeping returns at once. Tests of a plugin are then reproducible.
	ClockDeterministic Clock = iota
	// ClockReal gives the host's wall and monotonic clocks, and real sleeps (cut short when
	// the call is stopped). A policy that checks token expiry needs it.
	ClockReal
)

// Random selects the guest's source of random bytes.
type Random int

const (
	// RandomDeterministic, the default, gives every instance the same seeded sequence.
	RandomDeterministic Random = iota
	// RandomCrypto gives the host's cryptographic random source.
	RandomCrypto
)

// Dir is a host directory mounted read-only into the guest, confined: the guest reaches
// nothing outside it, neither by ".." nor by a symbolic link (a link inside the directory
// works if it is relative and stays inside; an absolute link, or one that leads out, is an
// error for the guest). Each instance opens the directory when it starts (an os.Root) and
// closes it when it closes.
type Dir struct {
	Host  string // a directory on the host
	Guest string // where the guest sees it, an absolute path such as "/data"
}

// Capabilities grant a plugin access beyond its sandbox. The zero value grants nothing: no
// files, no environment, no arguments, no sockets, deterministic clocks and randomness.
type Capabilities struct {
	// Env sets environment variables in the guest.
	Env map[string]string
	// InheritEnv names host environment variables passed to the guest when they are set.
	InheritEnv []string
	// Dirs are mounted read-only.
	Dirs []Dir
	// Clock selects the guest's clocks. Default ClockDeterministic.
	Clock Clock
	// Random selects the guest's random source. Default RandomDeterministic.
	Random Random
	// HostFunctions names the functions of Config.HostFuncs the guest may call (see
	// HostFunc). A guest asking for any other gets abi.HostFnDenied. Default: none.
	HostFunctions []string
}

func (c Capabilities) validate() error {
	for _, d := range c.Dirs {
		if !path.IsAbs(d.Guest) {
			return fmt.Errorf("sandbox: mount %q: guest path must be absolute: %w", d.Guest, ErrInvalidConfig)
		}
		st, err := os.Stat(d.Host)
		if err != nil {
			return fmt.Errorf("sandbox: mount %q: %w: %w", d.Host, ErrInvalidConfig, err)
		}
		if !st.IsDir() {
			return fmt.Errorf("sandbox: mount %q: not a directory: %w", d.Host, ErrInvalidConfig)
		}
	}
	if c.Clock != ClockDeterministic && c.Clock != ClockReal {
		return fmt.Errorf("sandbox: unknown clock %d: %w", c.Clock, ErrInvalidConfig)
	}
	if c.Random != RandomDeterministic && c.Random != RandomCrypto {
		return fmt.Errorf("sandbox: unknown random source %d: %w", c.Random, ErrInvalidConfig)
	}
	return nil
}

// baseConfig turns the grants into wazero's module config, the part shared by every
// instance of a module; withInstance adds each instance's own streams and sleep. What use
// says the module's imports cannot reach gets a stand-in here instead (unreached), so that
// neither withInstance nor wazero makes one per instance.
func (c Capabilities) baseConfig(use wasiUse) wazero.ModuleConfig {
	mc := wazero.NewModuleConfig().
		WithName(""). // anonymous: any number of instances of one module
		WithStartFunctions()
	for k, v := range c.Env {
		mc = mc.WithEnv(k, v)
	}
	for _, k := range c.InheritEnv {
		if v, ok := os.LookupEnv(k); ok {
			mc = mc.WithEnv(k, v)
		}
	}
	if c.Clock == ClockReal {
		mc = mc.WithSysWalltime().WithSysNanotime()
	} else {
		mc = mc.WithNanosleep(func(int64) {})
	}
	if use&wasiStreams == 0 {
		mc = mc.WithStdout(unreached{}).WithStderr(unreached{})
	}
	if use&wasiRandom == 0 {
		mc = mc.WithRandSource(unreached{}) // else wazero seeds a source of its own per instance
	}
	if use&wasiClocks == 0 && c.Clock == ClockDeterministic {
		mc = mc.WithWalltime(unreachedWalltime, sys.ClockResolution(1000)).WithNanotime(unreachedNanotime, 1)
	}
	return mc
}

// wasiUse is which of an instance's own WASI state its module's imports can reach: its
// streams, its random source, its clocks, its sleep. withInstance gives an instance only
// those, since each is a copy of wazero's module config (WithStdout and the like clone it:
// a struct and a map), and the five of them were a sixth of a small instance's start
// (BenchmarkLiveInstances). RATIONALE.md, "What an instance's start still pays".
type wasiUse uint8

const (
	wasiStreams wasiUse = 1 << iota // stdout and stderr: the functions that take a descriptor
	wasiRandom                      // random_get
	wasiClocks                      // clock_time_get, clock_res_get, poll_oneoff
	wasiSleep                       // poll_oneoff

	wasiAll = wasiStreams | wasiRandom | wasiClocks | wasiSleep
)

// wasiUseOf is what a module with these imports can reach (wazero reads the streams, the
// random source, the clocks and the sleep only from those functions).
func wasiUseOf(imports []Symbol) wasiUse {
	var u wasiUse
	for _, s := range imports {
		if s.Module != abi.WASIModule {
			continue
		}
		switch {
		case strings.HasPrefix(s.Name, "fd_"), strings.HasPrefix(s.Name, "sock_"): // by descriptor
			u |= wasiStreams
		case s.Name == "random_get":
			u |= wasiRandom
		case strings.HasPrefix(s.Name, "clock_"):
			u |= wasiClocks
		case s.Name == "poll_oneoff":
			u |= wasiClocks | wasiSleep
		}
	}
	return u
}

// unreached stands in for the streams and the random source of a module that imports no
// function that could use them (see wasiUse). Should wazero ever call it, the guest gets an
// error, not another instance's stream.
type unreached struct{}

var errUnreached = errors.New("sandbox: the module imports no function for this")

func (unreached) Write([]byte) (int, error) { return 0, errUnreached }
func (unreached) Read([]byte) (int, error)  { return 0, errUnreached }

func unreachedWalltime() (sec int64, nsec int32) { return 0, 0 }
func unreachedNanotime() int64                   { return 0 }

// clocks are the fake clocks an instance's WASI reads.
type clocks interface {
	walltime() (sec int64, nsec int32)
	nanotime() int64
}

// fakeClock is an instance's pair of ClockDeterministic clocks, as wazero's defaults: the
// wall clock reads midnight UTC 2022-01-01 first, the monotonic clock 0, and each reading is
// 1 ms later than the one before. They are the sandbox's rather than wazero's so that
// Instance.Rewind can set them back (wazero keeps its own in the instance, out of reach).
type fakeClock struct {
	wall, nano atomic.Int64 // the last readings
}

// fakeEpoch is the wall clock's first reading, in nanoseconds since 1970.
const fakeEpoch = 1640995200 * int64(time.Second)

func (c *fakeClock) reset() {
	c.wall.Store(fakeEpoch - int64(time.Millisecond))
	c.nano.Store(-int64(time.Millisecond))
}

func (c *fakeClock) walltime() (sec int64, nsec int32) {
	t := c.wall.Add(int64(time.Millisecond))
	return t / 1e9, int32(t % 1e9)
}

func (c *fakeClock) nanotime() int64 { return c.nano.Add(int64(time.Millisecond)) }

// randSource is an instance's own random source: the host's, or the seeded sequence every
// instance starts again (wazero's default, seed 42).
func (c Capabilities) randSource() io.Reader {
	if c.Random == RandomCrypto {
		return rand.Reader
	}
	// ChaCha8 with a fixed seed: the same sequence for every instance, at the cost of a
	// 32-byte key setup (math/rand's NewSource seeded 607 words, a fifth of a small
	// instance's start).
	return mathrand.NewChaCha8(deterministicSeed)
}

// instanceRand is randSource for a native instance: with RandomDeterministic, the instance's
// own ChaCha8 cc, seeded.
func (c Capabilities) instanceRand(cc *mathrand.ChaCha8) io.Reader {
	if c.Random == RandomCrypto {
		return rand.Reader
	}
	cc.Seed(deterministicSeed)
	return cc
}

// deterministicSeed seeds RandomDeterministic.
var deterministicSeed = [32]byte{42}

// withInstance adds an instance's stdout, stderr, random source, directories (the roots it
// opened, which the instance closes), with ClockReal its interruptible sleep, and otherwise
// its fake clocks (clk; nil: wazero's, which behave the same): of the streams, the random
// source, the clocks and the sleep, only those use includes (base has the rest).
func (c Capabilities) withInstance(base wazero.ModuleConfig, use wasiUse, stdout, stderr io.Writer, random io.Reader, sleep func(ns int64), roots []*os.Root, clk clocks) wazero.ModuleConfig {
	mc := base
	if use&wasiStreams != 0 {
		mc = mc.WithStdout(stdout).WithStderr(stderr)
	}
	if use&wasiRandom != 0 {
		mc = mc.WithRandSource(random)
	}
	if use&wasiClocks != 0 && c.Clock == ClockDeterministic && clk != nil { // nil: wazero's, the same (formats)
		mc = mc.WithWalltime(clk.walltime, sys.ClockResolution(1000)).WithNanotime(clk.nanotime, 1)
	}
	if len(roots) > 0 {
		fsc := wazero.NewFSConfig()
		for n, r := range roots {
			// wazero adapts an fs.FS read-only; os.Root confines every path (after wazero
			// cleans it, relative to the mount) to the directory, and every link it follows.
			fsc = fsc.WithFSMount(r.FS(), c.Dirs[n].Guest)
		}
		mc = mc.WithFSConfig(fsc)
	}
	if use&wasiSleep != 0 && c.Clock == ClockReal {
		mc = mc.WithNanosleep(sleep)
	}
	return mc
}

// openDirs opens the granted directories for one instance. The caller closes the roots.
func (c Capabilities) openDirs() ([]*os.Root, error) {
	if len(c.Dirs) == 0 {
		return nil, nil
	}
	roots := make([]*os.Root, 0, len(c.Dirs))
	for _, d := range c.Dirs {
		r, err := os.OpenRoot(d.Host)
		if err != nil {
			closeRoots(roots)
			return nil, fmt.Errorf("sandbox: mount %q: %w: %w", d.Host, ErrInvalidConfig, err)
		}
		roots = append(roots, r)
	}
	return roots, nil
}

func closeRoots(roots []*os.Root) {
	for _, r := range roots {
		_ = r.Close()
	}
}
