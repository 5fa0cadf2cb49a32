package natsbus_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"pgregory.net/rapid"

	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/natsbus"
	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
)

func TestMain(m *testing.M) { hosttest.VerifyTestMain(m) }

// wait is the failure limit of every wait in these tests.
const wait = 10 * time.Second

// natsServer runs an embedded NATS server with JetStream on a loopback ephemeral port, its
// store in a temporary directory, until the test ends.
func natsServer(t testing.TB) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true,
		StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(wait) {
		s.Shutdown()
		t.Fatal("nats server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

func connect(t testing.TB, s *server.Server, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), append([]nats.Option{nats.NoReconnect()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func ctxT(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

// node is one wasmvisor node: a host, its connection, its bridge.
type node struct {
	h  *host.Host
	nc *nats.Conn
	b  *natsbus.Bridge
	rx chan string // a message from NATS handled: its data
	tx chan string // a local message handed to NATS (or dropped): its data
}

func newNode(t testing.TB, s *server.Server, name string, c natsbus.Config, opts ...host.Option) *node {
	t.Helper()
	return newNodeConn(t, connect(t, s), name, c, opts...)
}

func newNodeConn(t testing.TB, nc *nats.Conn, name string, c natsbus.Config, opts ...host.Option) *node {
	t.Helper()
	n := &node{h: hosttest.New(t, opts...), nc: nc, rx: make(chan string, 1<<16), tx: make(chan string, 1<<16)}
	n.start(t, name, c)
	return n
}

func (n *node) start(t testing.TB, name string, c natsbus.Config) {
	t.Helper()
	rx, tx := n.rx, n.tx
	b, err := natsbus.NewWithHook(ctxT(t), natsbus.Options{Conn: n.nc, Host: n.h, Node: name, Config: c},
		func(data []byte) {
			select { // never blocks the bridge (a benchmark's many messages): tests wait for fewer
			case rx <- string(data):
			default:
			}
		},
		func(data []byte) {
			select {
			case tx <- string(data):
			default:
			}
		})
	if err != nil {
		t.Fatal(err)
	}
	n.b = b
	t.Cleanup(func() { _ = b.Close(context.Background()) })
}

// received waits until the bridge handled k more messages from NATS, and returns their data.
func (n *node) received(t testing.TB, k int) []string {
	t.Helper()
	timeout := time.After(wait)
	var got []string
	for range k {
		select {
		case d := <-n.rx:
			got = append(got, d)
		case <-timeout:
			t.Fatalf("bridge handled fewer than %d messages: %+v", k, n.b.Stats())
		}
	}
	return got
}

func recv(t testing.TB, ch <-chan host.Message) host.Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(wait):
		t.Fatal("no message")
	}
	return host.Message{}
}

func TestCrossNodePublishNoEcho(t *testing.T) {
	t.Parallel()
	s := natsServer(t)
	c := natsbus.Config{Topics: []string{"orders.created", "other"}}
	a, b := newNode(t, s, "a", c), newNode(t, s, "b", c)
	atA, atB := make(chan host.Message, 8), make(chan host.Message, 8)
	if _, err := a.h.Subscribe("orders.created", func(m host.Message) { atA <- m }); err != nil {
		t.Fatal(err)
	}
	if _, err := b.h.Subscribe("orders.created", func(m host.Message) { atB <- m }); err != nil {
		t.Fatal(err)
	}
	if _, err := a.h.Publish("orders.created", []byte("one")); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, atA); m.Node != "" || string(m.Data) != "one" {
		t.Fatalf("a's own message at a: %+v", m)
	}
	if m := recv(t, atB); m.Node != "a" || m.From != "" || string(m.Data) != "one" || m.Topic != "orders.created" {
		t.Fatalf("a's message at b: %+v", m)
	}
	// b answers; b's bridge must not send "one" back (it came from a), and a must skip its
	// own "one" coming back from NATS: a sees exactly "two" next.
	if _, err := b.h.Publish("orders.created", []byte("two")); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, atA); m.Node != "b" || string(m.Data) != "two" {
		t.Fatalf("b's message at a: %+v", m)
	}
	if m := recv(t, atB); m.Node != "" || string(m.Data) != "two" {
		t.Fatalf("b's own message at b: %+v", m)
	}
	// The NATS connection delivers in order: a's echo of "one" came before "two". Each
	// bridge counts its message sent after handing it to NATS, which may deliver it first.
	for _, n := range []*node{a, b} {
		select {
		case <-n.tx:
		case <-time.After(wait): // a failure limit, not a wait
			t.Fatalf("a message was not sent: %+v", n.b.Stats())
		}
	}
	if err := a.h.Flush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := b.h.Flush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	sa, sb := a.b.Stats(), b.b.Stats()
	if sa.Sent != 1 || sa.Received != 1 || sa.Echoes != 1 || len(sa.Dropped) != 0 {
		t.Fatalf("a: %+v", sa)
	}
	if sb.Sent != 1 || sb.Received != 1 || len(sb.Dropped) != 0 {
		t.Fatalf("b: %+v", sb)
	}
	if len(atA) != 0 || len(atB) != 0 {
		t.Fatalf("extra messages: a %d, b %d", len(atA), len(atB))
	}
}

func TestForeignPublisher(t *testing.T) {
	t.Parallel()
	s := natsServer(t)
	c := natsbus.Config{Topics: []string{"t"}, MaxMessageBytes: 1024}
	b := newNode(t, s, "b", c)
	atB := make(chan host.Message, 8)
	if _, err := b.h.Subscribe("t", func(m host.Message) { atB <- m }); err != nil {
		t.Fatal(err)
	}
	raw := connect(t, s)
	subject := natsbus.Subject(natsbus.DefaultSubjectPrefix, "t")
	pub := func(h nats.Header, data []byte) {
		t.Helper()
		if err := raw.PublishMsg(&nats.Msg{Subject: subject, Header: h, Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	pub(nats.Header{}, []byte("no node"))
	pub(nats.Header{natsbus.HeaderNode: {strings.Repeat("n", 65)}}, []byte("node too long"))
	pub(nats.Header{natsbus.HeaderNode: {"c"}}, make([]byte, 1025))
	pub(nats.Header{natsbus.HeaderNode: {"c"}, natsbus.HeaderFrom: {"plug"}}, []byte("ok"))
	b.received(t, 4)
	if m := recv(t, atB); m.Node != "c" || m.From != "plug" || string(m.Data) != "ok" {
		t.Fatalf("got %+v", m)
	}
	st := b.b.Stats()
	want := map[natsbus.Drop]uint64{{Direction: "in", Reason: "bad_message"}: 2, {Direction: "in", Reason: "too_large"}: 1}
	if fmt.Sprint(st.Dropped) != fmt.Sprint(want) || st.Received != 1 {
		t.Fatalf("stats %+v, want drops %v", st, want)
	}
}

func TestOutBoundsAndMetrics(t *testing.T) {
	t.Parallel()
	s := natsServer(t)
	reg := prometheus.NewRegistry()
	h := hosttest.New(t)
	b, err := natsbus.New(ctxT(t), natsbus.Options{Conn: connect(t, s), Host: h, Node: "a", Registerer: reg,
		Config: natsbus.Config{Topics: []string{"t"}, MaxMessageBytes: 16}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Publish("t", make([]byte, 17)); err != nil {
		t.Fatal(err)
	}
	if err := h.Flush(ctxT(t)); err != nil { // onLocal ran
		t.Fatal(err)
	}
	const name = "wasmvisor_cluster_bus_dropped_total"
	got, err := testutil.GatherAndCount(reg, name)
	if err != nil || got != 9 {
		t.Fatalf("%s series: %d, %v", name, got, err)
	}
	if v := testutil.ToFloat64(dropped(t, reg, "out", "too_large")); v != 1 {
		t.Fatalf("out/too_large = %v", v)
	}
	if err := b.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(ctxT(t)); !errors.Is(err, natsbus.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	if n, _ := testutil.GatherAndCount(reg, name); n != 0 {
		t.Fatalf("metrics still registered after Close: %d", n)
	}
}

// dropped is a collector of the one dropped_total series with these labels, gathered now.
func dropped(t *testing.T, reg *prometheus.Registry, dir, reason string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "wasmvisor_cluster_bus_dropped_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := m.GetLabel()
			if l[0].GetValue() == dir && l[1].GetValue() == reason {
				g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "x"})
				g.Set(m.GetCounter().GetValue())
				return g
			}
		}
	}
	t.Fatalf("no series %s/%s", dir, reason)
	return nil
}

// A slow subscriber on the receiving node drops what its bus buffer cannot hold, counted by
// the local bus as for a local publish.
func TestSlowRemoteSubscriberDrops(t *testing.T) {
	t.Parallel()
	s := natsServer(t)
	c := natsbus.Config{Topics: []string{"t"}}
	a := newNode(t, s, "a", c)
	b := newNode(t, s, "b", c, host.WithBusBuffer(1))
	release := make(chan struct{})
	var got []string
	slow, err := b.h.Subscribe("t", func(m host.Message) {
		<-release
		got = append(got, string(m.Data))
	})
	if err != nil {
		t.Fatal(err)
	}
	const n = 10
	for i := range n {
		if _, err := a.h.Publish("t", []byte{byte('0' + i)}); err != nil {
			t.Fatal(err)
		}
	}
	b.received(t, n)
	close(release)
	if err := b.h.Flush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if slow.Delivered()+slow.Dropped() != n || slow.Dropped() < n-2 || b.b.Stats().Received != n {
		t.Fatalf("delivered %d dropped %d (got %q), bridge %+v", slow.Delivered(), slow.Dropped(), got, b.b.Stats())
	}
	if got[0] != "0" {
		t.Fatalf("first delivered %q", got[0])
	}
}

// An at-least-once topic reaches a node that was down when it was published, in order, once
// the node is back (its durable consumer kept its place).
func TestAtLeastOnceAfterRestart(t *testing.T) {
	t.Parallel()
	s := natsServer(t)
	c := natsbus.Config{Topics: []string{"jobs", "chat"}, AtLeastOnce: []string{"jobs"}, Stream: "BUS_TEST"}
	a := newNode(t, s, "a", c)
	b := newNode(t, s, "b", c)
	if err := b.b.Close(ctxT(t)); err != nil { // b goes down; its consumer stays
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := a.h.Publish("jobs", []byte{byte('0' + i)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.h.Publish("chat", []byte("lost")); err != nil { // at most once: b misses it
		t.Fatal(err)
	}
	if err := a.h.Flush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := a.b.Close(ctxT(t)); err != nil { // waits for the stream's acks
		t.Fatal(err)
	}
	if st := a.b.Stats(); st.Sent != 4 || len(st.Dropped) != 0 {
		t.Fatalf("a: %+v", st)
	}
	atB := make(chan host.Message, 8)
	if _, err := b.h.Subscribe("jobs", func(m host.Message) { atB <- m }); err != nil {
		t.Fatal(err)
	}
	b.start(t, "b", c) // back
	for i := range 3 {
		if m := recv(t, atB); m.Node != "a" || string(m.Data) != string(rune('0'+i)) {
			t.Fatalf("message %d: %+v", i, m)
		}
	}
	b.received(t, 3)
	if st := b.b.Stats(); st.Received != 3 || len(st.Dropped) != 0 {
		t.Fatalf("b: %+v", st)
	}
}

func TestNewRefuses(t *testing.T) {
	t.Parallel()
	s := natsServer(t)
	nc := connect(t, s)
	h := hosttest.New(t)
	for _, tc := range []struct {
		name string
		o    natsbus.Options
		want error
	}{
		{"no conn", natsbus.Options{Host: h, Node: "a"}, natsbus.ErrInvalidOptions},
		{"no host", natsbus.Options{Conn: nc, Node: "a"}, natsbus.ErrInvalidOptions},
		{"no node", natsbus.Options{Conn: nc, Host: h}, natsbus.ErrInvalidOptions},
		{"node too long", natsbus.Options{Conn: nc, Host: h, Node: strings.Repeat("a", 65)}, natsbus.ErrInvalidOptions},
		{"bad config", natsbus.Options{Conn: nc, Host: h, Node: "a", Config: natsbus.Config{MaxMessageBytes: -1}}, natsbus.ErrConfig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if b, err := natsbus.New(ctxT(t), tc.o); !errors.Is(err, tc.want) {
				if b != nil {
					_ = b.Close(ctxT(t))
				}
				t.Fatalf("New: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		c    natsbus.Config
		keys []string
	}{
		{"zero", natsbus.Config{}, nil},
		{"good", natsbus.Config{Topics: []string{"a.b", "c"}, AtLeastOnce: []string{"c"}, SubjectPrefix: "x.y",
			MaxMessageBytes: 1 << 20, AckWait: time.Second, Stream: "S_1", Replicas: 3}, nil},
		{"prefix", natsbus.Config{SubjectPrefix: "a..b"}, []string{"cluster.bus.subject_prefix"}},
		{"wildcard prefix", natsbus.Config{SubjectPrefix: "a.>"}, []string{"cluster.bus.subject_prefix"}},
		{"empty topic", natsbus.Config{Topics: []string{""}}, []string{"cluster.bus.topics[0]"}},
		{"long topic", natsbus.Config{Topics: []string{strings.Repeat("t", 256)}}, []string{"cluster.bus.topics[0]"}},
		{"twice", natsbus.Config{Topics: []string{"a", "a"}}, []string{"cluster.bus.topics[1]"}},
		{"not bridged", natsbus.Config{Topics: []string{"a"}, AtLeastOnce: []string{"b"}}, []string{"cluster.bus.at_least_once[0]"}},
		{"bounds", natsbus.Config{MaxMessageBytes: 8<<20 + 1, OutQueue: -1, InQueue: -1, MaxInFlight: 1<<20 + 1, MaxDeliver: 101,
			Replicas: 6, AckWait: time.Millisecond, Stream: "a.b", StreamMaxAge: -1, StreamMaxBytes: -1, ConsumerInactive: -1},
			[]string{"max_message_bytes", "out_queue", "in_queue", "max_in_flight", "max_deliver", "replicas", "ack_wait", "stream",
				"stream_max_age", "stream_max_bytes", "consumer_inactive"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.Validate()
			if len(tc.keys) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, natsbus.ErrConfig) {
				t.Fatalf("%v: not ErrConfig", err)
			}
			var ce *natsbus.ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("%v: no *ConfigError", err)
			}
			for _, k := range tc.keys {
				if !strings.HasPrefix(k, "cluster.bus.") {
					k = "cluster.bus." + k
				}
				if !strings.Contains(err.Error(), k+": ") {
					t.Errorf("%v: does not name %s", err, k)
				}
			}
			if n := strings.Count(err.Error(), "\n") + 1; n != len(tc.keys) {
				t.Errorf("%d errors, want %d: %v", n, len(tc.keys), err)
			}
		})
	}
}

func TestSubjectEscape(t *testing.T) {
	t.Parallel()
	for topic, want := range map[string]string{
		"orders":        "p.orders",
		"a.b":           "p.a~2Eb",
		"x*>~ y":        "p.x~2A~3E~7E~20y",
		"é":             "p.~C3~A9",
		"Kebab-Snake_1": "p.Kebab-Snake_1",
	} {
		if got := natsbus.Subject("p", topic); got != want {
			t.Errorf("Subject(%q) = %q, want %q", topic, got, want)
		}
	}
	for _, bad := range []string{"a.b", "~", "~2", "~2G", "~41", "a b", "~2e"} {
		if _, err := natsbus.UnescapeToken(bad); err == nil {
			t.Errorf("UnescapeToken(%q) accepted", bad)
		}
	}
	rapid.Check(t, func(t *rapid.T) {
		topic := rapid.String().Draw(t, "topic")
		tok := natsbus.EscapeToken(topic)
		if strings.ContainsAny(tok, ".*> \t\r\n") {
			t.Fatalf("token %q of %q is not one subject token", tok, topic)
		}
		back, err := natsbus.UnescapeToken(tok)
		if err != nil || back != topic {
			t.Fatalf("%q -> %q -> %q, %v", topic, tok, back, err)
		}
	})
}

// A guest's publish crosses too, with the plugin's name.
func TestGuestPublishCrossesNodes(t *testing.T) {
	t.Parallel()
	s := natsServer(t)
	c := natsbus.Config{Topics: []string{"orders"}}
	a, b := newNode(t, s, "a", c), newNode(t, s, "b", c)
	hosttest.Load(t, a.h, "pub", hosttest.ReadFile(t, "../../../../plugins/reference/reference.wasm"))
	atB := make(chan host.Message, 1)
	if _, err := b.h.Subscribe("orders", func(m host.Message) { atB <- m }); err != nil {
		t.Fatal(err)
	}
	if out, err := a.h.Call(ctxT(t), "pub", "publish", []byte("orders\n42")); err != nil || string(out) != "0" {
		t.Fatalf("publish: %q, %v", out, err)
	}
	if m := recv(t, atB); m.Node != "a" || m.From != "pub" || string(m.Data) != "42" {
		t.Fatalf("got %+v", m)
	}
}

// A node that cannot publish an at-least-once message on its bus (its host closed) naks it;
// the stream delivers it again, max_deliver times in all, each counted, and then lets it go:
// with one message in flight (max_in_flight 1) the next one comes only after that.
func TestAtLeastOnceRedeliveryBounded(t *testing.T) {
	t.Parallel()
	s := natsServer(t)
	c := natsbus.Config{Topics: []string{"jobs"}, AtLeastOnce: []string{"jobs"}, MaxDeliver: 3, MaxInFlight: 1}
	a, b := newNode(t, s, "a", c), newNode(t, s, "b", c)
	if err := b.h.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"x", "y"} {
		if _, err := a.h.Publish("jobs", []byte(d)); err != nil {
			t.Fatal(err)
		}
	}
	if got := strings.Join(b.received(t, 6), ""); got != "xxxyyy" {
		t.Fatalf("deliveries %q, want xxxyyy", got)
	}
	st := b.b.Stats()
	if st.Redelivered != 4 || st.Received != 0 || st.Dropped[natsbus.Drop{Direction: "in", Reason: "closed"}] != 6 {
		t.Fatalf("b: %+v", st)
	}
}
