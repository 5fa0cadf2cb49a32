// Command validate is a request validation policy plugin for wasmvisor: handler "validate"
// (alias "evaluate") checks a described HTTP request against a method/path allow-list,
// required headers, a body size limit and JSON field checks, and answers allow or deny with
// reasons, an HTTP status and a decision header to set. See README.md.
package main

import (
	"strconv"

	sdk "github.com/wasmvisor/wasmvisor/sdk/go"
)

var (
	decisions = sdk.NewCounter("decisions_total")
	allows    = sdk.NewCounter("allow_total")
	denies    = sdk.NewCounter("deny_total")
	invalids  = sdk.NewCounter("invalid_total")
	bodyBytes = sdk.NewHistogram("body_bytes", []float64{0, 256, 1024, 4096, 16384, 65536, 262144, 1048576})

	// policy is the policy of the applied config; before the first config, the defaults.
	policy = mustPolicy(sdk.ConfigView{})
)

func init() {
	sdk.Handle("validate", validate)
	sdk.Handle("evaluate", validate)
	sdk.OnConfigChange(applyConfig)
}

func main() {} // a reactor: never called

func mustPolicy(cfg sdk.ConfigView) *Policy {
	p, err := ParsePolicy(cfg)
	if err != nil {
		panic(err)
	}
	return p
}

// applyConfig replaces the policy, or rejects a config that does not parse (the old policy
// stays).
func applyConfig(_, cfg sdk.ConfigView) error {
	p, err := ParsePolicy(cfg)
	if err != nil {
		return err
	}
	policy = p
	sdk.Logf(sdk.LevelInfo, "validate: policy applied: %d routes, %d field rules", len(p.routes), len(p.fields))
	return nil
}

// The guest runs one call at a time: the request, the scratch memory, the output and the
// event's buffer are reused from call to call.
var (
	req     Request
	scratch Scratch
	event   []byte
	out     = make([]byte, 0, outCap)
)

// outCap is the output buffer's first capacity: most decisions fit.
const outCap = 512

func validate(input []byte) ([]byte, error) {
	err := DecodeRequest(input, &req)
	if cap(req.Headers) > 1024 || cap(req.upper) > 4<<10 {
		defer func() { req = Request{} }() // huge ones are not held on to
	}
	if err != nil {
		invalids.Inc()
		return nil, sdk.InvalidInput(err)
	}
	bodyBytes.Observe(float64(req.size()))
	// The output is built in the same buffer every call: the host has copied the previous
	// one by the time the next call starts (sdk.Handle).
	o, d := policy.Evaluate(out[:0], &req, &scratch)
	if cap(o) <= 4<<10 {
		out = o // a huge one is not held on to
	}
	decisions.Inc()
	if d.Allow {
		allows.Inc()
	} else {
		denies.Inc()
	}
	ev := appendEvent(event[:0], &req, d, o[d.reasonsStart:d.reasonsEnd])
	sdk.Emit("decision", ev) // copied
	if cap(ev) <= 4<<10 {
		event = ev // kept for the next call; a huge one is not held on to
	}
	return o, nil
}

// appendEvent appends the payload of a "decision" event:
// {"method":…,"path":…,"allow":…,"status":… (when denied),"reasons":[…]}, the reasons those
// of the output (reasons, a JSON array's elements).
func appendEvent(dst []byte, req *Request, d Decision, reasons []byte) []byte {
	dst = sdk.AppendJSONBytes(append(dst, `{"method":`...), req.Method)
	dst = sdk.AppendJSONBytes(append(dst, `,"path":`...), req.Path)
	dst = strconv.AppendBool(append(dst, `,"allow":`...), d.Allow)
	if d.Status != 0 {
		dst = strconv.AppendInt(append(dst, `,"status":`...), int64(d.Status), 10)
	}
	dst = append(append(dst, `,"reasons":[`...), reasons...)
	return append(dst, "]}"...)
}
