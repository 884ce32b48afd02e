package mount

import "unsafe"

// uintptrOfSlice is the address of buf's first byte, to align O_DIRECT
// buffers. The heap does not move objects, so the address stays valid.
func uintptrOfSlice(buf []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(buf))) }
