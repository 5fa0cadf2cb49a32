//go:build !(linux && (amd64 || arm64))

package sandbox

import (
	"errors"
	"os"
)

// reservesMemory: linear memories are Go slices, grown by copying.
const reservesMemory = false

var errNoReservation = errors.New("address space reservation not supported on this platform")

// reservation is never made here.
type reservation struct{ mem []byte }

func reserve(uint64) (reservation, error) { return reservation{}, errNoReservation }
func commit([]byte) error                 { return errNoReservation }
func decommit([]byte) error               { return errNoReservation }
func unreserve(reservation) error         { return errNoReservation }

func imageFile([]byte) (int, []byte, error) { return -1, nil, errNoReservation }
func closeImage(int, []byte)                {}
func mapImage([]byte, int) error            { return errNoReservation }
func unmapImage([]byte) error               { return errNoReservation }
func revertImage([]byte) error              { return errNoReservation }

func openPagemap() *os.File                                        { return nil }
func writtenPages(_ *os.File, _ []byte, buf []byte) ([]byte, bool) { return buf, false }
func pageWritten([]byte, int) bool                                 { return true }
func pagePresent([]byte, int) bool                                 { return true }
