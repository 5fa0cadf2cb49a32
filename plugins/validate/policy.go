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

	sdk "github.com/wasmvisor/wasmvisor/sdk/go"
)

// Request is the input of the validate handler: a description of an HTTP request.
type Request struct {
	Method   string            `json:"method"`
	Path     string            `json:"path"`
	Headers  map[string]string `json:"headers"`
	Body     string            `json:"body"`
	BodyJSON json.RawMessage   `json:"body_json"`
	BodySize *int64            `json:"body_size"`
}

// Decision is the output of the validate handler. Reasons is never empty. Status is the HTTP
// status a proxy should answer a denied request with (0, omitted, when allowed).
type Decision struct {
	Allow     bool      `json:"allow"`
	Status    int       `json:"status,omitempty"`
	Reasons   []string  `json:"reasons"`
	Mutations Mutations `json:"mutations"`
}

// Mutations are changes the caller should apply to the request before forwarding it.
type Mutations struct {
	// Headers to set on the request (names in lower case).
	Headers map[string]string `json:"headers"`
}

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
}

// route is one METHOD PATH pattern. method "*" matches any method. A path ending in "*"
// matches every path with the part before the "*" as a prefix; any other path is a path.Match
// pattern ("*" within one segment).
type route struct {
	text   string
	method string
	path   string
}

func (r route) matchesPath(p string) bool {
	if strings.HasSuffix(r.path, "*") {
		prefix := strings.TrimSuffix(r.path, "*")
		if strings.HasPrefix(p, prefix) {
			return true
		}
		// "/api/*" also matches "/api" itself.
		return strings.HasSuffix(prefix, "/") && p == strings.TrimSuffix(prefix, "/") && p != ""
	}
	ok, _ := path.Match(r.path, p)
	return ok
}

func (r route) matchesMethod(m string) bool { return r.method == "*" || r.method == m }

// fieldRule is every check on one field of the JSON body.
type fieldRule struct {
	field    string   // dotted path
	parts    []string // field split on "."
	required bool
	typ      string   // "" for any
	min, max *float64 // bounds: value of a number, length of a string or array
	enum     []string
	pattern  *regexp.Regexp
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
	return p, nil
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

// Evaluate decides req. Every check runs and every violation is a reason; the status is that
// of the first violation (route, headers, body size, body content, in that order). In monitor
// mode the decision is allow whatever the violations, which stay in the reasons.
func (p *Policy) Evaluate(req *Request) Decision {
	var (
		status  int
		reasons []string
	)
	deny := func(st int, format string, args ...any) {
		if status == 0 {
			status = st
		}
		reasons = append(reasons, fmt.Sprintf(format, args...))
	}
	method, reqPath := req.Method, req.Path
	if i := strings.IndexByte(reqPath, '?'); i >= 0 {
		reqPath = reqPath[:i]
	}
	var matched *route
	pathKnown := false
	for i := range p.routes {
		if p.routes[i].matchesPath(reqPath) {
			pathKnown = true
			if p.routes[i].matchesMethod(method) {
				matched = &p.routes[i]
				break
			}
		}
	}
	switch {
	case matched != nil:
	case pathKnown:
		deny(statusMethodNotAllowed, "method %s is not allowed on %s", method, reqPath)
	default:
		deny(statusForbidden, "no route allows %s %s", method, reqPath)
	}
	for _, h := range p.requiredHeaders {
		if strings.TrimSpace(req.Headers[h]) == "" {
			deny(statusBadRequest, "required header %q is missing", h)
		}
	}
	size := req.size()
	if size > p.maxBodyBytes {
		deny(statusTooLarge, "body of %d bytes exceeds the maximum of %d", size, p.maxBodyBytes)
	}
	if len(p.fields) > 0 && slices.ContainsFunc(p.bodyRoutes, func(r route) bool { return r.matchesMethod(method) && r.matchesPath(reqPath) }) {
		for _, r := range p.checkBody(req) {
			deny(statusBadRequest, "%s", r)
		}
	}
	d := Decision{Allow: status == 0, Status: status, Reasons: reasons}
	if d.Allow {
		d.Reasons = []string{fmt.Sprintf("route %q allows %s %s", matched.text, method, reqPath)}
	} else if p.monitor {
		d.Allow, d.Status = true, 0
		d.Reasons = append(d.Reasons, `allowed by config "mode" = "monitor"`)
	}
	d.Mutations.Headers = map[string]string{}
	if p.decisionHeader != "" {
		switch {
		case status == 0:
			d.Mutations.Headers[p.decisionHeader] = "allow"
		case p.monitor:
			d.Mutations.Headers[p.decisionHeader] = "monitor-deny"
		default:
			d.Mutations.Headers[p.decisionHeader] = "deny"
		}
	}
	return d
}

// size is the body's size: body_size if given, else the length of body or body_json.
func (r *Request) size() int64 {
	switch {
	case r.BodySize != nil:
		return *r.BodySize
	case r.Body != "":
		return int64(len(r.Body))
	}
	return int64(len(r.BodyJSON))
}

// checkBody runs the field checks on the JSON body and returns the violations.
func (p *Policy) checkBody(req *Request) []string {
	raw := []byte(req.BodyJSON)
	if len(raw) == 0 {
		raw = []byte(req.Body)
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return []string{"body is empty, want a JSON object"}
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var body any
	if err := dec.Decode(&body); err != nil {
		return []string{"body is not valid JSON: " + err.Error()}
	}
	if _, err := dec.Token(); err != io.EOF {
		return []string{"body is not valid JSON: data after the JSON value"}
	}
	obj, ok := body.(map[string]any)
	if !ok {
		return []string{fmt.Sprintf("body is %s, want a JSON object", typeOf(body))}
	}
	var out []string
	for _, f := range p.fields {
		v, present := lookup(obj, f.parts)
		if !present {
			if f.required {
				out = append(out, fmt.Sprintf("body field %q is required", f.field))
			}
			continue
		}
		out = append(out, f.check(v)...)
	}
	return out
}

// lookup finds the dotted path parts in obj.
func lookup(obj map[string]any, parts []string) (any, bool) {
	var v any = obj
	for _, part := range parts {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[part]; !ok {
			return nil, false
		}
	}
	return v, true
}

func typeOf(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case json.Number:
		if _, err := strconv.ParseInt(v.String(), 10, 64); err == nil {
			return "integer"
		}
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

func (f *fieldRule) check(v any) []string {
	got := typeOf(v)
	if f.typ != "" && got != f.typ && !(f.typ == "number" && got == "integer") {
		return []string{fmt.Sprintf("body field %q is %s, want %s", f.field, got, f.typ)}
	}
	var out []string
	// The bounds apply to the value of a number and the length of a string or array.
	var (
		n    float64
		what string
		ok   = true
	)
	switch v := v.(type) {
	case json.Number:
		n, _ = v.Float64()
		what = "is"
	case string:
		n, what = float64(len([]rune(v))), "has length"
	case []any:
		n, what = float64(len(v)), "has length"
	default:
		ok = false
	}
	if ok && f.min != nil && n < *f.min {
		out = append(out, fmt.Sprintf("body field %q %s %s, below the minimum %s", f.field, what, fmtNum(n), fmtNum(*f.min)))
	}
	if ok && f.max != nil && n > *f.max {
		out = append(out, fmt.Sprintf("body field %q %s %s, above the maximum %s", f.field, what, fmtNum(n), fmtNum(*f.max)))
	}
	s, isString := v.(string)
	if len(f.enum) > 0 && (!isString || !slices.Contains(f.enum, s)) {
		out = append(out, fmt.Sprintf("body field %q must be one of %s", f.field, strings.Join(f.enum, ", ")))
	}
	if f.pattern != nil && (!isString || !f.pattern.MatchString(s)) {
		out = append(out, fmt.Sprintf("body field %q does not match %s", f.field, f.pattern))
	}
	return out
}

func fmtNum(n float64) string { return strconv.FormatFloat(n, 'g', -1, 64) }

// DecodeRequest parses the validate input strictly: one JSON object, no unknown fields, a
// method and a path starting with "/", at most one of body and body_json, and a non-negative
// body_size. Header names are folded to lower case. Its errors are for sdk.InvalidInput.
func DecodeRequest(input []byte) (*Request, error) {
	dec := json.NewDecoder(bytes.NewReader(input))
	dec.DisallowUnknownFields()
	var req Request
	if err := dec.Decode(&req); err != nil {
		return nil, fmt.Errorf("malformed request: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("malformed request: data after the JSON object")
	}
	if req.Method == "" {
		return nil, errors.New(`malformed request: "method" is missing or empty`)
	}
	req.Method = strings.ToUpper(req.Method)
	if !strings.HasPrefix(req.Path, "/") {
		return nil, errors.New(`malformed request: "path" must start with /`)
	}
	if req.Body != "" && len(req.BodyJSON) > 0 {
		return nil, errors.New(`malformed request: give "body" or "body_json", not both`)
	}
	if bytes.Equal(bytes.TrimSpace(req.BodyJSON), []byte("null")) {
		req.BodyJSON = nil
	}
	if req.BodySize != nil && *req.BodySize < 0 {
		return nil, errors.New(`malformed request: "body_size" is negative`)
	}
	if len(req.Headers) > 0 {
		h := make(map[string]string, len(req.Headers))
		for k, v := range req.Headers {
			h[strings.ToLower(k)] = v
		}
		req.Headers = h
	}
	return &req, nil
}
