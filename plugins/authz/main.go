// Command authz is an RBAC/ABAC authorization policy plugin for wasmvisor: handler "evaluate"
// decides whether a subject may take an action on a resource, with human-readable reasons.
// Roles, owner rights and defaults come from the plugin's config; see README.md.
package main

import (
	sdk "github.com/wasmvisor/wasmvisor/sdk/go"
)

var (
	decisions  = sdk.NewCounter("decisions_total")
	allows     = sdk.NewCounter("allow_total")
	denies     = sdk.NewCounter("deny_total")
	invalids   = sdk.NewCounter("invalid_total")
	inputBytes = sdk.NewHistogram("input_bytes", []float64{64, 128, 256, 512, 1024, 4096, 16384})

	// policy is the policy of the applied config; before the first config, the defaults.
	policy = mustPolicy(sdk.ConfigView{})
)

func init() {
	sdk.Handle("evaluate", evaluate)
	sdk.OnConfigChange(applyConfig)
	warm()
}

// warmRequest is a typical request, decided once at init by warm.
const warmRequest = `{"subject":{"id":"warm-up-subject","roles":["admin","editor","viewer","auditor"]},` +
	`"action":"delete","resource":{"type":"document","id":"warm-up-document","owner":"warm-up-owner"}}`

// warm decides warmRequest once at init, without counting it or emitting its event, so that
// the buffers a decision reuses (the request's roles, the scratch space, the output and the
// event) exist in the state every instance starts from: the snapshot an instance is restored
// from, and the checkpoint an instance-per-call reset rewinds to. A fresh instance then
// decides without allocating, as a warm one does (BENCHMARKS.md, "host: instance per call").
func warm() {
	if DecodeRequest([]byte(warmRequest), &req) != nil {
		panic("authz: the warm-up request does not decode")
	}
	w := sdk.JSONWriter{Buf: out[:0]}
	allow := policy.Decide(&w, &req, &scratch)
	out = w.Buf
	event = appendEvent(event[:0], &req, allow)
	req = Request{Roles: req.Roles[:0]}
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
	sdk.Logf(sdk.LevelInfo, "authz: policy applied: %d roles", len(p.roles))
	return nil
}

// The guest runs one call at a time: the request, the scratch memory and the event's buffer
// are reused from call to call.
var (
	req     Request
	scratch Scratch
	event   []byte
	out     = make([]byte, 0, outCap)
)

// outCap is the output buffer's first capacity: most decisions fit.
const outCap = 256

func evaluate(input []byte) ([]byte, error) {
	inputBytes.Observe(float64(len(input)))
	if err := DecodeRequest(input, &req); err != nil {
		invalids.Inc()
		return nil, sdk.InvalidInput(err)
	}
	// The output is built in the same buffer every call: the host has copied the previous
	// one by the time the next call starts (sdk.Handle).
	w := sdk.JSONWriter{Buf: out[:0]}
	allow := policy.Decide(&w, &req, &scratch)
	if cap(w.Buf) <= 4<<10 {
		out = w.Buf // a huge one is not held on to
	}
	decisions.Inc()
	if allow {
		allows.Inc()
	} else {
		denies.Inc()
	}
	ev := appendEvent(event[:0], &req, allow)
	sdk.Emit("decision", ev) // copied
	if cap(ev) <= 4<<10 {
		event = ev // kept for the next call; a huge one is not held on to
	}
	return w.Buf, nil
}

// appendEvent appends the payload of a "decision" event:
// {"subject":…,"action":…,"type":…,"resource":…,"allow":…}. It appends the constant parts as
// they are rather than through sdk.JSONWriter: in the guest every call counts, and the event
// costs more than the decision otherwise (BENCHMARKS.md, "Decisions against OPA").
func appendEvent(dst []byte, req *Request, allow bool) []byte {
	dst = sdk.AppendJSONBytes(append(dst, `{"subject":`...), req.SubjectID)
	dst = sdk.AppendJSONBytes(append(dst, `,"action":`...), req.Action)
	dst = sdk.AppendJSONBytes(append(dst, `,"type":`...), req.Type)
	dst = sdk.AppendJSONBytes(append(dst, `,"resource":`...), req.ID)
	if allow {
		return append(dst, `,"allow":true}`...)
	}
	return append(dst, `,"allow":false}`...)
}
