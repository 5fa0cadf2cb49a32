package main

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"

	sdk "github.com/wasmvisor/wasmvisor/sdk/go"
)

// Request is the input of the check handler, as DecodeRequest reads it.
type Request struct {
	// Key identifies the client whose budget is spent: an API key, a user, an IP address. It is
	// a view of the input, valid as long as the input is.
	Key []byte
	// Cost is the number of tokens the request takes: 1 when absent, 0 only looks.
	Cost float64
	// NowMS is the time of the request in Unix milliseconds when HasNow; else the guest's clock
	// gives it.
	NowMS  int64
	HasNow bool
}

// verdict is which of a decision's three reasons applies.
type verdict uint8

const (
	verdictWithin   verdict = iota // allowed
	verdictExceeded                // denied, retry later
	verdictNever                   // denied, the cost is above the burst
)

// Decision is the answer of Check; AppendJSON writes it as the check handler's output:
// {"allow":…,"status":429 (when denied),"reasons":[…],"limit":…,"remaining":…,
// "retry_after_ms":…,"reset_ms":…,"mutations":{"headers":{…}}}.
type Decision struct {
	Allow bool
	// Status is 429 when denied, 0 when allowed.
	Status int
	// Limit is the bucket's capacity (the burst), Remaining the whole tokens left after this
	// request, RetryAfterMS how long until the request would be allowed (0 when allowed, -1
	// for never).
	Limit        float64
	Remaining    int64
	RetryAfterMS int64
	// ResetMS is how long until the bucket is full again.
	ResetMS int64

	verdict verdict
	cost    float64
	key     []byte // the request's
	lim     limit
	headers bool // the policy's headers
}

// Config keys. Every key not set in the plugin's config takes its value from defaultConfig.
const (
	keyRate          = "rate"      // refill rate: N/s, N/m or N/h
	keyBurst         = "burst"     // bucket capacity
	keyMaxKeys       = "max_keys"  // buckets kept in memory
	keyHeaders       = "headers"   // whether to return rate-limit headers
	prefixOverride   = "override." // override.<key> = RATE BURST for one key
	defaultRateLimit = "10/s"
)

var defaultConfig = map[string]string{
	keyRate:    defaultRateLimit,
	keyBurst:   "20",
	keyMaxKeys: "10000",
	keyHeaders: "true",
}

// limit is a token bucket's refill rate (tokens per millisecond) and capacity.
type limit struct {
	perMS float64
	burst float64
	text  string // as configured, for reasons
	// burstText is burst as the reasons and the ratelimit-limit header write it, formatted
	// once when the config is applied.
	burstText string
}

// Policy is a parsed config. It is immutable.
type Policy struct {
	def       limit
	overrides map[string]limit
	maxKeys   int
	headers   bool
}

// ParsePolicy builds a policy from cfg over defaultConfig. It returns an error naming the key for
// an unknown key or a malformed value.
func ParsePolicy(cfg sdk.ConfigView) (*Policy, error) {
	merged := make(map[string]string, len(defaultConfig)+cfg.Len())
	for k, v := range defaultConfig {
		merged[k] = v
	}
	for _, k := range cfg.Keys() {
		v, _ := cfg.Get(k)
		merged[k] = v
	}
	keys := make([]string, 0, len(merged))
	for k := range merged {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	p := &Policy{overrides: map[string]limit{}}
	var rate string
	for _, k := range keys {
		v := strings.TrimSpace(merged[k])
		var err error
		switch {
		case k == keyRate:
			rate = v
			p.def.perMS, err = parseRate(v)
		case k == keyBurst:
			p.def.burst, err = parseBurst(v)
		case k == keyMaxKeys:
			var n int64
			n, err = strconv.ParseInt(v, 10, 32)
			if err != nil || n < 1 {
				err = fmt.Errorf("want a positive integer, got %q", v)
			}
			p.maxKeys = int(n)
		case k == keyHeaders:
			p.headers, err = strconv.ParseBool(v)
			if err != nil {
				err = fmt.Errorf("want true or false, got %q", v)
			}
		case strings.HasPrefix(k, prefixOverride) && k != prefixOverride:
			fs := strings.Fields(v)
			if len(fs) != 2 {
				err = fmt.Errorf("want RATE BURST (e.g. %q), got %q", "100/s 200", v)
				break
			}
			var l limit
			if l.perMS, err = parseRate(fs[0]); err == nil {
				l.burst, err = parseBurst(fs[1])
			}
			l.text = fmt.Sprintf("%s, burst %s", fs[0], fs[1])
			l.burstText = fmtNum(l.burst)
			p.overrides[strings.TrimPrefix(k, prefixOverride)] = l
		default:
			return nil, fmt.Errorf("unknown config key %q", k)
		}
		if err != nil {
			return nil, fmt.Errorf("config key %q: %w", k, err)
		}
	}
	p.def.burstText = fmtNum(p.def.burst)
	p.def.text = fmt.Sprintf("%s, burst %s", rate, p.def.burstText)
	return p, nil
}

// parseRate parses N/s, N/m or N/h (N a non-negative number; a bare N is per second) into
// tokens per millisecond.
func parseRate(v string) (float64, error) {
	num, unit, _ := strings.Cut(v, "/")
	per := map[string]float64{"": 1000, "s": 1000, "m": 60_000, "h": 3_600_000}[unit]
	n, err := strconv.ParseFloat(num, 64)
	if err != nil || per == 0 || n < 0 || math.IsInf(n, 0) || math.IsNaN(n) {
		return 0, fmt.Errorf("want N/s, N/m or N/h with N >= 0, got %q", v)
	}
	return n / per, nil
}

func parseBurst(v string) (float64, error) {
	n, err := strconv.ParseFloat(v, 64)
	if err != nil || n < 1 || math.IsInf(n, 0) {
		return 0, fmt.Errorf("want a number >= 1, got %q", v)
	}
	return n, nil
}

func fmtNum(n float64) string { return strconv.FormatFloat(n, 'g', -1, 64) }

// bucket is one key's token bucket.
type bucket struct {
	tokens float64
	last   int64 // ms of the last update
}

// Limiter is the state: a token bucket per key. It lives in the instance's memory.
type Limiter struct {
	buckets map[string]*bucket
	// Evicted counts the buckets dropped to stay within max_keys.
	Evicted uint64
}

// NewLimiter returns a limiter with no buckets: every key starts full.
func NewLimiter() *Limiter { return &Limiter{buckets: map[string]*bucket{}} }

// Len returns the number of buckets held.
func (l *Limiter) Len() int { return len(l.buckets) }

// Check spends req's cost from its key's bucket at time now (Unix ms) under policy p. It
// allocates only for a key without a bucket (the bucket, and the key copied: req's aliases the
// input).
func (l *Limiter) Check(p *Policy, req *Request, now int64) Decision {
	lim, ok := p.overrides[string(req.Key)]
	if !ok {
		lim = p.def
	}
	cost := req.Cost
	b, ok := l.buckets[string(req.Key)]
	if !ok {
		l.evict(p.maxKeys-1, now, p)
		b = &bucket{tokens: lim.burst, last: now}
		l.buckets[string(req.Key)] = b
	}
	if elapsed := now - b.last; elapsed > 0 { // a clock that goes back refills nothing
		b.tokens += float64(elapsed) * lim.perMS
		b.last = now
	}
	b.tokens = math.Min(b.tokens, lim.burst) // also after a config change lowered the burst
	d := Decision{Limit: lim.burst, cost: cost, key: req.Key, lim: lim, headers: p.headers}
	switch {
	case cost > lim.burst:
		d.verdict = verdictNever
		d.RetryAfterMS = -1
	case b.tokens >= cost:
		b.tokens -= cost
		d.Allow = true
		d.verdict = verdictWithin
	default:
		d.verdict = verdictExceeded
		d.RetryAfterMS = msUntil(cost-b.tokens, lim.perMS)
	}
	d.Remaining = int64(math.Floor(b.tokens + 1e-9))
	d.ResetMS = msUntil(lim.burst-b.tokens, lim.perMS)
	if !d.Allow {
		d.Status = 429
	}
	return d
}

// Scratch is the reusable memory of AppendJSON: with one per goroutine (the guest has one),
// writing a decision allocates nothing once the buffers have grown. The zero value is ready.
type Scratch struct {
	text []byte // the reason being formatted
}

// AppendJSON appends d as the check handler's output, byte for byte as encoding/json marshalled
// it (the reference in reference_test.go): the reason formatted into sc, the headers (names in
// lower case, in sorted order) when the policy returns them.
func (d *Decision) AppendJSON(dst []byte, sc *Scratch) []byte {
	dst = strconv.AppendBool(append(dst, `{"allow":`...), d.Allow)
	if d.Status != 0 {
		dst = strconv.AppendInt(append(dst, `,"status":`...), int64(d.Status), 10)
	}
	t := sc.text[:0]
	switch d.verdict {
	case verdictWithin:
		t = append(quote(append(t, "key "...), d.key), " is within "...)
		t = append(t, d.lim.text...)
	case verdictExceeded:
		t = append(quote(append(t, "key "...), d.key), " exceeded "...)
		t = append(t, d.lim.text...)
	case verdictNever:
		t = strconv.AppendFloat(append(t, "cost "...), d.cost, 'g', -1, 64)
		t = append(append(t, " exceeds the burst "...), d.lim.burstText...)
		t = append(quote(append(t, " of key "...), d.key), ": never allowed"...)
	}
	if cap(t) <= 4<<10 {
		sc.text = t // kept for the next decision; a huge one is not held on to
	}
	dst = append(sdk.AppendJSONBytes(append(dst, `,"reasons":[`...), t), ']')
	dst = appendJSONFloat(append(dst, `,"limit":`...), d.Limit)
	dst = strconv.AppendInt(append(dst, `,"remaining":`...), d.Remaining, 10)
	dst = strconv.AppendInt(append(dst, `,"retry_after_ms":`...), d.RetryAfterMS, 10)
	dst = strconv.AppendInt(append(dst, `,"reset_ms":`...), d.ResetMS, 10)
	dst = append(dst, `,"mutations":{"headers":{`...)
	if d.headers {
		dst = append(append(append(dst, `"ratelimit-limit":"`...), d.lim.burstText...), '"')
		dst = strconv.AppendInt(append(dst, `,"ratelimit-remaining":"`...), d.Remaining, 10)
		dst = strconv.AppendInt(append(dst, `","ratelimit-reset":"`...), ceilDiv(d.ResetMS, 1000), 10)
		dst = append(dst, '"')
		if !d.Allow && d.RetryAfterMS >= 0 {
			dst = strconv.AppendInt(append(dst, `,"retry-after":"`...), ceilDiv(d.RetryAfterMS, 1000), 10)
			dst = append(dst, '"')
		}
	}
	return append(dst, "}}}"...)
}

// appendEvent appends the payload of a "decision" event: {"key":…,"allow":…,"remaining":…}.
func appendEvent(dst []byte, d *Decision) []byte {
	dst = sdk.AppendJSONBytes(append(dst, `{"key":`...), d.key)
	dst = strconv.AppendBool(append(dst, `,"allow":`...), d.Allow)
	dst = strconv.AppendInt(append(dst, `,"remaining":`...), d.Remaining, 10)
	return append(dst, '}')
}

// quote appends s quoted as Go's %q does.
func quote(t, s []byte) []byte {
	return strconv.AppendQuote(t, unsafe.String(unsafe.SliceData(s), len(s))) // read only
}

// appendJSONFloat appends f as encoding/json writes a float64: the shortest decimal that
// reads back as f, in exponent form below 1e-6 and from 1e21, the exponent without a leading
// zero. f is finite (a burst is).
func appendJSONFloat(dst []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	dst = strconv.AppendFloat(dst, f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9
		if n := len(dst); n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

// msUntil is how many whole milliseconds it takes to refill missing tokens; -1 for never.
func msUntil(missing, perMS float64) int64 {
	if missing <= 1e-9 {
		return 0
	}
	if perMS == 0 {
		return -1
	}
	return int64(math.Ceil(missing/perMS - 1e-9))
}

func ceilDiv(a, b int64) int64 {
	if a <= 0 {
		return a
	}
	return (a + b - 1) / b
}

// evict makes room so that at most n buckets remain: first it drops every bucket that has
// refilled to full by now (forgetting it changes nothing), then the least recently updated.
func (l *Limiter) evict(n int, now int64, p *Policy) {
	if len(l.buckets) <= n {
		return
	}
	for k, b := range l.buckets {
		lim, ok := p.overrides[k]
		if !ok {
			lim = p.def
		}
		if b.tokens+float64(max(now-b.last, 0))*lim.perMS >= lim.burst {
			delete(l.buckets, k)
			l.Evicted++
		}
	}
	for len(l.buckets) > n {
		oldest, first := "", true
		for k, b := range l.buckets {
			if first || b.last < l.buckets[oldest].last || b.last == l.buckets[oldest].last && k < oldest {
				oldest, first = k, false
			}
		}
		delete(l.buckets, oldest)
		l.Evicted++
	}
}

// DecodeRequest reads the check input into req strictly: one JSON object, no unknown fields
// (keys match exactly), a non-empty key, a non-negative cost and a non-negative integer now_ms;
// null stands for absent (a null key leaves the key as it was, as encoding/json did). req.Key
// aliases input. Its errors are for sdk.InvalidInput.
func DecodeRequest(input []byte, req *Request) error {
	*req = Request{Cost: 1}
	r := sdk.NewJSONReader(input)
	if r.Kind() == sdk.JSONNull {
		r.Null()
	} else if r.Object() {
		for k, ok := r.NextKey(); ok; k, ok = r.NextKey() {
			null := r.Kind() == sdk.JSONNull
			if null {
				r.Null()
			}
			switch string(k) {
			case "key":
				if !null {
					req.Key = r.Str()
				}
			case "cost":
				req.Cost = 1
				if !null {
					req.Cost = r.Float64()
				}
			case "now_ms":
				req.NowMS, req.HasNow = 0, !null
				if !null {
					req.NowMS = r.Int64()
				}
			default:
				r.Fail(fmt.Sprintf("unknown field %q", k))
			}
		}
	}
	if err := r.End(); err != nil {
		return fmt.Errorf("malformed request: %w", err)
	}
	if len(req.Key) == 0 {
		return errors.New(`malformed request: "key" is missing or empty`)
	}
	if req.Cost < 0 {
		return errors.New(`malformed request: "cost" is negative`)
	}
	if req.HasNow && req.NowMS < 0 {
		return errors.New(`malformed request: "now_ms" is negative`)
	}
	return nil
}

// now is the time of req in Unix ms: its now_ms, or the clock's.
func now(req *Request, clock func() time.Time) int64 {
	if req.HasNow {
		return req.NowMS
	}
	return clock().UnixMilli()
}
