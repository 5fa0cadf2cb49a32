package decisionlog

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest"
)

// natsServer runs an embedded NATS server with JetStream on a loopback ephemeral port, its
// store in a temporary directory, until the test ends (or the test shuts it down).
func natsServer(t *testing.T) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true,
		StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(limit) {
		s.Shutdown()
		t.Fatal("nats server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

func natsConn(t *testing.T, s *server.Server, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// decisionStream creates the stream an operator would: DECISIONS, capturing decisions.>.
func decisionStream(t *testing.T, nc *nats.Conn) jetstream.Stream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "DECISIONS", Subjects: []string{"decisions.>"}})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestJetStreamSinkDelivers(t *testing.T) {
	s := natsServer(t)
	nc := natsConn(t, s, nats.NoReconnect())
	st := decisionStream(t, nc)
	l, err := New(Options{Logger: zaptest.NewLogger(t), JetStream: &JetStreamOptions{Conn: nc, Subject: "decisions.n1",
		BatchSize: 64, MaxInFlight: 16}})
	if err != nil {
		t.Fatal(err)
	}
	const n = 250
	for i := range n {
		l.Log(&Record{DecisionID: NewID(), Plugin: "authz", Status: 200 + i%2})
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if w := testutil.ToFloat64(l.m.written.WithLabelValues("jetstream")); w != n {
		t.Fatalf("written %v, want %d", w, n)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != n {
		t.Fatalf("stream holds %d records, want %d", info.State.Msgs, n)
	}
	m, err := st.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	var r Record
	if err := json.Unmarshal(m.Data, &r); err != nil || r.Plugin != "authz" || r.DecisionID == "" || m.Subject != "decisions.n1" {
		t.Fatalf("first record %q on %q: %v", m.Data, m.Subject, err)
	}
}

// Without a stream on the subject every publish fails; each batch is retried MaxRetries times
// and then dropped, retries_exhausted.
func TestJetStreamSinkNoStream(t *testing.T) {
	s := natsServer(t)
	nc := natsConn(t, s, nats.NoReconnect())
	l, err := New(Options{Logger: zaptest.NewLogger(t), JetStream: &JetStreamOptions{Conn: nc, Subject: "nowhere",
		BatchSize: 5, MaxRetries: 1, RetryBackoff: time.Millisecond, Timeout: limit}})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		l.Log(&Record{})
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if d := testutil.ToFloat64(l.m.dropped.WithLabelValues("jetstream", "retries_exhausted")); d != 5 {
		t.Fatalf("dropped (retries_exhausted) %v, want 5", d)
	}
	if r := testutil.ToFloat64(l.m.retries); r != 1 {
		t.Fatalf("retries %v, want 1", r)
	}
}

// With the server gone (the connection reconnecting, acks never coming) Log never waits:
// past the queue records are dropped (queue_full), and Close's deadline drops what the sink
// holds (shutdown).
func TestJetStreamSinkServerDown(t *testing.T) {
	s := natsServer(t)
	nc := natsConn(t, s, nats.MaxReconnects(-1), nats.ReconnectWait(time.Hour))
	decisionStream(t, nc)
	down := make(chan struct{})
	nc.SetDisconnectErrHandler(func(*nats.Conn, error) { close(down) })
	s.Shutdown()
	select {
	case <-down:
	case <-time.After(limit):
		t.Fatal("the connection did not see the server go")
	}
	l, err := New(Options{Logger: zaptest.NewLogger(t), JetStream: &JetStreamOptions{Conn: nc, Subject: "decisions.n1",
		BatchSize: 10, Queue: 100, Timeout: time.Hour, MaxRetries: -1}})
	if err != nil {
		t.Fatal(err)
	}
	const n = 100_000
	start := time.Now()
	for range n {
		l.Log(&Record{Outcome: "allow"})
	}
	if el := time.Since(start); el > limit {
		t.Fatalf("%d records took %v with the server down", n, el)
	}
	full := testutil.ToFloat64(l.m.dropped.WithLabelValues("jetstream", "queue_full"))
	if full < n-110 {
		t.Fatalf("dropped (queue_full) %v, want at least %d: the queue holds 100, a batch 10", full, n-110)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := l.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close = %v, want the deadline", err)
	}
	sd := testutil.ToFloat64(l.m.dropped.WithLabelValues("jetstream", "shutdown"))
	if w := testutil.ToFloat64(l.m.written.WithLabelValues("jetstream")); w != 0 || full+sd != n {
		t.Fatalf("written %v, queue_full %v + shutdown %v != %d", w, full, sd, n)
	}
}

func TestJetStreamOptionsRefused(t *testing.T) {
	s := natsServer(t)
	nc := natsConn(t, s, nats.NoReconnect())
	for _, o := range []JetStreamOptions{
		{Subject: "decisions"},
		{Conn: nc},
		{Conn: nc, Subject: "decisions.*"},
		{Conn: nc, Subject: "decisions.>"},
		{Conn: nc, Subject: "a..b"},
		{Conn: nc, Subject: "a b"},
	} {
		if l, err := New(Options{JetStream: &o}); !errors.Is(err, ErrJetStreamOptions) {
			if l != nil {
				_ = l.Close(context.Background())
			}
			t.Errorf("New(%+v) = %v, want ErrJetStreamOptions", o, err)
		}
	}
}
