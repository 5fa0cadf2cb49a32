package builtins

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

func init() {
	register("time.now_ns", 0, func(ctx Context, _ []any) (any, error) { return ctx.Now.UnixNano(), nil })
	register("time.parse_ns", 2, timeParseNS)
	register("time.parse_rfc3339_ns", 1, func(_ Context, args []any) (any, error) {
		s, err := str(args, 1)
		if err != nil {
			return nil, err
		}
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return nil, err
		}
		return unixNano(t)
	})
	register("time.parse_duration_ns", 1, func(_ Context, args []any) (any, error) {
		s, err := str(args, 1)
		if err != nil {
			return nil, err
		}
		return parseDuration(s)
	})
	register("time.date", 1, func(_ Context, args []any) (any, error) {
		t, _, err := zoned(args[0])
		if err != nil {
			return nil, err
		}
		y, m, d := t.Date()
		return []any{int64(y), int64(m), int64(d)}, nil
	})
	register("time.clock", 1, func(_ Context, args []any) (any, error) {
		t, _, err := zoned(args[0])
		if err != nil {
			return nil, err
		}
		h, m, s := t.Clock()
		return []any{int64(h), int64(m), int64(s)}, nil
	})
	register("time.weekday", 1, func(_ Context, args []any) (any, error) {
		t, _, err := zoned(args[0])
		if err != nil {
			return nil, err
		}
		return t.Weekday().String(), nil
	})
	register("time.format", 1, func(_ Context, args []any) (any, error) {
		t, layout, err := zoned(args[0])
		if err != nil {
			return nil, err
		}
		if layout == "" {
			layout = time.RFC3339Nano
		} else if l, ok := layouts[layout]; ok {
			layout = l
		}
		if len(layout) > MaxWidth {
			return nil, fmt.Errorf("%w: a layout of %d bytes, at most %d", ErrLimit, len(layout), MaxWidth)
		}
		return t.Format(layout), nil
	})
	register("time.add_date", 4, timeAddDate)
	register("time.diff", 2, timeDiff)
}

// layouts are the layout names OPA accepts for Go's constants.
var layouts = map[string]string{
	"ANSIC":       time.ANSIC,
	"UnixDate":    time.UnixDate,
	"RubyDate":    time.RubyDate,
	"RFC822":      time.RFC822,
	"RFC822Z":     time.RFC822Z,
	"RFC850":      time.RFC850,
	"RFC1123":     time.RFC1123,
	"RFC1123Z":    time.RFC1123Z,
	"RFC3339":     time.RFC3339,
	"RFC3339Nano": time.RFC3339Nano,
}

var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

// unixNano is t in nanoseconds since the epoch, or an error outside int64's range (years
// 1677 to 2262), as OPA does.
func unixNano(t time.Time) (any, error) {
	if t.Before(minTime) || t.After(maxTime) {
		return nil, errors.New("time outside of valid range")
	}
	return t.UnixNano(), nil
}

func timeParseNS(_ Context, args []any) (any, error) {
	layout, err := str(args, 1)
	if err != nil {
		return nil, err
	}
	value, err := str(args, 2)
	if err != nil {
		return nil, err
	}
	if l, ok := layouts[layout]; ok {
		layout = l
	}
	t, err := time.Parse(layout, value)
	if err != nil {
		return nil, err
	}
	return unixNano(t)
}

func timeAddDate(_ Context, args []any) (any, error) {
	t, _, err := zoned(args[0])
	if err != nil {
		return nil, err
	}
	var n [3]int64
	for k := range n {
		if n[k], err = integer(args[k+1], k+2); err != nil {
			return nil, err
		}
		// Beyond this, the result is outside int64 nanoseconds whatever t is.
		if n[k] > 1<<40 || n[k] < -(1<<40) {
			return nil, errors.New("time outside of valid range")
		}
	}
	return unixNano(t.AddDate(int(n[0]), int(n[1]), int(n[2])))
}

// timeDiff is OPA's time.diff: [years, months, days, hours, minutes, seconds] between two
// instants, in the first one's zone.
func timeDiff(_ Context, args []any) (any, error) {
	t1, _, err := zoned(args[0])
	if err != nil {
		return nil, err
	}
	t2, _, err := zoned(args[1])
	if err != nil {
		return nil, err
	}
	if t1.Location() != t2.Location() {
		t2 = t2.In(t1.Location())
	}
	if t1.After(t2) {
		t1, t2 = t2, t1
	}
	y1, M1, d1 := t1.Date()
	y2, M2, d2 := t2.Date()
	h1, m1, s1 := t1.Clock()
	h2, m2, s2 := t2.Clock()
	year, month, day := y2-y1, int(M2-M1), d2-d1
	hour, minute, sec := h2-h1, m2-m1, s2-s1
	if sec < 0 {
		sec += 60
		minute--
	}
	if minute < 0 {
		minute += 60
		hour--
	}
	if hour < 0 {
		hour += 24
		day--
	}
	if day < 0 {
		// The days in t1's month: the 32nd overflows into the next month by 32-len.
		day += 32 - time.Date(y1, M1, 32, 0, 0, 0, 0, time.UTC).Day()
		month--
	}
	if month < 0 {
		month += 12
		year--
	}
	return []any{int64(year), int64(month), int64(day), int64(hour), int64(minute), int64(sec)}, nil
}

// zoned reads OPA's time operand: a number of nanoseconds, or [ns], [ns, zone] or
// [ns, zone, layout]. The zone "" or "UTC" is UTC; "Local" is the host's zone; any other
// name is loaded from the host's zone database (time.LoadLocation).
func zoned(v any) (time.Time, string, error) {
	const want = "either number (ns) or [number (ns), string (tz)]"
	ns, loc, layout := v, time.UTC, ""
	if a, ok := v.([]any); ok {
		if len(a) == 0 {
			return time.Time{}, "", operandErr(1, want, v)
		}
		ns = a[0]
		if len(a) > 1 {
			tz, ok := a[1].(string)
			if !ok {
				return time.Time{}, "", operandErr(1, "a string", a[1])
			}
			switch tz {
			case "", "UTC":
			case "Local":
				loc = time.Local
			default:
				if len(tz) > MaxZone {
					return time.Time{}, "", fmt.Errorf("%w: a zone name of %d bytes, at most %d", ErrLimit, len(tz), MaxZone)
				}
				l, err := time.LoadLocation(tz)
				if err != nil {
					return time.Time{}, "", err
				}
				loc = l
			}
		}
		if len(a) > 2 {
			l, ok := a[2].(string)
			if !ok {
				return time.Time{}, "", operandErr(1, "a string", a[2])
			}
			layout = l
		}
	}
	r, ok := number(ns)
	if !ok {
		return time.Time{}, "", operandErr(1, want, v)
	}
	if !r.IsInt() || !r.Num().IsInt64() {
		return time.Time{}, "", errors.New("timestamp too big")
	}
	return time.Unix(0, r.Num().Int64()).In(loc), layout, nil
}

// dayUnits are the units OPA adds to Go's durations, in hours.
var dayUnits = map[string]float64{"d": 24, "w": 7 * 24, "y": 365 * 24}

// parseDuration is OPA's time.parse_duration_ns: Go's durations, and d, w and y (24, 168
// and 8760 hours, fractions allowed), rewritten to hours as OPA does.
func parseDuration(s string) (any, error) {
	if s == "" {
		return nil, fmt.Errorf("time: invalid duration %q", s)
	}
	if !strings.ContainsAny(s, "dwy") {
		d, err := time.ParseDuration(s)
		if err != nil {
			return nil, err
		}
		return int64(d), nil
	}
	var b strings.Builder
	rest := s
	if rest[0] == '+' || rest[0] == '-' {
		b.WriteByte(rest[0])
		rest = rest[1:]
	}
	if rest == "" {
		return nil, fmt.Errorf("time: invalid duration %q", s)
	}
	for rest != "" {
		k := 0
		for k < len(rest) && (rest[k] >= '0' && rest[k] <= '9' || rest[k] == '.') {
			k++
		}
		digits := rest[:k]
		rest = rest[k:]
		k = 0
		for k < len(rest) && !(rest[k] >= '0' && rest[k] <= '9' || rest[k] == '.') {
			k++
		}
		unit := rest[:k]
		rest = rest[k:]
		if digits == "" || unit == "" {
			return nil, fmt.Errorf("time: invalid duration %q", s)
		}
		if h, ok := dayUnits[unit]; ok {
			f, err := strconv.ParseFloat(digits, 64)
			if err != nil {
				return nil, fmt.Errorf("time: invalid duration %q", s)
			}
			b.WriteString(strconv.FormatFloat(f*h, 'f', -1, 64) + "h")
			continue
		}
		b.WriteString(digits + unit)
	}
	d, err := time.ParseDuration(b.String())
	if err != nil {
		msg := err.Error()
		if i := strings.LastIndex(msg, " "); i != -1 {
			msg = msg[:i]
		}
		return nil, fmt.Errorf("%s %q", msg, s)
	}
	return int64(d), nil
}
