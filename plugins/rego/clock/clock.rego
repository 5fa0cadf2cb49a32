# time.now_ns, a host builtin whose answer is the evaluation's instant: the same for every call
# in one evaluation, fixed under the sandbox's deterministic clock (sandbox/opa's TestClock).
package clock

now := time.now_ns()

result := {"now": now, "same": now == time.now_ns()}
