package guestio

import (
	"reflect"
	"strings"
	"sync/atomic"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestTrap(t *testing.T) {
	first, kind, stack := Trap("wasm error: unreachable\nwasm stack trace:\n\t.$3(i32) i32\n\t.$1()\n\nextra")
	if first != "wasm error: unreachable" || kind != "unreachable" || !reflect.DeepEqual(stack, []string{".$3(i32) i32", ".$1()"}) {
		t.Errorf("Trap = %q, %q, %q", first, kind, stack)
	}
	if _, kind, stack := Trap("panic: boom (recovered by wazero)"); kind != "" || stack != nil {
		t.Errorf("a non-trap message gave kind %q, stack %q", kind, stack)
	}
}

func TestLineWriter(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	var cut atomic.Uint64
	w := NewLineWriter(zap.New(core), "stdout", &cut)
	_, _ = w.Write([]byte("one\ntw"))
	_, _ = w.Write([]byte("o\n" + strings.Repeat("x", MaxLine+10)))
	w.Flush()
	var lines []string
	for _, e := range logs.All() {
		lines = append(lines, e.ContextMap()["line"].(string))
	}
	if len(lines) != 4 || lines[0] != "one" || lines[1] != "two" || len(lines[2]) != MaxLine || len(lines[3]) != 10 {
		t.Errorf("lines = %d: %.20q", len(lines), lines)
	}
	if cut.Load() != 1 {
		t.Errorf("truncated = %d, want 1", cut.Load())
	}
}
