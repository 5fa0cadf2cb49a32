package sandbox

// OnInvoke makes i call f each time an operation is about to run the guest, on the
// operation's goroutine: tests wait on it instead of polling for a busy instance. Call it
// before the operations it should see start. It is defined in a test file: the library has
// no such hook.
func OnInvoke(i *Instance, f func()) {
	i.hook = func(p hookPoint) {
		if p == hookInvoke {
			f()
		}
	}
	i.flags.Or(flagHook)
}

// withParkHook makes the engine's watchdog call f each time it parks.
func withParkHook(f func()) Option {
	return optionFunc(func(c *engineConfig) { c.onPark = f })
}

// CompiledCodes is how many compiled modules the engine holds.
func CompiledCodes(e *Engine) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.compiled)
}

// MapsSnapshot reports whether i's memory maps its module's snapshot image copy-on-write.
func MapsSnapshot(i *Instance) bool {
	s := i.mod.snap.Load()
	return s != nil && i.lm.r != nil && i.lm.r.img == s
}

// ReservesMemory: linear memories are reserved address space here, and snapshots are
// mapped copy-on-write.
const ReservesMemory = reservesMemory

// withCopiedImages makes the engine copy snapshots into each instance instead of mapping
// them: the fallback of platforms without reserved memories.
func withCopiedImages() Option {
	return optionFunc(func(c *engineConfig) { c.copyImages = true })
}

// withMappedImages makes the engine map every snapshot's image, however small (see
// copyImagesUpTo), so that tests of the mapping can use small plugins.
func withMappedImages() Option {
	return optionFunc(func(c *engineConfig) { c.mapImages = true })
}

// WithMappedImages is withMappedImages for the external tests.
func WithMappedImages() Option { return withMappedImages() }
