package main

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	sdk "github.com/wasmvisor/wasmvisor/sdk/go"
)

// refConfigs are the configs of the differential tests.
var refConfigs = []map[string]string{
	{},
	{"rate": "2/s", "burst": "3"},
	{"override.alice": "100/m 1", "override.b\u00e9": "0.5/h 2.5", "headers": "false"},
	{"rate": "0/s", "burst": "1e22"},
	{"max_keys": "2", "rate": "1.5/m", "burst": "2.5"},
	{"rate": "1e-9/s", "burst": "1.0000001"},
}

// refInputs are check inputs, valid and not, run in this order on one limiter: a key's
// bucket empties and refills.
var refInputs = []string{
	`{"key":"alice","now_ms":1000}`,
	`{"key":"alice","now_ms":1000}`,
	`{"key":"alice","cost":2.5,"now_ms":1000}`,
	`{"key":"alice","now_ms":1100}`,
	`{"key":"bob","cost":0,"now_ms":1100}`,
	`{"key":"alice","cost":4,"now_ms":1200}`,
	`{"key":"alice","cost":1e-7,"now_ms":900}`,
	`{"key":"carol"}`,
	`{"key":"b\u00e9","cost":1.5,"now_ms":5000}`,
	`{"key":"d\u00e9j\u00e0 <vu> & \"q\"\n\u2028","now_ms":5000}`,
	"{\"key\":\"bad \xff utf8\",\"now_ms\":5000}",
	`{"key":"alice","now_ms":3600000000}`,
	`{"key":"alice","cost":null,"now_ms":null}`,
	`{"key":"x","key":null,"cost":2,"cost":null,"now_ms":7,"now_ms":8}`,
	`{"key":"alice","cost":1e30,"now_ms":3600000001}`,
	`{"key":"alice","cost":-0,"now_ms":-0}`,
	` {"now_ms":1,"key":"zed"} `,
	`{"key":`,
	`{"key":"a","tokens":1}`,
	`{"key":""}`,
	`{"key":null}`,
	`{"key":"a","cost":-1}`,
	`{"key":"a","now_ms":-5}`,
	`{"key":"a"} {}`,
	`{"key":"a","now_ms":1.5}`,
	`{"key":"a","now_ms":1e3}`,
	`{"key":"a","now_ms":9223372036854775808}`,
	`{"key":"a","cost":1e400}`,
	`{"key":1}`,
	`{"KEY":"a"}`,
	`[]`, `null`, ``, `{}`, `"key"`,
}

// refClock is the clock of requests without now_ms in the differential tests.
func refClock() time.Time { return time.UnixMilli(4000) }

// pair is the fast path and the reference, each with its limiter, under one config.
type pair struct {
	p   *Policy
	l   *Limiter
	ref *refLimiter
	sc  Scratch
}

func newPair(t *testing.T, cfg map[string]string) *pair {
	t.Helper()
	p, err := ParsePolicy(sdk.NewConfigView(cfg))
	if err != nil {
		t.Fatalf("config %v: %v", cfg, err)
	}
	return &pair{p: p, l: NewLimiter(), ref: newRefLimiter()}
}

// check runs input through both: when the fast path accepts it, the reference must too and
// give the same output and event bytes. The fast path may refuse what the reference took only
// for keys that differ in case (encoding/json matches keys case-insensitively), which strict
// says is not expected here. It returns whether the fast path accepted the input.
func (pr *pair) check(t *testing.T, input []byte, strict bool) bool {
	t.Helper()
	var req Request
	err := DecodeRequest(input, &req)
	rreq, rerr := refDecodeRequest(input)
	if err != nil {
		if rerr == nil && strict {
			t.Fatalf("%q: refused (%v), the reference accepted it", input, err)
		}
		return false
	}
	if rerr != nil {
		t.Fatalf("%q: accepted, the reference refused it: %v", input, rerr)
	}
	d := pr.l.Check(pr.p, &req, now(&req, refClock))
	rd := pr.ref.Check(pr.p, rreq, refNow(rreq, refClock))
	got := d.AppendJSON(nil, &pr.sc)
	want, _ := json.Marshal(rd)
	if !bytes.Equal(got, want) {
		t.Fatalf("input %q:\ngot       %s\nreference %s", input, got, want)
	}
	ev := appendEvent(nil, &d)
	wantEv, _ := json.Marshal(refDecisionEvent{Key: rreq.Key, Allow: rd.Allow, Remaining: rd.Remaining})
	if !bytes.Equal(ev, wantEv) {
		t.Fatalf("input %q: event %s, reference %s", input, ev, wantEv)
	}
	if pr.l.Len() != pr.ref.Len() || pr.l.Evicted != pr.ref.Evicted {
		t.Fatalf("input %q: %d buckets, %d evicted; reference %d, %d", input, pr.l.Len(), pr.l.Evicted, pr.ref.Len(), pr.ref.Evicted)
	}
	return true
}

// refDecisionEvent is the reference payload of a "decision" event.
type refDecisionEvent struct {
	Key       string `json:"key"`
	Allow     bool   `json:"allow"`
	Remaining int64  `json:"remaining"`
}

func TestCheckMatchesReference(t *testing.T) {
	accepted := 0
	for _, cfg := range refConfigs {
		pr := newPair(t, cfg)
		for range 3 { // the buckets empty, then are spent from empty
			for _, in := range refInputs {
				if pr.check(t, []byte(in), in != `{"KEY":"a"}`) {
					accepted++
				}
			}
		}
	}
	if want := 17 * 3 * len(refConfigs); accepted != want {
		t.Fatalf("%d decisions compared, want %d", accepted, want)
	}
}

// FuzzCheckMatchesReference runs the lines of input in order on one limiter.
func FuzzCheckMatchesReference(f *testing.F) {
	for i, in := range refInputs {
		f.Add(uint8(i), []byte(in+"\n"+in))
	}
	f.Fuzz(func(t *testing.T, cfg uint8, input []byte) {
		pr := newPair(t, refConfigs[int(cfg)%len(refConfigs)])
		for line := range bytes.SplitSeq(input, []byte("\n")) {
			pr.check(t, line, false)
		}
	})
}

// The handler's decision allocates nothing for a key that has a bucket, once the event ring
// has gone round (its slots' buffers are reused): the output is built in one buffer reused
// from call to call.
func TestCheckAllocations(t *testing.T) {
	t.Cleanup(func() { limiter = NewLimiter() })
	for _, in := range refInputs[:6] {
		input := []byte(in)
		for range sdk.DefaultEventCapacity {
			if _, err := check(input); err != nil {
				t.Fatal(err)
			}
		}
		if n := testing.AllocsPerRun(50, func() { _, _ = check(input) }); n > 0 {
			t.Errorf("%s: %v allocations per decision, want 0", in, n)
		}
	}
}
