# A policy that does not finish in any reasonable time: 4·10⁸ iterations that never match.
# The sandbox/opa tests stop it with a deadline; with a small memory limit, big (an array of
# 10⁷ numbers) runs out of memory.
package spin

never if {
	some i in numbers.range(1, 20000)
	some j in numbers.range(1, 20000)
	i * j == -1
}

big := count([i | some i in numbers.range(1, 10000000)])
