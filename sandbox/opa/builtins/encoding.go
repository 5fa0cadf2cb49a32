package builtins

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"  //nolint:gosec // OPA's crypto.md5 and crypto.hmac.md5, not a security choice of the host
	"crypto/sha1" //nolint:gosec // OPA's crypto.sha1 and crypto.hmac.sha1
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/url"
	"strings"
)

func init() {
	digest := func(name string, sum func([]byte) []byte) {
		register(name, 1, func(_ Context, args []any) (any, error) {
			s, err := str(args, 1)
			if err != nil {
				return nil, err
			}
			return hex.EncodeToString(sum([]byte(s))), nil
		})
	}
	digest("crypto.md5", func(b []byte) []byte { s := md5.Sum(b); return s[:] })   //nolint:gosec // OPA's crypto.md5
	digest("crypto.sha1", func(b []byte) []byte { s := sha1.Sum(b); return s[:] }) //nolint:gosec // OPA's crypto.sha1
	digest("crypto.sha256", func(b []byte) []byte { s := sha256.Sum256(b); return s[:] })
	mac := func(name string, h func() hash.Hash) {
		register(name, 2, func(_ Context, args []any) (any, error) {
			msg, err := str(args, 1)
			if err != nil {
				return nil, err
			}
			key, err := str(args, 2)
			if err != nil {
				return nil, err
			}
			m := hmac.New(h, []byte(key))
			m.Write([]byte(msg))
			return hex.EncodeToString(m.Sum(nil)), nil
		})
	}
	mac("crypto.hmac.md5", md5.New)
	mac("crypto.hmac.sha1", sha1.New)
	mac("crypto.hmac.sha256", sha256.New)
	mac("crypto.hmac.sha512", sha512.New)
	register("crypto.hmac.equal", 2, func(_ Context, args []any) (any, error) {
		a, err := str(args, 1)
		if err != nil {
			return nil, err
		}
		b, err := str(args, 2)
		if err != nil {
			return nil, err
		}
		return hmac.Equal([]byte(a), []byte(b)), nil
	})

	unary := func(name string, fn func(string) (any, error)) {
		register(name, 1, func(_ Context, args []any) (any, error) {
			s, err := str(args, 1)
			if err != nil {
				return nil, err
			}
			return fn(s)
		})
	}
	unary("hex.encode", func(s string) (any, error) { return hex.EncodeToString([]byte(s)), nil })
	unary("hex.decode", func(s string) (any, error) {
		b, err := hex.DecodeString(s)
		if err != nil {
			return nil, err
		}
		return string(b), nil
	})
	unary("base64url.encode_no_pad", func(s string) (any, error) {
		return base64.RawURLEncoding.EncodeToString([]byte(s)), nil
	})
	unary("urlquery.encode", func(s string) (any, error) { return url.QueryEscape(s), nil })
	unary("urlquery.decode", func(s string) (any, error) { return url.QueryUnescape(s) })
	unary("urlquery.decode_object", func(s string) (any, error) {
		q, err := url.ParseQuery(s)
		if err != nil {
			return nil, err
		}
		out := make(map[string]any, len(q))
		for k, vs := range q {
			a := make([]any, len(vs))
			for i, v := range vs {
				a[i] = v
			}
			out[k] = a
		}
		return out, nil
	})
	register("urlquery.encode_object", 1, urlqueryEncodeObject)
	unary("io.jwt.decode", jwtDecode)
}

func urlqueryEncodeObject(_ Context, args []any) (any, error) {
	o, ok := args[0].(map[string]any)
	if !ok {
		return nil, operandErr(1, "an object", args[0])
	}
	bad := fmt.Errorf("%w 1: values must be string, array[string], or set[string]", ErrOperand)
	q := url.Values{}
	size := 0
	for k, v := range o {
		switch v := v.(type) {
		case string:
			size += len(k) + len(v)
			q.Set(k, v)
		case []any:
			for _, e := range v {
				s, ok := e.(string)
				if !ok {
					return nil, bad
				}
				size += len(k) + len(s)
				q.Add(k, s)
			}
		default:
			return nil, bad
		}
		if size > MaxInput {
			return nil, fmt.Errorf("%w: operand 1: more than %d bytes", ErrLimit, MaxInput)
		}
	}
	return q.Encode(), nil
}

// base64URLDecode is OPA's base64url.decode: padding optional.
func base64URLDecode(s string) ([]byte, error) {
	if !strings.HasSuffix(s, "=") {
		switch len(s) % 4 {
		case 0:
		case 2:
			s += "=="
		case 3:
			s += "="
		default:
			return nil, fmt.Errorf("illegal base64url string: %s", s)
		}
	}
	return base64.URLEncoding.DecodeString(s)
}

// jsonObject decodes s, a JSON object, numbers as json.Number.
func jsonObject(s []byte) (map[string]any, error) {
	d := json.NewDecoder(bytes.NewReader(s))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, errors.New("invalid JSON: data after the value")
	}
	o, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("decoded JSON type was not an Object")
	}
	return o, nil
}

// jwtDecode is OPA's io.jwt.decode: [header, payload, signature as hex], no verification;
// a JWE (a header with "enc") is refused, a payload of content type JWT decoded in turn
// (one level: OPA recurses without a bound, the host refuses a second nesting).
func jwtDecode(s string) (any, error) {
	return jwtDecodeDepth(s, 0)
}

func jwtDecodeDepth(s string, depth int) (any, error) {
	if len(s) > MaxToken {
		return nil, fmt.Errorf("%w: a token of %d bytes, at most %d", ErrLimit, len(s), MaxToken)
	}
	if !strings.Contains(s, ".") {
		return nil, errors.New("encoded JWT had no period separators")
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("encoded JWT must have 3 sections, found %d", len(parts))
	}
	hb, err := base64URLDecode(parts[0])
	if err != nil {
		return nil, fmt.Errorf("JWT header had invalid encoding: %w", err)
	}
	header, err := jsonObject(hb)
	if err != nil {
		return nil, fmt.Errorf("bad JWT header: %w", err)
	}
	if _, ok := header["enc"]; ok {
		return nil, errors.New("JWT is a JWE object, which is not supported")
	}
	pb, err := base64URLDecode(parts[1])
	if err != nil {
		return nil, fmt.Errorf("JWT payload had invalid encoding: %w", err)
	}
	if cty, ok := header["cty"].(string); ok && cty == "JWT" {
		if depth > 0 {
			return nil, fmt.Errorf("%w: a JWT nested more than once", ErrLimit)
		}
		return jwtDecodeDepth(strings.Trim(string(pb), `"'`), depth+1)
	}
	payload, err := jsonObject(pb)
	if err != nil {
		return nil, err
	}
	sig, err := base64URLDecode(parts[2])
	if err != nil {
		return nil, fmt.Errorf("JWT signature had invalid encoding: %w", err)
	}
	return []any{header, payload, hex.EncodeToString(sig)}, nil
}
