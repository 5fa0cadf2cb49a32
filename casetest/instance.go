package casetest

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// runInstanceCase runs c against one sandbox instance of the native ABI, with no host around
// it: no restart after a fatal error (a later step gets the same error from the same
// instance), deliveries straight into the instance, and publishes recorded by the case's own
// hook, which accepts every topic but those of refuse_publish. See CASES.md, "instance".
func (env *env) runInstanceCase(ctx context.Context, wasm []byte, c *fileCase) ([]string, error) {
	var (
		mu        sync.Mutex
		published []host.Message
	)
	mod, err := env.engine.Compile(ctx, wasm, sandbox.Config{
		Limits:       c.limits,
		Capabilities: c.caps,
		HostFuncs:    env.hostFuncs,
		OnPublish: func(topic string, data []byte) bool {
			if slices.Contains(c.watch, topic) {
				mu.Lock()
				published = append(published, host.Message{Topic: topic, Data: data, From: pluginName})
				mu.Unlock()
			}
			return !slices.Contains(c.refuse, topic)
		},
	})
	var (
		inst     *sandbox.Instance
		startErr error
	)
	switch {
	case err == nil:
		defer mod.Close(context.WithoutCancel(ctx))
		if inst, startErr = mod.Instantiate(ctx, c.config); startErr == nil {
			defer inst.Close(context.WithoutCancel(ctx))
		}
	case sandbox.Kind(err) == sandbox.KindMemoryLimit:
		startErr = err // the module needs more memory than the case's limit: as a host's Load
	default:
		return nil, err // not a module of the native ABI, or an invalid capability
	}
	take := func() []host.Message {
		mu.Lock()
		defer mu.Unlock()
		p := published
		published = nil
		return p
	}
	do := func(s *step) ([]byte, error) {
		take() // what earlier steps published without a published expectation
		switch s.kind {
		case stepConfigure:
			return nil, inst.Configure(ctx, s.config)
		case stepDeliver:
			return nil, inst.Deliver(ctx, s.topic, s.data)
		}
		return inst.Call(ctx, s.handler, s.input)
	}
	read := func() (stores, error) {
		// The host's bound on one listing's reads.
		b := &sandbox.Budget{Bytes: host.DefaultReadBudgetBytes, Records: host.DefaultReadBudgetRecords}
		var (
			st  stores
			err error
		)
		if st.metrics, err = inst.TelemetryWithin(b); err != nil {
			return st, err
		}
		if st.applied, err = inst.AppliedConfigWithin(b); err != nil {
			return st, err
		}
		log, err := inst.EventsWithin(0, b)
		if err == nil && (b.Skipped > 0 || log.Remaining > 0) {
			err = fmt.Errorf("%d records over the read budget: %w", b.Skipped+int(log.Remaining), sandbox.ErrReadBudget)
		}
		st.events = log.Events
		return st, err
	}
	return runSteps(c, startErr, do, take, read), nil
}
