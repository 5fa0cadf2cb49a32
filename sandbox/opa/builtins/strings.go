package builtins

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"unicode/utf8"
)

func init() {
	register("sprintf", 2, sprintf)
	register("strings.count", 2, func(_ Context, args []any) (any, error) {
		s, err := str(args, 1)
		if err != nil {
			return nil, err
		}
		sub, err := str(args, 2)
		if err != nil {
			return nil, err
		}
		return int64(strings.Count(s, sub)), nil
	})
	register("indexof_n", 2, indexofN)
	register("strings.any_prefix_match", 2, func(_ Context, args []any) (any, error) {
		return anyAffix(args, strings.HasPrefix)
	})
	register("strings.any_suffix_match", 2, func(_ Context, args []any) (any, error) {
		return anyAffix(args, strings.HasSuffix)
	})
	register("glob.quote_meta", 1, func(_ Context, args []any) (any, error) {
		s, err := str(args, 1)
		if err != nil {
			return nil, err
		}
		var b strings.Builder
		for k := 0; k < len(s); k++ {
			if strings.IndexByte(`*?\[]{}`, s[k]) >= 0 {
				b.WriteByte('\\')
			}
			b.WriteByte(s[k])
		}
		return b.String(), nil
	})
}

// indexofN is OPA's indexof_n: the rune offsets of every match of search in s, overlapping.
func indexofN(_ Context, args []any) (any, error) {
	s, err := str(args, 1)
	if err != nil {
		return nil, err
	}
	search, err := str(args, 2)
	if err != nil {
		return nil, err
	}
	if search == "" {
		return nil, errors.New("empty search character")
	}
	out := []any{}
	runes := 0
	for off := 0; off < len(s); {
		if strings.HasPrefix(s[off:], search) {
			out = append(out, int64(runes))
		}
		_, size := utf8.DecodeRuneInString(s[off:])
		off += size
		runes++
	}
	return out, nil
}

// anyAffix is strings.any_prefix_match and any_suffix_match: whether any string of the
// first operand (a string or an array of strings) has any string of the second as prefix
// (suffix).
func anyAffix(args []any, match func(s, affix string) bool) (any, error) {
	list := func(pos int) ([]string, error) {
		if s, ok := args[pos-1].(string); ok {
			if _, err := str(args, pos); err != nil {
				return nil, err
			}
			return []string{s}, nil
		}
		if _, ok := args[pos-1].([]any); !ok {
			return nil, operandErr(pos, "a string, set or array", args[pos-1])
		}
		return stringList(args[pos-1], pos)
	}
	ss, err := list(1)
	if err != nil {
		return nil, err
	}
	affixes, err := list(2)
	if err != nil {
		return nil, err
	}
	if len(ss)*len(affixes) > MaxOutput {
		return nil, fmt.Errorf("%w: %d comparisons, at most %d", ErrLimit, len(ss)*len(affixes), MaxOutput)
	}
	for _, s := range ss {
		for _, a := range affixes {
			if match(s, a) {
				return true, nil
			}
		}
	}
	return false, nil
}

// sprintf is OPA's sprintf(format, values): Go's fmt.Sprintf with each value passed as
// OPA's evaluator passes it: a string as a string, a number written with a fraction or an
// exponent as a float64, another number as an int64 (or a *big.Int), true, false and null
// as their text. Arrays and objects are refused (OPA passes their Rego text, which for
// sets differs from their JSON, and the host sees sets as arrays). Widths and precisions
// above MaxWidth and the '*' width are refused.
func sprintf(_ Context, args []any) (any, error) {
	format, err := str(args, 1)
	if err != nil {
		return nil, err
	}
	if err := checkFormat(format); err != nil {
		return nil, err
	}
	values, ok := args[1].([]any)
	if !ok {
		return nil, operandErr(2, "an array", args[1])
	}
	if len(values) > MaxWidth {
		return nil, fmt.Errorf("%w: %d values, at most %d", ErrLimit, len(values), MaxWidth)
	}
	vs := make([]any, len(values))
	for k, v := range values {
		switch v := v.(type) {
		case string:
			vs[k] = v
		case json.Number:
			vs[k] = sprintfNumber(string(v))
		case float64:
			vs[k] = sprintfNumber(strconv.FormatFloat(v, 'g', -1, 64))
		case int64:
			vs[k] = v
		case bool:
			vs[k] = strconv.FormatBool(v)
		case nil:
			vs[k] = "null"
		default:
			return nil, fmt.Errorf("%w 2: value %d: arrays, objects and sets are not supported by the host", ErrOperand, k)
		}
	}
	out := fmt.Sprintf(format, vs...)
	if len(out) > MaxOutput {
		return nil, fmt.Errorf("%w: a result of %d bytes, at most %d", ErrLimit, len(out), MaxOutput)
	}
	return out, nil
}

func sprintfNumber(ns string) any {
	if strings.ContainsAny(ns, ".eE") {
		if f, err := strconv.ParseFloat(ns, 64); err == nil {
			return f
		}
		return ns
	}
	if x, err := strconv.ParseInt(ns, 10, 64); err == nil {
		return x
	}
	if len(ns) <= 400 {
		if b, ok := new(big.Int).SetString(ns, 10); ok {
			return b
		}
	}
	return ns
}

// checkFormat refuses the '*' width and widths or precisions above MaxWidth.
func checkFormat(f string) error {
	for k := 0; k < len(f); k++ {
		if f[k] != '%' {
			continue
		}
	flags:
		for k++; k < len(f); k++ {
			c := f[k]
			switch {
			case c == '*':
				return fmt.Errorf("%w: the '*' width is not supported by the host", ErrOperand)
			case c >= '0' && c <= '9':
				n := 0
				for ; k < len(f) && f[k] >= '0' && f[k] <= '9'; k++ {
					if n = n*10 + int(f[k]-'0'); n > MaxWidth {
						return fmt.Errorf("%w: a width or precision above %d", ErrLimit, MaxWidth)
					}
				}
				k--
			case c == '.' || c == '+' || c == '-' || c == '#' || c == ' ' || c == '[' || c == ']':
			default:
				break flags
			}
		}
	}
	return nil
}
