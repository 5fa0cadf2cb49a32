package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/sandbox"
	"github.com/wasmvisor/wasmvisor/supervisor"
)

// The dashboard's stream (GET /v1/dashboard/stream, the page under /ui) pushes, without the
// client polling: a snapshot of the supervision tree, then each lifecycle event of the host as
// it happens (from the host's event hook), the calls' decisions (at most
// dashDecisionsPerSecond, the others counted), and once a second a stats frame. See
// ../ui/README.md for what the page shows and where each number comes from.

// Bounds of the dashboard stream.
const (
	// dashDecisionsPerSecond bounds the decisions pushed to the dashboards, over all of them:
	// more in one second are counted (decisions_skipped in the stats frame), not sent.
	dashDecisionsPerSecond = 20
	// dashGuestEventsPerFrame bounds the guest events of one plugin in one stats frame; the
	// rest come in the next frames (the host's ring bounds how far they can fall behind, and
	// counts what it evicted: lost).
	dashGuestEventsPerFrame = 32
	// dashTelemetryPerSlot bounds the guest metrics of one slot in a stats frame.
	dashTelemetryPerSlot = 32
	// dashErrorBytes bounds an end reason's error text.
	dashErrorBytes = 512
	// dashStatsEvery is the stats frame period; frames are computed once for every stream.
	dashStatsEvery = time.Second
)

// endReason is why an instance ended: its kind (trap, deadline, memory_limit, exit, shutdown,
// killed, …, host.Kind's names and the supervisor's) and the error, cut to dashErrorBytes.
type endReason struct {
	Kind  string    `json:"kind"`
	Error string    `json:"error,omitempty"`
	At    time.Time `json:"at"`
}

// slotView is one pool slot as the dashboard shows it.
type slotView struct {
	Index       int        `json:"index"`
	State       string     `json:"state"` // starting, running, busy, stopped, restarting, quarantined, probing
	Incarnation uint64     `json:"incarnation"`
	StartedAt   *time.Time `json:"started_at,omitempty"`
	Restarts    uint64     `json:"restarts"` // instances started in the slot after its first
	LastEnd     *endReason `json:"last_end,omitempty"`
	MemoryPages uint32     `json:"memory_pages"`
}

// dashPlugin is one plugin of the tree.
type dashPlugin struct {
	Name          string     `json:"name"`
	State         string     `json:"state"` // running, quarantined, probing
	Failed        string     `json:"failed,omitempty"`
	ConfigVersion uint64     `json:"config_version"`
	Restarts      uint64     `json:"restarts"`
	Format        string     `json:"format"`
	Digest        string     `json:"digest"`
	Slots         []slotView `json:"slots"`
}

// dashSnapshot is the data of event: snapshot.
type dashSnapshot struct {
	Time    time.Time    `json:"time"`
	Plugins []dashPlugin `json:"plugins"`
	Dropped uint64       `json:"dropped"` // messages this stream dropped so far
}

// dashLifecycle is the data of event: lifecycle: one host event, with the slot it changed.
type dashLifecycle struct {
	Kind        string     `json:"kind"` // host.EventKind's name
	Time        time.Time  `json:"time"`
	Plugin      string     `json:"plugin"`
	Slot        *slotView  `json:"slot,omitempty"` // the slot after the event, for instance events
	PluginState string     `json:"plugin_state,omitempty"`
	Reason      *endReason `json:"reason,omitempty"`
	Version     uint64     `json:"config_version,omitempty"`
	Detail      string     `json:"detail,omitempty"`
	Dropped     uint64     `json:"dropped"`
}

// dashDecision is the data of event: decision.
type dashDecision struct {
	Time       time.Time `json:"time"`
	Plugin     string    `json:"plugin"`
	Handler    string    `json:"handler"`
	Outcome    string    `json:"outcome"`
	ErrorKind  string    `json:"error_kind,omitempty"`
	Status     int       `json:"status"`
	DurationUs float64   `json:"duration_us"`
	Dropped    uint64    `json:"dropped"`
}

// slotHist is what the dashboard remembers of a slot beyond the host: the host keeps neither
// start times nor end reasons.
type slotHist struct {
	inc       uint64
	up        bool
	startedAt time.Time
	starts    uint64
	lastEnd   *endReason
}

type pluginHist struct {
	state  string // running, quarantined, probing
	failed string
	slots  map[int]*slotHist
}

// dashMsg is one message queued for a stream: reload asks the stream for a new snapshot.
type dashMsg struct {
	event  string
	v      any
	reload bool
}

type dashSub struct {
	ch      chan dashMsg
	dropped atomic.Uint64
}

// dashboard is the server's side of the dashboards: a model of the tree kept from the host's
// events, and the fan-out to the open streams. Its hook runs on the host's event path: it
// takes one short lock and never blocks (a full stream buffer drops, and counts).
type dashboard struct {
	mu      sync.Mutex
	plugins map[string]*pluginHist
	subs    map[*dashSub]struct{}

	nsubs      atomic.Int32 // len(subs), read without the lock on the call path
	decSecond  int64        // unix second of decSent
	decSent    int
	decSkipped atomic.Uint64
	dropped    func() // counts a dropped message (wasmvisor_events_dropped_total)

	statsMu   sync.Mutex
	frame     *statsFrame
	prevLat   map[string][]uint64 // the latency buckets at the previous frame
	guestNext map[string]uint64   // per plugin: the next guest event to collect
}

func newDashboard() *dashboard {
	return &dashboard{plugins: map[string]*pluginHist{}, subs: map[*dashSub]struct{}{},
		prevLat: map[string][]uint64{}, guestNext: map[string]uint64{}, dropped: func() {}}
}

func (d *dashboard) plugin(name string) *pluginHist {
	p := d.plugins[name]
	if p == nil {
		p = &pluginHist{state: "running", slots: map[int]*slotHist{}}
		d.plugins[name] = p
	}
	return p
}

func (p *pluginHist) slot(i int) *slotHist {
	s := p.slots[i]
	if s == nil {
		s = &slotHist{}
		p.slots[i] = s
	}
	return s
}

// reasonOf classifies an instance's end.
func reasonOf(err error, at time.Time) *endReason {
	r := &endReason{At: at}
	switch {
	case err == nil:
		r.Kind = "normal"
	case errors.Is(err, supervisor.ErrShutdown):
		r.Kind = "shutdown"
	case errors.Is(err, supervisor.ErrKilled):
		r.Kind = "killed"
	default:
		r.Kind = host.Kind(err)
	}
	if err != nil {
		r.Error = truncate(err.Error(), dashErrorBytes)
	}
	return r
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

// hook is the host's event hook: it updates the model and sends the event to every stream.
func (d *dashboard) hook(e host.Event) {
	if e.Kind == host.EventDelivered || e.Kind == host.EventSupervisor {
		return // one per bus message, and the supervisor's own: not the dashboard's
	}
	var msg dashLifecycle
	reload := false
	d.mu.Lock()
	switch e.Kind {
	case host.EventInstanceStarted:
		p := d.plugin(e.Plugin)
		s := p.slot(e.Instance)
		if e.Incarnation > s.inc {
			s.inc, s.up, s.startedAt = e.Incarnation, true, e.Time
			s.starts++
		}
		msg.Slot = p.view(e.Instance, s)
	case host.EventInstanceEnded:
		p := d.plugin(e.Plugin)
		s := p.slot(e.Instance)
		msg.Reason = reasonOf(e.Err, e.Time)
		if e.Incarnation >= s.inc {
			s.inc, s.up, s.lastEnd = e.Incarnation, false, msg.Reason
		}
		msg.Slot = p.view(e.Instance, s)
	case host.EventQuarantined, host.EventProbeFailed:
		p := d.plugin(e.Plugin)
		p.state = "quarantined"
		if e.Err != nil {
			p.failed = truncate(e.Err.Error(), dashErrorBytes)
			msg.Reason = reasonOf(e.Err, e.Time)
		}
	case host.EventProbing:
		d.plugin(e.Plugin).state = "probing"
	case host.EventRecovered:
		p := d.plugin(e.Plugin)
		p.state, p.failed = "running", ""
	case host.EventLoaded, host.EventUnloaded:
		if e.Kind == host.EventUnloaded {
			delete(d.plugins, e.Plugin)
		}
		reload = true // the stream sends a new snapshot: slots may have come or gone
	case host.EventConfigApplied, host.EventConfigRejected:
		msg.Version = e.Version
		if e.Err != nil {
			msg.Reason = reasonOf(e.Err, e.Time)
		}
		msg.Slot = nil
	case host.EventPoisonInput, host.EventStoreViolation, host.EventTelemetryDropped,
		host.EventOutputDropped, host.EventDeliveryFailed, host.EventDropped:
		if e.Err != nil {
			msg.Detail = truncate(e.Err.Error(), dashErrorBytes)
		} else if e.Count > 0 {
			msg.Detail = fmt.Sprintf("%s %d dropped (%d bytes)", e.Topic+e.Stream, e.Count, e.Bytes)
		}
	}
	msg.Kind, msg.Time, msg.Plugin = e.Kind.String(), e.Time, e.Plugin
	if p := d.plugins[e.Plugin]; p != nil {
		msg.PluginState = p.state
	}
	d.sendLocked(dashMsg{event: "lifecycle", v: &msg, reload: reload})
	d.mu.Unlock()
}

// view is slot i as the dashboard shows it, from what the events told; the snapshot adds the
// host's own view.
func (p *pluginHist) view(i int, s *slotHist) *slotView {
	v := &slotView{Index: i, Incarnation: s.inc, LastEnd: s.lastEnd}
	if s.starts > 1 {
		v.Restarts = s.starts - 1
	}
	switch {
	case s.up:
		v.State = "running"
		t := s.startedAt
		v.StartedAt = &t
	case p.state != "running":
		v.State = p.state
	case s.lastEnd == nil:
		v.State = "starting"
	case s.lastEnd.Kind == "shutdown":
		v.State = "stopped"
	default:
		v.State = "restarting"
	}
	return v
}

// sendLocked queues m for every stream, dropping it (and counting) where the buffer is full.
func (d *dashboard) sendLocked(m dashMsg) {
	for s := range d.subs {
		select {
		case s.ch <- m:
		default:
			s.dropped.Add(1)
			d.dropped()
		}
	}
}

// decision sends a call's decision to the streams, at most dashDecisionsPerSecond a second.
func (d *dashboard) decision(v dashDecision) {
	if d.nsubs.Load() == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.subs) == 0 {
		return
	}
	if sec := v.Time.Unix(); sec != d.decSecond {
		d.decSecond, d.decSent = sec, 0
	}
	if d.decSent >= dashDecisionsPerSecond {
		d.decSkipped.Add(1)
		return
	}
	d.decSent++
	d.sendLocked(dashMsg{event: "decision", v: &v})
}

func (d *dashboard) subscribe(buffer int) *dashSub {
	s := &dashSub{ch: make(chan dashMsg, max(buffer, 1))}
	d.mu.Lock()
	d.subs[s] = struct{}{}
	d.nsubs.Store(int32(len(d.subs)))
	d.mu.Unlock()
	return s
}

func (d *dashboard) unsubscribe(s *dashSub) {
	d.mu.Lock()
	delete(d.subs, s)
	d.nsubs.Store(int32(len(d.subs)))
	d.mu.Unlock()
}

// snapshot is the tree: the host's plugins and slots, with what the events told of each slot.
func (s *Server) dashSnapshot() []dashPlugin {
	infos := s.h.Plugins()
	d := s.dash
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]dashPlugin, 0, len(infos))
	for _, pi := range infos {
		ph := d.plugin(pi.Name)
		dp := dashPlugin{Name: pi.Name, State: ph.state, Failed: ph.failed, ConfigVersion: pi.ConfigVersion,
			Restarts: pi.Restarts, Format: string(pi.Format), Digest: "sha256:" + pi.Digest, Slots: []slotView{}}
		if pi.Failed != nil { // the host's word over the events'
			dp.State, dp.Failed = pi.State.String(), truncate(pi.Failed.Error(), dashErrorBytes)
			if pi.State == host.PluginFailed {
				dp.State = "quarantined"
			}
		}
		for _, ii := range pi.Instances {
			sh := ph.slot(ii.Index)
			if ii.Up && ii.Incarnation > sh.inc { // started before the events were seen
				sh.inc, sh.up = ii.Incarnation, true
			}
			v := ph.view(ii.Index, sh)
			v.MemoryPages = ii.MemoryPages
			if ii.Up && errors.Is(ii.ReadErr, sandbox.ErrBusy) {
				v.State = "busy"
			}
			dp.Slots = append(dp.Slots, *v)
		}
		out = append(out, dp)
	}
	return out
}

// statsFrame is the data of event: stats, computed once per dashStatsEvery for all streams.
type statsFrame struct {
	Seq     uint64      `json:"seq"`
	Time    time.Time   `json:"time"`
	Plugins []dashStats `json:"plugins"`
	// BusDropped counts the bus messages dropped since the host started (every subscription).
	BusDropped uint64 `json:"bus_dropped"`
	// DecisionsSkipped counts the decisions not sent to the dashboards (dashDecisionsPerSecond).
	DecisionsSkipped uint64 `json:"decisions_skipped"`
	Streams          int64  `json:"streams"`
	Dropped          uint64 `json:"dropped"` // set per stream: its own drops
}

// dashStats is one plugin's numbers in a stats frame.
type dashStats struct {
	Name   string            `json:"name"`
	State  string            `json:"state"`
	Calls  uint64            `json:"calls"`
	Errors map[string]uint64 `json:"errors"` // by kind, since the host started
	// Latency percentiles in microseconds over the calls since the previous frame (null when
	// there were none), interpolated within the histogram's buckets.
	P50           *float64        `json:"p50_us"`
	P90           *float64        `json:"p90_us"`
	P99           *float64        `json:"p99_us"`
	BusPending    uint64          `json:"bus_pending"`
	ConfigVersion uint64          `json:"config_version"`
	Restarts      uint64          `json:"restarts"`
	Slots         []dashSlotStats `json:"slots"`
	GuestEvents   []guestEvent    `json:"guest_events,omitempty"`
	GuestLost     uint64          `json:"guest_lost"`
}

type dashSlotStats struct {
	Index       int              `json:"index"`
	Up          bool             `json:"up"`
	Busy        bool             `json:"busy"`
	Incarnation uint64           `json:"incarnation"`
	MemoryPages uint32           `json:"memory_pages"`
	Telemetry   []sandbox.Metric `json:"telemetry,omitempty"`
}

// stats returns the current frame, computing a new one when the last is older than most of
// a period: several streams share one computation.
func (s *Server) dashStats(now time.Time) *statsFrame {
	d := s.dash
	d.statsMu.Lock()
	defer d.statsMu.Unlock()
	if f := d.frame; f != nil && now.Sub(f.Time) < dashStatsEvery*9/10 {
		return f
	}
	f := &statsFrame{Time: now, DecisionsSkipped: d.decSkipped.Load(), Streams: s.streams.Load()}
	if d.frame != nil {
		f.Seq = d.frame.Seq + 1
	}
	fams := map[string]*dto.MetricFamily{}
	if mfs, err := s.h.Metrics().Gather(); err == nil || len(mfs) > 0 {
		for _, mf := range mfs {
			fams[mf.GetName()] = mf
		}
	}
	byPlugin := func(name string) map[string][]*dto.Metric {
		out := map[string][]*dto.Metric{}
		for _, m := range fams[name].GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "plugin" {
					out[l.GetValue()] = append(out[l.GetValue()], m)
				}
			}
		}
		return out
	}
	calls, errs, lat, pending := byPlugin("wasmvisor_calls_total"), byPlugin("wasmvisor_call_errors_total"),
		byPlugin("wasmvisor_call_duration_seconds"), byPlugin("wasmvisor_bus_pending")
	for _, m := range fams["wasmvisor_bus_messages_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "outcome" && l.GetValue() == "dropped" {
				f.BusDropped += uint64(m.GetCounter().GetValue())
			}
		}
	}
	seen := map[string]bool{}
	for _, pi := range s.h.Plugins() {
		seen[pi.Name] = true
		ps := dashStats{Name: pi.Name, State: "running", Errors: map[string]uint64{}, ConfigVersion: pi.ConfigVersion,
			Restarts: pi.Restarts, Slots: []dashSlotStats{}}
		if pi.Failed != nil {
			ps.State = "quarantined"
			if pi.State == host.PluginProbing {
				ps.State = "probing"
			}
		}
		for _, m := range calls[pi.Name] {
			ps.Calls += uint64(m.GetCounter().GetValue())
		}
		for _, m := range errs[pi.Name] {
			for _, l := range m.GetLabel() {
				if l.GetName() == "kind" {
					if v := uint64(m.GetCounter().GetValue()); v > 0 {
						ps.Errors[l.GetValue()] = v
					}
				}
			}
		}
		for _, m := range pending[pi.Name] {
			ps.BusPending += uint64(m.GetGauge().GetValue())
		}
		if ms := lat[pi.Name]; len(ms) > 0 {
			bounds, cum := histogram(ms[0].GetHistogram())
			prev := d.prevLat[pi.Name]
			delta := make([]uint64, len(cum))
			for i := range cum {
				delta[i] = cum[i]
				if len(prev) == len(cum) && prev[i] <= cum[i] {
					delta[i] -= prev[i]
				}
			}
			d.prevLat[pi.Name] = cum
			ps.P50, ps.P90, ps.P99 = quantile(bounds, delta, 0.5), quantile(bounds, delta, 0.9), quantile(bounds, delta, 0.99)
		}
		for _, ii := range pi.Instances {
			ss := dashSlotStats{Index: ii.Index, Up: ii.Up, Incarnation: ii.Incarnation, MemoryPages: ii.MemoryPages,
				Busy: ii.Up && errors.Is(ii.ReadErr, sandbox.ErrBusy)}
			if len(ii.Telemetry) > 0 {
				ss.Telemetry = ii.Telemetry[:min(len(ii.Telemetry), dashTelemetryPerSlot)]
			}
			ps.Slots = append(ps.Slots, ss)
		}
		if log, err := s.h.GuestEvents(pi.Name, d.guestNext[pi.Name], dashGuestEventsPerFrame); err == nil {
			ps.GuestEvents, ps.GuestLost = toGuestEvents(log.Events), log.Lost
			d.guestNext[pi.Name] = log.Next
		}
		f.Plugins = append(f.Plugins, ps)
	}
	for name := range d.prevLat { // unloaded plugins
		if !seen[name] {
			delete(d.prevLat, name)
			delete(d.guestNext, name)
		}
	}
	sort.Slice(f.Plugins, func(i, j int) bool { return f.Plugins[i].Name < f.Plugins[j].Name })
	d.frame = f
	return f
}

// histogram returns a Prometheus histogram's upper bounds and per-bucket (not cumulative)
// counts, the last one for +Inf.
func histogram(h *dto.Histogram) (bounds []float64, counts []uint64) {
	var last uint64
	for _, b := range h.GetBucket() {
		if math.IsInf(b.GetUpperBound(), +1) {
			continue
		}
		bounds = append(bounds, b.GetUpperBound())
		counts = append(counts, b.GetCumulativeCount()-last)
		last = b.GetCumulativeCount()
	}
	counts = append(counts, h.GetSampleCount()-last)
	return bounds, counts
}

// quantile is the q-quantile in microseconds of the observations counted per bucket,
// interpolated linearly within its bucket (the +Inf bucket answers its lower bound); nil when
// there are none.
func quantile(bounds []float64, counts []uint64, q float64) *float64 {
	var total uint64
	for _, c := range counts {
		total += c
	}
	if total == 0 {
		return nil
	}
	rank := q * float64(total)
	var seen float64
	for i, c := range counts {
		if c == 0 {
			continue
		}
		if seen+float64(c) >= rank {
			lo := 0.0
			if i > 0 {
				lo = bounds[i-1]
			}
			v := lo
			if i < len(bounds) {
				v = lo + (bounds[i]-lo)*(rank-seen)/float64(c)
			}
			v *= 1e6
			return &v
		}
		seen += float64(c)
	}
	v := bounds[len(bounds)-1] * 1e6
	return &v
}

// dashboardStream is GET /v1/dashboard/stream: event: snapshot (the tree), then event:
// lifecycle for each host event, event: decision for calls (sampled), and event: stats every
// second; a comment line every 15 s. It shares the caps of GET /v1/events: events.max_streams
// streams at once, events.buffer messages buffered per stream (more are dropped, counted in
// the messages' dropped field and in wasmvisor_events_dropped_total), sseWriteTimeout per
// write. It is read-only and open to the same clients as GET /v1/plugins: it carries no
// config values.
func (s *Server) dashboardStream(w http.ResponseWriter, r *http.Request) {
	if !s.admitStream(w) {
		return
	}
	defer s.streams.Add(-1)
	sub := s.dash.subscribe(s.cfg.Load().Events.Buffer)
	defer s.dash.unsubscribe(sub)
	s.m.streams.Inc()
	defer s.m.streams.Dec()
	rc := http.NewResponseController(w)
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-cache")
	hd.Set("X-Accel-Buffering", "no")
	hd.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	var id uint64
	send := func(event string, v any) bool {
		b, err := json.Marshal(v)
		if err != nil {
			b, _ = json.Marshal(map[string]string{"error": err.Error()})
			event = "error"
		}
		id++
		_ = rc.SetWriteDeadline(time.Now().Add(sseWriteTimeout))
		if _, err := fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", id, event, b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	snapshot := func() bool {
		return send("snapshot", dashSnapshot{Time: time.Now(), Plugins: s.dashSnapshot(), Dropped: sub.dropped.Load()})
	}
	if !snapshot() {
		return
	}
	stats := func() bool {
		f := *s.dashStats(time.Now())
		f.Dropped = sub.dropped.Load()
		return send("stats", &f)
	}
	if !stats() {
		return
	}
	tick := time.NewTicker(dashStatsEvery)
	defer tick.Stop()
	keep := time.NewTicker(15 * time.Second)
	defer keep.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.stopping:
			return
		case <-keep.C:
			_ = rc.SetWriteDeadline(time.Now().Add(sseWriteTimeout))
			if _, err := fmt.Fprintf(w, ": keepalive dropped=%d\n\n", sub.dropped.Load()); err != nil || rc.Flush() != nil {
				return
			}
		case <-tick.C:
			if !stats() {
				return
			}
		case m := <-sub.ch:
			switch v := m.v.(type) {
			case *dashLifecycle:
				c := *v
				c.Dropped = sub.dropped.Load()
				if !send(m.event, &c) {
					return
				}
			case *dashDecision:
				c := *v
				c.Dropped = sub.dropped.Load()
				if !send(m.event, &c) {
					return
				}
			}
			if m.reload && !snapshot() {
				return
			}
		}
	}
}

// authCheck is GET /v1/auth: 204 when the request carries the admin token (the admin wrapper
// answers 401 or 403 otherwise). The dashboard asks it before it shows its admin controls.
func (s *Server) authCheck(w http.ResponseWriter, _ *http.Request) {
	w.WriteHeader(http.StatusNoContent)
}
