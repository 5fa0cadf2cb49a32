package host_test

import (
	"errors"
	"sync"
	"testing"

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
	stopAsked := make(chan struct{}, 1)
	h := hosttest.New(t, host.WithLogger(zap.New(core)), host.WithStopRequestHook(func(string, int) {
		select {
		case stopAsked <- struct{}{}:
		default:
		}
	}), host.WithEventHook(func(e host.Event) {
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
	// Wait until the reset has asked the instance to stop (an event, not a probe): the handle
	// then answers ErrStale (before, ErrBusy). A drain that ended the instance at once would
	// have released the slot by then; the slot must keep serving the same incarnation until
	// the call returns.
	select {
	case <-stopAsked:
	case err := <-resetErr:
		t.Fatalf("Reset returned while a call was in progress: %v", err)
	case <-ctx.Done(): // bounds a hang only
		t.Fatal("the reset never asked the instance to stop")
	}
	if _, err := hd.Call(ctx, "echo", nil); !errors.Is(err, host.ErrStale) {
		t.Fatalf("handle call once the stop was asked: %v, want ErrStale", err)
	}
	for range 1000 { // the reset goroutine runs meanwhile: none of this may change
		now, err := h.Lookup(ctx, "p", 0)
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
