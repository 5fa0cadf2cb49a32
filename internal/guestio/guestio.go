// Package guestio holds what the two guest runtimes (package sandbox for wasmvisor-ABI plugins,
// package extism for Extism-PDK plugins) share in reading a guest: its stdout and stderr as
// log lines, and wazero's trap messages.
package guestio

import (
	"bytes"
	"strings"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"
)

// MaxLine bounds one line of guest output or log; a longer one is logged in pieces.
const MaxLine = 4096

// LineWriter turns a guest's stdout or stderr into log lines: never the host's own streams.
type LineWriter struct {
	log       *zap.Logger
	stream    string
	truncated *atomic.Uint64 // counts lines cut at MaxLine; may be nil

	mu  sync.Mutex
	buf []byte
}

// NewLineWriter returns a writer logging each line to log with the field stream=stream.
func NewLineWriter(log *zap.Logger, stream string, truncated *atomic.Uint64) *LineWriter {
	return &LineWriter{log: log, stream: stream, truncated: truncated}
}

// Write logs each complete line; a line longer than MaxLine is logged in pieces and counted.
func (w *LineWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(b)
	for len(b) > 0 {
		j := bytes.IndexByte(b, '\n')
		if j < 0 {
			w.buf = append(w.buf, b...)
			for len(w.buf) >= MaxLine { // a line too long: log it in MaxLine pieces
				if w.truncated != nil {
					w.truncated.Add(1)
				}
				rest := w.buf[MaxLine:]
				w.buf = w.buf[:MaxLine]
				w.emit()
				w.buf = append(w.buf, rest...)
			}
			break
		}
		w.buf = append(w.buf, b[:j]...)
		w.emit()
		b = b[j+1:]
	}
	return n, nil
}

func (w *LineWriter) emit() {
	// A copy: a core may keep the field after Write returns, and the buffer is reused.
	w.log.Info("guest output", zap.String("stream", w.stream), zap.String("line", string(w.buf)))
	w.buf = w.buf[:0]
}

// Flush logs a last line that had no newline.
func (w *LineWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.emit()
	}
}

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
