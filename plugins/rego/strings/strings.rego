# String, number, set and object builtins: OPA compiles all into the module but sprintf, which
# the host provides (sandbox/opa, builtins.go).
package strings

result := {
	"upper": upper(input.name),
	"parts": split(input.path, "/"),
	"joined": concat("-", input.tags),
	"trimmed": trim_space(input.padded),
	"prefixed": startswith(input.path, "/api/"),
	"replaced": replace(input.name, "a", "4"),
	"formatted": concat("=", [input.name, format_int(count(input.tags), 10)]),
	"printed": sprintf("%s has %d tags, %q, max %v, sum %.2f, %v %v", [input.name, count(input.tags), input.padded, max(input.numbers), sum(input.numbers), true, null]),
	"sum": sum([n | some n in input.numbers]),
	"max": max(input.numbers),
	"sorted": sort(input.tags),
	"unique": count({t | some t in input.tags}),
	"keys": sort([k | some k, _ in input.attrs]),
	"matched": [t | some t in input.tags; contains(t, "o")],
	"number": to_number(input.count),
	"merged": object.union(input.attrs, {"extra": true}),
}
