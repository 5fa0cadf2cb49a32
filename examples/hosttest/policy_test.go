package policy_test

import (
	"context"
	"flag"
	"strconv"
	"testing"
	"time"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"

	policy "github.com/wasmvisor/wasmvisor/examples/hosttest"
)

// TestMain runs the tests with every parallel test at once (TestManyHosts), unless -parallel
// says otherwise.
func TestMain(m *testing.M) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set {
		if err := flag.Set("test.parallel", strconv.Itoa(manyHosts)); err != nil {
			panic(err)
		}
	}
	hosttest.VerifyTestMain(m)
}

func parallelism() int {
	n, _ := strconv.Atoi(flag.Lookup("test.parallel").Value.String())
	return n
}

// Test_main is the example: each case gets a fresh host with the same plugin name and its
// own policy, in parallel.
func Test_main(t *testing.T) {
	wasm := hosttest.ReadFile(t, "../../plugins/authz/authz.wasm")
	cases := []struct {
		name   string
		config map[string]string
		want   bool
	}{
		{"default policy denies delete", nil, false},
		{"viewers may delete", map[string]string{"role.viewer": "read,delete"}, true},
		{"default allow", map[string]string{"default": "allow"}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			h := hosttest.New(t) // fresh host, closed and leak-checked at cleanup
			hosttest.LoadPlugin(t, h, host.Plugin{Name: "authz", Wasm: wasm, Config: c.config})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			got, err := policy.Checker{Host: h}.Allowed(ctx, "alice", []string{"viewer"}, "delete", "bob")
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Fatalf("allowed = %v, want %v", got, c.want)
			}
		})
	}
}
