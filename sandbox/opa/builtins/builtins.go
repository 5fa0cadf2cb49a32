package builtins

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Func is a builtin: its arguments as decoded JSON values (see the package doc for the
// types), its result a value encoding/json can encode. It must not keep args or ctx.
type Func func(ctx Context, args []any) (any, error)

// Context is what one evaluation gives its builtins. Build one per evaluation: every
// builtin called in it sees the same Now. The zero value works (Now is then the Unix
// epoch, regular expressions are compiled on each call).
type Context struct {
	// Now is the evaluation's instant, answered by time.now_ns: one value per evaluation,
	// as OPA does. The format reads its clock once when the evaluation starts; a test sets
	// a fixed instant.
	Now time.Time
	// Regexps caches compiled regular expressions across evaluations; it may be shared by
	// concurrent evaluations. Nil compiles each pattern at each call.
	Regexps *RegexpCache
}

// ErrOperand is matched by the *Error of a builtin given an operand of the wrong type or
// count (OPA's type errors).
var ErrOperand = errors.New("operand")

// ErrLimit is matched by the *Error of a builtin whose input or output exceeds one of the
// host's bounds (see the package doc for each).
var ErrLimit = errors.New("limit exceeded")

// Error is the error every builtin returns: the builtin's name and the cause. It matches
// ErrOperand or ErrLimit when one of those is the cause.
type Error struct {
	Builtin string
	Err     error
}

func (e *Error) Error() string { return e.Builtin + ": " + e.Err.Error() }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

var registry = map[string]Func{}

func register(name string, arity int, fn func(ctx Context, args []any) (any, error)) {
	registry[name] = func(ctx Context, args []any) (any, error) {
		if len(args) != arity {
			return nil, &Error{Builtin: name, Err: fmt.Errorf("%w: %d operands, want %d", ErrOperand, len(args), arity)}
		}
		v, err := fn(ctx, args)
		if err != nil {
			return nil, &Error{Builtin: name, Err: err}
		}
		return v, nil
	}
}

// Lookup returns the builtin named name, as OPA names it ("time.now_ns"), and whether the
// host provides it.
func Lookup(name string) (Func, bool) {
	fn, ok := registry[name]
	return fn, ok
}

// Provided lists the names of the builtins the host provides, sorted.
func Provided() []string {
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Bounds on guest-controlled data.
const (
	// MaxInput bounds each string operand, in bytes.
	MaxInput = 1 << 20
	// MaxOutput bounds a string or array result built from the operands (regex.replace,
	// regex.split, urlquery.encode_object...), in bytes or elements.
	MaxOutput = 1 << 22
	// MaxPattern bounds a regular expression, in bytes (RE2 compiles in time linear in it).
	MaxPattern = 1 << 12
	// MaxToken bounds a JWT given to io.jwt.decode, in bytes.
	MaxToken = 1 << 16
	// MaxWidth bounds a width or precision in a sprintf format.
	MaxWidth = 1 << 12
	// MaxZone bounds a time zone name.
	MaxZone = 64
)

func operandErr(pos int, want string, got any) error {
	return fmt.Errorf("%w %d must be %s, got %s", ErrOperand, pos, want, typeName(got))
}

func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case json.Number, float64, int64, int:
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

// str returns operand pos (1-based) as a string of at most MaxInput bytes.
func str(args []any, pos int) (string, error) {
	s, ok := args[pos-1].(string)
	if !ok {
		return "", operandErr(pos, "a string", args[pos-1])
	}
	if len(s) > MaxInput {
		return "", fmt.Errorf("%w: operand %d: %d bytes, at most %d", ErrLimit, pos, len(s), MaxInput)
	}
	return s, nil
}

// number returns v as an exact rational, or false if v is not a number.
func number(v any) (*big.Rat, bool) {
	switch n := v.(type) {
	case json.Number:
		// big.Rat expands an exponent: "1e999999999" would take a gigabyte. No integer
		// operand needs more than 19 digits; an exponent beyond maxExponent is refused.
		if len(n) > 400 {
			return nil, false
		}
		if k := strings.IndexAny(string(n), "eE"); k >= 0 {
			e, err := strconv.Atoi(string(n[k+1:]))
			if err != nil || e > maxExponent || e < -maxExponent {
				return nil, false
			}
		}
		r, ok := new(big.Rat).SetString(string(n))
		return r, ok
	case float64:
		if math.IsInf(n, 0) || math.IsNaN(n) {
			return nil, false
		}
		return new(big.Rat).SetFloat64(n), true
	case int64:
		return new(big.Rat).SetInt64(n), true
	case int:
		return new(big.Rat).SetInt64(int64(n)), true
	}
	return nil, false
}

// maxExponent bounds the exponent of a number operand read exactly.
const maxExponent = 400

// integer returns operand v as an int64: a number with no fraction that fits.
func integer(v any, pos int) (int64, error) {
	r, ok := number(v)
	if !ok {
		return 0, operandErr(pos, "a number", v)
	}
	if !r.IsInt() {
		return 0, fmt.Errorf("%w %d must be an integer", ErrOperand, pos)
	}
	if !r.Num().IsInt64() {
		return 0, fmt.Errorf("%w %d: %s is out of range", ErrOperand, pos, r.Num())
	}
	return r.Num().Int64(), nil
}

// stringList returns an array of strings.
func stringList(v any, pos int) ([]string, error) {
	a, ok := v.([]any)
	if !ok {
		return nil, operandErr(pos, "an array of strings", v)
	}
	out := make([]string, len(a))
	total := 0
	for k, e := range a {
		s, ok := e.(string)
		if !ok {
			return nil, operandErr(pos, "an array of strings", v)
		}
		if total += len(s); total > MaxInput {
			return nil, fmt.Errorf("%w: operand %d: more than %d bytes", ErrLimit, pos, MaxInput)
		}
		out[k] = s
	}
	return out, nil
}
