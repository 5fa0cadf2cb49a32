package host_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"pgregory.net/rapid"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

func TestGuestPublishReachesGoAndPlugins(t *testing.T) {
	t.Parallel()
	h := hosttest.New(t)
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "pub", Wasm: reference})
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "sub", Wasm: reference, Subscribe: []string{"orders"}})
	got := make(chan host.Message, 1)
	s, err := h.Subscribe("orders", func(m host.Message) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	if out := call(t, h, "pub", "publish", "orders\n42"); out != "0" {
		t.Fatalf("publish returned %q", out)
	}
	select {
	case m := <-got:
		if m.From != "pub" || string(m.Data) != "42" {
			t.Fatalf("got %+v", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery")
	}
	if err := h.Flush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	pi, _ := h.Plugin("sub")
	if ev := pi.Instances[0].Events.Events; len(ev) != 1 || ev[0].Topic != "orders" || string(ev[0].Data) != "42" {
		t.Fatalf("plugin subscriber events %+v", ev)
	}
	s.Unsubscribe()
	s.Unsubscribe()
	call(t, h, "pub", "publish", "orders\n43")
	if err := h.Flush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 || s.Delivered() != 1 {
		t.Fatalf("delivery after unsubscribe: %d, delivered %d", len(got), s.Delivered())
	}
}

func TestBusOverflowIsCounted(t *testing.T) {
	t.Parallel()
	var dropped sync.WaitGroup
	dropped.Add(1)
	var once sync.Once
	h := hosttest.New(t, host.WithBusBuffer(2), host.WithEventHook(func(e host.Event) {
		if e.Kind == host.EventDropped {
			once.Do(dropped.Done)
		}
	}))
	block := make(chan struct{})
	s, err := h.Subscribe("t", func(host.Message) { <-block })
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := h.Publish("t", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	dropped.Wait()
	close(block)
	if err := h.Flush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if s.Dropped() == 0 || s.Delivered()+s.Dropped() != 10 {
		t.Fatalf("delivered %d dropped %d", s.Delivered(), s.Dropped())
	}
	if got := metricOutcome(t, h, "dropped"); got != float64(s.Dropped()) {
		t.Fatalf("metric dropped = %v", got)
	}
}

// TestBusFloodIsReportedInAggregate floods a subscription whose subscriber is stuck: every
// drop is counted at once, and reported in a few EventDropped carrying counts (the first at
// once, then at most one per second), never one per message, and never under the bus lock.
// Once the publisher stops, the last drops are reported by the timer, without a Flush.
func TestBusFloodIsReportedInAggregate(t *testing.T) {
	t.Parallel()
	const n = 100_000
	var events, count, bytes atomic.Uint64
	lockFree := make(chan error, 1)
	reported := make(chan struct{}, 1)
	var h *host.Host
	h = hosttest.New(t, host.WithBusBuffer(2), host.WithEventHook(func(e host.Event) {
		if e.Kind != host.EventDropped {
			return
		}
		if events.Add(1) == 1 { // the bus lock is free: another subscriber can come and go
			done := make(chan error, 1)
			go func() {
				s, err := h.Subscribe("other", func(host.Message) {})
				if err == nil {
					s.Unsubscribe()
				}
				done <- err
			}()
			select {
			case err := <-done:
				lockFree <- err
			case <-time.After(10 * time.Second):
				lockFree <- errors.New("EventDropped was emitted under the bus lock")
			}
		}
		count.Add(e.Count)
		bytes.Add(e.Bytes)
		select {
		case reported <- struct{}{}:
		default:
		}
	}))
	block, blocked := make(chan struct{}), make(chan struct{})
	var once sync.Once
	s, err := h.Subscribe("t", func(host.Message) {
		once.Do(func() { close(blocked) })
		<-block
	})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if _, err := h.Publish("t", []byte("first")); err != nil {
		t.Fatal(err)
	}
	<-blocked // the bus task holds "first" in the subscriber: the buffer fills up next
	data := []byte("0123456789")
	for range n {
		if _, err := h.Publish("t", data); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-lockFree; err != nil {
		t.Fatal(err)
	}
	if got := s.Dropped(); got != n-2 {
		t.Fatalf("dropped %d, want %d (the buffer holds 2)", got, n-2)
	}
	close(block)
	for count.Load() != n-2 { // the rest is reported by the timer, within a second
		select {
		case <-reported:
		case <-time.After(30 * time.Second):
			t.Fatalf("reported %d drops of %d", count.Load(), n-2)
		}
	}
	elapsed := time.Since(t0)
	if max := 2 + uint64(elapsed/time.Second); events.Load() > max {
		t.Fatalf("%d EventDropped in %v for one subscription, want at most %d", events.Load(), elapsed, max)
	}
	if bytes.Load() != (n-2)*uint64(len(data)) {
		t.Fatalf("reported %d bytes", bytes.Load())
	}
	if got := metricOutcome(t, h, "dropped"); got != n-2 {
		t.Fatalf("metric dropped = %v", got)
	}
}

func metricOutcome(t testing.TB, h *host.Host, outcome string) float64 {
	mfs, err := h.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "wasmvisor_bus_messages_total" {
			for _, m := range mf.Metric {
				if label(m, "outcome") == outcome {
					return m.Counter.GetValue()
				}
			}
		}
	}
	return -1
}

// goSub is the model of one Go subscriber.
type goSub struct {
	s        *host.Subscription
	mu       sync.Mutex
	got      []string
	want     []string
	ended    bool
	atEnd    int
	sinceChk int
}

// TestBusProperty interleaves subscribe, unsubscribe, crash, restart (Reset), unload/load
// of a subscriber plugin, and publish, and checks that no delivery reaches an ended
// subscriber and that no live subscriber misses a message within its buffer bound.
func TestBusProperty(t *testing.T) {
	t.Parallel()
	const buf = 8
	rapid.Check(t, func(rt *rapid.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		var mu sync.Mutex
		ended := map[uint64]bool{} // incarnations that ended
		var late []string          // deliveries to an ended incarnation
		var pluginGot []string     // payloads delivered to the plugin subscriber
		h, err := host.New(ctx, host.WithCacheDir(hosttest.CacheDir()), host.WithBusBuffer(buf),
			host.WithRestartIntensity(1_000_000, time.Second, -1), host.WithPoisonInput(-1, 0, 0), host.WithLogger(zap.NewNop()),
			host.WithEventHook(func(e host.Event) {
				mu.Lock()
				defer mu.Unlock()
				switch e.Kind {
				case host.EventInstanceEnded:
					ended[e.Incarnation] = true
				case host.EventDelivered:
					if ended[e.Incarnation] {
						late = append(late, string(e.Data))
					}
					pluginGot = append(pluginGot, string(e.Data))
				}
			}))
		if err != nil {
			rt.Fatal(err)
		}
		defer func() {
			if err := h.Close(context.Background()); err != nil {
				rt.Error(err)
			}
		}()
		spec := host.Plugin{Name: "sub", Wasm: reference, Subscribe: []string{"t"},
			Instances: rapid.IntRange(1, 2).Draw(rt, "instances")}
		if err := h.Load(ctx, spec); err != nil {
			rt.Fatal(err)
		}
		loaded := true
		var pluginWant []string
		var subs []*goSub
		seq := 0
		sincePluginChk := 0

		check := func() {
			if err := h.Flush(ctx); err != nil {
				rt.Fatal(err)
			}
			for i, s := range subs {
				s.mu.Lock()
				if s.ended {
					if len(s.got) != s.atEnd {
						rt.Fatalf("sub %d: %d deliveries after Unsubscribe", i, len(s.got)-s.atEnd)
					}
				} else {
					// In order, a subsequence of what was published; every miss is counted,
					// and there is none while no more than buf were published since the
					// last check.
					if !subsequence(s.got, s.want) || uint64(len(s.got))+s.s.Dropped() != uint64(len(s.want)) {
						rt.Fatalf("sub %d: got %v want %v dropped %d", i, s.got, s.want, s.s.Dropped())
					}
					if s.sinceChk <= buf && s.s.Dropped() == 0 && !slices.Equal(s.got, s.want) {
						rt.Fatalf("sub %d missed within its bound: got %v want %v", i, s.got, s.want)
					}
				}
				s.sinceChk = 0
				s.mu.Unlock()
			}
			mu.Lock()
			defer mu.Unlock()
			if len(late) > 0 {
				rt.Fatalf("deliveries to ended incarnations: %v", late)
			}
			if !subsequence(pluginGot, pluginWant) {
				rt.Fatalf("plugin got %v want %v", pluginGot, pluginWant)
			}
			if sincePluginChk <= buf && !slices.Equal(pluginGot, pluginWant) {
				rt.Fatalf("plugin missed within its bound: got %v want %v", pluginGot, pluginWant)
			}
			pluginGot, pluginWant = pluginGot[:0], pluginWant[:0]
			sincePluginChk = 0
		}

		rt.Repeat(map[string]func(*rapid.T){
			"subscribe": func(rt *rapid.T) {
				g := &goSub{}
				s, err := h.Subscribe("t", func(m host.Message) {
					g.mu.Lock()
					g.got = append(g.got, string(m.Data))
					g.mu.Unlock()
				})
				if err != nil {
					rt.Fatal(err)
				}
				g.s = s
				subs = append(subs, g)
			},
			"unsubscribe": func(rt *rapid.T) {
				if len(subs) == 0 {
					rt.Skip("no subscriber")
				}
				g := subs[rapid.IntRange(0, len(subs)-1).Draw(rt, "sub")]
				g.s.Unsubscribe()
				g.mu.Lock()
				if !g.ended {
					g.ended, g.atEnd = true, len(g.got)
				}
				g.mu.Unlock()
			},
			"publish": func(rt *rapid.T) {
				n := rapid.IntRange(1, buf).Draw(rt, "burst")
				for range n {
					seq++
					d := strconv.Itoa(seq)
					if _, err := h.Publish("t", []byte(d)); err != nil {
						rt.Fatal(err)
					}
					for _, g := range subs {
						g.mu.Lock()
						if !g.ended {
							g.want = append(g.want, d)
							g.sinceChk++
						}
						g.mu.Unlock()
					}
					if loaded {
						mu.Lock()
						pluginWant = append(pluginWant, d)
						mu.Unlock()
						sincePluginChk++
					}
				}
			},
			"crash": func(rt *rapid.T) {
				if !loaded {
					rt.Skip("unloaded")
				}
				if _, err := h.Call(ctx, "sub", "trap", nil); !errors.Is(err, sandbox.ErrTrap) {
					rt.Fatalf("trap: %v", err)
				}
			},
			"reset": func(rt *rapid.T) {
				if !loaded {
					rt.Skip("unloaded")
				}
				if err := h.Reset(ctx, "sub"); err != nil {
					rt.Fatal(err)
				}
			},
			"unload": func(rt *rapid.T) {
				if !loaded {
					rt.Skip("unloaded")
				}
				check() // what was published while it was subscribed has been delivered
				if err := h.Unload(ctx, "sub"); err != nil {
					rt.Fatal(err)
				}
				loaded = false
			},
			"load": func(rt *rapid.T) {
				if loaded {
					rt.Skip("loaded")
				}
				if err := h.Load(ctx, spec); err != nil {
					rt.Fatal(err)
				}
				loaded = true
			},
			"": func(rt *rapid.T) { check() },
		})
	})
}

// subsequence reports whether got is want with some elements left out, in order.
func subsequence(got, want []string) bool {
	i := 0
	for _, w := range want {
		if i < len(got) && got[i] == w {
			i++
		}
	}
	return i == len(got)
}

func TestPublishRemote(t *testing.T) {
	t.Parallel()
	h := hosttest.New(t)
	got := make(chan host.Message, 1)
	if _, err := h.Subscribe("orders", func(m host.Message) { got <- m }); err != nil {
		t.Fatal(err)
	}
	if _, err := h.PublishRemote(host.Message{Topic: "orders", Data: []byte("x")}); !errors.Is(err, host.ErrInvalidMessage) {
		t.Fatalf("no node: %v, want ErrInvalidMessage", err)
	}
	data := []byte("42")
	if n, err := h.PublishRemote(host.Message{Topic: "orders", Data: data, From: "pub", Node: "n2"}); err != nil || n != 1 {
		t.Fatalf("PublishRemote = %d, %v", n, err)
	}
	data[0] = 'x' // copied
	select {
	case m := <-got:
		if m.Node != "n2" || m.From != "pub" || string(m.Data) != "42" {
			t.Fatalf("got %+v", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery")
	}
}
