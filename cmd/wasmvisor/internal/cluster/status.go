package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// NodeStatus is what a node records under its name in the status bucket.
type NodeStatus struct {
	Node string `json:"node"`
	// Revision is the last revision of the plugins bucket the node processed (applied or
	// refused); Lag how many revisions it is behind the bucket (in GET /v1/cluster).
	Revision  uint64            `json:"revision"`
	Lag       uint64            `json:"lag"`
	Plugins   map[string]string `json:"plugins"` // name: digest served
	Refused   map[string]string `json:"refused,omitempty"`
	UpdatedAt time.Time         `json:"updated_at"`
}

// Status is GET /v1/cluster.
type Status struct {
	Node      string `json:"node"`
	Connected bool   `json:"connected"` // a session with JetStream
	// Revision is the bucket's last revision, 0 when unknown (no session).
	Revision uint64       `json:"revision"`
	Nodes    []NodeStatus `json:"nodes"`
	Error    string       `json:"error,omitempty"`
}

func (n *Node) self() NodeStatus {
	n.mu.Lock()
	defer n.mu.Unlock()
	ns := NodeStatus{Node: n.c.Node, Revision: n.revision, Plugins: map[string]string{},
		Refused: maps.Clone(n.refused), UpdatedAt: time.Now().UTC()}
	for name, s := range n.specs {
		ns.Plugins[name] = s.Digest
	}
	return ns
}

// Served is the last revision this node processed.
func (n *Node) Served() uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.revision
}

// putStatus records the node's status in the status bucket (best effort: logged).
func (n *Node) putStatus(ctx context.Context) {
	n.mu.Lock()
	st := n.st
	n.mu.Unlock()
	if st == nil || ctx.Err() != nil {
		return
	}
	b, err := json.Marshal(n.self())
	if err == nil {
		octx, cancel := withOp(ctx)
		_, err = st.status.Put(octx, n.c.Node, b)
		cancel()
	}
	if err != nil {
		n.log.Warn("cluster: recording the status", zap.Error(err))
	}
}

// statusNodes bounds the nodes Status lists (each status is at most 1 MiB, the bucket's
// max value size).
const statusNodes = 128

// Report is Status as the server's GET /v1/cluster takes it.
func (n *Node) Report(ctx context.Context) any { return n.Status(ctx) }

// Status lists every node of the status bucket with its lag behind the plugins bucket.
// Without a session it shows this node only, with Connected false.
func (n *Node) Status(ctx context.Context) Status {
	n.mu.Lock()
	st := n.st
	n.mu.Unlock()
	out := Status{Node: n.c.Node, Connected: st != nil}
	if st == nil {
		out.Nodes = []NodeStatus{n.self()}
		out.Error = ErrUnavailable.Error()
		return out
	}
	octx, cancel := withOp(ctx)
	defer cancel()
	err := func() error {
		ks, err := st.kv.Status(octx)
		if err != nil {
			return err
		}
		out.Revision = lastSeq(ks)
		keys, err := st.status.ListKeys(octx)
		if err != nil {
			return err
		}
		for k := range keys.Keys() {
			if len(out.Nodes) >= statusNodes {
				_ = keys.Stop()
				out.Error = fmt.Sprintf("more than %d nodes in %s: the first %d listed", statusNodes, StatusBucket, statusNodes)
				break
			}
			e, err := st.status.Get(octx, k)
			if err != nil {
				continue
			}
			var ns NodeStatus
			if json.Unmarshal(e.Value(), &ns) != nil {
				continue
			}
			if ns.Revision < out.Revision {
				ns.Lag = out.Revision - ns.Revision
			}
			out.Nodes = append(out.Nodes, ns)
		}
		return nil
	}()
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		out.Error = err.Error()
	}
	if len(out.Nodes) > statusNodes {
		out.Nodes = out.Nodes[:statusNodes]
	}
	if !slices.ContainsFunc(out.Nodes, func(s NodeStatus) bool { return s.Node == n.c.Node }) {
		out.Nodes = append(out.Nodes, n.self())
	}
	slices.SortFunc(out.Nodes, func(a, b NodeStatus) int {
		if a.Node < b.Node {
			return -1
		}
		if a.Node > b.Node {
			return 1
		}
		return 0
	})
	return out
}

// lastSeq is a bucket's last stream sequence: its revision.
func lastSeq(ks jetstream.KeyValueStatus) uint64 {
	if bs, ok := ks.(*jetstream.KeyValueBucketStatus); ok {
		return bs.StreamInfo().State.LastSeq
	}
	return 0
}
