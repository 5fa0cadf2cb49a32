package decisionlog

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrBadMask is returned (wrapped in a *MaskError) by ParseMask for a path that is not a mask
// path.
var ErrBadMask = errors.New("decisionlog: bad mask path")

// MaskError names the mask path ParseMask refused and why.
type MaskError struct {
	Path   string
	Reason string
}

func (e *MaskError) Error() string { return fmt.Sprintf("mask path %q: %s", e.Path, e.Reason) }

// Unwrap makes a MaskError match ErrBadMask.
func (e *MaskError) Unwrap() error { return ErrBadMask }

// Mask is a parsed mask path, OPA's syntax: "/input/password", "/result/reasons/0",
// "/input/users/*/ssn". The first segment is input or result; "*" matches every element of an
// array or every member of an object; a number also indexes an array. "~1" and "~0" escape "/"
// and "~" in a key (JSON Pointer, RFC 6901).
type Mask struct {
	path string
	root string   // "input" or "result"
	segs []string // after the root
}

// String is the path as written.
func (m Mask) String() string { return m.path }

// maxMaskSegments bounds a mask path's depth (and so the walk of one value).
const maxMaskSegments = 32

// ParseMask parses one mask path; a bad one is a *MaskError.
func ParseMask(p string) (Mask, error) {
	if !strings.HasPrefix(p, "/") {
		return Mask{}, &MaskError{Path: p, Reason: "want a path starting with /input or /result"}
	}
	parts := strings.Split(p[1:], "/")
	if parts[0] != "input" && parts[0] != "result" {
		return Mask{}, &MaskError{Path: p, Reason: "want a path starting with /input or /result"}
	}
	if len(parts) > maxMaskSegments {
		return Mask{}, &MaskError{Path: p, Reason: fmt.Sprintf("more than %d segments", maxMaskSegments)}
	}
	m := Mask{path: p, root: parts[0]}
	for _, s := range parts[1:] {
		if s == "" {
			return Mask{}, &MaskError{Path: p, Reason: "empty segment"}
		}
		m.segs = append(m.segs, strings.NewReplacer("~1", "/", "~0", "~").Replace(s))
	}
	return m, nil
}

// masked applies the masks of root to a JSON value and returns it re-encoded, with whether
// any mask matched. A mask of the whole root (/input) erases it: nil. A value that is not JSON
// cannot be masked: when any mask names root it is erased whole (better lost than leaked).
func masked(root string, v []byte, masks []Mask) (out []byte, erased bool) {
	var mine []Mask
	for _, m := range masks {
		if m.root == root {
			if len(m.segs) == 0 {
				return nil, true
			}
			mine = append(mine, m)
		}
	}
	if len(mine) == 0 {
		return v, false
	}
	var doc any
	if err := json.Unmarshal(v, &doc); err != nil {
		return nil, true
	}
	for _, m := range mine {
		var hit bool
		doc, hit = remove(doc, m.segs)
		erased = erased || hit
	}
	if !erased {
		return v, false
	}
	out, err := json.Marshal(doc)
	if err != nil { // cannot happen for a decoded document; erase rather than leak
		return nil, true
	}
	return out, true
}

// remove deletes what segs names under v: an object's member, or (an array element) its
// value replaced by null, so that the other indices keep their meaning. A path that names
// nothing changes nothing.
func remove(v any, segs []string) (any, bool) {
	s, last := segs[0], len(segs) == 1
	switch x := v.(type) {
	case map[string]any:
		if s == "*" {
			hit := false
			for k, e := range x {
				if last {
					delete(x, k)
					hit = true
					continue
				}
				var h bool
				x[k], h = remove(e, segs[1:])
				hit = hit || h
			}
			return x, hit
		}
		e, ok := x[s]
		if !ok {
			return x, false
		}
		if last {
			delete(x, s)
			return x, true
		}
		var h bool
		x[s], h = remove(e, segs[1:])
		return x, h
	case []any:
		idx := -1
		if s != "*" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 || n >= len(x) {
				return x, false
			}
			idx = n
		}
		hit := false
		for i := range x {
			if idx >= 0 && i != idx {
				continue
			}
			if last {
				x[i], hit = nil, true
				continue
			}
			var h bool
			x[i], h = remove(x[i], segs[1:])
			hit = hit || h
		}
		return x, hit
	}
	return v, false
}
