//go:build !race

package faults_test

// raceHeapFactor: see race_test.go.
const raceHeapFactor = 1
