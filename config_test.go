package main

import (
	"bytes"
	"strings"
	"testing"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

const validPrefix = "nqn.2000-02.com.mikrotik:pvc-"

func TestValidationFailuresSayWhatToFix(t *testing.T) {
	controllerArgs := []string{"--mode=controller", "--rds-address=10.0.0.1", "--rds-user=csi", "--rds-key-file=/k"}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want []string // substrings of the one-line message
	}{
		{"unknown mode", []string{"--mode=both"}, nil, []string{`--mode "both"`, "controller, node or all"}},
		{"node without prefix", []string{"--mode=node"}, nil, []string{"--managed-nqn-prefix (CSI_MANAGED_NQN_PREFIX) is required in node mode", "nqn.2000-02.com.mikrotik:pvc-"}},
		{"all without prefix", []string{"--mode=all", "--rds-address=a", "--rds-user=u", "--rds-key-file=k", "--rds-insecure-skip-host-key"}, nil, []string{"required in all mode"}},
		{"prefix without colon", []string{"--mode=node", "--managed-nqn-prefix=nqn.2000-02.com.mikrotik"}, nil, []string{"--managed-nqn-prefix"}},
		{"prefix too short", []string{"--mode=node", "--managed-nqn-prefix=pv"}, nil, []string{"--managed-nqn-prefix"}},
		{"prefix too long", []string{"--mode=node", "--managed-nqn-prefix=nqn.2000-02.com.mikrotik:" + strings.Repeat("a", 223)}, nil, []string{"--managed-nqn-prefix"}},
		{"controller without address", []string{"--mode=controller", "--rds-user=csi", "--rds-key-file=/k"}, nil, []string{"controller mode needs --rds-address (RDS_ADDRESS)"}},
		{"controller without user and key", []string{"--mode=controller", "--rds-address=a"}, nil, []string{"--rds-user (RDS_USER)", "--rds-key-file (RDS_KEY_FILE)"}},
		{"no host key pinning", controllerArgs, nil, []string{"--rds-known-hosts (RDS_KNOWN_HOSTS) is required", "ssh-keyscan -p 22 10.0.0.1", "--rds-insecure-skip-host-key"}},
		{"bad log format", []string{"--mode=node", "--managed-nqn-prefix=" + validPrefix, "--log-format=xml"}, nil, []string{"--log-format", "text or json"}},
		{"bad log level", []string{"--mode=node", "--managed-nqn-prefix=" + validPrefix, "--log-level=loud"}, nil, []string{"--log-level", "debug, info, warn or error"}},
		{"bad env value", []string{"--mode=node", "--managed-nqn-prefix=" + validPrefix}, map[string]string{"RDS_SSH_PORT": "twenty-two"}, []string{"RDS_SSH_PORT", "--rds-ssh-port"}},
		{"bad capacity reserve", []string{"--mode=node", "--managed-nqn-prefix=" + validPrefix, "--capacity-reserve=lots"}, nil, []string{"--capacity-reserve", "50Gi"}},
		{"stray argument", []string{"node"}, nil, []string{`unexpected argument "node"`}},
		{"tcp endpoint", []string{"--mode=node", "--managed-nqn-prefix=" + validPrefix, "--endpoint=tcp://1.2.3.4:5", "--metrics-address="}, nil, []string{"only unix sockets"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(tc.args, envOf(tc.env), &out, &errOut)
			if code == 0 {
				t.Fatalf("exit 0, want failure; stderr=%q", errOut.String())
			}
			msg := errOut.String()
			if strings.Count(msg, "\n") != 1 || !strings.HasPrefix(msg, "rds-csi: ") {
				t.Errorf("want exactly one line starting with 'rds-csi: ', got %q", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q lacks %q", msg, w)
				}
			}
		})
	}
}

func TestValidConfigurations(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
	}{
		{"node", []string{"--mode=node", "--managed-nqn-prefix=" + validPrefix}, nil},
		{"slot-style prefix", []string{"--mode=node", "--managed-nqn-prefix=pvc-"}, nil},
		{"node from env", nil, map[string]string{"RDS_CSI_MODE": "node", "CSI_MANAGED_NQN_PREFIX": validPrefix}},
		{"controller pinned", []string{"--mode=controller", "--rds-address=a", "--rds-user=u", "--rds-key-file=k", "--rds-known-hosts=kh"}, nil},
		{"controller insecure", []string{"--mode=controller", "--rds-address=a", "--rds-user=u", "--rds-key-file=k", "--rds-insecure-skip-host-key"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			cfg, err := parseConfig(tc.args, envOf(tc.env), &out)
			if err != nil {
				t.Fatal(err)
			}
			if err := cfg.validate(); err != nil {
				t.Fatalf("validate: %v", err)
			}
		})
	}
}

func TestFlagBeatsEnvironmentBeatsDefault(t *testing.T) {
	env := envOf(map[string]string{"CSI_ENDPOINT": "/env.sock", "NODE_ID": "env-node", "RDS_SSH_PORT": "2222", "RDS_ALLOWED_PATHS": "/a, /b/c ,"})
	cfg, err := parseConfig([]string{"--endpoint=/flag.sock"}, env, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Endpoint != "/flag.sock" || cfg.NodeID != "env-node" || cfg.RDSSSHPort != 2222 {
		t.Errorf("got endpoint=%q node=%q port=%d", cfg.Endpoint, cfg.NodeID, cfg.RDSSSHPort)
	}
	if strings.Join(cfg.RDSAllowedPaths, "|") != "/a|/b/c" {
		t.Errorf("allowed paths %q", cfg.RDSAllowedPaths)
	}
	if cfg.DriverName != defaultDriverName || cfg.RDSVolumePath != "/storage-pool/metal-csi" || cfg.MetricsAddress != ":9809" || cfg.Mode != modeAll {
		t.Errorf("defaults wrong: %+v", cfg)
	}
}

func TestHelpListsEveryFlagWithItsEnvironmentName(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"--help"}, envOf(nil), &out, &bytes.Buffer{}); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{
		"--endpoint [CSI_ENDPOINT]", "--mode [RDS_CSI_MODE]", "--node-id [NODE_ID]", "--driver-name", "--metrics-address",
		"--log-format", "--log-level", "--rds-address [RDS_ADDRESS]", "--rds-ssh-port [RDS_SSH_PORT]",
		"--rds-user [RDS_USER]", "--rds-key-file [RDS_KEY_FILE]", "--rds-known-hosts [RDS_KNOWN_HOSTS]",
		"--rds-insecure-skip-host-key", "--rds-volume-path [RDS_VOLUME_PATH]", "--managed-nqn-prefix [CSI_MANAGED_NQN_PREFIX]",
		"--nvme-host-dir", "--sysfs-root", "--dev-root", "--state-dir", "--version",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}

func TestVersionFlag(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"--version"}, envOf(nil), &out, &bytes.Buffer{}); code != 0 || out.String() != "rds-csi "+version+"\n" {
		t.Fatalf("exit %d, output %q", code, out.String())
	}
}

func TestParseBytes(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"0", 0, false}, {"1048576", 1 << 20, false}, {"50Gi", 50 << 30, false}, {"2T", 2 << 40, false},
		{"1Ki", 1024, false}, {"-1", 0, true}, {"1.5Gi", 0, true}, {"", 0, true}, {"99999999999999Ti", 0, true},
	}
	for _, tc := range tests {
		got, err := parseBytes(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d, err=%v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}
