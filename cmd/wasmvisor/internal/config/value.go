package config

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"

	"go.yaml.in/yaml/v3"
)

const (
	// MaxConfigValueBytes bounds the text a plugin's config value is pushed as (the JSON
	// text of a structured one).
	MaxConfigValueBytes = 64 << 10
	// MaxConfigValueDepth bounds the nesting of a structured config value: the JSON readers
	// of the guest SDKs read 64 levels.
	MaxConfigValueDepth = 64
)

// pluginConfigNodes is a plugin's config as written: keys to any YAML values.
type pluginConfigNodes = map[string]yaml.Node

// configValues converts a plugin's config with configValue, each problem added under
// key("config.KEY"); nil stays nil.
func configValues(raw pluginConfigNodes, key func(string) string, add func(string, string, ...any)) map[string]string {
	if raw == nil {
		return nil
	}
	c := make(map[string]string, len(raw))
	for k, n := range raw {
		v, err := configValue(&n)
		if err != nil {
			add(key("config."+k), "%v", err)
		}
		c[k] = v
	}
	return c
}

// configValue returns the string a plugin's config value is pushed to the guest as: a string
// as written; null as ""; a number, bool, list or map as compact JSON, map keys sorted
// (CONFIG.md, "Structured config values"). A map key is its text (`1: a` is {"1":"a"}).
func configValue(n *yaml.Node) (string, error) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode {
		switch n.ShortTag() {
		case "!!null":
			return "", nil
		case "!!int", "!!float", "!!bool":
		default:
			if len(n.Value) > MaxConfigValueBytes {
				return "", fmt.Errorf("longer than %d bytes", MaxConfigValueBytes)
			}
			return n.Value, nil
		}
	}
	w := jsonValue{}
	if err := w.write(n, 0); err != nil {
		return "", err
	}
	if len(w.b) > MaxConfigValueBytes {
		return "", fmt.Errorf("longer than %d bytes as JSON", MaxConfigValueBytes)
	}
	return string(w.b), nil
}

// jsonValue writes a YAML node as JSON, bounded in size and depth (an alias is followed, so
// the bound on size is what stops a document that expands aliases exponentially).
type jsonValue struct{ b []byte }

func (w *jsonValue) write(n *yaml.Node, depth int) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if len(w.b) > MaxConfigValueBytes {
		return fmt.Errorf("longer than %d bytes as JSON", MaxConfigValueBytes)
	}
	switch n.Kind {
	case yaml.MappingNode, yaml.SequenceNode:
		if depth == MaxConfigValueDepth {
			return fmt.Errorf("nested deeper than %d levels", MaxConfigValueDepth)
		}
	}
	switch n.Kind {
	case yaml.SequenceNode:
		w.b = append(w.b, '[')
		for i, e := range n.Content {
			if i > 0 {
				w.b = append(w.b, ',')
			}
			if err := w.write(e, depth+1); err != nil {
				return err
			}
		}
		w.b = append(w.b, ']')
	case yaml.MappingNode:
		type entry struct{ k, v *yaml.Node }
		var es []entry
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Kind == yaml.AliasNode {
				k = k.Alias
			}
			if k.Kind != yaml.ScalarNode {
				return fmt.Errorf("a map key must be a single value (line %d)", k.Line)
			}
			if k.ShortTag() == "!!merge" {
				return fmt.Errorf("merge keys (<<) are not supported (line %d)", k.Line)
			}
			es = append(es, entry{k, n.Content[i+1]})
		}
		slices.SortFunc(es, func(a, b entry) int { return cmpString(a.k.Value, b.k.Value) })
		w.b = append(w.b, '{')
		for i, e := range es {
			if i > 0 {
				if es[i-1].k.Value == e.k.Value {
					return fmt.Errorf("duplicate key %q (line %d)", e.k.Value, e.k.Line)
				}
				w.b = append(w.b, ',')
			}
			w.str(e.k.Value)
			w.b = append(w.b, ':')
			if err := w.write(e.v, depth+1); err != nil {
				return err
			}
		}
		w.b = append(w.b, '}')
	case yaml.ScalarNode:
		return w.scalar(n)
	default:
		return fmt.Errorf("unsupported YAML node (line %d)", n.Line)
	}
	return nil
}

func (w *jsonValue) scalar(n *yaml.Node) error {
	switch n.ShortTag() {
	case "!!null":
		w.b = append(w.b, "null"...)
	case "!!bool":
		var v bool
		if err := n.Decode(&v); err != nil {
			return err
		}
		w.b = strconv.AppendBool(w.b, v)
	case "!!int":
		var i int64
		if err := n.Decode(&i); err == nil {
			w.b = strconv.AppendInt(w.b, i, 10)
			return nil
		}
		var u uint64
		if err := n.Decode(&u); err == nil {
			w.b = strconv.AppendUint(w.b, u, 10)
			return nil
		}
		return fmt.Errorf("integer %s out of range (line %d); quote it to pass it as a string", n.Value, n.Line)
	case "!!float":
		var f float64
		if err := n.Decode(&f); err != nil {
			return err
		}
		if math.IsInf(f, 0) || math.IsNaN(f) {
			return fmt.Errorf("%s has no JSON form (line %d); quote it to pass it as a string", n.Value, n.Line)
		}
		b, _ := json.Marshal(f) // finite: cannot fail
		w.b = append(w.b, b...)
	default: // !!str, !!timestamp, !!binary: the text as written
		w.str(n.Value)
	}
	return nil
}

func (w *jsonValue) str(s string) {
	b, _ := json.Marshal(s) // a string: cannot fail
	w.b = append(w.b, b...)
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
