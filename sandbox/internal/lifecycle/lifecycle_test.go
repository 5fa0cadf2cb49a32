package lifecycle

import "testing"

// TestStop: the first reason for an operation wins, and Running holds only while that
// operation is the busy one.
func TestStop(t *testing.T) {
	var s Stop
	if s.Running(BusyWord(1, 0)) || s.Is(1) {
		t.Fatal("a zero Stop stopped operation 1")
	}
	if !s.Mark(1, 7) || s.Mark(1, 9) {
		t.Fatal("Mark: the first one must take, the second not")
	}
	if !s.Is(1) || s.Why() != 7 {
		t.Fatalf("is %v, why %d", s.Is(1), s.Why())
	}
	if !s.Running(BusyWord(1, 3)) || s.Running(IdleWord(1)) || s.Running(BusyWord(2, 3)) {
		t.Fatal("Running: only while operation 1 is busy")
	}
	if !s.Mark(2, 9) || s.Why() != 9 || s.Is(1) {
		t.Fatal("a later operation's stop replaces the record")
	}
}
