# Policies that fail: one does not finish in any reasonable time (4·10⁸ iterations that never
# match), one needs too much memory, one conflicts.
# The sandbox/opa tests stop never with a deadline; with a small memory limit, big (an array of
# 10⁷ numbers) runs out of memory.
package spin

never if {
	some i in numbers.range(1, 20000)
	some j in numbers.range(1, 20000)
	i * j == -1
}

big := count([i | some i in numbers.range(1, 10000000)])

# Two values for one complete rule when input has both a and b: a conflict, which the module
# reports through opa_abort.
conflict := 1 if input.a

conflict := 2 if input.b
