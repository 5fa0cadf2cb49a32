package sandbox

// StopRecyclingMemories makes m free every closed instance's linear memory instead of
// keeping it for the module's next instance, for the benchmarks that compare a fresh
// instance with bare wazero's, which never recycles one. It is defined in a test file: the
// library has no such switch.
func StopRecyclingMemories(m *Module) { m.mems.close() }
