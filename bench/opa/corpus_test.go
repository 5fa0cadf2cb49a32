package opa

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
	wopa "github.com/wasmvisor/wasmvisor/sandbox/opa"
)

// corpusCase is one evaluation of a corpus policy: an entrypoint, its input and the data
// document, both JSON.
type corpusCase struct {
	name, entrypoint, input, data string
}

const exampleData = `{"roles":{"alice":["reader"],"bob":["writer","reader"],"eve":[]},"grants":{"reader":["read"],"writer":["write","read"]}}`

// corpus lists, per policy of plugins/rego, the evaluations compared (authz's are cases.yaml's,
// in TestCorpusSameAsOPA). spin (it does not finish) and httpsend (refused at load) are
// sandbox/opa's own tests.
var corpus = map[string][]corpusCase{
	"example": {
		{"alice-read", "example/allow", `{"user":"alice","action":"read"}`, exampleData},
		{"alice-write", "example/allow", `{"user":"alice","action":"write"}`, exampleData},
		{"bob-write", "example/allow", `{"user":"bob","action":"write"}`, exampleData},
		{"root", "example/allow", `{"user":"root","action":"x"}`, exampleData},
		{"no-roles-data", "example/allow", `{"user":"alice","action":"read"}`, `{}`},
		{"no-input-user", "example/allow", `{"action":"read"}`, exampleData},
		{"reasons-unknown", "example/reasons", `{"user":"carol"}`, exampleData},
		{"reasons-empty-roles", "example/reasons", `{"user":"eve"}`, exampleData},
		{"reasons-known", "example/reasons", `{"user":"bob"}`, exampleData},
		{"reasons-undefined-user", "example/reasons", `{}`, exampleData},
	},
	"hostbuiltins": {
		{"ascii", "hostbuiltins/result", `{"text":"hello","token":"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImFkbWluIjp0cnVlLCJuIjoxMjM0NTY3ODkwMX0.RlYGBtqtEFcRWyISrPDV8W4n78NWDRxPJe9BvXW_Hyw","list":"a1, b22;c333","when":"2024-02-29T23:30:00Z"}`, `{}`},
		{"unicode", "hostbuiltins/result", `{"text":"héllo wörld & <x>","token":"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImFkbWluIjp0cnVlLCJuIjoxMjM0NTY3ODkwMX0.RlYGBtqtEFcRWyISrPDV8W4n78NWDRxPJe9BvXW_Hyw","list":"9;;8, 7","when":"2021-12-31T23:59:59.5+02:00"}`, `{}`},
		{"bad-token", "hostbuiltins/result", `{"text":"x","token":"not.a.jwt","list":"","when":"2020-01-01T00:00:00Z"}`, `{}`},
		{"bad-time", "hostbuiltins/result", `{"text":"x","token":"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImFkbWluIjp0cnVlLCJuIjoxMjM0NTY3ODkwMX0.RlYGBtqtEFcRWyISrPDV8W4n78NWDRxPJe9BvXW_Hyw","list":"1","when":"yesterday"}`, `{}`},
	},
	"strings": {
		{"plain", "strings/result", `{"name":"banana","path":"/api/v1/x","tags":["one","two","zoo","one"],"padded":"  x y  ","numbers":[3,1.5,-2,10],"attrs":{"b":1,"a":[true,null]},"count":"42"}`, `{}`},
		{"unicode", "strings/result", `{"name":"ça va","path":"rel/été","tags":["ö","o"],"padded":"\t\u00e9\n","numbers":[0],"attrs":{},"count":"-1.25e2"}`, `{}`},
		{"undefined", "strings/result", `{"name":"x"}`, `{}`},
	},
}

// TestCorpusSameAsOPA evaluates every corpus policy with wasmvisor's OPA format (the
// committed policy.wasm under a host, as a plugin) and with OPA's rego package (the .rego
// source, prepared), on the same input and data, and wants the same result set.
func TestCorpusSameAsOPA(t *testing.T) {
	names := make([]string, 0, len(corpus))
	for n := range corpus {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		for _, c := range corpus[name] {
			t.Run(name+"/"+c.name, func(t *testing.T) {
				got := wasmvisorResult(t, name, c)
				want := opaResult(t, name, c)
				if !bytes.Equal(got, want) {
					t.Fatalf("input %s data %s\nwasmvisor %s\nOPA       %s", c.input, c.data, got, want)
				}
			})
		}
	}
	// authz: the cases of cases.yaml and moreCases, data.config from each case's config.
	for _, d := range slices.Concat(authzCases(t), moreCases()) {
		data, err := json.Marshal(RegoData(d.config))
		if err != nil {
			t.Fatal(err)
		}
		c := corpusCase{d.name, "authz/decision", string(d.input), string(data)}
		t.Run("authz/"+c.name, func(t *testing.T) {
			if got, want := wasmvisorResult(t, "authz", c), opaResult(t, "authz", c); !bytes.Equal(got, want) {
				t.Fatalf("input %s\nwasmvisor %s\nOPA       %s", c.input, got, want)
			}
		})
	}
}

// TestAuthzRegoSameAsGoPlugin: the Rego authz, compiled to Wasm and run by wasmvisor, decides
// as the Go authz plugin on every input of cases.yaml and moreCases, byte for byte.
func TestAuthzRegoSameAsGoPlugin(t *testing.T) {
	wasm := authzWasm(t, "")
	ctx := context.Background()
	for _, d := range slices.Concat(authzCases(t), moreCases()) {
		t.Run(d.name, func(t *testing.T) {
			want, err := wasmvisorDecider(t, wasm, d.config).Call(ctx, "authz", "evaluate", d.input)
			if err != nil {
				t.Fatal(err)
			}
			data, err := json.Marshal(RegoData(d.config))
			if err != nil {
				t.Fatal(err)
			}
			rs := wasmvisorResult(t, "authz", corpusCase{d.name, "authz/decision", string(d.input), string(data)})
			var set []struct{ Result json.RawMessage }
			if err := json.Unmarshal(rs, &set); err != nil || len(set) != 1 {
				t.Fatalf("result set %s: %v", rs, err)
			}
			if !bytes.Equal(set[0].Result, want) {
				t.Fatalf("input %s\nRego in wasmvisor %s\nGo plugin         %s", d.input, set[0].Result, want)
			}
		})
	}
}

// regoDecider is a host serving plugins/rego/authz/policy.wasm (authz.rego compiled to Wasm)
// as plugin "authz" with the OPA format, its data document from cfg (RegoData).
func regoDecider(t testing.TB, cfg map[string]string) *host.Host {
	t.Helper()
	ctx := context.Background()
	data, err := json.Marshal(RegoData(cfg))
	if err != nil {
		t.Fatal(err)
	}
	wasm, err := os.ReadFile(filepath.Join("..", "..", "plugins", "rego", "authz", "policy.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := host.New(ctx, host.WithCacheDir(hosttest.CacheDir()), host.WithFormats(wopa.Format()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := h.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	if err := h.Load(ctx, host.Plugin{Name: "authz", Wasm: wasm, Config: map[string]string{wopa.ConfigData: string(data)}, Instances: 1}); err != nil {
		t.Fatal(err)
	}
	return h
}

// wasmvisorResult loads plugins/rego/<policy>/policy.wasm in a host with the OPA format and
// calls c's entrypoint: the result set, normalised (normal).
func wasmvisorResult(t *testing.T, policy string, c corpusCase) []byte {
	t.Helper()
	ctx := context.Background()
	wasm, err := os.ReadFile(filepath.Join("..", "..", "plugins", "rego", policy, "policy.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := host.New(ctx, host.WithCacheDir(hosttest.CacheDir()), host.WithFormats(wopa.Format()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := h.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	if err := h.Load(ctx, host.Plugin{Name: policy, Wasm: wasm, Config: map[string]string{wopa.ConfigData: c.data}, Instances: 1}); err != nil {
		t.Fatal(err)
	}
	out, err := h.Call(ctx, policy, c.entrypoint, []byte(c.input))
	if err != nil {
		t.Fatal(err)
	}
	return normal(t, out)
}

// opaResult evaluates c with OPA's rego package, the query data.<entrypoint's path>, and
// returns the result set as opa_eval writes it: [{"result": value}], or [] when undefined.
func opaResult(t *testing.T, policy string, c corpusCase) []byte {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("..", "..", "plugins", "rego", policy, policy+".rego"))
	if err != nil {
		t.Fatal(err)
	}
	var data map[string]any
	if err := json.Unmarshal([]byte(c.data), &data); err != nil {
		t.Fatal(err)
	}
	ref, err := ast.PtrRef(ast.DefaultRootDocument, c.entrypoint)
	if err != nil {
		t.Fatal(err)
	}
	pq, err := rego.New(rego.Query(ref.String()), rego.Module(policy+".rego", string(src)),
		rego.Store(inmem.NewFromObject(data))).PrepareForEval(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	input, err := ast.ValueFromReader(bytes.NewReader([]byte(c.input)))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := pq.Eval(context.Background(), rego.EvalParsedInput(input))
	if err != nil {
		t.Fatal(err)
	}
	set := []map[string]any{}
	for _, r := range rs {
		set = append(set, map[string]any{"result": r.Expressions[0].Value})
	}
	out, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return normal(t, out)
}

// normal re-encodes JSON with Go's encoder (keys sorted, numbers as written), so that the two
// sides compare as values, not as whitespace.
func normal(t *testing.T, b []byte) []byte {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
