package host

import (
	"errors"

	"github.com/wasmvisor/wasmvisor/sandbox"
)

// Host error kinds: the names Kind gives the host's own errors, beside the sandbox's
// (sandbox.KindTrap, sandbox.KindMemoryLimit…), in the same snake_case vocabulary.
const (
	KindQuarantined   = "quarantined"      // ErrPluginFailed: the plugin is quarantined
	KindPoisonInput   = "poison_input"     // ErrPoisonInput: the input ended instances too often
	KindNoInstance    = "no_instance"      // ErrNoInstance: no instance became free in time
	KindNotFound      = "not_found"        // ErrNotFound: no such plugin
	KindClosed        = sandbox.KindClosed // ErrClosed: the host is closed
	KindAlreadyLoaded = "already_loaded"   // ErrAlreadyLoaded
	KindDependency    = "dependency"       // ErrDependency
	KindInvalidPlugin = "invalid_plugin"   // ErrInvalidPlugin
	KindSeriesLimit   = "series_limit"     // ErrSeriesLimit
	KindLeak          = "leak"             // ErrLeak
	KindStale         = "stale"            // ErrStale
)

// Kind names the kind of an error the host returned: one of the host's Kind constants, or
// sandbox.Kind's name for an error of the sandbox passed through (sandbox.KindTrap…), and ""
// for nil. The refusals that ran no instance come first (quarantined, poison input, no
// instance, not found: a wait for an instance that ran out wraps the context's error, but its
// kind is no_instance), then the sandbox's kinds, then the host's other errors.
func Kind(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrPluginFailed):
		return KindQuarantined
	case errors.Is(err, ErrPoisonInput):
		return KindPoisonInput
	case errors.Is(err, ErrNoInstance):
		return KindNoInstance
	case errors.Is(err, ErrNotFound):
		return KindNotFound
	}
	if k := sandbox.Kind(err); k != sandbox.KindOther {
		return k
	}
	switch {
	case errors.Is(err, ErrClosed):
		return KindClosed
	case errors.Is(err, ErrAlreadyLoaded):
		return KindAlreadyLoaded
	case errors.Is(err, ErrDependency):
		return KindDependency
	case errors.Is(err, ErrInvalidPlugin):
		return KindInvalidPlugin
	case errors.Is(err, ErrSeriesLimit):
		return KindSeriesLimit
	case errors.Is(err, ErrLeak):
		return KindLeak
	case errors.Is(err, ErrStale):
		return KindStale
	}
	return sandbox.KindOther
}
