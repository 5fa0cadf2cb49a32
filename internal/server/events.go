package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/wasmvisor/wasmvisor/host"
)

// sseEvent is the data of one server-sent event.
type sseEvent struct {
	Topic string          `json:"topic"`
	From  string          `json:"from,omitempty"`
	Data  json.RawMessage `json:"data,omitempty"` // the message, when it is JSON
	Text  string          `json:"text,omitempty"` // the message otherwise
	// Dropped counts the messages this stream has dropped so far (its buffer was full).
	Dropped uint64 `json:"dropped"`
}

// events streams the bus messages of one topic as server-sent events (event: message), with
// a comment line every 15 s. Each client has a bounded buffer (events.buffer); a message that
// does not fit is dropped and counted, in the stream (the dropped field) and in
// wasmvisor_events_dropped_total. Streams end when the client goes or the server shuts down.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	topic := r.URL.Query().Get("topic")
	if topic == "" {
		writeError(w, http.StatusBadRequest, "missing_topic", "give the topic: /v1/events?topic=T")
		return
	}
	ch := make(chan host.Message, s.cfg.Load().Events.Buffer)
	var dropped atomic.Uint64
	sub, err := s.h.Subscribe(topic, func(m host.Message) {
		select {
		case ch <- m:
		default:
			dropped.Add(1)
			s.m.dropped.Inc()
		}
	})
	if err != nil {
		s.hostError(w, err)
		return
	}
	defer sub.Unsubscribe()
	s.m.streams.Inc()
	defer s.m.streams.Dec()
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	_, _ = fmt.Fprintf(w, ": subscribed to %q\n\n", topic)
	_ = rc.Flush()
	tick := time.NewTicker(15 * time.Second)
	defer tick.Stop()
	var id uint64
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.stopping:
			return
		case <-tick.C:
			if _, err := fmt.Fprintf(w, ": keepalive dropped=%d\n\n", dropped.Load()); err != nil {
				return
			}
		case m := <-ch:
			id++
			ev := sseEvent{Topic: m.Topic, From: m.From, Dropped: dropped.Load()}
			if json.Valid(m.Data) {
				ev.Data = m.Data
			} else {
				ev.Text = string(m.Data)
			}
			b, _ := json.Marshal(ev)
			if _, err := fmt.Fprintf(w, "id: %d\nevent: message\ndata: %s\n\n", id, b); err != nil {
				return
			}
		}
		if rc.Flush() != nil {
			return
		}
	}
}
