package opa

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"go.yaml.in/yaml/v3"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
)

// decisionCase is one input with the config it is decided under.
type decisionCase struct {
	name   string
	config map[string]string
	input  []byte
}

// casesFile is the part of plugins/authz/cases.yaml (CASES.md) read here.
type casesFile struct {
	Handler string `yaml:"handler"`
	Cases   []struct {
		Name      string            `yaml:"name"`
		Handler   string            `yaml:"handler"`
		Config    map[string]string `yaml:"config"`
		Input     string            `yaml:"input"`
		InputJSON any               `yaml:"input_json"`
		Error     any               `yaml:"error"`
	} `yaml:"cases"`
}

var nonWord = regexp.MustCompile(`[^a-z0-9]+`)

// authzCases returns the decisions of plugins/authz/cases.yaml: every case of the evaluate
// handler that does not expect an error.
func authzCases(t testing.TB) []decisionCase {
	t.Helper()
	raw, err := os.ReadFile("../../plugins/authz/cases.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var f casesFile
	if err := yaml.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	var out []decisionCase
	for _, c := range f.Cases {
		if c.Error != nil || (c.Handler != "" && c.Handler != "evaluate") {
			continue
		}
		in := []byte(c.Input)
		if c.InputJSON != nil {
			if in, err = json.Marshal(c.InputJSON); err != nil {
				t.Fatal(err)
			}
		}
		out = append(out, decisionCase{name: strings.Trim(nonWord.ReplaceAllString(c.Name, "-"), "-"), config: c.Config, input: in})
	}
	if len(out) < 8 {
		t.Fatalf("%d decisions in cases.yaml, want at least 8", len(out))
	}
	return out
}

// moreCases are decisions beyond cases.yaml's: several roles, undefined ones past the notes'
// bound, escapes and HTML characters, a typed permission, owners of every kind.
func moreCases() []decisionCase {
	many := make([]string, 40)
	for i := range many {
		many[i] = fmt.Sprintf(`"r%d"`, i%25)
	}
	custom := map[string]string{"role.auditor": "document:read, invoice:*", "role.editor": "", "owner_actions": "read", "default_roles": "auditor"}
	ops := map[string]string{"owner_actions": "*", "role.ops": "*:deploy, service:restart", "default_roles": "viewer"}
	return []decisionCase{
		{"two-roles-grant", nil, []byte(`{"subject":{"id":"eve","roles":["viewer","editor","viewer","ghost"]},"action":"read","resource":{"type":"document","id":"1"}}`)},
		{"many-undefined-roles", nil, []byte(`{"subject":{"id":"u","roles":[` + strings.Join(many, ",") + `,"viewer"]},"action":"write","resource":{"type":"document","id":"7","owner":"v"}}`)},
		{"escapes", ops, []byte(`{"subject":{"id":"d\u00e9j\u00e0 <vu> & \"q\"","roles":["sup\tport","ops"]},"action":"deploy","resource":{"type":"service","id":"\ud83d\ude00","owner":"x"}}`)},
		{"owner-any-action", ops, []byte(`{"subject":{"id":"o"},"action":"shred","resource":{"type":"document","id":"5","owner":"o"}}`)},
		{"typed-permission-does-not-leak", custom, []byte(`{"subject":{"id":"carol"},"action":"write","resource":{"type":"document","id":"9"}}`)},
		{"emptied-default-role", custom, []byte(`{"subject":{"id":"dave","roles":["editor"]},"action":"write","resource":{"type":"report","id":"3","owner":"dave"}}`)},
	}
}

// wasmvisorDecider is a host with the authz plugin (wasm) under cfg.
func wasmvisorDecider(t testing.TB, wasm []byte, cfg map[string]string) *host.Host {
	t.Helper()
	ctx := context.Background()
	h, err := host.New(ctx, host.WithCacheDir(hosttest.CacheDir()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := h.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	if err := h.Load(ctx, host.Plugin{Name: "authz", Wasm: wasm, Config: cfg, Instances: 1}); err != nil {
		t.Fatal(err)
	}
	return h
}

// opaDecider is OPA's prepared query of authz.rego's decision under cfg.
func opaDecider(t testing.TB, cfg map[string]string) rego.PreparedEvalQuery {
	t.Helper()
	src, err := os.ReadFile(AuthzRego)
	if err != nil {
		t.Fatal(err)
	}
	pq, err := rego.New(
		rego.Query("data.authz.decision"),
		rego.Module("authz.rego", string(src)),
		rego.Store(inmem.NewFromObject(RegoData(cfg))),
	).PrepareForEval(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return pq
}

// opaDecision evaluates input (JSON) and returns the decision encoded as JSON.
func opaDecision(t testing.TB, pq rego.PreparedEvalQuery, input []byte) []byte {
	t.Helper()
	v, err := ast.ValueFromReader(bytes.NewReader(input))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := pq.Eval(context.Background(), rego.EvalParsedInput(v))
	if err != nil || len(rs) != 1 || len(rs[0].Expressions) != 1 {
		t.Fatalf("%s: %v %v", input, rs, err)
	}
	out, err := json.Marshal(rs[0].Expressions[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func authzWasm(t testing.TB, env string) []byte {
	t.Helper()
	path := "../../plugins/authz/authz.wasm"
	if env != "" {
		path = os.Getenv(env)
	}
	wasm, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return wasm
}

// TestSameDecisions: the plugin and the Rego port give the same JSON, allow and reasons, on
// every input of cases.yaml and of moreCases.
func TestSameDecisions(t *testing.T) {
	wasm := authzWasm(t, "")
	ctx := context.Background()
	for _, c := range slices.Concat(authzCases(t), moreCases()) {
		t.Run(c.name, func(t *testing.T) {
			h := wasmvisorDecider(t, wasm, c.config)
			got, err := h.Call(ctx, "authz", "evaluate", c.input)
			if err != nil {
				t.Fatal(err)
			}
			if want := opaDecision(t, opaDecider(t, c.config), c.input); !bytes.Equal(got, want) {
				t.Fatalf("input %s\nwasmvisor %s\nOPA       %s", c.input, got, want)
			}
		})
	}
}

// BenchmarkDecision decides each input of cases.yaml in process: "wasmvisor" is
// Host.CallAppend of the authz plugin's evaluate (JSON in, JSON out, into a reused buffer);
// "opa" is OPA's prepared query given the same JSON bytes (parsed into its input value each
// time, as a server does with a request body); "opa-parsed" is the query given an input value
// parsed once beforehand, OPA's least work; "wasmvisor-rego" is authz.rego compiled by opa
// build -t wasm, run by wasmvisor's OPA format (Host.CallAppend of authz/decision, the result
// set out). With AUTHZ_BEFORE set to the path of another
// authz.wasm, "wasmvisor-before" calls that one (the figures before a change).
func BenchmarkDecision(b *testing.B) {
	ctx := context.Background()
	wasm := authzWasm(b, "")
	for _, c := range authzCases(b) {
		b.Run(c.name, func(b *testing.B) {
			variants := []string{"wasmvisor", "wasmvisor-rego", "opa", "opa-parsed"}
			if os.Getenv("AUTHZ_BEFORE") != "" {
				variants = append(variants, "wasmvisor-before")
			}
			for _, v := range variants {
				b.Run(v, func(b *testing.B) {
					switch v {
					case "wasmvisor", "wasmvisor-before":
						w := wasm
						if v == "wasmvisor-before" {
							w = authzWasm(b, "AUTHZ_BEFORE")
						}
						h := wasmvisorDecider(b, w, c.config)
						dst, err := h.CallAppend(ctx, "authz", "evaluate", c.input, nil)
						if err != nil {
							b.Fatal(err)
						}
						b.ReportAllocs()
						for b.Loop() {
							if dst, err = h.CallAppend(ctx, "authz", "evaluate", c.input, dst[:0]); err != nil {
								b.Fatal(err)
							}
						}
					case "wasmvisor-rego":
						h := regoDecider(b, c.config)
						dst, err := h.CallAppend(ctx, "authz", "authz/decision", c.input, nil)
						if err != nil {
							b.Fatal(err)
						}
						b.ReportAllocs()
						for b.Loop() {
							if dst, err = h.CallAppend(ctx, "authz", "authz/decision", c.input, dst[:0]); err != nil {
								b.Fatal(err)
							}
						}
					case "opa":
						pq := opaDecider(b, c.config)
						b.ReportAllocs()
						for b.Loop() {
							in, err := ast.ValueFromReader(bytes.NewReader(c.input))
							if err != nil {
								b.Fatal(err)
							}
							if rs, err := pq.Eval(ctx, rego.EvalParsedInput(in)); err != nil || len(rs) != 1 {
								b.Fatal(rs, err)
							}
						}
					case "opa-parsed":
						pq := opaDecider(b, c.config)
						in, err := ast.ValueFromReader(bytes.NewReader(c.input))
						if err != nil {
							b.Fatal(err)
						}
						b.ReportAllocs()
						for b.Loop() {
							if rs, err := pq.Eval(ctx, rego.EvalParsedInput(in)); err != nil || len(rs) != 1 {
								b.Fatal(rs, err)
							}
						}
					}
				})
			}
		})
	}
}
