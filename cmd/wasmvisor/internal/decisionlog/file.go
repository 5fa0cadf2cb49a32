package decisionlog

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
)

// Defaults of FileOptions.
const (
	DefaultFileMaxBytes = 100 << 20
	DefaultFileMaxFiles = 5
)

// FileOptions configure the file sink: one JSON record per line, appended to Path, which is
// rotated by size: past MaxBytes, Path becomes Path.1, Path.1 Path.2, and so on, and
// Path.MaxFiles is removed. At most MaxBytes × (MaxFiles + 1) bytes stay on disk (a record
// larger than MaxBytes is written whole, alone in its file).
type FileOptions struct {
	Path string
	// MaxBytes is the size that rotates the file. Default DefaultFileMaxBytes.
	MaxBytes int64
	// MaxFiles is how many rotated files are kept. Default DefaultFileMaxFiles.
	MaxFiles int
	// Queue bounds the records waiting for the file. Default DefaultQueue.
	Queue int
}

type fileSink struct {
	o    FileOptions
	f    *os.File
	w    *bufio.Writer
	size int64
}

func openFile(o FileOptions) (*fileSink, error) {
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultFileMaxBytes
	}
	if o.MaxFiles <= 0 {
		o.MaxFiles = DefaultFileMaxFiles
	}
	s := &fileSink{o: o}
	if err := s.open(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *fileSink) open() error {
	f, err := os.OpenFile(s.o.Path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("decisionlog: file sink: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return fmt.Errorf("decisionlog: file sink: %w", err)
	}
	s.f, s.size = f, st.Size()
	if s.w == nil {
		s.w = bufio.NewWriterSize(f, 64<<10)
	} else {
		s.w.Reset(f)
	}
	return nil
}

// write appends the lines and flushes; a record that would take the file past MaxBytes
// rotates it first.
func (s *fileSink) write(_ context.Context, lines [][]byte) (int, string) {
	if s.f == nil && s.open() != nil { // a failed rotation: try again
		return 0, "write_error"
	}
	n := 0
	for _, line := range lines {
		if s.size > 0 && s.size+int64(len(line))+1 > s.o.MaxBytes {
			if err := s.rotate(); err != nil {
				return n, "write_error"
			}
		}
		_, _ = s.w.Write(line)
		_ = s.w.WriteByte('\n')
		s.size += int64(len(line)) + 1
		n++
	}
	if err := s.w.Flush(); err != nil {
		// A bufio.Writer keeps its error: start again from a reopened file at the next batch
		// (a full disk may have room again by then). What this batch wrote is counted lost.
		_ = s.f.Close()
		s.f = nil
		return 0, "write_error"
	}
	return n, ""
}

// rotate closes the file and shifts the names: Path.(MaxFiles-1) → Path.MaxFiles … Path →
// Path.1, then opens a new Path.
func (s *fileSink) rotate() error {
	err := s.w.Flush()
	err = errors.Join(err, s.f.Close())
	s.f = nil
	name := func(i int) string { return s.o.Path + "." + strconv.Itoa(i) }
	_ = os.Remove(name(s.o.MaxFiles))
	for i := s.o.MaxFiles - 1; i >= 1; i-- {
		if rerr := os.Rename(name(i), name(i+1)); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = errors.Join(err, rerr)
		}
	}
	err = errors.Join(err, os.Rename(s.o.Path, name(1)))
	if err != nil {
		return err
	}
	return s.open()
}

func (s *fileSink) close() error {
	if s.f == nil {
		return nil
	}
	return errors.Join(s.w.Flush(), s.f.Close())
}
