// Package opa is the Open Policy Agent format of package sandbox: register Format on an
// engine (sandbox.WithFormats) or a host (host.WithFormats) and it loads the policies that
// `opa build -t wasm` compiles from Rego. Only programs that import this package link it; it
// links no OPA code: it serves OPA's documented Wasm ABI itself, in pure Go on wazero.
//
// A policy's handlers are its entrypoints (`opa build -e example/allow` gives the handler
// "example/allow") and DefaultHandler, "default", which evaluates entrypoint 0 (the first
// -e). A call's input is the Rego input document as JSON; its output is the
// result set as OPA's opa_eval returns it, e.g. [{"result":true}]. The data document is the
// instance config's key "data" (JSON; none means {}), given at Instantiate and replaceable
// by Configure: a document that is not valid JSON, or that the guest cannot parse, is
// refused (at Instantiate with sandbox.ErrInvalidConfig; by Configure as a native plugin
// refuses a config, a *sandbox.GuestError with abi.StatusConfigRejected), and the last good
// one stays.
//
// A bundle as `opa build -t wasm` writes it (bundle.tar.gz: policy.wasm, data.json,
// .manifest) is taken as is wherever a policy is: Format claims it (IsBundle), Compile reads
// it with ReadBundle (bounded: MaxBundleBytes, MaxBundleEntries, no path out of the bundle,
// no links; a *BundleError otherwise), compiles its /policy.wasm, and gives its data.json as
// the data document of an instance whose config has no "data". The code's digest is the
// bundle's. The manifest (roots, revision) and signatures are not checked.
//
// # Mapping of the sandbox's contract
//
//   - OPA modules import their memory (env.memory). Compile turns that import into a memory
//     the module defines (each instance has its own) with its maximum clamped to
//     Limits.MemoryPages; a growth past it fails in the guest, which aborts, and the call
//     fails with a *sandbox.MemoryLimitError. An input that does not fit is the same error.
//   - Limits.CallTimeout, the caller's context and Kill stop a call as in package
//     sandbox/extism: the module is instrumented with the sandbox's fuel checks
//     (wasmbin.Instrument), the engine's watchdog records a stop, and the guest's next safe
//     point traps. No timer or goroutine is made per call.
//   - Limits.StartTimeout bounds Instantiate (the start section and the data's parse).
//   - Every evaluation starts from the heap as it was after the data was loaded: the heap
//     pointer is saved then and restored before each call, so nothing a call allocates
//     outlives it (RATIONALE.md, "OPA policies in pure Go").
//   - Builtins: a compiled policy lists, in its builtins export, the builtins it leaves to
//     the host. The host provides sprintf and print (internal.print, in a module built with
//     --wasm-include-print) here (builtins.go says how values are formatted and bounded),
//     and 33 more from package sandbox/opa/builtins (time, crypto and HMAC, hex, base64url,
//     urlquery, io.jwt.decode, regex.find_n/split/replace, string helpers: its doc lists
//     them and those OPA leaves out); Provided lists them all. Each evaluation reads its
//     instant once: time.now_ns answers the same within it, the host's clock under
//     sandbox.ClockReal and a fixed instant (2022-01-01T00:00:00Z, where wazero's fake wall
//     clock starts) under the default deterministic clock. Compile refuses a policy that
//     needs any other with a *BuiltinError naming them (and listing all it needs), so that no
//     call fails for a missing builtin; Module.Builtins lists those of a policy compiled.
//     The host never provides http.send itself: it is a network capability, refused unless
//     granted, as every capability is. A host function named after a builtin (http.send, or
//     any the host lacks), offered in Config.HostFuncs and granted in
//     Capabilities.HostFunctions, serves it: it gets the operands as a JSON array and answers
//     the result as JSON, within its input and output limits and the call's timeout; its
//     error makes the expression undefined (grantedBuiltin).
//     A builtin's arguments are read through the guest's opa_json_dump and its result
//     written through opa_malloc and opa_json_parse, so they are bounded by the memory limit;
//     a builtin's type error makes its result undefined, as in OPA's evaluator, and a
//     limit of the host's (a sprintf width above 4096, a composite sprintf value) ends the
//     call as opa_abort does.
//   - Output: Rego's print lines and opa_println go to Config.Logger ("guest log") within
//     Limits.Output, as the sandbox's log stream (Stats, Config.OnDrop), each cut at 4 KiB.
//   - Capabilities do not apply: an OPA module imports no WASI. Host functions are not
//     offered to it.
//
// # Errors
//
//   - opa_abort (the policy's runtime errors, such as a conflict between rule values, or an
//     allocation that failed) is a *sandbox.TrapError with the guest's message: the instance
//     has ended (sandbox.Fatal).
//   - A handler that is not an entrypoint: sandbox.ErrUnknownHandler. An input that is not
//     valid JSON: a *sandbox.GuestError with abi.StatusBadInput; the instance keeps serving.
//   - Imports other than OPA's (env.memory, env.opa_abort, env.opa_println,
//     env.opa_builtin0…4), or a module without OPA's exports: a *sandbox.ModuleError.
//
// # Telemetry
//
// An instance counts its decisions per entrypoint, and reports them as the counters of
// TelemetryWithin (DecisionsMetric): a host sums them over a plugin's instances, ended ones
// included, as it does a native guest's own counters (host.GuestTotals,
// wasmvisor_guest_metric_total{metric="opa_decisions_example_allow"}). Calls, errors and
// latency are the host's usual per-plugin metrics.
//
// Not yet: the rest of the builtins OPA leaves to the host (JWT verification, X.509, YAML,
// JSON schema, semver, units, uuid, net.cidr_*: sandbox/opa/builtins's doc); a bundle's YAML
// data, its signatures and its manifest's roots.
package opa

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"go.uber.org/zap"

	"github.com/wasmvisor/wasmvisor/abi"
	"github.com/wasmvisor/wasmvisor/sandbox"
	"github.com/wasmvisor/wasmvisor/sandbox/internal/guard"
	"github.com/wasmvisor/wasmvisor/sandbox/internal/wasmbin"
	"github.com/wasmvisor/wasmvisor/sandbox/internal/watchdog"
	hostbi "github.com/wasmvisor/wasmvisor/sandbox/opa/builtins"
)

// Name is the format's name: sandbox.Code.Format of an OPA policy.
const Name = "opa"

// ConfigData is the key of the instance config that holds the data document (JSON).
const ConfigData = "data"

// DefaultHandler is the handler that evaluates the policy's entrypoint 0: the first -e of
// opa build, the one OPA's own SDKs evaluate when no entrypoint is named. A policy with an
// entrypoint of that name (Rego's default keyword makes it unlikely) keeps its own.
const DefaultHandler = "default"

// DecisionsMetric prefixes the names of the counters an instance keeps per entrypoint
// (TelemetryWithin): opa_decisions_example_allow counts the evaluations of example/allow,
// through its name or DefaultHandler, that returned a result set. The entrypoint's
// characters outside [A-Za-z0-9_] become _; when that makes two names the same, or one
// longer than abi.MaxMetricName, the entrypoint's number is used instead
// (opa_decisions_0).
const DecisionsMetric = "opa_decisions_"

// ErrBuiltin is matched by the *BuiltinError Compile returns for a policy that needs a
// builtin the host does not implement.
var ErrBuiltin = errors.New("opa: builtin not provided by the host")

// BuiltinError names the builtins a policy needs from the host that it does not have. It
// matches ErrBuiltin and sandbox.ErrInvalidModule.
type BuiltinError struct {
	Names []string // the builtins the host does not provide, sorted
	Needs []string // every builtin the policy needs from the host, sorted (Names among them)
}

func (e *BuiltinError) Error() string {
	return fmt.Sprintf("opa: the policy needs builtins the host does not provide: %s", strings.Join(e.Names, ", "))
}

// Unwrap returns ErrBuiltin and sandbox.ErrInvalidModule.
func (e *BuiltinError) Unwrap() []error { return []error{ErrBuiltin, sandbox.ErrInvalidModule} }

// hostModule is the module OPA's imports come from.
const hostModule = "env"

// Format returns the OPA format, to register on an engine or a host: it claims the modules
// that IsPolicy recognises and compiles them with Compile, under the engine's watchdog and
// compilation cache.
func Format() sandbox.Format { return format{} }

type format struct{}

func (format) Name() string { return Name }

// Detect claims OPA policies (IsPolicy) and bundles (IsBundle: any gzip stream, which no
// other format takes; one that is not an OPA bundle is refused by Compile with a
// *BundleError).
func (format) Detect(wasm []byte) bool { return IsBundle(wasm) || IsPolicy(wasm) }

func (format) Compile(ctx context.Context, e *sandbox.Engine, wasm []byte, cfg sandbox.Config) (sandbox.Code, error) {
	m, err := compile(ctx, wasm, cfg, watchdog.OfEngine(e), e.CompilationCache())
	if err != nil {
		return nil, err
	}
	return code{m}, nil
}

// IsPolicy reports whether wasm is a module compiled by OPA: it imports env.opa_abort and
// exports opa_eval or opa_eval_ctx_new. It returns false for bytes it cannot parse.
func IsPolicy(wasm []byte) bool {
	pm, err := wasmbin.Parse(wasm)
	if err != nil {
		return false
	}
	return isPolicy(pm)
}

func isPolicy(pm *wasmbin.Module) bool {
	abort := false
	for _, im := range pm.Imports {
		if im.Module == hostModule && im.Name == "opa_abort" && im.Kind == wasmbin.KindFunc {
			abort = true
		}
	}
	if !abort {
		return false
	}
	for _, ex := range pm.Exports {
		if ex.Kind == wasmbin.KindFunc && (ex.Name == "opa_eval" || ex.Name == "opa_eval_ctx_new") {
			return true
		}
	}
	return false
}

// Compile compiles an OPA policy, or a bundle of one (IsBundle, ReadBundle: its data
// document is the instances' when their config gives none), once; Instantiate then makes fresh instances of it. With a
// nil wd the module runs a watchdog of its own, closed with it. The zero Limits mean the
// sandbox's defaults.
func Compile(ctx context.Context, wasm []byte, cfg sandbox.Config) (*Module, error) {
	return compile(ctx, wasm, cfg, nil, nil)
}

// Module is a compiled OPA policy. It is safe for concurrent use.
type Module struct {
	rt          wazero.Runtime
	cm          wazero.CompiledModule
	digest      string
	bundleData  []byte // the data document of a bundle, used when the config has none
	cfg         sandbox.Config
	logger      *zap.Logger
	entrypoints map[string]int32       // the handlers: the entrypoints, and DefaultHandler
	epSlot      map[int32]int          // an entrypoint's index in metricNames and an instance's decisions
	metricNames []string               // the decision counters' names, by slot
	builtinByID map[uint32]hostBuiltin // the builtins the policy needs from the host
	builtins    []string               // their names, sorted
	regexps     *hostbi.RegexpCache    // compiled regular expressions of the builtins, bounded
	granted     []sandbox.HostFunc     // host functions granted: they serve the builtins of their names
	handlers    []string
	fastEval    bool // the module exports opa_eval (ABI 1.2 and later)
	wd          *watchdog.Watchdog
	ownWD       bool

	mu     sync.Mutex
	refs   int
	closed bool
	done   bool
}

func compile(ctx context.Context, wasm []byte, cfg sandbox.Config, wd *watchdog.Watchdog, cache wazero.CompilationCache) (*Module, error) {
	var bundleData []byte
	digest := ""
	if IsBundle(wasm) {
		digest = sandbox.Digest(wasm) // the bundle's: its data is part of what was loaded
		var err error
		if wasm, bundleData, err = ReadBundle(wasm); err != nil {
			return nil, err
		}
	}
	cfg.Limits = cfg.Limits.WithDefaults()
	if err := cfg.Limits.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.Capabilities.Validate(); err != nil {
		return nil, err
	}
	granted, err := cfg.GrantedHostFuncs()
	if err != nil {
		return nil, err
	}
	info, err := sandbox.Inspect(wasm)
	if err != nil {
		return nil, err
	}
	pm, err := wasmbin.Parse(wasm)
	if err != nil {
		return nil, &sandbox.ModuleError{Reason: err.Error(), Err: err}
	}
	if !isPolicy(pm) {
		return nil, &sandbox.ModuleError{Reason: "not an OPA policy: no env.opa_abort import, or neither opa_eval nor opa_eval_ctx_new exported"}
	}
	if err := checkImports(pm); err != nil {
		return nil, err
	}
	if _, err := pm.DefineImportedMemory(); err != nil {
		return nil, &sandbox.ModuleError{Reason: err.Error(), Err: err}
	}
	bin, err := wasmbin.Instrument(pm, cfg.Limits.MemoryPages)
	if err != nil {
		if errors.Is(err, wasmbin.ErrMinAboveLimit) {
			return nil, &sandbox.MemoryLimitError{LimitPages: cfg.Limits.MemoryPages, Cause: err}
		}
		return nil, &sandbox.ModuleError{Reason: "instrument: " + err.Error(), Err: err}
	}
	if digest == "" {
		digest = info.Digest
	}
	m := &Module{digest: digest, bundleData: bundleData, cfg: cfg, logger: cfg.Logger, wd: wd, regexps: hostbi.NewRegexpCache(0, 0), granted: granted}
	if m.logger == nil {
		m.logger = zap.NewNop()
	}
	for _, ex := range pm.Exports {
		if ex.Name == "opa_eval" && ex.Kind == wasmbin.KindFunc {
			m.fastEval = true
		}
	}
	rc := wazero.NewRuntimeConfig()
	if cache != nil {
		rc = rc.WithCompilationCache(cache)
	}
	m.rt = wazero.NewRuntimeWithConfig(ctx, rc)
	fail := func(err error) (*Module, error) {
		_ = m.rt.Close(ctx)
		return nil, err
	}
	if err := m.hostFunctions(ctx); err != nil {
		return fail(err)
	}
	err = guard.Run(func() (err error) {
		m.cm, err = m.rt.CompileModule(experimental.WithFunctionListenerFactory(ctx, safePoints{}), bin)
		return err
	})
	if err != nil {
		return fail(&sandbox.ModuleError{Reason: err.Error(), Err: err})
	}
	if m.wd == nil {
		m.wd, m.ownWD = watchdog.New(sandbox.DefaultDeadlineResolution, nil), true
	}
	// The entrypoints and builtins are known only to the module's code: a first instance
	// answers them, and is closed.
	probe, err := m.Instantiate(ctx, nil)
	if err != nil {
		if m.ownWD {
			m.wd.Close()
		}
		return fail(err)
	}
	eps, needs, err := probe.discover(ctx)
	_ = probe.Close(ctx)
	if err == nil {
		err = m.bindBuiltins(needs)
	}
	if err != nil {
		if m.ownWD {
			m.wd.Close()
		}
		return fail(err)
	}
	m.entrypoints = eps
	m.metricNames, m.epSlot = decisionMetrics(eps)
	if _, ok := eps[DefaultHandler]; !ok {
		if _, ok := m.epSlot[0]; ok {
			eps[DefaultHandler] = 0
		}
	}
	for name := range eps {
		m.handlers = append(m.handlers, name)
	}
	sort.Strings(m.handlers)
	return m, nil
}

// decisionMetrics names the decision counter of each entrypoint (DecisionsMetric), and gives
// each entrypoint id its slot, in the order of the ids.
func decisionMetrics(eps map[string]int32) ([]string, map[int32]int) {
	ids := make([]int32, 0, len(eps))
	byID := make(map[int32]string, len(eps))
	for name, id := range eps {
		old, ok := byID[id]
		if !ok {
			ids = append(ids, id)
		}
		if !ok || name < old { // two names of one id (not from opa build): the first, sorted
			byID[id] = name
		}
	}
	sort.Slice(ids, func(a, b int) bool { return ids[a] < ids[b] })
	names := make([]string, len(ids))
	slots := make(map[int32]int, len(ids))
	used := map[string]int{}
	for k, id := range ids {
		slots[id] = k
		names[k] = DecisionsMetric + strings.Map(func(r rune) rune {
			if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' {
				return r
			}
			return '_'
		}, byID[id])
		used[names[k]]++
	}
	for k, id := range ids {
		if used[names[k]] > 1 || !abi.ValidMetricName(names[k]) {
			names[k] = fmt.Sprintf("%s%d", DecisionsMetric, id)
		}
	}
	return names, slots
}

// bindBuiltins maps the ids of the builtins the policy needs to the host's implementations,
// or returns a *BuiltinError naming those the host does not provide.
func (m *Module) bindBuiltins(needs map[string]int32) error {
	m.builtinByID = map[uint32]hostBuiltin{}
	var missing []string
	for name := range needs {
		m.builtins = append(m.builtins, name)
	}
	sort.Strings(m.builtins)
	for name, id := range needs {
		fn, ok := lookupBuiltin(name)
		if !ok {
			fn, ok = m.grantedBuiltin(name)
		}
		if !ok {
			missing = append(missing, name)
			continue
		}
		m.builtinByID[uint32(id)] = hostBuiltin{name: name, fn: fn}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return &BuiltinError{Names: missing, Needs: slices.Clone(m.builtins)}
	}
	return nil
}

// checkImports refuses imports OPA's ABI does not have.
func checkImports(pm *wasmbin.Module) error {
	for _, im := range pm.Imports {
		ok := im.Module == hostModule
		switch {
		case !ok:
		case im.Kind == wasmbin.KindMemory:
			ok = im.Name == "memory"
		case im.Kind == wasmbin.KindFunc:
			switch im.Name {
			case "opa_abort", "opa_println", "opa_builtin0", "opa_builtin1", "opa_builtin2", "opa_builtin3", "opa_builtin4":
			default:
				ok = false
			}
		default:
			ok = false
		}
		if !ok {
			return &sandbox.ModuleError{Reason: fmt.Sprintf("import %q.%q is not part of OPA's ABI", im.Module, im.Name)}
		}
	}
	return nil
}

// discover reads the entrypoints and the builtins the module needs from the host (name ->
// id, both) from a fresh instance.
func (i *Instance) discover(ctx context.Context) (map[string]int32, map[string]int32, error) {
	read := func(export string) (map[string]int32, error) {
		addr, err := i.call(ctx, export)
		if err != nil {
			return nil, err
		}
		s, err := i.dumpValue(ctx, addr)
		if err != nil {
			return nil, err
		}
		var v map[string]int32
		if err := json.Unmarshal(s, &v); err != nil {
			return nil, &sandbox.ModuleError{Reason: fmt.Sprintf("%s: %v", export, err), Err: err}
		}
		return v, nil
	}
	eps, err := read("entrypoints")
	if err != nil {
		return nil, nil, err
	}
	if len(eps) == 0 {
		return nil, nil, &sandbox.ModuleError{Reason: "the policy has no entrypoint"}
	}
	bs, err := read("builtins")
	if err != nil {
		return nil, nil, err
	}
	return eps, bs, nil
}

// Digest is the hex SHA-256 of the module's bytes, as sandbox.Digest: a bundle's, for one
// compiled from a bundle.
func (m *Module) Digest() string { return m.digest }

// Format is Name.
func (m *Module) Format() string { return Name }

// Builtins lists the builtins the policy needs from the host, sorted: all of them provided
// (Provided), or Compile would have refused it with a *BuiltinError, whose Needs lists them.
func (m *Module) Builtins() []string { return slices.Clone(m.builtins) }

// Handlers lists the policy's entrypoints and DefaultHandler, sorted.
func (m *Module) Handlers() []string { return append([]string(nil), m.handlers...) }

// Close releases the module. Instances already made keep running until closed; the
// runtime is closed with the last of them. Close is idempotent.
func (m *Module) Close(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return m.release(ctx)
}

func (m *Module) release(ctx context.Context) error {
	if !m.closed || m.refs > 0 || m.done {
		return nil
	}
	m.done = true
	err := m.rt.Close(ctx)
	if m.ownWD {
		m.wd.Close()
	}
	return err
}

func (m *Module) unref(ctx context.Context) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.refs--
	_ = m.release(ctx)
}

// safePoints is the function listener factory of a Module: it listens to the guest's safe
// point (wasmbin.ExportSafePoint) only, and sets the interrupt global when the instance's
// operation has been stopped, so that the safe point traps (as in package sandbox/extism).
type safePoints struct{}

type instKey struct{}

func (s safePoints) NewFunctionListener(def api.FunctionDefinition) experimental.FunctionListener {
	for _, n := range def.ExportNames() {
		if n == wasmbin.ExportSafePoint {
			return s
		}
	}
	return nil
}

func (safePoints) Before(ctx context.Context, mod api.Module, _ api.FunctionDefinition, _ []uint64, _ experimental.StackIterator) {
	i, ok := ctx.Value(instKey{}).(*Instance)
	if !ok || !i.stopped(ctx) {
		return
	}
	if g, ok := mod.ExportedGlobal(wasmbin.ExportInterrupt).(api.MutableGlobal); ok {
		g.Set(1)
	}
}

func (safePoints) After(context.Context, api.Module, api.FunctionDefinition, []uint64) {}

func (safePoints) Abort(context.Context, api.Module, api.FunctionDefinition, error) {}
