// Command validate is a request validation policy plugin for wasmvisor: handler "validate"
// (alias "evaluate") checks a described HTTP request against a method/path allow-list,
// required headers, a body size limit and JSON field checks, and answers allow or deny with
// reasons, an HTTP status and a decision header to set. See README.md.
package main

import (
	"encoding/json"
	"fmt"

	sdk "github.com/wasmvisor/wasmvisor/sdk/go"
)

var (
	decisions = sdk.NewCounter("decisions_total")
	allows    = sdk.NewCounter("allow_total")
	denies    = sdk.NewCounter("deny_total")
	invalids  = sdk.NewCounter("invalid_total")
	bodyBytes = sdk.NewHistogram("body_bytes", []float64{0, 256, 1024, 4096, 16384, 65536, 262144, 1048576})

	// policy is the policy of the applied config; before the first config, the defaults.
	policy = mustPolicy(sdk.ConfigView{})
)

func init() {
	sdk.Handle("validate", validate)
	sdk.Handle("evaluate", validate)
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
// stays).
func applyConfig(_, cfg sdk.ConfigView) error {
	p, err := ParsePolicy(cfg)
	if err != nil {
		return err
	}
	policy = p
	sdk.Logf(sdk.LevelInfo, "validate: policy applied: %d routes, %d field rules", len(p.routes), len(p.fields))
	return nil
}

// decisionEvent is the payload of a "decision" event.
type decisionEvent struct {
	Method  string   `json:"method"`
	Path    string   `json:"path"`
	Allow   bool     `json:"allow"`
	Status  int      `json:"status,omitempty"`
	Reasons []string `json:"reasons"`
}

func validate(input []byte) ([]byte, error) {
	req, err := DecodeRequest(input)
	if err != nil {
		invalids.Inc()
		return nil, sdk.InvalidInput(err)
	}
	bodyBytes.Observe(float64(req.size()))
	d := policy.Evaluate(req)
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
	ev, _ := json.Marshal(decisionEvent{Method: req.Method, Path: req.Path, Allow: d.Allow, Status: d.Status, Reasons: d.Reasons})
	sdk.Emit("decision", ev)
	return out, nil
}
