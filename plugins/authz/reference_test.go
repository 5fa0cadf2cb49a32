package main

// The authz policy as it was before the JSON scanner and the compiled tables (encoding/json by
// reflection, permissions scanned per call), kept as the reference that the fast path must
// agree with byte for byte (TestDecideMatchesReference, FuzzDecideMatchesReference).

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	sdk "github.com/wasmvisor/wasmvisor/sdk/go"
)

// refRequest is the input of the evaluate handler.
type refRequest struct {
	Subject struct {
		ID    string   `json:"id"`
		Roles []string `json:"roles"`
	} `json:"subject"`
	Action   string `json:"action"`
	Resource struct {
		Type  string `json:"type"`
		ID    string `json:"id"`
		Owner string `json:"owner"`
	} `json:"resource"`
}

// Decision is the output of the evaluate handler. Reasons is never empty.
type Decision struct {
	Allow   bool     `json:"allow"`
	Reasons []string `json:"reasons"`
}

// refPolicy is a parsed config. It is immutable.
type refPolicy struct {
	roles        map[string][]refPermission
	ownerActions []string // action names or "*"
	defaultRoles []string
	defaultAllow bool
}

// refPermission grants action on resources of type typ; either may be "*".
type refPermission struct{ typ, action string }

func (p refPermission) matches(typ, action string) bool {
	return (p.typ == "*" || p.typ == typ) && (p.action == "*" || p.action == action)
}

// refParsePolicy builds a policy from cfg over defaultConfig. It returns an error naming the key for
// an unknown key or a malformed value.
func refParsePolicy(cfg sdk.ConfigView) (*refPolicy, error) {
	merged := make(map[string]string, len(defaultConfig)+cfg.Len())
	for k, v := range defaultConfig {
		merged[k] = v
	}
	for _, k := range cfg.Keys() {
		v, _ := cfg.Get(k)
		merged[k] = v
	}
	p := &refPolicy{roles: make(map[string][]refPermission)}
	keys := make([]string, 0, len(merged))
	for k := range merged {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := merged[k]
		var err error
		switch {
		case strings.HasPrefix(k, keyRolePrefix):
			name := strings.TrimPrefix(k, keyRolePrefix)
			if !validName(name) {
				return nil, fmt.Errorf("config key %q: role name must match [A-Za-z0-9_.-]+", k)
			}
			var perms []refPermission
			perms, err = refParsePermissions(v)
			p.roles[name] = perms
		case k == keyOwnerActions:
			p.ownerActions, err = parseList(v, true)
		case k == keyDefaultRoles:
			p.defaultRoles, err = parseList(v, false)
		case k == keyDefault:
			switch v {
			case "deny":
			case "allow":
				p.defaultAllow = true
			default:
				err = fmt.Errorf("want deny or allow, got %q", v)
			}
		default:
			return nil, fmt.Errorf("unknown config key %q", k)
		}
		if err != nil {
			return nil, fmt.Errorf("config key %q: %w", k, err)
		}
	}
	for _, r := range p.defaultRoles {
		if _, ok := p.roles[r]; !ok {
			return nil, fmt.Errorf("config key %q: role %q is not defined", keyDefaultRoles, r)
		}
	}
	return p, nil
}

// refParsePermissions parses "action" and "type:action" items, either part "*" for any.
func refParsePermissions(v string) ([]refPermission, error) {
	items, err := splitList(v)
	if err != nil {
		return nil, err
	}
	perms := make([]refPermission, 0, len(items))
	for _, item := range items {
		typ, action, found := strings.Cut(item, ":")
		if !found {
			typ, action = "*", item
		}
		if !(validName(typ) || typ == "*") || !(validName(action) || action == "*") {
			return nil, fmt.Errorf("bad refPermission %q: want action or type:action, either part * for any", item)
		}
		perms = append(perms, refPermission{typ: typ, action: action})
	}
	return perms, nil
}

// splitList splits a comma-separated list. The empty (or blank) string is the empty list;
// spaces around items are ignored; an empty item is an error.
// Evaluate decides req. Roles are the subject's plus the default roles; any role that grants
// the action on the resource type, or ownership of the resource for an owner action, allows.
// A subject without an id is denied whatever its roles.
func (p *refPolicy) Evaluate(req *refRequest) Decision {
	id, typ, action := req.Subject.ID, req.Resource.Type, req.Action
	if id == "" {
		return Decision{Allow: false, Reasons: []string{"subject has no id"}}
	}
	// Linear in the number of roles, whatever the request holds: a set for the duplicates,
	// and at most maxNotes notes about undefined roles (the rest counted in one more).
	roles := make([]string, 0, len(req.Subject.Roles)+len(p.defaultRoles))
	seen := make(map[string]struct{}, cap(roles))
	for _, rs := range [][]string{req.Subject.Roles, p.defaultRoles} {
		for _, r := range rs {
			if _, dup := seen[r]; !dup {
				seen[r] = struct{}{}
				roles = append(roles, r)
			}
		}
	}
	var allow, notes []string
	undefined := 0
	for _, r := range roles {
		perms, ok := p.roles[r]
		if !ok {
			if undefined++; undefined <= maxNotes {
				notes = append(notes, fmt.Sprintf("role %q is not defined", r))
			}
			continue
		}
		if slices.ContainsFunc(perms, func(pm refPermission) bool { return pm.matches(typ, action) }) {
			allow = append(allow, fmt.Sprintf("role %q grants %q on %q", r, action, typ))
		}
	}
	if undefined > maxNotes {
		notes = append(notes, fmt.Sprintf("and %d more roles not defined", undefined-maxNotes))
	}
	ownerMay := slices.Contains(p.ownerActions, "*") || slices.Contains(p.ownerActions, action)
	owns := req.Resource.Owner != "" && req.Resource.Owner == id
	switch {
	case owns && ownerMay:
		allow = append(allow, fmt.Sprintf("subject %q owns %s %q", id, typ, req.Resource.ID))
	case owns:
		notes = append(notes, fmt.Sprintf("subject %q owns %s %q, but owners may not %q", id, typ, req.Resource.ID, action))
	case ownerMay:
		notes = append(notes, fmt.Sprintf("subject %q does not own %s %q", id, typ, req.Resource.ID))
	}
	if len(allow) > 0 {
		return Decision{Allow: true, Reasons: allow}
	}
	var reasons []string
	if len(roles) == 0 {
		reasons = append(reasons, fmt.Sprintf("subject %q has no roles", id))
	} else {
		reasons = append(reasons, fmt.Sprintf("no role of subject %q grants %q on %q", id, action, typ))
	}
	reasons = append(reasons, notes...)
	if p.defaultAllow {
		return Decision{Allow: true, Reasons: append(reasons, `allowed by config "default" = "allow"`)}
	}
	return Decision{Allow: false, Reasons: reasons}
}

// refDecodeRequest parses the evaluate input strictly: one JSON object, no unknown fields, with
// an action and a resource type. Its errors are for sdk.InvalidInput.
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
	if req.Action == "" {
		return nil, errors.New(`malformed request: "action" is missing or empty`)
	}
	if req.Resource.Type == "" {
		return nil, errors.New(`malformed request: "resource.type" is missing or empty`)
	}
	return &req, nil
}
