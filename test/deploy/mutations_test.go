package deploy

import (
	"os"
	"strings"
	"testing"
)

// mutations break deploy.yaml in one place each, the way a careless edit would, and name the
// check that must notice. A check no mutation trips could be a check that cannot fail.
var mutations = []struct {
	name     string
	old, new string // replace the nth occurrence of old (n 0: old must be unique); old "" appends new
	nth      int
	check    string // name in checks
	want     string // a substring of the problem the check must report
}{
	{"pod uses a missing ServiceAccount", "serviceAccountName: rds-csi-node", "serviceAccountName: rds-csi-nodes", 0,
		"service accounts exist and are used", `uses ServiceAccount "rds-csi/rds-csi-nodes"`},
	{"binding refers to a missing ClusterRole", "  kind: ClusterRole\n  name: rds-csi-external-attacher\n", "  kind: ClusterRole\n  name: rds-csi-external-attach\n", 0,
		"bindings refer to objects that exist", `refers to ClusterRole "rds-csi-external-attach"`},
	{"ClusterRole nobody binds", "", "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: rds-csi-orphan\nrules: []\n", 0,
		"bindings refer to objects that exist", "ClusterRole rds-csi-orphan is created but never bound"},
	{"attacher loses volumeattachments/status", `resources: ["volumeattachments/status"]`, `resources: ["volumeattachment/status"]`, 0,
		"controller account may do what its containers do", `"patch" on volumeattachments/status.storage.k8s.io`},
	{"leader election loses leases", `resources: ["leases"]`, `resources: ["lease"]`, 0,
		"controller account may do what its containers do", "sidecar leader election needs"},
	{"controller may read secrets", "  - apiGroups: [\"storage.k8s.io\"]\n    resources: [\"csinodes\"]\n    verbs: [\"get\", \"list\", \"watch\"]\n  - apiGroups: [\"\"]\n    resources: [\"nodes\"]",
		"  - apiGroups: [\"storage.k8s.io\"]\n    resources: [\"csinodes\"]\n    verbs: [\"get\", \"list\", \"watch\"]\n  - apiGroups: [\"\"]\n    resources: [\"secrets\"]\n    verbs: [\"get\"]\n  - apiGroups: [\"\"]\n    resources: [\"nodes\"]", 0,
		"controller account may do what its containers do", "may read secrets"},
	{"node pod gets a token", "      automountServiceAccountToken: false\n", "", 0,
		"node account has no rights and no token", "should set automountServiceAccountToken: false"},
	{"mount of an undefined volume", "- name: nvme-host\n              mountPath: /etc/nvme", "- name: nvme-hosts\n              mountPath: /etc/nvme", 0,
		"volume mounts refer to volumes", `mounts volume "nvme-hosts", which the pod does not define`},
	{"env reads a missing ConfigMap key", "key: managed-nqn-prefix", "key: managed-nqn-prefixes", 0,
		"ConfigMap keys exist and are used", `reads key "managed-nqn-prefixes"`},
	{"ConfigMap key nobody reads", "data:\n  # REQUIRED: the RDS management address", "data:\n  rds-ssh-port: \"22\"\n  # REQUIRED: the RDS management address", 0,
		"ConfigMap keys exist and are used", `key "rds-ssh-port" is read by no container`},
	{"managed prefix that claims every MikroTik NQN", `managed-nqn-prefix: "nqn.2000-02.com.mikrotik:pvc-"`, `managed-nqn-prefix: "nqn.2000-02.com.mikrotik:"`, 0,
		"ConfigMap defaults are valid", "would claim every NQN"},
	{"made-up RDS address shipped", `rds-address: ""`, `rds-address: "192.168.88.1"`, 0,
		"ConfigMap defaults are valid", "rds-address should ship empty"},
	{"Secret item with the wrong key", "- key: known_hosts\n", "- key: known-hosts\n", 0,
		"SSH Secret is referenced, not shipped", "projects keys"},
	{"key file outside the Secret mount", "--rds-key-file=/etc/rds-csi/ssh/id_ed25519", "--rds-key-file=/etc/rds-csi/id_ed25519", 0,
		"SSH Secret is referenced, not shipped", "--rds-key-file=/etc/rds-csi/id_ed25519 is not inside the Secret volume's mount"},
	{"documented kubectl line names another key", "--from-file=known_hosts=./known_hosts", "--from-file=knownhosts=./known_hosts", 0,
		"SSH Secret is referenced, not shipped", "the documented kubectl line creates keys"},
	{"SSH key readable by others", "defaultMode: 0440", "defaultMode: 0444", 0,
		"SSH Secret is referenced, not shipped", "defaultMode must give others no access"},
	{"private key pasted into the file", "", "# -----BEGIN OPENSSH PRIVATE KEY-----\n", 0,
		"no key material", `"PRIVATE KEY"`},
	{"sidecar dials another socket", "- --csi-address=/csi/csi.sock\n            - --probe-timeout=3s\n            - --http-endpoint=:9808", "- --csi-address=/csi/other.sock\n            - --probe-timeout=3s\n            - --http-endpoint=:9808", 0,
		"CSI socket paths agree", "--csi-address=/csi/other.sock reaches volume socket-dir:other.sock"},
	{"node socket outside the kubelet's plugin dir", "path: /var/lib/kubelet/plugins/rds.csi.srvlab.io\n", "path: /var/lib/kubelet/plugins/rds-csi\n", 0,
		"CSI socket paths agree", "the kubelet expects /var/lib/kubelet/plugins/rds.csi.srvlab.io/csi.sock"},
	{"registrar announces another path", "- --kubelet-registration-path=/var/lib/kubelet/plugins/rds.csi.srvlab.io/csi.sock\n            - --v=2", "- --kubelet-registration-path=/var/lib/kubelet/plugins/rds/csi.sock\n            - --v=2", 0,
		"CSI socket paths agree", "node-driver-registrar --kubelet-registration-path=/var/lib/kubelet/plugins/rds/csi.sock"},
	{"controller liveness through CSI Probe", "port: metrics", "port: 9808", 1,
		"probes and ports match", "restart-loops the plugin"},
	{"controller readiness on our own /healthz", "port: 9808\n", "port: 9809\n", 1,
		"probes and ports match", "readiness goes through CSI Probe"},
	{"metrics flag and containerPort disagree", "--metrics-address=:9819", "--metrics-address=:9829", 0,
		"probes and ports match", "listens on 9829 (--metrics-address) but declares no such containerPort"},
	{"readiness times out before Probe does", "timeoutSeconds: 5", "timeoutSeconds: 3", 1,
		"probes and ports match", "must exceed livenessprobe --probe-timeout"},
	{"StorageClass for another driver", "provisioner: rds.csi.srvlab.io\nparameters:\n  csi.storage.k8s.io/fstype", "provisioner: rds.csi.example.io\nparameters:\n  csi.storage.k8s.io/fstype", 0,
		"driver name agrees everywhere", `provisioner "rds.csi.example.io"`},
	{"CSIDriver claims capacity nobody publishes", "storageCapacity: false", "storageCapacity: true", 0,
		"CSIDriver claims only what the deployment does", "the manifest must claim only what it does"},
	{"sidecar without leader election", "            - --leader-election\n", "", 1,
		"CSIDriver claims only what the deployment does", "csi-provisioner runs without --leader-election"},
	{"controller grace below twice the shutdown bound", "terminationGracePeriodSeconds: 60", "terminationGracePeriodSeconds: 45", 1,
		"grace periods cover the shutdown bound", "less than twice the 30s shutdown bound"},
	{"node shutdown bound outgrows its grace", "- --shutdown-timeout=30s\n          env:\n            - name: NODE_ID", "- --shutdown-timeout=40s\n          env:\n            - name: NODE_ID", 0,
		"grace periods cover the shutdown bound", "less than twice the 40s shutdown bound"},
	{"registrar mounts Bidirectional", "- name: registration-dir\n              mountPath: /registration", "- name: registration-dir\n              mountPath: /registration\n              mountPropagation: Bidirectional", 0,
		"Bidirectional propagation only on the node plugin's kubelet dir", "container node-driver-registrar mounts /registration Bidirectional"},
	{"kubelet dir without Bidirectional", "mountPropagation: Bidirectional", "mountPropagation: HostToContainer", 0,
		"Bidirectional propagation only on the node plugin's kubelet dir", "want exactly one Bidirectional mount"},
	{"node plugin in the pod network", "      hostNetwork: true\n", "      hostNetwork: false\n", 0,
		"node DaemonSet", "hostNetwork must be true"},
	{"node plugin skips tainted nodes", "        - operator: Exists\n", "        - operator: Exists\n          effect: NoSchedule\n", 0,
		"node DaemonSet", "toleration {operator: Exists}"},
	{"node plugin not privileged", "privileged: true", "privileged: false", 0,
		"node DaemonSet", "the node plugin must be privileged"},
	{"node id not from the node name", "--node-id=$(NODE_ID)", "--node-id=node-1", 0,
		"node DaemonSet", "must come from the pod's spec.nodeName"},
	{"nvme host dir that must already exist", "path: /etc/nvme\n            type: DirectoryOrCreate", "path: /etc/nvme\n            type: Directory", 0,
		"node plugin's host paths", "hostPath /etc/nvme should have type DirectoryOrCreate"},
	{"state dir flag and mount disagree", "--state-dir=/var/lib/rds-csi", "--state-dir=/var/lib/rds", 0,
		"node plugin's host paths", "should pass --state-dir=/var/lib/rds-csi"},
	{"controller rolls instead of recreating", "type: Recreate", "type: RollingUpdate", 0,
		"controller Deployment", "want Recreate"},
	{"controller as root", "runAsUser: 65532", "runAsUser: 0", 0,
		"controller Deployment", "must run as non-root"},
	{"provisioner without extra metadata", "            - --extra-create-metadata\n", "", 0,
		"controller Deployment", "csi-provisioner lacks --extra-create-metadata"},
	{"sidecar on a floating tag", "csi-attacher:v4.13.0", "csi-attacher:latest", 0,
		"images and resources", "is not pinned to a release tag"},
	{"controller and node on different builds", "image: ghcr.io/srvlab/rds-csi:v0.1.0", "image: ghcr.io/srvlab/rds-csi:v0.2.0", 2,
		"images and resources", "must run the same rds-csi image"},
	{"plugin requests far more than it uses", "              memory: 24Mi\n            limits:\n              memory: 128Mi", "              memory: 96Mi\n            limits:\n              memory: 128Mi", 1,
		"images and resources", "the idle target is 20 MiB or less"},
	{"StorageClass parameter the controller rejects", `migrationTimeoutSeconds: "300"`, `migrationTimeout: "300"`, 0,
		"storage and snapshot classes", `parameter "migrationTimeout" is not one the controller accepts`},
	{"volumePath beside the pool, not under it", "volumePath: /storage-pool/metal-csi", "volumePath: /storage-pool/metal-csi-other", 1,
		"storage and snapshot classes", `volumePath "/storage-pool/metal-csi-other" must lie under`},
	{"snapshots kept after delete", "deletionPolicy: Delete", "deletionPolicy: Retain", 0,
		"storage and snapshot classes", `deletionPolicy "Retain", want Delete`},
}

// mutate replaces the nth occurrence (1-based; 0 means old must occur exactly once) of old.
func mutate(t *testing.T, raw, old, new string, nth int) string {
	t.Helper()
	if old == "" {
		return raw + new
	}
	count := strings.Count(raw, old)
	switch {
	case nth == 0 && count != 1:
		t.Fatalf("mutation target %q occurs %d times in deploy.yaml; make it unique or give nth", old, count)
	case nth > count:
		t.Fatalf("mutation target %q occurs %d times, nth=%d", old, count, nth)
	case nth == 0:
		nth = 1
	}
	at := 0
	for i := 0; i < nth; i++ {
		j := strings.Index(raw[at:], old)
		at += j
		if i < nth-1 {
			at += len(old)
		}
	}
	return raw[:at] + new + raw[at+len(old):]
}

func TestChecksCatchMistakes(t *testing.T) {
	raw, err := os.ReadFile(manifestPath)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]func(*manifest, *report){}
	for _, c := range checks {
		byName[c.name] = c.fn
	}
	tripped := map[string]bool{}
	for _, tc := range mutations {
		t.Run(tc.name, func(t *testing.T) {
			fn, ok := byName[tc.check]
			if !ok {
				t.Fatalf("no check named %q", tc.check)
			}
			m, errs := decodeManifest([]byte(mutate(t, string(raw), tc.old, tc.new, tc.nth)))
			for _, err := range errs {
				t.Fatalf("the mutated manifest no longer decodes (the mutation should break a reference, not the syntax): %v", err)
			}
			r := &report{}
			fn(m, r)
			for _, p := range r.problems {
				if strings.Contains(p, tc.want) {
					tripped[tc.check] = true
					return
				}
			}
			t.Errorf("check %q did not report %q; it reported %q", tc.check, tc.want, r.problems)
		})
	}
	for _, c := range checks {
		if !tripped[c.name] {
			t.Errorf("no mutation proves check %q can fail", c.name)
		}
	}
}
