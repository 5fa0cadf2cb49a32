package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	sdk "github.com/wasmvisor/wasmvisor/sdk/go"
)

func at(key string, ms int64) *Request {
	return &Request{Key: []byte(key), Cost: 1, NowMS: ms, HasNow: true}
}

func costAt(key string, cost float64, ms int64) *Request {
	r := at(key, ms)
	r.Cost = cost
	return r
}

// written is d as the handler writes it, read back.
func written(t *testing.T, d Decision) refDecision {
	t.Helper()
	var out refDecision
	if err := json.Unmarshal(d.AppendJSON(nil, &Scratch{}), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestBucket(t *testing.T) {
	p := mustPolicy(sdk.NewConfigView(map[string]string{"rate": "2/s", "burst": "3"}))
	l := NewLimiter()
	type step struct {
		req       *Request
		allow     bool
		remaining int64
		retry     int64
	}
	for i, s := range []step{
		{at("a", 1000), true, 2, 0},
		{at("a", 1000), true, 1, 0},
		{at("a", 1000), true, 0, 0},
		{at("a", 1000), false, 0, 500}, // empty: one token every 500 ms
		{at("b", 1000), true, 2, 0},    // keys are independent
		{at("a", 1250), false, 0, 250}, // half a token
		{at("a", 1500), true, 0, 0},    // one token refilled
		{at("a", 900), false, 0, 500},  // the clock went back: nothing refills
		{at("a", 60000), true, 2, 0},   // long idle: full again, capped at the burst
		{costAt("a", 0, 60000), true, 2, 0},
		{costAt("a", 2.5, 60000), false, 2, 250},
		{costAt("a", 4, 60000), false, 2, -1}, // more than the burst: never
	} {
		d := written(t, l.Check(p, s.req, s.req.NowMS))
		if d.Allow != s.allow || d.Remaining != s.remaining || d.RetryAfterMS != s.retry {
			t.Fatalf("step %d (%s at %d): got allow=%v remaining=%d retry=%d %q, want %v %d %d",
				i, s.req.Key, s.req.NowMS, d.Allow, d.Remaining, d.RetryAfterMS, d.Reasons, s.allow, s.remaining, s.retry)
		}
		if !d.Allow && d.Status != 429 || d.Allow && d.Status != 0 {
			t.Fatalf("step %d: status %d", i, d.Status)
		}
	}
}

func TestHeadersAndReasons(t *testing.T) {
	p := mustPolicy(sdk.NewConfigView(map[string]string{"rate": "60/m", "burst": "1"}))
	l := NewLimiter()
	d := written(t, l.Check(p, at("k", 0), 0))
	if got := fmt.Sprint(d.Mutations.Headers); got != "map[ratelimit-limit:1 ratelimit-remaining:0 ratelimit-reset:1]" {
		t.Errorf("allow headers %s", got)
	}
	if d.Reasons[0] != `key "k" is within 60/m, burst 1` {
		t.Errorf("reasons %q", d.Reasons)
	}
	d = written(t, l.Check(p, at("k", 1), 1))
	if got := fmt.Sprint(d.Mutations.Headers); got != "map[ratelimit-limit:1 ratelimit-remaining:0 ratelimit-reset:1 retry-after:1]" {
		t.Errorf("deny headers %s", got)
	}
	if d.Reasons[0] != `key "k" exceeded 60/m, burst 1` || d.RetryAfterMS != 999 || d.ResetMS != 999 {
		t.Errorf("deny %+v", d)
	}
	off := mustPolicy(sdk.NewConfigView(map[string]string{"headers": "false"}))
	if d := written(t, l.Check(off, at("z", 0), 0)); len(d.Mutations.Headers) != 0 {
		t.Errorf("headers off: %v", d.Mutations.Headers)
	}
}

func TestOverrideAndZeroRate(t *testing.T) {
	p := mustPolicy(sdk.NewConfigView(map[string]string{"override.vip": "100/s 5", "override.blocked": "0/s 1"}))
	l := NewLimiter()
	for i := 0; i < 5; i++ {
		if d := l.Check(p, at("vip", 0), 0); !d.Allow || d.Limit != 5 {
			t.Fatalf("vip %d: %+v", i, d)
		}
	}
	if d := written(t, l.Check(p, at("vip", 10), 10)); !d.Allow || d.Reasons[0] != `key "vip" is within 100/s, burst 5` {
		t.Fatalf("vip refill: %+v", d)
	}
	l.Check(p, at("blocked", 0), 0)
	if d := l.Check(p, at("blocked", 1e9), 1e9); d.Allow || d.RetryAfterMS != -1 {
		t.Fatalf("a zero rate never refills: %+v", d)
	}
	if d := l.Check(p, at("other", 0), 0); !d.Allow || d.Limit != 20 {
		t.Fatalf("default limit: %+v", d)
	}
}

func TestEviction(t *testing.T) {
	p := mustPolicy(sdk.NewConfigView(map[string]string{"max_keys": "3", "rate": "1/s", "burst": "2"}))
	l := NewLimiter()
	l.Check(p, at("a", 0), 0)
	l.Check(p, at("b", 1), 1)
	l.Check(p, at("c", 2), 2)
	l.Check(p, at("d", 3), 3) // none full: the oldest, a, goes
	if l.Len() != 3 || l.Evicted != 1 {
		t.Fatalf("len %d evicted %d", l.Len(), l.Evicted)
	}
	if _, ok := l.buckets["a"]; ok {
		t.Fatal("a not evicted")
	}
	l.Check(p, at("e", 5000), 5000) // all full again: all dropped, nothing lost
	if l.Len() != 1 || l.Evicted != 4 {
		t.Fatalf("len %d evicted %d", l.Len(), l.Evicted)
	}
}

func TestParsePolicyRejects(t *testing.T) {
	for _, tc := range []struct {
		cfg  map[string]string
		want string
	}{
		{map[string]string{"rates": "1/s"}, `unknown config key "rates"`},
		{map[string]string{"override.": "1/s 1"}, `unknown config key "override."`},
		{map[string]string{"rate": "10/d"}, `config key "rate": want N/s, N/m or N/h with N >= 0, got "10/d"`},
		{map[string]string{"rate": "-1/s"}, `config key "rate": want N/s`},
		{map[string]string{"burst": "0.5"}, `config key "burst": want a number >= 1, got "0.5"`},
		{map[string]string{"max_keys": "0"}, `config key "max_keys": want a positive integer`},
		{map[string]string{"headers": "yes"}, `config key "headers": want true or false`},
		{map[string]string{"override.k": "10/s"}, `config key "override.k": want RATE BURST`},
		{map[string]string{"override.k": "10/s x"}, `config key "override.k": want a number >= 1`},
	} {
		_, err := ParsePolicy(sdk.NewConfigView(tc.cfg))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParsePolicy(%v) = %v, want an error containing %q", tc.cfg, err, tc.want)
		}
	}
}

func TestCheckHandler(t *testing.T) {
	t.Cleanup(func() { policy, limiter, clock = mustPolicy(sdk.ConfigView{}), NewLimiter(), time.Now })
	clock = func() time.Time { return time.UnixMilli(5000) }
	out, err := check([]byte(`{"key":"alice"}`))
	want := `{"allow":true,"reasons":["key \"alice\" is within 10/s, burst 20"],"limit":20,"remaining":19,"retry_after_ms":0,"reset_ms":100,` +
		`"mutations":{"headers":{"ratelimit-limit":"20","ratelimit-remaining":"19","ratelimit-reset":"1"}}}`
	if err != nil || string(out) != want {
		t.Fatalf("got %s %v\nwant %s", out, err, want)
	}
	if _, err := check([]byte(`{"key":"alice","cost":19,"now_ms":5000}`)); err != nil {
		t.Fatal(err)
	}
	out, _ = check([]byte(`{"key":"alice","now_ms":5000}`))
	var dec refDecision
	if err := json.Unmarshal(out, &dec); err != nil || dec.Allow || dec.Status != 429 || dec.RetryAfterMS != 100 {
		t.Fatalf("after the burst: %s", out)
	}
	for _, tc := range []struct{ in, invalid string }{
		{`{"key":`, "malformed request: json: "},
		{`{"key":"a","tokens":1}`, `unknown field "tokens"`},
		{`{"key":""}`, `"key" is missing or empty`},
		{`{"key":"a","cost":-1}`, `"cost" is negative`},
		{`{"key":"a","now_ms":-5}`, `"now_ms" is negative`},
		{`{"key":"a"} {}`, "data after the JSON value"},
		{`{"key":"a","now_ms":1.5}`, "malformed request"},
	} {
		_, err := check([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.invalid) || errors.Unwrap(err) == nil {
			t.Errorf("%s: err = %v, want an InvalidInput containing %q", tc.in, err, tc.invalid)
		}
	}
}

func TestConfigChangeKeepsBuckets(t *testing.T) {
	t.Cleanup(func() { policy, limiter = mustPolicy(sdk.ConfigView{}), NewLimiter() })
	for i := 0; i < 20; i++ {
		check([]byte(`{"key":"k","now_ms":0}`))
	}
	if err := applyConfig(sdk.ConfigView{}, sdk.NewConfigView(map[string]string{"burst": "30"})); err != nil {
		t.Fatal(err)
	}
	out, _ := check([]byte(`{"key":"k","now_ms":0}`))
	if !strings.Contains(string(out), `"allow":false`) {
		t.Fatalf("a config change must not refill spent buckets: %s", out)
	}
	if err := applyConfig(sdk.ConfigView{}, sdk.NewConfigView(map[string]string{"burst": "x"})); err == nil {
		t.Fatal("bad config accepted")
	}
}
