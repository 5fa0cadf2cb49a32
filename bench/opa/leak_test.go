package opa

import (
	"testing"

	"go.uber.org/goleak"
)

// The hosts of the tests start goroutines; every one of them must be gone when the tests end.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
