// Command pause is the pod sandbox process of the real-kubelet suite's node: the stand-in
// for the upstream pause image, which cannot be pulled here. It sleeps until SIGINT or
// SIGTERM and reaps the children the kernel hands it (it is PID 1 of the pod's PID
// namespace when the pod shares one).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range signals {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		reapChildren()
	}
}

// reapChildren collects every child that has exited, without blocking.
func reapChildren() {
	for {
		var status syscall.WaitStatus
		if pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil); pid <= 0 || err != nil {
			return
		}
	}
}
