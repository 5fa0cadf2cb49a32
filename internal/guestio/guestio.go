// Package guestio holds what the two guest runtimes (package sandbox for wasmvisor-ABI plugins,
// package extism for Extism-PDK plugins) share in reading a guest: its stdout and stderr as
// log lines, the budgets that bound every stream of guest output (stdout, stderr, the log
// import, publishes), and wazero's trap messages.
//
// Every stream is metered (Meter): what one operation and what one second may write, in bytes
// and in records. The excess is dropped at O(1) cost per write, counted, and reported once
// (Scope). Nothing the guest writes is scanned beyond what is kept.
package guestio

import (
	"strings"
)

// Trap splits wazero's error message for a trap, "wasm error: KIND\nwasm stack trace:\n\t...":
// first is the first line, kind the text after "wasm error: " (empty when the message is not
// of that form), stack the frames, innermost first.
func Trap(msg string) (first, kind string, stack []string) {
	first, _, _ = strings.Cut(msg, "\n")
	kind, _ = strings.CutPrefix(first, "wasm error: ")
	if kind == first {
		kind = ""
	}
	return first, kind, Stack(msg)
}

// Stack returns the frames of wazero's "wasm stack trace:" section of msg, if any.
func Stack(msg string) []string {
	_, trace, ok := strings.Cut(msg, "wasm stack trace:\n")
	if !ok {
		return nil
	}
	var frames []string
	for _, l := range strings.Split(trace, "\n") {
		l = strings.TrimSpace(l)
		if l == "" {
			break
		}
		frames = append(frames, l)
	}
	return frames
}
