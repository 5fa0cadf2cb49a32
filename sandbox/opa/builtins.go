package opa

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/wasmvisor/wasmvisor/sandbox"
	hostbi "github.com/wasmvisor/wasmvisor/sandbox/opa/builtins"
)

// builtin is a builtin that OPA leaves to the host, implemented here: its arguments as the
// guest dumped them (JSON), its result as JSON for the guest to parse, nil for none
// (undefined). An *undefinedError makes the result undefined, as OPA's evaluator does with a
// builtin's errors outside strict mode; any other error ends the call (the host cannot
// answer as OPA would).
type builtin func(i *Instance, args []json.RawMessage) ([]byte, error)

// undefinedError is a builtin's error that OPA's evaluator turns into an undefined result.
type undefinedError struct{ msg string }

func (e *undefinedError) Error() string { return e.msg }

// builtins are the builtins the host provides here; package sandbox/opa/builtins provides
// the others (hostBuiltin). A policy that needs one neither has is refused at Compile
// (*BuiltinError).
var builtins = map[string]builtin{
	"sprintf":        func(_ *Instance, args []json.RawMessage) ([]byte, error) { return sprintf(args) },
	"internal.print": printBuiltin,
}

// maxPrintLines bounds the lines one print call makes (the cross product of its operands'
// values).
const maxPrintLines = 1024

// printBuiltin is Rego's print (internal.print, in a module built with
// --wasm-include-print): one operand, the array of print's arguments, each a set of values
// (dumped as an array; empty: "<undefined>") or a primitive; a line per combination of their
// values, joined by spaces, to the instance's metered log. Strings are written as they are,
// other values as JSON (OPA's evaluator writes composite values in Rego's syntax instead).
func printBuiltin(i *Instance, args []json.RawMessage) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("print: %d operands, want 1", len(args))
	}
	var operands []json.RawMessage
	if err := json.Unmarshal(args[0], &operands); err != nil {
		return nil, &undefinedError{"print: operand 1 must be an array"}
	}
	text := func(v json.RawMessage) string {
		var s string
		if json.Unmarshal(v, &s) == nil {
			return s
		}
		return string(bytes.TrimSpace(v))
	}
	choices := make([][]string, len(operands))
	for k, op := range operands {
		var set []json.RawMessage
		if json.Unmarshal(op, &set) != nil {
			choices[k] = []string{text(op)}
			continue
		}
		if len(set) == 0 {
			choices[k] = []string{"<undefined>"}
			continue
		}
		for _, v := range set {
			choices[k] = append(choices[k], text(v))
		}
	}
	line := make([]string, len(choices))
	lines := 0
	var emit func(k int)
	emit = func(k int) {
		if lines >= maxPrintLines {
			return
		}
		if k == len(choices) {
			lines++
			i.logLine(strings.Join(line, " "))
			return
		}
		for _, c := range choices[k] {
			line[k] = c
			emit(k + 1)
		}
	}
	emit(0)
	return nil, nil
}

// Provided lists the builtins the host provides to OPA policies, sorted.
func Provided() []string {
	names := hostbi.Provided()
	for n := range builtins {
		if _, ok := hostbi.Lookup(n); !ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// lookupBuiltin finds name among this file's builtins, then package builtins'.
func lookupBuiltin(name string) (builtin, bool) {
	if fn, ok := builtins[name]; ok {
		return fn, true
	}
	f, ok := hostbi.Lookup(name)
	if !ok {
		return nil, false
	}
	return hostBuiltinFunc(name, f), true
}

// hostBuiltinFunc adapts a builtin of package sandbox/opa/builtins: the operands decoded
// from the guest's JSON with their numbers' text kept (json.Number), the result encoded back.
// The builtin's error makes the expression undefined, as OPA's evaluator does outside strict
// mode.
func hostBuiltinFunc(name string, f hostbi.Func) builtin {
	return func(i *Instance, args []json.RawMessage) ([]byte, error) {
		vals := make([]any, len(args))
		for k, a := range args {
			d := json.NewDecoder(bytes.NewReader(a))
			d.UseNumber()
			if err := d.Decode(&vals[k]); err != nil {
				return nil, fmt.Errorf("%s: operand %d: %w", name, k+1, err)
			}
		}
		v, err := f(i.builtinContext(), vals)
		if err != nil {
			return nil, &undefinedError{err.Error()}
		}
		return json.Marshal(v)
	}
}

// grantedBuiltin serves builtin name with the host function of that name, when the plugin's
// capabilities grant one (sandbox.Capabilities.HostFunctions; an embedder offers it in
// sandbox.Config.HostFuncs): the way a policy gets http.send, which the host never provides
// itself, or any builtin the host lacks. The function gets the operands as a JSON array and
// answers the result as JSON, both within its MaxInput and MaxOutput; it runs with the call's
// context, ended by the call's timeout. Its error, or an answer that is not JSON, makes the
// expression undefined, as a builtin's error does in OPA's evaluator.
func (m *Module) grantedBuiltin(name string) (builtin, bool) {
	for _, f := range m.granted {
		if f.Name != name {
			continue
		}
		return func(i *Instance, args []json.RawMessage) ([]byte, error) {
			in, err := json.Marshal(args)
			if err != nil {
				return nil, err
			}
			if max := f.MaxInput; max == 0 && len(in) > sandbox.DefaultHostFuncInput || max > 0 && len(in) > max {
				return nil, &undefinedError{fmt.Sprintf("%s: operands of %d bytes, above the function's input limit", name, len(in))}
			}
			ctx := i.callCtx
			if ctx == nil {
				ctx = context.Background()
			}
			if d := m.cfg.Limits.CallTimeout; d != sandbox.NoTimeout {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, d)
				defer cancel()
			}
			out, err := f.Func(ctx, in)
			switch {
			case err != nil:
				return nil, &undefinedError{fmt.Sprintf("%s: %v", name, err)}
			case len(out) > f.MaxOutput && f.MaxOutput > 0:
				return nil, &undefinedError{fmt.Sprintf("%s: an answer of %d bytes, above the function's output limit", name, len(out))}
			case !json.Valid(out):
				return nil, &undefinedError{name + ": the answer is not JSON"}
			}
			return out, nil
		}, true
	}
	return nil, false
}

// builtinContext is the evaluation's context for package builtins: its instant, read once
// when the call started (every time.now_ns of one evaluation answers the same), and the
// module's cache of compiled regular expressions.
func (i *Instance) builtinContext() hostbi.Context {
	return hostbi.Context{Now: i.evalNow, Regexps: i.mod.regexps}
}

// deterministicEpoch is the instant time.now_ns answers under sandbox.ClockDeterministic:
// where wazero's fake wall clock starts (2022-01-01T00:00:00Z), the clock a WASI guest of the
// same sandbox reads.
var deterministicEpoch = time.Unix(1640995200, 0).UTC()

// now is an evaluation's instant: the host's clock with sandbox.ClockReal, a fixed one
// otherwise, so that a policy's tests are reproducible.
func (m *Module) now() time.Time {
	if m.cfg.Capabilities.Clock == sandbox.ClockReal {
		return time.Now()
	}
	return deterministicEpoch
}

// maxWidth bounds a width or precision in a sprintf format, so that a policy cannot make the
// host allocate without bound ("%999999999d").
const maxWidth = 1 << 12

// sprintf is OPA's sprintf(format, values): Go's fmt.Sprintf with each value passed as OPA's
// evaluator passes it: a string as a string, a number written with a fraction or an exponent
// as a float64, another number as an int64 (or a big.Int), and anything else as its Rego text
// (true, false, null; arrays, objects and sets are refused: their Rego text is not their
// JSON). Widths and precisions above maxWidth and the '*' width are refused.
func sprintf(args []json.RawMessage) ([]byte, error) {
	if len(args) != 2 {
		return nil, fmt.Errorf("sprintf: %d operands, want 2", len(args))
	}
	var format string
	if err := json.Unmarshal(args[0], &format); err != nil {
		return nil, &undefinedError{"sprintf: operand 1 must be a string"}
	}
	if err := checkFormat(format); err != nil {
		return nil, err
	}
	var values []json.RawMessage
	if err := json.Unmarshal(args[1], &values); err != nil {
		return nil, &undefinedError{"sprintf: operand 2 must be an array"}
	}
	vs := make([]any, len(values))
	for k, raw := range values {
		raw = bytes.TrimSpace(raw)
		if len(raw) == 0 {
			return nil, errors.New("sprintf: an empty value")
		}
		switch c := raw[0]; {
		case c == '"':
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return nil, fmt.Errorf("sprintf: value %d: %w", k, err)
			}
			vs[k] = s
		case c == '-' || (c >= '0' && c <= '9'):
			ns := string(raw)
			if strings.ContainsAny(ns, ".eE") {
				f, err := strconv.ParseFloat(ns, 64)
				if err != nil {
					vs[k] = ns
				} else {
					vs[k] = f
				}
			} else if x, err := strconv.ParseInt(ns, 10, 64); err == nil {
				vs[k] = x
			} else if b, ok := new(big.Int).SetString(ns, 10); ok {
				vs[k] = b
			} else {
				vs[k] = ns
			}
		case string(raw) == "true" || string(raw) == "false" || string(raw) == "null":
			vs[k] = string(raw)
		default:
			return nil, fmt.Errorf("sprintf: value %d: arrays, objects and sets are not supported by the host", k)
		}
	}
	return json.Marshal(fmt.Sprintf(format, vs...))
}

// checkFormat refuses the '*' width and widths or precisions above maxWidth.
func checkFormat(f string) error {
	for k := 0; k < len(f); k++ {
		if f[k] != '%' {
			continue
		}
		for k++; k < len(f); k++ {
			c := f[k]
			switch {
			case c == '*':
				return errors.New("sprintf: the '*' width is not supported by the host")
			case c >= '0' && c <= '9':
				n := 0
				for ; k < len(f) && f[k] >= '0' && f[k] <= '9'; k++ {
					if n = n*10 + int(f[k]-'0'); n > maxWidth {
						return fmt.Errorf("sprintf: a width or precision above %d", maxWidth)
					}
				}
				k--
			case c == '.' || c == '+' || c == '-' || c == '#' || c == ' ' || c == '[' || c == ']':
			default:
				goto verb
			}
		}
	verb:
	}
	return nil
}

// callBuiltin serves opa_builtinN: the builtin id's arguments (value addresses) dumped to
// JSON, its result parsed into the guest; the value's address. A failure unwinds the guest
// and ends the call (its message as opa_abort's).
func (i *Instance) callBuiltin(ctx context.Context, id uint32, args []uint64) uint32 {
	fail := func(msg string) uint32 {
		i.abortMsg.Store(&msg)
		panic(errors.New(msg))
	}
	b, ok := i.mod.builtinByID[id]
	if !ok {
		return fail(fmt.Sprintf("builtin %d is not provided by the host", id))
	}
	in := make([]json.RawMessage, len(args))
	for k, a := range args {
		s, err := i.dumpValue(ctx, uint32(a))
		if err != nil {
			return fail(fmt.Sprintf("%s: argument %d: %v", b.name, k+1, err))
		}
		in[k] = s
	}
	out, err := b.fn(i, in)
	var undefined *undefinedError
	switch {
	case errors.As(err, &undefined):
		return 0
	case err != nil:
		return fail(err.Error())
	case out == nil:
		return 0
	}
	v, err := i.parse(ctx, out)
	if err != nil || v == 0 {
		return fail(fmt.Sprintf("%s: the policy could not parse the result: %v", b.name, err))
	}
	return v
}

// hostBuiltin is a builtin of a module, by the id its builtins export gave it.
type hostBuiltin struct {
	name string
	fn   builtin
}
