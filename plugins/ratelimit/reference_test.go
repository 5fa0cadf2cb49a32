package main

// The ratelimit decision as it was before the JSON scanner (encoding/json by reflection, the
// reasons formatted with fmt, a map of headers per decision), kept as the reference that the
// fast path must agree with byte for byte (TestCheckMatchesReference, FuzzCheckMatchesReference).

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"time"
)

// refRequest is the input of the check handler.
type refRequest struct {
	// Key identifies the client whose budget is spent: an API key, a user, an IP address.
	Key string `json:"key"`
	// Cost is the number of tokens the request takes; absent means 1, 0 only looks.
	Cost *float64 `json:"cost"`
	// NowMS is the time of the request in Unix milliseconds; absent means the guest's clock.
	NowMS *int64 `json:"now_ms"`
}

// refDecision is the output of the check handler. Reasons is never empty.
type refDecision struct {
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
	ResetMS   int64        `json:"reset_ms"`
	Mutations refMutations `json:"mutations"`
}

// refMutations are headers to set on the response to the client (names in lower case).
type refMutations struct {
	Headers map[string]string `json:"headers"`
}

// refBucket is one key's token bucket.
type refBucket struct {
	tokens float64
	last   int64 // ms of the last update
}

// refLimiter is the state: a token bucket per key. It lives in the instance's memory.
type refLimiter struct {
	buckets map[string]*refBucket
	// Evicted counts the buckets dropped to stay within max_keys.
	Evicted uint64
}

// newRefLimiter returns a limiter with no buckets: every key starts full.
func newRefLimiter() *refLimiter { return &refLimiter{buckets: map[string]*refBucket{}} }

// Len returns the number of buckets held.
func (l *refLimiter) Len() int { return len(l.buckets) }

// Check spends req's cost from its key's bucket at time now (Unix ms) under policy p.
func (l *refLimiter) Check(p *Policy, req *refRequest, now int64) refDecision {
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
		b = &refBucket{tokens: lim.burst, last: now}
		l.buckets[req.Key] = b
	}
	if elapsed := now - b.last; elapsed > 0 { // a clock that goes back refills nothing
		b.tokens += float64(elapsed) * lim.perMS
		b.last = now
	}
	b.tokens = math.Min(b.tokens, lim.burst) // also after a config change lowered the burst
	d := refDecision{Limit: lim.burst}
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

// evict makes room so that at most n buckets remain: first it drops every bucket that has
// refilled to full by now (forgetting it changes nothing), then the least recently updated.
func (l *refLimiter) evict(n int, now int64, p *Policy) {
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

// refDecodeRequest parses the check input strictly: one JSON object, no unknown fields, a
// non-empty key, a non-negative cost and a non-negative now_ms. Its errors are for
// sdk.InvalidInput.
func refDecodeRequest(input []byte) (*refRequest, error) {
	dec := json.NewDecoder(bytes.NewReader(input))
	dec.DisallowUnknownFields()
	var req refRequest
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
func refNow(req *refRequest, clock func() time.Time) int64 {
	if req.NowMS != nil {
		return *req.NowMS
	}
	return clock().UnixMilli()
}
