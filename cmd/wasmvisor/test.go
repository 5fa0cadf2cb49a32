package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.yaml.in/yaml/v3"

	"github.com/wasmvisor/wasmvisor/abi"
	"github.com/wasmvisor/wasmvisor/sandbox"
	"github.com/wasmvisor/wasmvisor/sandbox/extism"
)

// This file is `wasmvisor test`: it runs a cases file against a plugin, each case in a fresh
// instance of the plugin compiled once (per distinct limits), and reports like `opa test`.
//
// A cases file is YAML:
//
//	handler: evaluate            # default handler of every case (optional)
//	config: {key: value}         # config of every case; a case's config is merged over it
//	limits: {memory_pages: 64, timeout: 2s}   # default limits (optional)
//	cases:
//	  - name: admin may delete    # required, unique
//	    handler: evaluate         # required unless given at the top
//	    config: {role.admin: "*"} # optional
//	    limits: {timeout: 100ms}  # optional, over the top-level limits
//	    input: '{"a":1}'          # the input as a string, or
//	    input_json: {a: 1}        # any YAML value, marshalled to JSON (neither: empty input)
//	    # one expectation:
//	    output: '...'             # the exact output
//	    output_json: {allow: true}  # JSON-equal output (key order and spacing ignored)
//	    output_contains: 'allow'  # a substring of the output
//	    error: guest              # or a mapping {kind: guest, status: invalid_input, message: "…"}
//	    # or, instead of the call fields and the expectation, steps run one after the other in
//	    # the same instance (for plugins with state):
//	    steps:
//	      - {input_json: {...}, output_json: {...}}  # handler defaults to the case's
//
// Error kinds: guest (optional status: error, unknown_handler, invalid_input,
// config_rejected, no_memory; optional message, a substring of the guest's message), trap,
// deadline, memory_limit, exit (optional code), abi_violation, unknown_handler: the names of
// sandbox.Kind, the same as the server's error kinds and the host's metric labels. A config that
// the plugin rejects fails the instance's start: expect {kind: guest, status: config_rejected}.

// testCaseFile is a parsed cases file.
type testCaseFile struct {
	cases []*testCase
}

type testCase struct {
	name   string
	index  int // 1-based position in the file
	config map[string]string
	limits testLimits
	steps  []*testStep
}

type testLimits struct {
	memoryPages uint32
	timeout     time.Duration
}

type testStep struct {
	handler string
	input   []byte
	expect  expectation
}

type expectation struct {
	field    string // "output", "output_json", "output_contains" or "error"
	output   string
	json     any // normalised output_json
	contains string
	err      *expectedError
}

type expectedError struct {
	kind    string
	status  *abi.Status
	message string
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

// testFailed is the error of a run with failing cases: exit code 1, the summary already said it.
type testFailed struct{ failed int }

func (e testFailed) Error() string { return fmt.Sprintf("test: %d failed", e.failed) }

type testFlags struct {
	run      string
	verbose  bool
	cacheDir string
	noCache  bool
}

// newTestCmd returns the `test` command.
func newTestCmd(stdout, stderr io.Writer) *cobra.Command {
	var f testFlags
	cmd := &cobra.Command{
		Use:   "test <plugin.wasm> <cases.yaml>",
		Short: "Run a plugin's cases file, each case in a fresh sandbox",
		Long: `Run the cases of a cases file against a plugin, each case in a fresh instance of the
plugin (compiled once), and compare each output or error with the case's expectation.

One line per failing case, then the summary "wasmvisor test: N passed, N failed".
Extism plugins run too, as with call. See cmd/wasmvisor/test.go for the file format.

Exit codes: 0 all passed, 1 a case failed (or the plugin could not be loaded),
2 usage or an invalid cases file.`,
		Args: args(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runTest(cmd.Context(), a[0], a[1], f, stdout, stderr)
		},
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	fl := cmd.Flags()
	fl.StringVar(&f.run, "run", "", "run only the cases whose name matches this regular expression")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "list every case with its duration")
	fl.StringVar(&f.cacheDir, "cache-dir", "", "compilation cache directory (default: the user cache directory)")
	fl.BoolVar(&f.noCache, "no-cache", false, "compile without the on-disk cache")
	return cmd
}

func runTest(ctx context.Context, pluginPath, casesPath string, f testFlags, stdout, _ io.Writer) error {
	if ctx == nil {
		ctx = context.Background()
	}
	var filter *regexp.Regexp
	if f.run != "" {
		re, err := regexp.Compile(f.run)
		if err != nil {
			return usageError{fmt.Errorf("--run: %w", err)}
		}
		filter = re
	}
	src, err := os.ReadFile(casesPath)
	if err != nil {
		return usageError{err}
	}
	file, err := parseCases(src)
	if err != nil {
		return usageError{fmt.Errorf("%s: %w", casesPath, err)}
	}
	wasm, err := os.ReadFile(pluginPath)
	if err != nil {
		return err
	}
	r, err := newCaseRunner(ctx, wasm, cacheDir(callFlags{cacheDir: f.cacheDir, noCache: f.noCache}))
	if err != nil {
		return fmt.Errorf("%s: %w", pluginPath, err)
	}
	defer r.close(ctx)

	passed, failed := 0, 0
	for _, c := range file.cases {
		if filter != nil && !filter.MatchString(c.name) {
			continue
		}
		start := time.Now()
		problems, err := r.run(ctx, c)
		if err != nil { // the plugin itself: it does not compile under these limits
			return fmt.Errorf("%s: case %q: %w", pluginPath, c.name, err)
		}
		took := time.Since(start)
		if len(problems) == 0 {
			passed++
			if f.verbose {
				fmt.Fprintf(stdout, "ok   %s (%s)\n", c.name, fmtDuration(took))
			}
			continue
		}
		failed++
		if f.verbose {
			fmt.Fprintf(stdout, "FAIL %s (%s): %s\n", c.name, fmtDuration(took), strings.Join(problems, "; "))
		} else {
			fmt.Fprintf(stdout, "FAIL %s: %s\n", c.name, strings.Join(problems, "; "))
		}
	}
	fmt.Fprintf(stdout, "wasmvisor test: %d passed, %d failed\n", passed, failed)
	if failed > 0 {
		return testFailed{failed}
	}
	return nil
}

func fmtDuration(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%dµs", d.Microseconds())
}

// caseRunner compiles the plugin once per distinct limits and instantiates it per case.
type caseRunner struct {
	wasm    []byte
	extism  bool
	eng     *sandbox.Engine
	cache   string
	modules map[testLimits]testModule
}

// testModule and testInstance are what sandbox and extism modules have in common.
type testModule interface {
	instantiate(ctx context.Context, config map[string]string) (testInstance, error)
	close(ctx context.Context)
}

type testInstance interface {
	Call(ctx context.Context, handler string, input []byte) ([]byte, error)
	Close(ctx context.Context) error
}

type sandboxModule struct{ m *sandbox.Module }

func (s sandboxModule) instantiate(ctx context.Context, config map[string]string) (testInstance, error) {
	i, err := s.m.Instantiate(ctx, config)
	if err != nil {
		return nil, err
	}
	return i, nil
}

func (s sandboxModule) close(ctx context.Context) { _ = s.m.Close(ctx) }

type extismModule struct{ m *extism.Module }

func (s extismModule) instantiate(ctx context.Context, config map[string]string) (testInstance, error) {
	i, err := s.m.Instantiate(ctx, config)
	if err != nil {
		return nil, err
	}
	return i, nil
}

func (s extismModule) close(ctx context.Context) { _ = s.m.Close(ctx) }

func newCaseRunner(ctx context.Context, wasm []byte, cache string) (*caseRunner, error) {
	r := &caseRunner{wasm: wasm, extism: extism.IsPlugin(wasm), cache: cache, modules: map[testLimits]testModule{}}
	if !r.extism {
		opts := []sandbox.Option{sandbox.WithLogger(zap.NewNop())}
		if cache != "" {
			opts = append(opts, sandbox.WithCacheDir(cache))
		}
		eng, err := sandbox.NewEngine(ctx, opts...)
		if err != nil {
			return nil, err
		}
		r.eng = eng
	}
	// Compile with the default limits now, so that a module that is not valid fails at once.
	if _, err := r.module(ctx, testLimits{}); err != nil {
		r.close(ctx)
		return nil, err
	}
	return r, nil
}

func (r *caseRunner) module(ctx context.Context, l testLimits) (testModule, error) {
	if m, ok := r.modules[l]; ok {
		return m, nil
	}
	cfg := sandbox.Config{Limits: sandbox.Limits{MemoryPages: l.memoryPages, CallTimeout: l.timeout}, Logger: zap.NewNop()}
	var m testModule
	if r.extism {
		var opts []extism.Option
		if r.cache != "" {
			opts = append(opts, extism.WithCacheDir(r.cache))
		}
		em, err := extism.Compile(ctx, r.wasm, cfg, opts...)
		if err != nil {
			return nil, err
		}
		m = extismModule{em}
	} else {
		sm, err := r.eng.Compile(ctx, r.wasm, cfg)
		if err != nil {
			return nil, err
		}
		m = sandboxModule{sm}
	}
	r.modules[l] = m
	return m, nil
}

func (r *caseRunner) close(ctx context.Context) {
	for _, m := range r.modules {
		m.close(ctx)
	}
	if r.eng != nil {
		_ = r.eng.Close(ctx)
	}
}

// run runs c in a fresh instance and returns what did not match (nil: the case passed). The
// error is for a module that does not compile under the case's limits.
func (r *caseRunner) run(ctx context.Context, c *testCase) ([]string, error) {
	m, err := r.module(ctx, c.limits)
	if err != nil {
		return nil, err
	}
	inst, startErr := m.instantiate(ctx, c.config)
	if inst != nil {
		defer inst.Close(ctx)
	}
	var problems []string
	for n, s := range c.steps {
		var (
			out  []byte
			err  = startErr
			what = "call"
		)
		if startErr != nil {
			what = "start"
		} else {
			out, err = inst.Call(ctx, s.handler, s.input)
		}
		if p := s.expect.check(out, err, what); p != "" {
			if len(c.steps) > 1 {
				p = fmt.Sprintf("step %d: %s", n+1, p)
			}
			problems = append(problems, p)
		}
		if startErr != nil {
			break // every later step would report the same start error
		}
	}
	return problems, nil
}

// check compares a call's outcome with the expectation and explains a mismatch in one line.
func (e *expectation) check(out []byte, err error, what string) string {
	if e.err != nil {
		if err == nil {
			return fmt.Sprintf("error: got output %s, want error %s", quoteOutput(out), e.err)
		}
		return e.err.check(err)
	}
	if err != nil {
		return fmt.Sprintf("%s: got error (%s) %s, want %s", e.field, sandbox.Kind(err), oneLine(what+": "+err.Error()), e.describe())
	}
	switch e.field {
	case "output":
		if string(out) != e.output {
			return fmt.Sprintf("output: got %s, want %s", quoteOutput(out), quoteOutput([]byte(e.output)))
		}
	case "output_contains":
		if !strings.Contains(string(out), e.contains) {
			return fmt.Sprintf("output_contains: %s does not contain %q", quoteOutput(out), e.contains)
		}
	case "output_json":
		var got any
		if err := json.Unmarshal(out, &got); err != nil {
			return fmt.Sprintf("output_json: got %s, not JSON: %v", quoteOutput(out), err)
		}
		if diffs := jsonDiff("$", got, e.json, nil); len(diffs) > 0 {
			return "output_json: " + strings.Join(diffs, ", ")
		}
	}
	return ""
}

func (e *expectation) describe() string {
	switch e.field {
	case "output":
		return "output " + quoteOutput([]byte(e.output))
	case "output_contains":
		return fmt.Sprintf("output containing %q", e.contains)
	}
	b, _ := json.Marshal(e.json)
	return "output " + string(b)
}

// quoteOutput shows an output: as is when it is printable on one line, else quoted.
func quoteOutput(b []byte) string {
	const maxShown = 300
	s := string(b)
	if len(s) > maxShown {
		s = s[:maxShown] + "…"
	}
	q := strconv.Quote(s)
	if s != "" && !strings.ContainsAny(s, "\n\r\t") && q[1:len(q)-1] == strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), `"`, `\"`) {
		return "`" + s + "`"
	}
	return q
}

// jsonDiff lists the differences between got and want at path, as "PATH: got X, want Y".
func jsonDiff(path string, got, want any, diffs []string) []string {
	const maxDiffs = 5
	if len(diffs) >= maxDiffs {
		return diffs
	}
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			break
		}
		keys := make([]string, 0, len(w)+len(g))
		for k := range w {
			keys = append(keys, k)
		}
		for k := range g {
			if _, ok := w[k]; !ok {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		for _, k := range keys {
			p := path + "." + k
			gv, gok := g[k]
			wv, wok := w[k]
			switch {
			case !gok:
				diffs = append(diffs, fmt.Sprintf("%s: missing, want %s", p, jsonText(wv)))
			case !wok:
				diffs = append(diffs, fmt.Sprintf("%s: got %s, want no such key", p, jsonText(gv)))
			default:
				diffs = jsonDiff(p, gv, wv, diffs)
			}
			if len(diffs) >= maxDiffs {
				return append(diffs[:maxDiffs], "…")
			}
		}
		return diffs
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			break
		}
		for i := range w {
			diffs = jsonDiff(fmt.Sprintf("%s[%d]", path, i), g[i], w[i], diffs)
		}
		return diffs
	}
	if !reflect.DeepEqual(got, want) {
		diffs = append(diffs, fmt.Sprintf("%s: got %s, want %s", path, jsonText(got), jsonText(want)))
	}
	return diffs
}

func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	const maxShown = 200
	if len(b) > maxShown {
		return string(b[:maxShown]) + "…"
	}
	return string(b)
}

func (x *expectedError) String() string {
	var parts []string
	if x.status != nil {
		parts = append(parts, "status "+statusName(*x.status))
	}
	if x.message != "" {
		parts = append(parts, fmt.Sprintf("message containing %q", x.message))
	}
	if x.code != nil {
		parts = append(parts, fmt.Sprintf("code %d", *x.code))
	}
	if len(parts) == 0 {
		return x.kind
	}
	return x.kind + " (" + strings.Join(parts, ", ") + ")"
}

func statusName(s abi.Status) string {
	for n, v := range statusNames {
		if v == s {
			return n
		}
	}
	return s.String()
}

func (x *expectedError) check(err error) string {
	got := sandbox.Kind(err)
	var ge *sandbox.GuestError
	isGuest := errors.As(err, &ge)
	// An unknown handler is a guest status too (whether the host or the guest found it
	// unknown): kind guest matches it.
	var status abi.Status
	switch {
	case isGuest:
		status = ge.Status
	case errors.Is(err, sandbox.ErrUnknownHandler):
		isGuest, status = true, abi.StatusUnknownHandler
	}
	if got != x.kind && !(x.kind == "guest" && isGuest) {
		return fmt.Sprintf("error: got %s: %s, want %s", got, oneLine(err.Error()), x)
	}
	if x.status != nil && status != *x.status {
		return fmt.Sprintf("error: got status %s: %s, want status %s", statusName(status), oneLine(err.Error()), statusName(*x.status))
	}
	if x.message != "" && (ge == nil || !strings.Contains(ge.Message, x.message)) {
		msg := err.Error()
		if ge != nil {
			msg = ge.Message
		}
		return fmt.Sprintf("error: message %q does not contain %q", oneLine(msg), x.message)
	}
	if x.code != nil {
		var ee *sandbox.ExitError
		if !errors.As(err, &ee) || ee.Code != *x.code {
			return fmt.Sprintf("error: got %s, want exit code %d", oneLine(err.Error()), *x.code)
		}
	}
	return ""
}

// ---- parsing ----

// parseCases parses and validates a cases file. Its errors name the case and the field.
func parseCases(src []byte) (*testCaseFile, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, fmt.Errorf("not valid YAML: %w", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("want a mapping with a \"cases\" list")
	}
	top := doc.Content[0]
	var (
		defHandler string
		defConfig  = map[string]string{}
		defLimits  testLimits
		casesNode  *yaml.Node
	)
	for i := 0; i < len(top.Content); i += 2 {
		k, v := top.Content[i].Value, top.Content[i+1]
		fail := func(err error) error { return fmt.Errorf("line %d: field %q: %w", v.Line, k, err) }
		var err error
		switch k {
		case "handler":
			defHandler, err = scalarString(v)
		case "config":
			defConfig, err = parseConfig(v)
		case "limits":
			defLimits, err = parseLimits(v, testLimits{})
		case "cases":
			if v.Kind != yaml.SequenceNode {
				err = errors.New("want a list of cases")
			}
			casesNode = v
		default:
			err = errors.New("unknown field (want handler, config, limits or cases)")
		}
		if err != nil {
			return nil, fail(err)
		}
	}
	if casesNode == nil || len(casesNode.Content) == 0 {
		return nil, errors.New(`field "cases": missing or empty`)
	}
	file := &testCaseFile{}
	names := map[string]int{}
	for i, n := range casesNode.Content {
		c, err := parseCase(n, i+1, defHandler, defConfig, defLimits)
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

// callFields are the fields of a step; a case has them too unless it has steps.
var callFields = []string{"handler", "input", "input_json", "output", "output_json", "output_contains", "error"}

func parseCase(n *yaml.Node, index int, defHandler string, defConfig map[string]string, defLimits testLimits) (*testCase, error) {
	c := &testCase{index: index, limits: defLimits}
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
	for k, v := range defConfig {
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
			c.limits, err = parseLimits(v, defLimits)
		case k == "steps":
			if v.Kind != yaml.SequenceNode || len(v.Content) == 0 {
				err = errors.New("want a non-empty list of steps")
			}
			stepsNode = v
		case slices.Contains(callFields, k):
			call.Content = append(call.Content, n.Content[i], v)
		default:
			err = fmt.Errorf("unknown field (want name, config, limits, steps, %s)", strings.Join(callFields, ", "))
		}
		if err != nil {
			return nil, fmt.Errorf("%s: field %q: %w", where(), k, err)
		}
	}
	if len(config) > 0 {
		c.config = config
	}
	if stepsNode != nil {
		if len(call.Content) > 0 {
			return nil, fmt.Errorf("%s: field %q: give steps or a call, not both", where(), call.Content[0].Value)
		}
		handler := defHandler
		for j, sn := range stepsNode.Content {
			s, field, err := parseStep(sn, handler)
			if err != nil {
				return nil, fmt.Errorf("%s: step %d: field %q: %w", where(), j+1, field, err)
			}
			c.steps = append(c.steps, s)
		}
		return c, nil
	}
	s, field, err := parseStep(call, defHandler)
	if err != nil {
		return nil, fmt.Errorf("%s: field %q: %w", where(), field, err)
	}
	c.steps = []*testStep{s}
	return c, nil
}

// parseStep parses the call fields of a mapping; on error it returns the field at fault.
func parseStep(n *yaml.Node, defHandler string) (*testStep, string, error) {
	if n.Kind != yaml.MappingNode {
		return nil, "steps", errors.New("want a mapping")
	}
	s := &testStep{handler: defHandler}
	var inputField string
	for i := 0; i < len(n.Content); i += 2 {
		k, v := n.Content[i].Value, n.Content[i+1]
		var err error
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
				in, err = scalarString(v)
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
				s.expect.output, err = scalarString(v)
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
		default:
			err = fmt.Errorf("unknown field (want %s)", strings.Join(callFields, ", "))
		}
		if err != nil {
			return nil, k, err
		}
	}
	if s.handler == "" {
		return nil, "handler", errors.New("missing (and no top-level handler)")
	}
	if s.expect.field == "" {
		return nil, "output", errors.New("missing expectation: give output, output_json, output_contains or error")
	}
	return s, "", nil
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
			case "code":
				c, err := strconv.ParseUint(s, 10, 32)
				if err != nil {
					return nil, fmt.Errorf("code %q: want a non-negative integer", s)
				}
				c32 := uint32(c)
				x.code = &c32
			default:
				return nil, fmt.Errorf("unknown field %q (want kind, status, message, code)", k)
			}
		}
	default:
		return nil, errors.New("want an error kind or a mapping with kind")
	}
	if !slices.Contains(errorKinds, x.kind) {
		return nil, fmt.Errorf("kind %q: want one of %s", x.kind, strings.Join(errorKinds, ", "))
	}
	if (x.status != nil || x.message != "") && x.kind != "guest" {
		return nil, fmt.Errorf("status and message go with kind guest, not %s", x.kind)
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

func parseLimits(v *yaml.Node, l testLimits) (testLimits, error) {
	if v.Kind != yaml.MappingNode {
		return l, errors.New("want a mapping with memory_pages and/or timeout")
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
			l.memoryPages = uint32(n)
		case "timeout":
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 {
				return l, fmt.Errorf("timeout %q: want a positive duration such as 100ms", s)
			}
			l.timeout = d
		default:
			return l, fmt.Errorf("unknown field %q (want memory_pages, timeout)", k)
		}
	}
	return l, nil
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
