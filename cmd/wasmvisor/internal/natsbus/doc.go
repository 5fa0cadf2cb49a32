// Package natsbus carries the host's bus across the nodes of a wasmvisor cluster over NATS:
// a Bridge takes a connected *nats.Conn and a *host.Host and, for each topic its Config
// lists (cluster.bus.topics), sends the local messages to the subject
// "<subject_prefix>.<escaped topic>" and publishes the other nodes' messages on the local bus
// with host.Host.PublishRemote. Topics are at most once by default; those listed in
// cluster.bus.at_least_once go through a JetStream stream and a durable consumer per node.
//
// Loops are prevented by the origin: every message carries its node's name (HeaderNode); a
// node skips its own, and never sends out a message that came from another node
// (host.Message.Node). Every bound (message size, out queue, in queue, in-flight acks,
// deliveries) has a drop reason, counted in Stats and wasmvisor_cluster_bus_dropped_total.
//
// The package knows NATS and the host's bus, nothing of the cluster's configuration file or
// connection: cmd/wasmvisor wires Config under the cluster section and passes the cluster's
// connection. See README.md for the keys and RATIONALE.md ("The bus across nodes") for why.
package natsbus
