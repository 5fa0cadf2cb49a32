// Package opa compares a wasmvisor decision with Open Policy Agent's on the same policy and
// inputs: the built-in authz plugin (plugins/authz, a Go guest) against authz.rego, its port
// to Rego. In process (the tests and BenchmarkDecision): host.Host.CallAppend against OPA's
// prepared query. Over HTTP (cmd/httpbench): `wasmvisor serve` against `opa run --server`.
// It is a module of its own so that nothing in wasmvisor links OPA; see README.md.
package opa

import "strings"

// AuthzDefaults is the authz plugin's default config (plugins/authz/policy.go, defaultConfig).
var AuthzDefaults = map[string]string{
	"role.admin":    "*",
	"role.editor":   "read,write",
	"role.viewer":   "read",
	"owner_actions": "read,write",
	"default_roles": "",
	"default":       "deny",
}

// RegoData compiles an authz config (over the defaults) into authz.rego's data.config.
func RegoData(cfg map[string]string) map[string]any {
	merged := map[string]string{}
	for k, v := range AuthzDefaults {
		merged[k] = v
	}
	for k, v := range cfg {
		merged[k] = v
	}
	list := func(v string) []any {
		out := []any{}
		for item := range strings.SplitSeq(v, ",") {
			if item = strings.TrimSpace(item); item != "" {
				out = append(out, item)
			}
		}
		return out
	}
	roles := map[string]any{}
	for k, v := range merged {
		name, ok := strings.CutPrefix(k, "role.")
		if !ok {
			continue
		}
		perms := []any{}
		for _, item := range list(v) {
			typ, action, found := strings.Cut(item.(string), ":")
			if !found {
				typ, action = "*", typ
			}
			perms = append(perms, map[string]any{"type": typ, "action": action})
		}
		roles[name] = perms
	}
	return map[string]any{"config": map[string]any{
		"roles":         roles,
		"owner_actions": list(merged["owner_actions"]),
		"default_roles": list(merged["default_roles"]),
		"default_allow": merged["default"] == "allow",
	}}
}

// AuthzRego is the path of authz.rego from this directory: it lives with the Rego corpus, in
// plugins/rego/authz, beside its policy.wasm (`opa build -t wasm -e authz/decision`).
const AuthzRego = "../../plugins/rego/authz/authz.rego"
