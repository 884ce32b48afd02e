package nvme

import (
	"os"
	"path/filepath"
	"testing"
)

func TestMultipath(t *testing.T) {
	for _, tc := range []struct {
		name    string
		param   string // "" = no parameter file
		module  bool   // the nvme_core module directory exists
		want    bool
		wantErr bool
	}{
		{name: "on", param: "Y", module: true, want: true},
		{name: "off", param: "N", module: true, want: false},
		{name: "built without multipath support", module: true, want: false},
		{name: "nvme_core not loaded", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeSys(t)
			if tc.module {
				must(os.MkdirAll(filepath.Join(f.root, "module/nvme_core/parameters"), 0o755))
			}
			if tc.param != "" {
				writeFiles(filepath.Join(f.root, "module/nvme_core/parameters"), map[string]string{"multipath": tc.param})
			}
			got, err := newTestHost(t, f, newFakeFabrics()).Multipath()
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("Multipath() = %v, %v; want %v (error: %v)", got, err, tc.want, tc.wantErr)
			}
		})
	}
}
