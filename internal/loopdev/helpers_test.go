package loopdev

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

func uintptrOf(p *uint64) uintptr { return uintptr(unsafe.Pointer(p)) }

// alignedBuffer returns page-aligned memory, as O_DIRECT needs.
func alignedBuffer(n int) []byte {
	buf, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		panic(err)
	}
	return buf
}
