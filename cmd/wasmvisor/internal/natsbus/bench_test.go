package natsbus_test

import (
	"fmt"

	"github.com/nats-io/nats.go"
	"testing"
	"time"

	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/natsbus"
	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
)

// BenchmarkBus is the bus's throughput, 128-byte messages on one topic with one Go
// subscriber, publisher and subscriber at most window messages apart (so that nothing is
// dropped): local, publisher and subscriber on one host; cross_node, the publisher on node a
// and the subscriber on node b, two hosts and two NATS connections to one embedded server
// (at most once).
func BenchmarkBus(b *testing.B) {
	const window = 1024
	data := make([]byte, 128)
	var stats func() string
	run := func(b *testing.B, pub, sub *host.Host) {
		b.Helper()
		tokens := make(chan struct{}, window)
		ss, err := sub.Subscribe("t", func(host.Message) { <-tokens })
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(data)))
		b.ResetTimer()
		for range b.N {
			select {
			case tokens <- struct{}{}:
			case <-time.After(wait):
				b.Fatalf("the subscriber stopped taking messages: %d %+v %s", len(tokens), ss.Dropped(), stats())
			}
			if _, err := pub.Publish("t", data); err != nil {
				b.Fatal(err)
			}
		}
		for range window { // the last ones arrived
			select {
			case tokens <- struct{}{}:
			case <-time.After(wait):
				b.Fatalf("the subscriber stopped taking messages: %d %+v %s", len(tokens), ss.Dropped(), stats())
			}
		}
		b.StopTimer()
	}
	b.Run("local", func(b *testing.B) {
		h := hosttest.New(b, host.WithBusBuffer(4*window))
		stats = func() string { return "" }
		run(b, h, h)
	})
	b.Run("cross_node", func(b *testing.B) {
		s := natsServer(b)
		c := natsbus.Config{Topics: []string{"t"}, OutQueue: 4 * window}
		// NoEcho, as the README advises: a's messages do not come back to a.
		pub := newNodeConn(b, connect(b, s, nats.NoEcho()), "a", c, host.WithBusBuffer(4*window))
		sub := newNodeConn(b, connect(b, s, nats.NoEcho()), "b", c, host.WithBusBuffer(4*window))
		stats = func() string {
			return fmt.Sprintf("a %+v b %+v anc %+v bnc %+v", pub.b.Stats(), sub.b.Stats(), pub.nc.Stats(), sub.nc.Stats())
		}
		run(b, pub.h, sub.h)
		if sa, sb := pub.b.Stats(), sub.b.Stats(); len(sa.Dropped)+len(sb.Dropped) != 0 || sa.Echoes != 0 {
			b.Fatalf("a %+v, b %+v", sa, sb)
		}
	})
}
