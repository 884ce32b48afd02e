package routeros

import (
	"strconv"
	"testing"
)

// TestCommandStrings pins the commands to the contract table in docs/routeros-cli.md.
func TestCommandStrings(t *testing.T) {
	req := CreateDiskRequest{Slot: "pvc-x", FilePath: "/pool/dir/pvc-x.img", SizeBytes: 3 << 29, NQN: "nqn.2000-02.com.mikrotik:pvc-x"}
	cmd, span := createCommand(req, 4420, true)
	want := `/disk add type=file file-path="/pool/dir/pvc-x.img" file-size=1536M slot="pvc-x" nvme-tcp-export=yes nvme-tcp-server-port=4420 nvme-tcp-server-nqn="nqn.2000-02.com.mikrotik:pvc-x"`
	if cmd != want {
		t.Errorf("create:\n got %s\nwant %s", cmd, want)
	}
	if cmd[span[0]:span[1]] != `nvme-tcp-server-nqn="nqn.2000-02.com.mikrotik:pvc-x"` {
		t.Errorf("NQN span %v covers %q", span, cmd[span[0]:span[1]])
	}
	req.SizeBytes = 0
	cmd, _ = createCommand(req, 4421, false)
	if want := `/disk add type=file file-path="/pool/dir/pvc-x.img" slot="pvc-x" nvme-tcp-export=yes nvme-tcp-server-port=4421`; cmd != want {
		t.Errorf("create on an existing file without NQN:\n got %s\nwant %s", cmd, want)
	}
}

func TestNQNRejected(t *testing.T) {
	req := CreateDiskRequest{Slot: "pvc-x", FilePath: "/pool/dir/pvc-x.img", SizeBytes: 1 << 30, NQN: "nqn.2000-02.com.mikrotik:pvc-x"}
	cmd, span := createCommand(req, 4420, true)
	col := func(n int) string { return "expected end of command (line 1 column " + strconv.Itoa(n) + ")" }
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"column at the argument (1-based)", &CommandError{Kind: KindInvalidArgument, Output: col(span[0] + 1)}, true},
		{"column at the argument (0-based)", &CommandError{Kind: KindInvalidArgument, Output: col(span[0])}, true},
		{"column inside the value", &CommandError{Kind: KindInvalidArgument, Output: col(span[1] - 3)}, true},
		{"names the argument", &CommandError{Kind: KindInvalidArgument, Output: "bad argument name nvme-tcp-server-nqn"}, true},
		{"column elsewhere", &CommandError{Kind: KindInvalidArgument, Output: col(12)}, false},
		{"no column", &CommandError{Kind: KindInvalidArgument, Output: "syntax error"}, false},
		{"other kind", &CommandError{Kind: KindOther, Output: col(span[0] + 1)}, false},
		{"no error", nil, false},
	}
	for _, c := range cases {
		if got := nqnRejected(c.err, span); got != c.want {
			t.Errorf("%s: nqnRejected = %v, want %v (command %q)", c.name, got, c.want, cmd)
		}
	}
}
