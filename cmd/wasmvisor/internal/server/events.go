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

// sseWriteTimeout bounds each write to an event stream: a client that stops reading is
// dropped, not waited for.
const sseWriteTimeout = 10 * time.Second

// events streams the bus messages of one topic as server-sent events (event: message), or
// with ?plugin=P[&since=N] the guest events of plugin P (guestStream), with
// a comment line every 15 s. At most events.max_streams streams are open at once: more are
// refused with 503 too_many_streams and counted (wasmvisor_http_refused_total). Each client
// has a bounded buffer (events.buffer); a message that does not fit is dropped and counted, in
// the stream (the dropped field) and in wasmvisor_events_dropped_total. Streams end when the
// client goes, stops reading for sseWriteTimeout, or the server shuts down.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	topic, plugin := r.URL.Query().Get("topic"), r.URL.Query().Get("plugin")
	switch {
	case topic == "" && plugin == "":
		writeError(w, http.StatusBadRequest, "missing_topic", "give the topic: /v1/events?topic=T, or the plugin: /v1/events?plugin=P")
		return
	case topic != "" && plugin != "":
		writeError(w, http.StatusBadRequest, "topic_and_plugin", "give the topic or the plugin, not both")
		return
	}
	since, _, ok := sinceLimit(w, r)
	if !ok {
		return
	}
	if !s.admitStream(w) {
		return
	}
	defer s.streams.Add(-1)
	if plugin != "" {
		s.guestStream(w, r, plugin, since)
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
	_ = rc.SetWriteDeadline(time.Now().Add(sseWriteTimeout))
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
			_ = rc.SetWriteDeadline(time.Now().Add(sseWriteTimeout))
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
			_ = rc.SetWriteDeadline(time.Now().Add(sseWriteTimeout))
			if _, err := fmt.Fprintf(w, "id: %d\nevent: message\ndata: %s\n\n", id, b); err != nil {
				return
			}
		}
		if rc.Flush() != nil {
			return
		}
	}
}

// admitStream takes one of the events.max_streams places for a server-sent event stream, or
// answers 503 too_many_streams (counted) and reports false. The caller gives the place back
// with s.streams.Add(-1) when the stream ends.
func (s *Server) admitStream(w http.ResponseWriter) bool {
	if limit := int64(s.cfg.Load().Events.MaxStreams); s.streams.Add(1) > limit {
		s.streams.Add(-1)
		s.m.refused.WithLabelValues("too_many_streams").Inc()
		setRetryAfter(w, 5*time.Second)
		writeError(w, http.StatusServiceUnavailable, "too_many_streams",
			fmt.Sprintf("%d event streams are open (events.max_streams)", limit))
		return false
	}
	return true
}
