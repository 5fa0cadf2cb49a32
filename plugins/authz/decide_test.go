package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	sdk "github.com/wasmvisor/wasmvisor/sdk/go"
)

// refConfigs are the configs of the differential tests.
var refConfigs = []map[string]string{
	{},
	{"role.auditor": "document:read, invoice:*", "role.editor": "", "owner_actions": "read", "default_roles": "auditor"},
	{"default": "allow"},
	{"owner_actions": "*", "role.ops": "*:deploy, service:restart", "role.any": "*:*", "default_roles": "viewer"},
	{"owner_actions": ""},
}

func manyRoles(n int) string {
	roles := make([]string, n)
	for i := range roles {
		roles[i] = fmt.Sprintf("%q", fmt.Sprintf("r%d", i%(n/2+1)))
	}
	return strings.Join(append(roles, `"viewer"`, `"editor"`), ",")
}

// refInputs are evaluate inputs, valid and not: those of cases.yaml and more.
var refInputs = []string{
	`{"subject":{"id":"root","roles":["admin"]},"action":"delete","resource":{"type":"document","id":"42","owner":"bob"}}`,
	`{"subject":{"id":"alice","roles":["viewer"]},"action":"read","resource":{"type":"document","id":"42","owner":"bob"}}`,
	`{"subject":{"id":"alice","roles":["viewer"]},"action":"write","resource":{"type":"document","id":"42","owner":"bob"}}`,
	`{"subject":{"id":"alice","roles":["viewer"]},"action":"delete","resource":{"type":"document","id":"42","owner":"bob"}}`,
	`{"subject":{"id":"alice","roles":["viewer"]},"action":"write","resource":{"type":"document","id":"42","owner":"alice"}}`,
	`{"subject":{"id":"alice","roles":["viewer"]},"action":"delete","resource":{"type":"document","id":"42","owner":"alice"}}`,
	`{"subject":{"roles":["admin"]},"action":"read","resource":{"type":"document"}}`,
	`{"subject":{"id":"carol"},"action":"delete","resource":{"type":"invoice","id":"9"}}`,
	`{"subject":{"id":"zed"},"action":"fly","resource":{"type":"kite"}}`,
	`{"subject":`,
	`{"subjet":{"id":"alice"},"action":"read","resource":{"type":"document"}}`,
	`{"subject":{"id":"eve","roles":["viewer","editor","viewer","ghost","ops"]},"action":"read","resource":{"type":"document","id":"1"}}`,
	`{"subject":{"id":"d\u00e9j\u00e0 <vu> & \"q\"\n","roles":["sup\tport","admin"]},"action":"deploy","resource":{"type":"service","id":"\ud83d\ude00","owner":"d\u00e9j\u00e0 <vu> & \"q\"\n"}}`,
	"{\"subject\":{\"id\":\"bad \xff utf8\",\"roles\":[\"\xc3\x28\"]},\"action\":\"restart\",\"resource\":{\"type\":\"service\",\"owner\":\"bad \xff utf8\"}}",
	`{"subject":null,"action":"read","resource":{"type":"document","id":null,"owner":null}}`,
	`{"subject":{"id":"a","roles":null},"action":"read","resource":{"type":"document"}}`,
	`{"subject":{"id":"a","roles":[null,"admin"]},"action":"read","resource":{"type":"document"}}`,
	`{"subject":{"id":"a"},"subject":{"roles":["editor"]},"action":"write","action":"read","resource":{"type":"x"}}`,
	`{"subject":{"id":"a","roles":["admin"],"roles":["viewer"]},"action":"write","resource":{"type":"document"}}`,
	`{"subject":{"id":"u","roles":[` + manyRoles(40) + `]},"action":"write","resource":{"type":"document","id":"7","owner":"v"}}`,
	`{"subject":{"id":"u","roles":[` + manyRoles(40) + `]},"action":"delete","resource":{"type":"document","id":"7","owner":"u"}}`,
	`{"subject":{"id":"u","roles":["*"]},"action":"*","resource":{"type":"*"}}`,
	`{"action":"read","resource":{"type":"document"}}`,
	`{"subject":{"id":"a"},"action":"","resource":{"type":"document"}}`,
	`{"subject":{"id":"a"},"action":"read","resource":{}}`,
	`{"subject":{"id":"a"},"action":"read","resource":{"type":"document"}} x`,
	`{"subject":{"id":1},"action":"read","resource":{"type":"document"}}`,
	`[]`, `null`, ``, `{}`,
}

// checkAgainstReference decides input under cfg with the fast path and with the reference
// (encoding/json, the policy as it was): when the fast path accepts the input, the reference
// must too and give the same bytes. The fast path may refuse what the reference took only for
// keys that differ in case (encoding/json matches keys case-insensitively), which strict
// says is not expected here. It returns whether the fast path accepted the input.
func checkAgainstReference(t *testing.T, cfg map[string]string, input []byte, strict bool) bool {
	t.Helper()
	view := sdk.NewConfigView(cfg)
	p, err := ParsePolicy(view)
	rp, rerr := refParsePolicy(view)
	if (err == nil) != (rerr == nil) {
		t.Fatalf("config %v: %v, reference %v", cfg, err, rerr)
	}
	if err != nil {
		return false
	}
	var req Request
	derr := DecodeRequest(input, &req)
	rreq, rderr := refDecodeRequest(input)
	if derr != nil {
		if rderr == nil && strict {
			t.Fatalf("%q: refused (%v), the reference accepted it", input, derr)
		}
		return false
	}
	if rderr != nil {
		t.Fatalf("%q: accepted, the reference refused it: %v", input, rderr)
	}
	var w sdk.JSONWriter
	allow := p.Decide(&w, &req, &Scratch{})
	rd := rp.Evaluate(rreq)
	want, _ := json.Marshal(rd)
	if !bytes.Equal(w.Buf, want) || allow != rd.Allow {
		t.Fatalf("config %v, input %q:\ngot       %s (allow %v)\nreference %s", cfg, input, w.Buf, allow, want)
	}
	ev := appendEvent(nil, &req, allow)
	wantEv, _ := json.Marshal(decisionEvent{Subject: rreq.Subject.ID, Action: rreq.Action, Type: rreq.Resource.Type,
		Resource: rreq.Resource.ID, Allow: rd.Allow})
	if !bytes.Equal(ev, wantEv) {
		t.Fatalf("input %q: event %s, reference %s", input, ev, wantEv)
	}
	return true
}

// decisionEvent is the reference payload of a "decision" event.
type decisionEvent struct {
	Subject  string `json:"subject"`
	Action   string `json:"action"`
	Type     string `json:"type"`
	Resource string `json:"resource"`
	Allow    bool   `json:"allow"`
}

func TestDecideMatchesReference(t *testing.T) {
	accepted := 0
	for _, cfg := range refConfigs {
		for _, in := range refInputs {
			if checkAgainstReference(t, cfg, []byte(in), true) {
				accepted++
			}
		}
	}
	if want := 21 * len(refConfigs); accepted != want {
		t.Fatalf("%d decisions compared, want %d", accepted, want)
	}
}

func FuzzDecideMatchesReference(f *testing.F) {
	for i, in := range refInputs {
		f.Add(uint8(i), []byte(in))
	}
	f.Fuzz(func(t *testing.T, cfg uint8, input []byte) {
		checkAgainstReference(t, refConfigs[int(cfg)%len(refConfigs)], input, false)
	})
}

// The handler's decision allocates nothing, for requests of up to smallRoles roles, once the
// event ring has gone round (its slots' buffers are reused): the output is built in one buffer
// reused from call to call.
func TestEvaluateAllocations(t *testing.T) {
	for _, in := range refInputs[:9] {
		if in == `{"subject":` {
			continue
		}
		input := []byte(in)
		for range sdk.DefaultEventCapacity {
			if _, err := evaluate(input); err != nil {
				t.Fatal(err)
			}
		}
		if n := testing.AllocsPerRun(50, func() { _, _ = evaluate(input) }); n > 0 {
			t.Errorf("%s: %v allocations per decision, want 0", in, n)
		}
	}
}

func BenchmarkEvaluate(b *testing.B) {
	for i, in := range refInputs[:9] {
		if in == `{"subject":` {
			continue
		}
		b.Run(fmt.Sprint(i), func(b *testing.B) {
			input := []byte(in)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := evaluate(input); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
