package supervisorzap_test

import (
	"errors"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wasmvisor/wasmvisor/supervisor"
	"github.com/wasmvisor/wasmvisor/supervisor/supervisorzap"
)

func TestHook(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	hook := supervisorzap.Hook(zap.New(core))
	hook(supervisor.Event{Kind: supervisor.EventExited, Supervisor: "root", Child: "a", Incarnation: 3, Err: errors.New("boom"), Class: supervisor.ExitAbnormal})
	hook(supervisor.Event{Kind: supervisor.EventBackoff, Supervisor: "root", Child: "a", Delay: time.Second})
	hook(supervisor.Event{Kind: supervisor.EventStarted, Supervisor: "root", Child: "a", Incarnation: 4})
	all := logs.All()
	if len(all) != 3 {
		t.Fatalf("%d entries", len(all))
	}
	e := all[0]
	if e.Level != zapcore.ErrorLevel || e.Message != "supervisor exited" {
		t.Fatalf("entry %+v", e)
	}
	m := e.ContextMap()
	if m["child"] != "a" || m["incarnation"] != uint64(3) || m["class"] != "abnormal" || m["error"] != "boom" {
		t.Fatalf("fields %v", m)
	}
	if all[1].Level != zapcore.WarnLevel || all[1].ContextMap()["delay"] != time.Second {
		t.Fatalf("backoff %+v", all[1])
	}
	if all[2].Level != zapcore.DebugLevel {
		t.Fatalf("started %+v", all[2])
	}
}
