package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/sandbox"
	"github.com/wasmvisor/wasmvisor/supervisor"
)

type sseMsg struct {
	event string
	data  []byte
}

// openStream opens GET /v1/dashboard/stream and returns its messages, read by a goroutine
// that ends when the test's cleanup closes the body.
func openStream(t *testing.T, base string) <-chan sseMsg {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/v1/dashboard/stream", nil)
	res, err := http.DefaultClient.Do(req) //nolint:bodyclose // closed by the cleanup, or below
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream" {
		res.Body.Close()
		cancel()
		t.Fatalf("stream: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	out := make(chan sseMsg, 256)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(out)
		r := bufio.NewReader(res.Body)
		var m sseMsg
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimRight(line, "\n")
			switch {
			case strings.HasPrefix(line, "event: "):
				m.event = line[len("event: "):]
			case strings.HasPrefix(line, "data: "):
				m.data = []byte(line[len("data: "):])
			case line == "" && m.event != "":
				select {
				case out <- m:
				case <-ctx.Done():
					return
				}
				m = sseMsg{}
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		res.Body.Close()
		<-done
	})
	return out
}

// next returns the next message of the given event for which ok is true, failing the test
// after 10 s.
func next[T any](t *testing.T, ch <-chan sseMsg, event string, ok func(T) bool) T {
	t.Helper()
	limit := time.NewTimer(10 * time.Second)
	defer limit.Stop()
	for {
		select {
		case m, open := <-ch:
			if !open {
				t.Fatalf("stream ended waiting for %s", event)
			}
			if m.event != event {
				continue
			}
			var v T
			if err := json.Unmarshal(m.data, &v); err != nil {
				t.Fatalf("%s: %v: %s", event, err, m.data)
			}
			if ok == nil || ok(v) {
				return v
			}
		case <-limit.C:
			t.Fatalf("no %s event within 10 s", event)
		}
	}
}

// The stream starts with the tree, then tells each instance's end (with its reason and slot)
// and restart as they happen, a per-slot restart through the admin API, and a quarantine;
// stats frames and decisions come along.
func TestDashboardStream(t *testing.T) {
	ts := openServer(t, "admin_token: "+testToken+
		"\nsupervisor: {max_restarts: 1, period: 1h, quarantine_base: 1h, poison_limit: -1}\nplugins:\n"+
		"  - {name: ref, wasm: ref.wasm, instances: 2, restart_policy: {max_restarts: 100}}\n"+
		"  - {name: crashy, wasm: ref.wasm}\n", true)
	st := openStream(t, ts.base)
	snap := next[dashSnapshot](t, st, "snapshot", nil)
	if len(snap.Plugins) != 2 {
		t.Fatalf("snapshot: %+v", snap)
	}
	var ref dashPlugin
	for _, p := range snap.Plugins {
		if p.Name == "ref" {
			ref = p
		}
		for _, s := range p.Slots {
			if s.State != "running" || s.Incarnation == 0 || s.StartedAt == nil || s.Restarts != 0 {
				t.Fatalf("%s slot %+v", p.Name, s)
			}
		}
	}
	if len(ref.Slots) != 2 || ref.State != "running" {
		t.Fatalf("ref: %+v", ref)
	}
	type frameT struct { // the stats frame, telemetry as the page reads it
		Plugins []struct {
			Name  string `json:"name"`
			Slots []struct {
				Telemetry []struct {
					Name string `json:"name"`
					Kind string `json:"kind"`
				} `json:"telemetry"`
			} `json:"slots"`
		} `json:"plugins"`
	}
	frame := next[frameT](t, st, "stats", nil)
	if len(frame.Plugins) != 2 || frame.Plugins[1].Name != "ref" || len(frame.Plugins[1].Slots) != 2 ||
		len(frame.Plugins[1].Slots[0].Telemetry) == 0 {
		t.Fatalf("stats: %+v", frame)
	}

	// A trap: the slot's end, with its reason, then its successor, counted as a restart.
	if a := ts.do(t, "POST", "/v1/plugins/ref/call/trap", "", "", []byte("1")); a.status < 400 {
		t.Fatalf("trap answered %d", a.status)
	}
	var ended, started *dashLifecycle
	var dec *dashDecision
	limit := time.After(10 * time.Second)
	for ended == nil || started == nil || dec == nil { // in the stream's order, whatever it is
		var m sseMsg
		select {
		case m = <-st:
		case <-limit:
			t.Fatalf("after a trap within 10 s: ended %v, started %v, decision %v", ended, started, dec)
		}
		switch m.event {
		case "lifecycle":
			var e dashLifecycle
			if err := json.Unmarshal(m.data, &e); err != nil {
				t.Fatal(err)
			}
			switch e.Kind {
			case "instance ended":
				ended = &e
			case "instance started":
				started = &e
			}
		case "decision":
			dec = new(dashDecision)
			if err := json.Unmarshal(m.data, dec); err != nil {
				t.Fatal(err)
			}
		}
	}
	if ended.Plugin != "ref" || ended.Slot == nil || ended.Reason == nil || ended.Reason.Kind != sandbox.KindTrap ||
		ended.Slot.LastEnd == nil || ended.Slot.State != "restarting" {
		t.Fatalf("ended: %+v slot %+v reason %+v", ended, ended.Slot, ended.Reason)
	}
	slot := ended.Slot.Index
	if started.Slot == nil || started.Slot.Index != slot || started.Slot.Restarts != 1 || started.Slot.State != "running" ||
		started.Slot.Incarnation <= ended.Slot.Incarnation || started.Slot.LastEnd == nil || started.Slot.LastEnd.Kind != "trap" {
		t.Fatalf("started: %+v", started.Slot)
	}
	if dec.Plugin != "ref" || dec.Handler != "trap" || dec.ErrorKind != "trap" {
		t.Fatalf("decision: %+v", dec)
	}

	// One slot restarted on demand: admin only; the other slot keeps its incarnation.
	other := 1 - slot
	if a := ts.do(t, "POST", fmt.Sprintf("/v1/plugins/ref/restart?slot=%d", other), "", "", nil); a.status != http.StatusUnauthorized {
		t.Fatalf("restart without token: %d", a.status)
	}
	for q, want := range map[string]string{"x": "bad_slot", "-1": "bad_slot", "2": "instance_not_found"} {
		if a := ts.do(t, "POST", "/v1/plugins/ref/restart?slot="+q, testToken, "", nil); a.code(t) != want {
			t.Fatalf("slot=%s: %d %s", q, a.status, a.body)
		}
	}
	if a := ts.do(t, "POST", fmt.Sprintf("/v1/plugins/ref/restart?slot=%d", other), testToken, "", nil); a.status != http.StatusOK {
		t.Fatalf("restart slot: %d %s", a.status, a.body)
	}
	e2 := next[dashLifecycle](t, st, "lifecycle", func(e dashLifecycle) bool { return e.Kind == "instance ended" })
	s2 := next[dashLifecycle](t, st, "lifecycle", func(e dashLifecycle) bool { return e.Kind == "instance started" })
	if e2.Slot.Index != other || e2.Reason.Kind != "shutdown" || s2.Slot.Index != other || s2.Slot.Restarts != 1 {
		t.Fatalf("slot restart: ended %+v %+v, started %+v", e2.Slot, e2.Reason, s2.Slot)
	}
	pi, _ := ts.h.Plugin("ref")
	if pi.Instances[slot].Incarnation == pi.Instances[other].Incarnation || pi.Restarts != 2 {
		t.Fatalf("after: %+v", pi)
	}

	// Past its intensity (1 in an hour), crashy is quarantined: an event, and the snapshots
	// show it.
	for i := range 2 {
		ts.do(t, "POST", "/v1/plugins/crashy/call/trap", "", "", []byte{byte(i)})
	}
	q := next[dashLifecycle](t, st, "lifecycle", func(e dashLifecycle) bool { return e.Kind == "quarantined" })
	if q.Plugin != "crashy" || q.PluginState != "quarantined" || q.Reason == nil {
		t.Fatalf("quarantined: %+v", q)
	}
	st2 := openStream(t, ts.base)
	snap = next[dashSnapshot](t, st2, "snapshot", nil)
	for _, p := range snap.Plugins {
		if p.Name == "crashy" && (p.State != "quarantined" || p.Failed == "") {
			t.Fatalf("crashy in the snapshot: %+v", p)
		}
	}
}

// The page is served to anyone, with its strict headers; the admin check answers only the
// token; the stream shares the cap of GET /v1/events.
func TestDashboardAuthAndPage(t *testing.T) {
	ts := openServer(t, "admin_token: "+testToken+"\nevents: {max_streams: 1}\nplugins:\n  - {name: ref, wasm: ref.wasm}\n", true)
	for _, path := range []string{"/ui/", "/ui/app.js", "/ui/style.css"} {
		a := ts.do(t, "GET", path, "", "", nil)
		if a.status != http.StatusOK || !strings.Contains(a.header.Get("Content-Security-Policy"), "default-src 'self'") ||
			a.header.Get("X-Content-Type-Options") != "nosniff" || a.header.Get("Cache-Control") != "no-cache" {
			t.Fatalf("%s: %d %v", path, a.status, a.header)
		}
		if strings.Contains(string(a.body), testToken) {
			t.Fatalf("%s holds the token", path)
		}
	}
	if a := ts.do(t, "GET", "/ui", "", "", nil); a.status != http.StatusOK || !strings.HasPrefix(a.header.Get("Content-Type"), "text/html") {
		t.Fatalf("/ui (redirected to /ui/): %d %v", a.status, a.header)
	}
	page := ts.do(t, "GET", "/ui/", "", "", nil)
	if strings.Contains(string(page.body), `class="admin"`) || strings.Contains(string(page.body), "<script>") {
		t.Fatal("the page has admin controls or an inline script before any token")
	}
	if a := ts.do(t, "GET", "/ui/nothing.js", "", "", nil); a.status != http.StatusNotFound {
		t.Fatalf("unknown file: %d", a.status)
	}
	if a := ts.do(t, "GET", "/v1/auth", "", "", nil); a.status != http.StatusUnauthorized {
		t.Fatalf("auth without token: %d", a.status)
	}
	if a := ts.do(t, "GET", "/v1/auth", "wrong-token-0123456789", "", nil); a.status != http.StatusUnauthorized {
		t.Fatalf("auth with a wrong token: %d", a.status)
	}
	if a := ts.do(t, "GET", "/v1/auth", testToken, "", nil); a.status != http.StatusNoContent {
		t.Fatalf("auth: %d", a.status)
	}
	for _, r := range []struct{ method, path string }{{"POST", "/v1/plugins/ref/restart?slot=0"},
		{"POST", "/v1/plugins/ref/reset"}, {"DELETE", "/v1/plugins/ref"}} {
		if a := ts.do(t, r.method, r.path, "", "", nil); a.status != http.StatusUnauthorized {
			t.Fatalf("%s %s without token: %d", r.method, r.path, a.status)
		}
	}
	openStream(t, ts.base)
	if a := ts.do(t, "GET", "/v1/dashboard/stream", "", "", nil); a.code(t) != "too_many_streams" {
		t.Fatalf("second stream: %d %s", a.status, a.body)
	}

	none := openServer(t, "plugins:\n  - {name: ref, wasm: ref.wasm}\n", true)
	if a := none.do(t, "GET", "/v1/auth", "anything-0123456789", "", nil); a.code(t) != "admin_disabled" {
		t.Fatalf("auth with no token configured: %d %s", a.status, a.body)
	}
}

// A stream's buffer bounds what waits for it: the rest is dropped and counted; decisions are
// sampled to dashDecisionsPerSecond.
func TestDashboardBounds(t *testing.T) {
	d := newDashboard()
	var counted int
	d.dropped = func() { counted++ }
	d.decision(dashDecision{Time: time.Now()}) // no stream: nothing kept
	sub := d.subscribe(2)
	for i := range 5 {
		d.hook(host.Event{Kind: host.EventInstanceStarted, Time: time.Now(), Plugin: "p", Instance: 0, Incarnation: uint64(i + 1)})
	}
	d.hook(host.Event{Kind: host.EventDelivered, Plugin: "p"}) // not the dashboard's: not sent
	if len(sub.ch) != 2 || sub.dropped.Load() != 3 || counted != 3 {
		t.Fatalf("queued %d, dropped %d, counted %d", len(sub.ch), sub.dropped.Load(), counted)
	}
	m := <-sub.ch
	if v := m.v.(*dashLifecycle); v.Slot.Incarnation != 1 || v.Slot.Restarts != 0 {
		t.Fatalf("first: %+v", v.Slot)
	}
	<-sub.ch
	now := time.Unix(1_000_000, 0)
	big := d.subscribe(100)
	for range 50 {
		d.decision(dashDecision{Time: now})
	}
	if len(big.ch) != dashDecisionsPerSecond || d.decSkipped.Load() != 50-dashDecisionsPerSecond {
		t.Fatalf("decisions sent %d, skipped %d", len(big.ch), d.decSkipped.Load())
	}
	d.decision(dashDecision{Time: now.Add(time.Second)}) // a new second
	if len(big.ch) != dashDecisionsPerSecond+1 {
		t.Fatalf("next second: %d", len(big.ch))
	}
	d.unsubscribe(sub)
	d.unsubscribe(big)
	if d.nsubs.Load() != 0 {
		t.Fatal("subscribers left")
	}

	// An end: stale incarnations do not move the slot back; the reason is classified and cut.
	d2 := newDashboard()
	d2.hook(host.Event{Kind: host.EventInstanceStarted, Plugin: "p", Incarnation: 7})
	d2.hook(host.Event{Kind: host.EventInstanceEnded, Plugin: "p", Incarnation: 3, Err: supervisor.ErrShutdown})
	if s := d2.plugins["p"].slots[0]; !s.up || s.inc != 7 {
		t.Fatalf("stale end applied: %+v", s)
	}
	long := errors.New(strings.Repeat("x", 2*dashErrorBytes))
	d2.hook(host.Event{Kind: host.EventInstanceEnded, Plugin: "p", Incarnation: 7, Err: long})
	if s := d2.plugins["p"].slots[0]; s.up || len(s.lastEnd.Error) > dashErrorBytes+len("…") {
		t.Fatalf("end: %+v", s)
	}
}

func TestQuantile(t *testing.T) {
	bounds := []float64{1e-6, 1e-5, 1e-4}
	for _, tc := range []struct {
		counts []uint64
		q      float64
		want   float64 // µs; -1: nil
	}{
		{[]uint64{0, 0, 0, 0}, 0.5, -1},
		{[]uint64{0, 10, 0, 0}, 0.5, 5.5}, // half way through (1 µs, 10 µs]
		{[]uint64{10, 0, 0, 0}, 0.99, 0.99},
		{[]uint64{0, 0, 0, 4}, 0.5, 100}, // +Inf: its lower bound
	} {
		got := quantile(bounds, tc.counts, tc.q)
		switch {
		case tc.want < 0 && got != nil:
			t.Errorf("%v q%v = %v, want none", tc.counts, tc.q, *got)
		case tc.want >= 0 && (got == nil || *got < tc.want-1e-9 || *got > tc.want+1e-9):
			t.Errorf("%v q%v = %v, want %v", tc.counts, tc.q, got, tc.want)
		}
	}
}
