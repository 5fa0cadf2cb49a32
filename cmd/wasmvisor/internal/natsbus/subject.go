package natsbus

import (
	"errors"
	"strings"
)

// Subject is the NATS subject that carries topic under prefix: prefix, a dot, and the topic
// escaped into one subject token. Letters, digits, - and _ stand for themselves; every other
// byte (the dot, the wildcards * and >, spaces, ~ itself, any non-ASCII byte) is ~ and two
// upper-case hex digits. One token per topic keeps "<prefix>.*" matching every topic and no
// topic reaching into another's subjects.
func Subject(prefix, topic string) string { return prefix + "." + escapeToken(topic) }

const hexDigits = "0123456789ABCDEF"

func plain(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

func escapeToken(s string) string {
	n := 0
	for i := range len(s) {
		if !plain(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 2*n)
	for i := range len(s) {
		c := s[i]
		if plain(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('~')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
	return b.String()
}

var errBadToken = errors.New("natsbus: not an escaped topic")

// unescapeToken reverses escapeToken; it refuses what escapeToken never produces.
func unescapeToken(s string) (string, error) {
	if !strings.Contains(s, "~") {
		for i := range len(s) {
			if !plain(s[i]) {
				return "", errBadToken
			}
		}
		return s, nil
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if plain(c) {
			b = append(b, c)
			continue
		}
		if c != '~' || i+2 >= len(s) {
			return "", errBadToken
		}
		hi, lo := strings.IndexByte(hexDigits, s[i+1]), strings.IndexByte(hexDigits, s[i+2])
		if hi < 0 || lo < 0 {
			return "", errBadToken
		}
		v := byte(hi<<4 | lo)
		if plain(v) { // escapeToken leaves these as they are: one spelling per topic
			return "", errBadToken
		}
		b = append(b, v)
		i += 2
	}
	return string(b), nil
}

// validSubject reports whether s is dot-separated non-empty tokens of plain bytes.
func validSubject(s string) bool {
	for tok := range strings.SplitSeq(s, ".") {
		if tok == "" || escapeToken(tok) != tok {
			return false
		}
	}
	return true
}
