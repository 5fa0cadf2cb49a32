// Package e2e holds the multi-node test of package cluster: three NATS servers with
// JetStream clustered on loopback, three wasmvisor servers (package server) joined to them,
// in one go test. It is its own package so that `go test ./...` runs it beside the others.
package e2e
