// Package abi is the contract between a wasmvisor host and a guest plugin: export and import
// names, the control-block layout, status codes and encodings of ABI v1. README.md beside this
// file is the specification; this package is its Go vocabulary.
//
// The package is pure Go with no dependencies, so that both the host (package sandbox) and the
// Go guest SDK (sdk/go, built for GOOS=wasip1) use the same constants and encoders.
package abi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
)

// Version is the ABI version this package describes.
const Version = 1

// Magic is the first u32 of the control block: the bytes "wvab".
const Magic uint32 = 0x62617677

// Names of the guest's exports.
const (
	ExportMemory     = "memory"
	ExportInitialize = "_initialize"
	ExportStart      = "_start"
	ExportInit       = "wasmvisor_init"
	ExportReserve    = "wasmvisor_reserve"
	ExportCall       = "wasmvisor_call"
	ExportConfigure  = "wasmvisor_configure"
	ExportDeliver    = "wasmvisor_deliver"

	// ExportPrefix starts every export name the ABI reserves.
	ExportPrefix = "wasmvisor_"
)

// Names of the host's import module and its functions.
const (
	ImportModule  = "wasmvisor"
	ImportLog     = "log"
	ImportPublish = "publish"
	ImportAbort   = "abort"
	// Host functions (see HostFnDenied, README.md "Host functions").
	ImportHostFn     = "host_fn"
	ImportHostCall   = "host_call"
	ImportHostResult = "host_result"

	// WASIModule is WASI preview 1, whose functions are allowed by name and gated by grants.
	WASIModule = "wasi_snapshot_preview1"
)

// ValType is a Wasm value type as it appears in a function signature.
type ValType byte

// Value types used by the ABI's signatures (their binary encodings).
const (
	I32 ValType = 0x7f
	I64 ValType = 0x7e
	F32 ValType = 0x7d
	F64 ValType = 0x7c
)

func (v ValType) String() string {
	switch v {
	case I32:
		return "i32"
	case I64:
		return "i64"
	case F32:
		return "f32"
	case F64:
		return "f64"
	}
	return fmt.Sprintf("0x%02x", byte(v))
}

// Signature is a function type.
type Signature struct {
	Params, Results []ValType
}

// String renders s as "(i32, i32) -> i32".
func (s Signature) String() string {
	str := "("
	for i, p := range s.Params {
		if i > 0 {
			str += ", "
		}
		str += p.String()
	}
	str += ") -> "
	switch len(s.Results) {
	case 0:
		str += "()"
	case 1:
		str += s.Results[0].String()
	default:
		str += "("
		for i, r := range s.Results {
			if i > 0 {
				str += ", "
			}
			str += r.String()
		}
		str += ")"
	}
	return str
}

// Equal reports whether s and o are the same type.
func (s Signature) Equal(o Signature) bool {
	if len(s.Params) != len(o.Params) || len(s.Results) != len(o.Results) {
		return false
	}
	for i := range s.Params {
		if s.Params[i] != o.Params[i] {
			return false
		}
	}
	for i := range s.Results {
		if s.Results[i] != o.Results[i] {
			return false
		}
	}
	return true
}

// ExportSpec describes one function export of the ABI.
type ExportSpec struct {
	Name      string
	Signature Signature
	Required  bool
}

// Exports lists the function exports of ABI v1 (memory is checked separately).
func Exports() []ExportSpec {
	return []ExportSpec{
		{Name: ExportInitialize, Signature: Signature{}, Required: false},
		{Name: ExportInit, Signature: Signature{Results: []ValType{I32}}, Required: true},
		{Name: ExportReserve, Signature: Signature{Params: []ValType{I32}, Results: []ValType{I32}}, Required: true},
		{Name: ExportCall, Signature: Signature{Params: []ValType{I32, I32}, Results: []ValType{I32}}, Required: true},
		{Name: ExportConfigure, Signature: Signature{Params: []ValType{I32}, Results: []ValType{I32}}, Required: true},
		{Name: ExportDeliver, Signature: Signature{Params: []ValType{I32}, Results: []ValType{I32}}, Required: false},
	}
}

// Imports lists the functions of the "wasmvisor" import module with their types.
func Imports() map[string]Signature {
	return map[string]Signature{
		ImportLog:     {Params: []ValType{I32, I32, I32}},
		ImportPublish: {Params: []ValType{I32, I32, I32, I32}, Results: []ValType{I32}},
		ImportAbort:   {Params: []ValType{I32, I32}},
		// host_fn(name_ptr, name_len) -> handle (≥ 0) or HostFnDenied
		ImportHostFn: {Params: []ValType{I32, I32}, Results: []ValType{I32}},
		// host_call(handle, in_ptr, in_len) -> status << 32 | out_len
		ImportHostCall: {Params: []ValType{I32, I32, I32}, Results: []ValType{I64}},
		// host_result(dst_ptr, dst_len) -> bytes copied, or HostResultTooSmall
		ImportHostResult: {Params: []ValType{I32, I32}, Results: []ValType{I32}},
	}
}

// Status is a status code returned by the guest's exports.
type Status uint32

// Status codes of ABI v1.
const (
	StatusOK             Status = 0
	StatusError          Status = 1
	StatusUnknownHandler Status = 2
	StatusInvalidInput   Status = 3
	StatusConfigRejected Status = 4
	StatusNoMemory       Status = 5

	maxStatus = StatusNoMemory
)

// Valid reports whether s is a status code of this ABI version.
func (s Status) Valid() bool { return s <= maxStatus }

func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusError:
		return "error"
	case StatusUnknownHandler:
		return "unknown handler"
	case StatusInvalidInput:
		return "invalid input"
	case StatusConfigRejected:
		return "config rejected"
	case StatusNoMemory:
		return "no memory"
	}
	return fmt.Sprintf("status(%d)", uint32(s))
}

// Log levels of the log import.
const (
	LogDebug = 0
	LogInfo  = 1
	LogWarn  = 2
	LogError = 3
)

// Results of host_fn and host_result.
const (
	// HostFnDenied is host_fn's answer for a name the plugin was not granted (or that the
	// host does not have: the guest cannot tell the two apart).
	HostFnDenied = -1
	// HostResultTooSmall is host_result's answer when the buffer is smaller than the
	// pending output, which is then kept for a second try.
	HostResultTooSmall = -1
)

// Results of the publish import.
const (
	PublishAccepted = 0
	PublishDropped  = 1
)

// Control-block layout: offsets of each field and the block's size.
const (
	CtrlMagic        = 0
	CtrlVersion      = 4
	CtrlInPtr        = 8
	CtrlInCap        = 12
	CtrlOutPtr       = 16
	CtrlOutLen       = 20
	CtrlHandlersPtr  = 24
	CtrlHandlersLen  = 28
	CtrlConfigPtr    = 32
	CtrlConfigLen    = 36
	CtrlMetricsPtr   = 40
	CtrlMetricsCount = 44
	CtrlEventsPtr    = 48
	CtrlFlags        = 52
	CtrlSize         = 64
)

// Metric record layout.
const (
	MetricNamePtr     = 0
	MetricNameLen     = 4
	MetricKindOff     = 8
	MetricBucketCount = 12
	MetricBoundsPtr   = 16
	MetricBucketsPtr  = 20
	MetricValue       = 24
	MetricSum         = 32
	MetricSize        = 48

	// MaxBuckets bounds a histogram's bucket count.
	MaxBuckets = 64
	// MaxMetrics bounds the number of metric records a host reads.
	MaxMetrics = 1024
)

// MetricKind is the kind field of a metric record.
type MetricKind uint32

// Metric kinds.
const (
	Counter   MetricKind = 1
	Gauge     MetricKind = 2
	Histogram MetricKind = 3
)

func (k MetricKind) String() string {
	switch k {
	case Counter:
		return "counter"
	case Gauge:
		return "gauge"
	case Histogram:
		return "histogram"
	}
	return fmt.Sprintf("kind(%d)", uint32(k))
}

// Event ring layout.
const (
	RingSlotsPtr  = 0
	RingSlotCount = 4
	RingWritten   = 8
	RingDropped   = 16
	RingSize      = 32

	SlotSeq      = 0
	SlotTopicPtr = 8
	SlotTopicLen = 12
	SlotDataPtr  = 16
	SlotDataLen  = 20
	SlotSize     = 24

	// MaxSlots bounds the ring capacity a host reads.
	MaxSlots = 1 << 16
	// MaxEventSize bounds one event's topic and data together; a host refuses a slot that
	// holds more (an ABI violation).
	MaxEventSize = 64 << 10
)

// Name limits.
const (
	MaxHandlerName = 64
	MaxMetricName  = 64
	MaxHandlers    = 1024
)

// ValidHandlerName reports whether s is a valid handler name: [A-Za-z0-9_.-]{1,64}.
func ValidHandlerName(s string) bool {
	if len(s) == 0 || len(s) > MaxHandlerName {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// ValidMetricName reports whether s is a valid metric name: [a-zA-Z_][a-zA-Z0-9_]{0,63}.
func ValidMetricName(s string) bool {
	if len(s) == 0 || len(s) > MaxMetricName {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_'
		if !letter && (i == 0 || c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// ErrMalformed is returned by the decoders when bytes do not follow an ABI encoding.
var ErrMalformed = errors.New("abi: malformed encoding")

// Config is a plugin's configuration: string keys to string values.
type Config = map[string]string

// AppendConfig appends the config encoding of c to dst: a u32 count, then each key and value
// as a u32 length and bytes, keys in ascending byte order.
func AppendConfig(dst []byte, c Config) []byte {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(keys)))
	for _, k := range keys {
		v := c[k]
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(k)))
		dst = append(dst, k...)
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(v)))
		dst = append(dst, v...)
	}
	return dst
}

// DecodeConfig decodes the config encoding. Keys must be unique and ascending; the bytes must
// be consumed exactly.
func DecodeConfig(b []byte) (Config, error) {
	var c Config
	err := WalkConfig(b, func(k, v []byte) {
		if c == nil {
			c = make(Config)
		}
		c[string(k)] = string(v)
	})
	if err != nil {
		return nil, err
	}
	if c == nil {
		c = Config{}
	}
	return c, nil
}

// WalkConfig calls fn for each key and value of the config encoding b, in order, without
// allocating. It checks bounds, uniqueness and order, and that b is consumed exactly.
func WalkConfig(b []byte, fn func(key, value []byte)) error {
	if len(b) < 4 {
		return fmt.Errorf("%w: config shorter than its count", ErrMalformed)
	}
	n := binary.LittleEndian.Uint32(b)
	b = b[4:]
	var prev []byte
	for i := uint32(0); i < n; i++ {
		k, rest, ok := cut(b)
		if !ok {
			return fmt.Errorf("%w: config key %d out of bounds", ErrMalformed, i)
		}
		v, rest, ok := cut(rest)
		if !ok {
			return fmt.Errorf("%w: config value %d out of bounds", ErrMalformed, i)
		}
		if i > 0 && string(k) <= string(prev) {
			return fmt.Errorf("%w: config keys not unique and ascending at %q", ErrMalformed, k)
		}
		if fn != nil {
			fn(k, v)
		}
		prev, b = k, rest
	}
	if len(b) != 0 {
		return fmt.Errorf("%w: %d bytes after the config", ErrMalformed, len(b))
	}
	return nil
}

func cut(b []byte) (field, rest []byte, ok bool) {
	if len(b) < 4 {
		return nil, nil, false
	}
	n := binary.LittleEndian.Uint32(b)
	if uint64(n) > uint64(len(b)-4) {
		return nil, nil, false
	}
	return b[4 : 4+n], b[4+n:], true
}

// AppendDelivery appends the delivery encoding of a bus event to dst.
func AppendDelivery(dst []byte, topic string, payload []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(topic)))
	dst = append(dst, topic...)
	return append(dst, payload...)
}

// DecodeDelivery splits a delivery encoding into its topic and payload.
func DecodeDelivery(b []byte) (topic, payload []byte, err error) {
	t, rest, ok := cut(b)
	if !ok {
		return nil, nil, fmt.Errorf("%w: delivery topic out of bounds", ErrMalformed)
	}
	return t, rest, nil
}
