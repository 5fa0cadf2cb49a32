package host_test

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
	"github.com/wasmvisor/wasmvisor/sandbox"
	"github.com/wasmvisor/wasmvisor/supervisor"
)

// blockOnLog is a zap core that holds the guest inside its log host function while it
// logs msg: a call in progress for as long as the test wants.
type blockOnLog struct {
	msg              string
	entered, release chan struct{}
	once             sync.Once
}

func (c *blockOnLog) Enabled(zapcore.Level) bool        { return true }
func (c *blockOnLog) With([]zapcore.Field) zapcore.Core { return c }
func (c *blockOnLog) Sync() error                       { return nil }
func (c *blockOnLog) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	return ce.AddCore(e, c)
}

func (c *blockOnLog) Write(_ zapcore.Entry, fields []zapcore.Field) error {
	for _, f := range fields {
		if f.Key == "message" && f.String == c.msg {
			c.once.Do(func() { close(c.entered) })
			<-c.release
		}
	}
	return nil
}

// TestStopDrainsTheCallInProgress resets a plugin while a call is inside its only
// instance: the supervisor's stop waits for the call, which finishes normally (it is not
// killed), and only then does the instance end, with a shutdown and not a crash.
func TestStopDrainsTheCallInProgress(t *testing.T) {
	core := &blockOnLog{msg: "drain me", entered: make(chan struct{}), release: make(chan struct{})}
	var mu sync.Mutex
	var ended []host.Event
	h := hosttest.New(t, host.WithLogger(zap.New(core)), host.WithEventHook(func(e host.Event) {
		if e.Kind == host.EventInstanceEnded {
			mu.Lock()
			ended = append(ended, e)
			mu.Unlock()
		}
	}))
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "p", Wasm: reference, Limits: sandbox.Limits{CallTimeout: sandbox.NoTimeout}})
	ctx := ctxT(t)

	callErr := make(chan error, 1)
	go func() {
		_, err := h.Call(ctx, "p", "log", []byte("drain me"))
		callErr <- err
	}()
	<-core.entered
	resetErr := make(chan error, 1)
	go func() { resetErr <- h.Reset(ctx, "p") }()

	// While the call is held, the reset waits for it, and the instance is still up.
	hd, err := h.Lookup(ctx, "p", 0)
	if err != nil {
		t.Fatal(err)
	}
	// Wait until the reset has asked the instance to stop: the handle then answers ErrStale
	// (before, ErrBusy). From then on a drain that ended the instance at once would release
	// the slot; the slot must keep serving the same incarnation until the call returns.
	for {
		_, err := hd.Call(ctx, "echo", nil)
		if errors.Is(err, host.ErrStale) {
			break
		}
		if !errors.Is(err, sandbox.ErrBusy) {
			t.Fatalf("handle call while the call is held: %v", err)
		}
		runtime.Gosched()
	}
	for range 1000 {
		lctx, cancel := context.WithTimeout(ctx, time.Second)
		now, err := h.Lookup(lctx, "p", 0)
		cancel()
		if err != nil || now.Incarnation() != hd.Incarnation() {
			t.Fatalf("slot 0 while a call was in progress: incarnation %d, %v; want %d", now.Incarnation(), err, hd.Incarnation())
		}
		select {
		case err := <-resetErr:
			t.Fatalf("Reset returned while a call was in progress: %v", err)
		case <-hd.Done():
			t.Fatal("the instance ended while a call was in progress")
		default:
		}
		runtime.Gosched()
	}
	close(core.release)
	if err := <-callErr; err != nil {
		t.Fatalf("the call in progress: %v (want it to finish normally)", err)
	}
	if err := <-resetErr; err != nil {
		t.Fatalf("Reset: %v", err)
	}
	<-hd.Done()
	mu.Lock()
	defer mu.Unlock()
	if len(ended) != 1 || !errors.Is(ended[0].Err, supervisor.ErrShutdown) {
		t.Fatalf("instance ended events: %+v; want one, with a shutdown", ended)
	}
	if got := call(t, h, "p", "echo", "after"); got != "after" {
		t.Fatalf("echo after the reset = %q", got)
	}
}
