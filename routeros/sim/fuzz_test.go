package sim

import (
	"context"
	"testing"
)

// What the simulator prints quoted, it reads back unchanged.
func FuzzQuoteRoundTrip(f *testing.F) {
	for _, s := range []string{"", "pvc-a", `a"b\c$d`, "tab\tnew\nline", "[find]; :put x", "\x00\x7f\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		toks, err := lex(quote(s))
		if err != nil {
			t.Fatalf("lex(quote(%q)): %v", s, err)
		}
		if len(toks) != 2 || toks[0].kind != tokString || toks[0].text != s {
			t.Fatalf("lex(quote(%q)) = %+v", s, toks)
		}
	})
}

// No command line makes the interpreter panic.
func FuzzExec(f *testing.F) {
	for _, s := range []string{
		`/disk add type=file file-path=/storage-pool/a.img file-size=1M slot=a nvme-tcp-export=yes`,
		`/disk print detail where slot~"^pvc-" and !(nvme-tcp-export=no) or size=1`,
		`/disk set [find slot=a] file-size=2M comment="x"`,
		`/file copy "storage-pool/a.img" name="storage-pool/../../etc/x"`,
		`:put [/system resource get version]`,
		`/disk remove [find]; /file remove [find name~"."]`,
		`[[[`, `"\`, `/disk add copy-from=[/disk find] slot=b file-path=/storage-pool/b.img`,
	} {
		f.Add(s)
	}
	s, err := New(Options{Dir: f.TempDir(), Pools: []Pool{{Name: "storage-pool", Size: 64 << 20}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	f.Fuzz(func(t *testing.T, line string) {
		_, _ = s.Exec(context.Background(), line)
	})
}
