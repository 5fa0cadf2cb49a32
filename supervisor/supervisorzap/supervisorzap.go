// Package supervisorzap turns supervisor events into zap log lines.
package supervisorzap

import (
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wasmvisor/wasmvisor/supervisor"
)

// Hook returns a supervisor.Config.EventHook that logs each event to log:
// crashes, start failures, shutdown errors and the end of a supervisor at
// error level; restarts and backoffs at warn; starts and clean stops at
// debug.
func Hook(log *zap.Logger) func(supervisor.Event) {
	return func(e supervisor.Event) {
		lvl := Level(e)
		if ce := log.Check(lvl, "supervisor "+e.Kind.String()); ce != nil {
			ce.Write(Fields(e)...)
		}
	}
}

// Level is the log level Hook uses for e.
func Level(e supervisor.Event) zapcore.Level {
	switch e.Kind {
	case supervisor.EventExited:
		if e.Class == supervisor.ExitAbnormal {
			return zapcore.ErrorLevel
		}
		return zapcore.InfoLevel
	case supervisor.EventStartFailed, supervisor.EventShutdownError, supervisor.EventMaxIntensity:
		return zapcore.ErrorLevel
	case supervisor.EventRestarting, supervisor.EventBackoff:
		return zapcore.WarnLevel
	default:
		return zapcore.DebugLevel
	}
}

// Fields are the structured fields of e.
func Fields(e supervisor.Event) []zap.Field {
	f := []zap.Field{
		zap.String("supervisor", e.Supervisor),
		zap.String("child", e.Child),
	}
	if e.Incarnation != 0 {
		f = append(f, zap.Uint64("incarnation", e.Incarnation))
	}
	if e.Restarts != 0 {
		f = append(f, zap.Int("restarts", e.Restarts))
	}
	switch e.Kind {
	case supervisor.EventExited, supervisor.EventStopped, supervisor.EventShutdownError:
		f = append(f, zap.Stringer("class", e.Class))
	case supervisor.EventBackoff:
		f = append(f, zap.Duration("delay", e.Delay))
	}
	if e.Err != nil {
		f = append(f, zap.Error(e.Err))
	}
	return f
}
