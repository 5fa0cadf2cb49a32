package builtins

import (
	"container/list"
	"fmt"
	"regexp"
	"strings"
	"sync"
)

func init() {
	register("regex.find_n", 3, func(ctx Context, args []any) (any, error) {
		re, s, err := regexArgs(ctx, args, 1, 2)
		if err != nil {
			return nil, err
		}
		n, err := integer(args[2], 3)
		if err != nil {
			return nil, err
		}
		if n < 0 || n > MaxOutput {
			n = MaxOutput + 1
		}
		found := re.FindAllString(s, int(n))
		if len(found) > MaxOutput {
			return nil, fmt.Errorf("%w: more than %d matches", ErrLimit, MaxOutput)
		}
		out := make([]any, len(found))
		for k, f := range found {
			out[k] = f
		}
		return out, nil
	})
	register("regex.split", 2, func(ctx Context, args []any) (any, error) {
		re, s, err := regexArgs(ctx, args, 1, 2)
		if err != nil {
			return nil, err
		}
		parts := re.Split(s, MaxOutput+1)
		if len(parts) > MaxOutput {
			return nil, fmt.Errorf("%w: more than %d parts", ErrLimit, MaxOutput)
		}
		out := make([]any, len(parts))
		for k, p := range parts {
			out[k] = p
		}
		return out, nil
	})
	register("regex.replace", 3, func(ctx Context, args []any) (any, error) {
		re, s, err := regexArgs(ctx, args, 2, 1)
		if err != nil {
			return nil, err
		}
		repl, err := str(args, 3)
		if err != nil {
			return nil, err
		}
		return replace(re, s, repl)
	})
}

// replace is re.ReplaceAllString(s, repl) with its result bounded by MaxOutput: one
// expansion of repl is at most len(repl) plus len(s) per '$' in it, so the check made
// before each costs at most that much beyond the bound.
func replace(re *regexp.Regexp, s, repl string) (any, error) {
	limit := func(n int) error {
		return fmt.Errorf("%w: a result of more than %d bytes (at least %d)", ErrLimit, MaxOutput, n)
	}
	if one := len(repl) + strings.Count(repl, "$")*len(s); one > MaxOutput {
		return nil, limit(one)
	}
	var out []byte
	last := 0
	for _, m := range re.FindAllStringSubmatchIndex(s, -1) {
		out = append(out, s[last:m[0]]...)
		out = re.ExpandString(out, repl, s, m)
		last = m[1]
		if len(out) > MaxOutput {
			return nil, limit(len(out))
		}
	}
	out = append(out, s[last:]...)
	if len(out) > MaxOutput {
		return nil, limit(len(out))
	}
	return string(out), nil
}

// regexArgs returns operand pat compiled and operand s.
func regexArgs(ctx Context, args []any, pat, s int) (*regexp.Regexp, string, error) {
	p, err := str(args, pat)
	if err != nil {
		return nil, "", err
	}
	v, err := str(args, s)
	if err != nil {
		return nil, "", err
	}
	re, err := ctx.Regexps.compile(p)
	if err != nil {
		return nil, "", err
	}
	return re, v, nil
}

// RegexpCache keeps compiled regular expressions, least recently used first out, bounded
// in entries and in the bytes of their patterns. It is safe for concurrent use; the zero
// value is not: use NewRegexpCache.
type RegexpCache struct {
	maxEntries, maxBytes int

	mu    sync.Mutex
	bytes int
	lru   *list.List // of *regexp.Regexp, most recent in front
	byPat map[string]*list.Element
}

// NewRegexpCache returns a cache of at most maxEntries expressions whose patterns total at
// most maxBytes (defaults 256 and 256 KiB when zero or negative).
func NewRegexpCache(maxEntries, maxBytes int) *RegexpCache {
	if maxEntries <= 0 {
		maxEntries = 256
	}
	if maxBytes <= 0 {
		maxBytes = 256 << 10
	}
	return &RegexpCache{maxEntries: maxEntries, maxBytes: maxBytes, lru: list.New(), byPat: map[string]*list.Element{}}
}

// Len returns the number of cached expressions and the bytes of their patterns.
func (c *RegexpCache) Len() (entries, bytes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len(), c.bytes
}

// compile returns pat compiled (RE2 syntax, Go's regexp: time linear in the pattern and
// the input), from the cache when c is not nil.
func (c *RegexpCache) compile(pat string) (*regexp.Regexp, error) {
	if len(pat) > MaxPattern {
		return nil, fmt.Errorf("%w: a pattern of %d bytes, at most %d", ErrLimit, len(pat), MaxPattern)
	}
	if c == nil {
		return regexp.Compile(pat)
	}
	c.mu.Lock()
	if e, ok := c.byPat[pat]; ok {
		c.lru.MoveToFront(e)
		re := e.Value.(*regexp.Regexp)
		c.mu.Unlock()
		return re, nil
	}
	c.mu.Unlock()
	re, err := regexp.Compile(pat)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.byPat[pat]; ok || len(pat) > c.maxBytes {
		return re, nil
	}
	c.byPat[pat] = c.lru.PushFront(re)
	c.bytes += len(pat)
	for c.lru.Len() > c.maxEntries || c.bytes > c.maxBytes {
		old := c.lru.Remove(c.lru.Back()).(*regexp.Regexp)
		delete(c.byPat, old.String())
		c.bytes -= len(old.String())
	}
	return re, nil
}
