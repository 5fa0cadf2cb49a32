//go:build race

package e2e

// raceEnabled: this test binary runs under the race detector, and builds the binary its
// end-to-end tests run with it too (see built).
const raceEnabled = true
