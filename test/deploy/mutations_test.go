package deploy

import (
	"strings"
	"testing"
)

const (
	exampleOverlay = "overlays/example/kustomization.yaml"
	mountTools     = "mount/fs.go"
)

// mutations break one input in one place each, the way a careless edit would, and name the
// check that must notice. TestChecksCatchMistakes fails for any check no mutation trips: a
// check that cannot fail is a defect.
var mutations = []struct {
	name     string
	file     string // "" is deploy.yaml
	old, new string // replace the nth occurrence of old (0: old must be unique); old "" appends new
	nth      int
	check    string // a check's name
	want     string // a substring of the problem it must report
}{
	{"misspelled field", "", "mountPropagation: Bidirectional", "mountPropogation: Bidirectional", 0, "deploy.yaml decodes strictly", `unknown field "spec.template.spec.containers[0].volumeMounts[1].mountPropogation"`},
	{"duplicate key", "", "  rds-user: \"\"\n", "  rds-user: \"\"\n  rds-user: \"csi\"\n", 0, "deploy.yaml decodes strictly", "already set"},
	{"ConfigMap without a namespace", "", "  name: rds-csi-config\n  namespace: rds-csi\n", "  name: rds-csi-config\n", 0, "deploy.yaml decodes strictly", `ConfigMap rds-csi-config is in namespace ""`},

	{"pod uses a missing ServiceAccount", "", "serviceAccountName: rds-csi-node", "serviceAccountName: rds-csi-nodes", 0, "references resolve", `uses ServiceAccount "rds-csi-nodes"`},
	{"mount of an undefined volume", "", "- name: nvme-host\n              mountPath: /etc/nvme", "- name: nvme-hosts\n              mountPath: /etc/nvme", 0, "references resolve", `mounts volume "nvme-hosts"`},
	{"env reads a missing ConfigMap key", "", "key: managed-nqn-prefix", "key: managed-nqn-prefixes", 0, "references resolve", `reads key "managed-nqn-prefixes"`},
	{"ConfigMap key nobody reads", "", "data:\n  # REQUIRED: the RDS", "data:\n  rds-ssh-port: \"22\"\n  # REQUIRED: the RDS", 0, "references resolve", `key "rds-ssh-port" is read by no container`},

	{"attacher loses volumeattachments/status", "", `resources: ["volumeattachments/status"]`, `resources: ["volumeattachment/status"]`, 0, "controller RBAC covers its containers", `"patch" on volumeattachments/status.storage.k8s.io`},
	{"leader election loses leases", "", `resources: ["leases"]`, `resources: ["lease"]`, 0, "controller RBAC covers its containers", "sidecar leader election (in rds-csi) needs"},
	{"binding refers to a missing ClusterRole", "", "  kind: ClusterRole\n  name: rds-csi-external-attacher\n", "  kind: ClusterRole\n  name: rds-csi-external-attach\n", 0, "controller RBAC covers its containers", "csi-attacher needs"},
	{"controller may read secrets", "", "    resources: [\"nodes\"]\n", "    resources: [\"nodes\", \"secrets\"]\n", 0, "controller RBAC covers its containers", "may read secrets"},

	{"node pod gets a token", "", "      automountServiceAccountToken: false\n", "", 0, "node plugin pod", "should set automountServiceAccountToken: false"},

	{"sidecar dials another socket", "", "- --csi-address=/csi/csi.sock\n            - --probe-timeout=3s\n            - --http-endpoint=:9808", "- --csi-address=/csi/other.sock\n            - --probe-timeout=3s\n            - --http-endpoint=:9808", 0, "CSI sockets meet", "--csi-address=/csi/other.sock reaches volume socket-dir:other.sock"},
	{"node socket outside the kubelet's plugin dir", "", "path: /var/lib/kubelet/plugins/rds.csi.srvlab.io\n", "path: /var/lib/kubelet/plugins/rds-csi\n", 0, "CSI sockets meet", "the kubelet looks for host /var/lib/kubelet/plugins/rds.csi.srvlab.io/csi.sock"},
	{"registrar announces another path", "", "rds.csi.srvlab.io/csi.sock\n            - --v=2", "rds/csi.sock\n            - --v=2", 0, "CSI sockets meet", "--kubelet-registration-path=/var/lib/kubelet/plugins/rds/csi.sock"},
	{"registrar's probe checks another path", "", "rds.csi.srvlab.io/csi.sock\n                - --mode=kubelet-registration-probe", "rds/csi.sock\n                - --mode=kubelet-registration-probe", 0, "CSI sockets meet", "--kubelet-registration-path=/var/lib/kubelet/plugins/rds/csi.sock"},
	{"registrar writes beside plugins_registry", "", "path: /var/lib/kubelet/plugins_registry", "path: /var/lib/kubelet/plugins-registry", 0, "CSI sockets meet", "/registration is host /var/lib/kubelet/plugins-registry"},

	{"controller liveness through CSI Probe", "", "port: metrics", "port: 9808", 1, "probes and ports", "restart-loops the plugin"},
	{"controller readiness on our own /healthz", "", "port: 9808\n", "port: 9809\n", 1, "probes and ports", "readiness goes through CSI Probe"},
	{"metrics flag and containerPort disagree", "", "--metrics-address=:9819", "--metrics-address=:9829", 0, "probes and ports", "(--metrics-address) but declares no such containerPort"},
	{"readiness times out before Probe does", "", "timeoutSeconds: 5", "timeoutSeconds: 3", 1, "probes and ports", "must exceed livenessprobe --probe-timeout"},

	{"StorageClass for another driver", "", "provisioner: rds.csi.srvlab.io\nparameters:\n  csi", "provisioner: rds.csi.example.io\nparameters:\n  csi", 0, "one driver name", "StorageClass provisioner rds.csi.example.io, but the driver registers as rds.csi.srvlab.io"},
	{"the binary renamed", "config.go", `defaultDriverName = "rds.csi.srvlab.io"`, `defaultDriverName = "rds.example.io"`, 0, "one driver name", "CSIDriver rds.csi.srvlab.io, but the driver registers as rds.example.io"},

	{"CSIDriver claims capacity nobody publishes", "", "storageCapacity: false", "storageCapacity: true", 0, "CSIDriver matches the controller", "the manifest must claim only what it does"},
	{"attach not required", "", "attachRequired: true", "attachRequired: false", 0, "CSIDriver matches the controller", "attachRequired must be true"},

	{"controller rolls instead of recreating", "", "type: Recreate", "type: RollingUpdate", 0, "one controller acts at a time", `replicas 1, strategy "RollingUpdate"; want 1 and Recreate`},
	{"two controller replicas", "", "replicas: 1", "replicas: 2", 0, "one controller acts at a time", "replicas 2, strategy \"Recreate\""},
	{"sidecar without leader election", "", "            - --leader-election\n", "", 1, "one controller acts at a time", "csi-provisioner runs without --leader-election"},

	{"controller grace below twice the shutdown bound", "", "terminationGracePeriodSeconds: 60", "terminationGracePeriodSeconds: 45", 1, "grace periods cover the shutdown bound", "less than twice the 30s shutdown bound"},
	{"node shutdown bound outgrows its grace", "", "- --shutdown-timeout=30s\n          env:\n            - name: NODE_ID", "- --shutdown-timeout=40s\n          env:\n            - name: NODE_ID", 0, "grace periods cover the shutdown bound", "less than twice the 40s shutdown bound"},

	{"node plugin in the pod network", "", "      hostNetwork: true\n", "      hostNetwork: false\n", 0, "node plugin pod", "hostNetwork must be true"},
	{"node plugin skips tainted nodes", "", "        - operator: Exists\n", "        - operator: Exists\n          effect: NoSchedule\n", 0, "node plugin pod", "toleration {operator: Exists}"},
	{"node plugin not privileged", "", "privileged: true", "privileged: false", 0, "node plugin pod", "must be privileged and runAsUser 0"},
	{"node plugin as the image's user", "", "runAsUser: 0\n            runAsNonRoot: false", "runAsUser: 65532\n            runAsNonRoot: false", 0, "node plugin pod", "must be privileged and runAsUser 0"},
	{"node id not from the node name", "", "--node-id=$(NODE_ID)", "--node-id=node-1", 0, "node plugin pod", "must expand an env var"},

	{"nvme host dir that must already exist", "", "path: /etc/nvme\n            type: DirectoryOrCreate", "path: /etc/nvme\n            type: Directory", 0, "node plugin host paths", "hostPath /etc/nvme should have type DirectoryOrCreate"},
	{"state dir flag and mount disagree", "", "--state-dir=/var/lib/rds-csi", "--state-dir=/var/lib/rds", 0, "node plugin host paths", "--state-dir=/var/lib/rds is on no mounted volume"},
	{"kubelet dir moved on the host only", "", "path: /var/lib/kubelet\n            type: Directory", "path: /var/lib/k0s/kubelet\n            type: Directory", 0, "node plugin host paths", `--kubelet-dir=/var/lib/kubelet is host path "/var/lib/k0s/kubelet"`},

	{"registrar mounts Bidirectional", "", "mountPath: /registration\n", "mountPath: /registration\n              mountPropagation: Bidirectional\n", 0, "mount propagation", "container node-driver-registrar mounts /registration with propagation Bidirectional"},
	{"kubelet dir without Bidirectional", "", "mountPropagation: Bidirectional", "mountPropagation: HostToContainer", 0, "mount propagation", "has propagation HostToContainer, want Bidirectional"},

	{"key file outside the Secret mount", "", "--rds-key-file=/etc/rds-csi/ssh/id_ed25519", "--rds-key-file=/etc/rds-csi/id_ed25519", 0, "SSH Secret reaches the controller", "--rds-key-file=/etc/rds-csi/id_ed25519 is not inside the Secret volume's mount"},
	{"known_hosts projected under another name", "", "path: known_hosts", "path: known-hosts", 0, "SSH Secret reaches the controller", "names known_hosts, which Secret volume ssh does not project"},
	{"SSH key readable by others", "", "defaultMode: 0440", "defaultMode: 0444", 0, "SSH Secret reaches the controller", "must give others no access"},
	{"SSH key not readable by the plugin", "", "        fsGroup: 65532\n", "", 0, "SSH Secret reaches the controller", "cannot read its SSH key"},

	{"managed prefix that claims every MikroTik NQN", "", `managed-nqn-prefix: "nqn.2000-02.com.mikrotik:pvc-"`, `managed-nqn-prefix: "nqn.2000-02.com.mikrotik:"`, 0, "managed NQN prefix is valid", "would claim every NQN"},

	{"sidecar on a floating tag", "", "csi-attacher:v4.13.0", "csi-attacher:latest", 0, "images", "is not pinned to a release tag"},
	{"copied sidecar keeps its old image", "", "csi-resizer:v2.2.1", "csi-attacher:v4.13.0", 0, "images", "container csi-resizer runs registry.k8s.io/sig-storage/csi-attacher"},
	{"controller and node on different builds", "", "image: ghcr.io/srvlab/rds-csi:v0.1.0", "image: ghcr.io/srvlab/rds-csi:v0.2.0", 2, "images", "must run the same rds-csi image"},

	{"StorageClass parameter the controller rejects", "", `migrationTimeoutSeconds: "300"`, `migrationTimeout: "300"`, 0, "StorageClasses", `parameter "migrationTimeout" is not one the controller accepts`},
	{"the controller renames a parameter", "volume_options.go", `paramMigrationTimeout = "migrationTimeoutSeconds"`, `paramMigrationTimeout = "migrationTimeoutSecs"`, 0, "StorageClasses", `parameter "migrationTimeoutSeconds" is not one the controller accepts`},
	{"the provisioner's prefix changes", "controller.go", `reservedParamPrefix = "csi.storage.k8s.io/"`, `reservedParamPrefix = "csi.example.io/"`, 0, "StorageClasses", `parameter "csi.storage.k8s.io/fstype" is not one`},
	{"volumePath beside the pool, not under it", "", "volumePath: /storage-pool/metal-csi", "volumePath: /storage-pool/metal-csi-other", 1, "StorageClasses", `volumePath "/storage-pool/metal-csi-other" must lie under`},
	{"a filesystem the driver does not format", "", "csi.storage.k8s.io/fstype: ext4", "csi.storage.k8s.io/fstype: btrfs", 0, "StorageClasses", "fstype btrfs: the driver formats only"},
	{"the driver drops ext4", "capability.go", `fsExt4 = "ext4"`, `fsExt4 = "ext3"`, 0, "StorageClasses", "csi-provisioner --default-fstype ext4: the driver formats only"},

	{"misspelled plugin flag", "", "--shutdown-timeout=30s", "--shutdown-timout=30s", 1, "plugin flags exist in the binary", "--shutdown-timout is not a flag of rds-csi"},
	{"argument names an undefined variable", "", "--node-id=$(NODE_ID)", "--node-id=$(NODE)", 0, "plugin flags exist in the binary", "refers to $(NODE)"},
	{"flag value the binary refuses", "", "--shutdown-timeout=30s", "--shutdown-timeout=30", 2, "plugin flags exist in the binary", "rds-csi rejects its arguments"},

	{"private key pasted into the file", "", "", "# -----BEGIN OPENSSH PRIVATE KEY-----\n", 0, "no key material", `"PRIVATE KEY"`},

	{"Secret item with the wrong key", "", "- key: known_hosts\n", "- key: known-hosts\n", 0, "Secret is documented as the volume wants it", "the documented kubectl line creates Secret"},
	{"documented kubectl line in another namespace", "", "-n rds-csi --from-file", "-n default --from-file", 0, "Secret is documented as the volume wants it", "creates Secret default/rds-csi-ssh"},

	{"made-up RDS address shipped", "", `rds-address: ""`, `rds-address: "192.168.88.1"`, 0, "REQUIRED settings ship empty", "rds-address is REQUIRED and should ship empty"},

	{"make image tags another registry", "Makefile", "REGISTRY     ?= ghcr.io/srvlab", "REGISTRY     ?= ghcr.io/example", 0, "one image repository", "make image tags ghcr.io/example/rds-csi"},
	{"build-image.sh tags another repository", "test/image/build-image.sh", "IMAGE=${IMAGE:-ghcr.io/srvlab/rds-csi}", "IMAGE=${IMAGE:-ghcr.io/other/rds-csi}", 0, "one image repository", "build-image.sh tags ghcr.io/other/rds-csi"},
	{"release pins another repository", workflowPath, "-image ghcr.io/srvlab/rds-csi", "-image ghcr.io/srvlab/rds", 0, "one image repository", "the release workflow pins ghcr.io/srvlab/rds;"},

	{"older Go in the Dockerfile", "Dockerfile", "FROM --platform=$BUILDPLATFORM golang:1.26", "FROM --platform=$BUILDPLATFORM golang:1.25", 0, "Dockerfile builds what make image builds", "go.mod names Go"},
	{"go.mod moves to a newer Go", "go.mod", "go 1.26.0", "go 1.27.0", 0, "Dockerfile builds what make image builds", "go.mod names Go"},
	{"Dockerfile binary links libc", "Dockerfile", "CGO_ENABLED=0", "CGO_ENABLED=1", 0, "Dockerfile builds what make image builds", "lacks CGO_ENABLED=0"},
	{"Dockerfile builds without the image tags", "Dockerfile", "-tags grpcnotrace ", "", 0, "Dockerfile builds what make image builds", "lacks -tags grpcnotrace"},
	{"Makefile's ldflags change alone", "Makefile", "LDFLAGS := -s -w -X main.version=$(VERSION)", "LDFLAGS := -s -w -X main.version=$(VERSION) -X main.revision=$(REVISION)", 0, "Dockerfile builds what make image builds", "lacks -ldflags"},
	{"VERSION never declared", "Dockerfile", "ARG VERSION=dev\nWORKDIR", "WORKDIR", 0, "Dockerfile builds what make image builds", "does not declare ARG VERSION"},

	{"Dockerfile drops a tool", "Dockerfile", "for tool in mkfs.ext4 e2fsck resize2fs mkfs.xfs", "for tool in mkfs.ext4 e2fsck mkfs.xfs", 0, "Dockerfile matches cmd/rds-image", "the Dockerfile copies tools"},
	{"the mount package runs a new tool", mountTools, "\t\"xfs_growfs\": \"xfsprogs\",\n", "\t\"xfs_growfs\": \"xfsprogs\",\n\t\"xfs_admin\":  \"xfsprogs\",\n", 0, "Dockerfile matches cmd/rds-image", "cmd/rds-image carries tools"},
	{"Dockerfile installs another package", "Dockerfile", "e2fsprogs xfsprogs \\", "e2fsprogs xfsprogs btrfs-progs \\", 0, "Dockerfile matches cmd/rds-image", "the Dockerfile installs"},
	{"Dockerfile on the next Debian", "Dockerfile", "FROM debian:12-slim", "FROM debian:13-slim", 0, "Dockerfile matches cmd/rds-image", "cmd/rds-image uses Debian bookworm"},
	{"Dockerfile writes another passwd", "Dockerfile", "65532:65532:nonroot:", "65532:65532:nobody:", 0, "Dockerfile matches cmd/rds-image", "does not make /etc/passwd"},
	{"Dockerfile's /tmp not sticky", "Dockerfile", "chmod 1777", "chmod 0777", 0, "Dockerfile matches cmd/rds-image", "/tmp is not 1777"},
	{"Dockerfile runs as root", "Dockerfile", "USER 65532:65532", "USER 0:0", 0, "Dockerfile matches cmd/rds-image", "the Dockerfile's USER"},
	{"Dockerfile's entrypoint elsewhere", "Dockerfile", `ENTRYPOINT ["/usr/bin/rds-csi"]`, `ENTRYPOINT ["/rds-csi"]`, 0, "Dockerfile matches cmd/rds-image", "the Dockerfile's ENTRYPOINT"},
	{"Dockerfile's PATH without /usr/sbin", "Dockerfile", "ENV PATH=/usr/sbin:/usr/bin", "ENV PATH=/usr/bin", 0, "Dockerfile matches cmd/rds-image", "the Dockerfile's ENV"},
	{"Dockerfile puts the binary elsewhere", "Dockerfile", "/out/rds-csi /usr/bin/rds-csi", "/out/rds-csi /rds-csi", 0, "Dockerfile matches cmd/rds-image", "does not put the binary at /usr/bin/rds-csi"},
	{"Dockerfile labels its own title", "Dockerfile", `image.title="rds-csi"`, `image.title="rds"`, 0, "Dockerfile matches cmd/rds-image", "the Dockerfile's labels"},

	{"release runs on every push", workflowPath, "    tags:\n      - \"v*.*.*\"\n", "    branches: [main]\n", 0, "release workflow", "must run on pushed version tags"},
	{"release may not push packages", workflowPath, "packages: write", "packages: read", 0, "release workflow", "permissions.packages must be write"},
	{"release version not the tag", workflowPath, "VERSION: ${{ github.ref_name }}", "VERSION: latest", 0, "release workflow", "VERSION must be the tag"},
	{"release built with docker", workflowPath, `make image VERSION="$VERSION" REGISTRY="$REGISTRY"`, `docker buildx build --push -t "$REGISTRY/rds-csi:$VERSION" .`, 0, "release workflow", "no step builds the image"},
	{"release skips the chroot proof", workflowPath, `sudo env "PATH=$PATH" HOME=/root CI=true go test -count=1 ./test/image/...`, "true", 0, "release workflow", "no step proves the image"},
	{"release pushes without credentials", workflowPath, "REGISTRY_PASSWORD: ${{ secrets.GITHUB_TOKEN }}", "REGISTRY_PASSWORD: \"\"", 0, "release workflow", "must set REGISTRY_USER and REGISTRY_PASSWORD"},
	{"release pins by tag only", workflowPath, `-ref "$REGISTRY/rds-csi:$VERSION@$digest"`, `-ref "$REGISTRY/rds-csi:$VERSION"`, 0, "release workflow", "no step pins deploy.yaml"},
	{"release pins with sed, not the tool", workflowPath, "go run ./cmd/rds-image pin", "sed -e s/x/y/ #", 0, "release workflow", "no step pins deploy.yaml"},
	{"release publishes before it pushes", workflowPath, "      - name: Push to ghcr.io\n", "      - name: Early release\n        run: gh release create \"$VERSION\" bin/release/deploy.yaml\n      - name: Push to ghcr.io\n", 0, "release workflow", "publishes the release with the pinned deploy.yaml must come after the one that pins"},
	{"release script that does not parse", workflowPath, "digest=$(cat bin/image/pushed-digest)", "digest=$(cat bin/image/pushed-digest", 0, "release workflow", "is not valid bash"},
	{"make image without the tool", "Makefile", "$(GO) run ./cmd/rds-image build", "./test/image/build-image.sh #", 0, "release workflow", "image target does not run cmd/rds-image"},
	{"make push without the tool", "Makefile", "$(GO) run ./cmd/rds-image push", "skopeo copy #", 0, "release workflow", "push target does not run cmd/rds-image"},

	{"root kustomization renames everything", "kustomization.yaml", "resources:\n  - deploy.yaml\n", "namePrefix: my-\nresources:\n  - deploy.yaml\n", 0, "root kustomization renders deploy.yaml", "differs between deploy.yaml and the root kustomization"},

	{"overlay names another image", exampleOverlay, "  - name: ghcr.io/srvlab/rds-csi\n", "  - name: ghcr.io/srvlab/rds\n", 0, "example overlay", "want the overlay's tag"},
	{"overlay patches the classes' parameter by the wrong path", exampleOverlay, "path: /parameters/volumePath", "path: /parameters/volumepath", 0, "example overlay", `StorageClass rds-nvme has volumePath "/storage-pool/metal-csi", want the overlay's`},
	{"overlay sets a key nothing reads", exampleOverlay, "      - rds-user=csi ", "      - rds-ssh-port=22\n      - rds-user=csi ", 0, "example overlay", `fails "references resolve": ConfigMap rds-csi-config key "rds-ssh-port" is read by no container`},
}

// mutate replaces the nth occurrence (1-based; 0 means old must occur exactly once) of old.
func mutate(t *testing.T, raw, old, new string, nth int) string {
	t.Helper()
	if old == "" {
		return raw + new
	}
	count := strings.Count(raw, old)
	if nth == 0 && count != 1 || nth > count {
		t.Fatalf("mutation target %q occurs %d times (nth=%d); make it unique or give nth", old, count, nth)
	}
	at := 0
	for i := 1; i < max(nth, 1); i++ {
		at += strings.Index(raw[at:], old) + len(old)
	}
	at += strings.Index(raw[at:], old)
	return raw[:at] + new + raw[at+len(old):]
}

func TestChecksCatchMistakes(t *testing.T) {
	in := readInputs(t)
	byName := map[string]check{}
	for _, c := range allChecks() {
		byName[c.name] = c
	}
	tripped := map[string]bool{}
	for _, tc := range mutations {
		t.Run(tc.name, func(t *testing.T) {
			c, ok := byName[tc.check]
			if !ok {
				t.Fatalf("no check named %q", tc.check)
			}
			file := tc.file
			if file == "" {
				file = "deploy.yaml"
			}
			mutated := in.with(file, mutate(t, in.files[file], tc.old, tc.new, tc.nth))
			if c.name != "deploy.yaml decodes strictly" && len(mutated.decodeErrs) > 0 {
				t.Fatalf("the mutated manifest no longer decodes (the mutation should break a rule, not the syntax): %v", mutated.decodeErrs)
			}
			r := &report{}
			c.fn(mutated, r)
			for _, p := range r.problems {
				if strings.Contains(p, tc.want) {
					tripped[tc.check] = true
					return
				}
			}
			t.Errorf("check %q did not report %q; it reported %q", tc.check, tc.want, r.problems)
		})
	}
	for _, c := range allChecks() {
		if !tripped[c.name] {
			t.Errorf("no mutation proves check %q can fail", c.name)
		}
	}
}
