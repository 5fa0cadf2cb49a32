package supervisor_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"pgregory.net/rapid"

	"github.com/wasmvisor/wasmvisor/supervisor"
)

// model is a small executable reference of the OTP rules (supervisor.erl
// do_restart/3, add_restart/1, restart/2 per strategy), plus this package's
// slow-cycle rule.
type model struct {
	strategy  supervisor.Strategy
	intensity int
	period    time.Duration
	minUptime time.Duration
	now       time.Duration
	restarts  []time.Duration
	children  []*mchild
	dead      bool // stopped or gave up
}

type mchild struct {
	id      string
	restart supervisor.RestartType
	running bool
	readyAt time.Duration
	incs    int
	quick   int
}

func (m *model) find(id string) (int, *mchild) {
	for i, c := range m.children {
		if c.id == id {
			return i, c
		}
	}
	return -1, nil
}

func (m *model) start(c *mchild) { c.running, c.readyAt = true, m.now; c.incs++ }

func (m *model) remove(id string) {
	i, _ := m.find(id)
	m.children = slices.Delete(m.children, i, i+1)
}

func (m *model) crash(c *mchild, reason error) {
	c.running = false
	class := supervisor.Classify(reason)
	if !(c.restart == supervisor.Permanent || (c.restart == supervisor.Transient && class == supervisor.ExitAbnormal)) {
		if c.restart == supervisor.Temporary {
			m.remove(c.id)
		}
		return
	}
	// add_restart: the window is inclusive, with Duration precision.
	var kept []time.Duration
	for _, r := range m.restarts {
		if r >= m.now-m.period {
			kept = append(kept, r)
		}
	}
	m.restarts = append(kept, m.now)
	if m.now-c.readyAt < m.minUptime {
		c.quick++
	} else {
		c.quick = 0
	}
	if len(m.restarts) > m.intensity || c.quick > m.intensity {
		m.dead, m.children = true, nil
		return
	}
	i, _ := m.find(c.id)
	var set []*mchild
	switch m.strategy {
	case supervisor.OneForAll:
		set = slices.Clone(m.children)
	case supervisor.RestForOne:
		set = slices.Clone(m.children[i:])
	default:
		set = []*mchild{c}
	}
	for _, x := range set {
		if x != c && x.restart == supervisor.Temporary {
			m.remove(x.id)
			continue
		}
		m.start(x)
	}
}

func (m *model) states() []string {
	var out []string
	for _, c := range m.children {
		st := "stopped"
		if c.running {
			st = "running"
		}
		out = append(out, fmt.Sprintf("%s:%s:%d", c.id, st, max(c.incs-1, 0)))
	}
	return out
}

// TestModel drives a supervisor with random commands and checks it against
// the model after every step.
func TestModel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rapid.Check(bubbleTB{t}, func(rt *rapid.T) {
			h := newHarness(t)
			m := &model{
				strategy:  rapid.SampledFrom([]supervisor.Strategy{supervisor.OneForOne, supervisor.OneForAll, supervisor.RestForOne}).Draw(rt, "strategy"),
				intensity: rapid.IntRange(0, 4).Draw(rt, "intensity"),
				period:    time.Duration(rapid.IntRange(1, 10).Draw(rt, "period")) * time.Second,
			}
			m.minUptime = m.period
			cfg := supervisor.Config{Strategy: m.strategy, Intensity: m.intensity, Period: m.period, Clock: h.clk, EventHook: func(supervisor.Event) {}}
			if m.intensity == 0 {
				cfg.Intensity = supervisor.NoRestarts
			}
			restartType := rapid.SampledFrom([]supervisor.RestartType{supervisor.Permanent, supervisor.Transient, supervisor.Temporary})
			var specs []supervisor.Spec
			n := rapid.IntRange(1, 5).Draw(rt, "children")
			for i := 0; i < n; i++ {
				c := &mchild{id: fmt.Sprintf("c%d", i), restart: restartType.Draw(rt, "restart")}
				m.children = append(m.children, c)
				specs = append(specs, h.spec(c.id, func(sp *supervisor.Spec) { sp.Restart = c.restart }))
			}
			s, err := supervisor.New(cfg, specs...)
			if err != nil {
				rt.Fatal(err)
			}
			h.s = s
			defer s.Stop(context.Background())
			if err := s.Start(context.Background()); err != nil {
				rt.Fatal(err)
			}
			for _, c := range m.children {
				m.start(c)
			}
			ctx := context.Background()
			ids := rapid.SampledFrom([]string{"c0", "c1", "c2", "c3", "c4", "c5", "c6"})
			exitReasons := rapid.SampledFrom([]error{nil, supervisor.ErrShutdown, supervisor.Shutdown{Reason: errBoom}, errBoom})

			rt.Repeat(map[string]func(*rapid.T){
				"kill": func(rt *rapid.T) {
					_, c := m.find(ids.Draw(rt, "id"))
					if c == nil || !c.running {
						rt.Skip("not running")
					}
					reason := exitReasons.Draw(rt, "reason")
					h.crash(c.id, reason)
					m.crash(c, reason)
				},
				"terminate": func(rt *rapid.T) {
					id := ids.Draw(rt, "id")
					err := s.TerminateChild(ctx, id)
					_, c := m.find(id)
					switch {
					case m.dead:
						wantIs(rt, err, supervisor.ErrStopped)
					case c == nil:
						wantIs(rt, err, supervisor.ErrNotFound)
					default:
						wantIs(rt, err, nil)
						c.running = false
						if c.restart == supervisor.Temporary {
							m.remove(id)
						}
					}
				},
				"restart": func(rt *rapid.T) {
					id := ids.Draw(rt, "id")
					_, err := s.RestartChild(ctx, id)
					_, c := m.find(id)
					switch {
					case m.dead:
						wantIs(rt, err, supervisor.ErrStopped)
					case c == nil:
						wantIs(rt, err, supervisor.ErrNotFound)
					case c.running:
						wantIs(rt, err, supervisor.ErrRunning)
					default:
						wantIs(rt, err, nil)
						m.start(c)
					}
				},
				"delete": func(rt *rapid.T) {
					id := ids.Draw(rt, "id")
					err := s.DeleteChild(ctx, id)
					_, c := m.find(id)
					switch {
					case m.dead:
						wantIs(rt, err, supervisor.ErrStopped)
					case c == nil:
						wantIs(rt, err, supervisor.ErrNotFound)
					case c.running:
						wantIs(rt, err, supervisor.ErrRunning)
					default:
						wantIs(rt, err, nil)
						m.remove(id)
					}
				},
				"startChild": func(rt *rapid.T) {
					id := ids.Draw(rt, "id")
					rtype := restartType.Draw(rt, "restart")
					_, err := s.StartChild(ctx, h.spec(id, func(sp *supervisor.Spec) { sp.Restart = rtype }))
					_, c := m.find(id)
					switch {
					case m.dead:
						wantIs(rt, err, supervisor.ErrStopped)
					case c != nil:
						wantIs(rt, err, supervisor.ErrAlreadyPresent)
					default:
						wantIs(rt, err, nil)
						c = &mchild{id: id, restart: rtype}
						m.children = append(m.children, c)
						m.start(c)
					}
				},
				"advance": func(rt *rapid.T) {
					d := time.Duration(rapid.IntRange(1, 12000).Draw(rt, "ms")) * time.Millisecond
					h.clk.Advance(d)
					m.now += d
				},
				"stop": func(rt *rapid.T) {
					if err := s.Stop(ctx); err != nil {
						rt.Fatal(err)
					}
					m.dead, m.children = true, nil
				},
				"": func(rt *rapid.T) {
					synctest.Wait()
					cs, err := s.Children(ctx)
					if m.dead {
						wantIs(rt, err, supervisor.ErrStopped)
						return
					}
					if err != nil {
						rt.Fatal(err)
					}
					var got []string
					for _, c := range cs {
						got = append(got, fmt.Sprintf("%s:%s:%d", c.ID, c.State, c.Restarts))
					}
					if want := m.states(); !slices.Equal(got, want) {
						rt.Fatalf("children\n got  %v\n want %v", got, want)
					}
				},
			})
		})
	})
}

// bubbleTB hides *testing.T from rapid, which would call Deadline (not
// allowed inside a synctest bubble).
type bubbleTB struct{ rapid.TB }

func wantIs(rt *rapid.T, err, target error) {
	rt.Helper()
	if target == nil && err != nil || target != nil && !errors.Is(err, target) {
		rt.Fatalf("error %v, want %v", err, target)
	}
}
