package policy_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
	"github.com/wasmvisor/wasmvisor/sandbox"

	policy "github.com/wasmvisor/wasmvisor/examples/hosttest"
)

// manyHosts is how many tests TestManyHosts runs, each with a host of its own and the authz
// plugin (a standard-Go plugin, the heaviest kind to compile and instantiate).
const manyHosts = 300

// maxPeakRSS bounds the test binary's peak resident memory, race detector included.
const maxPeakRSS = 4 << 30

// TestManyHosts is what an application's test suite does at scale: hundreds of parallel tests,
// each with a fresh host and a Go plugin. TestMain runs this package with -parallel manyHosts
// (unless -parallel is given), so that every one of them has its host up at the same time.
// The plugin is compiled once for the test binary (hosttest shares the code), each closed
// host keeps nothing reachable, and the binary's peak RSS stays within maxPeakRSS.
func TestManyHosts(t *testing.T) {
	wasm := hosttest.ReadFile(t, "../../plugins/authz/authz.wasm")
	t.Run("group", func(t *testing.T) {
		for i := range manyHosts {
			t.Run(strconv.Itoa(i), func(t *testing.T) {
				t.Parallel()
				h := hosttest.New(t)
				owner := fmt.Sprintf("user%d", i)
				// Each test has its own policy: viewers may delete in odd tests only.
				cfg := map[string]string{}
				if i%2 == 1 {
					cfg["role.viewer"] = "read,delete"
				}
				// The start budget is a minute, not sandbox.DefaultStartTimeout: 300 standard-Go
				// inits at once, each host running its own, take longer than 10 s on a loaded
				// 2-CPU machine under the race detector. The budget is not what this test is
				// about (the sandbox's start-deadline tests are).
				limits := sandbox.Limits{StartTimeout: time.Minute}
				hosttest.LoadPlugin(t, h, host.Plugin{Name: "authz", Wasm: wasm, Config: cfg, Limits: limits})
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				got, err := policy.Checker{Host: h}.Allowed(ctx, "alice", []string{"viewer"}, "delete", owner)
				if err != nil {
					t.Fatal(err)
				}
				if want := i%2 == 1; got != want {
					t.Fatalf("allowed = %v, want %v", got, want)
				}
			})
		}
	})
	peak, err := peakRSS()
	if err != nil {
		t.Logf("peak RSS unknown: %v", err) // not Linux: nothing to check
		return
	}
	t.Logf("%d hosts, -parallel %d: peak RSS %d MiB", manyHosts, parallelism(), peak>>20)
	if peak > maxPeakRSS {
		t.Fatalf("peak RSS %d MiB, want at most %d MiB", peak>>20, maxPeakRSS>>20)
	}
}

// peakRSS reads the process's peak resident set (VmHWM) on Linux.
func peakRSS() (int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var kb int64
		if _, err := fmt.Sscanf(sc.Text(), "VmHWM: %d kB", &kb); err == nil {
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/self/status")
}
