package opa_test

import (
	"context"
	"maps"
	"strings"
	"testing"

	"github.com/wasmvisor/wasmvisor/abi"
	"github.com/wasmvisor/wasmvisor/sandbox"
	"github.com/wasmvisor/wasmvisor/sandbox/opa"
)

// TestDecisions: an instance counts the evaluations that returned a result set, per
// entrypoint, the default handler's under entrypoint 0's; refused calls are not decisions.
func TestDecisions(t *testing.T) {
	ctx := context.Background()
	m := compile(t, "example", sandbox.Limits{})
	i := instance(t, m, map[string]string{opa.ConfigData: exampleData})
	for _, c := range []struct{ handler, input string }{
		{"example/allow", `{"user":"alice","action":"read"}`},
		{"example/allow", `{"user":"alice","action":"write"}`},
		{"default", `{"user":"bob","action":"write"}`},
		{"example/reasons", `{"user":"carol"}`},
		{"example/reasons", `{"user":`}, // not JSON: refused before any evaluation
		{"example/nope", `{}`},          // unknown handler
	} {
		_, _ = i.Call(ctx, c.handler, []byte(c.input))
	}
	tel, err := i.TelemetryWithin(nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mt := range tel {
		if mt.Kind != abi.Counter {
			t.Errorf("%s: kind %v", mt.Name, mt.Kind)
		}
		got[mt.Name] = mt.Value
	}
	if want := map[string]float64{"opa_decisions_example_allow": 3, "opa_decisions_example_reasons": 1}; !maps.Equal(got, want) {
		t.Fatalf("telemetry %v, want %v", got, want)
	}
}

func TestDecisionMetricNames(t *testing.T) {
	long := strings.Repeat("a", abi.MaxMetricName)
	got := opa.DecisionMetrics(map[string]int32{"a/b_c": 0, "a_b/c": 1, "x/y": 2, long: 3, "z": 2})
	want := map[int32]string{0: "opa_decisions_0", 1: "opa_decisions_1", 2: "opa_decisions_x_y", 3: "opa_decisions_3"}
	if !maps.Equal(got, want) {
		t.Fatalf("%v, want %v", got, want)
	}
}
