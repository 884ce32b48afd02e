package deploy

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"

	"srvlab.io/rds-csi/nvme"
)

// report collects every problem one check finds, so the mutation test can look for the
// one it expects.
type report struct{ problems []string }

func (r *report) add(format string, args ...any) {
	r.problems = append(r.problems, fmt.Sprintf(format, args...))
}

// must records err and reports whether the check can go on.
func (r *report) must(err error) bool {
	if err != nil {
		r.add("%v", err)
	}
	return err == nil
}

// check is one rule over the inputs. shippedOnly rules are about the shipped deploy.yaml
// itself (its comments, its empty REQUIRED values), not an overlay's rendering of it.
type check struct {
	name        string
	fn          func(in *inputs, r *report)
	shippedOnly bool
}

// manifestChecks hold for deploy.yaml and for every rendering of it. Each line says what
// the check protects.
var manifestChecks = []check{
	{"deploy.yaml decodes strictly", checkDecodes, false},                        // a misspelled field, an object in the wrong namespace or twice
	{"references resolve", checkReferences, false},                               // a renamed ServiceAccount, volume or ConfigMap key; a setting nothing reads
	{"controller RBAC covers its containers", checkControllerRBAC, false},        // a verb a sidecar uses but may not; a grant of secrets
	{"CSI sockets meet", checkSockets, false},                                    // sidecars, kubelet and registrar looking for the socket elsewhere
	{"probes and ports", checkProbes, false},                                     // an RDS outage restart-looping the plugin; a probe on an undeclared port
	{"one driver name", checkDriverName, false},                                  // PVCs waiting for a provisioner that never comes
	{"CSIDriver matches the controller", checkCSIDriver, false},                  // fencing skipped; the scheduler waiting for capacity objects
	{"one controller acts at a time", checkSingleController, false},              // two controllers acting on one volume
	{"grace periods cover the shutdown bound", checkGracePeriods, false},         // in-flight RPCs SIGKILLed
	{"node plugin pod", checkNodePlugin, false},                                  // connections dying with the pod, skipped nodes, one node ID, a token
	{"node plugin host paths", checkNodeHostPaths, false},                        // state on the image's root; kubelet paths that mean nothing inside
	{"mount propagation", checkMountPropagation, false},                          // mounts that never reach the kubelet, or leak onto the host
	{"SSH Secret reaches the controller", checkSSHSecret, false},                 // a key file the plugin cannot find or read, or others can
	{"managed NQN prefix is valid", checkNQNPrefix, false},                       // a node that disconnects subsystems it does not own
	{"images", checkImages, false},                                               // floating sidecar tags, a copied block's old image, two builds
	{"StorageClasses", checkStorageClasses, false},                               // every CreateVolume of a class failing
	{"plugin flags exist in the binary", checkPluginFlags, false},                // a flag or value the binary refuses, a $(VAR) passed literally
	{"no key material", checkNoKeyMaterial, false},                               // a key committed to the repository
	{"Secret is documented as the volume wants it", checkSecretDocumented, true}, // instructions that create a Secret the pod cannot mount
	{"REQUIRED settings ship empty", checkRequiredEmpty, true},                   // a made-up address dialled by every unedited install
}

// repoChecks tie deploy.yaml to the files that build, ship and wrap it.
var repoChecks = []check{
	{"one image repository", checkImageRepository, false},                        // a release whose deploy.yaml runs another image
	{"Dockerfile builds what make image builds", checkDockerfileBuild, false},    // an old toolchain, a dynamic binary, other tags or ldflags
	{"Dockerfile matches cmd/rds-image", checkDockerfileMatchesImageTool, false}, // two recipes for one image drifting apart
	{"release workflow", checkReleaseWorkflow, false},                            // a release that publishes what it did not build and prove
	{"root kustomization renders deploy.yaml", checkRootKustomization, false},    // `kubectl apply -k .` installing something else
	{"example overlay", checkExampleOverlay, false},                              // user settings that never reach the objects
}

func allChecks() []check { return append(slices.Clone(manifestChecks), repoChecks...) }

func TestChecks(t *testing.T) {
	in := readInputs(t)
	for _, c := range allChecks() {
		t.Run(c.name, func(t *testing.T) {
			r := &report{}
			c.fn(in, r)
			for _, p := range r.problems {
				t.Error(p)
			}
		})
	}
}

func checkDecodes(in *inputs, r *report) {
	for _, err := range in.decodeErrs {
		r.add("%v", err)
	}
}

// checkReferences: what a pod names exists (a missing one keeps it from starting), and
// every ConfigMap key is read: users are told to edit them.
func checkReferences(in *inputs, r *report) {
	read := map[string]bool{}
	for _, p := range in.m.pods(r) {
		if _, ok := named[*corev1.ServiceAccount](in.m, p.spec.ServiceAccountName); !ok {
			r.add("%s uses ServiceAccount %q, which deploy.yaml does not create", p.owner, p.spec.ServiceAccountName)
		}
		for _, c := range p.spec.Containers {
			for _, vm := range c.VolumeMounts {
				if p.volume(vm.Name) == nil {
					r.add("%s container %s mounts volume %q, which the pod does not define", p.owner, c.Name, vm.Name)
				}
			}
			for _, e := range c.Env {
				if e.ValueFrom == nil || e.ValueFrom.ConfigMapKeyRef == nil {
					continue
				}
				ref := e.ValueFrom.ConfigMapKeyRef
				if cm, ok := named[*corev1.ConfigMap](in.m, ref.Name); !ok || !slices.Contains(slices.Collect(maps.Keys(cm.Data)), ref.Key) {
					r.add("%s container %s env %s reads key %q of ConfigMap %s, which does not exist", p.owner, c.Name, e.Name, ref.Key, ref.Name)
				}
				read[ref.Name+"/"+ref.Key] = true
			}
		}
	}
	for _, cm := range objectsOf[*corev1.ConfigMap](in.m) {
		for _, k := range slices.Sorted(maps.Keys(cm.Data)) {
			if !read[cm.Name+"/"+k] {
				r.add("ConfigMap %s key %q is read by no container", cm.Name, k)
			}
		}
	}
}

// controllerNeeds is what each container of the controller pod does with the API: the
// upstream sidecars' RBAC, and our plugin's VolumeAttachment reads. Resources are
// resource.group ("persistentvolumes" is in the core group); for a need whose who ends in
// "(in rds-csi)", a Role in rds-csi suffices.
var controllerNeeds = []struct{ who, resource, verbs string }{
	{"rds-csi (fencing records)", "volumeattachments.storage.k8s.io", "get list watch"},
	{"csi-provisioner", "persistentvolumes", "get list watch create patch delete"},
	{"csi-provisioner", "persistentvolumeclaims", "get list watch update"},
	{"csi-provisioner", "storageclasses.storage.k8s.io", "get list watch"},
	{"csi-provisioner", "csinodes.storage.k8s.io", "get list watch"},
	{"csi-provisioner", "nodes", "get list watch"},
	{"csi-provisioner", "events", "create patch"},
	{"csi-provisioner (restore)", "volumesnapshots.snapshot.storage.k8s.io", "get list watch update"},
	{"csi-provisioner (restore)", "volumesnapshotcontents.snapshot.storage.k8s.io", "get list"},
	{"csi-provisioner (detach before delete)", "volumeattachments.storage.k8s.io", "get list watch"},
	{"csi-provisioner", "volumeattributesclasses.storage.k8s.io", "get"},
	{"csi-attacher", "volumeattachments.storage.k8s.io", "get list watch patch"},
	{"csi-attacher", "volumeattachments/status.storage.k8s.io", "patch"},
	{"csi-attacher", "persistentvolumes", "patch"},
	{"csi-resizer", "persistentvolumeclaims/status", "patch"},
	{"csi-resizer", "pods", "get list watch"},
	{"csi-snapshotter", "volumesnapshotclasses.snapshot.storage.k8s.io", "get list watch"},
	{"csi-snapshotter", "volumesnapshotcontents.snapshot.storage.k8s.io", "create get list watch update delete patch"},
	{"csi-snapshotter", "volumesnapshotcontents/status.snapshot.storage.k8s.io", "update patch"},
	{"sidecar leader election (in rds-csi)", "leases.coordination.k8s.io", "get watch list create update delete"},
}

// grants are the rules bound to ServiceAccount rds-csi/sa: cluster-wide, and in rds-csi.
func grants(m *manifest, sa string) (cluster, inNamespace []rbacv1.PolicyRule) {
	isSA := func(s rbacv1.Subject) bool {
		return s.Kind == rbacv1.ServiceAccountKind && s.Namespace == namespace && s.Name == sa
	}
	for _, b := range objectsOf[*rbacv1.ClusterRoleBinding](m) {
		if role, ok := named[*rbacv1.ClusterRole](m, b.RoleRef.Name); ok && b.RoleRef.Kind == "ClusterRole" && slices.ContainsFunc(b.Subjects, isSA) {
			cluster = append(cluster, role.Rules...)
		}
	}
	for _, b := range objectsOf[*rbacv1.RoleBinding](m) {
		if role, ok := named[*rbacv1.Role](m, b.RoleRef.Name); ok && b.RoleRef.Kind == "Role" && slices.ContainsFunc(b.Subjects, isSA) {
			inNamespace = append(inNamespace, role.Rules...)
		}
	}
	return cluster, inNamespace
}

func allows(rules []rbacv1.PolicyRule, resourceGroup, verb string) bool {
	resource, group, _ := strings.Cut(resourceGroup, ".")
	has := func(list []string, want string) bool {
		return slices.Contains(list, want) || slices.Contains(list, "*")
	}
	return slices.ContainsFunc(rules, func(rule rbacv1.PolicyRule) bool {
		return has(rule.APIGroups, group) && has(rule.Resources, resource) && has(rule.Verbs, verb)
	})
}

// checkControllerRBAC: the account all controller containers share may do what each does
// (through bindings that resolve), and may not read the cluster's secrets.
func checkControllerRBAC(in *inputs, r *report) {
	p, err := in.m.controller()
	if !r.must(err) {
		return
	}
	cluster, inNS := grants(in.m, p.spec.ServiceAccountName)
	for _, n := range controllerNeeds {
		for _, verb := range strings.Fields(n.verbs) {
			if !allows(cluster, n.resource, verb) && !(strings.HasSuffix(n.who, "(in rds-csi)") && allows(inNS, n.resource, verb)) {
				r.add("%s needs %q on %s, but the controller's ServiceAccount is not granted it", n.who, verb, n.resource)
			}
		}
	}
	if all := append(cluster, inNS...); allows(all, "secrets", "get") || allows(all, "secrets", "list") {
		r.add("the controller's ServiceAccount may read secrets: no container here needs that")
	}
}

// socketAt names where a container path leads: a host path, or a file of a pod volume.
func socketAt(p pod, c *corev1.Container, file string) string {
	if host, ok := hostPathOf(p, c, file); ok {
		return "host " + host
	}
	if vm, rel, ok := mountFor(c, file); ok {
		return "volume " + vm.Name + ":" + rel
	}
	return "no volume (" + file + ")"
}

// checkSockets: the plugin's --endpoint and every sidecar's --csi-address reach one socket;
// the node's is at the host's <--kubelet-dir>/plugins/<driver>/csi.sock, where the kubelet
// looks, which the registrar announces and probes; the registrar writes to plugins_registry.
func checkSockets(in *inputs, r *report) {
	for _, p := range in.m.pods(r) {
		endpoint, _ := flagValue(p.plugin.Args, "endpoint")
		want := socketAt(p, p.plugin, strings.TrimPrefix(endpoint, "unix://"))
		for _, c := range p.spec.Containers {
			if addr, ok := flagValue(c.Args, "csi-address"); ok && socketAt(p, &c, addr) != want {
				r.add("%s container %s: --csi-address=%s reaches %s, the plugin listens at %s", p.owner, c.Name, addr, socketAt(p, &c, addr), want)
			}
		}
	}
	p, err := in.m.node()
	if !r.must(err) {
		return
	}
	reg, err := p.container("node-driver-registrar")
	if !r.must(err) {
		return
	}
	kubeletDir, _ := flagValue(p.plugin.Args, "kubelet-dir")
	sock := path.Join(kubeletDir, "plugins", driverName(in, r), "csi.sock")
	endpoint, _ := flagValue(p.plugin.Args, "endpoint")
	if got := socketAt(p, p.plugin, strings.TrimPrefix(endpoint, "unix://")); got != "host "+sock {
		r.add("the node plugin's socket is at %s; the kubelet looks for host %s", got, sock)
	}
	if reg.LivenessProbe == nil || reg.LivenessProbe.Exec == nil {
		r.add("node-driver-registrar has no kubelet-registration-probe liveness check")
	} else if got, _ := flagValue(reg.LivenessProbe.Exec.Command, "kubelet-registration-path"); got != sock {
		r.add("node-driver-registrar's liveness probe checks --kubelet-registration-path=%s, want %s", got, sock)
	}
	if got, _ := flagValue(reg.Args, "kubelet-registration-path"); got != sock {
		r.add("node-driver-registrar --kubelet-registration-path=%s, want %s", got, sock)
	}
	if got, want := socketAt(p, reg, "/registration"), "host "+path.Join(kubeletDir, "plugins_registry"); got != want {
		r.add("node-driver-registrar's /registration is %s, want %s", got, want)
	}
}

// listenPort is the port a container listens on by --flag=address; it must also declare it.
func listenPort(c *corev1.Container, flag string) (int, error) {
	addr, _ := flagValue(c.Args, flag)
	_, port, err := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(port)
	if err != nil || !slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool { return int(cp.ContainerPort) == n }) {
		return 0, fmt.Errorf("container %s listens on %q (--%s) but declares no such containerPort", c.Name, addr, flag)
	}
	return n, nil
}

// checkProbes: liveness is the plugin's own /healthz (metrics port), which never asks the
// RDS; readiness is livenessprobe's, which calls CSI Probe, so an RDS outage shows as not
// ready without a restart; and the kubelet waits longer than livenessprobe waits for Probe.
func checkProbes(in *inputs, r *report) {
	for _, p := range in.m.pods(r) {
		sidecar, err := p.container("livenessprobe")
		if !r.must(err) {
			continue
		}
		metrics, err1 := listenPort(p.plugin, "metrics-address")
		healthz, err2 := listenPort(sidecar, "http-endpoint")
		if !r.must(errors.Join(err1, err2)) {
			continue
		}
		for _, want := range []struct {
			kind  string
			probe *corev1.Probe
			port  int
			why   string
		}{
			{"liveness", p.plugin.LivenessProbe, metrics, "liveness must not depend on the RDS, or an RDS outage restart-loops the plugin"},
			{"readiness", p.plugin.ReadinessProbe, healthz, "readiness goes through CSI Probe, so an RDS outage shows as not ready"},
		} {
			if want.probe == nil || want.probe.HTTPGet == nil {
				r.add("%s: the plugin has no HTTP %s probe", p.owner, want.kind)
				continue
			}
			got := want.probe.HTTPGet.Port.IntValue()
			if i := slices.IndexFunc(p.plugin.Ports, func(cp corev1.ContainerPort) bool { return cp.Name == want.probe.HTTPGet.Port.StrVal }); i >= 0 {
				got = int(p.plugin.Ports[i].ContainerPort) // a named port, resolved as the kubelet does
			}
			if got != want.port || want.probe.HTTPGet.Path != "/healthz" {
				r.add("%s: plugin %s probe GETs %s on port %d, want /healthz on %d: %s", p.owner, want.kind, want.probe.HTTPGet.Path, got, want.port, want.why)
			}
		}
		probeTimeout, kubeletTimeout := time.Second, time.Second // both default to one second
		if v, ok := flagValue(sidecar.Args, "probe-timeout"); ok {
			probeTimeout, _ = time.ParseDuration(v)
		}
		if rp := p.plugin.ReadinessProbe; rp != nil && rp.TimeoutSeconds > 0 {
			kubeletTimeout = time.Duration(rp.TimeoutSeconds) * time.Second
		}
		if kubeletTimeout <= probeTimeout {
			r.add("%s: readiness timeout %v must exceed livenessprobe --probe-timeout=%v, or a slow Probe reads as no answer", p.owner, kubeletTimeout, probeTimeout)
		}
	}
}

// checkDriverName: the CSIDriver, every class's provisioner or driver are the name the
// binary registers (config.go's default).
func checkDriverName(in *inputs, r *report) {
	name := driverName(in, r)
	var names []string
	for _, d := range objectsOf[*storagev1.CSIDriver](in.m) {
		names = append(names, "CSIDriver "+d.Name)
	}
	for _, sc := range objectsOf[*storagev1.StorageClass](in.m) {
		names = append(names, "StorageClass provisioner "+sc.Provisioner)
	}
	for _, vsc := range objectsOf[*volumeSnapshotClass](in.m) {
		names = append(names, "VolumeSnapshotClass driver "+vsc.Driver)
	}
	for _, n := range names {
		if !strings.HasSuffix(n, " "+name) {
			r.add("%s, but the driver registers as %s", n, name)
		}
	}
}

// checkCSIDriver: attach is required (ControllerPublish fences), so csi-attacher runs;
// storageCapacity is claimed only if csi-provisioner publishes capacity.
func checkCSIDriver(in *inputs, r *report) {
	drivers := objectsOf[*storagev1.CSIDriver](in.m)
	p, err := in.m.controller()
	if !r.must(err) {
		return
	}
	if len(drivers) != 1 {
		r.add("want one CSIDriver, found %d", len(drivers))
		return
	}
	spec := drivers[0].Spec
	if _, err := p.container("csi-attacher"); !deref(spec.AttachRequired, false) || err != nil {
		r.add("CSIDriver attachRequired must be true, and the controller must run csi-attacher: ControllerPublish does the fencing")
	}
	publishes := false
	if prov, err := p.container("csi-provisioner"); err == nil {
		_, publishes = flagValue(prov.Args, "enable-capacity")
	}
	if claims := deref(spec.StorageCapacity, false); claims != publishes {
		r.add("CSIDriver storageCapacity=%v but csi-provisioner publishes capacity=%v: the manifest must claim only what it does", claims, publishes)
	}
}

// checkSingleController: one replica, Recreate (the old pod is gone before the new one
// starts), and every API-acting sidecar elects a leader, for a replacement started while an
// unreachable node still runs the old pod.
func checkSingleController(in *inputs, r *report) {
	p, err := in.m.controller()
	if !r.must(err) {
		return
	}
	d := objectsOf[*appsv1.Deployment](in.m)[0]
	if n := deref(d.Spec.Replicas, 1); n != 1 || d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		r.add("Deployment %s: replicas %d, strategy %q; want 1 and Recreate", d.Name, n, d.Spec.Strategy.Type)
	}
	for _, c := range p.spec.Containers {
		if _, ok := flagValue(c.Args, "leader-election"); !ok && c.Name != pluginName && c.Name != "livenessprobe" {
			r.add("%s runs without --leader-election: a second controller pod during a node partition would act twice", c.Name)
		}
	}
}

// checkGracePeriods: each pod's grace period is at least twice its plugin's
// --shutdown-timeout: in-flight RPCs get their bound, then the socket is removed.
func checkGracePeriods(in *inputs, r *report) {
	for _, p := range in.m.pods(r) {
		v, _ := flagValue(p.plugin.Args, "shutdown-timeout")
		bound, err := time.ParseDuration(v)
		if err != nil {
			r.add("%s: pass a valid --shutdown-timeout, so the grace period can be held to it (%v)", p.owner, err)
		} else if grace := time.Duration(deref(p.spec.TerminationGracePeriodSeconds, 30)) * time.Second; grace < 2*bound {
			r.add("%s: terminationGracePeriodSeconds is %v, less than twice the %v shutdown bound: in-flight RPCs would be SIGKILLed", p.owner, grace, bound)
		}
	}
}

// checkNodePlugin: hostNetwork (the kernel makes an NVMe/TCP socket in the network
// namespace of the process writing /dev/nvme-fabrics; in a pod network every connection
// dies with the pod); every taint tolerated (a node without the plugin cannot unstage);
// privileged and root (the image runs as non-root); --node-id from spec.nodeName (the ID
// the attacher fences by); and no API token (nothing on the node calls the API).
func checkNodePlugin(in *inputs, r *report) {
	p, err := in.m.node()
	if !r.must(err) {
		return
	}
	if !p.spec.HostNetwork {
		r.add("%s: hostNetwork must be true: NVMe/TCP connections live in the network namespace that made them", p.owner)
	}
	if !slices.ContainsFunc(p.spec.Tolerations, func(t corev1.Toleration) bool {
		return t.Key == "" && t.Operator == corev1.TolerationOpExists && t.Effect == ""
	}) {
		r.add("%s: needs a toleration {operator: Exists} to run on every node, tainted ones included", p.owner)
	}
	if sc := p.plugin.SecurityContext; sc == nil || !deref(sc.Privileged, false) || deref(sc.RunAsUser, -1) != 0 {
		r.add("%s: the node plugin must be privileged and runAsUser 0 (fabrics, sysfs, mknod, mount)", p.owner)
	}
	id, _ := flagValue(p.plugin.Args, "node-id")
	if !slices.ContainsFunc(p.plugin.Env, func(e corev1.EnvVar) bool {
		return "$("+e.Name+")" == id && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName"
	}) {
		r.add("%s: --node-id=%s must expand an env var set from fieldRef spec.nodeName", p.owner, id)
	}
	if deref(p.spec.AutomountServiceAccountToken, true) {
		r.add("%s should set automountServiceAccountToken: false", p.owner)
	}
}

// checkNodeHostPaths: every path flag of a plugin lies on a mounted volume; the node plugin
// sees the kubelet's dir at the host's path (the kubelet hands it host paths); and the
// dirs the node owns are hostPaths of their own, created on a fresh node.
func checkNodeHostPaths(in *inputs, r *report) {
	for _, p := range in.m.pods(r) {
		for _, a := range p.plugin.Args {
			name, val, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
			if _, _, ok := mountFor(p.plugin, val); strings.HasPrefix(val, "/") && !ok {
				r.add("%s: --%s=%s is on no mounted volume", p.owner, name, val)
			}
		}
	}
	p, err := in.m.node()
	if !r.must(err) {
		return
	}
	kubeletDir, _ := flagValue(p.plugin.Args, "kubelet-dir")
	if host, _ := hostPathOf(p, p.plugin, kubeletDir); host != kubeletDir {
		r.add("%s: --kubelet-dir=%s is host path %q; the kubelet hands the plugin host paths, so mount its dir at the same path", p.owner, kubeletDir, host)
	}
	for _, flag := range []string{"state-dir", "nvme-host-dir"} {
		dir, _ := flagValue(p.plugin.Args, flag)
		vm, rel, _ := mountFor(p.plugin, dir)
		switch v := p.volume(vm.Name); {
		case rel != "" || v == nil || v.HostPath == nil:
			r.add("%s: --%s=%s must be a hostPath mount of its own: it outlives the pod", p.owner, flag, dir)
		case deref(v.HostPath.Type, "") != corev1.HostPathDirectoryOrCreate:
			r.add("%s: hostPath %s should have type DirectoryOrCreate: a fresh node has none", p.owner, v.HostPath.Path)
		}
	}
}

// checkMountPropagation: the node plugin's --kubelet-dir mount is Bidirectional, so the
// staging and publish mounts reach the kubelet; no other mount propagates.
func checkMountPropagation(in *inputs, r *report) {
	for _, p := range in.m.pods(r) {
		kubeletDir, _ := flagValue(p.plugin.Args, "kubelet-dir")
		for _, c := range p.spec.Containers {
			for _, vm := range c.VolumeMounts {
				prop := deref(vm.MountPropagation, corev1.MountPropagationNone)
				switch isKubelet := c.Name == pluginName && vm.MountPath == kubeletDir; {
				case isKubelet && prop != corev1.MountPropagationBidirectional:
					r.add("%s: the plugin's kubelet dir %s has propagation %s, want Bidirectional, or its mounts never reach the kubelet", p.owner, vm.MountPath, prop)
				case !isKubelet && prop != corev1.MountPropagationNone:
					r.add("%s container %s mounts %s with propagation %s; only the node plugin's kubelet dir propagates", p.owner, c.Name, vm.MountPath, prop)
				}
			}
		}
	}
}

// checkSSHSecret: --rds-key-file and --rds-known-hosts are files the Secret volume projects;
// the key is readable by the plugin and nobody else (Secret files are root's with group
// fsGroup, so a non-root plugin needs fsGroup and a group-readable mode).
func checkSSHSecret(in *inputs, r *report) {
	p, err := in.m.controller()
	if !r.must(err) {
		return
	}
	for _, flag := range []string{"rds-key-file", "rds-known-hosts"} {
		file, _ := flagValue(p.plugin.Args, flag)
		vm, rel, _ := mountFor(p.plugin, file)
		v := p.volume(vm.Name)
		if v == nil || v.Secret == nil {
			r.add("--%s=%s is not inside the Secret volume's mount", flag, file)
			continue
		}
		if len(v.Secret.Items) > 0 && !slices.ContainsFunc(v.Secret.Items, func(it corev1.KeyToPath) bool { return it.Path == rel }) {
			r.add("--%s=%s names %s, which Secret volume %s does not project", flag, file, rel, v.Name)
		}
		if flag != "rds-key-file" {
			continue
		}
		mode := deref(v.Secret.DefaultMode, 0o644)
		uid, fsGroup := int64(-1), false // unset: the image's non-root USER
		if sc := p.spec.SecurityContext; sc != nil {
			uid, fsGroup = deref(sc.RunAsUser, uid), sc.FSGroup != nil
		}
		if sc := p.plugin.SecurityContext; sc != nil {
			uid = deref(sc.RunAsUser, uid)
		}
		if mode&0o007 != 0 {
			r.add("Secret volume %s: defaultMode %#o must give others no access to the SSH key", v.Name, mode)
		}
		if !(uid == 0 && mode&0o400 != 0 || fsGroup && mode&0o040 != 0) {
			r.add("the controller plugin (uid %d, fsGroup set: %v) cannot read its SSH key of mode %#o, owned by root with group fsGroup", uid, fsGroup, mode)
		}
	}
}

// checkNQNPrefix: the node's --managed-nqn-prefix, as shipped or set by an overlay, passes
// the driver's own rule (nvme.ValidatePrefix).
func checkNQNPrefix(in *inputs, r *report) {
	if p, err := in.m.node(); r.must(err) {
		args, _ := expandArgs(in.m, p.plugin)
		prefix, _ := flagValue(args, "managed-nqn-prefix")
		if err := nvme.ValidatePrefix(prefix); err != nil {
			r.add("%s: --managed-nqn-prefix: %v", p.owner, err)
		}
	}
}

var releaseTag = regexp.MustCompile(`^v\d+\.\d+\.\d+$`)

// checkImages: every sidecar is pinned to a release tag and runs the image its container
// is named for; controller and node run one rds-csi build.
func checkImages(in *inputs, r *report) {
	ours := map[string]bool{}
	for _, p := range in.m.pods(r) {
		for _, c := range p.spec.Containers {
			repo, tag, _ := strings.Cut(c.Image, ":")
			switch {
			case c.Name == pluginName:
				ours[c.Image] = true
			case !releaseTag.MatchString(tag):
				r.add("%s container %s: image %s is not pinned to a release tag vX.Y.Z", p.owner, c.Name, c.Image)
			case !strings.HasSuffix(path.Base(repo), c.Name):
				r.add("%s container %s runs %s", p.owner, c.Name, c.Image)
			}
		}
	}
	if len(ours) != 1 {
		r.add("the controller and node plugins must run the same rds-csi image, found %v", slices.Sorted(maps.Keys(ours)))
	}
}

// checkStorageClasses: every parameter is one the controller accepts (volume_options.go's
// param constants, or controller.go's reserved prefix); volumePath lies under the
// controller's --rds-volume-path; every fstype (a class's, the provisioner's default) is
// one the driver formats (capability.go's fs constants).
func checkStorageClasses(in *inputs, r *report) {
	params, err1 := goStringConsts(in.files["volume_options.go"], "param")
	reserved, err2 := goStringConsts(in.files["controller.go"], "reservedParamPrefix")
	fsTypes, err3 := goStringConsts(in.files["capability.go"], "fs")
	p, err4 := in.m.controller()
	if !r.must(errors.Join(err1, err2, err3, err4)) {
		return
	}
	known, prefix, pool := slices.Sorted(maps.Values(params)), reserved["reservedParamPrefix"], ""
	var fstypes []string
	for _, c := range p.spec.Containers {
		args, _ := expandArgs(in.m, &c)
		if v, ok := flagValue(args, "rds-volume-path"); ok {
			pool = path.Clean(v)
		}
		if v, ok := flagValue(args, "default-fstype"); ok {
			fstypes = append(fstypes, "csi-provisioner --default-fstype "+v)
		}
	}
	for _, sc := range objectsOf[*storagev1.StorageClass](in.m) {
		for _, k := range slices.Sorted(maps.Keys(sc.Parameters)) {
			if !strings.HasPrefix(k, prefix) && !slices.Contains(known, k) {
				r.add("StorageClass %s: parameter %q is not one the controller accepts (%v)", sc.Name, k, known)
			}
		}
		if fs, ok := sc.Parameters[prefix+"fstype"]; ok {
			fstypes = append(fstypes, "StorageClass "+sc.Name+" fstype "+fs)
		}
		if vp := path.Clean(sc.Parameters[params["paramVolumePath"]]); pool == "" || !strings.HasPrefix(vp+"/", strings.TrimSuffix(pool, "/")+"/") {
			r.add("StorageClass %s: volumePath %q must lie under the controller's --rds-volume-path %q", sc.Name, vp, pool)
		}
	}
	for _, f := range fstypes {
		if !slices.Contains(slices.Collect(maps.Values(fsTypes)), f[strings.LastIndex(f, " ")+1:]) {
			r.add("%s: the driver formats only %v", f, slices.Sorted(maps.Values(fsTypes)))
		}
	}
}

func checkNoKeyMaterial(in *inputs, r *report) {
	for _, needle := range []string{"PRIVATE KEY", "ssh-ed25519 AAAA", "ssh-rsa AAAA", "ecdsa-sha2-nistp256 AAAA", "kind: Secret"} {
		if strings.Contains(in.files["deploy.yaml"], needle) {
			r.add("deploy.yaml contains %q", needle)
		}
	}
}

var (
	createSecretLine = regexp.MustCompile(`(?m)^#\s+kubectl create secret generic (\S+) -n (\S+)((?: --from-file=[^=\s]+=\S+)+)\s*$`)
	fromFileKey      = regexp.MustCompile(`--from-file=([^=\s]+)=`)
)

// checkSecretDocumented: the header's kubectl line creates the Secret the controller
// mounts, in its namespace, with exactly the keys its volume projects.
func checkSecretDocumented(in *inputs, r *report) {
	line := createSecretLine.FindStringSubmatch(in.files["deploy.yaml"])
	p, err := in.m.controller()
	if !r.must(err) || line == nil {
		r.add("deploy.yaml's header lacks `kubectl create secret generic <name> -n <namespace> --from-file=<key>=…`")
		return
	}
	var keys []string
	for _, f := range fromFileKey.FindAllStringSubmatch(line[3], -1) {
		keys = append(keys, f[1])
	}
	slices.Sort(keys)
	for _, v := range p.spec.Volumes {
		if v.Secret == nil {
			continue
		}
		var items []string
		for _, it := range v.Secret.Items {
			items = append(items, it.Key)
		}
		if slices.Sort(items); v.Secret.SecretName != line[1] || line[2] != namespace || !slices.Equal(items, keys) {
			r.add("the documented kubectl line creates Secret %s/%s with keys %v; the controller mounts %s/%s with keys %v", line[2], line[1], keys, namespace, v.Secret.SecretName, items)
		}
	}
}

var requiredSetting = regexp.MustCompile(`(?m)^  # REQUIRED:[^\n]*\n(?:  #[^\n]*\n)*  ([\w-]+): ([^\n]*)$`)

// checkRequiredEmpty: the settings marked REQUIRED ship empty, so an unedited install fails
// at start naming them.
func checkRequiredEmpty(in *inputs, r *report) {
	settings := requiredSetting.FindAllStringSubmatch(in.files["deploy.yaml"], -1)
	if len(settings) == 0 {
		r.add("deploy.yaml marks no setting `# REQUIRED:`")
	}
	for _, s := range settings {
		if s[2] != `""` {
			r.add("%s is REQUIRED and should ship empty (\"\"), has %s: there is no default that could be right", s[1], s[2])
		}
	}
}

func deref[T any](p *T, otherwise T) T {
	if p == nil {
		return otherwise
	}
	return *p
}
