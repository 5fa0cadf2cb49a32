package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/wasmvisor/wasmvisor/host"
)

// guestEvent is one guest event in the API's JSON: data is the event's bytes as JSON when
// they are JSON, text otherwise.
type guestEvent struct {
	Seq         uint64          `json:"seq"`
	Instance    int             `json:"instance"`
	Incarnation uint64          `json:"incarnation"`
	GuestSeq    uint64          `json:"guest_seq"`
	Topic       string          `json:"topic"`
	Data        json.RawMessage `json:"data,omitempty"`
	Text        string          `json:"text,omitempty"`
}

// guestEventsBody is the body of GET /v1/plugins/{name}/events.
type guestEventsBody struct {
	Plugin    string       `json:"plugin"`
	Events    []guestEvent `json:"events"`
	Next      uint64       `json:"next"`
	Lost      uint64       `json:"lost"`
	GuestLost uint64       `json:"guest_lost"`
}

func toGuestEvents(evs []host.GuestEvent) []guestEvent {
	out := make([]guestEvent, 0, len(evs))
	for _, e := range evs {
		g := guestEvent{Seq: e.Seq, Instance: e.Instance, Incarnation: e.Incarnation, GuestSeq: e.GuestSeq, Topic: e.Topic}
		if len(e.Data) > 0 && json.Valid(e.Data) {
			g.Data = e.Data
		} else {
			g.Text = string(e.Data)
		}
		out = append(out, g)
	}
	return out
}

// sinceLimit parses ?since= (default 0) and ?limit= (default and most host.MaxGuestEventsRead).
func sinceLimit(w http.ResponseWriter, r *http.Request) (since uint64, limit int, ok bool) {
	q := r.URL.Query()
	if v := q.Get("since"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, "bad_since", fmt.Sprintf("since %q: want a sequence number (0 or more)", v))
			return 0, 0, false
		}
		since = n
	}
	limit = host.MaxGuestEventsRead
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > host.MaxGuestEventsRead {
			writeError(w, http.StatusBadRequest, "bad_limit", fmt.Sprintf("limit %q: want 1 to %d", v, host.MaxGuestEventsRead))
			return 0, 0, false
		}
		limit = n
	}
	return since, limit, true
}

// guestEvents answers GET /v1/plugins/{name}/events?since=N&limit=M: the plugin's guest
// events from sequence number N on (host.GuestEvents).
func (s *Server) guestEvents(w http.ResponseWriter, r *http.Request) {
	since, limit, ok := sinceLimit(w, r)
	if !ok {
		return
	}
	name := r.PathValue("name")
	log, err := s.h.GuestEvents(name, since, limit)
	if err != nil {
		s.hostError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, guestEventsBody{Plugin: name, Events: toGuestEvents(log.Events), Next: log.Next, Lost: log.Lost, GuestLost: log.GuestLost})
}

// guestPoll is how often a guest event stream collects new events from the plugin's
// instances.
const guestPoll = 250 * time.Millisecond

// guestStream streams plugin's guest events from since on as server-sent events (event:
// guest, id: the event's sequence number, so that a client's Last-Event-ID resumes it). It
// collects every guestPoll; events it finds evicted are announced as event: lost. It runs
// within the stream cap of events, which has counted it.
func (s *Server) guestStream(w http.ResponseWriter, r *http.Request, plugin string, since uint64) {
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		n, err := strconv.ParseUint(id, 10, 64)
		if err != nil || n == ^uint64(0) {
			writeError(w, http.StatusBadRequest, "bad_since", fmt.Sprintf("Last-Event-ID %q: want a sequence number", id))
			return
		}
		since = n + 1
	}
	if _, err := s.h.GuestEvents(plugin, since, 1); err != nil {
		s.hostError(w, err)
		return
	}
	s.m.streams.Inc()
	defer s.m.streams.Dec()
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Now().Add(sseWriteTimeout))
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-cache")
	hd.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	_, _ = fmt.Fprintf(w, ": guest events of %q from %d\n\n", plugin, since)
	_ = rc.Flush()
	poll := time.NewTicker(guestPoll)
	defer poll.Stop()
	keep := time.NewTicker(15 * time.Second)
	defer keep.Stop()
	for {
		log, err := s.h.GuestEvents(plugin, since, host.MaxGuestEventsRead)
		if err != nil {
			b, _ := json.Marshal(struct {
				Error apiError `json:"error"`
			}{apiError{Code: "plugin_not_found", Message: err.Error()}})
			_, _ = fmt.Fprintf(w, "event: error\ndata: %s\n\n", b)
			_ = rc.Flush()
			return
		}
		_ = rc.SetWriteDeadline(time.Now().Add(sseWriteTimeout))
		if log.Lost > 0 {
			if _, err := fmt.Fprintf(w, "event: lost\ndata: {\"lost\":%d}\n\n", log.Lost); err != nil {
				return
			}
		}
		for _, e := range toGuestEvents(log.Events) {
			b, _ := json.Marshal(e)
			if _, err := fmt.Fprintf(w, "id: %d\nevent: guest\ndata: %s\n\n", e.Seq, b); err != nil {
				return
			}
		}
		since = log.Next
		if rc.Flush() != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-s.stopping:
			return
		case <-keep.C:
			_ = rc.SetWriteDeadline(time.Now().Add(sseWriteTimeout))
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil {
				return
			}
		case <-poll.C:
		}
	}
}
