//go:build nvmetvm

// The simulator against the real kernel NVMe target, inside ../shared/nvmf-vm:
//
//	CGO_ENABLED=0 go test -c -tags nvmetvm -o /tmp/simvm.test ./routeros/sim
//	../shared/nvmf-vm/run-in-vm.sh /tmp/simvm.test -test.v -test.run NVMetKernel
package sim

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const vmHostNQN = "nqn.2014-08.org.nvmexpress:uuid:5a1f0000-0000-4000-8000-000000000001"

// fabricsConnect writes the options to /dev/nvme-fabrics and reads the reply from the same fd.
func fabricsConnect(opts string) (int, error) {
	fd, err := unix.Open("/dev/nvme-fabrics", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte(opts)); err != nil {
		return -1, err
	}
	buf := make([]byte, 256)
	n, err := unix.Read(fd, buf)
	if err != nil {
		return -1, err
	}
	var inst, cntlid int
	if _, err := fmt.Sscanf(strings.TrimSpace(string(buf[:n])), "instance=%d,cntlid=%d", &inst, &cntlid); err != nil {
		return -1, err
	}
	return inst, nil
}

// namespaceBytes reads the size of nsid 1 behind controller nvme<inst> from sysfs.
func namespaceBytes(inst int) (int64, error) {
	dirs, _ := filepath.Glob(fmt.Sprintf("/sys/class/nvme/nvme%d/nvme*n*", inst))
	for _, d := range dirs {
		if strings.TrimSpace(readAttr(filepath.Join(d, "nsid"))) != "1" {
			continue
		}
		sectors, err := strconv.ParseInt(readAttr(filepath.Join(d, "size")), 10, 64)
		return sectors * 512, err
	}
	return 0, fmt.Errorf("no namespace 1 under nvme%d (%v)", inst, dirs)
}

func disconnect(t *testing.T, inst int) {
	t.Helper()
	if err := os.WriteFile(fmt.Sprintf("/sys/class/nvme/nvme%d/delete_controller", inst), []byte("1"), 0o200); err != nil {
		t.Errorf("disconnect nvme%d: %v", inst, err)
	}
}

func TestNVMetKernel(t *testing.T) {
	for name, dir := range map[string]string{"ext4": "/srv/nvmet/sim", "tmpfs": t.TempDir()} {
		t.Run(name, func(t *testing.T) { testNVMetKernel(t, dir) })
	}
}

func testNVMetKernel(t *testing.T, dir string) {
	const nqn, port = "nqn.2000-02.com.mikrotik:pvc-vm", "4430"
	s := newSim(t, Options{Dir: dir, NVMet: true})
	mustExec(t, s, `/disk add type=file file-path=/storage-pool/metal-csi/pvc-vm.img file-size=64M slot=pvc-vm nvme-tcp-export=yes nvme-tcp-server-port=`+port+` nvme-tcp-server-nqn="`+nqn+`"`)
	opts := "transport=tcp,traddr=127.0.0.1,trsvcid=" + port + ",nqn=" + nqn + ",hostnqn=" + vmHostNQN
	inst, err := fabricsConnect(opts)
	if err != nil {
		t.Fatalf("connect to the exported disk: %v", err)
	}
	if got := readAttr(fmt.Sprintf("/sys/class/nvme/nvme%d/subsysnqn", inst)); got != nqn {
		t.Errorf("subsysnqn %q", got)
	}
	waitFor(t, "the 64 MiB namespace", func() bool { n, _ := namespaceBytes(inst); return n == 64<<20 })

	mustExec(t, s, `/disk set [find slot="pvc-vm"] file-size=128M`)
	waitFor(t, "the grown namespace", func() bool { n, _ := namespaceBytes(inst); return n == 128<<20 })
	disconnect(t, inst)

	mustExec(t, s, `/disk set [find slot="pvc-vm"] nvme-tcp-server-allow-host-name="nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-00000000beef"`)
	if inst, err := fabricsConnect(opts); err == nil {
		disconnect(t, inst)
		t.Error("a host outside the allow-list connected")
	}
	mustExec(t, s, `/disk set [find slot="pvc-vm"] nvme-tcp-server-allow-host-name="`+vmHostNQN+`"`)
	inst, err = fabricsConnect(opts)
	if err != nil {
		t.Fatalf("allowed host refused: %v", err)
	}
	disconnect(t, inst)
	mustExec(t, s, `/disk set [find slot="pvc-vm"] nvme-tcp-server-allow-host-name=""`)

	mustExec(t, s, `/disk remove [find slot="pvc-vm"]`)
	for _, p := range []string{"subsystems/" + nqn, "hosts/" + vmHostNQN} {
		if _, err := os.Lstat(filepath.Join(DefaultConfigfsRoot, p)); !os.IsNotExist(err) {
			t.Errorf("%s left in configfs: %v", p, err)
		}
	}
	waitFor(t, "port "+port+" to stop listening", func() bool {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	// The guest's own export on port 1 is untouched.
	if _, err := os.Stat(filepath.Join(DefaultConfigfsRoot, "ports/1/subsystems/nqn.2024-01.io.nvmf-vm:vol1")); err != nil {
		t.Errorf("the guest's default export was touched: %v", err)
	}
}
