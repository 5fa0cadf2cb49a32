package watchdog

import (
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fake is a Watched whose operation needs watching while busy is set.
type fake struct {
	busy    atomic.Bool
	watched chan struct{} // a token each time Watch finds it busy
	e       Entry
}

func (f *fake) Watch(time.Duration) bool {
	if !f.busy.Load() {
		return false
	}
	select {
	case f.watched <- struct{}{}:
	default:
	}
	return true
}

// Idle instances leave the hot list, so a tick costs nothing for them; an operation that
// enters moves its instance back and is watched; a removed instance is gone from both lists.
func TestColdInstancesAreNotScanned(t *testing.T) {
	parked := make(chan struct{}, 1)
	w := New(100*time.Microsecond, func() {
		select {
		case parked <- struct{}{}:
		default:
		}
	})
	defer w.Close()
	<-parked // the first park, at start

	fakes := make([]*fake, 1000)
	for n := range fakes {
		fakes[n] = &fake{watched: make(chan struct{}, 1)}
		w.Add(&fakes[n].e, fakes[n])
	}
	if all, hot := w.Len(); all != 1000 || hot != 1000 {
		t.Fatalf("after Add: %d watched, %d hot; want 1000, 1000", all, hot)
	}
	w.WakeUp()
	<-parked // ParkAfter idle ticks: every instance idle for ColdAfter of them
	if all, hot := w.Len(); all != 1000 || hot != 0 {
		t.Fatalf("after the idle ticks: %d watched, %d hot; want 1000, 0", all, hot)
	}

	f := fakes[500]
	f.busy.Store(true)
	w.Entered(&f.e)
	if _, hot := w.Len(); hot != 1 {
		t.Fatalf("after Entered: %d hot, want 1", hot)
	}
	for range 3 { // watched on three ticks
		select {
		case <-f.watched:
		case <-time.After(30 * time.Second): // bounds a hang only
			t.Fatal("the entered instance is not watched")
		}
	}
	f.busy.Store(false)
	<-parked
	if _, hot := w.Len(); hot != 0 {
		t.Fatalf("idle again: %d hot, want 0", hot)
	}

	for _, f := range fakes[:10] {
		w.Remove(&f.e)
	}
	w.Remove(&fakes[500].e)
	if all, _ := w.Len(); all != 989 {
		t.Fatalf("after 11 removals: %d watched, want 989", all)
	}
}

// An operation that enters while the watchdog moves its instance to the cold list is
// watched all the same: the watchdog asks once more after it stores the flag, and Entered
// reads the flag after the operation published its state. Many rounds, under -race.
func TestEnterRacesCooling(t *testing.T) {
	w := New(50*time.Microsecond, nil)
	defer w.Close()
	f := &fake{watched: make(chan struct{}, 1)}
	w.Add(&f.e, f)
	for round := range 200 {
		f.busy.Store(true) // the operation publishes its state…
		w.Entered(&f.e)    // …then reads the flags
		select {
		case <-f.watched:
		case <-time.After(30 * time.Second): // bounds a hang only
			t.Fatalf("round %d: an entered operation was not watched", round)
		}
		f.busy.Store(false)
		// Let it go idle for about ColdAfter ticks, sometimes more, sometimes less.
		time.Sleep(time.Duration(round%3+1) * ColdAfter * 50 * time.Microsecond / 2) // wallclock: spreads the entries around the moment the instance cools
	}
	w.Remove(&f.e)
}
