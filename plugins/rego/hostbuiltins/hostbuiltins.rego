# The builtins OPA leaves to the host, served by package sandbox/opa/builtins (not time.now_ns:
# the two evaluators' clocks differ; sandbox/opa's tests check it against a fixed clock).
package hostbuiltins

claims := io.jwt.decode(input.token)

result := {
	"sha256": crypto.sha256(input.text),
	"md5": crypto.md5(input.text),
	"hmac": crypto.hmac.sha256(input.text, "key"),
	"hex": hex.encode(input.text),
	"unhex": hex.decode("68656c6c6f"),
	"b64url": base64url.encode_no_pad(input.text),
	"query": urlquery.encode(input.text),
	"query_object": urlquery.encode_object({"a": input.text, "b": "x y"}),
	"decoded_query": urlquery.decode("a%20b%2Bc"),
	"jwt_header": claims[0],
	"jwt_payload": claims[1],
	"split": regex.split(`[,;]\s*`, input.list),
	"found": regex.find_n(`[0-9]+`, input.list, -1),
	"replaced": regex.replace(input.list, `[0-9]`, "#"),
	"parsed_ns": time.parse_rfc3339_ns(input.when),
	"date": time.date(time.parse_rfc3339_ns(input.when)),
	"weekday": time.weekday(time.parse_rfc3339_ns(input.when)),
	"added": time.add_date(time.parse_rfc3339_ns(input.when), 0, 1, 1),
	"count": strings.count(input.text, "l"),
	"indexes": indexof_n(input.text, "l"),
	"any_prefix": strings.any_prefix_match(input.text, ["he", "x"]),
}
