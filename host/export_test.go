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
