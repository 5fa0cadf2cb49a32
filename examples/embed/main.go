// Command embed runs the authz policy plugin inside a Go program: a host with a pool of two
// instances, a config change at run time, a crash that the host survives, and the host's
// metrics.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

func main() {
	wasm := flag.String("wasm", "../../plugins/authz/authz.wasm", "the authz plugin")
	cache := flag.String("cache", "", "compilation cache directory (optional)")
	flag.Parse()
	if err := run(context.Background(), os.Stdout, *wasm, *cache); err != nil {
		fmt.Fprintln(os.Stderr, "embed:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, w io.Writer, wasmPath, cacheDir string) error {
	opts := []host.Option{host.WithLogger(zap.NewNop())}
	if cacheDir != "" {
		opts = append(opts, host.WithCacheDir(cacheDir))
	}
	h, err := host.New(ctx, opts...) // one service context; no globals
	if err != nil {
		return err
	}
	defer h.Close(ctx)

	if err := h.Load(ctx, host.Plugin{
		Name:      "authz",
		Path:      wasmPath,
		Config:    map[string]string{"default": "deny"},
		Limits:    sandbox.Limits{MemoryPages: 512, CallTimeout: 500 * time.Millisecond},
		Instances: 2,
	}); err != nil {
		return err
	}

	req := []byte(`{"subject":{"id":"alice","roles":["viewer"]},"action":"delete","resource":{"type":"document","id":"42","owner":"bob"}}`)
	out, err := h.Call(ctx, "authz", "evaluate", req)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "before: %s\n", out)

	// Change the policy at run time: every instance gets it, and every future one.
	if err := h.Configure(ctx, "authz", map[string]string{"role.viewer": "read,delete"}); err != nil {
		return err
	}
	out, err = h.Call(ctx, "authz", "evaluate", req)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "after:  %s\n", out)

	// A refused config is reported and changes nothing.
	err = h.Configure(ctx, "authz", map[string]string{"colour": "blue"})
	var ge *sandbox.GuestError
	fmt.Fprintf(w, "refused config: %v\n", errors.As(err, &ge))

	// Kill an instance: the supervisor replaces it, with the config the host keeps.
	hd, err := h.Lookup(ctx, "authz", 0)
	if err != nil {
		return err
	}
	hd.Kill()
	<-hd.Done()
	succ, err := h.Lookup(ctx, "authz", 0) // waits for the successor
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "new incarnation: %v\n", succ.Incarnation() > hd.Incarnation())
	out, err = succ.Call(ctx, "evaluate", req)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "after a crash: %s\n", out)
	info, err := h.Plugin("authz")
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "restarts: %d\n", info.Restarts)

	mfs, err := h.Metrics().Gather()
	if err != nil {
		return err
	}
	for _, mf := range mfs {
		if mf.GetName() == "wasmvisor_calls_total" {
			fmt.Fprintf(w, "calls: %v\n", mf.GetMetric()[0].GetCounter().GetValue())
		}
	}
	return h.Close(ctx)
}
