package natsbus

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Drop names a reason a message was not carried: its direction (out, from this node's bus to
// NATS; in, from NATS to this node's bus) and its reason.
type Drop struct {
	Direction, Reason string
}

type dropKey int

const (
	dropOutTooLarge     dropKey = iota // a local message longer than max_message_bytes
	dropOutQueueFull                   // out_queue full: NATS is slower than the local publishers
	dropOutInFlightFull                // max_in_flight at-least-once publishes await their ack
	dropOutPublishError                // NATS refused the publish, or the stream did not ack it
	dropOutShutdown                    // still queued when Close's context ended
	dropInTooLarge                     // a message from NATS longer than max_message_bytes
	dropInBadMessage                   // no node header, or a subject that names no bridged topic
	dropInClosed                       // arrived while the bridge or the host was closing
	dropInSlowConsumer                 // dropped by the NATS client: the subscription's pending limits
	nDrops
)

var dropNames = [nDrops]Drop{
	{"out", "too_large"}, {"out", "out_queue_full"}, {"out", "in_flight_full"}, {"out", "publish_error"},
	{"out", "shutdown"}, {"in", "too_large"}, {"in", "bad_message"}, {"in", "closed"}, {"in", "slow_consumer"},
}

// Stats counts what a Bridge carried since New.
type Stats struct {
	// Sent counts local messages handed to NATS (for at-least-once topics: to the async
	// publisher; one the stream then fails to ack is also in Dropped, out/publish_error).
	Sent uint64
	// Received counts messages from other nodes published on the local bus.
	Received uint64
	// Redelivered counts at-least-once messages delivered to this node again.
	Redelivered uint64
	// Echoes counts this node's own messages that came back from NATS and were skipped.
	Echoes uint64
	// Dropped counts the messages not carried, by direction and reason (only non-zero ones).
	Dropped map[Drop]uint64
}

type counters struct {
	sent, received, redelivered, echoes atomic.Uint64
	drops                               [nDrops]atomic.Uint64
}

var (
	descSent = prometheus.NewDesc("wasmvisor_cluster_bus_sent_total",
		"Local bus messages sent to the other nodes through NATS.", nil, nil)
	descReceived = prometheus.NewDesc("wasmvisor_cluster_bus_received_total",
		"Messages from other nodes published on the local bus.", nil, nil)
	descRedelivered = prometheus.NewDesc("wasmvisor_cluster_bus_redelivered_total",
		"At-least-once messages delivered to this node again.", nil, nil)
	descEchoes = prometheus.NewDesc("wasmvisor_cluster_bus_echoes_total",
		"This node's own messages back from NATS, skipped.", nil, nil)
	descDropped = prometheus.NewDesc("wasmvisor_cluster_bus_dropped_total",
		"Bus messages not carried between this node and NATS, by direction (out, in) and reason: "+
			"too_large, out_queue_full, in_flight_full, publish_error, shutdown, bad_message, closed, slow_consumer.",
		[]string{"direction", "reason"}, nil)
)

// collector exposes a Bridge's counters; slow_consumer is read from the NATS subscriptions.
type collector struct{ b *Bridge }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSent, descReceived, descRedelivered, descEchoes, descDropped} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.b.Stats()
	ch <- prometheus.MustNewConstMetric(descSent, prometheus.CounterValue, float64(s.Sent))
	ch <- prometheus.MustNewConstMetric(descReceived, prometheus.CounterValue, float64(s.Received))
	ch <- prometheus.MustNewConstMetric(descRedelivered, prometheus.CounterValue, float64(s.Redelivered))
	ch <- prometheus.MustNewConstMetric(descEchoes, prometheus.CounterValue, float64(s.Echoes))
	for _, d := range dropNames {
		ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(s.Dropped[d]), d.Direction, d.Reason)
	}
}
