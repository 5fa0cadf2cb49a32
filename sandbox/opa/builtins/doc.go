// Package builtins implements, in Go, the builtins that a policy compiled by
// `opa build -t wasm` leaves to its host, for the OPA format (sandbox/opa).
//
// # Which builtins the host must provide
//
// OPA's Wasm compiler implements most builtins inside the module; the others are listed by
// the module's builtins export and called through env.opa_builtinN. Found with OPA v1.22.4
// (bench/opa's tool): a policy calling 110 builtins, compiled with
// `opa build -t wasm -e x/allow -e x`, lists these 61 in its builtins export (the others,
// such as regex.match, regex.is_valid, glob.match, base64.*, json.*, object.*, net.cidr_*
// except those below, upper, lower, split, trim*, concat, format_int, to_number, are
// compiled into the module):
//
//	time.now_ns time.parse_ns time.parse_rfc3339_ns time.parse_duration_ns time.date
//	time.clock time.weekday time.add_date time.diff time.format
//	crypto.md5 crypto.sha1 crypto.sha256 crypto.hmac.md5 crypto.hmac.sha1
//	crypto.hmac.sha256 crypto.hmac.sha512 crypto.hmac.equal crypto.x509.parse_certificates
//	hex.encode hex.decode base64url.encode_no_pad urlquery.encode urlquery.decode
//	urlquery.encode_object urlquery.decode_object yaml.marshal yaml.unmarshal
//	io.jwt.decode io.jwt.decode_verify io.jwt.verify_hs256
//	regex.find_n regex.split regex.replace regex.template_match regex.globs_match
//	glob.quote_meta sprintf indexof_n strings.count strings.any_prefix_match
//	strings.any_suffix_match strings.render_template semver.compare semver.is_valid
//	units.parse units.parse_bytes uuid.parse uuid.rfc4122 json.patch json.match_schema
//	json.verify_schema net.cidr_contains_matches net.cidr_expand net.cidr_is_valid
//	net.cidr_merge net.lookup_ip_addr http.send opa.runtime rand.intn trace
//
// This package provides the first group of each line up to io.jwt.decode, and regex.find_n,
// regex.split, regex.replace, glob.quote_meta, sprintf, indexof_n, strings.count,
// strings.any_prefix_match and strings.any_suffix_match: 35 builtins ([Provided]). The
// others are not provided, and a policy needing one is refused at load by the format.
// http.send and net.lookup_ip_addr reach the network and would be capabilities;
// opa.runtime, rand.intn and trace depend on the host process; the rest are left for
// later (signature verification, X.509, YAML, JSON schema, templates).
//
// # Values
//
// A builtin's operands are JSON values decoded with json.Decoder.UseNumber: nil, bool,
// string, json.Number, []any (arrays, and OPA sets, which reach the host as arrays) and
// map[string]any. Numbers stay json.Number so that their text survives: OPA keeps
// arbitrary precision, and sprintf formats "1.0" as a float and "1" as an integer by the
// text. float64 and int64 operands are accepted too. An operand that must be an integer
// (nanoseconds, counts) is exact up to int64's range and refused beyond it (OPA answers
// "timestamp too big" there as well). Results are Go values json.Marshal encodes: integers
// as int64 (exact), strings, booleans, []any and map[string]any.
//
// # Errors
//
// A builtin fails with an *Error naming it; its cause matches ErrOperand for an operand of
// the wrong type or count and ErrLimit for a bound exceeded; otherwise the cause is the
// same failure OPA reports (invalid hex, invalid base64url, a bad JWT, an invalid regular
// expression, a time out of range). In OPA an error makes the expression undefined, unless
// the query asks for strict builtin errors, in which case the evaluation fails; the format
// decides which it does, and it should make the default the undefined result.
//
// # Time
//
// Context.Now is the evaluation's instant: time.now_ns answers it, so every call in one
// evaluation sees the same value, as in OPA, and a test sets it. Time zones are loaded with
// time.LoadLocation from the host's zone database ("Local" is the host's zone); this
// package does not embed time/tzdata, as OPA does, so a host without a zone database
// answers an error for a named zone.
//
// # Bounds
//
// Each string operand is at most MaxInput bytes; results built from operands (regex.replace,
// regex.split, regex.find_n, sprintf) at most MaxOutput bytes or elements; a regular
// expression at most MaxPattern bytes, compiled by Go's regexp (RE2: time linear in the
// pattern and the input, no backtracking) and cached in a RegexpCache bounded in entries
// and pattern bytes; a JWT at most MaxToken bytes and one level of nesting; a sprintf
// width or precision at most MaxWidth, and no '*' width; a zone name at most MaxZone bytes.
//
// # Concurrency
//
// Every Func may be called from any goroutine; a RegexpCache may be shared.
package builtins
