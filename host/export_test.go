package host

import "context"

// WithStopRequestHook makes the host call f each time an instance is asked to end (by a
// stop, a reset or a kill), once the request has been made and the instance drained if it
// was idle: tests wait on it instead of polling handles. It is defined in a test file: the
// library has no such option.
func WithStopRequestHook(f func(plugin string, instance int)) Option {
	return optionFunc(func(o *options) { o.stopHook = f })
}

// WithResetHook makes the host call f in each instance reset (InstancePerCall) before the
// fresh instance is made, with the reset's context, which ends when the member does: tests
// hold a reset in flight with it. A test file's option, as WithStopRequestHook.
func WithResetHook(f func(ctx context.Context)) Option {
	return optionFunc(func(o *options) { o.resetHook = f })
}

// WithResetDoneHook makes the host call f after each instance reset (InstancePerCall) has
// installed its fresh instance: benchmarks time a call on a pool that has caught up with it.
func WithResetDoneHook(f func()) Option {
	return optionFunc(func(o *options) { o.resetDone = f })
}

// StopLandsOnReset does to plugin name's member in slot i what a stop does when it lands while
// the member's reset (InstancePerCall) is reading its old instance: the member is asked to
// end, and its drain finds the instance busy, so that the instance is only retired once the
// read leaves it. Here the instance is idle (the caller is a WithResetHook hook, before the
// reset touches it) and Retire retires it at once, the same state, without the timing.
func StopLandsOnReset(h *Host, name string, i int) {
	p, err := h.lookup(name)
	if err != nil {
		panic(err)
	}
	m := p.slots[i].m.Load()
	m.reason.Store(reasonShutdown)
	m.state.CompareAndSwap(stLive, stStopReq)
	m.in().Retire()
}
