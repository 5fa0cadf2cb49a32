package extism

import (
	"bytes"
	"sync"

	"go.uber.org/zap"
)

// maxLine bounds one line of guest output; a longer one is logged in pieces.
const maxLine = 4096

// lineWriter turns a guest's stdout or stderr into log lines, never the host's own streams.
type lineWriter struct {
	mu     sync.Mutex
	log    *zap.Logger
	stream string
	buf    []byte
}

// Write logs each complete line.
func (w *lineWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(b)
	for len(b) > 0 {
		j := bytes.IndexByte(b, '\n')
		if j < 0 {
			w.buf = append(w.buf, b...)
			if len(w.buf) >= maxLine {
				w.emit()
			}
			break
		}
		w.buf = append(w.buf, b[:j]...)
		w.emit()
		b = b[j+1:]
	}
	return n, nil
}

func (w *lineWriter) emit() {
	w.log.Info("guest output", zap.String("stream", w.stream), zap.ByteString("line", w.buf))
	w.buf = w.buf[:0]
}

func (w *lineWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.emit()
	}
}
