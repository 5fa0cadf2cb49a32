package host

// WithStopRequestHook makes the host call f each time an instance is asked to end (by a
// stop, a reset or a kill), once the request has been made and the instance drained if it
// was idle: tests wait on it instead of polling handles. It is defined in a test file: the
// library has no such option.
func WithStopRequestHook(f func(plugin string, instance int)) Option {
	return optionFunc(func(o *options) { o.stopHook = f })
}

// Snapshots reports whether the instances of plugin name start from a snapshot, and if not,
// why not (sandbox.Module.Snapshots).
func Snapshots(h *Host, name string) (bool, string) {
	p, err := h.lookup(name)
	if err != nil {
		return false, err.Error()
	}
	m, ok := p.mod().(interface{ Snapshots() (bool, string) }) // the native format's Code
	if !ok {
		return false, "not a native module"
	}
	return m.Snapshots()
}
