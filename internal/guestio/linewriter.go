package guestio

import (
	"bytes"
	"errors"
	"sync/atomic"

	"go.uber.org/zap"
)

// MaxLine bounds one line of guest output or log; a longer one is logged in pieces of MaxLine
// bytes, each a record of its own.
const MaxLine = 4096

// ErrStopped is returned by LineWriter.Write when the operation in progress has been stopped
// (see ScopeConfig.Stopped): the guest's write fails, and what it wrote is dropped and counted.
var ErrStopped = errors.New("guestio: the operation was stopped")

// LineWriter turns a guest's stdout or stderr into log lines: never the host's own streams.
// What its Meter refuses is dropped, counted and reported; Write always reports the whole
// write as done (unless the operation was stopped), so that a guest does not retry it.
//
// Cost: each byte kept is scanned once and copied at most twice (into the line buffer, into
// the log entry); a byte dropped is never touched. A write is O(1) besides what it keeps.
type LineWriter struct {
	log       *zap.Logger
	m         *Meter
	truncated *atomic.Uint64 // counts lines cut at MaxLine; may be nil

	// Guarded by the meter's lock (a LineWriter has a meter of its own).
	buf    []byte // the line so far, at most MaxLine bytes
	copied int64  // bytes copied into buf, for the tests of linear time
}

// NewLineWriter returns a writer logging each line to log with the field stream=the meter's
// stream, within the meter's limits.
func NewLineWriter(log *zap.Logger, m *Meter, truncated *atomic.Uint64) *LineWriter {
	return &LineWriter{log: log, m: m, truncated: truncated}
}

// Init makes w, a zero LineWriter that is part of a larger value, what NewLineWriter
// returns.
func (w *LineWriter) Init(log *zap.Logger, m *Meter, truncated *atomic.Uint64) {
	w.log, w.m, w.truncated = log, m, truncated
}

// Write logs each complete line; a line longer than MaxLine is logged in pieces and counted.
func (w *LineWriter) Write(b []byte) (int, error) {
	n := len(b)
	if n == 0 {
		return 0, nil
	}
	m := w.m
	if m.s.stopped != nil && m.s.stopped() {
		m.mu.Lock()
		rep, ok := m.drop(m.s.clock(), Drop{Bytes: uint64(n), Records: 1, Stopped: true})
		m.mu.Unlock()
		if ok {
			m.s.emit(rep)
		}
		return 0, ErrStopped
	}
	m.mu.Lock()
	now := m.s.clock()
	m.roll(now)
	byteRoom, lineRoom, opLimited := m.room()
	keep := b[:min(int64(n), byteRoom)]
	used, lines, discarded, halted := w.split(keep, lineRoom)
	if halted { // stopped between two lines: the rest is dropped, and the guest unwinds
		m.charge(int64(used), lines)
		rep, ok := m.drop(now, Drop{Bytes: uint64(n - used + discarded), Records: 1, Stopped: true})
		m.mu.Unlock()
		if ok {
			m.s.emit(rep)
		}
		return used, ErrStopped
	}
	if used < n && len(w.buf) > 0 { // cut: the line so far ends here
		if lines < lineRoom {
			w.emit(nil)
			lines++
		} else {
			discarded += len(w.buf)
			w.buf = w.buf[:0]
		}
	}
	m.charge(int64(used), lines)
	var rep Drop
	var report bool
	if dropped := n - used + discarded; dropped > 0 {
		rep, report = m.drop(now, Drop{Bytes: uint64(dropped), Records: 1, Op: opLimited, Window: !opLimited})
	}
	m.mu.Unlock()
	if report {
		m.s.emit(rep)
	}
	return n, nil
}

// split logs the lines of b, at most room of them (pieces of a long line included). It
// returns how many bytes of b it consumed (logged or buffered), how many lines it logged, and
// how many buffered bytes of an earlier write it discarded when the room ran out. Before each
// line it checks whether the operation was stopped, so that a large write to a slow log ends
// with its operation (halted: the rest of b is not consumed).
func (w *LineWriter) split(b []byte, room int64) (used int, lines int64, discarded int, halted bool) {
	total := len(b)
	stopped := func() bool { return w.m.s.stopped != nil && w.m.s.stopped() }
	for len(b) > 0 {
		j := bytes.IndexByte(b, '\n')
		seg := b
		if j >= 0 {
			seg = b[:j]
		}
		for len(w.buf)+len(seg) > MaxLine { // a piece of a long line
			if lines == room {
				discarded = len(w.buf)
				w.buf = w.buf[:0]
				return total - len(b), lines, discarded, false
			}
			if stopped() {
				return total - len(b), lines, 0, true
			}
			k := MaxLine - len(w.buf)
			w.emit(seg[:k])
			if w.truncated != nil {
				w.truncated.Add(1)
			}
			lines++
			seg, b = seg[k:], b[k:]
		}
		if j < 0 {
			w.buf = append(w.buf, seg...)
			w.copied += int64(len(seg))
			return total, lines, 0, false
		}
		if lines == room {
			discarded = len(w.buf)
			w.buf = w.buf[:0]
			return total - len(b), lines, discarded, false
		}
		if stopped() {
			return total - len(b), lines, 0, true
		}
		w.emit(seg)
		lines++
		b = b[len(seg)+1:]
	}
	return total, lines, 0, false
}

// emit logs the line so far followed by tail, and empties the buffer.
func (w *LineWriter) emit(tail []byte) {
	line := tail
	if len(w.buf) > 0 {
		w.buf = append(w.buf, tail...)
		w.copied += int64(len(tail))
		line = w.buf
	}
	// A copy: a core may keep the field after Write returns, and both sources are reused.
	w.log.Info("guest output", zap.String("stream", w.m.stream), zap.String("line", string(line)))
	w.buf = w.buf[:0]
}

// Flush logs a last line that had no newline, if the meter allows one more line; otherwise it
// is dropped and counted.
func (w *LineWriter) Flush() {
	m := w.m
	m.mu.Lock()
	if len(w.buf) == 0 {
		m.mu.Unlock()
		return
	}
	now := m.s.clock()
	m.roll(now)
	var rep Drop
	var report bool
	if _, lines, opLimited := m.room(); lines > 0 {
		w.emit(nil)
		m.charge(0, 1) // its bytes were charged when they came
	} else {
		rep, report = m.drop(now, Drop{Bytes: uint64(len(w.buf)), Records: 1, Op: opLimited, Window: !opLimited})
		w.buf = w.buf[:0]
	}
	m.mu.Unlock()
	if report {
		m.s.emit(rep)
	}
}
