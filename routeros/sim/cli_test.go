package sim

import (
	"context"
	"strings"
	"testing"
)

// RouterOS errors, with the columns the console reports (counted from 1).
func TestCLIErrors(t *testing.T) {
	tests := []struct {
		line, want string
	}{
		{`/disks print`, "bad command name disks (line 1 column 2)"},
		{`/disk/prin`, "bad command name prin (line 1 column 7)"},
		{`/disk prin detail`, "bad command name prin (line 1 column 7)"},
		{`/disk print foo`, "expected end of command (line 1 column 13)"},
		{`/disk print detail where bogus=1`, "expected end of command (line 1 column 26)"},
		{`/disk print detail where`, "syntax error (line 1 column 25)"},
		{`/disk print detail where slot~"("`, "invalid value for argument slot"},
		{`/disk add slot=x bogus=1`, "expected end of command (line 1 column 18)"},
		{`/disk add slot="abc`, "syntax error (line 1 column 20)"},
		{`/disk add slot=$x`, "syntax error (line 1 column 16)"},
		{`/disk add slot="a$b"`, "syntax error (line 1 column 18)"},
		{`/disk add slot="a\qb"`, "syntax error (line 1 column 18)"},
		{`/disk add slot= x`, "syntax error (line 1 column 16)"},
		{`/disk add slot =x`, "syntax error (line 1 column 16)"},
		{`/disk add slot=[`, "syntax error (line 1 column 17)"},
		{`/disk add slot=a]`, "syntax error (line 1 column 17)"},
		{`/disk add slot={x}`, "syntax error (line 1 column 16)"},
		{"/disk print\n/disk foo", "bad command name foo (line 2 column 7)"},
		{`:foo`, "bad command name foo (line 1 column 2)"},
		{`/disk add type=file file-path=/storage-pool/a.img file-size=1G slot=a nvme-tcp-export=maybe`, "input does not match any value of nvme-tcp-export"},
		{`/disk add type=raid slot=a`, "input does not match any value of type"},
		{`/disk add type=file file-path=/storage-pool/a.img file-size=12Q slot=a`, "invalid value for argument file-size"},
		{`/disk add type=file file-path=/storage-pool/a.img file-size=0 slot=a`, "invalid value for argument file-size"},
		{`/disk add type=file file-path=/storage-pool/a.img file-size=1G slot=a nvme-tcp-server-port=70000`, "invalid value for argument nvme-tcp-server-port"},
		{`/disk add type=file file-path=/storage-pool/a.img slot=a`, `failure: file "/storage-pool/a.img" does not exist: give file-size to create it`},
		{`/disk add type=file file-path=/elsewhere/a.img file-size=1G slot=a`, `failure: file path "/elsewhere/a.img" is not on a mounted disk`},
		{`/disk add type=file file-path=/storage-pool/../a.img file-size=1G slot=a`, `failure: invalid file path "/storage-pool/../a.img"`},
		{`/disk add type=file file-path=/storage-pool/a.img file-size=1G`, "failure: slot not set"},
		{`/disk add type=file file-size=1G slot=a`, "failure: file-path not set"},
		{`/disk add file-path=/storage-pool/a.img file-size=1G slot=a`, "failure: type not set: give type=file"},
		{`/disk add type=file file-path=/storage-pool/a.img file-size=1G slot=storage-pool`, `failure: disk with slot "storage-pool" already exists`},
		{`/disk set nope file-size=2G`, "no such item"},
		{`/disk remove nope`, "no such item"},
		{`/disk set [find slot="storage-pool"] comment=x`, `failure: disk "storage-pool" is a RAID pool: the simulator only changes file disks`},
		{`/file remove nope`, "no such item"},
		{`/file copy "storage-pool/none.img" name="storage-pool/b.img"`, "no such item"},
		{`:put [/system resource get nothing]`, "input does not match any value of value-name"},
	}
	for _, tt := range tests {
		s := newSim(t, Options{})
		out, err := s.Exec(context.Background(), tt.line)
		if err == nil || err.Error() != tt.want || out != "" {
			t.Errorf("%q: got output %q, error %v; want error %q", tt.line, out, err, tt.want)
		}
	}
}

func TestCLICommandsThatDoNothing(t *testing.T) {
	s := newSim(t, Options{})
	for _, line := range []string{
		`/disk set [find slot="nope"] file-size=2G`, // [find] matching nothing is an empty list
		`/disk remove [find slot="nope"]`,
		`/file remove [find name="storage-pool/nope.img"]`,
		`/disk`, // names a menu: changes the console's menu, nothing over exec
		` ; ;`,
	} {
		if out, err := s.Exec(context.Background(), line); err != nil || out != "" {
			t.Errorf("%q: got %q, %v; want no output", line, out, err)
		}
	}
}

// Quoted values round-trip through the escapes RouterOS defines, and print escaped again.
func TestCLIQuoting(t *testing.T) {
	s := newSim(t, Options{Width: -1})
	mustExec(t, s, `/disk add type=file file-path="/storage-pool/q.img" file-size=1M slot="a\"b\\c\$d\_e\41"`)
	out := mustExec(t, s, `/disk print detail where slot="a\"b\\c\$d e\41"`)
	if !strings.Contains(out, `slot="a\"b\\c\$d eA"`) {
		t.Errorf("quoted slot not found or printed wrong:\n%s", out)
	}
	if got := mustExec(t, s, `:put "tab\there"`); got != "tab\there\n" {
		t.Errorf(":put with \\t = %q", got)
	}
}

func TestCLIWhere(t *testing.T) {
	s := newSim(t, Options{Width: -1})
	for _, slot := range []string{"pvc-a", "pvc-b", "other"} {
		mustExec(t, s, `/disk add type=file file-path=/storage-pool/`+slot+`.img file-size=1M slot=`+slot)
	}
	mustExec(t, s, `/disk set pvc-b nvme-tcp-export=yes`)
	tests := []struct {
		where string
		slots []string
	}{
		{`slot="pvc-a"`, []string{"pvc-a"}},
		{`slot~"^pvc-"`, []string{"pvc-a", "pvc-b"}},
		{`slot~"^pvc-" and nvme-tcp-export=yes`, []string{"pvc-b"}},
		{`slot~"^pvc-" nvme-tcp-export=no`, []string{"pvc-a"}},
		{`slot=other or slot=pvc-a`, []string{"pvc-a", "other"}},
		{`!(slot~"^pvc-") and type=file`, []string{"other"}},
		{`slot!=other and type=file`, []string{"pvc-a", "pvc-b"}},
		{`mount-point="storage-pool"`, []string{"storage-pool"}},
		{`size=1048576 and slot=other`, []string{"other"}},
	}
	for _, tt := range tests {
		out := mustExec(t, s, `/disk print detail where `+tt.where)
		var got []string
		for _, line := range strings.Split(out, "\n") {
			if i := strings.Index(line, ` slot="`); i >= 0 {
				rest := line[i+len(` slot="`):]
				got = append(got, rest[:strings.IndexByte(rest, '"')])
			}
		}
		if strings.Join(got, ",") != strings.Join(tt.slots, ",") {
			t.Errorf("where %s: got %v, want %v", tt.where, got, tt.slots)
		}
	}
}

// A line is parsed whole before anything runs; at run time an error stops the line.
func TestCLISeveralCommandsOnALine(t *testing.T) {
	s := newSim(t, Options{})
	out, err := s.Exec(context.Background(), `:put a; :put b; /disk foo; :put c`)
	if out != "" || err == nil || err.Error() != "bad command name foo (line 1 column 23)" {
		t.Errorf("parse error: got %q, %v", out, err)
	}
	out, err = s.Exec(context.Background(), `:put a; /disk remove nope; :put c`)
	if out != "a\n" || err == nil || err.Error() != "no such item" {
		t.Errorf("run-time error: got %q, %v", out, err)
	}
}

func TestCLIVersion(t *testing.T) {
	for _, v := range []string{"7.24.4", "7.20"} {
		s := newSim(t, Options{Version: v})
		if got := mustExec(t, s, `:put [/system resource get version]`); got != v+" (stable)\n" {
			t.Errorf("version %s: got %q", v, got)
		}
	}
	if _, err := New(Options{Dir: t.TempDir(), Version: "seven"}); err == nil {
		t.Error("New accepted version \"seven\"")
	}
}
