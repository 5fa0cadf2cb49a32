# String, number, set and object builtins that OPA compiles into the module itself: none is
# left to the host.
package strings

result := {
	"upper": upper(input.name),
	"parts": split(input.path, "/"),
	"joined": concat("-", input.tags),
	"trimmed": trim_space(input.padded),
	"prefixed": startswith(input.path, "/api/"),
	"replaced": replace(input.name, "a", "4"),
	"formatted": concat("=", [input.name, format_int(count(input.tags), 10)]),
	"sum": sum([n | some n in input.numbers]),
	"max": max(input.numbers),
	"sorted": sort(input.tags),
	"unique": count({t | some t in input.tags}),
	"keys": [k | some k, _ in input.attrs],
	"matched": [t | some t in input.tags; contains(t, "o")],
	"number": to_number(input.count),
	"merged": object.union(input.attrs, {"extra": true}),
}
