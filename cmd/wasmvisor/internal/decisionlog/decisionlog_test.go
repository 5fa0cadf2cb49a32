package decisionlog

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// limit bounds every wait of these tests: a bug fails them, it does not hang them.
const limit = 10 * time.Second

func TestNewIDUniqueAndOrdered(t *testing.T) {
	const n = 100_000
	seen := make(map[string]struct{}, n)
	prev := ""
	for range n {
		id := NewID()
		if len(id) != 36 || id[14] != '7' || !strings.ContainsRune("89ab", rune(id[19])) {
			t.Fatalf("%q is not a UUID version 7", id)
		}
		if _, dup := seen[id]; dup {
			t.Fatalf("duplicate ID %q", id)
		}
		seen[id] = struct{}{}
		if id[:13] < prev { // the millisecond prefix never goes back
			t.Fatalf("%q sorts before the ID made before it, %q", id, prev)
		}
		prev = id[:13]
	}
}

func TestParseMask(t *testing.T) {
	for _, p := range []string{"input/x", "/inputs/x", "/x", "/input//x", "", "/result/" + strings.Repeat("a/", 40) + "b"} {
		if _, err := ParseMask(p); !errors.Is(err, ErrBadMask) {
			t.Errorf("ParseMask(%q) = %v, want ErrBadMask", p, err)
		}
	}
	m, err := ParseMask("/input/a~1b/c~0d")
	if err != nil || m.segs[0] != "a/b" || m.segs[1] != "c~d" {
		t.Fatalf("ParseMask escapes: %+v %v", m, err)
	}
}

func TestMasking(t *testing.T) {
	const in = `{"user":{"name":"alice","password":"s3cret","tokens":["t1","t2"]},` +
		`"items":[{"id":1,"ssn":"a"},{"id":2,"ssn":"b"},{"id":3}],"n":1}`
	for _, tc := range []struct {
		name  string
		masks []string
		want  string // the input logged; "" for none
		hit   bool
	}{
		{"nested", []string{"/input/user/password"},
			`{"items":[{"id":1,"ssn":"a"},{"id":2,"ssn":"b"},{"id":3}],"n":1,"user":{"name":"alice","tokens":["t1","t2"]}}`, true},
		{"array index", []string{"/input/user/tokens/1"},
			`{"items":[{"id":1,"ssn":"a"},{"id":2,"ssn":"b"},{"id":3}],"n":1,"user":{"name":"alice","password":"s3cret","tokens":["t1",null]}}`, true},
		{"every element", []string{"/input/items/*/ssn"},
			`{"items":[{"id":1},{"id":2},{"id":3}],"n":1,"user":{"name":"alice","password":"s3cret","tokens":["t1","t2"]}}`, true},
		{"every member", []string{"/input/user/*"}, `{"items":[{"id":1,"ssn":"a"},{"id":2,"ssn":"b"},{"id":3}],"n":1,"user":{}}`, true},
		{"missing", []string{"/input/user/email", "/input/items/9/ssn", "/input/n/x", "/input/items/x"}, in, false},
		{"whole input", []string{"/input"}, "", true},
		{"result only", []string{"/result/reasons"}, in, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var masks []Mask
			for _, p := range tc.masks {
				m, err := ParseMask(p)
				if err != nil {
					t.Fatal(err)
				}
				masks = append(masks, m)
			}
			l := newTestLogger(t, Options{Input: true, Result: true, Masks: masks})
			r := &Record{Input: json.RawMessage(in), Result: json.RawMessage(`{"allow":true,"reasons":["x"]}`)}
			l.Log(r)
			if string(r.Input) != tc.want {
				t.Errorf("input:\n got %s\nwant %s", r.Input, tc.want)
			}
			if tc.hit != (len(r.Erased) > 0) {
				t.Errorf("erased = %v, want a mask listed: %v", r.Erased, tc.hit)
			}
			if tc.name == "result only" && string(r.Result) != `{"allow":true}` {
				t.Errorf("result = %s", r.Result)
			}
		})
	}
}

func TestMaskNotJSONErasesWhole(t *testing.T) {
	m, _ := ParseMask("/input/password")
	l := newTestLogger(t, Options{Input: true, Masks: []Mask{m}})
	r := &Record{Input: []byte("password=s3cret")}
	l.Log(r)
	if r.Input != nil || len(r.Erased) != 1 {
		t.Fatalf("a body that cannot be masked is logged: %s %v", r.Input, r.Erased)
	}
}

func TestInputResultOffByDefault(t *testing.T) {
	l := newTestLogger(t, Options{})
	r := &Record{Input: json.RawMessage(`{"password":"x"}`), Result: json.RawMessage(`{"allow":true}`)}
	l.Log(r)
	if r.Input != nil || r.Result != nil {
		t.Fatalf("logged without being configured: %s %s", r.Input, r.Result)
	}
}

func TestTruncated(t *testing.T) {
	reg := prometheus.NewRegistry()
	l := newTestLogger(t, Options{Input: true, Result: true, MaxValueBytes: 16, Registerer: reg})
	r := &Record{Input: json.RawMessage(`{"a":"` + strings.Repeat("é", 40) + `"}`), Result: json.RawMessage(`{"allow":true}`)}
	l.Log(r)
	var s string
	if err := json.Unmarshal(r.Input, &s); err != nil || len(s) > 16 || !strings.HasPrefix(`{"a":"`+strings.Repeat("é", 40), s) {
		t.Fatalf("input %s (%v): want a JSON string of at most 16 bytes, a prefix of the input", r.Input, err)
	}
	if string(r.Result) != `{"allow":true}` || len(r.Truncated) != 1 || r.Truncated[0] != "input" {
		t.Fatalf("result %s truncated %v", r.Result, r.Truncated)
	}
	if n := testutil.ToFloat64(l.m.truncated.WithLabelValues("input")); n != 1 {
		t.Fatalf("truncated input counted %v times", n)
	}
}

func TestFileSinkRotates(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "decisions.log")
	l, err := New(Options{File: &FileOptions{Path: path, MaxBytes: 2000, MaxFiles: 2}, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	const n = 100
	for i := range n {
		l.Log(&Record{DecisionID: strconv.Itoa(i), Outcome: "allow"})
		// The queue (4096) holds them all: none may be dropped.
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	var ids []int
	for _, f := range []string{path + ".2", path + ".1", path} {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > 2000 {
			t.Errorf("%s: %d bytes, over MaxBytes", f, st.Size())
		}
		fh, _ := os.Open(f)
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			var r Record
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Fatalf("%s: %q: %v", f, sc.Text(), err)
			}
			id, _ := strconv.Atoi(r.DecisionID)
			ids = append(ids, id)
		}
		fh.Close()
	}
	if _, err := os.Stat(path + ".3"); !os.IsNotExist(err) {
		t.Errorf("%s.3 exists: MaxFiles is 2", path)
	}
	// The three files hold the newest records, in order, without a gap.
	if len(ids) == 0 || ids[len(ids)-1] != n-1 || len(ids) == n {
		t.Fatalf("ids %v: want the last records, the oldest rotated away", ids)
	}
	for i := 1; i < len(ids); i++ {
		if ids[i] != ids[i-1]+1 {
			t.Fatalf("ids %v: a gap at %d", ids, i)
		}
	}
	if got := testutil.ToFloat64(l.m.written.WithLabelValues("file")); got != n {
		t.Fatalf("written %v, want %d", got, n)
	}
}

func TestHTTPSinkBatchesAndRetries(t *testing.T) {
	var mu sync.Mutex
	var batches [][]Record
	posts := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		posts++
		if posts%2 == 1 { // every batch fails once, then is accepted
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var b []Record
		body, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(body, &b); err != nil || r.Header.Get("Content-Type") != "application/json" ||
			r.Header.Get("Authorization") != "Bearer t" {
			t.Errorf("body %q: %v", body, err)
		}
		batches = append(batches, b)
	}))
	defer srv.Close()
	reg := prometheus.NewRegistry()
	l, err := New(Options{Registerer: reg, Logger: zaptest.NewLogger(t), HTTP: &HTTPOptions{URL: srv.URL, BatchSize: 10,
		FlushInterval: time.Hour, RetryBackoff: time.Millisecond, MaxRetries: 3, Header: http.Header{"Authorization": {"Bearer t"}}}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 25 {
		l.Log(&Record{DecisionID: strconv.Itoa(i)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	if err := l.Close(ctx); err != nil { // Close sends the last, partial batch
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	var sizes []int
	next := 0
	for _, b := range batches {
		sizes = append(sizes, len(b))
		for _, r := range b {
			if r.DecisionID != strconv.Itoa(next) {
				t.Fatalf("record %s where %d was expected", r.DecisionID, next)
			}
			next++
		}
	}
	if next != 25 || len(batches) != 3 || sizes[0] != 10 || sizes[1] != 10 || sizes[2] != 5 {
		t.Fatalf("batches of %v: want 10, 10, 5", sizes)
	}
	if r := testutil.ToFloat64(l.m.retries); r != 3 {
		t.Fatalf("retries %v, want 3 (one per batch)", r)
	}
	if d := testutil.CollectAndCount(l.m.dropped); d != 0 {
		t.Fatalf("%d drop series", d)
	}
}

func TestHTTPSinkRejectedAndExhausted(t *testing.T) {
	for _, tc := range []struct {
		status  int
		reason  string
		retries float64
	}{{http.StatusBadRequest, "rejected", 0}, {http.StatusInternalServerError, "retries_exhausted", 2}} {
		t.Run(tc.reason, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(tc.status) }))
			defer srv.Close()
			l, err := New(Options{Logger: zaptest.NewLogger(t), HTTP: &HTTPOptions{URL: srv.URL, BatchSize: 4,
				RetryBackoff: time.Millisecond, MaxRetries: 2}})
			if err != nil {
				t.Fatal(err)
			}
			for range 4 {
				l.Log(&Record{})
			}
			ctx, cancel := context.WithTimeout(context.Background(), limit)
			defer cancel()
			if err := l.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if d := testutil.ToFloat64(l.m.dropped.WithLabelValues("http", tc.reason)); d != 4 {
				t.Fatalf("dropped %v (%s), want 4", d, tc.reason)
			}
			if r := testutil.ToFloat64(l.m.retries); r != tc.retries {
				t.Fatalf("retries %v, want %v", r, tc.retries)
			}
		})
	}
}

// TestHTTPSinkStalled: an endpoint that never answers. Log never blocks (100 000 records
// are offered in far less time than one POST's timeout), the records past the queue are
// dropped and counted, and Close, bounded by its context, cuts the stalled POST and counts
// what it held.
func TestHTTPSinkStalled(t *testing.T) {
	release := make(chan struct{})
	got := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case got <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	l, err := New(Options{Logger: zaptest.NewLogger(t), HTTP: &HTTPOptions{URL: srv.URL, BatchSize: 10, Queue: 100,
		Timeout: time.Hour, MaxRetries: -1}})
	if err != nil {
		t.Fatal(err)
	}
	for range 10 { // the first batch: the sink is then stuck in its POST
		l.Log(&Record{})
	}
	select {
	case <-got:
	case <-time.After(limit):
		t.Fatal("the sink did not POST its first batch")
	}
	const n = 100_000
	start := time.Now()
	for range n {
		l.Log(&Record{Outcome: "allow"})
	}
	if el := time.Since(start); el > limit {
		t.Fatalf("%d records took %v with the endpoint stalled", n, el)
	}
	full := testutil.ToFloat64(l.m.dropped.WithLabelValues("http", "queue_full"))
	if full != n-100 {
		t.Fatalf("dropped (queue_full) %v, want %d: the queue holds 100", full, n-100)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := l.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close = %v, want the deadline", err)
	}
	if sd := testutil.ToFloat64(l.m.dropped.WithLabelValues("http", "shutdown")); sd != 110 {
		t.Fatalf("dropped (shutdown) %v, want 110: the batch in flight and the queue", sd)
	}
	l.Log(&Record{})
	if c := testutil.ToFloat64(l.m.dropped.WithLabelValues("http", "closed")); c != 1 {
		t.Fatalf("a record after Close: dropped (closed) %v", c)
	}
	if err := l.Close(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close = %v", err)
	}
}

func TestNewErrors(t *testing.T) {
	for _, o := range []Options{
		{HTTP: &HTTPOptions{URL: "ftp://x"}},
		{HTTP: &HTTPOptions{URL: "http://"}},
		{File: &FileOptions{Path: filepath.Join(t.TempDir(), "no", "such", "dir", "f")}},
	} {
		if l, err := New(o); err == nil {
			_ = l.Close(context.Background())
			t.Errorf("New(%+v) succeeded", o)
		}
	}
}

func newTestLogger(t *testing.T, o Options) *Logger {
	t.Helper()
	o.Logger = zaptest.NewLogger(t)
	l, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close(context.Background()) })
	return l
}

// A file that cannot take the records (/dev/full: every write fails with ENOSPC) drops them,
// counted as write_error, batch after batch: the sink reopens the file instead of keeping
// bufio's first error.
func TestFileSinkWriteErrorCounted(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	l, err := New(Options{File: &FileOptions{Path: "/dev/full"}, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		l.Log(&Record{})
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if d := testutil.ToFloat64(l.m.dropped.WithLabelValues("file", "write_error")); d != 3 {
		t.Fatalf("dropped (write_error) %v, want 3", d)
	}
}
