package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/config"
)

// startEmbedded starts the NATS server of cluster.embedded: JetStream in StoreDir, clients on
// Listen, routes on ClusterListen to Routes. It waits (at most 10 s) until it accepts clients;
// JetStream itself becomes available once the cluster's peers elect a leader.
func startEmbedded(c config.Cluster) (*server.Server, error) {
	e := c.Embedded
	host, port, err := hostPort(e.Listen)
	if err != nil {
		return nil, fmt.Errorf("cluster.embedded.listen: %w", err)
	}
	opts := &server.Options{ServerName: c.Node, Host: host, Port: port, JetStream: true, StoreDir: e.StoreDir,
		NoSigs: true, NoLog: true} // NATS's default max payload (1 MiB) carries the object store's 128 KiB chunks
	if e.ClusterListen != "" {
		ch, cp, err := hostPort(e.ClusterListen)
		if err != nil {
			return nil, fmt.Errorf("cluster.embedded.cluster_listen: %w", err)
		}
		opts.Cluster = server.ClusterOpts{Name: e.Name, Host: ch, Port: cp}
		for _, r := range e.Routes {
			u, err := url.Parse(r)
			if err != nil {
				return nil, fmt.Errorf("cluster.embedded.routes: %w", err)
			}
			opts.Routes = append(opts.Routes, u)
		}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("cluster: embedded NATS server: %w", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, errors.New("cluster: the embedded NATS server did not accept connections within 10s")
	}
	return ns, nil
}

// hostPort splits HOST:PORT; port 0 is the server's "pick one" (-1).
func hostPort(s string) (string, int, error) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 65535 {
		return "", 0, fmt.Errorf("port %q", p)
	}
	if n == 0 {
		n = server.RANDOM_PORT
	}
	return h, n, nil
}

// connect dials NATS without waiting for it: a client that retries forever (every
// reconnectWait), so that a node started while NATS is down serves its cache and joins when
// NATS answers. up receives a token on every (re)connection.
func connect(c config.Cluster, urls string, up chan<- struct{}) (*nats.Conn, error) {
	signal := func(*nats.Conn) {
		select {
		case up <- struct{}{}:
		default:
		}
	}
	opts := []nats.Option{nats.Name("wasmvisor " + c.Node), nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1),
		nats.ReconnectWait(reconnectWait), nats.ConnectHandler(signal), nats.ReconnectHandler(signal),
		nats.Timeout(2 * time.Second), nats.PingInterval(5 * time.Second), nats.MaxPingsOutstanding(2),
		// The bus bridge (package natsbus) shares the connection: a node must not receive the
		// messages it publishes itself (it would skip them, after they filled its pending).
		nats.NoEcho()}
	if c.Credentials != "" {
		opts = append(opts, nats.UserCredentials(c.Credentials))
	}
	if c.TLS.CA != "" {
		opts = append(opts, nats.RootCAs(c.TLS.CA))
	}
	if c.TLS.Cert != "" {
		opts = append(opts, nats.ClientCert(c.TLS.Cert, c.TLS.Key))
	}
	nc, err := nats.Connect(strings.ReplaceAll(urls, " ", ""), opts...)
	if err != nil {
		return nil, fmt.Errorf("cluster: NATS: %w", err)
	}
	return nc, nil
}

// reconnectWait is the client's wait between reconnection attempts and the node's between two
// sessions with JetStream.
var reconnectWait = 500 * time.Millisecond

// setupTimeout bounds a session's creation of the stores.
const setupTimeout = 3 * time.Second

// opTimeout bounds each JetStream request (a bucket's creation, a put, a get).
const opTimeout = 10 * time.Second

func withOp(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, opTimeout)
}
