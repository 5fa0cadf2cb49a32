// Command benchtab turns `go test -bench -count=N` output into the tables of BENCHMARKS.md:
// for every benchmark, the median of its N runs with the spread (min–max) and the allocations;
// and, for each -ratio, the ratio of two benchmarks of the same run.
//
//	go test -run='^$' -bench=Call64 -benchmem -count=5 ./sandbox/ | tee sandbox.txt
//	go run ./internal/benchtab -ratio 'Call64/sandbox-deadline:Call64/wazero' sandbox.txt
//
// A ratio is the median of the per-round ratios (run i of one over run i of the other), with
// their spread, next to the ratio of the medians. With -count=N, go test runs a benchmark's N
// runs back to back, so run i of two benchmarks can be seconds apart; `make bench` therefore
// invokes go test N times with -count=1, and run i of every benchmark comes from round i, the
// two side by side. Metrics a benchmark reports itself (b.ReportMetric) get a table of their
// own, medians and spread. It never reports the best run alone.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
)

type sample struct {
	ns, bytes, allocs float64
	hasMem            bool
	extra             map[string]float64 // b.ReportMetric units, e.g. "overshoot-µs"
}

type series struct {
	name    string
	samples []sample
}

type ratios []string

func (r *ratios) String() string     { return strings.Join(*r, ",") }
func (r *ratios) Set(v string) error { *r = append(*r, v); return nil }

func main() {
	var rs ratios
	flag.Var(&rs, "ratio", "num:den, two benchmark names (without the Benchmark prefix and the -N suffix); repeatable")
	flag.Parse()
	if err := run(flag.Args(), rs); err != nil {
		fmt.Fprintln(os.Stderr, "benchtab:", err)
		os.Exit(1)
	}
}

func run(files []string, rs ratios) error {
	var in io.Reader = os.Stdin
	if len(files) > 0 {
		var readers []io.Reader
		for _, p := range files {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			readers = append(readers, f)
		}
		in = io.MultiReader(readers...)
	}
	all, err := parse(in)
	if err != nil {
		return err
	}
	return write(os.Stdout, all, rs)
}

// parse reads benchmark result lines; everything else (goos:, PASS, ok …) is skipped.
func parse(r io.Reader) ([]*series, error) {
	var order []*series
	by := map[string]*series{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		name := strings.TrimPrefix(f[0], "Benchmark")
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i]
			}
		}
		var s sample
		ok := false
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			switch f[i+1] {
			case "ns/op":
				s.ns, ok = v, true
			case "B/op":
				s.bytes, s.hasMem = v, true
			case "allocs/op":
				s.allocs = v
			case "MB/s":
			default:
				if s.extra == nil {
					s.extra = map[string]float64{}
				}
				s.extra[f[i+1]] = v
			}
		}
		if !ok {
			continue
		}
		sr := by[name]
		if sr == nil {
			sr = &series{name: name}
			by[name] = sr
			order = append(order, sr)
		}
		sr.samples = append(sr.samples, s)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(order) == 0 {
		return nil, errors.New("no benchmark results in the input")
	}
	return order, nil
}

func write(w io.Writer, all []*series, rs ratios) error {
	fmt.Fprintln(w, "| benchmark | runs | median | spread (min–max) | B/op | allocs/op |")
	fmt.Fprintln(w, "|---|---:|---:|---|---:|---:|")
	by := map[string]*series{}
	for _, s := range all {
		by[s.name] = s
		ns := field(s.samples, func(x sample) float64 { return x.ns })
		mem, allocs := "", ""
		if s.samples[0].hasMem {
			mem = num(median(field(s.samples, func(x sample) float64 { return x.bytes })))
			allocs = num(median(field(s.samples, func(x sample) float64 { return x.allocs })))
		}
		fmt.Fprintf(w, "| `%s` | %d | %s | %s–%s | %s | %s |\n", s.name, len(ns), dur(median(ns)), dur(slices.Min(ns)), dur(slices.Max(ns)), mem, allocs)
	}
	if err := writeExtra(w, all); err != nil {
		return err
	}
	if len(rs) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| ratio | median of per-round ratios | spread | ratio of medians |")
	fmt.Fprintln(w, "|---|---:|---|---:|")
	for _, r := range rs {
		a, b, ok := strings.Cut(r, ":")
		if !ok {
			return fmt.Errorf("ratio %q: want num:den", r)
		}
		num, den := by[a], by[b]
		if num == nil || den == nil {
			return fmt.Errorf("ratio %q: no benchmark named %q or %q", r, a, b)
		}
		n := min(len(num.samples), len(den.samples))
		per := make([]float64, n)
		for i := range n {
			per[i] = num.samples[i].ns / den.samples[i].ns
		}
		nsA := field(num.samples, func(x sample) float64 { return x.ns })
		nsB := field(den.samples, func(x sample) float64 { return x.ns })
		fmt.Fprintf(w, "| `%s` / `%s` | %.2f× | %.2f–%.2f | %.2f× |\n", a, b, median(per), slices.Min(per), slices.Max(per), median(nsA)/median(nsB))
	}
	return nil
}

// writeExtra tabulates the metrics benchmarks report themselves (b.ReportMetric).
func writeExtra(w io.Writer, all []*series) error {
	head := false
	for _, s := range all {
		var units []string
		for u := range s.samples[0].extra {
			units = append(units, u)
		}
		slices.Sort(units)
		for _, u := range units {
			if !head {
				fmt.Fprintln(w)
				fmt.Fprintln(w, "| benchmark | metric | runs | median | spread (min–max) |")
				fmt.Fprintln(w, "|---|---|---:|---:|---|")
				head = true
			}
			v := field(s.samples, func(x sample) float64 { return x.extra[u] })
			fmt.Fprintf(w, "| `%s` | %s | %d | %s | %s–%s |\n", s.name, u, len(v), num(median(v)), num(slices.Min(v)), num(slices.Max(v)))
		}
	}
	return nil
}

func field(s []sample, f func(sample) float64) []float64 {
	out := make([]float64, len(s))
	for i, x := range s {
		out[i] = f(x)
	}
	return out
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// dur prints nanoseconds in the unit that keeps three or four significant digits.
func dur(ns float64) string {
	switch {
	case ns >= 1e9:
		return fmt.Sprintf("%.3g s", ns/1e9)
	case ns >= 1e6:
		return fmt.Sprintf("%.3g ms", ns/1e6)
	case ns >= 1e4:
		return fmt.Sprintf("%.3g µs", ns/1e3)
	default:
		return fmt.Sprintf("%.1f ns", ns)
	}
}

func num(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
