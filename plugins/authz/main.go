// Command authz is an RBAC/ABAC authorization policy plugin for wasmvisor: handler "evaluate"
// decides whether a subject may take an action on a resource, with human-readable reasons.
// Roles, owner rights and defaults come from the plugin's config; see README.md.
package main

import (
	"encoding/json"
	"fmt"

	sdk "github.com/wasmvisor/wasmvisor/sdk/go"
)

var (
	decisions  = sdk.NewCounter("decisions_total")
	allows     = sdk.NewCounter("allow_total")
	denies     = sdk.NewCounter("deny_total")
	invalids   = sdk.NewCounter("invalid_total")
	inputBytes = sdk.NewHistogram("input_bytes", []float64{64, 128, 256, 512, 1024, 4096, 16384})

	// policy is the policy of the applied config; before the first config, the defaults.
	policy = mustPolicy(sdk.ConfigView{})
)

func init() {
	sdk.Handle("evaluate", evaluate)
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
	sdk.Logf(sdk.LevelInfo, "authz: policy applied: %d roles", len(p.roles))
	return nil
}

// decisionEvent is the payload of a "decision" event.
type decisionEvent struct {
	Subject  string `json:"subject"`
	Action   string `json:"action"`
	Type     string `json:"type"`
	Resource string `json:"resource"`
	Allow    bool   `json:"allow"`
}

func evaluate(input []byte) ([]byte, error) {
	inputBytes.Observe(float64(len(input)))
	req, err := DecodeRequest(input)
	if err != nil {
		invalids.Inc()
		return nil, sdk.InvalidInput(err)
	}
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
	ev, _ := json.Marshal(decisionEvent{
		Subject: req.Subject.ID, Action: req.Action, Type: req.Resource.Type, Resource: req.Resource.ID, Allow: d.Allow,
	})
	sdk.Emit("decision", ev)
	return out, nil
}
