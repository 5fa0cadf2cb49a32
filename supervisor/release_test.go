package supervisor_test

import (
	"context"
	"runtime"
	"testing"
	"weak"

	"github.com/wasmvisor/wasmvisor/supervisor"
)

// A stopped supervisor keeps none of its children's specs: whatever their Start functions
// hold can be freed while the Supervisor stays reachable (a host's root, held by a closed
// host that a test's cleanup keeps).
func TestStoppedSupervisorReleasesChildren(t *testing.T) {
	ctx := context.Background()
	run := func(b *[1 << 20]byte) func(context.Context, func()) error { // holds b while referenced
		return func(ctx context.Context, ready func()) error {
			_ = b[0]
			ready()
			<-ctx.Done()
			return nil
		}
	}
	big, dyn := new([1 << 20]byte), new([1 << 20]byte)
	wBig, wDyn := weak.Make(big), weak.Make(dyn)
	staticStart, dynStart := supervisor.Func(run(big)), supervisor.Func(run(dyn))
	s, err := supervisor.New(supervisor.Config{Strategy: supervisor.OneForOne},
		supervisor.Spec{ID: "static", Start: staticStart})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StartChild(ctx, supervisor.Spec{ID: "dynamic", Start: dynStart}); err != nil {
		t.Fatal(err)
	}
	runtime.GC() // big and dyn are held by the specs only
	if wBig.Value() == nil || wDyn.Value() == nil {
		t.Fatal("a running supervisor lost its children's state")
	}
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	if wBig.Value() != nil {
		t.Error("a stopped supervisor keeps its static child's spec")
	}
	if wDyn.Value() != nil {
		t.Error("a stopped supervisor keeps its dynamic child's spec")
	}
	runtime.KeepAlive(s)
}
