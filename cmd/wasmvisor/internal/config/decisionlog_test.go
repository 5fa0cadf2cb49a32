package config

import (
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestDecisionLog(t *testing.T) {
	c, err := parse(t, `
decision_log:
  input: true
  mask: [/input/password, /result/reasons/0, /input/users/*/ssn]
  max_value_bytes: 8KiB
  file: {path: decisions.log, max_bytes: 10MiB, max_files: 3}
  http: {url: "http://127.0.0.1:9/logs", batch_size: 50, flush_interval: 2s, max_retries: -1, retry_backoff: 10ms, max_backoff: 1s,
         headers: {Authorization: Bearer abc}}
  jetstream: {subject: decisions.node1, batch_size: 20, max_in_flight: 64, max_retries: 3, timeout: 2s}
plugins:
  - {name: a, wasm: builtin:authz, failure_policy: allow, failure_answer: '{"allowed": true, "code": 200}'}
`, "WASMVISOR_DECISION_LOG_RESULT=true")
	if err != nil {
		t.Fatal(err)
	}
	d := c.DecisionLog
	if !d.Input || !d.Result || d.MaxValueBytes != 8<<10 || !slices.Equal(d.Mask, []string{"/input/password", "/result/reasons/0", "/input/users/*/ssn"}) {
		t.Fatalf("decision_log: %+v", d)
	}
	if d.File.MaxBytes != 10<<20 || d.File.MaxFiles != 3 || !filepath.IsAbs(d.File.Path) || filepath.Base(d.File.Path) != "decisions.log" {
		t.Fatalf("decision_log.file: %+v", d.File)
	}
	if h := d.HTTP; h.URL != "http://127.0.0.1:9/logs" || h.BatchSize != 50 || h.FlushInterval != 2*time.Second || h.MaxRetries != -1 ||
		h.RetryBackoff != 10*time.Millisecond || h.MaxBackoff != time.Second || h.Headers["Authorization"] != "Bearer abc" {
		t.Fatalf("decision_log.http: %+v", h)
	}
	if j := d.JetStream; j.Subject != "decisions.node1" || j.BatchSize != 20 || j.MaxInFlight != 64 || j.MaxRetries != 3 ||
		j.Timeout != 2*time.Second {
		t.Fatalf("decision_log.jetstream: %+v", j)
	}
	if string(c.Plugins[0].FailureAnswer) != `{"allowed": true, "code": 200}` {
		t.Fatalf("failure_answer %q", c.Plugins[0].FailureAnswer)
	}

	c, err = parse(t, "plugins: []\n")
	if err != nil {
		t.Fatal(err)
	}
	if d := c.DecisionLog; d.Input || d.Result || d.File.Path != "" || d.HTTP.URL != "" || d.JetStream.Subject != "" {
		t.Fatalf("default decision_log: %+v", d)
	}
}

func TestDecisionLogInvalid(t *testing.T) {
	for _, tc := range []struct{ yaml, key string }{
		{"decision_log: {input: maybe}", "decision_log.input"},
		{"decision_log: {mask: [/input/a, password]}", "decision_log.mask[1]"},
		{"decision_log: {mask: [/input//a]}", "decision_log.mask[0]"},
		{"decision_log: {mask: /input/a}", "decision_log.mask"},
		{"decision_log: {max_value_bytes: 10}", "decision_log.max_value_bytes"},
		{"decision_log: {max_value_bytes: lots}", "decision_log.max_value_bytes"},
		{"decision_log: {file: {path: /no/such/dir/f.log}}", "decision_log.file.path"},
		{"decision_log: {file: {max_files: 0}}", "decision_log.file.max_files"},
		{"decision_log: {file: {max_bytes: 1KiB}}", "decision_log.file.max_bytes"},
		{"decision_log: {http: {url: ftp://x}}", "decision_log.http.url"},
		{"decision_log: {http: {url: http://}}", "decision_log.http.url"},
		{"decision_log: {http: {batch_size: 0}}", "decision_log.http.batch_size"},
		{"decision_log: {http: {queue: -1}}", "decision_log.http.queue"},
		{"decision_log: {http: {max_retries: 1000}}", "decision_log.http.max_retries"},
		{"decision_log: {http: {timeout: soon}}", "decision_log.http.timeout"},
		{"decision_log: {jetstream: {subject: decisions.*}}", "decision_log.jetstream.subject"},
		{"decision_log: {jetstream: {subject: a..b}}", "decision_log.jetstream.subject"},
		{"decision_log: {jetstream: {max_in_flight: 0}}", "decision_log.jetstream.max_in_flight"},
		{"decision_log: {jetstream: {max_retries: -2}}", "decision_log.jetstream.max_retries"},
		{"decision_log: {jetstream: {timeout: soon}}", "decision_log.jetstream.timeout"},
		{"decision_log: {http: {retry_backoff: 2s, max_backoff: 1s}}", "decision_log.http.max_backoff"},
		{"decision_log: {sink: stdout}", "decision_log.sink"},
		{"decision_log: {http: {headers: {\"a b\": x}}}", "decision_log.http.headers.a b"},
		{"decision_log: {http: {headers: {X-A: \"a\\nb\"}}}", "decision_log.http.headers.X-A"},
		{"decision_log: {http: {headers: {X-A: [a]}}}", "decision_log.http.headers.X-A"},
		{"plugins: [{name: a, wasm: builtin:authz, failure_policy: allow, failure_answer: '{nope'}]", "plugins[0](a).failure_answer"},
		{"plugins: [{name: a, wasm: builtin:authz, failure_answer: 'true'}]", "plugins[0](a).failure_answer"},
		{"plugins: [{name: a, wasm: builtin:authz, failure_policy: allow, failure_answer: '\"" + strings.Repeat("x", 70000) + "\"'}]",
			"plugins[0](a).failure_answer"},
	} {
		_, err := parse(t, tc.yaml)
		var es Errors
		if !errors.As(err, &es) || !slices.ContainsFunc(es, func(e *Error) bool { return e.Key == tc.key }) {
			t.Errorf("%s: %v, want an error naming %s", tc.yaml, err, tc.key)
		}
	}
}
