# The authz plugin's policy (plugins/authz, README.md there) in Rego, for the in-process
# comparison with OPA: the same allow and reasons on every input (decision_test.go checks it).
# The config is data.config, compiled from the plugin's config keys by the Go test:
#   roles: role name -> [{"type": t, "action": a}], "*" for any
#   owner_actions: [action or "*"], default_roles: [role], default_allow: bool
package authz

cfg := data.config

id := object.get(input, ["subject", "id"], "")

action := input.action

typ := input.resource.type

res_id := object.get(input, ["resource", "id"], "")

owner := object.get(input, ["resource", "owner"], "")

# The subject's roles, then the default roles, each once, in order of first appearance.
all_roles := array.concat(object.get(input, ["subject", "roles"], []), cfg.default_roles)

roles := [r | some i, r in all_roles; not seen_before(i, r)]

seen_before(i, r) if {
	some j
	j < i
	all_roles[j] == r
}

grants(r) if {
	some p in cfg.roles[r]
	p.type in {"*", typ}
	p.action in {"*", action}
}

defined(r) if cfg.roles[r]

owner_may if "*" in cfg.owner_actions

owner_may if action in cfg.owner_actions

owns if {
	owner != ""
	owner == id
}

grant_reasons := [sprintf("role %q grants %q on %q", [r, action, typ]) | some r in roles; grants(r)]

owner_reasons := [sprintf("subject %q owns %s %q", [id, typ, res_id]) | owns; owner_may]

allow_reasons := array.concat(grant_reasons, owner_reasons)

first_reason := sprintf("subject %q has no roles", [id]) if {
	count(roles) == 0
} else := sprintf("no role of subject %q grants %q on %q", [id, action, typ])

undefined := [r | some r in roles; not defined(r)]

undefined_notes := [sprintf("role %q is not defined", [r]) | some i, r in undefined; i < 16]

more_notes := [sprintf("and %d more roles not defined", [count(undefined) - 16]) | count(undefined) > 16]

ownership_notes := [sprintf("subject %q owns %s %q, but owners may not %q", [id, typ, res_id, action]) | owns; not owner_may]

not_owner_notes := [sprintf("subject %q does not own %s %q", [id, typ, res_id]) | not owns; owner_may]

default_notes := [`allowed by config "default" = "allow"` | cfg.default_allow]

deny_reasons := array.concat(
	array.concat(array.concat([first_reason], undefined_notes), more_notes),
	array.concat(array.concat(ownership_notes, not_owner_notes), default_notes),
)

decision := {"allow": false, "reasons": ["subject has no id"]} if id == ""

decision := {"allow": true, "reasons": allow_reasons} if {
	id != ""
	count(allow_reasons) > 0
}

decision := {"allow": cfg.default_allow, "reasons": deny_reasons} if {
	id != ""
	count(allow_reasons) == 0
}
