// Command ratelimit is a token-bucket rate-limit policy plugin for wasmvisor: handler "check"
// (alias "evaluate") spends a request's cost from its key's bucket and answers allow, or deny
// with status 429 and a retry time, plus RateLimit headers. The buckets live in the
// instance's memory: limits are per instance. See README.md.
package main

import (
	"time"

	sdk "github.com/wasmvisor/wasmvisor/sdk/go"
)

var (
	decisions = sdk.NewCounter("decisions_total")
	allows    = sdk.NewCounter("allow_total")
	denies    = sdk.NewCounter("deny_total")
	invalids  = sdk.NewCounter("invalid_total")
	keys      = sdk.NewGauge("keys")
	evictions = sdk.NewCounter("evicted_total")

	// policy is the policy of the applied config; before the first config, the defaults.
	policy  = mustPolicy(sdk.ConfigView{})
	limiter = NewLimiter()
	clock   = time.Now
)

func init() {
	sdk.Handle("check", check)
	sdk.Handle("evaluate", check)
	sdk.OnConfigChange(applyConfig)
}

func main() {} // a reactor: never called

func mustPolicy(cfg sdk.ConfigView) *Policy {
	p, err := ParsePolicy(cfg)
	if err != nil {
		panic(err)
	}
	return p
}

// applyConfig replaces the policy, or rejects a config that does not parse (the old policy
// stays). The buckets stay: a key keeps what it has spent.
func applyConfig(_, cfg sdk.ConfigView) error {
	p, err := ParsePolicy(cfg)
	if err != nil {
		return err
	}
	policy = p
	sdk.Logf(sdk.LevelInfo, "ratelimit: policy applied: %s, %d overrides", p.def.text, len(p.overrides))
	return nil
}

// The guest runs one call at a time: the request, the scratch memory, the output and the
// event's buffer are reused from call to call.
var (
	req     Request
	scratch Scratch
	event   []byte
	out     = make([]byte, 0, outCap)
)

// outCap is the output buffer's first capacity: most decisions fit.
const outCap = 320

func check(input []byte) ([]byte, error) {
	if err := DecodeRequest(input, &req); err != nil {
		invalids.Inc()
		return nil, sdk.InvalidInput(err)
	}
	before := limiter.Evicted
	d := limiter.Check(policy, &req, now(&req, clock))
	evictions.Add(limiter.Evicted - before)
	keys.Set(float64(limiter.Len()))
	decisions.Inc()
	if d.Allow {
		allows.Inc()
	} else {
		denies.Inc()
	}
	// The output is built in the same buffer every call: the host has copied the previous
	// one by the time the next call starts (sdk.Handle).
	o := d.AppendJSON(out[:0], &scratch)
	if cap(o) <= 4<<10 {
		out = o // a huge one is not held on to
	}
	ev := appendEvent(event[:0], &d)
	sdk.Emit("decision", ev) // copied
	if cap(ev) <= 4<<10 {
		event = ev // kept for the next call; a huge one is not held on to
	}
	return o, nil
}
