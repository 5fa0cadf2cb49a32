package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/config"
	"github.com/wasmvisor/wasmvisor/host"
)

// Plugin states, as /readyz, GET /v1/plugins and the readiness decision name them.
const (
	stateLoading  = "loading"  // configured, not loaded yet (the initial load is running)
	stateUp       = "up"       // every instance serving
	stateDegraded = "degraded" // some instances serving: calls are served
	stateDown     = "down"     // no instance serving (restarting, or a temporary pool emptied)
	stateFailed   = "failed"   // quarantined by the host: calls fail at once until it recovers
	stateGone     = "unloaded" // in the server's table but no longer in the host
)

// serving reports whether a plugin in state st answers calls.
func serving(st string) bool { return st == stateUp || st == stateDegraded }

// pluginState is a loaded plugin's state, read without entering any instance: it asks the
// host for each pool slot's current incarnation with a context that has already ended, which
// answers at once (host.Lookup) and never touches guest memory, so /readyz can be polled
// cheaply and cannot end an instance.
//
// A quarantined plugin (failed or probing: host.PluginState) is failed.
func (s *Server) pluginState(name string, instances int) string {
	if _, err := s.h.PluginState(name); err != nil {
		if errors.Is(err, host.ErrPluginFailed) {
			return stateFailed
		}
		return stateGone
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	up := 0
	for i := range max(instances, 1) {
		_, err := s.h.Lookup(ctx, name, i)
		switch {
		case err == nil:
			up++
		case errors.Is(err, host.ErrPluginFailed):
			return stateFailed
		case errors.Is(err, host.ErrNotFound) && i == 0:
			return stateGone
		}
	}
	switch {
	case up == max(instances, 1):
		return stateUp
	case up > 0:
		return stateDegraded
	}
	return stateDown
}

// readiness is the body of /readyz.
type readiness struct {
	Status  string            `json:"status"` // ready, loading, not_ready, stopping
	Plugins map[string]string `json:"plugins"`
	// NotReady names the required plugins that are not serving (or still loading).
	NotReady []string  `json:"not_ready,omitempty"`
	Error    *apiError `json:"error,omitempty"`
}

// ready computes readiness: not while stopping, while the host is stopped, while the initial
// load runs or after it failed, nor while a required plugin (config.Plugin.Required) is
// loading, down, failed or gone. It reports every plugin's state.
func (s *Server) ready() (readiness, bool) {
	rd := readiness{Status: "ready", Plugins: map[string]string{}}
	notReady := func(status, code, msg string) (readiness, bool) {
		rd.Status, rd.Error = status, &apiError{Code: code, Message: msg}
		return rd, false
	}
	select {
	case <-s.stopping:
		return notReady("stopping", "not_ready", "shutting down")
	case <-s.h.Done():
		return notReady("not_ready", "host_stopped", fmt.Sprintf("the host stopped: %v", s.h.Err()))
	default:
	}
	entries := *s.entries.Load()
	phase := s.phase.Load()
	if phase != phaseLoaded {
		for _, p := range s.cfg.Load().Plugins {
			if entries[p.Name] == nil {
				rd.Plugins[p.Name] = stateLoading
				if p.Required {
					rd.NotReady = append(rd.NotReady, p.Name)
				}
			}
		}
	}
	for name, e := range entries {
		st := s.pluginState(name, e.hostSpecs.Instances)
		rd.Plugins[name] = st
		if e.spec.Required && !serving(st) {
			rd.NotReady = append(rd.NotReady, name)
		}
	}
	slices.Sort(rd.NotReady)
	switch {
	case phase == phaseLoading:
		return notReady("loading", "loading", "loading plugins: "+strings.Join(rd.NotReady, ", "))
	case phase == phaseLoadFailed:
		return notReady("not_ready", "load_failed", "the initial load failed: "+s.status.Load().Error)
	case len(rd.NotReady) > 0:
		return notReady("not_ready", "plugins_not_ready", "required plugins not serving: "+strings.Join(rd.NotReady, ", "))
	}
	return rd, true
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	rd, ok := s.ready()
	status := http.StatusOK
	if !ok {
		status = http.StatusServiceUnavailable
		if rd.Status == "loading" {
			setRetryAfter(w, defaultRetryAfter)
		}
	}
	writeJSON(w, status, rd)
}

// loading reports whether name is a configured plugin the initial load has not reached yet.
func (s *Server) loading(name string) bool {
	if s.phase.Load() != phaseLoading {
		return false
	}
	return slices.ContainsFunc(s.cfg.Load().Plugins, func(p config.Plugin) bool { return p.Name == name })
}
