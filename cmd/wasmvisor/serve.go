package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/cluster"
	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/config"
	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/natsbus"
	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/server"
	"github.com/wasmvisor/wasmvisor/plugins"
)

//go:embed default.yaml
var defaultConfig []byte

// defaultSource names the embedded default configuration.
const defaultSource = "(embedded default)"

func newServeCmd(stderr io.Writer) *cobra.Command {
	var configFile, addrFile string
	cmd := &cobra.Command{
		Use:   "serve [--config FILE] [--listen ADDR]",
		Short: "Serve policy plugins over HTTP, with hot reload",
		Long: `Serve plugins over HTTP: load the plugins of a configuration, serve calls and the admin
API (cmd/wasmvisor/internal/server/API.md), reload on SIGHUP and when the file or a module it
names changes, and drain in-flight calls on SIGTERM or SIGINT.

With no --config, the embedded default configuration serves the built-in policies (authz,
validate, ratelimit) on 127.0.0.1:8080. Keys: cmd/wasmvisor/internal/config/CONFIG.md.
Environment variables WASMVISOR_<KEY> override the file, and flags override both. An invalid
configuration is refused with one line naming the key and the problem.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runServe(cmd, configFile, addrFile, stderr)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&configFile, "config", "", "configuration file (default: the embedded default)")
	fl.String("listen", "", "listen address HOST:PORT (overrides listen; port 0 picks a free one)")
	fl.String("log-level", "", "debug, info, warn or error (overrides log.level)")
	fl.String("log-format", "", "json or console (overrides log.format)")
	fl.StringVar(&addrFile, "addr-file", "", "write the bound address to this file once listening")
	return cmd
}

func runServe(cmd *cobra.Command, configFile, addrFile string, stderr io.Writer) error {
	ctx := cmd.Context()
	read := func() (*config.Config, error) {
		in := config.Input{Data: defaultConfig, Source: defaultSource}
		if configFile != "" {
			var err error
			if in, err = config.ReadFile(configFile); err != nil {
				return nil, err
			}
		}
		in.Flags, in.Builtin, in.Builtins = cmd.Flags(), plugins.Builtin, plugins.Builtins()
		return config.Parse(in)
	}
	c, err := read()
	if err != nil {
		return err
	}
	log, err := newLogger(c.Log, stderr)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	reread := read
	if configFile == "" {
		reread = nil // the embedded default cannot change
	}
	// A cluster's node: the file's plugins seed the cluster and go through it (package
	// cluster); the server itself loads none of them.
	var node *cluster.Node
	opts := server.Options{Config: c, Reread: reread, Logger: log, Builtin: plugins.Builtin}
	if c.Cluster.Enabled {
		if node, err = cluster.Open(cluster.Options{Config: c.Cluster, Seed: c.Plugins, Resolve: resolveModule,
			Logger: log}); err != nil {
			_ = ln.Close()
			return err
		}
		defer func() { _ = node.Close() }()
		opts.Config, opts.Cluster, opts.Reread, opts.NATS = clusterServed(c), node, nil, node.Conn()
		if reread != nil {
			opts.Reread = func() (*config.Config, error) {
				c, err := read()
				if err != nil {
					return nil, err
				}
				if err := node.FileChanged(ctx, c.Plugins); err != nil {
					return nil, err
				}
				return clusterServed(c), nil
			}
		}
	}
	// Listen first: the API answers (/healthz 200, /readyz 503 naming what is loading, calls
	// 503 plugin_loading) while the plugins load.
	srv, err := server.Open(ctx, opts)
	if err != nil {
		_ = ln.Close()
		return err
	}
	if node != nil {
		srv.Host().Metrics().MustRegister(node.Collectors()...)
	}
	if addrFile != "" {
		if err := os.WriteFile(addrFile, []byte(ln.Addr().String()), 0o600); err != nil {
			_ = ln.Close()
			_ = srv.Shutdown(ctx)
			return err
		}
	}

	// Execute/interrupt pairs: the HTTP server, the initial load, the file watcher, the
	// signals. The shutdown's own error (a timeout, leaked instances) is the command's.
	var g server.Group
	var shutdownErr error
	g.Add(func() error { return srv.Serve(ln) }, func(error) {
		if shutdownErr = srv.Shutdown(context.WithoutCancel(ctx)); shutdownErr != nil {
			log.Error("shutdown", zap.Error(shutdownErr))
		}
	})
	loadCtx, stopLoad := context.WithCancel(ctx)
	g.Add(func() error {
		var err error
		if node != nil {
			// The cache (or, on the first start, the file's plugins) before the server is
			// ready, then the cluster.
			err = node.Restore(loadCtx, srv)
		}
		if err == nil {
			err = srv.Load(loadCtx)
		}
		if err == nil && node != nil {
			return node.Run(loadCtx, srv)
		}
		if err != nil {
			if loadCtx.Err() != nil {
				return nil // interrupted: another actor ended the group
			}
			return err // the server does not serve a configuration it could not load
		}
		<-loadCtx.Done()
		return nil
	}, func(error) { stopLoad() })
	if node != nil && len(c.Cluster.Bus.Topics) > 0 {
		busCtx, stopBus := context.WithCancel(ctx)
		g.Add(func() error { return runBusBridge(busCtx, node, srv, c.Cluster.Bus, log) }, func(error) { stopBus() })
	}
	watchCtx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	g.Add(func() error { return srv.Watch(watchCtx) }, func(error) { stopWatch() })
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	sigCtx, stopSig := context.WithCancel(ctx)
	g.Add(func() error {
		defer signal.Stop(hup)
		for {
			select {
			case <-sigCtx.Done():
				if ctx.Err() != nil {
					log.Info("shutting down: draining calls in flight")
				}
				return nil
			case <-hup:
				if err := srv.Reload(sigCtx, "SIGHUP"); err != nil && reread == nil {
					log.Warn("SIGHUP: nothing to reload", zap.Error(err))
				}
			case <-srv.Host().Done():
				if ctx.Err() != nil || sigCtx.Err() != nil {
					// Shutting down: the drain closed the host before this select saw the
					// signal's context end (both were ready, and select picks either; the
					// group's error is the first that is not nil, so this one was the
					// command's: exit status 1 after a SIGTERM, once in TestE2ECluster).
					return nil
				}
				return fmt.Errorf("host stopped: %w", srv.Host().Err())
			}
		}
	}, func(error) { stopSig() })
	err = g.Run()
	log.Info("stopped")
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	if shutdownErr != nil {
		err = errors.Join(err, fmt.Errorf("shutdown: %w", shutdownErr))
	}
	return err
}

// clusterServed is c as the server of a cluster's node takes it: without the file's plugins,
// which reach it through the cluster.
func clusterServed(c *config.Config) *config.Config {
	sc := *c
	sc.Plugins = nil
	return &sc
}

// resolveModule reads a plugin's module: a built-in or its file.
func resolveModule(p config.Plugin) ([]byte, error) {
	if p.Builtin != "" {
		if b, ok := plugins.Builtin(p.Builtin); ok {
			return b, nil
		}
		return nil, fmt.Errorf("no built-in plugin %q", p.Builtin)
	}
	return os.ReadFile(p.Path)
}

func newLogger(c config.Log, w io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	ec := zap.NewProductionEncoderConfig()
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	enc := zapcore.NewJSONEncoder(ec)
	if c.Format == "console" {
		ec = zap.NewDevelopmentEncoderConfig()
		enc = zapcore.NewConsoleEncoder(ec)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), lvl)), nil
}

// busRetry is the wait between two attempts to start the bus bridge.
const busRetry = 2 * time.Second

// runBusBridge carries cluster.bus's topics between the host's bus and the other nodes
// (package natsbus) until ctx ends. The bridge needs NATS to start (an at-least-once topic's
// stream and consumer): a node that starts while NATS is away serves without it, logs why,
// and tries again every busRetry; it never stops the server.
func runBusBridge(ctx context.Context, node *cluster.Node, srv *server.Server, bc natsbus.Config, log *zap.Logger) error {
	for attempt := 1; ; attempt++ {
		b, err := natsbus.New(ctx, natsbus.Options{Conn: node.Conn(), Host: srv.Host(), Node: node.Name(), Config: bc,
			Registerer: srv.Host().Metrics(), Logger: log.Named("bus")})
		if err == nil {
			log.Info("bus bridged across the cluster", zap.Strings("topics", bc.Topics), zap.Int("attempt", attempt))
			<-ctx.Done()
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := b.Close(cctx); err != nil {
				log.Warn("bus bridge close", zap.Error(err))
			}
			return nil
		}
		if errors.Is(err, natsbus.ErrConfig) || errors.Is(err, natsbus.ErrInvalidOptions) {
			return fmt.Errorf("cluster.bus: %w", err) // not NATS's absence: it will not get better
		}
		if attempt == 1 || attempt%30 == 0 {
			log.Warn("bus bridge not started; retrying", zap.Int("attempt", attempt), zap.Duration("every", busRetry), zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(busRetry):
		}
	}
}
