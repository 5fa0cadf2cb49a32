package casetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/wasmvisor/wasmvisor/abi"
	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// errText is err without the host's "plugin "case": " wrapping, as "op: message".
func errText(err error) (op, msg string) {
	s := err.Error()
	i := strings.LastIndex(s, `plugin "`+pluginName+`": `)
	if i < 0 {
		return "", s // not the host's: a delivery's error, say
	}
	s = s[i+len(pluginName)+len(`plugin "": `):]
	op, msg, ok := strings.Cut(s, ": ")
	if !ok {
		return "", s
	}
	if name, _, isCall := strings.Cut(op, " "); isCall {
		op = name // call "handler" → call
	}
	return op, msg
}

func errLine(err error) string {
	op, msg := errText(err)
	if op == "" {
		return oneLine(msg)
	}
	return oneLine(op + ": " + msg)
}

// check compares an outcome with the expectation and explains a mismatch in one line.
func (e *expectation) check(kind string, out []byte, err error) string {
	if e.err != nil {
		if err == nil {
			if kind != stepCall {
				return fmt.Sprintf("error: %s succeeded, want error %s", kind, e.err)
			}
			return fmt.Sprintf("error: got output %s, want error %s", quoteOutput(out), e.err)
		}
		return e.err.check(err)
	}
	if err != nil {
		switch kind {
		case stepConfigure:
			return fmt.Sprintf("configure: got error (%s) %s, want the config applied", host.Kind(err), errLine(err))
		case stepDeliver:
			return fmt.Sprintf("deliver: got error (%s) %s, want the message accepted", host.Kind(err), errLine(err))
		}
		return fmt.Sprintf("%s: got error (%s) %s, want %s", e.field, host.Kind(err), errLine(err), e.describe())
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

// checkPublished compares the messages published on the case's watched topics during a step
// with the step's list.
func checkPublished(got []host.Message, want []message) string {
	topics, data := make([]string, len(got)), make([][]byte, len(got))
	for i, m := range got {
		topics[i], data[i] = m.Topic, m.Data
	}
	return checkMessages("published", topics, data, want)
}

// checkMessages compares messages, as topics and data in order, with want; what names them
// in the report.
func checkMessages(what string, topics []string, data [][]byte, want []message) string {
	ok := len(topics) == len(want)
	for i := 0; ok && i < len(want); i++ {
		ok = topics[i] == want[i].topic && want[i].matches(data[i])
	}
	if ok {
		return ""
	}
	g := make([]string, len(topics))
	for i := range topics {
		g[i] = topics[i] + " " + quoteOutput(data[i])
	}
	w := make([]string, len(want))
	for i, m := range want {
		w[i] = m.topic + " " + quoteOutput(m.data)
	}
	return fmt.Sprintf("%s: got [%s], want [%s]", what, strings.Join(g, ", "), strings.Join(w, ", "))
}

func (m message) matches(data []byte) bool {
	if !m.isJSON {
		return string(data) == string(m.data)
	}
	var got any
	return json.Unmarshal(data, &got) == nil && reflect.DeepEqual(got, m.json)
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

// oneLine replaces line breaks and tabs so that a message fits on one line.
func oneLine(s string) string {
	r := strings.NewReplacer("\n", " | ", "\t", " ", "\r", " ")
	return r.Replace(s)
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
	if x.exact != nil {
		parts = append(parts, fmt.Sprintf("message %q", *x.exact))
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
	got := host.Kind(err)
	_, text := errText(err)
	text = oneLine(text)
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
	if got != x.kind && (x.kind != sandbox.KindGuest || !isGuest) {
		return fmt.Sprintf("error: got %s: %s, want %s", got, text, x)
	}
	if x.status != nil && status != *x.status {
		return fmt.Sprintf("error: got status %s: %s, want status %s", statusName(status), text, statusName(*x.status))
	}
	if x.message != "" && (ge == nil || !strings.Contains(ge.Message, x.message)) {
		msg := text
		if ge != nil {
			msg = ge.Message
		}
		return fmt.Sprintf("error: message %q does not contain %q", oneLine(msg), x.message)
	}
	if x.exact != nil && (ge == nil || ge.Message != *x.exact) {
		msg := text
		if ge != nil {
			msg = ge.Message
		}
		return fmt.Sprintf("error: message %s, want %s", quoteOutput([]byte(msg)), quoteOutput([]byte(*x.exact)))
	}
	if x.code != nil {
		var ee *sandbox.ExitError
		if !errors.As(err, &ee) || ee.Code != *x.code {
			return fmt.Sprintf("error: got %s, want exit code %d", text, *x.code)
		}
	}
	return ""
}

// checkEvents compares the instance's whole event log with want, in order.
func checkEvents(got []sandbox.Event, want []message) string {
	topics, data := make([]string, len(got)), make([][]byte, len(got))
	for i, e := range got {
		topics[i], data[i] = e.Topic, e.Data
	}
	return checkMessages("events", topics, data, want)
}

// checkMetrics compares the instance's metrics with want: the same names and kinds in the
// same order, and each field want gives.
func checkMetrics(got []sandbox.Metric, want []metricWant) string {
	names := func() string {
		g := make([]string, len(got))
		for i, m := range got {
			g[i] = m.Name + " (" + m.Kind.String() + ")"
		}
		w := make([]string, len(want))
		for i, m := range want {
			w[i] = m.name + " (" + m.kind.String() + ")"
		}
		return fmt.Sprintf("metrics: got [%s], want [%s]", strings.Join(g, ", "), strings.Join(w, ", "))
	}
	if len(got) != len(want) {
		return names()
	}
	var diffs []string
	for i, w := range want {
		g := got[i]
		if g.Name != w.name || g.Kind != w.kind {
			return names()
		}
		if w.value != nil && g.Value != *w.value {
			diffs = append(diffs, fmt.Sprintf("%s: value %v, want %v", w.name, g.Value, *w.value))
		}
		if w.bounds != nil && !slices.Equal(g.Bounds, w.bounds) {
			diffs = append(diffs, fmt.Sprintf("%s: bounds %v, want %v", w.name, g.Bounds, w.bounds))
		}
		if w.buckets != nil && !slices.Equal(g.Buckets, w.buckets) {
			diffs = append(diffs, fmt.Sprintf("%s: buckets %v, want %v", w.name, g.Buckets, w.buckets))
		}
		if w.count != nil && g.Count != *w.count {
			diffs = append(diffs, fmt.Sprintf("%s: count %d, want %d", w.name, g.Count, *w.count))
		}
		if w.sum != nil && g.Sum != *w.sum {
			diffs = append(diffs, fmt.Sprintf("%s: sum %v, want %v", w.name, g.Sum, *w.sum))
		}
	}
	if len(diffs) > 0 {
		return "metrics: " + strings.Join(diffs, "; ")
	}
	return ""
}
