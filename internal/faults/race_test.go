//go:build race

package faults_test

// raceHeapFactor scales a budget for memory the host allocates on the Go heap: under the race
// detector every heap byte has shadow memory besides it (the race detector's documentation
// puts the total at 5 to 10 times), which the resident set counts. Memory outside the Go heap
// (guest linear memories, reserved with mmap) has none.
const raceHeapFactor = 4
