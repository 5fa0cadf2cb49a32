// Command conformance is the Go build of the conformance plugin: it implements exactly the
// handler list and semantics of the WAT reference plugin (plugins/reference/), so that one
// conformance table runs against every guest language. See README.md.
package main

import (
	"bytes"
	"errors"
	"os"
	"strconv"

	sdk "github.com/wasmvisor/wasmvisor/sdk/go"
)

var (
	requests = sdk.NewCounter("requests_total")
	level    = sdk.NewGauge("level")
	size     = sdk.NewHistogram("size", []float64{1, 10, 100, 1000})

	changes int    // accepted config changes
	marker  []byte // set by "set", returned by "get"
	hoard   [][]byte
)

var errBadNumber = sdk.InvalidInput(errors.New("bad number"))

// The reference plugin's fixed sizes, which are part of the conformance semantics.
const (
	ringSlots     = 16   // event ring slots
	maxEvent      = 256  // topic + payload; larger events are counted as dropped
	maxConfig     = 4096 // encoded config; larger is "config too large"
	maxMarkerSize = 256
)

func init() {
	sdk.SetEventCapacity(ringSlots)
	sdk.SetMaxEventSize(maxEvent)

	sdk.Handle("echo", func(in []byte) ([]byte, error) { return in, nil })
	sdk.Handle("config_get", configGet)
	sdk.Handle("config_changes", func([]byte) ([]byte, error) { return strconv.AppendInt(nil, int64(changes), 10), nil })
	sdk.Handle("emit", func(in []byte) ([]byte, error) {
		topic, data := split(in)
		sdk.Emit(topic, data)
		return nil, nil
	})
	sdk.Handle("publish", func(in []byte) ([]byte, error) {
		topic, data := split(in)
		if err := sdk.Publish(topic, data); err != nil {
			return []byte("1"), nil
		}
		return []byte("0"), nil
	})
	sdk.Handle("count", count)
	sdk.Handle("gauge", gauge)
	sdk.Handle("observe", observe)
	sdk.Handle("fail", func(in []byte) ([]byte, error) {
		if len(in) == 0 {
			return nil, errors.New("failed")
		}
		return nil, errors.New(string(in))
	})
	sdk.Handle("trap", func([]byte) ([]byte, error) { panic("trap") })
	sdk.Handle("loop", loop)
	sdk.Handle("grow", grow)
	sdk.Handle("set", func(in []byte) ([]byte, error) {
		if len(in) > maxMarkerSize {
			return nil, sdk.InvalidInput(errors.New("too long"))
		}
		marker = bytes.Clone(in)
		return nil, nil
	})
	sdk.Handle("get", func([]byte) ([]byte, error) { return marker, nil })
	sdk.Handle("exit", func(in []byte) ([]byte, error) {
		code, ok := parseUint(in, 32)
		if !ok {
			return nil, errBadNumber
		}
		os.Exit(int(code))
		return nil, nil
	})
	sdk.Handle("log", func(in []byte) ([]byte, error) {
		sdk.Log(sdk.LevelInfo, string(in))
		return nil, nil
	})
	sdk.Handle("stdout", func(in []byte) ([]byte, error) {
		if _, err := os.Stdout.Write(in); err != nil {
			return nil, errors.New("write failed")
		}
		return nil, nil
	})
	sdk.Handle("host_call", func(in []byte) ([]byte, error) {
		name, arg, _ := bytes.Cut(in, []byte("\n"))
		out, err := sdk.HostCall(string(name), arg)
		var hf *sdk.HostFuncError
		switch {
		case errors.Is(err, sdk.ErrHostFuncDenied):
			return nil, errors.New("denied: " + string(name))
		case errors.As(err, &hf):
			return nil, errors.New("failed: " + hf.Message)
		}
		return out, err
	})

	sdk.OnConfigChange(func(old, new sdk.ConfigView) error {
		if _, ok := new.Get("reject"); ok {
			return errors.New("rejected by plugin")
		}
		if encodedSize(new) > maxConfig {
			return errors.New("config too large")
		}
		changes++
		return nil
	})
	sdk.OnEvent(func(topic string, data []byte) error {
		sdk.Emit(topic, data)
		return nil
	})
}

func main() {} // a reactor: never called

func configGet(key []byte) ([]byte, error) {
	v, ok := sdk.Config().Get(string(key))
	if !ok {
		return nil, errors.New("missing key")
	}
	return []byte(v), nil
}

// encodedSize is the size of c in the ABI's config encoding.
func encodedSize(c sdk.ConfigView) int {
	n := 4
	for _, k := range c.Keys() {
		v, _ := c.Get(k)
		n += 8 + len(k) + len(v)
	}
	return n
}

// split splits "topic\npayload" at the first newline; without one, all of in is the topic.
func split(in []byte) (string, []byte) {
	topic, data, _ := bytes.Cut(in, []byte{'\n'})
	return string(topic), data
}

// parseUint parses a non-empty string of ASCII digits that fits in bits bits.
func parseUint(in []byte, bits int) (uint64, bool) {
	if len(in) == 0 {
		return 0, false
	}
	for _, c := range in {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(string(in), 10, bits)
	return n, err == nil
}

func count(in []byte) ([]byte, error) {
	n := uint64(1)
	if len(in) > 0 {
		var ok bool
		if n, ok = parseUint(in, 64); !ok {
			return nil, errBadNumber
		}
	}
	requests.Add(n)
	return nil, nil
}

func gauge(in []byte) ([]byte, error) {
	neg := len(in) > 0 && in[0] == '-'
	digits := in
	if neg {
		digits = in[1:]
	}
	u, ok := parseUint(digits, 64)
	if !ok || !neg && u > 1<<63-1 || neg && u > 1<<63 {
		return nil, errBadNumber
	}
	v := float64(u)
	if neg {
		v = -v
	}
	level.Set(v)
	return nil, nil
}

func observe(in []byte) ([]byte, error) {
	u, ok := parseUint(in, 64)
	if !ok {
		return nil, errBadNumber
	}
	size.Observe(float64(u))
	return nil, nil
}

// loop never returns: the host's deadline must end it.
func loop([]byte) ([]byte, error) {
	for { //nolint:staticcheck // SA5002: spinning is the point
	}
}

// grow allocates and retains 1 MiB slices until the host's memory limit ends the instance.
func grow([]byte) ([]byte, error) {
	for {
		b := make([]byte, 1<<20)
		b[len(b)-1] = 1
		hoard = append(hoard, b)
	}
}
