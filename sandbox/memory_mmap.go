//go:build linux && (amd64 || arm64)

package sandbox

import (
	"encoding/binary"
	"os"
	"slices"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// reservesMemory: linear memories are reserved address space, grown in place.
const reservesMemory = true

// commit makes b readable and writable; its pages are zero and take memory when first touched.
func commit(b []byte) error {
	return syscall.Mprotect(b, syscall.PROT_READ|syscall.PROT_WRITE)
}

// decommit gives b's pages back to the operating system (they read zero afterwards) and makes
// b inaccessible again.
func decommit(b []byte) error {
	if err := syscall.Madvise(b, syscall.MADV_DONTNEED); err != nil {
		return err
	}
	return syscall.Mprotect(b, syscall.PROT_NONE)
}

// imageFile puts b in a new memory file (memfd) and returns its descriptor and a read-only
// view of it.
func imageFile(b []byte) (fd int, view []byte, err error) {
	fd, err = unix.MemfdCreate("wasmvisor-snapshot", unix.MFD_CLOEXEC)
	if err != nil {
		return -1, nil, err
	}
	fail := func(err error) (int, []byte, error) {
		_ = unix.Close(fd)
		return -1, nil, err
	}
	if err := unix.Ftruncate(fd, int64(len(b))); err != nil {
		return fail(err)
	}
	view, err = unix.Mmap(fd, 0, len(b), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fail(err)
	}
	copy(view, b)
	if err := unix.Mprotect(view, unix.PROT_READ); err != nil {
		_ = unix.Munmap(view)
		return fail(err)
	}
	return fd, view, nil
}

// closeImage releases what imageFile returned.
func closeImage(fd int, view []byte) {
	_ = unix.Munmap(view)
	_ = unix.Close(fd)
}

// mapImage maps the memory file fd over dst (part of a reservation), copy-on-write: dst reads
// the file, and a page written becomes the writer's own.
func mapImage(dst []byte, fd int) error {
	_, err := unix.MmapPtr(fd, 0, unsafe.Pointer(unsafe.SliceData(dst)), uintptr(len(dst)),
		unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_FIXED)
	return err
}

// unmapImage replaces a mapped image by fresh reserved address space, inaccessible.
func unmapImage(dst []byte) error {
	_, err := unix.MmapPtr(-1, 0, unsafe.Pointer(unsafe.SliceData(dst)), uintptr(len(dst)),
		unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED|unix.MAP_NORESERVE)
	return err
}

// revertImage drops the pages of a mapped image that an instance wrote: dst reads the file
// again.
func revertImage(dst []byte) error { return unix.Madvise(dst, unix.MADV_DONTNEED) }

// openPagemap opens the kernel's page map of this process, or returns nil if it cannot.
func openPagemap() *os.File {
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return nil
	}
	return f
}

// Page map entry bits (the kernel's Documentation/admin-guide/mm/pagemap.rst).
const (
	pmPresent = 1 << 63
	pmSwapped = 1 << 62
	pmFile    = 1 << 61 // a file page or shared anonymous memory
)

// writtenPages reads the page map entries (from f, openPagemap's) of b, part of a region, into buf (8 bytes a host
// page) and reports whether it could. Where b maps an image file, a page the instance wrote
// since the mapping is its own anonymous copy (see pageWritten); any other is the file's, or
// not there yet, and reads the image. Elsewhere a page never touched is not present (see
// pagePresent), and reads zero.
func writtenPages(f *os.File, b []byte, buf []byte) ([]byte, bool) {
	if f == nil || len(b) == 0 {
		return buf, false
	}
	ps := uintptr(os.Getpagesize())
	addr := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	if addr%ps != 0 || uintptr(len(b))%ps != 0 {
		return buf, false
	}
	n := uintptr(len(b)) / ps
	buf = slices.Grow(buf[:0], int(n*8))[:n*8]
	if k, err := f.ReadAt(buf, int64(addr/ps*8)); err != nil || uintptr(k) != n*8 {
		return buf, false
	}
	return buf, true
}

// pageWritten reports whether page k of a writtenPages answer was written.
func pageWritten(entries []byte, k int) bool {
	e := binary.LittleEndian.Uint64(entries[k*8:])
	return e&pmSwapped != 0 || e&pmPresent != 0 && e&pmFile == 0
}

// pagePresent reports whether page k of a writtenPages answer is in memory or swapped out.
func pagePresent(entries []byte, k int) bool {
	return binary.LittleEndian.Uint64(entries[k*8:])&(pmPresent|pmSwapped) != 0
}
