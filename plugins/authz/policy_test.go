package main

import (
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"

	sdk "github.com/wasmvisor/wasmvisor/sdk/go"
)

func newReq(id string, roles []string, action, typ, resID, owner string) *Request {
	r := &Request{SubjectID: []byte(id), Action: []byte(action), Type: []byte(typ), ID: []byte(resID), Owner: []byte(owner)}
	for _, role := range roles {
		r.Roles = append(r.Roles, []byte(role))
	}
	return r
}

// evaluateReq decides req with p and decodes the output, which must be valid JSON.
func evaluateReq(t testing.TB, p *Policy, req *Request) Decision {
	t.Helper()
	var w sdk.JSONWriter
	allow := p.Decide(&w, req, &Scratch{})
	var d Decision
	if err := json.Unmarshal(w.Buf, &d); err != nil || d.Allow != allow || len(d.Reasons) == 0 {
		t.Fatalf("output %s (allow %v): %v", w.Buf, allow, err)
	}
	return d
}

func TestEvaluate(t *testing.T) {
	def := mustPolicy(sdk.ConfigView{})
	custom := mustPolicy(sdk.NewConfigView(map[string]string{
		"role.auditor":  "document:read, invoice:*",
		"role.editor":   "",
		"owner_actions": "read",
		"default_roles": "auditor",
	}))
	allowAll := mustPolicy(sdk.NewConfigView(map[string]string{"default": "allow"}))
	for _, tc := range []struct {
		name    string
		p       *Policy
		req     *Request
		allow   bool
		reasons []string
	}{
		{"admin deletes anything", def, newReq("root", []string{"admin"}, "delete", "invoice", "7", "bob"), true,
			[]string{`role "admin" grants "delete" on "invoice"`}},
		{"viewer reads", def, newReq("alice", []string{"viewer"}, "read", "document", "42", "bob"), true,
			[]string{`role "viewer" grants "read" on "document"`}},
		{"viewer non-owner writes", def, newReq("alice", []string{"viewer"}, "write", "document", "42", "bob"), false,
			[]string{`no role of subject "alice" grants "write" on "document"`, `subject "alice" does not own document "42"`}},
		{"owner writes own doc", def, newReq("alice", []string{"viewer"}, "write", "document", "42", "alice"), true,
			[]string{`subject "alice" owns document "42"`}},
		{"owner without roles reads", def, newReq("alice", nil, "read", "document", "42", "alice"), true,
			[]string{`subject "alice" owns document "42"`}},
		{"owner may not delete", def, newReq("alice", []string{"editor"}, "delete", "document", "42", "alice"), false,
			[]string{`no role of subject "alice" grants "delete" on "document"`, `subject "alice" owns document "42", but owners may not "delete"`}},
		{"two roles grant", def, newReq("eve", []string{"viewer", "editor", "viewer"}, "read", "document", "1", ""), true,
			[]string{`role "viewer" grants "read" on "document"`, `role "editor" grants "read" on "document"`}},
		{"unknown role", def, newReq("mallory", []string{"superuser"}, "delete", "document", "42", "bob"), false,
			[]string{`no role of subject "mallory" grants "delete" on "document"`, `role "superuser" is not defined`}},
		{"no roles", def, newReq("bob", nil, "read", "document", "42", ""), false,
			[]string{`subject "bob" has no roles`, `subject "bob" does not own document "42"`}},
		{"empty subject with admin role", def, newReq("", []string{"admin"}, "read", "document", "42", ""), false,
			[]string{"subject has no id"}},
		{"empty owner is nobody", def, newReq("bob", nil, "read", "document", "42", ""), false,
			[]string{`subject "bob" has no roles`, `subject "bob" does not own document "42"`}},
		{"default role and typed permission", custom, newReq("carol", nil, "delete", "invoice", "9", ""), true,
			[]string{`role "auditor" grants "delete" on "invoice"`}},
		{"typed permission does not leak to other types", custom, newReq("carol", nil, "write", "document", "9", ""), false,
			[]string{`no role of subject "carol" grants "write" on "document"`}},
		{"emptied default role", custom, newReq("dave", []string{"editor"}, "write", "report", "3", "dave"), false,
			[]string{`no role of subject "dave" grants "write" on "report"`, `subject "dave" owns report "3", but owners may not "write"`}},
		{"default allow", allowAll, newReq("zed", nil, "fly", "kite", "k", ""), true,
			[]string{`subject "zed" has no roles`, `allowed by config "default" = "allow"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := evaluateReq(t, tc.p, tc.req)
			if d.Allow != tc.allow || strings.Join(d.Reasons, "|") != strings.Join(tc.reasons, "|") {
				t.Errorf("got allow=%v %q\nwant allow=%v %q", d.Allow, d.Reasons, tc.allow, tc.reasons)
			}
		})
	}
}

func TestParsePolicyRejects(t *testing.T) {
	for _, tc := range []struct {
		cfg  map[string]string
		want string
	}{
		{map[string]string{"rol.admin": "*"}, `unknown config key "rol.admin"`},
		{map[string]string{"role.": "*"}, `config key "role.": role name must match`},
		{map[string]string{"role.x": "read,,write"}, `config key "role.x": empty item`},
		{map[string]string{"role.x": "a:b:c"}, `config key "role.x": bad permission "a:b:c"`},
		{map[string]string{"role.x": "doc:"}, `bad permission "doc:"`},
		{map[string]string{"owner_actions": "read write"}, `config key "owner_actions": bad item "read write"`},
		{map[string]string{"default_roles": "ghost"}, `config key "default_roles": role "ghost" is not defined`},
		{map[string]string{"default_roles": "*"}, `config key "default_roles": bad item "*"`},
		{map[string]string{"default": "maybe"}, `config key "default": want deny or allow, got "maybe"`},
	} {
		_, err := ParsePolicy(sdk.NewConfigView(tc.cfg))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParsePolicy(%v) = %v, want an error containing %q", tc.cfg, err, tc.want)
		}
	}
}

func TestEvaluateHandler(t *testing.T) {
	t.Cleanup(func() { policy = mustPolicy(sdk.ConfigView{}) })
	for _, tc := range []struct {
		name, in string
		out      string
		invalid  string
	}{
		{name: "allow", in: `{"subject":{"id":"alice","roles":["viewer"]},"action":"read","resource":{"type":"document","id":"42","owner":"bob"}}`,
			out: `{"allow":true,"reasons":["role \"viewer\" grants \"read\" on \"document\""]}`},
		{name: "deny", in: `{"subject":{"id":"alice","roles":["viewer"]},"action":"delete","resource":{"type":"document","id":"42","owner":"bob"}}`,
			out: `{"allow":false,"reasons":["no role of subject \"alice\" grants \"delete\" on \"document\""]}`},
		{name: "malformed JSON", in: `{"subject":`, invalid: "malformed request: json: unexpected end of input, want object at offset 11"},
		{name: "not an object", in: `[]`, invalid: "malformed request: json: unexpected '[', want object at offset 0"},
		{name: "unknown field", in: `{"subjet":{}}`, invalid: `malformed request: json: unknown field "subjet" at offset 10`},
		{name: "unknown field in subject", in: `{"subject":{"ID":"a"}}`, invalid: `unknown field "ID" in subject`},
		{name: "unknown field in resource", in: `{"resource":{"kind":"a"}}`, invalid: `unknown field "kind" in resource`},
		{name: "number for a string", in: `{"action":1}`, invalid: "json: unexpected '1', want string at offset 10"},
		{name: "role not a string", in: `{"subject":{"roles":[true]}}`, invalid: "want string"},
		{name: "trailing data", in: `{"action":"read","resource":{"type":"d"}} {}`, invalid: "data after the JSON value"},
		{name: "no action", in: `{"subject":{"id":"a"},"resource":{"type":"d"}}`, invalid: `"action" is missing or empty`},
		{name: "no type", in: `{"subject":{"id":"a"},"action":"read"}`, invalid: `"resource.type" is missing or empty`},
		{name: "empty input", in: ``, invalid: "malformed request: json: unexpected end of input, want object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := evaluate([]byte(tc.in))
			if tc.invalid != "" {
				// sdk.InvalidInput keeps the message and maps to STATUS_INVALID_INPUT; its
				// wrapper is what the SDK recognises, so check the text and that it wraps.
				if err == nil || !strings.Contains(err.Error(), tc.invalid) || errors.Unwrap(err) == nil {
					t.Errorf("err = %v, want an InvalidInput containing %q", err, tc.invalid)
				}
				return
			}
			if err != nil || string(out) != tc.out {
				t.Errorf("got %s %v\nwant %s", out, err, tc.out)
			}
			var d Decision
			if err := json.Unmarshal(out, &d); err != nil || len(d.Reasons) == 0 {
				t.Errorf("output %s: %v", out, err)
			}
		})
	}
}

func TestConfigChangeTakesEffect(t *testing.T) {
	t.Cleanup(func() { policy = mustPolicy(sdk.ConfigView{}) })
	in := []byte(`{"subject":{"id":"alice","roles":["viewer"]},"action":"delete","resource":{"type":"document","id":"42"}}`)
	if out, _ := evaluate(in); !strings.Contains(string(out), `"allow":false`) {
		t.Fatalf("before: %s", out)
	}
	if err := applyConfig(sdk.ConfigView{}, sdk.NewConfigView(map[string]string{"role.viewer": "read,document:delete"})); err != nil {
		t.Fatal(err)
	}
	if out, _ := evaluate(in); !strings.Contains(string(out), `"allow":true`) {
		t.Fatalf("after: %s", out)
	}
	// A bad config is rejected and the previous policy keeps serving.
	err := applyConfig(sdk.ConfigView{}, sdk.NewConfigView(map[string]string{"role.viewer": "read,,"}))
	if err == nil || !strings.Contains(err.Error(), `config key "role.viewer"`) {
		t.Fatalf("bad config accepted: %v", err)
	}
	if out, _ := evaluate(in); !strings.Contains(string(out), `"allow":true`) {
		t.Fatalf("after rejected config: %s", out)
	}
}

// A request with 100,000 roles, most undefined and many repeated, is decided in one pass: the
// duplicates are dropped through a set, and the reasons name at most maxNotes undefined
// roles and count the rest, so the answer stays small whatever the request holds.
func TestManyRolesStayBounded(t *testing.T) {
	def := mustPolicy(sdk.ConfigView{})
	roles := make([]string, 0, 100_000)
	for i := range 100_000 {
		roles = append(roles, "r"+strconv.Itoa(i%50_000)) // each role twice
	}
	d := evaluateReq(t, def, newReq("alice", append(roles, "viewer"), "read", "document", "42", "bob"))
	if !d.Allow || d.Reasons[0] != `role "viewer" grants "read" on "document"` {
		t.Fatalf("decision: %v %v", d.Allow, d.Reasons[:1])
	}
	d = evaluateReq(t, def, newReq("alice", roles, "read", "document", "42", "bob"))
	if d.Allow || len(d.Reasons) != 1+maxNotes+1+1 {
		t.Fatalf("%d reasons, want the denial, %d undefined roles, the count of the rest, and ownership", len(d.Reasons), maxNotes)
	}
	if want := "and 49984 more roles not defined"; !slices.Contains(d.Reasons, want) {
		t.Fatalf("reasons lack %q: %v", want, d.Reasons[len(d.Reasons)-3:])
	}
}
