package decisionlog

import (
	"context"
	"time"
)

// retryPolicy is how the batching sinks (HTTP, JetStream) retry a batch: at most max
// retries, each after a backoff that starts at backoff and doubles up to maxBackoff.
type retryPolicy struct {
	max                 int
	backoff, maxBackoff time.Duration
}

// newRetryPolicy fills in the defaults of a sink's MaxRetries (0: DefaultMaxRetries;
// negative: none), RetryBackoff and MaxBackoff.
func newRetryPolicy(maxRetries int, backoff, maxBackoff time.Duration) retryPolicy {
	switch {
	case maxRetries == 0:
		maxRetries = DefaultMaxRetries
	case maxRetries < 0:
		maxRetries = 0
	}
	if backoff <= 0 {
		backoff = DefaultRetryBackoff
	}
	if maxBackoff <= 0 {
		maxBackoff = max(DefaultMaxBackoff, backoff)
	}
	return retryPolicy{max: maxRetries, backoff: backoff, maxBackoff: maxBackoff}
}

// wait waits out the backoff before retry number attempt+1 (attempt counts from 0) and
// counts it; it reports false, at once or when ctx ends, when no retry is left.
func (p retryPolicy) wait(ctx context.Context, attempt int, m *metrics) bool {
	if attempt >= p.max || ctx.Err() != nil {
		return false
	}
	m.retries.Inc()
	d := p.backoff
	for range attempt {
		if d >= p.maxBackoff {
			break
		}
		d *= 2
	}
	t := time.NewTimer(min(d, p.maxBackoff))
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
