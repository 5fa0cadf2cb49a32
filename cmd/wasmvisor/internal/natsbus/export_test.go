package natsbus

import "context"

// NewWithHook is New with a function called after each message from NATS is handled
// (carried, skipped or dropped), and one called after each local message is handed to NATS
// (counted as sent, or dropped): tests wait on them instead of polling.
func NewWithHook(ctx context.Context, o Options, afterReceive, afterSend func(data []byte)) (*Bridge, error) {
	return newBridge(ctx, o, hooks{afterReceive: afterReceive, afterSend: afterSend})
}

var (
	EscapeToken   = escapeToken
	UnescapeToken = unescapeToken
)
