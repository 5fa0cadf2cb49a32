package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// maxPushModule bounds the module push reads (the server's default http.max_module_bytes).
const maxPushModule = 64 << 20

type pushFlags struct {
	server, token, name string
	config              []string
	instances           int
	failurePolicy       string
	timeout             time.Duration
}

// newPushCmd is `wasmvisor push`: a module and its settings PUT to one node's API. On a
// cluster's node the PUT is written to the cluster's desired state, which every node
// applies (cmd/wasmvisor/internal/cluster/CLUSTER.md); on a single node it is a PUT.
func newPushCmd(stdout io.Writer) *cobra.Command {
	var f pushFlags
	cmd := &cobra.Command{
		Use:   "push <plugin.wasm> --name NAME [--server URL] [--config KEY=VALUE]...",
		Short: "Push a module and its settings to a node (and through it to the cluster)",
		Long: `Push a module to a wasmvisor server's API (PUT /v1/plugins/NAME): on a node with a cluster
section it becomes the cluster's desired state, applied by every node (make-before-break).
The admin token is --token or WASMVISOR_ADMIN_TOKEN. The answer is the plugin as the node serves it.`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error { return runPush(cmd.Context(), a[0], f, stdout) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.server, "server", "http://127.0.0.1:8080", "the node's base URL")
	fl.StringVar(&f.token, "token", "", "admin token (default: $WASMVISOR_ADMIN_TOKEN)")
	fl.StringVar(&f.name, "name", "", "plugin name (required)")
	fl.StringArrayVar(&f.config, "config", nil, "config KEY=VALUE (repeatable)")
	fl.IntVar(&f.instances, "instances", 0, "instances (default: the node's, 1 for a new plugin)")
	fl.StringVar(&f.failurePolicy, "failure-policy", "", "deny, allow or monitor")
	fl.DurationVar(&f.timeout, "timeout", time.Minute, "bound of the whole request")
	return cmd
}

func runPush(ctx context.Context, path string, f pushFlags, stdout io.Writer) error {
	if f.name == "" {
		return usageError{errors.New("--name is required")}
	}
	if f.token == "" {
		f.token = os.Getenv("WASMVISOR_ADMIN_TOKEN")
	}
	u, err := url.Parse(f.server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageError{fmt.Errorf("--server: want http://HOST:PORT, got %q", f.server)}
	}
	file, err := os.Open(path)
	if err != nil {
		return err
	}
	wasm, err := io.ReadAll(io.LimitReader(file, maxPushModule+1))
	_ = file.Close()
	if err != nil {
		return err
	}
	if len(wasm) > maxPushModule {
		return fmt.Errorf("%s: over %d bytes", path, maxPushModule)
	}
	q := url.Values{}
	for _, kv := range f.config {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return usageError{fmt.Errorf("--config: want KEY=VALUE, got %q", kv)}
		}
		q.Set("config."+k, v)
	}
	if f.instances != 0 {
		q.Set("instances", fmt.Sprint(f.instances))
	}
	if f.failurePolicy != "" {
		q.Set("failure_policy", f.failurePolicy)
	}
	u = u.JoinPath("v1", "plugins", f.name)
	u.RawQuery = q.Encode()
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u.String(), bytes.NewReader(wasm))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/wasm")
	req.Header.Set("Authorization", "Bearer "+f.token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("push: %w", err)
	}
	defer func() { _ = res.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("push: %w", err)
	}
	if res.StatusCode != http.StatusOK && res.StatusCode != http.StatusCreated {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(body, &e) == nil && e.Error.Code != "" {
			return fmt.Errorf("push: %s %s: %s", res.Status, e.Error.Code, e.Error.Message)
		}
		return fmt.Errorf("push: %s", res.Status)
	}
	_, err = stdout.Write(body)
	return err
}
