// Command loadgen is the HTTP load generator of `make loadtest`: c workers, each with a
// kept-alive connection, POST one body to one URL as fast as the server answers, for a
// duration after a warm-up; it reports throughput and latency percentiles, and fails if any
// request failed.
//
//	go run ./cmd/loadgen -url http://127.0.0.1:18080/v1/plugins/authz/call/evaluate -body '{...}'
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"
)

func main() {
	url := flag.String("url", "http://127.0.0.1:18080/v1/plugins/authz/call/evaluate", "URL to POST to")
	body := flag.String("body", `{"subject":{"id":"alice","roles":["viewer"]},"action":"read","resource":{"type":"document","id":"42","owner":"bob"}}`, "request body")
	conc := flag.Int("c", 8, "concurrent connections")
	dur := flag.Duration("d", 10*time.Second, "measured duration")
	warm := flag.Duration("warmup", 2*time.Second, "unmeasured warm-up")
	ready := flag.String("ready", "", "GET this URL until it answers 200 (at most 60 s) before the warm-up, e.g. the server's /readyz")
	flag.Parse()
	if *ready != "" {
		if err := waitReady(*ready, time.Minute); err != nil {
			fmt.Fprintf(os.Stderr, "loadgen: %v\n", err)
			os.Exit(1)
		}
	}

	tr := &http.Transport{MaxIdleConns: *conc, MaxIdleConnsPerHost: *conc, DisableCompression: true}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	b := []byte(*body)
	var firstErr error // the first failure of a run, reported with the count
	run := func(d time.Duration, record bool) ([]time.Duration, int, time.Duration) {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		var mu sync.Mutex
		var all []time.Duration
		errs := 0
		var wg sync.WaitGroup
		start := time.Now()
		for range *conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				lat := make([]time.Duration, 0, 1<<16)
				bad := 0
				for ctx.Err() == nil {
					t0 := time.Now()
					res, err := client.Post(*url, "application/json", bytes.NewReader(b))
					if err == nil {
						_, _ = io.Copy(io.Discard, res.Body)
						res.Body.Close()
						if res.StatusCode != 200 {
							err = fmt.Errorf("status %d", res.StatusCode)
						}
					}
					if err != nil {
						if ctx.Err() == nil {
							bad++
							mu.Lock()
							if firstErr == nil {
								firstErr = err
							}
							mu.Unlock()
						}
						continue
					}
					if record {
						lat = append(lat, time.Since(t0))
					}
				}
				mu.Lock()
				all = append(all, lat...)
				errs += bad
				mu.Unlock()
			}()
		}
		wg.Wait()
		return all, errs, time.Since(start)
	}
	if _, errs, _ := run(*warm, false); errs > 0 {
		fmt.Fprintf(os.Stderr, "loadgen: %d requests failed during the warm-up; the first: %v\n", errs, firstErr)
		os.Exit(1)
	}
	lat, errs, elapsed := run(*dur, true)
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(float64(len(lat))*p))]
	}
	fmt.Printf("loadgen: %s, %d connections, %v: %d requests, %.0f req/s, p50 %v, p90 %v, p99 %v, max %v, %d errors\n",
		*url, *conc, dur.Round(time.Second), len(lat), float64(len(lat))/elapsed.Seconds(),
		pct(0.50).Round(time.Microsecond), pct(0.90).Round(time.Microsecond), pct(0.99).Round(time.Microsecond),
		pct(1).Round(time.Microsecond), errs)
	if errs > 0 {
		fmt.Fprintf(os.Stderr, "loadgen: the first failure: %v\n", firstErr)
		os.Exit(1)
	}
}

// waitReady polls url, every 50 ms, until it answers 200 or limit has passed.
func waitReady(url string, limit time.Duration) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(limit)
	var last error
	for {
		res, err := http.Get(url)
		if err == nil {
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", res.StatusCode)
		}
		last = err
		select {
		case <-tick.C:
		case <-deadline:
			return fmt.Errorf("%s not ready after %v: %w", url, limit, last)
		}
	}
}
