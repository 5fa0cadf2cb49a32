package guestio

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Unlimited, as a bound of Limits, turns that bound off.
const Unlimited int64 = -1

// Window is the length of the rate window of Limits.WindowBytes and WindowRecords: the
// "per second" of the configured limits. Windows are fixed (a new one starts at the first use
// a Window or more after the previous one started), so any Window-long span of time sees at
// most twice the window's budget.
const Window = time.Second

// Limits bound one stream of one instance: what one operation may write, and what every
// Window may. A record is a line of stdout or stderr (a piece of MaxLine bytes, for a longer
// one), a log message or a publish. Unlimited turns a bound off; zero allows nothing. The
// bounds are final values: defaults are the caller's business.
type Limits struct {
	OpBytes, OpRecords         int64
	WindowBytes, WindowRecords int64
}

// Drop reports what one stream dropped since its previous report.
type Drop struct {
	Stream string
	// Bytes is the number of bytes dropped. Records counts the records refused (log messages,
	// publishes) and, for stdout and stderr, the writes that lost bytes: the dropped part of a
	// write is never scanned, so its lines are not counted.
	Bytes, Records uint64
	// Which limits dropped them: the operation's, the window's, or the operation had been
	// stopped (its deadline, a cancel or a kill).
	Op, Window, Stopped bool
}

func (d *Drop) empty() bool { return d.Bytes == 0 && d.Records == 0 }

// Scope is what the meters of one instance share: its clock, the id of its operation in
// progress, whether that operation has been stopped, and where reports go. Make one with
// NewScope, then one Meter per stream.
//
// Reports: what a meter drops is counted at once (Meter.Dropped) and reported through Report
// at most once per Window per stream, each dropped byte in exactly one report: at the end of
// the operation that dropped it (End), or, when the stream reported less than a Window ago, at
// the first end of an operation (or the first drop during a long operation) a Window after
// that report, or at the latest by Flush.
type Scope struct {
	now     func() time.Duration // nil: the time since t0
	t0      time.Time
	op      func() uint64
	stopped func() bool
	report  func(Drop)

	pending atomic.Bool // a meter holds drops not yet reported
	mu      sync.Mutex
	meters  []*Meter
	first   [4]*Meter // meters' first array: an instance's streams need no other
}

// ScopeConfig configures NewScope.
type ScopeConfig struct {
	// Now returns monotonic time; nil means the time since NewScope.
	Now func() time.Duration
	// Op returns the id of the operation in progress (any value that changes between two
	// operations); a meter starts a fresh operation budget when it changes. nil means one
	// operation forever.
	Op func() uint64
	// Stopped reports whether the operation in progress has been stopped: its writes are then
	// dropped (counted and reported) and Write returns ErrStopped. nil means never.
	Stopped func() bool
	// Report receives the reports, on the goroutine of the operation (or of Flush), with no
	// lock held. nil drops the reports (the counts stay).
	Report func(Drop)
}

// NewScope returns a scope with c's clock, operation and report sink.
func NewScope(c ScopeConfig) *Scope {
	s := new(Scope)
	s.Init(c)
	return s
}

// Init makes s, a zero Scope that is part of a larger value (an instance's output, made in
// one allocation), what NewScope(c) returns.
func (s *Scope) Init(c ScopeConfig) {
	s.now, s.op, s.stopped, s.report = c.Now, c.Op, c.Stopped, c.Report
	if s.now == nil {
		s.t0 = time.Now()
	}
	if s.op == nil {
		s.op = noOp
	}
	s.meters = s.first[:0]
}

func noOp() uint64 { return 0 }

// clock is the scope's monotonic time.
func (s *Scope) clock() time.Duration {
	if s.now == nil {
		return time.Since(s.t0)
	}
	return s.now()
}

// Meter returns a new meter for one stream of the scope.
func (s *Scope) Meter(stream string, l Limits) *Meter {
	m := new(Meter)
	s.InitMeter(m, stream, l)
	return m
}

// InitMeter makes m, a zero Meter that is part of a larger value, what Meter(stream, l)
// returns.
func (s *Scope) InitMeter(m *Meter, stream string, l Limits) {
	m.s, m.stream, m.lim = s, stream, l
	s.mu.Lock()
	s.meters = append(s.meters, m)
	s.mu.Unlock()
}

// Pending reports whether some meter holds drops not yet reported: the owner of the
// operation calls End when it is true. It costs one atomic load.
func (s *Scope) Pending() bool { return s.pending.Load() }

// End is called when an operation ends (when Pending): each stream with drops not yet
// reported reports them, unless it reported less than a Window ago.
func (s *Scope) End() { s.sweep(false) }

// Flush reports every drop not yet reported, whenever the last report was. It is called when
// the instance closes.
func (s *Scope) Flush() { s.sweep(true) }

func (s *Scope) sweep(force bool) {
	s.mu.Lock()
	ms := s.meters
	s.mu.Unlock()
	now := s.clock()
	left := false
	for _, m := range ms {
		m.mu.Lock()
		d, ok := m.takeReport(now, force, false)
		if !ok && !m.pend.empty() {
			left = true
		}
		m.mu.Unlock()
		if ok {
			s.emit(d)
		}
	}
	if !left {
		s.pending.Store(false)
		// A meter that dropped between its check above and this store raised pending again
		// after it; check again so that the flag is never left down with drops pending.
		for _, m := range ms {
			m.mu.Lock()
			p := !m.pend.empty()
			m.mu.Unlock()
			if p {
				s.pending.Store(true)
				break
			}
		}
	}
}

func (s *Scope) emit(d Drop) {
	if s.report != nil {
		s.report(d)
	}
}

// Meter enforces Limits on one stream and counts what it drops. Its methods are safe for
// concurrent use; each costs O(1) besides the work of the caller on what it keeps.
type Meter struct {
	s      *Scope
	stream string
	lim    Limits

	mu         sync.Mutex
	op         uint64 // the operation the op budget is for
	opStarted  bool
	opB, opR   int64 // spent in the operation
	winStart   time.Duration
	winStarted bool
	winB, winR int64 // spent in the window

	pend       Drop          // dropped and not yet reported
	pendSince  time.Duration // when pend became non-empty
	lastReport time.Duration
	reported   bool

	droppedBytes, droppedRecords atomic.Uint64
}

// Dropped returns the stream's totals: bytes and records dropped since the meter was made
// (see Drop for what a record is).
func (m *Meter) Dropped() (bytes, records uint64) {
	return m.droppedBytes.Load(), m.droppedRecords.Load()
}

// Take admits one record of keep bytes, all or nothing. When a limit refuses it (or the
// operation was stopped), size bytes and one record are counted as dropped and Take returns
// false.
func (m *Meter) Take(keep, size int64) bool {
	stopped := m.s.stopped != nil && m.s.stopped()
	m.mu.Lock()
	now := m.s.clock()
	m.roll(now)
	b, r, opLim := m.room()
	if stopped || keep > b || r < 1 {
		d := Drop{Bytes: uint64(size), Records: 1, Stopped: stopped}
		if !stopped {
			d.Op, d.Window = opLim, !opLim
		}
		rep, ok := m.drop(now, d)
		m.mu.Unlock()
		if ok {
			m.s.emit(rep)
		}
		return false
	}
	m.charge(keep, 1)
	m.mu.Unlock()
	return true
}

// roll starts a fresh operation budget when the operation changed, and a fresh window when
// the current one is over. Under m.mu.
func (m *Meter) roll(now time.Duration) {
	if op := m.s.op(); !m.opStarted || op != m.op {
		m.op, m.opStarted, m.opB, m.opR = op, true, 0, 0
	}
	if !m.winStarted || now-m.winStart >= Window {
		m.winStart, m.winStarted, m.winB, m.winR = now, true, 0, 0
	}
}

// room is what the limits leave of the operation's and the window's budget, in bytes and
// records, and whether the operation's budget is the tighter one. Under m.mu.
func (m *Meter) room() (bytes, records int64, opLimited bool) {
	ob, wb := left(m.lim.OpBytes, m.opB), left(m.lim.WindowBytes, m.winB)
	or, wr := left(m.lim.OpRecords, m.opR), left(m.lim.WindowRecords, m.winR)
	return min(ob, wb), min(or, wr), ob < wb || or < wr
}

func left(limit, spent int64) int64 {
	if limit < 0 {
		return math.MaxInt64
	}
	return max(limit-spent, 0)
}

// charge spends what was kept. Under m.mu.
func (m *Meter) charge(bytes, records int64) {
	m.opB += bytes
	m.winB += bytes
	m.opR += records
	m.winR += records
}

// drop counts d and reports whether it (with what was pending) is due for a report now: the
// stream has not reported for a Window, and has been dropping for a Window (a long
// operation; a short one reports at its end). Under m.mu; the caller emits the report after
// unlocking.
func (m *Meter) drop(now time.Duration, d Drop) (Drop, bool) {
	m.droppedBytes.Add(d.Bytes)
	m.droppedRecords.Add(d.Records)
	if m.pend.empty() {
		m.pendSince = now
	}
	m.pend.Bytes += d.Bytes
	m.pend.Records += d.Records
	m.pend.Op = m.pend.Op || d.Op
	m.pend.Window = m.pend.Window || d.Window
	m.pend.Stopped = m.pend.Stopped || d.Stopped
	m.s.pending.Store(true)
	return m.takeReport(now, false, true)
}

// takeReport returns the pending drops and clears them if a report is due: force, or no
// report for a Window (and, during an operation, drops pending for a Window). Under m.mu.
func (m *Meter) takeReport(now time.Duration, force, during bool) (Drop, bool) {
	if m.pend.empty() {
		return Drop{}, false
	}
	due := force || !m.reported || now-m.lastReport >= Window
	if during && now-m.pendSince < Window {
		due = false
	}
	if !due {
		return Drop{}, false
	}
	d := m.pend
	d.Stream = m.stream
	m.pend = Drop{}
	m.lastReport, m.reported = now, true
	return d, true
}
