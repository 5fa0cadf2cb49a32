package main

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unsafe"

	sdk "github.com/wasmvisor/wasmvisor/sdk/go"
)

// Request is the input of the evaluate handler, as DecodeRequest reads it: views of the input
// bytes, valid as long as the input is.
type Request struct {
	SubjectID []byte   // subject.id
	Roles     [][]byte // subject.roles
	Action    []byte   // action
	Type      []byte   // resource.type
	ID        []byte   // resource.id
	Owner     []byte   // resource.owner
}

// Config keys. Every key not set in the plugin's config takes its value from defaultConfig.
const (
	keyRolePrefix   = "role."         // role.<name> = permissions
	keyOwnerActions = "owner_actions" // actions owners may take on their own resources
	keyDefaultRoles = "default_roles" // roles every subject has
	keyDefault      = "default"       // decision when nothing grants: deny or allow
)

var defaultConfig = map[string]string{
	"role.admin":    "*",
	"role.editor":   "read,write",
	"role.viewer":   "read",
	keyOwnerActions: "read,write",
	keyDefaultRoles: "",
	keyDefault:      "deny",
}

// Policy is a config compiled into lookup tables: a decision is a few map look-ups per role of
// the request, whatever the config holds. It is immutable.
type Policy struct {
	roles        map[string]*role
	ownerActions actionSet
	defaultRoles [][]byte
	defaultAllow bool
}

// noIDAnswer is the decision on a subject without an id, whatever the policy: written once,
// appended as it is (in the guest, building it with the writer cost more than reading the
// request).
var noIDAnswer = func() []byte {
	var w sdk.JSONWriter
	w.BeginObject()
	w.Key("allow")
	w.Bool(false)
	w.Key("reasons")
	w.BeginArray()
	w.Str("subject has no id")
	w.EndArray()
	w.EndObject()
	return w.Buf
}()

// role is a role's permissions: the actions it grants on every resource type ("action" and
// "*:action" permissions) and, by type, those it grants on that type ("type:action").
type role struct {
	anyType actionSet
	byType  map[string]actionSet
}

func (r *role) grants(typ, action []byte) bool {
	return r.anyType.has(action) || r.byType[string(typ)].has(action)
}

// actionSet is a set of action names, or all of them.
type actionSet struct {
	all     bool
	actions map[string]struct{}
}

func (s actionSet) has(action []byte) bool {
	if s.all {
		return true
	}
	_, ok := s.actions[string(action)]
	return ok
}

func (s *actionSet) add(action string) {
	if action == "*" {
		s.all = true
		return
	}
	if s.actions == nil {
		s.actions = make(map[string]struct{})
	}
	s.actions[action] = struct{}{}
}

// ParsePolicy builds a policy from cfg over defaultConfig. It returns an error naming the key for
// an unknown key or a malformed value.
func ParsePolicy(cfg sdk.ConfigView) (*Policy, error) {
	merged := make(map[string]string, len(defaultConfig)+cfg.Len())
	for k, v := range defaultConfig {
		merged[k] = v
	}
	for _, k := range cfg.Keys() {
		v, _ := cfg.Get(k)
		merged[k] = v
	}
	p := &Policy{roles: make(map[string]*role)}
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
			p.roles[name], err = parseRole(v)
		case k == keyOwnerActions:
			var actions []string
			actions, err = parseList(v, true)
			for _, a := range actions {
				p.ownerActions.add(a)
			}
		case k == keyDefaultRoles:
			var roles []string
			roles, err = parseList(v, false)
			for _, r := range roles {
				p.defaultRoles = append(p.defaultRoles, []byte(r))
			}
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
		if _, ok := p.roles[string(r)]; !ok {
			return nil, fmt.Errorf("config key %q: role %q is not defined", keyDefaultRoles, r)
		}
	}
	return p, nil
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// parseList splits a comma-separated list of names (or "*" when star is true).
func parseList(v string, star bool) ([]string, error) {
	items, err := splitList(v)
	if err != nil {
		return nil, err
	}
	for _, item := range items {
		if !validName(item) && !(star && item == "*") {
			return nil, fmt.Errorf("bad item %q", item)
		}
	}
	return items, nil
}

// parseRole parses a role's permissions: "action" and "type:action" items, either part "*"
// for any.
func parseRole(v string) (*role, error) {
	items, err := splitList(v)
	if err != nil {
		return nil, err
	}
	r := &role{byType: make(map[string]actionSet)}
	for _, item := range items {
		typ, action, found := strings.Cut(item, ":")
		if !found {
			typ, action = "*", item
		}
		if !(validName(typ) || typ == "*") || !(validName(action) || action == "*") {
			return nil, fmt.Errorf("bad permission %q: want action or type:action, either part * for any", item)
		}
		if typ == "*" {
			r.anyType.add(action)
			continue
		}
		set := r.byType[typ]
		set.add(action)
		r.byType[typ] = set
	}
	return r, nil
}

// splitList splits a comma-separated list. The empty (or blank) string is the empty list;
// spaces around items are ignored; an empty item is an error.
func splitList(v string) ([]string, error) {
	if strings.TrimSpace(v) == "" {
		return nil, nil
	}
	items := strings.Split(v, ",")
	for i := range items {
		items[i] = strings.TrimSpace(items[i])
		if items[i] == "" {
			return nil, errors.New("empty item")
		}
	}
	return items, nil
}

// maxNotes bounds the notes about undefined roles in one decision's reasons.
const maxNotes = 16

// smallRoles is the number of roles up to which duplicates are found by a scan instead of a
// set: no allocation for the requests one meets, linear time for any request.
const smallRoles = 16

// Scratch is the reusable memory of decisions: with one per goroutine (the guest has one),
// a decision on a request of up to smallRoles roles allocates nothing but its output. The zero
// value is ready.
type Scratch struct {
	roles [][]byte // the request's and the default roles, without duplicates
	text  []byte   // the reason being formatted
}

// Decide appends req's decision to w as {"allow":…,"reasons":[…]} and returns the answer.
// Roles are the subject's plus the default roles; any role that grants the action on the
// resource type, or ownership of the resource for an owner action, allows. A subject without
// an id is denied whatever its roles. The reasons are never empty.
func (p *Policy) Decide(w *sdk.JSONWriter, req *Request, sc *Scratch) bool {
	id, typ, action := req.SubjectID, req.Type, req.Action
	if len(id) == 0 {
		w.Raw(noIDAnswer)
		return false
	}
	w.BeginObject()
	w.Key("allow")
	roles := sc.dedup(req.Roles, p.defaultRoles)
	grant := false
	for _, r := range roles {
		if rl := p.roles[string(r)]; rl != nil && rl.grants(typ, action) {
			grant = true
			break
		}
	}
	ownerMay := p.ownerActions.has(action)
	owns := len(req.Owner) > 0 && bytes.Equal(req.Owner, id)
	allow := grant || owns && ownerMay || p.defaultAllow
	w.Bool(allow)
	w.Key("reasons")
	w.BeginArray()
	t := sc.text[:0]
	if grant || owns && ownerMay {
		for _, r := range roles {
			if rl := p.roles[string(r)]; rl != nil && rl.grants(typ, action) {
				t = quote(append(quote(append(quote(append(t[:0], "role "...), r), " grants "...), action), " on "...), typ)
				w.StrBytes(t)
			}
		}
		if owns && ownerMay {
			w.StrBytes(ownsText(t[:0], id, typ, req.ID))
		}
	} else {
		if len(roles) == 0 {
			t = append(quote(append(t[:0], "subject "...), id), " has no roles"...)
		} else {
			t = quote(append(quote(append(quote(append(t[:0], "no role of subject "...), id), " grants "...), action), " on "...), typ)
		}
		w.StrBytes(t)
		undefined := 0
		for _, r := range roles {
			if _, ok := p.roles[string(r)]; ok {
				continue
			}
			if undefined++; undefined <= maxNotes {
				t = append(quote(append(t[:0], "role "...), r), " is not defined"...)
				w.StrBytes(t)
			}
		}
		if undefined > maxNotes {
			t = append(strconv.AppendInt(append(t[:0], "and "...), int64(undefined-maxNotes), 10), " more roles not defined"...)
			w.StrBytes(t)
		}
		switch {
		case owns:
			t = quote(append(ownsText(t[:0], id, typ, req.ID), ", but owners may not "...), action)
			w.StrBytes(t)
		case ownerMay:
			t = quote(append(append(append(quote(append(t[:0], "subject "...), id), " does not own "...), typ...), ' '), req.ID)
			w.StrBytes(t)
		}
		if p.defaultAllow {
			w.Str(`allowed by config "default" = "allow"`)
		}
	}
	sc.text = t
	w.EndArray()
	w.EndObject()
	return allow
}

// ownsText appends `subject "<id>" owns <type> "<resource id>"`.
func ownsText(t, id, typ, resID []byte) []byte {
	return quote(append(append(append(quote(append(t, "subject "...), id), " owns "...), typ...), ' '), resID)
}

// quote appends s quoted as Go's %q does.
func quote(t, s []byte) []byte {
	return strconv.AppendQuote(t, unsafe.String(unsafe.SliceData(s), len(s))) // read only
}

// dedup returns the roles of a and then b, each once, in order of first appearance, in
// sc.roles: by a scan up to smallRoles roles, through a set beyond.
func (sc *Scratch) dedup(a, b [][]byte) [][]byte {
	out := sc.roles[:0]
	if len(a)+len(b) <= smallRoles {
		for _, rs := range [2][][]byte{a, b} {
		next:
			for _, r := range rs {
				for _, o := range out {
					if bytes.Equal(o, r) {
						continue next
					}
				}
				out = append(out, r)
			}
		}
	} else {
		seen := make(map[string]struct{}, len(a)+len(b))
		for _, rs := range [2][][]byte{a, b} {
			for _, r := range rs {
				if _, dup := seen[string(r)]; !dup {
					seen[string(r)] = struct{}{}
					out = append(out, r)
				}
			}
		}
	}
	if cap(out) <= 4*smallRoles {
		sc.roles = out[:0] // kept for the next decision; a huge one is not held on to
	}
	return out
}

// DecodeRequest reads the evaluate input into req strictly: one JSON object, no unknown
// fields (keys match exactly), strings (or null, for absent), with an action and a resource
// type. req's slices alias input; its Roles' backing array is reused. Its errors are for
// sdk.InvalidInput.
func DecodeRequest(input []byte, req *Request) error {
	*req = Request{Roles: req.Roles[:0]}
	r := sdk.NewJSONReader(input)
	// Loops, not a callback per member: in the guest every call counts.
	if opened(&r) {
		for k, ok := r.NextKey(); ok; k, ok = r.NextKey() {
			switch string(k) {
			case "subject":
				if !opened(&r) {
					continue
				}
				for k, ok := r.NextKey(); ok; k, ok = r.NextKey() {
					switch string(k) {
					case "id":
						req.SubjectID = str(&r)
					case "roles":
						req.Roles = req.Roles[:0]
						if r.Kind() == sdk.JSONNull {
							r.Null()
							continue
						}
						for r.Array(); r.NextElem(); {
							req.Roles = append(req.Roles, str(&r))
						}
					default:
						r.Fail(fmt.Sprintf("unknown field %q in subject", k))
					}
				}
			case "action":
				req.Action = str(&r)
			case "resource":
				if !opened(&r) {
					continue
				}
				for k, ok := r.NextKey(); ok; k, ok = r.NextKey() {
					switch string(k) {
					case "type":
						req.Type = str(&r)
					case "id":
						req.ID = str(&r)
					case "owner":
						req.Owner = str(&r)
					default:
						r.Fail(fmt.Sprintf("unknown field %q in resource", k))
					}
				}
			default:
				r.Fail(fmt.Sprintf("unknown field %q", k))
			}
		}
	}
	if err := r.End(); err != nil {
		return fmt.Errorf("malformed request: %w", err)
	}
	if len(req.Action) == 0 {
		return errors.New(`malformed request: "action" is missing or empty`)
	}
	if len(req.Type) == 0 {
		return errors.New(`malformed request: "resource.type" is missing or empty`)
	}
	return nil
}

// opened reads the '{' of an object and reports true, or reads a null (or fails) and reports
// false: there are no members to read.
func opened(r *sdk.JSONReader) bool {
	if r.Kind() == sdk.JSONNull {
		r.Null()
		return false
	}
	return r.Object()
}

// str reads a string, or null as the empty string.
func str(r *sdk.JSONReader) []byte {
	if r.Kind() == sdk.JSONNull { // Kind inlines: a string costs one call, Str
		r.Null()
		return nil
	}
	return r.Str()
}
