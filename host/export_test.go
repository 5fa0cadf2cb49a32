package host

// WithStopRequestHook makes the host call f each time an instance is asked to end (by a
// stop, a reset or a kill), once the request has been made and the instance drained if it
// was idle: tests wait on it instead of polling handles. It is defined in a test file: the
// library has no such option.
func WithStopRequestHook(f func(plugin string, instance int)) Option {
	return optionFunc(func(o *options) { o.stopHook = f })
}
