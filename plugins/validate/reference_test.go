package main

// The validate policy as it was before the JSON scanner and the compiled texts (encoding/json by
// reflection both ways, the body decoded into maps, the reasons formatted with fmt), kept as
// the reference that the fast path must agree with byte for byte (TestValidateMatchesReference,
// FuzzValidateMatchesReference).

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strconv"
	"strings"
)

// refRequest is the input of the validate handler: a description of an HTTP request.
type refRequest struct {
	Method   string            `json:"method"`
	Path     string            `json:"path"`
	Headers  map[string]string `json:"headers"`
	Body     string            `json:"body"`
	BodyJSON json.RawMessage   `json:"body_json"`
	BodySize *int64            `json:"body_size"`
}

// refDecision is the output of the validate handler. Reasons is never empty. Status is the HTTP
// status a proxy should answer a denied request with (0, omitted, when allowed).
type refDecision struct {
	Allow     bool         `json:"allow"`
	Status    int          `json:"status,omitempty"`
	Reasons   []string     `json:"reasons"`
	Mutations refMutations `json:"mutations"`
}

// refMutations are changes the caller should apply to the request before forwarding it.
type refMutations struct {
	// Headers to set on the request (names in lower case).
	Headers map[string]string `json:"headers"`
}

func (r route) refMatchesPath(p string) bool {
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

func (r route) refMatchesMethod(m string) bool { return r.method == "*" || r.method == m }

// refEvaluate decides req. Every check runs and every violation is a reason; the status is that
// of the first violation (route, headers, body size, body content, in that order). In monitor
// mode the decision is allow whatever the violations, which stay in the reasons.
func (p *Policy) refEvaluate(req *refRequest) refDecision {
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
		if p.routes[i].refMatchesPath(reqPath) {
			pathKnown = true
			if p.routes[i].refMatchesMethod(method) {
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
	size := req.refSize()
	if size > p.maxBodyBytes {
		deny(statusTooLarge, "body of %d bytes exceeds the maximum of %d", size, p.maxBodyBytes)
	}
	if len(p.fields) > 0 && slices.ContainsFunc(p.bodyRoutes, func(r route) bool { return r.refMatchesMethod(method) && r.refMatchesPath(reqPath) }) {
		for _, r := range p.refCheckBody(req) {
			deny(statusBadRequest, "%s", r)
		}
	}
	d := refDecision{Allow: status == 0, Status: status, Reasons: reasons}
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

// refSize is the body's size: body_size if given, else the length of body or body_json.
func (r *refRequest) refSize() int64 {
	switch {
	case r.BodySize != nil:
		return *r.BodySize
	case r.Body != "":
		return int64(len(r.Body))
	}
	return int64(len(r.BodyJSON))
}

// refCheckBody runs the field checks on the JSON body and returns the violations.
func (p *Policy) refCheckBody(req *refRequest) []string {
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
		return []string{fmt.Sprintf("body is %s, want a JSON object", refTypeOf(body))}
	}
	var out []string
	for _, f := range p.fields {
		v, present := refLookup(obj, f.parts)
		if !present {
			if f.required {
				out = append(out, fmt.Sprintf("body field %q is required", f.field))
			}
			continue
		}
		out = append(out, f.refCheck(v)...)
	}
	return out
}

// refLookup finds the dotted path parts in obj.
func refLookup(obj map[string]any, parts []string) (any, bool) {
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

func refTypeOf(v any) string {
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

func (f *fieldRule) refCheck(v any) []string {
	got := refTypeOf(v)
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

// refDecodeRequest parses the validate input strictly: one JSON object, no unknown fields, a
// method and a path starting with "/", at most one of body and body_json, and a non-negative
// body_size. Header names are folded to lower case. Its errors are for sdk.InvalidInput.
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
