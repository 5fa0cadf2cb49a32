//go:build linux && (amd64 || arm64)

package sandbox

import "syscall"

// reservesMemory: linear memories are reserved address space, grown in place.
const reservesMemory = true

// reserve maps n bytes of address space, inaccessible, backed by nothing until committed.
func reserve(n uint64) ([]byte, error) {
	return syscall.Mmap(-1, 0, int(n), syscall.PROT_NONE, syscall.MAP_PRIVATE|syscall.MAP_ANONYMOUS|syscall.MAP_NORESERVE)
}

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

// unreserve unmaps a reservation; b is what reserve returned.
func unreserve(b []byte) error { return syscall.Munmap(b) }
