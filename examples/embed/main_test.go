package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wasmvisor/wasmvisor/host/hosttest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func Test_main(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out strings.Builder
	if err := run(ctx, &out, "../../plugins/authz/authz.wasm", hosttest.CacheDir()); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, line := range []string{
		`"allow":false`,
		`after:  {"allow":true,"reasons":["role \"viewer\" grants \"delete\" on \"document\""]}`,
		"refused config: true",
		`after a crash: {"allow":true`,
		"new incarnation: true",
		"restarts: 1",
		"calls: 3",
	} {
		if !strings.Contains(got, line) {
			t.Errorf("output lacks %q:\n%s", line, got)
		}
	}
}
