// Command ratelimit is a token-bucket rate-limit policy plugin for wasmvisor: handler "check"
// (alias "evaluate") spends a request's cost from its key's bucket and answers allow, or deny
// with status 429 and a retry time, plus RateLimit headers. The buckets live in the
// instance's memory: limits are per instance. See README.md.
package main

import (
	"encoding/json"
	"fmt"
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

// decisionEvent is the payload of a "decision" event.
type decisionEvent struct {
	Key       string `json:"key"`
	Allow     bool   `json:"allow"`
	Remaining int64  `json:"remaining"`
}

func check(input []byte) ([]byte, error) {
	req, err := DecodeRequest(input)
	if err != nil {
		invalids.Inc()
		return nil, sdk.InvalidInput(err)
	}
	before := limiter.Evicted
	d := limiter.Check(policy, req, now(req, clock))
	evictions.Add(limiter.Evicted - before)
	keys.Set(float64(limiter.Len()))
	decisions.Inc()
	if d.Allow {
		allows.Inc()
	} else {
		denies.Inc()
	}
	out, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("encoding decision: %w", err)
	}
	ev, _ := json.Marshal(decisionEvent{Key: req.Key, Allow: d.Allow, Remaining: d.Remaining})
	sdk.Emit("decision", ev)
	return out, nil
}
