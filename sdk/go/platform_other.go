//go:build !wasip1

package sdk

// On a native build there is no host: the imports are no-ops (publish accepts, abort returns)
// and guest addresses come from a model of linear memory, so that a plugin's main package
// builds, vets and unit-tests natively. The SDK's own tests use a recording platform.

func newPlatform() platform { return &modelPlatform{} }

// SetHostFunc offers fn as the host function name to this native build's stand-in host, so
// that a plugin's own unit tests can exercise HostCall. Under wasip1 the host offers the
// functions and this function does not exist.
func SetHostFunc(name string, fn func(input []byte) ([]byte, error)) {
	p := std.p.(*modelPlatform)
	for i, f := range p.fns {
		if f.name == name {
			p.fns[i].fn = fn
			return
		}
	}
	p.fns = append(p.fns, modelHostFunc{name: name, fn: fn})
}
