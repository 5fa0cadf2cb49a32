// Package testrules holds tests about the repository's tests: testrules_test.go walks every
// _test.go file and fails on a wait on the wall clock (time.Sleep, runtime.Gosched in a loop)
// that is not marked "// wallclock: <reason>". See RATIONALE.md, "Tests wait on events, not
// on the clock".
package testrules
