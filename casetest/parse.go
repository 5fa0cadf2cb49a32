package casetest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/wasmvisor/wasmvisor/abi"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// File is a parsed and validated cases file. It is immutable: one File may run any number
// of times, from any number of goroutines.
type File struct {
	cases []*fileCase
}

// Names lists the names of the file's cases, in file order.
func (f *File) Names() []string {
	names := make([]string, len(f.cases))
	for i, c := range f.cases {
		names[i] = c.name
	}
	return names
}

type fileCase struct {
	name   string
	index  int // 1-based position in the file
	config map[string]string
	limits sandbox.Limits
	caps   sandbox.Capabilities
	steps  []*step
	watch  []string // topics of the case's published expectations
	topics []string // topics of the case's deliver steps: the plugin subscribes to them
	// instance: the case runs against one sandbox instance, not a host (see CASES.md).
	instance bool
	refuse   []string // instance only: topics whose publishes the case's hook refuses
}

// Step kinds.
const (
	stepCall      = "call"
	stepConfigure = "configure"
	stepDeliver   = "deliver"
)

type step struct {
	kind         string
	handler      string            // call
	input        []byte            // call
	config       map[string]string // configure
	topic        string            // deliver
	data         []byte            // deliver
	expect       expectation
	published    []message // checked when checkPub
	checkPub     bool
	events       []message // the instance's whole event log after the step, when checkEvts
	checkEvts    bool
	metrics      []metricWant // the instance's metrics after the step, when checkMets
	checkMets    bool
	applied      map[string]string // the instance's applied config after the step, when checkApplied
	checkApplied bool
}

// metricWant is one expected metric: name and kind always, the other fields when given.
type metricWant struct {
	name    string
	kind    abi.MetricKind
	value   *float64
	bounds  []float64
	buckets []uint64
	count   *uint64
	sum     *float64
}

type message struct {
	topic  string
	data   []byte
	json   any // data_json, normalised; nil: compare data
	isJSON bool
}

type expectation struct {
	field    string // "output", "output_json", "output_contains", "error", or "" (success)
	output   string
	json     any // normalised output_json
	contains string
	err      *expectedError
}

type expectedError struct {
	kind    string
	status  *abi.Status
	message string  // a substring of the guest's message
	exact   *string // the guest's whole message
	code    *uint32
}

// errorKinds are the kinds a cases file may expect, in sandbox.Kind's vocabulary.
var errorKinds = []string{sandbox.KindGuest, sandbox.KindTrap, sandbox.KindDeadline, sandbox.KindMemoryLimit,
	sandbox.KindExit, sandbox.KindABIViolation, sandbox.KindUnknownHandler}

var statusNames = map[string]abi.Status{
	"error":           abi.StatusError,
	"unknown_handler": abi.StatusUnknownHandler,
	"invalid_input":   abi.StatusInvalidInput,
	"config_rejected": abi.StatusConfigRejected,
	"no_memory":       abi.StatusNoMemory,
}

// Parse reads a cases file (YAML, or JSON, which is YAML too) to its end, then parses and
// validates it. Its errors name the case, the step and the field at fault. See CASES.md.
func Parse(r io.Reader) (*File, error) {
	src, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	return parse(src)
}

// defaults are the top-level fields every case starts from.
type defaults struct {
	handler  string
	config   map[string]string
	limits   sandbox.Limits
	caps     sandbox.Capabilities
	instance bool
	refuse   []string
}

func parse(src []byte) (*File, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, fmt.Errorf("not valid YAML: %w", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("want a mapping with a \"cases\" list")
	}
	top := doc.Content[0]
	def := defaults{config: map[string]string{}}
	var casesNode *yaml.Node
	for i := 0; i < len(top.Content); i += 2 {
		k, v := top.Content[i].Value, top.Content[i+1]
		var err error
		switch k {
		case "handler":
			def.handler, err = scalarString(v)
		case "config":
			def.config, err = parseConfig(v)
		case "limits":
			def.limits, err = parseLimits(v, sandbox.Limits{})
		case "capabilities":
			def.caps, err = parseCapabilities(v, sandbox.Capabilities{})
		case "instance":
			def.instance, err = parseBool(v)
		case "refuse_publish":
			def.refuse, err = parseStrings(v)
		case "cases":
			if v.Kind != yaml.SequenceNode {
				err = errors.New("want a list of cases")
			}
			casesNode = v
		default:
			err = errors.New("unknown field (want handler, config, limits, capabilities, instance, refuse_publish or cases)")
		}
		if err != nil {
			return nil, fmt.Errorf("line %d: field %q: %w", v.Line, k, err)
		}
	}
	if casesNode == nil || len(casesNode.Content) == 0 {
		return nil, errors.New(`field "cases": missing or empty`)
	}
	file := &File{}
	names := map[string]int{}
	for i, n := range casesNode.Content {
		c, err := parseCase(n, i+1, def)
		if err != nil {
			return nil, err
		}
		if prev, ok := names[c.name]; ok {
			return nil, fmt.Errorf("case %q (#%d, line %d): field \"name\": the name of case #%d too", c.name, i+1, n.Line, prev)
		}
		names[c.name] = i + 1
		file.cases = append(file.cases, c)
	}
	return file, nil
}

// callFields are the fields of a call step; a case has them too unless it has steps.
var callFields = []string{"handler", "input", "input_json", "output", "output_json", "output_contains", "error"}

// stepFields are every field of a step.
var stepFields = append(slices.Clone(callFields), "configure", "deliver", "published", "events", "metrics", "applied_config")

// afterFields may follow a step of any kind: they are checked after its own expectation.
var afterFields = []string{"error", "published", "events", "metrics", "applied_config"}

func parseCase(n *yaml.Node, index int, def defaults) (*fileCase, error) {
	c := &fileCase{index: index, limits: def.limits, caps: def.caps, instance: def.instance, refuse: def.refuse}
	where := func() string {
		if c.name != "" {
			return fmt.Sprintf("case %q (#%d, line %d)", c.name, index, n.Line)
		}
		return fmt.Sprintf("case #%d (line %d)", index, n.Line)
	}
	if n.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s: want a mapping", where())
	}
	// The name first, so that every later error can name the case.
	for i := 0; i < len(n.Content); i += 2 {
		if n.Content[i].Value == "name" {
			name, err := scalarString(n.Content[i+1])
			if err == nil && strings.TrimSpace(name) == "" {
				err = errors.New("empty")
			}
			if err != nil {
				return nil, fmt.Errorf("%s: field \"name\": %w", where(), err)
			}
			c.name = name
		}
	}
	if c.name == "" {
		return nil, fmt.Errorf("%s: field \"name\": missing", where())
	}
	config := map[string]string{}
	for k, v := range def.config {
		config[k] = v
	}
	call := &yaml.Node{Kind: yaml.MappingNode}
	var stepsNode *yaml.Node
	for i := 0; i < len(n.Content); i += 2 {
		k, v := n.Content[i].Value, n.Content[i+1]
		var err error
		switch {
		case k == "name":
		case k == "config":
			var m map[string]string
			if m, err = parseConfig(v); err == nil {
				for ck, cv := range m {
					config[ck] = cv
				}
			}
		case k == "limits":
			c.limits, err = parseLimits(v, def.limits)
		case k == "capabilities":
			c.caps, err = parseCapabilities(v, def.caps)
		case k == "instance":
			c.instance, err = parseBool(v)
		case k == "refuse_publish":
			c.refuse, err = parseStrings(v)
		case k == "steps":
			if v.Kind != yaml.SequenceNode || len(v.Content) == 0 {
				err = errors.New("want a non-empty list of steps")
			}
			stepsNode = v
		case slices.Contains(callFields, k), slices.Contains(afterFields, k):
			call.Content = append(call.Content, n.Content[i], v)
		default:
			err = fmt.Errorf("unknown field (want name, config, limits, capabilities, instance, refuse_publish, steps, %s, published, events, metrics, applied_config)", strings.Join(callFields, ", "))
		}
		if err != nil {
			return nil, fmt.Errorf("%s: field %q: %w", where(), k, err)
		}
	}
	if len(config) > 0 {
		c.config = config
	}
	if len(c.refuse) > 0 && !c.instance {
		return nil, fmt.Errorf("%s: field \"refuse_publish\": goes with instance: true (a host's bus accepts every publish)", where())
	}
	if stepsNode != nil {
		if len(call.Content) > 0 {
			return nil, fmt.Errorf("%s: field %q: give steps or a call, not both", where(), call.Content[0].Value)
		}
		for j, sn := range stepsNode.Content {
			s, field, err := parseStep(sn, def.handler)
			if err != nil {
				return nil, fmt.Errorf("%s: step %d: field %q: %w", where(), j+1, field, err)
			}
			c.add(s)
		}
		return c, nil
	}
	s, field, err := parseStep(call, def.handler)
	if err != nil {
		return nil, fmt.Errorf("%s: field %q: %w", where(), field, err)
	}
	c.add(s)
	return c, nil
}

func (c *fileCase) add(s *step) {
	c.steps = append(c.steps, s)
	for _, m := range s.published {
		if !slices.Contains(c.watch, m.topic) {
			c.watch = append(c.watch, m.topic)
		}
	}
	if s.kind == stepDeliver && !slices.Contains(c.topics, s.topic) {
		c.topics = append(c.topics, s.topic)
	}
}

// parseStep parses a step's fields; on error it returns the field at fault.
func parseStep(n *yaml.Node, defHandler string) (*step, string, error) {
	if n.Kind != yaml.MappingNode {
		return nil, "steps", errors.New("want a mapping")
	}
	s := &step{kind: stepCall, handler: defHandler}
	for i := 0; i < len(n.Content); i += 2 {
		switch n.Content[i].Value {
		case "configure":
			s.kind = stepConfigure
		case "deliver":
			s.kind = stepDeliver
		}
	}
	var inputField string
	for i := 0; i < len(n.Content); i += 2 {
		k, v := n.Content[i].Value, n.Content[i+1]
		var err error
		if s.kind != stepCall && !slices.Contains(afterFields, k) && k != s.kind && slices.Contains(stepFields, k) {
			return nil, k, fmt.Errorf("a %s step has %s, %s only", s.kind, s.kind, strings.Join(afterFields, ", "))
		}
		switch k {
		case "handler":
			s.handler, err = scalarString(v)
			if err == nil && s.handler == "" {
				err = errors.New("empty")
			}
		case "input", "input_json":
			if inputField != "" {
				return nil, k, fmt.Errorf("give %s or input_json, not both", "input")
			}
			inputField = k
			if k == "input" {
				var in string
				in, err = parseText(v)
				s.input = []byte(in)
			} else {
				s.input, err = yamlToJSON(v)
			}
		case "output", "output_json", "output_contains", "error":
			if s.expect.field != "" {
				return nil, k, fmt.Errorf("one expectation per call: %s is given too", s.expect.field)
			}
			s.expect.field = k
			switch k {
			case "output":
				s.expect.output, err = parseText(v)
			case "output_contains":
				s.expect.contains, err = scalarString(v)
				if err == nil && s.expect.contains == "" {
					err = errors.New("empty")
				}
			case "output_json":
				var b []byte
				if b, err = yamlToJSON(v); err == nil {
					err = json.Unmarshal(b, &s.expect.json)
				}
			case "error":
				s.expect.err, err = parseExpectedError(v)
			}
		case "configure":
			s.config, err = parseConfig(v)
		case "deliver":
			var m message
			if m, err = parseMessage(v); err == nil {
				s.topic, s.data = m.topic, m.data
			}
		case "published":
			s.checkPub = true
			s.published, err = parsePublished(v)
		case "events":
			s.checkEvts = true
			s.events, err = parsePublished(v)
		case "metrics":
			s.checkMets = true
			s.metrics, err = parseMetrics(v)
		case "applied_config":
			s.checkApplied = true
			s.applied, err = parseConfig(v)
		default:
			err = fmt.Errorf("unknown field (want %s)", strings.Join(stepFields, ", "))
		}
		if err != nil {
			return nil, k, err
		}
	}
	if s.kind != stepCall {
		return s, "", nil
	}
	if s.handler == "" {
		return nil, "handler", errors.New("missing (and no top-level handler)")
	}
	if s.expect.field == "" {
		return nil, "output", errors.New("missing expectation: give output, output_json, output_contains or error")
	}
	return s, "", nil
}

// parseMessage parses {topic: t, data: "…"} or {topic: t, data_json: value}.
func parseMessage(v *yaml.Node) (message, error) {
	var m message
	if v.Kind != yaml.MappingNode {
		return m, errors.New("want a mapping with topic and data or data_json")
	}
	var dataField string
	for i := 0; i < len(v.Content); i += 2 {
		k, f := v.Content[i].Value, v.Content[i+1]
		var err error
		switch k {
		case "topic":
			m.topic, err = scalarString(f)
			if err == nil && m.topic == "" {
				err = errors.New("empty")
			}
		case "data", "data_json":
			if dataField != "" {
				return m, errors.New("give data or data_json, not both")
			}
			dataField = k
			if k == "data" {
				var s string
				s, err = parseText(f)
				m.data = []byte(s)
			} else if m.data, err = yamlToJSON(f); err == nil {
				m.isJSON = true
				err = json.Unmarshal(m.data, &m.json)
			}
		default:
			err = errors.New("unknown field (want topic, data, data_json)")
		}
		if err != nil {
			return m, fmt.Errorf("%s: %w", k, err)
		}
	}
	if m.topic == "" {
		return m, errors.New("topic: missing")
	}
	return m, nil
}

func parsePublished(v *yaml.Node) ([]message, error) {
	if v.Kind != yaml.SequenceNode {
		return nil, errors.New("want a list of messages {topic, data or data_json}")
	}
	ms := []message{}
	for j, n := range v.Content {
		m, err := parseMessage(n)
		if err != nil {
			return nil, fmt.Errorf("message %d: %w", j+1, err)
		}
		ms = append(ms, m)
	}
	return ms, nil
}

func parseExpectedError(v *yaml.Node) (*expectedError, error) {
	x := &expectedError{}
	switch v.Kind {
	case yaml.ScalarNode:
		x.kind = v.Value
	case yaml.MappingNode:
		for i := 0; i < len(v.Content); i += 2 {
			k, f := v.Content[i].Value, v.Content[i+1]
			s, err := scalarString(f)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", k, err)
			}
			switch k {
			case "kind":
				x.kind = s
			case "status":
				st, ok := statusNames[s]
				if !ok {
					return nil, fmt.Errorf("status %q: want one of error, unknown_handler, invalid_input, config_rejected, no_memory", s)
				}
				x.status = &st
			case "message":
				x.message = s
			case "message_exact":
				x.exact = &s
			case "code":
				c, err := strconv.ParseUint(s, 10, 32)
				if err != nil {
					return nil, fmt.Errorf("code %q: want a non-negative integer", s)
				}
				c32 := uint32(c)
				x.code = &c32
			default:
				return nil, fmt.Errorf("unknown field %q (want kind, status, message, message_exact, code)", k)
			}
		}
	default:
		return nil, errors.New("want an error kind or a mapping with kind")
	}
	if !slices.Contains(errorKinds, x.kind) {
		return nil, fmt.Errorf("kind %q: want one of %s", x.kind, strings.Join(errorKinds, ", "))
	}
	if (x.status != nil || x.message != "" || x.exact != nil) && x.kind != "guest" {
		return nil, fmt.Errorf("status, message and message_exact go with kind guest, not %s", x.kind)
	}
	if x.message != "" && x.exact != nil {
		return nil, errors.New("give message or message_exact, not both")
	}
	if x.code != nil && x.kind != "exit" {
		return nil, fmt.Errorf("code goes with kind exit, not %s", x.kind)
	}
	return x, nil
}

// scalarString is the text of a scalar (a YAML number or boolean as written).
func scalarString(v *yaml.Node) (string, error) {
	if v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
		return "", errors.New("want a string")
	}
	return v.Value, nil
}

// parseConfig parses a mapping of config keys to scalars (numbers and booleans as written).
func parseConfig(v *yaml.Node) (map[string]string, error) {
	if v.Kind != yaml.MappingNode {
		return nil, errors.New("want a mapping of keys to values")
	}
	m := map[string]string{}
	for i := 0; i < len(v.Content); i += 2 {
		k := v.Content[i].Value
		val := v.Content[i+1]
		if val.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("key %q: want a string value", k)
		}
		if val.Tag == "!!null" {
			m[k] = ""
			continue
		}
		m[k] = val.Value
	}
	return m, nil
}

func parseStrings(v *yaml.Node) ([]string, error) {
	if v.Kind != yaml.SequenceNode {
		return nil, errors.New("want a list of strings")
	}
	var out []string
	for _, n := range v.Content {
		s, err := scalarString(n)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func parseLimits(v *yaml.Node, l sandbox.Limits) (sandbox.Limits, error) {
	if v.Kind != yaml.MappingNode {
		return l, errors.New("want a mapping with memory_pages, timeout and/or start_timeout")
	}
	for i := 0; i < len(v.Content); i += 2 {
		k, f := v.Content[i].Value, v.Content[i+1]
		s, err := scalarString(f)
		if err != nil {
			return l, fmt.Errorf("%s: %w", k, err)
		}
		switch k {
		case "memory_pages":
			n, err := strconv.ParseUint(s, 10, 32)
			if err != nil || n == 0 || n > 65536 {
				return l, fmt.Errorf("memory_pages %q: want 1 to 65536", s)
			}
			l.MemoryPages = uint32(n)
		case "timeout", "start_timeout":
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 {
				return l, fmt.Errorf("%s %q: want a positive duration such as 100ms", k, s)
			}
			if k == "timeout" {
				l.CallTimeout = d
			} else {
				l.StartTimeout = d
			}
		default:
			return l, fmt.Errorf("unknown field %q (want memory_pages, timeout, start_timeout)", k)
		}
	}
	return l, nil
}

// parseCapabilities parses the capabilities over c: each field given replaces c's.
func parseCapabilities(v *yaml.Node, c sandbox.Capabilities) (sandbox.Capabilities, error) {
	if v.Kind != yaml.MappingNode {
		return c, errors.New("want a mapping with env, inherit_env, dirs, clock, random and/or host_functions")
	}
	for i := 0; i < len(v.Content); i += 2 {
		k, f := v.Content[i].Value, v.Content[i+1]
		var err error
		switch k {
		case "env":
			c.Env, err = parseConfig(f)
		case "inherit_env":
			c.InheritEnv, err = parseStrings(f)
		case "host_functions":
			c.HostFunctions, err = parseStrings(f)
		case "dirs":
			c.Dirs, err = parseDirs(f)
		case "clock", "random":
			var s string
			if s, err = scalarString(f); err != nil {
				break
			}
			switch k + "=" + s {
			case "clock=deterministic":
				c.Clock = sandbox.ClockDeterministic
			case "clock=real":
				c.Clock = sandbox.ClockReal
			case "random=deterministic":
				c.Random = sandbox.RandomDeterministic
			case "random=crypto":
				c.Random = sandbox.RandomCrypto
			default:
				want := "deterministic or real"
				if k == "random" {
					want = "deterministic or crypto"
				}
				err = fmt.Errorf("%q: want %s", s, want)
			}
		default:
			err = errors.New("unknown field (want env, inherit_env, dirs, clock, random, host_functions)")
		}
		if err != nil {
			return c, fmt.Errorf("%s: %w", k, err)
		}
	}
	return c, nil
}

func parseDirs(v *yaml.Node) ([]sandbox.Dir, error) {
	if v.Kind != yaml.SequenceNode {
		return nil, errors.New("want a list of {host, guest}")
	}
	var dirs []sandbox.Dir
	for _, n := range v.Content {
		m, err := parseConfig(n)
		if err != nil {
			return nil, err
		}
		d := sandbox.Dir{Host: m["host"], Guest: m["guest"]}
		if d.Host == "" || d.Guest == "" || len(m) != 2 {
			return nil, errors.New("want {host: DIR, guest: /PATH}")
		}
		dirs = append(dirs, d)
	}
	return dirs, nil
}

// yamlToJSON marshals a YAML value to JSON. Mapping keys must be strings.
func yamlToJSON(v *yaml.Node) ([]byte, error) {
	var x any
	if err := v.Decode(&x); err != nil {
		return nil, err
	}
	x, err := jsonable(x)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(x); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// jsonable converts what yaml decodes into what encoding/json encodes.
func jsonable(x any) (any, error) {
	switch x := x.(type) {
	case map[string]any:
		for k, v := range x {
			j, err := jsonable(v)
			if err != nil {
				return nil, err
			}
			x[k] = j
		}
		return x, nil
	case map[any]any:
		m := make(map[string]any, len(x))
		for k, v := range x {
			ks, ok := k.(string)
			if !ok {
				return nil, fmt.Errorf("mapping key %v: want a string", k)
			}
			j, err := jsonable(v)
			if err != nil {
				return nil, err
			}
			m[ks] = j
		}
		return m, nil
	case []any:
		for i, v := range x {
			j, err := jsonable(v)
			if err != nil {
				return nil, err
			}
			x[i] = j
		}
		return x, nil
	case time.Time:
		return x.Format(time.RFC3339Nano), nil
	case float64:
		if x != x || x > 1e308 || x < -1e308 {
			return nil, fmt.Errorf("%v: not a JSON number", x)
		}
	}
	return x, nil
}

func parseBool(v *yaml.Node) (bool, error) {
	s, err := scalarString(v)
	if err == nil {
		switch s {
		case "true":
			return true, nil
		case "false":
			return false, nil
		}
	}
	return false, errors.New("want true or false")
}

// MaxRepeatBytes bounds the text one {repeat, count} expands to.
const MaxRepeatBytes = 64 << 20

// parseText parses a text: a scalar as written, or {repeat: TEXT, count: N}, TEXT N times
// (at most MaxRepeatBytes), for inputs and outputs too large to paste.
func parseText(v *yaml.Node) (string, error) {
	if v.Kind != yaml.MappingNode {
		return scalarString(v)
	}
	var (
		text       string
		count      uint64
		hasT, hasC bool
	)
	for i := 0; i < len(v.Content); i += 2 {
		k, f := v.Content[i].Value, v.Content[i+1]
		s, err := scalarString(f)
		if err != nil {
			return "", fmt.Errorf("%s: %w", k, err)
		}
		switch k {
		case "repeat":
			text, hasT = s, true
		case "count":
			if count, err = strconv.ParseUint(s, 10, 64); err != nil {
				return "", fmt.Errorf("count %q: want a non-negative integer", s)
			}
			hasC = true
		default:
			return "", fmt.Errorf("unknown field %q (want a string, or repeat and count)", k)
		}
	}
	if !hasT || !hasC || text == "" {
		return "", errors.New("want a string, or {repeat: TEXT, count: N} with a non-empty TEXT")
	}
	if count > MaxRepeatBytes/uint64(len(text)) {
		return "", fmt.Errorf("repeat: %d × %d bytes is over %d", count, len(text), MaxRepeatBytes)
	}
	return strings.Repeat(text, int(count)), nil
}

var metricKinds = map[string]abi.MetricKind{
	"counter":   abi.Counter,
	"gauge":     abi.Gauge,
	"histogram": abi.Histogram,
}

// parseMetrics parses a list of {name, kind, value} or {name, kind: histogram, bounds,
// buckets, count, sum}, every field but name and kind optional.
func parseMetrics(v *yaml.Node) ([]metricWant, error) {
	if v.Kind != yaml.SequenceNode {
		return nil, errors.New("want a list of metrics {name, kind, …}")
	}
	ms := []metricWant{}
	for j, n := range v.Content {
		m, err := parseMetric(n)
		if err != nil {
			return nil, fmt.Errorf("metric %d: %w", j+1, err)
		}
		ms = append(ms, m)
	}
	return ms, nil
}

func parseMetric(n *yaml.Node) (metricWant, error) {
	var m metricWant
	if n.Kind != yaml.MappingNode {
		return m, errors.New("want a mapping with name and kind")
	}
	hasKind := false
	for i := 0; i < len(n.Content); i += 2 {
		k, f := n.Content[i].Value, n.Content[i+1]
		var err error
		switch k {
		case "name":
			m.name, err = scalarString(f)
		case "kind":
			var s string
			if s, err = scalarString(f); err == nil {
				var ok bool
				if m.kind, ok = metricKinds[s]; !ok {
					err = fmt.Errorf("%q: want counter, gauge or histogram", s)
				}
				hasKind = true
			}
		case "value", "sum":
			var x float64
			if err = f.Decode(&x); err != nil || f.Kind != yaml.ScalarNode {
				err = errors.New("want a number")
			} else if k == "value" {
				m.value = &x
			} else {
				m.sum = &x
			}
		case "count":
			var x uint64
			if err = f.Decode(&x); err != nil || f.Kind != yaml.ScalarNode {
				err = errors.New("want a non-negative integer")
			}
			m.count = &x
		case "bounds":
			if err = f.Decode(&m.bounds); err != nil || f.Kind != yaml.SequenceNode {
				err = errors.New("want a list of numbers")
			}
		case "buckets":
			if err = f.Decode(&m.buckets); err != nil || f.Kind != yaml.SequenceNode {
				err = errors.New("want a list of non-negative integers")
			}
		default:
			err = errors.New("unknown field (want name, kind, value, bounds, buckets, count, sum)")
		}
		if err != nil {
			return m, fmt.Errorf("%s: %w", k, err)
		}
	}
	switch {
	case m.name == "":
		return m, errors.New("name: missing")
	case !hasKind:
		return m, errors.New("kind: missing")
	case m.kind == abi.Histogram && m.value != nil:
		return m, errors.New("value: a histogram has bounds, buckets, count and sum")
	case m.kind != abi.Histogram && (m.bounds != nil || m.buckets != nil || m.count != nil || m.sum != nil):
		return m, errors.New("bounds, buckets, count and sum go with kind histogram")
	}
	return m, nil
}
