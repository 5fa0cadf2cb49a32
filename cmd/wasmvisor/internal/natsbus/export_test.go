package natsbus

import "context"

// NewWithHook is New with a function called after each message from NATS is handled
// (carried, skipped or dropped): tests wait on it instead of polling.
func NewWithHook(ctx context.Context, o Options, afterReceive func(data []byte)) (*Bridge, error) {
	return newBridge(ctx, o, afterReceive)
}

var (
	EscapeToken   = escapeToken
	UnescapeToken = unescapeToken
)
