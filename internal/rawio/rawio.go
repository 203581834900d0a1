// Package rawio makes the system calls of the verdict path that never block as raw calls.
//
// For a blocking call the runtime prepares the thread (its P may be handed to another thread while the
// call lasts) and, when the process was idle, wakes its monitor thread, which then polls in naps of
// tens of microseconds until the process is idle again. A sidecar that sleeps between new connections
// would pay that wake-up and those naps at every connection. A receive that does not wait, and a
// netlink message to the kernel, which the kernel handles within the call, need none of it.
package rawio

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Recv receives one datagram from fd into b without waiting: unix.EAGAIN when there is none.
func Recv(fd int, b []byte) (int, error) {
	n, _, errno := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))),
		uintptr(len(b)), unix.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// Send writes b to fd, which must be a socket whose writes never wait, such as a netlink socket
// writing to the kernel.
func Send(fd int, b []byte) error {
	_, _, errno := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	if errno != 0 {
		return errno
	}
	return nil
}
