package main

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"srvlab.io/rds-csi/routeros"
)

// paramsController is a controller with just the configuration parameter checks read.
func paramsController(t *testing.T, allowed ...string) *controllerService {
	t.Helper()
	cfg := &Config{RDSAddress: "10.0.0.5", RDSVolumePath: testVolumePath, RDSAllowedPaths: allowed}
	bases, err := volumeBases(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &controllerService{cfg: cfg, bases: bases}
}

func TestControllerParameters(t *testing.T) {
	tests := []struct {
		name    string
		params  map[string]string
		allowed []string
		// want: the volume context entries expected (checked when the parameters are valid)
		want  map[string]string
		parts []string // InvalidArgument naming these
	}{
		{"defaults", nil, nil, map[string]string{"nqn": "nqn.2000-02.com.mikrotik:pvc-1", "volumePath": testVolumePath, "nvmeAddress": "10.0.0.5", "nvmePort": "4420",
			"ctrlLossTmo": "-1", "reconnectDelay": "5", "migrationTimeoutSeconds": "300"}, nil},
		{"every parameter", map[string]string{"volumePath": testVolumePath + "/db", "nvmeAddress": "192.168.88.2", "nvmePort": "4421",
			"ctrlLossTmo": "600", "reconnectDelay": "2", "keepAliveTmo": "10", "fastIoFailTmo": "-1", "nrIoQueues": "4", "queueSize": "128",
			"migrationTimeoutSeconds": "30"}, nil,
			map[string]string{"volumePath": testVolumePath + "/db", "nvmeAddress": "192.168.88.2", "nvmePort": "4421", "ctrlLossTmo": "600",
				"reconnectDelay": "2", "keepAliveTmo": "10", "fastIoFailTmo": "-1", "nrIoQueues": "4", "queueSize": "128", "migrationTimeoutSeconds": "30"}, nil},
		{"provisioner's own keys are ignored", map[string]string{"csi.storage.k8s.io/pvc/name": "data", "csi.storage.k8s.io/pv/name": "pvc-1"}, nil,
			map[string]string{"volumePath": testVolumePath}, nil},
		{"IPv6 address", map[string]string{"nvmeAddress": "fd00::5"}, nil, map[string]string{"nvmeAddress": "fd00::5"}, nil},
		{"allowed path", map[string]string{"volumePath": "/nvme-pool/vols"}, []string{"/nvme-pool/vols"}, map[string]string{"volumePath": "/nvme-pool/vols"}, nil},
		{"unknown key", map[string]string{"fsType": "xfs"}, nil, nil, []string{`unknown parameter "fsType"`, "volumePath"}},
		{"path outside the bases", map[string]string{"volumePath": "/storage-pool/other"}, nil, nil, []string{"volumePath", "--rds-volume-path", "--rds-allowed-paths"}},
		{"path sharing a prefix, not a component", map[string]string{"volumePath": testVolumePath + "-evil"}, nil, nil, []string{"volumePath"}},
		{"relative path", map[string]string{"volumePath": "storage-pool/metal-csi"}, nil, nil, []string{"volumePath", "clean absolute"}},
		{"trailing slash", map[string]string{"volumePath": testVolumePath + "/"}, nil, nil, []string{"volumePath", "no trailing"}},
		{"dot-dot escape", map[string]string{"volumePath": testVolumePath + "/../other"}, nil, nil, []string{"volumePath"}},
		{"quote in path", map[string]string{"volumePath": testVolumePath + `/a"b`}, nil, nil, []string{"volumePath"}},
		{"host name address", map[string]string{"nvmeAddress": "rds.lan"}, nil, nil, []string{"nvmeAddress", "IP address"}},
		{"unspecified address", map[string]string{"nvmeAddress": "0.0.0.0"}, nil, nil, []string{"nvmeAddress", "unicast"}},
		{"port 0", map[string]string{"nvmePort": "0"}, nil, nil, []string{"nvmePort", "from 1 to 65535"}},
		{"port not a number", map[string]string{"nvmePort": "nvme"}, nil, nil, []string{"nvmePort", "from 1 to 65535"}},
		{"ctrlLossTmo below -1", map[string]string{"ctrlLossTmo": "-2"}, nil, nil, []string{"ctrlLossTmo", "from -1 to 31536000"}},
		{"reconnectDelay 0", map[string]string{"reconnectDelay": "0"}, nil, nil, []string{"reconnectDelay", "from 1 to 3600"}},
		{"keepAliveTmo 0", map[string]string{"keepAliveTmo": "0"}, nil, nil, []string{"keepAliveTmo", "from 1 to 3600", "keep-alive off"}},
		{"fastIoFailTmo too big", map[string]string{"fastIoFailTmo": "3601"}, nil, nil, []string{"fastIoFailTmo", "from -1 to 3600"}},
		{"nrIoQueues 0", map[string]string{"nrIoQueues": "0"}, nil, nil, []string{"nrIoQueues", "from 1 to 1024"}},
		{"queueSize 8", map[string]string{"queueSize": "8"}, nil, nil, []string{"queueSize", "from 16 to 1024"}},
		{"migration timeout too short", map[string]string{"migrationTimeoutSeconds": "29"}, nil, nil, []string{"migrationTimeoutSeconds", "from 30 to 3600"}},
		{"migration timeout too long", map[string]string{"migrationTimeoutSeconds": "3601"}, nil, nil, []string{"migrationTimeoutSeconds", "from 30 to 3600"}},
		{"empty value", map[string]string{"queueSize": ""}, nil, nil, []string{"queueSize"}},
		{"two paths", map[string]string{"nvmeAddresses": "10.0.0.10, 10.0.1.10"}, nil,
			map[string]string{"nvmeAddress": "10.0.0.10", "nvmeAddresses": "10.0.0.10,10.0.1.10"}, nil},
		{"two paths, nvmeAddress their first", map[string]string{"nvmeAddress": "10.0.0.10", "nvmeAddresses": "10.0.0.10,fd00::10"}, nil,
			map[string]string{"nvmeAddress": "10.0.0.10", "nvmeAddresses": "10.0.0.10,fd00::10"}, nil},
		{"one path in nvmeAddresses is plain nvmeAddress", map[string]string{"nvmeAddresses": "10.0.0.10"}, nil,
			map[string]string{"nvmeAddress": "10.0.0.10", "nvmeAddresses": ""}, nil},
		{"four paths", map[string]string{"nvmeAddresses": "10.0.0.1,10.0.0.2,10.0.0.3,10.0.0.4"}, nil,
			map[string]string{"nvmeAddresses": "10.0.0.1,10.0.0.2,10.0.0.3,10.0.0.4"}, nil},
		{"five paths", map[string]string{"nvmeAddresses": "10.0.0.1,10.0.0.2,10.0.0.3,10.0.0.4,10.0.0.5"}, nil, nil, []string{"nvmeAddresses", "5 paths", "at most 4"}},
		{"duplicate path", map[string]string{"nvmeAddresses": "10.0.0.10,10.0.1.10,10.0.0.10"}, nil, nil, []string{"nvmeAddresses", "10.0.0.10 twice"}},
		{"duplicate path, two spellings", map[string]string{"nvmeAddresses": "fd00::1,fd00:0::1"}, nil, nil, []string{"nvmeAddresses", "twice"}},
		{"host name among the paths", map[string]string{"nvmeAddresses": "10.0.0.10,rds-b.lan"}, nil, nil, []string{"nvmeAddresses", `"rds-b.lan"`, "not an IP address"}},
		{"empty path", map[string]string{"nvmeAddresses": "10.0.0.10,"}, nil, nil, []string{"nvmeAddresses", `""`}},
		{"nvmeAddress not the first path", map[string]string{"nvmeAddress": "10.0.1.10", "nvmeAddresses": "10.0.0.10,10.0.1.10"}, nil, nil,
			[]string{"nvmeAddress", "not the first entry of nvmeAddresses"}},
		{"every problem at once", map[string]string{"queueSize": "1", "nvmePort": "-1", "bogus": "x"}, nil, nil, []string{"queueSize", "nvmePort", `"bogus"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := paramsController(t, tc.allowed...)
			p, err := c.parseParams(tc.params)
			if tc.parts != nil {
				wantCode(t, err, codes.InvalidArgument, tc.parts...)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := p.withAddress(c.cfg.RDSAddress); err != nil {
				t.Fatal(err)
			}
			vc := p.volumeContext(&testDisk)
			for k, v := range tc.want {
				if got, ok := vc[k]; got != v || (v != "") != ok {
					t.Errorf("volume context %s = %q, want %q (context %v)", k, vc[k], v, vc)
				}
			}
			for _, optional := range []string{"keepAliveTmo", "fastIoFailTmo", "nrIoQueues", "queueSize"} {
				if _, set := tc.params[optional]; !set {
					if v, ok := vc[optional]; ok {
						t.Errorf("unset %s is in the volume context as %q: the node's default must apply", optional, v)
					}
				}
			}
		})
	}
}

// testDisk is a disk as the RDS reports it after creation, without a port read back.
var testDisk = routeros.Disk{Slot: "pvc-1", NQN: defaultNQN("pvc-1")}

func TestControllerNVMeAddressDefault(t *testing.T) {
	tests := []struct {
		rdsAddress string
		code       codes.Code
		parts      []string
	}{
		{"10.0.0.5", codes.OK, nil},
		{"rds.example.lan", codes.InvalidArgument, []string{"nvmeAddress is not set", `--rds-address "rds.example.lan"`, "set nvmeAddress"}},
	}
	for _, tc := range tests {
		t.Run(tc.rdsAddress, func(t *testing.T) {
			c := paramsController(t)
			c.cfg.RDSAddress = tc.rdsAddress
			p, err := c.parseParams(nil)
			if err != nil {
				t.Fatal(err)
			}
			err = p.withAddress(c.cfg.RDSAddress)
			if tc.code == codes.OK {
				if err != nil || p.nvmeAddress != tc.rdsAddress {
					t.Fatalf("got %q, %v", p.nvmeAddress, err)
				}
				return
			}
			wantCode(t, err, tc.code, tc.parts...)
		})
	}
}

func TestControllerVolumeBases(t *testing.T) {
	tests := []struct {
		volumePath string
		allowed    []string
		bad        string
	}{
		{"/storage-pool/metal-csi", nil, ""},
		{"/storage-pool", []string{"/nvme/a", "/nvme/b"}, ""},
		{"storage-pool/metal-csi", nil, "--rds-volume-path"},
		{"/storage-pool/metal-csi/", nil, "--rds-volume-path"},
		{"/", nil, "--rds-volume-path"},
		{"/storage-pool/metal-csi", []string{"/ok", "/bad path"}, "--rds-allowed-paths"},
	}
	for _, tc := range tests {
		_, err := volumeBases(&Config{RDSVolumePath: tc.volumePath, RDSAllowedPaths: tc.allowed})
		switch {
		case tc.bad == "" && err != nil:
			t.Errorf("%s %v: %v", tc.volumePath, tc.allowed, err)
		case tc.bad != "" && (err == nil || !strings.Contains(err.Error(), tc.bad)):
			t.Errorf("%s %v: got %v, want an error naming %s", tc.volumePath, tc.allowed, err, tc.bad)
		}
	}
}
