// Package e2e is the end-to-end proof of rds-csi over real NVMe/TCP. Its tests (build tag
// e2e) run inside the project's test VM (test/vm/run-e2e.sh): they start the RouterOS
// simulator with its disks exported by the kernel's NVMe target (rds-sim --nvmet) and the
// static rds-csi binary against it, run the csi-sanity suite on the driver's socket, then
// the scenarios csi-sanity does not cover — two nodes, an RDS reboot, ctrl_loss expiry and
// healing, an unmanaged subsystem that must survive everything, online expansion, and a
// node plugin killed between stage and publish — each asserting on the data.
//
//	CGO_ENABLED=0 go test -c -tags e2e -o e2e.test ./test/e2e
//	test/vm/run-in-vm.sh -a bin/rds-csi -a bin/rds-sim e2e.test -test.v
package e2e
