// Package policy is a tiny service that asks the authz plugin for decisions; its tests show
// how to test such code with hosttest.
package policy

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/wasmvisor/wasmvisor/host"
)

// Checker asks a host's "authz" plugin.
type Checker struct{ Host *host.Host }

// Allowed reports whether user, with roles, may take action on a document owned by owner.
func (c Checker) Allowed(ctx context.Context, user string, roles []string, action, owner string) (bool, error) {
	req, err := json.Marshal(map[string]any{
		"subject":  map[string]any{"id": user, "roles": roles},
		"action":   action,
		"resource": map[string]any{"type": "document", "id": "1", "owner": owner},
	})
	if err != nil {
		return false, err
	}
	out, err := c.Host.Call(ctx, "authz", "evaluate", req)
	if err != nil {
		return false, err
	}
	var res struct{ Allow bool }
	if err := json.Unmarshal(out, &res); err != nil {
		return false, fmt.Errorf("authz: %w", err)
	}
	return res.Allow, nil
}
