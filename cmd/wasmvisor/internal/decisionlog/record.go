// Package decisionlog is the decision log of `wasmvisor serve`: one Record per plugin call
// over HTTP, in the shape OPA's decision logs made familiar (decision_id, path, input,
// result, timestamp, metrics, erased), masked and bounded, then handed to sinks that never
// block the call that made it.
//
// A Logger is built once from Options (New) and closed once (Close). Log prepares a record
// (input and result kept only when configured, masked by Mask paths, truncated over
// MaxValueBytes) and offers its JSON line to each sink's bounded queue: a full queue drops the
// record and counts it, so a slow or stalled sink costs the calls nothing. The sinks are a
// rotating file (FileOptions) and an HTTP endpoint that receives batches as JSON arrays, with
// retries and backoff (HTTPOptions). The process log is the server's own: it writes its log
// line from the prepared Record.
//
// Every record dropped is counted in wasmvisor_decision_log_dropped_total{sink,reason} and
// reported in a warn log line (at most one per sink every ReportEvery). The package knows
// nothing about plugins or HTTP handlers; the server fills the records (README.md, next to this
// file, shows a record and the metrics).
package decisionlog

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"math/rand/v2"
	"time"
	"unicode/utf8"
)

// Record is one decision. The server fills every field but Erased and Truncated, which Log
// sets; after Log returns, Input and Result are what the sinks received (nil when not logged).
type Record struct {
	DecisionID string    `json:"decision_id"`
	Timestamp  time.Time `json:"timestamp"`
	// Path is "PLUGIN/HANDLER", OPA's path of the decision.
	Path    string `json:"path"`
	Plugin  string `json:"plugin"`
	Digest  string `json:"digest"`
	Handler string `json:"handler"`
	// Input is the call's body and Result the answer written (the plugin's, or the failure
	// policy's fallback). Bodies that are not JSON are logged as a JSON string.
	Input  json.RawMessage `json:"input,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	// Outcome is allow, deny, ok, error, failure_deny, failure_allow, failure_monitor or
	// canceled (the server's wasmvisor_decisions_total label).
	Outcome       string `json:"outcome"`
	ErrorKind     string `json:"error_kind,omitempty"`
	FailurePolicy string `json:"failure_policy"`
	// FailurePolicyApplied: the answer is the failure policy's, not the plugin's.
	FailurePolicyApplied bool    `json:"failure_policy_applied"`
	Status               int     `json:"status"`
	Metrics              Metrics `json:"metrics"`
	// Erased lists the mask paths that removed something; Truncated the fields (input,
	// result) cut to MaxValueBytes.
	Erased    []string `json:"erased,omitempty"`
	Truncated []string `json:"truncated,omitempty"`
}

// Metrics are a record's timers, named as OPA names them.
type Metrics struct {
	// TimerServerHandlerNs is the call's duration, from admission to the answer.
	TimerServerHandlerNs int64 `json:"timer_server_handler_ns"`
}

// NewID returns a decision ID: a UUID version 7 (RFC 9562), 48 bits of Unix milliseconds then
// 74 random bits. Time-ordered, so that a file or a backend sorts decisions by when they
// happened, and unique without coordination: two IDs of the same millisecond collide with
// probability 2^-74. The random bits come from math/rand/v2's global generator, the runtime's
// per-thread ChaCha8 seeded by the OS: unpredictable, and without crypto/rand's system call
// per ID (an ID need not be a secret). RATIONALE.md, "Decision logs".
func NewID() string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[0:8], rand.Uint64())
	binary.BigEndian.PutUint64(b[8:16], rand.Uint64())
	ms := uint64(time.Now().UnixMilli())
	for i := range 6 {
		b[i] = byte(ms >> (40 - 8*i))
	}
	b[6] = 0x70 | b[6]&0x0f // version 7
	b[8] = 0x80 | b[8]&0x3f // variant 10
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

// value returns v as a JSON value: itself when it is JSON, a JSON string of it otherwise.
func value(v []byte) json.RawMessage {
	if len(v) == 0 {
		return nil
	}
	if json.Valid(v) {
		return v
	}
	s, _ := json.Marshal(string(v))
	return s
}

// truncate cuts v to a JSON string of its first max bytes (on a UTF-8 boundary).
func truncate(v []byte, limit int) json.RawMessage {
	cut := limit
	for cut > 0 && cut < len(v) && !utf8.RuneStart(v[cut]) {
		cut--
	}
	s, _ := json.Marshal(string(v[:cut]))
	return s
}
