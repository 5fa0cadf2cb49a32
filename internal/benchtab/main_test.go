package main

import (
	"bytes"
	"strings"
	"testing"
)

const out = `goos: linux
goarch: amd64
BenchmarkCall64/wazero-2         	30000000	        30.0 ns/op	       0 B/op	       0 allocs/op
BenchmarkCall64/sandbox-2        	20000000	        60.0 ns/op	       0 B/op	       0 allocs/op
BenchmarkCall64/wazero-2         	30000000	        40.0 ns/op	       0 B/op	       0 allocs/op
BenchmarkCall64/sandbox-2        	20000000	        40.0 ns/op	       0 B/op	       0 allocs/op
BenchmarkCall64/wazero-2         	30000000	        20.0 ns/op	       0 B/op	       0 allocs/op
BenchmarkCall64/sandbox-2        	20000000	        50.0 ns/op	      16 B/op	       1 allocs/op
BenchmarkSlow                    	       1	2500000000 ns/op
PASS
ok  	x	1.0s
`

func TestTable(t *testing.T) {
	all, err := parse(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := write(&b, all, ratios{"Call64/sandbox:Call64/wazero"}); err != nil {
		t.Fatal(err)
	}
	got := b.String()
	for _, want := range []string{
		"| `Call64/wazero` | 3 | 30.0 ns | 20.0 ns–40.0 ns | 0 | 0 |",
		"| `Call64/sandbox` | 3 | 50.0 ns | 40.0 ns–60.0 ns | 0 | 0 |",
		"| `Slow` | 1 | 2.5 s | 2.5 s–2.5 s |  |  |",
		// per round: 2.0, 1.0, 2.5 → median 2.0; medians 50/30
		"| `Call64/sandbox` / `Call64/wazero` | 2.00× | 1.00–2.50 | 1.67× |",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in\n%s", want, got)
		}
	}
}

func TestRejects(t *testing.T) {
	if _, err := parse(strings.NewReader("PASS\n")); err == nil {
		t.Error("no results: want an error")
	}
	all, _ := parse(strings.NewReader(out))
	if err := write(&bytes.Buffer{}, all, ratios{"Call64/none:Call64/wazero"}); err == nil {
		t.Error("unknown name: want an error")
	}
}

func TestExtraMetrics(t *testing.T) {
	const in = `BenchmarkOver/a-2  10  1000 ns/op  30 overshoot-µs  0 B/op  0 allocs/op
BenchmarkOver/a-2  10  1000 ns/op  10 overshoot-µs  0 B/op  0 allocs/op
BenchmarkOver/a-2  10  1000 ns/op  20 overshoot-µs  0 B/op  0 allocs/op
`
	all, err := parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := write(&b, all, nil); err != nil {
		t.Fatal(err)
	}
	if want := "| `Over/a` | overshoot-µs | 3 | 20 | 10–30 |"; !strings.Contains(b.String(), want) {
		t.Errorf("missing %q in\n%s", want, b.String())
	}
}
