package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// The real-kernel figures, measured in the test VM.
var (
	figVMConnect    = spec{"vm_connect_driver_share", "in the VM: connect write → disk resolvable, driver's share", "ms", 20}
	figVMTargetBack = spec{"vm_target_back_normal", "in the VM: target back → volume condition normal again", "s", vmReconnectDelay + 1}
	figVMHeal       = spec{"vm_ctrl_loss_healed", "in the VM: ctrl_loss expiry → healed (new names, mounts replaced) after target return", "s", 3}
	// The "a writer never waits more than a few seconds" while a path fails.
	figVMFailover = spec{"vm_multipath_failover_write", "in the VM: longest write+fsync while a path of two goes down and back", "s", 2}
)

// vmReconnectDelay is the reconnectDelay of the volume whose target comes back (the
// guest program uses the same).
const vmReconnectDelay = 2

// vmConnectRounds is how many connect rounds BenchmarkVMConnect averages over.
const vmConnectRounds = 20

// vmScript runs in the guest (busybox sh, in /payload with the binaries beside it): the
// nvme package's connect-latency benchmark, then the node recovery scenarios.
const vmScript = `#!/bin/sh
echo "=== bench-vm: BenchmarkVMConnect"
./nvme.test -test.run '^$' -test.bench '^BenchmarkVMConnect$' -test.benchtime %dx -test.v
echo "=== bench-vm: node recovery (vmguest)"
./vmguest -csi ./rds-csi -sim ./rds-sim -trials 5
echo "=== bench-vm: done"
`

// vmFigures builds the static programs the VM runs, boots the test VM once
// (test/vm/run-in-vm.sh) and reads the figures from its console, which it keeps
// at consoleCopy.
func vmFigures(ctx context.Context, root, work, consoleCopy string) []figure {
	specs := []spec{figVMConnect, figVMTargetBack, figVMHeal, figVMFailover}
	dir := filepath.Join(work, "vm")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return naAll(err.Error(), specs...)
	}
	step := func(name string) { fmt.Fprintf(os.Stderr, "bench: %s (%s)\n", name, time.Now().Format("15:04:05")) }
	step("building the static programs for the VM")
	bins := []struct{ out, pkg, tags string }{
		{"rds-csi", ".", ""},
		{"rds-sim", "./cmd/rds-sim", ""},
		{"vmguest", "./test/bench/vmguest", ""},
	}
	for _, b := range bins {
		if err := buildBinary(ctx, root, filepath.Join(dir, b.out), b.pkg, b.tags); err != nil {
			return naAll("build: "+err.Error(), specs...)
		}
	}
	if err := buildVMTest(ctx, root, filepath.Join(dir, "nvme.test")); err != nil {
		return naAll("build: "+err.Error(), specs...)
	}
	script := filepath.Join(dir, "run.sh")
	if err := os.WriteFile(script, []byte(fmt.Sprintf(vmScript, vmConnectRounds)), 0o755); err != nil {
		return naAll(err.Error(), specs...)
	}

	console := filepath.Join(dir, "console.log")
	step("booting the test VM")
	cmd := exec.CommandContext(ctx, filepath.Join(root, "test/vm/run-in-vm.sh"),
		"-e", "RDS_CSI_VM=1", "-e", "NVMF_VM_TARGET=none",
		"-a", filepath.Join(dir, "nvme.test"), "-a", filepath.Join(dir, "rds-csi"), "-a", filepath.Join(dir, "rds-sim"), "-a", filepath.Join(dir, "vmguest"),
		script)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "NVMF_VM_TIMEOUT=600")
	log, err := os.Create(console)
	if err != nil {
		return naAll(err.Error(), specs...)
	}
	cmd.Stdout, cmd.Stderr = log, log
	runErr := cmd.Run()
	log.Close()
	raw, _ := os.ReadFile(console)
	out := string(raw)
	if err := os.MkdirAll(filepath.Dir(consoleCopy), 0o755); err == nil && os.WriteFile(consoleCopy, raw, 0o644) == nil {
		fmt.Fprintf(os.Stderr, "bench: VM console kept at %s\n", consoleCopy)
	}
	var exit *exec.ExitError
	if errors.As(runErr, &exit) && exit.ExitCode() == 3 {
		return naAll("the VM's prerequisites are missing (test/vm/install-deps.sh needs root and Debian apt): "+lastLines(out, 2), specs...)
	}
	if runErr != nil && !strings.Contains(out, "=== bench-vm: done") {
		return naAll(fmt.Sprintf("the VM run failed (%v): %s", runErr, lastLines(out, 3)), specs...)
	}
	accel := vmAccel()
	figs := []figure{connectFigure(out, accel)}
	for _, s := range specs[1:] {
		figs = append(figs, guestFigure(s, out, accel))
	}
	return figs
}

// buildVMTest builds the nvme package's real-kernel tests as a static test binary, as
// test/vm/run-nvme-tests.sh does.
func buildVMTest(ctx context.Context, root, out string) error {
	cmd := exec.CommandContext(ctx, goTool(), "test", "-c", "-tags", "vmtest", "-o", out, "./nvme")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if raw, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go test -c -tags vmtest ./nvme: %v: %s", err, lastLines(string(raw), 4))
	}
	return nil
}

// connectFigure reads BenchmarkVMConnect's metrics: added-ms/op is Connect's time beyond
// its own fabrics write and the kernel's own write-return → disk-visible delay.
func connectFigure(out, accel string) figure {
	results := parseBenchOutput(out)
	added, err := benchMetric(results, "BenchmarkVMConnect", "added-ms/op")
	if err != nil {
		return figVMConnect.na("%v: %s", err, lastLines(sectionOf(out, "BenchmarkVMConnect"), 3))
	}
	r := results["BenchmarkVMConnect"]
	return figVMConnect.measured(added, "nvme BenchmarkVMConnect in the VM (%s), %d rounds: the kernel alone shows the disk %s ms after its fabrics write returns; "+
		"the driver resolves it %s ms after; the driver's share (Connect − its write − the kernel's delay) is shown",
		accel, r.Iterations, formatNumber(r.metric("kernel-disk-ms/op")), formatNumber(r.metric("driver-disk-ms/op")))
}

// sectionOf returns the console output from the marker of the named part on.
func sectionOf(out, name string) string {
	if i := strings.Index(out, "=== bench-vm: "+name); i >= 0 {
		return out[i:]
	}
	return out
}

// guestFigure reads the vmguest program's BENCH-FIGURE line for the spec.
func guestFigure(s spec, out, accel string) figure {
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		i := strings.Index(line, "BENCH-FIGURE ")
		if i < 0 {
			continue
		}
		var r struct {
			Key    string   `json:"key"`
			Value  *float64 `json:"value"`
			Reason string   `json:"reason"`
			Detail string   `json:"detail"`
		}
		if err := json.Unmarshal([]byte(line[i+len("BENCH-FIGURE "):]), &r); err != nil || r.Key != s.key {
			continue
		}
		if r.Value == nil {
			return s.na("%s", r.Reason)
		}
		return s.measured(*r.Value, "test/bench/vmguest in the VM (%s): %s", accel, r.Detail)
	}
	return s.na("the VM printed no result for it: %s", lastLines(sectionOf(out, "node recovery"), 3))
}

// vmAccel says how run-in-vm.sh runs qemu here (its own rule: KVM only with VMX/SVM).
func vmAccel() string {
	if a := os.Getenv("NVMF_VM_ACCEL"); a != "" && a != "auto" {
		return a
	}
	_, intel := os.Stat("/sys/module/kvm_intel")
	_, amd := os.Stat("/sys/module/kvm_amd")
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err == nil {
		f.Close()
		if intel == nil || amd == nil {
			return "qemu with KVM"
		}
	}
	return "qemu TCG, no KVM: timings include emulation"
}
