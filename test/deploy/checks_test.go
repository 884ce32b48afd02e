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
	"k8s.io/apimachinery/pkg/util/intstr"

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
		return false
	}
	return true
}

// check is one rule over the inputs.
type check struct {
	name string
	fn   func(in *inputs, r *report)
	// shippedOnly: the rule is about the shipped deploy.yaml itself (its comments, its
	// empty REQUIRED values), not about an overlay's rendering of it.
	shippedOnly bool
}

// manifestChecks hold for deploy.yaml and for every rendering of it (the example overlay's).
var manifestChecks = []check{
	{"deploy.yaml decodes strictly", checkDecodes, false},
	{"references resolve", checkReferences, false},
	{"controller RBAC covers its containers", checkControllerRBAC, false},
	{"node pods carry no API token", checkNodeToken, false},
	{"CSI sockets meet", checkSockets, false},
	{"probes and ports", checkProbes, false},
	{"one driver name", checkDriverName, false},
	{"CSIDriver matches the controller", checkCSIDriver, false},
	{"one controller acts at a time", checkSingleController, false},
	{"grace periods cover the shutdown bound", checkGracePeriods, false},
	{"node plugin pod", checkNodePlugin, false},
	{"node plugin host paths", checkNodeHostPaths, false},
	{"mount propagation", checkMountPropagation, false},
	{"SSH Secret reaches the controller", checkSSHSecret, false},
	{"managed NQN prefix is valid", checkNQNPrefix, false},
	{"images", checkImages, false},
	{"StorageClasses", checkStorageClasses, false},
	{"plugin flags exist in the binary", checkPluginFlags, false},
	{"no key material", checkNoKeyMaterial, false},
	{"Secret is documented as the volume wants it", checkSecretDocumented, true},
	{"REQUIRED settings ship empty", checkRequiredEmpty, true},
	{"header lists the sidecar versions", checkSidecarList, true},
}

// repoChecks tie deploy.yaml to the files that build, ship and wrap it.
var repoChecks = []check{
	{"one image repository", checkImageRepository, false},
	{"Dockerfile builds what make image builds", checkDockerfileBuild, false},
	{"Dockerfile matches cmd/rds-image", checkDockerfileMatchesImageTool, false},
	{"release workflow", checkReleaseWorkflow, false},
	{"root kustomization renders deploy.yaml", checkRootKustomization, false},
	{"example overlay", checkExampleOverlay, false},
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

// checkReferences: what a pod names exists (its ServiceAccount, the volume of each mount,
// each ConfigMap key its env reads; a missing one keeps the pod from starting), and every
// ConfigMap key is read by a container: users are told to edit them, and a key nothing
// reads is a setting that silently does nothing.
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
// upstream sidecars' RBAC, and our plugin's VolumeAttachment reads.
var controllerNeeds = []struct {
	who        string
	namespaced bool // a grant in rds-csi suffices
	group      string
	resource   string
	verbs      []string
}{
	{"rds-csi (fencing records from VolumeAttachments)", false, "storage.k8s.io", "volumeattachments", []string{"get", "list", "watch"}},
	{"csi-provisioner", false, "", "persistentvolumes", []string{"get", "list", "watch", "create", "patch", "delete"}},
	{"csi-provisioner", false, "", "persistentvolumeclaims", []string{"get", "list", "watch", "update"}},
	{"csi-provisioner", false, "storage.k8s.io", "storageclasses", []string{"get", "list", "watch"}},
	{"csi-provisioner", false, "storage.k8s.io", "csinodes", []string{"get", "list", "watch"}},
	{"csi-provisioner", false, "", "nodes", []string{"get", "list", "watch"}},
	{"csi-provisioner", false, "", "events", []string{"create", "patch"}},
	{"csi-provisioner (restore from snapshot)", false, "snapshot.storage.k8s.io", "volumesnapshots", []string{"get", "list", "watch", "update"}},
	{"csi-provisioner (restore from snapshot)", false, "snapshot.storage.k8s.io", "volumesnapshotcontents", []string{"get", "list"}},
	{"csi-provisioner (detach before delete)", false, "storage.k8s.io", "volumeattachments", []string{"get", "list", "watch"}},
	{"csi-provisioner", false, "storage.k8s.io", "volumeattributesclasses", []string{"get"}},
	{"csi-attacher", false, "storage.k8s.io", "volumeattachments", []string{"get", "list", "watch", "patch"}},
	{"csi-attacher", false, "storage.k8s.io", "volumeattachments/status", []string{"patch"}},
	{"csi-attacher", false, "", "persistentvolumes", []string{"patch"}},
	{"csi-resizer", false, "", "persistentvolumeclaims/status", []string{"patch"}},
	{"csi-resizer", false, "", "pods", []string{"get", "list", "watch"}},
	{"csi-snapshotter", false, "snapshot.storage.k8s.io", "volumesnapshotclasses", []string{"get", "list", "watch"}},
	{"csi-snapshotter", false, "snapshot.storage.k8s.io", "volumesnapshotcontents", []string{"create", "get", "list", "watch", "update", "delete", "patch"}},
	{"csi-snapshotter", false, "snapshot.storage.k8s.io", "volumesnapshotcontents/status", []string{"update", "patch"}},
	{"sidecar leader election", true, "coordination.k8s.io", "leases", []string{"get", "watch", "list", "create", "update", "delete"}},
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

func allows(rules []rbacv1.PolicyRule, group, resource, verb string) bool {
	has := func(list []string, want string) bool {
		return slices.Contains(list, want) || slices.Contains(list, "*")
	}
	return slices.ContainsFunc(rules, func(rule rbacv1.PolicyRule) bool {
		return has(rule.APIGroups, group) && has(rule.Resources, resource) && has(rule.Verbs, verb)
	})
}

// checkControllerRBAC: the controller's ServiceAccount (which all its containers share) may
// do what each container does, through bindings that resolve, and may not read secrets:
// nothing here needs the cluster's.
func checkControllerRBAC(in *inputs, r *report) {
	p, err := in.m.controller()
	if !r.must(err) {
		return
	}
	cluster, inNS := grants(in.m, p.spec.ServiceAccountName)
	for _, n := range controllerNeeds {
		for _, verb := range n.verbs {
			if !allows(cluster, n.group, n.resource, verb) && !(n.namespaced && allows(inNS, n.group, n.resource, verb)) {
				r.add("%s needs %q on %s.%s, but the controller's ServiceAccount is not granted it", n.who, verb, n.resource, n.group)
			}
		}
	}
	if allows(append(cluster, inNS...), "", "secrets", "get") || allows(append(cluster, inNS...), "", "secrets", "list") {
		r.add("the controller's ServiceAccount may read secrets: no container here needs that")
	}
}

// checkNodeToken: the node plugin and the registrar never call the Kubernetes API, so the
// node pods (one on every node) mount no token: a credential nobody uses.
func checkNodeToken(in *inputs, r *report) {
	if p, err := in.m.node(); r.must(err) {
		if a := p.spec.AutomountServiceAccountToken; a == nil || *a {
			r.add("%s should set automountServiceAccountToken: false", p.owner)
		}
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
// on the node it lies where the kubelet looks for a driver of this name
// (<--kubelet-dir>/plugins/<driver>/csi.sock on the host), which the registrar announces and
// its liveness probe checks, and the registrar writes into the kubelet's plugins_registry.
func checkSockets(in *inputs, r *report) {
	for _, p := range in.m.pods(r) {
		plugin, err := p.container(pluginName)
		if !r.must(err) {
			continue
		}
		endpoint, _ := flagValue(plugin.Args, "endpoint")
		want := socketAt(p, plugin, strings.TrimPrefix(endpoint, "unix://"))
		for _, c := range p.spec.Containers {
			if addr, ok := flagValue(c.Args, "csi-address"); ok {
				if got := socketAt(p, &c, addr); got != want {
					r.add("%s container %s: --csi-address=%s reaches %s, the plugin listens at %s", p.owner, c.Name, addr, got, want)
				}
			}
		}
	}
	p, err := in.m.node()
	if !r.must(err) {
		return
	}
	plugin, err1 := p.container(pluginName)
	reg, err2 := p.container("node-driver-registrar")
	if !r.must(errors.Join(err1, err2)) {
		return
	}
	kubeletDir, _ := flagValue(plugin.Args, "kubelet-dir")
	sock := path.Join(kubeletDir, "plugins", driverName(in, r), "csi.sock")
	endpoint, _ := flagValue(plugin.Args, "endpoint")
	if got := socketAt(p, plugin, strings.TrimPrefix(endpoint, "unix://")); got != "host "+sock {
		r.add("the node plugin's socket is at %s; the kubelet looks for host %s", got, sock)
	}
	announced := [][]string{reg.Args}
	if reg.LivenessProbe != nil && reg.LivenessProbe.Exec != nil {
		announced = append(announced, reg.LivenessProbe.Exec.Command)
	}
	for _, args := range announced {
		if got, _ := flagValue(args, "kubelet-registration-path"); got != sock {
			r.add("node-driver-registrar --kubelet-registration-path=%s, want %s", got, sock)
		}
	}
	if len(announced) == 1 {
		r.add("node-driver-registrar has no kubelet-registration-probe liveness check")
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

// probePort resolves a probe's port the way the kubelet does (a name within the container).
func probePort(c *corev1.Container, port intstr.IntOrString) int {
	if port.Type == intstr.String {
		for _, cp := range c.Ports {
			if cp.Name == port.StrVal {
				return int(cp.ContainerPort)
			}
		}
		return 0
	}
	return port.IntValue()
}

// checkProbes: the plugin's liveness is its own /healthz (metrics port), which does not ask
// the RDS, so an RDS outage never restart-loops it; readiness is the livenessprobe sidecar's
// /healthz, which calls CSI Probe, so the outage shows as not ready; each listen flag has
// its containerPort; and the kubelet waits longer than livenessprobe waits for Probe.
func checkProbes(in *inputs, r *report) {
	for _, p := range in.m.pods(r) {
		plugin, err1 := p.container(pluginName)
		sidecar, err2 := p.container("livenessprobe")
		if !r.must(errors.Join(err1, err2)) {
			continue
		}
		metrics, err1 := listenPort(plugin, "metrics-address")
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
			{"liveness", plugin.LivenessProbe, metrics, "liveness must not depend on the RDS, or an RDS outage restart-loops the plugin"},
			{"readiness", plugin.ReadinessProbe, healthz, "readiness goes through CSI Probe, so an RDS outage shows as not ready"},
		} {
			if want.probe == nil || want.probe.HTTPGet == nil {
				r.add("%s: the plugin has no HTTP %s probe", p.owner, want.kind)
			} else if got := probePort(plugin, want.probe.HTTPGet.Port); got != want.port || want.probe.HTTPGet.Path != "/healthz" {
				r.add("%s: plugin %s probe GETs %s on port %d, want /healthz on %d: %s", p.owner, want.kind, want.probe.HTTPGet.Path, got, want.port, want.why)
			}
		}
		// Both default to one second: livenessprobe's --probe-timeout, the probe's timeoutSeconds.
		probeTimeout, kubeletTimeout := time.Second, time.Second
		if v, ok := flagValue(sidecar.Args, "probe-timeout"); ok {
			probeTimeout, _ = time.ParseDuration(v)
		}
		if rp := plugin.ReadinessProbe; rp != nil && rp.TimeoutSeconds > 0 {
			kubeletTimeout = time.Duration(rp.TimeoutSeconds) * time.Second
		}
		if kubeletTimeout <= probeTimeout {
			r.add("%s: readiness timeout %v must exceed livenessprobe --probe-timeout=%v, or a slow Probe reads as no answer", p.owner, kubeletTimeout, probeTimeout)
		}
	}
}

// checkDriverName: the CSIDriver, every StorageClass's provisioner and every
// VolumeSnapshotClass's driver are the name the binary registers (config.go's default), or
// PVCs of the class wait forever for a provisioner that never comes.
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
	for _, p := range in.m.pods(r) {
		if c, err := p.container(pluginName); err == nil {
			if v, ok := flagValue(c.Args, "driver-name"); ok {
				names = append(names, p.owner+" --driver-name "+v)
			}
		}
	}
	for _, n := range names {
		if !strings.HasSuffix(n, " "+name) {
			r.add("%s, but the driver registers as %s", n, name)
		}
	}
	if !slices.ContainsFunc(names, func(n string) bool { return strings.HasPrefix(n, "CSIDriver ") }) {
		r.add("no CSIDriver %s", name)
	}
}

// checkCSIDriver: attach is required, as ControllerPublish does the fencing (and then the
// controller must run csi-attacher, or every attach hangs); storageCapacity is claimed only
// if csi-provisioner publishes capacity, or the scheduler waits for objects that never come.
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
	if _, err := p.container("csi-attacher"); spec.AttachRequired == nil || !*spec.AttachRequired || err != nil {
		r.add("CSIDriver attachRequired must be true, and the controller must run csi-attacher: ControllerPublish does the fencing")
	}
	claims := spec.StorageCapacity != nil && *spec.StorageCapacity
	publishes := false
	if prov, err := p.container("csi-provisioner"); err == nil {
		_, publishes = flagValue(prov.Args, "enable-capacity")
	}
	if claims != publishes {
		r.add("CSIDriver storageCapacity=%v but csi-provisioner publishes capacity=%v: the manifest must claim only what it does", claims, publishes)
	}
}

// checkSingleController: two controllers must never act at once (fencing records, volume
// creation): one replica, Recreate (the old pod is gone before the new one starts), and
// every API-acting sidecar elects a leader, for a replacement started while an unreachable
// node still runs the old pod.
func checkSingleController(in *inputs, r *report) {
	p, err := in.m.controller()
	if !r.must(err) {
		return
	}
	d := objectsOf[*appsv1.Deployment](in.m)[0]
	if d.Spec.Replicas != nil && *d.Spec.Replicas != 1 {
		r.add("Deployment %s: replicas %d, want 1", d.Name, *d.Spec.Replicas)
	}
	if d.Spec.Strategy.Type != "Recreate" {
		r.add("Deployment %s: strategy %q, want Recreate", d.Name, d.Spec.Strategy.Type)
	}
	for _, c := range p.spec.Containers {
		if _, ok := flagValue(c.Args, "leader-election"); !ok && c.Name != pluginName && c.Name != "livenessprobe" {
			r.add("%s runs without --leader-election: a second controller pod during a node partition would act twice", c.Name)
		}
	}
}

// checkGracePeriods: each pod's grace period is at least twice its plugin's
// --shutdown-timeout, so in-flight RPCs get their bound and the socket is removed before
// SIGKILL.
func checkGracePeriods(in *inputs, r *report) {
	for _, p := range in.m.pods(r) {
		plugin, err := p.container(pluginName)
		if !r.must(err) {
			continue
		}
		v, _ := flagValue(plugin.Args, "shutdown-timeout")
		bound, err := time.ParseDuration(v)
		if err != nil {
			r.add("%s: pass a valid --shutdown-timeout, so the grace period can be held to it (%v)", p.owner, err)
			continue
		}
		grace := 30 * time.Second // the Kubernetes default
		if g := p.spec.TerminationGracePeriodSeconds; g != nil {
			grace = time.Duration(*g) * time.Second
		}
		if grace < 2*bound {
			r.add("%s: terminationGracePeriodSeconds is %v, less than twice the %v shutdown bound: in-flight RPCs would be SIGKILLed", p.owner, grace, bound)
		}
	}
}

// checkNodePlugin: what the node plugin needs of its pod. hostNetwork: the kernel creates an
// NVMe/TCP socket in the network namespace of the process writing /dev/nvme-fabrics, so in
// a pod network every connection would die with the pod. A toleration of every taint: a
// node without the plugin cannot unstage what it holds. Privileged and root (the image runs
// as non-root): fabrics, sysfs, mknod, mount. --node-id from spec.nodeName: the ID the
// attacher fences by must be the node's own.
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
	plugin, err := p.container(pluginName)
	if !r.must(err) {
		return
	}
	if sc := plugin.SecurityContext; sc == nil || sc.Privileged == nil || !*sc.Privileged || sc.RunAsUser == nil || *sc.RunAsUser != 0 {
		r.add("%s: the node plugin must be privileged and runAsUser 0 (fabrics, sysfs, mknod, mount)", p.owner)
	}
	id, _ := flagValue(plugin.Args, "node-id")
	env := strings.TrimSuffix(strings.TrimPrefix(id, "$("), ")")
	if !slices.ContainsFunc(plugin.Env, func(e corev1.EnvVar) bool {
		return "$("+e.Name+")" == id && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName"
	}) {
		r.add("%s: --node-id=%s must expand an env var (%s) set from fieldRef spec.nodeName", p.owner, id, env)
	}
}

// checkNodeHostPaths: every path flag of either plugin lies on a mounted volume (not the
// image's read-only root, not lost with the container); the node plugin sees the kubelet's
// dir at the host's own path (the kubelet hands it host paths to stage and publish at); and
// the directories the node owns (--state-dir, --nvme-host-dir) are hostPaths of their own,
// created on a fresh node that has neither.
func checkNodeHostPaths(in *inputs, r *report) {
	for _, p := range in.m.pods(r) {
		if plugin, err := p.container(pluginName); r.must(err) {
			for _, a := range plugin.Args {
				name, val, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
				if _, _, ok := mountFor(plugin, val); strings.HasPrefix(val, "/") && !ok {
					r.add("%s: --%s=%s is on no mounted volume", p.owner, name, val)
				}
			}
		}
	}
	p, err := in.m.node()
	if !r.must(err) {
		return
	}
	plugin, err := p.container(pluginName)
	if !r.must(err) {
		return
	}
	kubeletDir, _ := flagValue(plugin.Args, "kubelet-dir")
	if host, _ := hostPathOf(p, plugin, kubeletDir); host != kubeletDir {
		r.add("%s: --kubelet-dir=%s is host path %q; the kubelet hands the plugin host paths, so mount its dir at the same path", p.owner, kubeletDir, host)
	}
	for _, flag := range []string{"state-dir", "nvme-host-dir"} {
		dir, _ := flagValue(plugin.Args, flag)
		vm, rel, _ := mountFor(plugin, dir)
		v := p.volume(vm.Name)
		switch {
		case rel != "" || v == nil || v.HostPath == nil:
			r.add("%s: --%s=%s must be a hostPath mount of its own: it outlives the pod", p.owner, flag, dir)
		case v.HostPath.Type == nil || *v.HostPath.Type != corev1.HostPathDirectoryOrCreate:
			r.add("%s: hostPath %s should have type DirectoryOrCreate: a fresh node has none", p.owner, v.HostPath.Path)
		}
	}
}

// checkMountPropagation: the mounts the node plugin makes (staging and publish targets) must
// reach the host, where the kubelet and the pods see them, so its --kubelet-dir mount is
// Bidirectional; no other mount propagates (one elsewhere would leak a container's mounts
// onto the host).
func checkMountPropagation(in *inputs, r *report) {
	node, err := in.m.node()
	if !r.must(err) {
		return
	}
	for _, p := range in.m.pods(r) {
		for _, c := range p.spec.Containers {
			kubeletDir, _ := flagValue(c.Args, "kubelet-dir")
			for _, vm := range c.VolumeMounts {
				prop := corev1.MountPropagationNone
				if vm.MountPropagation != nil {
					prop = *vm.MountPropagation
				}
				isKubelet := p.owner == node.owner && c.Name == pluginName && vm.MountPath == kubeletDir
				switch {
				case isKubelet && prop != corev1.MountPropagationBidirectional:
					r.add("%s: the plugin's kubelet dir %s has propagation %s, want Bidirectional, or its mounts never reach the kubelet", p.owner, vm.MountPath, prop)
				case !isKubelet && prop != corev1.MountPropagationNone:
					r.add("%s container %s mounts %s with propagation %s; only the node plugin's kubelet dir propagates", p.owner, c.Name, vm.MountPath, prop)
				}
			}
		}
	}
}

// checkSSHSecret: the controller's --rds-key-file and --rds-known-hosts are files its Secret
// volume projects, and the key is readable by the plugin's user and by nobody else. Secret
// files belong to root with group fsGroup, so a non-root plugin needs fsGroup and a
// group-readable mode.
func checkSSHSecret(in *inputs, r *report) {
	p, err := in.m.controller()
	if !r.must(err) {
		return
	}
	plugin, err := p.container(pluginName)
	if !r.must(err) {
		return
	}
	for _, flag := range []string{"rds-key-file", "rds-known-hosts"} {
		file, _ := flagValue(plugin.Args, flag)
		vm, rel, _ := mountFor(plugin, file)
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
		mode := int32(0o644) // the Kubernetes default
		if v.Secret.DefaultMode != nil {
			mode = *v.Secret.DefaultMode
		}
		uid, fsGroup := int64(-1), false // unset: the image's non-root USER
		if sc := p.spec.SecurityContext; sc != nil {
			uid, fsGroup = deref(sc.RunAsUser, uid), sc.FSGroup != nil
		}
		if sc := plugin.SecurityContext; sc != nil {
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

// checkNQNPrefix: the node plugin's --managed-nqn-prefix, as deploy.yaml (or an overlay)
// sets it, passes the driver's own rule: a prefix that claims foreign NQNs would let the
// node disconnect subsystems it does not own.
func checkNQNPrefix(in *inputs, r *report) {
	if p, err := in.m.node(); r.must(err) {
		if plugin, err := p.container(pluginName); r.must(err) {
			args, _ := expandArgs(in.m, plugin)
			prefix, _ := flagValue(args, "managed-nqn-prefix")
			if err := nvme.ValidatePrefix(prefix); err != nil {
				r.add("%s: --managed-nqn-prefix: %v", p.owner, err)
			}
		}
	}
}

var releaseTag = regexp.MustCompile(`^v\d+\.\d+\.\d+$`)

// checkImages: every sidecar is pinned to a release tag (a floating tag changes under a
// running cluster) and runs the image its container is named for (a copied block keeps its
// old image); controller and node run one rds-csi build.
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
// param constants, or the provisioner's own reserved prefix from controller_params.go), or
// every CreateVolume of the class fails; volumePath lies under the controller's
// --rds-volume-path; the filesystem (a class's fstype, the provisioner's --default-fstype)
// is one the driver formats (capability.go's fs constants).
func checkStorageClasses(in *inputs, r *report) {
	params, err1 := goStringConsts(in.files["volume_options.go"], "param")
	reserved, err2 := goStringConsts(in.files["controller_params.go"], "reservedParamPrefix")
	fsTypes, err3 := goStringConsts(in.files["capability.go"], "fs")
	p, err4 := in.m.controller()
	if !r.must(errors.Join(err1, err2, err3, err4)) {
		return
	}
	known := slices.Sorted(maps.Values(params))
	var pool string
	fstypes := []string{}
	for _, c := range p.spec.Containers {
		args, _ := expandArgs(in.m, &c)
		if v, ok := flagValue(args, "rds-volume-path"); ok {
			pool = v
		}
		if v, ok := flagValue(args, "default-fstype"); ok {
			fstypes = append(fstypes, "csi-provisioner --default-fstype "+v)
		}
	}
	for _, sc := range objectsOf[*storagev1.StorageClass](in.m) {
		for _, k := range slices.Sorted(maps.Keys(sc.Parameters)) {
			if !strings.HasPrefix(k, reserved["reservedParamPrefix"]) && !slices.Contains(known, k) {
				r.add("StorageClass %s: parameter %q is not one the controller accepts (%v)", sc.Name, k, known)
			}
		}
		if fs, ok := sc.Parameters[reserved["reservedParamPrefix"]+"fstype"]; ok {
			fstypes = append(fstypes, "StorageClass "+sc.Name+" fstype "+fs)
		}
		vp := path.Clean(sc.Parameters[params["paramVolumePath"]])
		if pool == "" || !strings.HasPrefix(vp+"/", strings.TrimSuffix(path.Clean(pool), "/")+"/") {
			r.add("StorageClass %s: volumePath %q must lie under the controller's --rds-volume-path %q", sc.Name, vp, pool)
		}
	}
	for _, f := range fstypes {
		if fs := f[strings.LastIndex(f, " ")+1:]; !slices.Contains(slices.Collect(maps.Values(fsTypes)), fs) {
			r.add("%s: the driver formats only %v", f, slices.Sorted(maps.Values(fsTypes)))
		}
	}
}

// checkNoKeyMaterial: secrets are created by the user, never kept in the repository.
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

// checkSecretDocumented: the kubectl line in deploy.yaml's header creates the Secret the
// controller mounts, in its namespace, with exactly the keys its volume projects.
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
		slices.Sort(items)
		if v.Secret.SecretName != line[1] || line[2] != namespace || !slices.Equal(items, keys) {
			r.add("the documented kubectl line creates Secret %s/%s with keys %v; the controller mounts %s/%s with keys %v", line[2], line[1], keys, namespace, v.Secret.SecretName, items)
		}
	}
}

var requiredSetting = regexp.MustCompile(`(?m)^  # REQUIRED:[^\n]*\n(?:  #[^\n]*\n)*  ([\w-]+): ([^\n]*)$`)

// checkRequiredEmpty: the settings deploy.yaml marks REQUIRED ship empty, so an unedited
// install fails at start naming them instead of dialling a made-up address.
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

// checkSidecarList: the header's list of sidecar versions (with the reasons for each) names
// the versions the pods run, so a version bump cannot leave the reasons behind.
func checkSidecarList(in *inputs, r *report) {
	for _, p := range in.m.pods(r) {
		for _, c := range p.spec.Containers {
			repo, tag, _ := strings.Cut(c.Image, ":")
			name := path.Base(repo)
			if c.Name != pluginName && !regexp.MustCompile(`(?m)^#\s+`+regexp.QuoteMeta(name)+`\s+`+regexp.QuoteMeta(tag)+`\b`).MatchString(in.files["deploy.yaml"]) {
				r.add("deploy.yaml's header does not list %s %s among the sidecars", name, tag)
			}
		}
	}
}

func deref[T any](p *T, otherwise T) T {
	if p == nil {
		return otherwise
	}
	return *p
}
