package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
	"unsafe"

	sdk "github.com/wasmvisor/wasmvisor/sdk/go"
)

// Config keys. Every key not set in the plugin's config takes its value from defaultConfig.
const (
	keyRoutes          = "routes"           // allowed METHOD PATH patterns
	keyRequiredHeaders = "required_headers" // header names every request must carry
	keyMaxBodyBytes    = "max_body_bytes"   // maximum body size
	keyBodyRoutes      = "body.routes"      // routes whose body the body.* checks apply to
	keyBodyRequired    = "body.required"    // fields the JSON body must have
	keyDecisionHeader  = "decision_header"  // header carrying the decision, "" for none
	keyMode            = "mode"             // enforce or monitor
	prefixType         = "body.type."       // body.type.<field> = JSON type
	prefixMin          = "body.min."        // body.min.<field> = lower bound
	prefixMax          = "body.max."        // body.max.<field> = upper bound
	prefixEnum         = "body.enum."       // body.enum.<field> = allowed string values
	prefixPattern      = "body.pattern."    // body.pattern.<field> = RE2 the string must match
)

var defaultConfig = map[string]string{
	keyRoutes:          "*",
	keyRequiredHeaders: "",
	keyMaxBodyBytes:    "1048576",
	keyBodyRoutes:      "POST /*, PUT /*, PATCH /*",
	keyBodyRequired:    "",
	keyDecisionHeader:  "x-policy-decision",
	keyMode:            "enforce",
}

// jsonTypes are the values of body.type.<field>.
var jsonTypes = []string{"string", "number", "integer", "boolean", "array", "object", "null"}

// Policy is a parsed config. It is immutable.
type Policy struct {
	routes          []route
	requiredHeaders []string // lower case
	maxBodyBytes    int64
	bodyRoutes      []route
	fields          []*fieldRule // sorted by field path
	decisionHeader  string
	monitor         bool

	// Compiled when the config is applied, for Evaluate.
	headerReasons []string   // the reason for each required header missing
	root          *fieldNode // the field rules by path, a tree of the paths' parts
	// mutations for an allow, a denial in monitor mode and a denial, as JSON.
	mutAllow, mutMonitor, mutDeny []byte
}

// route is one METHOD PATH pattern. method "*" matches any method. A path ending in "*"
// matches every path with the part before the "*" as a prefix; any other path is a path.Match
// pattern ("*" within one segment).
type route struct {
	text   string
	method string
	path   string

	// Compiled by parseRoutes.
	star   bool   // path ends in "*"
	prefix string // path without its "*"
	bare   string // for a prefix ending in "/", the prefix without it ("/api/*" matches "/api")
	allows string // the reason of an allow: route "<text>" allows
}

func (r *route) matchesPath(p string) bool {
	if r.star {
		return strings.HasPrefix(p, r.prefix) || r.bare != "" && p == r.bare
	}
	ok, _ := path.Match(r.path, p)
	return ok
}

func (r *route) matchesMethod(m string) bool { return r.method == "*" || r.method == m }

// fieldRule is every check on one field of the JSON body.
type fieldRule struct {
	field    string   // dotted path
	parts    []string // field split on "."
	required bool
	typ      string   // "" for any
	min, max *float64 // bounds: value of a number, length of a string or array
	enum     []string
	pattern  *regexp.Regexp

	// The texts of the reasons, compiled when the config is applied.
	quoted                                  string // field as %q writes it
	minText, maxText, enumText, patternText string
}

// fieldNode is a node of the tree of field paths: the rule whose path ends here (-1 for
// none), the nodes of the next part, and the rules at or below it (which a repeated key
// clears: the last of a JSON object's duplicate keys wins).
type fieldNode struct {
	rule     int
	children map[string]*fieldNode
	subtree  []int
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
	keys := make([]string, 0, len(merged))
	for k := range merged {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	p := &Policy{}
	fields := map[string]*fieldRule{}
	field := func(name string) (*fieldRule, error) {
		parts := strings.Split(name, ".")
		for _, s := range parts {
			if s == "" {
				return nil, fmt.Errorf("bad field %q: want names separated by dots", name)
			}
		}
		f, ok := fields[name]
		if !ok {
			f = &fieldRule{field: name, parts: parts}
			fields[name] = f
		}
		return f, nil
	}
	for _, k := range keys {
		v := merged[k]
		var err error
		switch {
		case k == keyRoutes:
			p.routes, err = parseRoutes(v)
		case k == keyBodyRoutes:
			p.bodyRoutes, err = parseRoutes(v)
		case k == keyRequiredHeaders:
			var hs []string
			hs, err = splitList(v)
			for _, h := range hs {
				if !validHeader(h) {
					err = fmt.Errorf("bad header name %q", h)
					break
				}
				p.requiredHeaders = append(p.requiredHeaders, strings.ToLower(h))
			}
		case k == keyMaxBodyBytes:
			p.maxBodyBytes, err = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil || p.maxBodyBytes < 0 {
				err = fmt.Errorf("want a non-negative integer, got %q", v)
			}
		case k == keyBodyRequired:
			var names []string
			names, err = splitList(v)
			for _, n := range names {
				var f *fieldRule
				if f, err = field(n); err != nil {
					break
				}
				f.required = true
			}
		case k == keyDecisionHeader:
			v = strings.TrimSpace(v)
			if v != "" && !validHeader(v) {
				err = fmt.Errorf("bad header name %q", v)
			}
			p.decisionHeader = strings.ToLower(v)
		case k == keyMode:
			switch v {
			case "enforce":
			case "monitor":
				p.monitor = true
			default:
				err = fmt.Errorf("want enforce or monitor, got %q", v)
			}
		case strings.HasPrefix(k, prefixType):
			var f *fieldRule
			if f, err = field(strings.TrimPrefix(k, prefixType)); err == nil {
				f.typ = strings.TrimSpace(v)
				if !slices.Contains(jsonTypes, f.typ) {
					err = fmt.Errorf("want one of %s, got %q", strings.Join(jsonTypes, ", "), v)
				}
			}
		case strings.HasPrefix(k, prefixMin), strings.HasPrefix(k, prefixMax):
			prefix := prefixMin
			if strings.HasPrefix(k, prefixMax) {
				prefix = prefixMax
			}
			var f *fieldRule
			if f, err = field(strings.TrimPrefix(k, prefix)); err == nil {
				var n float64
				n, err = strconv.ParseFloat(strings.TrimSpace(v), 64)
				if err != nil || math.IsNaN(n) || math.IsInf(n, 0) {
					err = fmt.Errorf("want a number, got %q", v)
				} else if prefix == prefixMin {
					f.min = &n
				} else {
					f.max = &n
				}
			}
		case strings.HasPrefix(k, prefixEnum):
			var f *fieldRule
			if f, err = field(strings.TrimPrefix(k, prefixEnum)); err == nil {
				f.enum, err = splitList(v)
				if err == nil && len(f.enum) == 0 {
					err = errors.New("want at least one value")
				}
			}
		case strings.HasPrefix(k, prefixPattern):
			var f *fieldRule
			if f, err = field(strings.TrimPrefix(k, prefixPattern)); err == nil {
				f.pattern, err = regexp.Compile(v)
			}
		default:
			return nil, fmt.Errorf("unknown config key %q", k)
		}
		if err != nil {
			return nil, fmt.Errorf("config key %q: %w", k, err)
		}
	}
	for _, f := range fields {
		if f.min != nil && f.max != nil && *f.min > *f.max {
			return nil, fmt.Errorf("config key %q: above %q", prefixMin+f.field, prefixMax+f.field)
		}
		p.fields = append(p.fields, f)
	}
	slices.SortFunc(p.fields, func(a, b *fieldRule) int { return strings.Compare(a.field, b.field) })
	p.compile()
	return p, nil
}

// compile builds what Evaluate looks up from the parsed config: the texts of the reasons, the
// tree of field paths and the mutations, so that a decision formats only what the request
// brings.
func (p *Policy) compile() {
	for _, h := range p.requiredHeaders {
		p.headerReasons = append(p.headerReasons, fmt.Sprintf("required header %q is missing", h))
	}
	p.root = &fieldNode{rule: -1}
	for i, f := range p.fields {
		f.quoted = strconv.Quote(f.field)
		if f.min != nil {
			f.minText = fmtNum(*f.min)
		}
		if f.max != nil {
			f.maxText = fmtNum(*f.max)
		}
		f.enumText = strings.Join(f.enum, ", ")
		if f.pattern != nil {
			f.patternText = f.pattern.String()
		}
		n := p.root
		for _, part := range f.parts {
			n.subtree = append(n.subtree, i)
			c := n.children[part]
			if c == nil {
				if n.children == nil {
					n.children = make(map[string]*fieldNode)
				}
				c = &fieldNode{rule: -1}
				n.children[part] = c
			}
			n = c
		}
		n.subtree = append(n.subtree, i)
		n.rule = i
	}
	mutation := func(value string) []byte {
		b := []byte(`{"headers":{`)
		if p.decisionHeader != "" {
			b = append(sdk.AppendJSONString(b, p.decisionHeader), ':')
			b = sdk.AppendJSONString(b, value)
		}
		return append(b, "}}"...)
	}
	p.mutAllow, p.mutMonitor, p.mutDeny = mutation("allow"), mutation("monitor-deny"), mutation("deny")
}

// parseRoutes parses "METHOD PATH" items; "PATH" alone or "*" alone stand for any method.
func parseRoutes(v string) ([]route, error) {
	items, err := splitList(v)
	if err != nil {
		return nil, err
	}
	routes := make([]route, 0, len(items))
	for _, item := range items {
		fs := strings.Fields(item)
		r := route{text: strings.Join(fs, " ")}
		switch len(fs) {
		case 1:
			r.method, r.path = "*", fs[0]
			if fs[0] == "*" {
				r.path = "/*"
			}
		case 2:
			r.method, r.path = strings.ToUpper(fs[0]), fs[1]
		default:
			return nil, fmt.Errorf("bad route %q: want METHOD PATH", item)
		}
		if !(r.method == "*" || validToken(r.method)) {
			return nil, fmt.Errorf("bad route %q: bad method", item)
		}
		if !strings.HasPrefix(r.path, "/") {
			return nil, fmt.Errorf("bad route %q: the path must start with /", item)
		}
		if _, err := path.Match(r.path, ""); err != nil {
			return nil, fmt.Errorf("bad route %q: %w", item, err)
		}
		if r.star = strings.HasSuffix(r.path, "*"); r.star {
			r.prefix = strings.TrimSuffix(r.path, "*")
			if strings.HasSuffix(r.prefix, "/") {
				r.bare = strings.TrimSuffix(r.prefix, "/")
			}
		}
		r.allows = fmt.Sprintf("route %q allows ", r.text)
		routes = append(routes, r)
	}
	return routes, nil
}

// validToken reports whether s is an HTTP token (RFC 9110), as methods and header names are.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

func validHeader(s string) bool { return validToken(s) }

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

// HTTP statuses of denials.
const (
	statusBadRequest       = 400
	statusForbidden        = 403
	statusMethodNotAllowed = 405
	statusTooLarge         = 413
)

func fmtNum(n float64) string { return strconv.FormatFloat(n, 'g', -1, 64) }

// Request is the input of the validate handler, as DecodeRequest reads it: a description of an
// HTTP request. Its slices are views of the input bytes (or of its own memory), valid as long
// as the input is.
type Request struct {
	Method   []byte   // in upper case
	Path     []byte   // with its query, if any
	Headers  []Header // as given, in input order: names not folded, duplicates kept
	Body     []byte   // body: the body as a string
	BodyJSON []byte   // body_json: the body as a JSON value, as written; nil for absent or null
	// BodySize is body_size when HasBodySize; otherwise the size is the length of Body or of
	// BodyJSON.
	BodySize    int64
	HasBodySize bool

	upper []byte // Method's memory when it had lower-case letters, reused
}

// Header is a request header as given: its name in any case.
type Header struct {
	Name, Value []byte
}

// size is the body's size: body_size if given, else the length of body or body_json.
func (r *Request) size() int64 {
	switch {
	case r.HasBodySize:
		return r.BodySize
	case len(r.Body) != 0:
		return int64(len(r.Body))
	}
	return int64(len(r.BodyJSON))
}

// header reports whether the request has header h (in lower case) with a non-blank value. A
// name matches when it folds to h as strings.ToLower folds it; of several, the last counts.
func (r *Request) header(h string) bool {
	found := false
	var value []byte
	for _, hd := range r.Headers {
		if foldsTo(hd.Name, h) {
			found, value = true, hd.Value
		}
	}
	return found && len(bytes.TrimSpace(value)) > 0
}

// foldsTo reports whether strings.ToLower(name) == h, without allocating for ASCII names.
func foldsTo(name []byte, h string) bool {
	for _, c := range name {
		if c >= utf8.RuneSelf {
			return strings.ToLower(string(name)) == h // "\u212a" (Kelvin) folds to "k"
		}
	}
	if len(name) != len(h) {
		return false
	}
	for i, c := range name {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != h[i] {
			return false
		}
	}
	return true
}

// nullJSON is body_json's value when it is null, until DecodeRequest drops it.
var nullJSON = []byte("null")

// DecodeRequest reads the validate input into req strictly: one JSON object, no unknown fields
// (keys match exactly), strings where strings are due (null counts as absent), a method and a
// path starting with "/", at most one of body and body_json, and a non-negative integer
// body_size. The method is put in upper case. req's slices alias input; its Headers' backing
// array is reused. Its errors are for sdk.InvalidInput.
func DecodeRequest(input []byte, req *Request) error {
	*req = Request{Headers: req.Headers[:0], upper: req.upper[:0]}
	r := sdk.NewJSONReader(input)
	// Loops, not a callback per member: in the guest every call counts.
	if r.Kind() == sdk.JSONNull {
		r.Null()
	} else if r.Object() {
		for k, ok := r.NextKey(); ok; k, ok = r.NextKey() {
			null := r.Kind() == sdk.JSONNull
			if null {
				r.Null()
			}
			switch string(k) {
			case "method": // a null string changes nothing, as with encoding/json
				if !null {
					req.Method = r.Str()
				}
			case "path":
				if !null {
					req.Path = r.Str()
				}
			case "body":
				if !null {
					req.Body = r.Str()
				}
			case "body_json":
				if null {
					req.BodyJSON = nullJSON
					continue
				}
				r.Kind() // past the spaces before the value
				start := r.Offset()
				r.Skip()
				req.BodyJSON = input[start:r.Offset()]
			case "body_size":
				req.BodySize, req.HasBodySize = 0, !null
				if !null {
					req.BodySize = r.Int64()
				}
			case "headers":
				if null {
					req.Headers = req.Headers[:0]
					continue
				}
				if !r.Object() {
					continue
				}
				for name, ok := r.NextKey(); ok; name, ok = r.NextKey() {
					h := Header{Name: name}
					if r.Kind() == sdk.JSONNull {
						r.Null()
					} else {
						h.Value = r.Str()
					}
					req.Headers = append(req.Headers, h)
				}
			default:
				r.Fail(fmt.Sprintf("unknown field %q", k))
			}
		}
	}
	if err := r.End(); err != nil {
		return fmt.Errorf("malformed request: %w", err)
	}
	if len(req.Method) == 0 {
		return errors.New(`malformed request: "method" is missing or empty`)
	}
	req.Method, req.upper = toUpper(req.Method, req.upper)
	if len(req.Path) == 0 || req.Path[0] != '/' {
		return errors.New(`malformed request: "path" must start with /`)
	}
	if len(req.Body) != 0 && len(req.BodyJSON) > 0 {
		return errors.New(`malformed request: give "body" or "body_json", not both`)
	}
	if len(req.BodyJSON) == len(nullJSON) && string(req.BodyJSON) == "null" {
		req.BodyJSON = nil
	}
	if req.HasBodySize && req.BodySize < 0 {
		return errors.New(`malformed request: "body_size" is negative`)
	}
	return nil
}

// toUpper returns s as strings.ToUpper does: s itself when it has no lower-case letter, an
// ASCII s folded into buf (returned for reuse), anything else in new memory.
func toUpper(s, buf []byte) (upper, bufOut []byte) {
	lower := false
	for _, c := range s {
		if c >= utf8.RuneSelf {
			return []byte(strings.ToUpper(string(s))), buf
		}
		lower = lower || 'a' <= c && c <= 'z'
	}
	if !lower {
		return s, buf
	}
	buf = buf[:0]
	for _, c := range s {
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		buf = append(buf, c)
	}
	return buf, buf
}

// Scratch is the reusable memory of decisions: with one per goroutine (the guest has one), a
// decision on a request with a valid JSON body allocates nothing once the buffers have grown.
// The zero value is ready.
type Scratch struct {
	status  int          // of the first violation
	reasons []byte       // the violations, JSON strings separated by commas
	text    []byte       // the reason being formatted
	values  []fieldValue // the body's values, by field rule
}

// deny records a violation: status st, if it is the first, and reason t.
func (sc *Scratch) deny(st int, t []byte) {
	if sc.status == 0 {
		sc.status = st
	}
	if len(sc.reasons) > 0 {
		sc.reasons = append(sc.reasons, ',')
	}
	sc.reasons = sdk.AppendJSONBytes(sc.reasons, t)
}

// Decision is what Evaluate decided; the output is in the bytes it returned.
type Decision struct {
	Allow bool
	// Status is the HTTP status a proxy should answer a denied request with, 0 when allowed.
	Status int
	// reasons is where the output's reasons are, as a JSON array's elements.
	reasonsStart, reasonsEnd int
}

// monitorReason is the last reason of a denial that monitor mode allows, as JSON.
var monitorReason = sdk.AppendJSONString(nil, `allowed by config "mode" = "monitor"`)

// Evaluate decides req and appends the decision to dst as the validate handler's output:
// {"allow":…,"status":… (when denied),"reasons":[…],"mutations":{"headers":{…}}}. Every check
// runs and every violation is a reason; the status is that of the first violation (route,
// headers, body size, body content, in that order). In monitor mode the decision is allow
// whatever the violations, which stay in the reasons.
func (p *Policy) Evaluate(dst []byte, req *Request, sc *Scratch) ([]byte, Decision) {
	sc.status, sc.reasons = 0, sc.reasons[:0]
	method, reqPath := req.Method, req.Path
	if i := bytes.IndexByte(reqPath, '?'); i >= 0 {
		reqPath = reqPath[:i]
	}
	ms, ps := view(method), view(reqPath)
	var matched *route
	pathKnown := false
	for i := range p.routes {
		if p.routes[i].matchesPath(ps) {
			pathKnown = true
			if p.routes[i].matchesMethod(ms) {
				matched = &p.routes[i]
				break
			}
		}
	}
	t := sc.text[:0]
	switch {
	case matched != nil:
	case pathKnown:
		t = append(append(append(append(t, "method "...), method...), " is not allowed on "...), reqPath...)
		sc.deny(statusMethodNotAllowed, t)
	default:
		t = append(append(append(append(t, "no route allows "...), method...), ' '), reqPath...)
		sc.deny(statusForbidden, t)
	}
	for i, h := range p.requiredHeaders {
		if !req.header(h) {
			sc.deny(statusBadRequest, view2(p.headerReasons[i]))
		}
	}
	if size := req.size(); size > p.maxBodyBytes {
		t = strconv.AppendInt(append(t[:0], "body of "...), size, 10)
		t = strconv.AppendInt(append(t, " bytes exceeds the maximum of "...), p.maxBodyBytes, 10)
		sc.deny(statusTooLarge, t)
	}
	if len(p.fields) > 0 && p.bodyRoute(ms, ps) {
		raw := req.BodyJSON
		if len(raw) == 0 {
			raw = req.Body
		}
		t = p.checkBody(raw, sc, t)
	}
	d := Decision{Allow: sc.status == 0, Status: sc.status}
	if !d.Allow && p.monitor {
		d.Allow, d.Status = true, 0
	}
	dst = strconv.AppendBool(append(dst, `{"allow":`...), d.Allow)
	if d.Status != 0 {
		dst = strconv.AppendInt(append(dst, `,"status":`...), int64(d.Status), 10)
	}
	dst = append(dst, `,"reasons":[`...)
	d.reasonsStart = len(dst)
	mutations := p.mutAllow
	if sc.status == 0 {
		t = append(append(append(append(t[:0], matched.allows...), method...), ' '), reqPath...)
		dst = sdk.AppendJSONBytes(dst, t)
	} else {
		dst = append(dst, sc.reasons...)
		mutations = p.mutDeny
		if p.monitor {
			dst = append(append(dst, ','), monitorReason...)
			mutations = p.mutMonitor
		}
	}
	d.reasonsEnd = len(dst)
	dst = append(append(append(dst, `],"mutations":`...), mutations...), '}')
	if cap(t) <= 4<<10 {
		sc.text = t // kept for the next decision; a huge one is not held on to
	}
	if cap(sc.reasons) > 16<<10 {
		sc.reasons = nil
	}
	return dst, d
}

func (p *Policy) bodyRoute(method, reqPath string) bool {
	for i := range p.bodyRoutes {
		if p.bodyRoutes[i].matchesMethod(method) && p.bodyRoutes[i].matchesPath(reqPath) {
			return true
		}
	}
	return false
}

// view is b as a string, for reading only while b is.
func view(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// view2 is s as bytes, for reading only.
func view2(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// fieldValue is what the body holds at a field rule's path.
type fieldValue struct {
	present bool
	kind    sdk.JSONKind
	lit     []byte // a number's literal, a string's decoded bytes
	n       int    // an array's length
}

// checkBody runs the field checks on the JSON body raw and records the violations in sc. It
// reads raw with the SDK's scanner, taking from the body only the values of the rules' paths;
// a body the scanner refuses (malformed, where encoding/json's message is the reason, or
// nested deeper than sdk.MaxJSONDepth) goes the way of encoding/json (checkBodySlow). t is
// scratch memory, returned for reuse.
func (p *Policy) checkBody(raw []byte, sc *Scratch, t []byte) []byte {
	if len(bytes.TrimSpace(raw)) == 0 {
		sc.deny(statusBadRequest, append(t[:0], "body is empty, want a JSON object"...))
		return t
	}
	values := sc.values[:0]
	for range p.fields {
		values = append(values, fieldValue{})
	}
	sc.values = values
	r := sdk.NewJSONReader(raw)
	top := fieldValue{kind: r.Kind()}
	switch top.kind {
	case sdk.JSONObject:
		walkObject(&r, p.root, values)
	case sdk.JSONNumber:
		top.lit = r.Number()
	default:
		r.Skip()
	}
	if r.End() != nil {
		return p.checkBodySlow(raw, sc, t)
	}
	if top.kind != sdk.JSONObject {
		t = append(append(append(t[:0], "body is "...), typeName(&top)...), ", want a JSON object"...)
		sc.deny(statusBadRequest, t)
		return t
	}
	return p.checkFields(values, sc, t)
}

// walkObject reads the object at r (whose '{' is next) and records in values the values of the
// rules at node's children, walking on into the objects below them that have rules.
func walkObject(r *sdk.JSONReader, node *fieldNode, values []fieldValue) {
	if !r.Object() {
		return
	}
	for k, ok := r.NextKey(); ok; k, ok = r.NextKey() {
		c := node.children[string(k)]
		if c == nil {
			r.Skip()
			continue
		}
		for _, i := range c.subtree { // a repeated key: its last value replaces the whole subtree
			values[i] = fieldValue{}
		}
		kind := r.Kind()
		if c.rule >= 0 {
			v := &values[c.rule]
			v.present, v.kind = true, kind
			switch kind {
			case sdk.JSONNumber:
				v.lit = r.Number()
				continue
			case sdk.JSONString:
				v.lit = r.Str()
				continue
			case sdk.JSONArray:
				if r.Array() {
					for r.NextElem() {
						r.Skip()
						v.n++
					}
				}
				continue
			}
		}
		if kind == sdk.JSONObject && len(c.children) > 0 {
			walkObject(r, c, values)
		} else {
			r.Skip()
		}
	}
}

// checkBodySlow is checkBody by encoding/json, for the bodies the scanner refuses: the body
// decoded into maps, then the values of the rules' paths taken from them.
func (p *Policy) checkBodySlow(raw []byte, sc *Scratch, t []byte) []byte {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var body any
	if err := dec.Decode(&body); err != nil {
		sc.deny(statusBadRequest, append(append(t[:0], "body is not valid JSON: "...), err.Error()...))
		return t
	}
	if _, err := dec.Token(); err != io.EOF {
		sc.deny(statusBadRequest, append(t[:0], "body is not valid JSON: data after the JSON value"...))
		return t
	}
	obj, ok := body.(map[string]any)
	if !ok {
		top := valueOf(body)
		t = append(append(append(t[:0], "body is "...), typeName(&top)...), ", want a JSON object"...)
		sc.deny(statusBadRequest, t)
		return t
	}
	values := sc.values[:0]
	for _, f := range p.fields {
		var v any = obj
		present := true
		for _, part := range f.parts {
			m, ok := v.(map[string]any)
			if !ok {
				present = false
				break
			}
			if v, present = m[part]; !present {
				break
			}
		}
		fv := fieldValue{}
		if present {
			fv = valueOf(v)
		}
		values = append(values, fv)
	}
	sc.values = values
	return p.checkFields(values, sc, t)
}

// valueOf is a value decoded by encoding/json (with UseNumber) as a fieldValue.
func valueOf(v any) fieldValue {
	fv := fieldValue{present: true}
	switch v := v.(type) {
	case nil:
		fv.kind = sdk.JSONNull
	case bool:
		fv.kind = sdk.JSONBool
	case json.Number:
		fv.kind, fv.lit = sdk.JSONNumber, []byte(v)
	case string:
		fv.kind, fv.lit = sdk.JSONString, []byte(v)
	case []any:
		fv.kind, fv.n = sdk.JSONArray, len(v)
	case map[string]any:
		fv.kind = sdk.JSONObject
	}
	return fv
}

// typeName is the JSON type of v as body.type.<field> names it; a number is an integer when
// its literal is one in int64's range.
func typeName(v *fieldValue) string {
	switch v.kind {
	case sdk.JSONNull:
		return "null"
	case sdk.JSONBool:
		return "boolean"
	case sdk.JSONNumber:
		if isInt64(v.lit) {
			return "integer"
		}
		return "number"
	case sdk.JSONString:
		return "string"
	case sdk.JSONArray:
		return "array"
	}
	return "object"
}

// isInt64 reports whether strconv.ParseInt(lit, 10, 64) succeeds, without its error's
// allocation.
func isInt64(lit []byte) bool {
	neg := len(lit) > 0 && lit[0] == '-'
	if neg || len(lit) > 0 && lit[0] == '+' {
		lit = lit[1:]
	}
	if len(lit) == 0 {
		return false
	}
	var u uint64
	for _, c := range lit {
		if c < '0' || c > '9' || u > (1<<63)/10 {
			return false
		}
		if u = u*10 + uint64(c-'0'); u > 1<<63 {
			return false
		}
	}
	return neg || u < 1<<63
}

// checkFields records the violations of the field rules by the body's values.
func (p *Policy) checkFields(values []fieldValue, sc *Scratch, t []byte) []byte {
	for i, f := range p.fields {
		v := &values[i]
		if !v.present {
			if f.required {
				t = append(append(append(t[:0], "body field "...), f.quoted...), " is required"...)
				sc.deny(statusBadRequest, t)
			}
			continue
		}
		t = f.check(v, sc, t)
	}
	return t
}

// check records the violations of f by v.
func (f *fieldRule) check(v *fieldValue, sc *Scratch, t []byte) []byte {
	field := func() []byte { return append(append(t[:0], "body field "...), f.quoted...) }
	got := typeName(v)
	if f.typ != "" && got != f.typ && !(f.typ == "number" && got == "integer") {
		t = append(append(append(append(field(), " is "...), got...), ", want "...), f.typ...)
		sc.deny(statusBadRequest, t)
		return t
	}
	// The bounds apply to the value of a number and the length of a string or array.
	var (
		n    float64
		what string
		ok   = true
	)
	switch v.kind {
	case sdk.JSONNumber:
		n, _ = strconv.ParseFloat(view(v.lit), 64) // ±Inf beyond float64's range
		what = " is "
	case sdk.JSONString:
		n, what = float64(utf8.RuneCount(v.lit)), " has length "
	case sdk.JSONArray:
		n, what = float64(v.n), " has length "
	default:
		ok = false
	}
	if ok && f.min != nil && n < *f.min {
		t = strconv.AppendFloat(append(field(), what...), n, 'g', -1, 64)
		t = append(append(t, ", below the minimum "...), f.minText...)
		sc.deny(statusBadRequest, t)
	}
	if ok && f.max != nil && n > *f.max {
		t = strconv.AppendFloat(append(field(), what...), n, 'g', -1, 64)
		t = append(append(t, ", above the maximum "...), f.maxText...)
		sc.deny(statusBadRequest, t)
	}
	isString := v.kind == sdk.JSONString
	if len(f.enum) > 0 && (!isString || !slices.Contains(f.enum, view(v.lit))) {
		t = append(append(field(), " must be one of "...), f.enumText...)
		sc.deny(statusBadRequest, t)
	}
	if f.pattern != nil && (!isString || !f.pattern.Match(v.lit)) {
		t = append(append(field(), " does not match "...), f.patternText...)
		sc.deny(statusBadRequest, t)
	}
	return t
}
