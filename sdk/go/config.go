package sdk

import (
	"bytes"
	"sort"

	"github.com/wasmvisor/wasmvisor/abi"
)

// ConfigView is an immutable view of a plugin's config: string keys to string values. The zero
// value is the empty config. A view never changes; a new config is a new view.
type ConfigView struct {
	m    map[string]string
	keys []string // ascending
}

// NewConfigView returns a view of a copy of m (useful in tests of config callbacks).
func NewConfigView(m map[string]string) ConfigView {
	v := ConfigView{m: make(map[string]string, len(m)), keys: make([]string, 0, len(m))}
	for k, val := range m {
		v.m[k] = val
		v.keys = append(v.keys, k)
	}
	sort.Strings(v.keys)
	return v
}

// Get returns the value of key and whether it is set.
func (v ConfigView) Get(key string) (string, bool) {
	val, ok := v.m[key]
	return val, ok
}

// Keys returns the keys in ascending byte order, in a new slice.
func (v ConfigView) Keys() []string { return append([]string(nil), v.keys...) }

// Len returns the number of keys.
func (v ConfigView) Len() int { return len(v.keys) }

// configStore is the applied config: its encoding (what config_ptr/config_len point at) and
// its decoded view. raw is nil until the first successful wasmvisor_configure.
type configStore struct {
	raw  []byte
	view ConfigView
}

// emptyConfig is the encoding of the empty config.
var emptyConfig = []byte{0, 0, 0, 0}

// configure is wasmvisor_configure: it validates the encoding, decides whether the config
// changed (byte-wise; the first config counts as a change unless it is empty), runs the change
// callbacks in registration order, and applies the config unless one of them returns an error.
func (g *guest) configure(n uint32) (st abi.Status) {
	in, ok := g.input(n)
	if !ok {
		return g.fail(abi.StatusError, msgInputTooLarge)
	}
	var (
		m     = make(map[string]string)
		keys  []string
		count = uint32(0)
	)
	err := abi.WalkConfig(in, func(k, v []byte) {
		m[string(k)] = string(v)
		keys = append(keys, string(k))
		count++
	})
	if err != nil {
		return g.fail(abi.StatusConfigRejected, "malformed config")
	}
	var changed bool
	if g.config.raw == nil {
		changed = count > 0
	} else {
		changed = !bytes.Equal(in, g.config.raw)
	}
	if !changed {
		if g.config.raw == nil {
			g.config.raw = emptyConfig
			g.sync()
		}
		return g.setOut(abi.StatusOK, nil)
	}
	next := ConfigView{m: m, keys: keys}
	defer g.recoverPanic(&st)
	for _, fn := range g.onConfig {
		if err := fn(g.config.view, next); err != nil {
			return g.fail(abi.StatusConfigRejected, err.Error())
		}
	}
	g.config = configStore{raw: bytes.Clone(in), view: next}
	g.sync()
	return g.setOut(abi.StatusOK, nil)
}
