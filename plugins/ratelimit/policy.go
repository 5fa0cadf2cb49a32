package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	sdk "github.com/wasmvisor/wasmvisor/sdk/go"
)

// Request is the input of the check handler.
type Request struct {
	// Key identifies the client whose budget is spent: an API key, a user, an IP address.
	Key string `json:"key"`
	// Cost is the number of tokens the request takes; absent means 1, 0 only looks.
	Cost *float64 `json:"cost"`
	// NowMS is the time of the request in Unix milliseconds; absent means the guest's clock.
	NowMS *int64 `json:"now_ms"`
}

// Decision is the output of the check handler. Reasons is never empty.
type Decision struct {
	Allow bool `json:"allow"`
	// Status is 429 when denied, omitted when allowed.
	Status  int      `json:"status,omitempty"`
	Reasons []string `json:"reasons"`
	// Limit is the bucket's capacity (the burst), Remaining the whole tokens left after this
	// request, RetryAfterMS how long until the request would be allowed (0 when allowed).
	Limit        float64 `json:"limit"`
	Remaining    int64   `json:"remaining"`
	RetryAfterMS int64   `json:"retry_after_ms"`
	// ResetMS is how long until the bucket is full again.
	ResetMS   int64     `json:"reset_ms"`
	Mutations Mutations `json:"mutations"`
}

// Mutations are headers to set on the response to the client (names in lower case).
type Mutations struct {
	Headers map[string]string `json:"headers"`
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
			p.overrides[strings.TrimPrefix(k, prefixOverride)] = l
		default:
			return nil, fmt.Errorf("unknown config key %q", k)
		}
		if err != nil {
			return nil, fmt.Errorf("config key %q: %w", k, err)
		}
	}
	p.def.text = fmt.Sprintf("%s, burst %s", rate, fmtNum(p.def.burst))
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

// Check spends req's cost from its key's bucket at time now (Unix ms) under policy p.
func (l *Limiter) Check(p *Policy, req *Request, now int64) Decision {
	lim, ok := p.overrides[req.Key]
	if !ok {
		lim = p.def
	}
	cost := 1.0
	if req.Cost != nil {
		cost = *req.Cost
	}
	b, ok := l.buckets[req.Key]
	if !ok {
		l.evict(p.maxKeys-1, now, p)
		b = &bucket{tokens: lim.burst, last: now}
		l.buckets[req.Key] = b
	}
	if elapsed := now - b.last; elapsed > 0 { // a clock that goes back refills nothing
		b.tokens += float64(elapsed) * lim.perMS
		b.last = now
	}
	b.tokens = math.Min(b.tokens, lim.burst) // also after a config change lowered the burst
	d := Decision{Limit: lim.burst}
	switch {
	case cost > lim.burst:
		d.Reasons = []string{fmt.Sprintf("cost %s exceeds the burst %s of key %q: never allowed", fmtNum(cost), fmtNum(lim.burst), req.Key)}
		d.RetryAfterMS = -1
	case b.tokens >= cost:
		b.tokens -= cost
		d.Allow = true
		d.Reasons = []string{fmt.Sprintf("key %q is within %s", req.Key, lim.text)}
	default:
		d.Reasons = []string{fmt.Sprintf("key %q exceeded %s", req.Key, lim.text)}
		d.RetryAfterMS = msUntil(cost-b.tokens, lim.perMS)
	}
	d.Remaining = int64(math.Floor(b.tokens + 1e-9))
	d.ResetMS = msUntil(lim.burst-b.tokens, lim.perMS)
	if !d.Allow {
		d.Status = 429
	}
	d.Mutations.Headers = map[string]string{}
	if p.headers {
		h := d.Mutations.Headers
		h["ratelimit-limit"] = fmtNum(lim.burst)
		h["ratelimit-remaining"] = strconv.FormatInt(d.Remaining, 10)
		h["ratelimit-reset"] = strconv.FormatInt(ceilDiv(d.ResetMS, 1000), 10)
		if !d.Allow && d.RetryAfterMS >= 0 {
			h["retry-after"] = strconv.FormatInt(ceilDiv(d.RetryAfterMS, 1000), 10)
		}
	}
	return d
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

// DecodeRequest parses the check input strictly: one JSON object, no unknown fields, a
// non-empty key, a non-negative cost and a non-negative now_ms. Its errors are for
// sdk.InvalidInput.
func DecodeRequest(input []byte) (*Request, error) {
	dec := json.NewDecoder(bytes.NewReader(input))
	dec.DisallowUnknownFields()
	var req Request
	if err := dec.Decode(&req); err != nil {
		return nil, fmt.Errorf("malformed request: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("malformed request: data after the JSON object")
	}
	if req.Key == "" {
		return nil, errors.New(`malformed request: "key" is missing or empty`)
	}
	if req.Cost != nil && (*req.Cost < 0 || math.IsInf(*req.Cost, 0)) {
		return nil, errors.New(`malformed request: "cost" is negative`)
	}
	if req.NowMS != nil && *req.NowMS < 0 {
		return nil, errors.New(`malformed request: "now_ms" is negative`)
	}
	return &req, nil
}

// now is the time of req in Unix ms: its now_ms, or the clock's.
func now(req *Request, clock func() time.Time) int64 {
	if req.NowMS != nil {
		return *req.NowMS
	}
	return clock().UnixMilli()
}
