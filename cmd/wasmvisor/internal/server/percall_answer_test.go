package server

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
)

// onMessage is a zap core that runs on, instead of writing, each entry with message msg: a
// test waits on a line the server logs, or holds the goroutine that logs it.
type onMessage struct {
	zapcore.Core
	msg string
	on  func()
}

func (c onMessage) With(f []zapcore.Field) zapcore.Core {
	return onMessage{c.Core.With(f), c.msg, c.on}
}

func (c onMessage) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if e.Message == c.msg {
		return ce.AddCore(e, c)
	}
	return c.Core.Check(e, ce)
}

func (c onMessage) Write(e zapcore.Entry, f []zapcore.Field) error {
	if e.Message == c.msg {
		c.on()
		return nil
	}
	return c.Core.Write(e, f)
}

// logOn is a test logger that runs on for each line with message msg (see onMessage).
func logOn(t *testing.T, msg string, on func()) *zap.Logger {
	return zaptest.NewLogger(t, zaptest.Level(zapcore.DebugLevel), zaptest.WrapOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return onMessage{Core: c, msg: msg, on: on}
	})))
}

// Under isolation per_call the answer is flushed before the instance's reset, which runs on
// the handler's goroutine (host.CallThen): the client reads the whole answer while the
// handler still holds its decision line, and a second call on the same connection is served
// pristine. (Under shared isolation the answer waits for the handler's end: the client would
// block here.)
func TestPerCallAnswerBeforeReset(t *testing.T) {
	held, release, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	// The "decision" line, which the handler logs after the answer and the reset, is held
	// until released; done: the test has ended, hold nothing more.
	log := logOn(t, "decision", func() {
		select {
		case held <- struct{}{}:
			select {
			case <-release:
			case <-done:
			}
		case <-done:
		}
	})
	ts := openServerLog(t, "plugins:\n  - {name: ref, wasm: ref.wasm, isolation: per_call}\n", true, log)
	t.Cleanup(func() { close(done) }) // before the server's shutdown, which waits for the handlers
	client := &http.Client{}
	type result struct {
		status int
		body   []byte
		err    error
	}
	call := func(handler, body string) <-chan result {
		got := make(chan result, 1)
		go func() {
			resp, err := client.Post(ts.base+"/v1/plugins/ref/call/"+handler, "application/octet-stream", bytes.NewBufferString(body))
			if err != nil {
				got <- result{err: err}
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			got <- result{resp.StatusCode, b, err}
		}()
		return got
	}
	for _, c := range []struct{ handler, body, want string }{
		{"set", "marker", ""},
		{"get", "", ""}, // pristine: the marker's instance was reset
		{"echo", "hello", "hello"},
	} {
		got := call(c.handler, c.body)
		select {
		case r := <-got:
			if r.err != nil || r.status != 200 || string(r.body) != c.want {
				t.Fatalf("%s: %d %q %v", c.handler, r.status, r.body, r.err)
			}
		case <-time.After(10 * time.Second): // a failure limit, not a wait
			t.Fatalf("%s: no answer while the handler runs: it was not flushed before the reset", c.handler)
		}
		<-held // the handler is still running: its decision line comes after the answer
		release <- struct{}{}
		if p := <-ts.ended; p != "/v1/plugins/ref/call/"+c.handler {
			t.Fatalf("ended %q", p)
		}
	}
}

// A hostile client pipelines calls to a per_call plugin and never reads the answers: once the
// connection's buffers are full, the answer's write before the reset waits at most for the
// rest of the request's deadline (http.request_timeout, 1 s here), the answer is counted as
// not taken, and the instance is reset and serves another client. The client cannot hold the
// plugin's only instance.
func TestPerCallAnswerNotTaken(t *testing.T) {
	notTaken := make(chan struct{}, 1)
	log := logOn(t, "answer not taken", func() {
		select {
		case notTaken <- struct{}{}:
		default:
		}
	})
	ts := openServerLog(t, "http: {request_timeout: 1s}\nplugins:\n  - {name: ref, wasm: ref.wasm, isolation: per_call, instances: 1}\n", true, log)
	conn, err := net.Dial("tcp", strings.TrimPrefix(ts.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.(*net.TCPConn).SetReadBuffer(4096) // fills sooner; it never reads anyway
	body := bytes.Repeat([]byte("x"), 32<<10)
	req := fmt.Appendf(nil, "POST /v1/plugins/ref/call/echo HTTP/1.1\r\nHost: wasmvisor\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	go func() {
		for range 4096 { // far more answers than the buffers hold; a write fails once the server gives up
			if _, err := conn.Write(req); err != nil {
				return
			}
		}
	}()
	select {
	case <-notTaken:
	case <-time.After(30 * time.Second): // a failure limit, not a wait
		t.Fatal("the server never gave up on an answer nobody reads")
	}
	if n := counterValue(t, ts.m.interrupted.WithLabelValues("ref", "answer_not_taken")); n < 1 {
		t.Fatalf("answer_not_taken = %v", n)
	}
	// The only instance serves a client that reads.
	r, out := post(t, ts.base+"/v1/plugins/ref/call/echo", []byte("hello"))
	if r.StatusCode != 200 || string(out) != "hello" {
		t.Fatalf("a reading client: %d %q", r.StatusCode, out)
	}
}
