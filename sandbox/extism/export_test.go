package extism

// OnCall makes i call f, on the call's goroutine, each time a call is about to run the guest:
// tests wait on it instead of polling for a busy instance, and f may block to hold the call
// there. Call it before the call starts. It is defined in a test file: the library has no
// such hook.
func OnCall(i *Instance, f func()) { i.callHook = f }

// InstanceOf returns the Instance of a runner that Format's code made.
func InstanceOf(r any) *Instance { return r.(*runner).Instance }
