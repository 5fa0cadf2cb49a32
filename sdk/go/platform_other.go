//go:build !wasip1

package sdk

// On a native build there is no host: the imports are no-ops (publish accepts, abort returns)
// and guest addresses come from a model of linear memory, so that a plugin's main package
// builds, vets and unit-tests natively. The SDK's own tests use a recording platform.

func newPlatform() platform { return &modelPlatform{} }
