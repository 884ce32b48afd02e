package deploy

import (
	"fmt"
	"net"
	"path"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"srvlab.io/rds-csi/nvme"
)

// report collects the problems one check finds, so a check reports all of them at once and
// the mutation tests can look for the one they expect.
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

// checks are every cross-reference rule for deploy.yaml. TestManifestChecks runs them on the
// real manifest; TestChecksCatchMistakes proves each can fail.
var checks = []struct {
	name string
	fn   func(m *manifest, r *report)
}{
	{"service accounts exist and are used", checkServiceAccounts},
	{"bindings refer to objects that exist", checkBindings},
	{"controller account may do what its containers do", checkControllerRBAC},
	{"node account has no rights and no token", checkNodeAccount},
	{"volume mounts refer to volumes", checkVolumeMounts},
	{"ConfigMap keys exist and are used", checkConfigMapKeys},
	{"ConfigMap defaults are valid", checkConfigDefaults},
	{"SSH Secret is referenced, not shipped", checkSSHSecret},
	{"no key material", checkNoKeyMaterial},
	{"CSI socket paths agree", checkSocketPaths},
	{"probes and ports match", checkProbesAndPorts},
	{"driver name agrees everywhere", checkDriverName},
	{"CSIDriver claims only what the deployment does", checkCSIDriver},
	{"grace periods cover the shutdown bound", checkGracePeriods},
	{"Bidirectional propagation only on the node plugin's kubelet dir", checkMountPropagation},
	{"node DaemonSet", checkNodeDaemonSet},
	{"node plugin's host paths", checkNodeHostPaths},
	{"controller Deployment", checkControllerDeployment},
	{"images and resources", checkImagesAndResources},
	{"storage and snapshot classes", checkClasses},
}

func TestManifestChecks(t *testing.T) {
	m := load(t)
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			r := &report{}
			c.fn(m, r)
			for _, p := range r.problems {
				t.Error(p)
			}
		})
	}
}

func checkServiceAccounts(m *manifest, r *report) {
	used := map[string]bool{}
	for _, p := range m.pods() {
		sa := p.spec.ServiceAccountName
		if sa == "" {
			r.add("%s sets no serviceAccountName: it would run as the namespace's default account", p.owner)
			continue
		}
		key := namespace + "/" + sa
		if _, ok := m.serviceAccounts[key]; !ok {
			r.add("%s uses ServiceAccount %q, which deploy.yaml does not create", p.owner, key)
		}
		used[key] = true
	}
	for key := range m.serviceAccounts {
		if !used[key] {
			r.add("ServiceAccount %s is created but no pod uses it", key)
		}
	}
}

// bindingRef is one (Cluster)RoleBinding, flattened.
type bindingRef struct {
	what     string // e.g. "ClusterRoleBinding rds-csi-controller"
	bindNS   string // "" for a ClusterRoleBinding
	roleRef  rbacv1.RoleRef
	subjects []rbacv1.Subject
}

func (m *manifest) bindings() []bindingRef {
	var out []bindingRef
	for _, b := range m.crBindings {
		out = append(out, bindingRef{"ClusterRoleBinding " + b.Name, "", b.RoleRef, b.Subjects})
	}
	for _, b := range m.roleBindings {
		out = append(out, bindingRef{"RoleBinding " + b.Namespace + "/" + b.Name, b.Namespace, b.RoleRef, b.Subjects})
	}
	return out
}

func checkBindings(m *manifest, r *report) {
	boundCluster, boundNS := map[string]bool{}, map[string]bool{}
	for _, b := range m.bindings() {
		if b.roleRef.APIGroup != rbacv1.GroupName {
			r.add("%s: roleRef.apiGroup %q, want %q", b.what, b.roleRef.APIGroup, rbacv1.GroupName)
		}
		switch b.roleRef.Kind {
		case "ClusterRole":
			if _, ok := m.clusterRoles[b.roleRef.Name]; !ok {
				r.add("%s refers to ClusterRole %q, which deploy.yaml does not create", b.what, b.roleRef.Name)
			}
			boundCluster[b.roleRef.Name] = true
		case "Role":
			if b.bindNS == "" {
				r.add("%s: a ClusterRoleBinding cannot refer to a Role", b.what)
				continue
			}
			if _, ok := m.roles[b.bindNS+"/"+b.roleRef.Name]; !ok {
				r.add("%s refers to Role %s/%s, which deploy.yaml does not create", b.what, b.bindNS, b.roleRef.Name)
			}
			boundNS[b.bindNS+"/"+b.roleRef.Name] = true
		default:
			r.add("%s: roleRef.kind %q is neither ClusterRole nor Role", b.what, b.roleRef.Kind)
		}
		if len(b.subjects) == 0 {
			r.add("%s binds nobody", b.what)
		}
		for _, s := range b.subjects {
			if s.Kind != rbacv1.ServiceAccountKind {
				r.add("%s binds %s %q: this manifest grants rights only to its own service accounts", b.what, s.Kind, s.Name)
				continue
			}
			if _, ok := m.serviceAccounts[s.Namespace+"/"+s.Name]; !ok {
				r.add("%s binds ServiceAccount %s/%s, which deploy.yaml does not create", b.what, s.Namespace, s.Name)
			}
		}
	}
	for name := range m.clusterRoles {
		if !boundCluster[name] {
			r.add("ClusterRole %s is created but never bound", name)
		}
	}
	for key := range m.roles {
		if !boundNS[key] {
			r.add("Role %s is created but never bound", key)
		}
	}
}

// permissions are the rules granted to one service account, by namespace ("" = cluster-wide).
type permissions map[string][]rbacv1.PolicyRule

func (m *manifest) permissionsOf(saNamespace, saName string) permissions {
	out := permissions{}
	for _, b := range m.bindings() {
		if !slices.ContainsFunc(b.subjects, func(s rbacv1.Subject) bool {
			return s.Kind == rbacv1.ServiceAccountKind && s.Namespace == saNamespace && s.Name == saName
		}) {
			continue
		}
		var rules []rbacv1.PolicyRule
		if b.roleRef.Kind == "ClusterRole" {
			if role, ok := m.clusterRoles[b.roleRef.Name]; ok {
				rules = role.Rules
			}
		} else if role, ok := m.roles[b.bindNS+"/"+b.roleRef.Name]; ok {
			rules = role.Rules
		}
		out[b.bindNS] = append(out[b.bindNS], rules...)
	}
	return out
}

// allows reports whether the rules let the account do verb on group/resource in namespace
// ns ("" asks for a cluster-wide grant; a namespaced question is also answered by one).
func (p permissions) allows(ns, group, resource, verb string) bool {
	match := func(list []string, want string) bool {
		return slices.Contains(list, want) || slices.Contains(list, "*")
	}
	check := func(rules []rbacv1.PolicyRule) bool {
		for _, rule := range rules {
			if match(rule.APIGroups, group) && match(rule.Resources, resource) && match(rule.Verbs, verb) {
				return true
			}
		}
		return false
	}
	return check(p[""]) || (ns != "" && check(p[ns]))
}

// controllerNeeds is what each container of the controller pod does with the API
// (upstream sidecar RBAC, plus our plugin's VolumeAttachment reads).
var controllerNeeds = []struct {
	who, ns, group, resource string
	verbs                    []string
}{
	{"rds-csi (fencing records from VolumeAttachments)", "", "storage.k8s.io", "volumeattachments", []string{"get", "list", "watch"}},
	{"csi-provisioner", "", "", "persistentvolumes", []string{"get", "list", "watch", "create", "patch", "delete"}},
	{"csi-provisioner", "", "", "persistentvolumeclaims", []string{"get", "list", "watch", "update"}},
	{"csi-provisioner", "", "storage.k8s.io", "storageclasses", []string{"get", "list", "watch"}},
	{"csi-provisioner", "", "storage.k8s.io", "csinodes", []string{"get", "list", "watch"}},
	{"csi-provisioner", "", "", "nodes", []string{"get", "list", "watch"}},
	{"csi-provisioner", "", "", "events", []string{"create", "patch"}},
	{"csi-provisioner (restore from snapshot)", "", "snapshot.storage.k8s.io", "volumesnapshots", []string{"get", "list", "watch", "update"}},
	{"csi-provisioner (restore from snapshot)", "", "snapshot.storage.k8s.io", "volumesnapshotcontents", []string{"get", "list"}},
	{"csi-provisioner (detach before delete)", "", "storage.k8s.io", "volumeattachments", []string{"get", "list", "watch"}},
	{"csi-provisioner", "", "storage.k8s.io", "volumeattributesclasses", []string{"get"}},
	{"csi-attacher", "", "storage.k8s.io", "volumeattachments", []string{"get", "list", "watch", "patch"}},
	{"csi-attacher", "", "storage.k8s.io", "volumeattachments/status", []string{"patch"}},
	{"csi-attacher", "", "", "persistentvolumes", []string{"patch"}},
	{"csi-resizer", "", "", "persistentvolumeclaims/status", []string{"patch"}},
	{"csi-resizer", "", "", "pods", []string{"get", "list", "watch"}},
	{"csi-snapshotter", "", "snapshot.storage.k8s.io", "volumesnapshotclasses", []string{"get", "list", "watch"}},
	{"csi-snapshotter", "", "snapshot.storage.k8s.io", "volumesnapshotcontents", []string{"create", "get", "list", "watch", "update", "delete", "patch"}},
	{"csi-snapshotter", "", "snapshot.storage.k8s.io", "volumesnapshotcontents/status", []string{"update", "patch"}},
	{"sidecar leader election", namespace, "coordination.k8s.io", "leases", []string{"get", "watch", "list", "create", "update", "delete"}},
}

func checkControllerRBAC(m *manifest, r *report) {
	p, err := m.controllerPod()
	if !r.must(err) {
		return
	}
	perms := m.permissionsOf(namespace, p.spec.ServiceAccountName)
	for _, n := range controllerNeeds {
		for _, verb := range n.verbs {
			if !perms.allows(n.ns, n.group, n.resource, verb) {
				res := n.resource
				if n.group != "" {
					res += "." + n.group
				}
				r.add("%s needs %q on %s, but the controller's ServiceAccount is not granted it", n.who, verb, res)
			}
		}
	}
	// Nothing here needs secrets; the driver must not be able to read the cluster's.
	if perms.allows(namespace, "", "secrets", "get") || perms.allows(namespace, "", "secrets", "list") {
		r.add("the controller's ServiceAccount may read secrets: no container here needs that")
	}
}

func checkNodeAccount(m *manifest, r *report) {
	p, err := m.nodePod()
	if !r.must(err) {
		return
	}
	sa := m.serviceAccounts[namespace+"/"+p.spec.ServiceAccountName]
	if sa == nil {
		r.add("node ServiceAccount %q is missing", p.spec.ServiceAccountName)
		return
	}
	if len(m.permissionsOf(namespace, sa.Name)) > 0 {
		r.add("ServiceAccount %s is bound to roles; the node plugin and registrar never call the API", sa.Name)
	}
	if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
		r.add("ServiceAccount %s should set automountServiceAccountToken: false", sa.Name)
	}
	if p.spec.AutomountServiceAccountToken == nil || *p.spec.AutomountServiceAccountToken {
		r.add("%s should set automountServiceAccountToken: false: a token on every node is a credential nobody uses", p.owner)
	}
}

func checkVolumeMounts(m *manifest, r *report) {
	for _, p := range m.pods() {
		used := map[string]bool{}
		for _, c := range append(slices.Clone(p.spec.InitContainers), p.spec.Containers...) {
			paths := map[string]bool{}
			for _, vm := range c.VolumeMounts {
				if _, ok := volumeNamed(p, vm.Name); !ok {
					r.add("%s container %s mounts volume %q, which the pod does not define", p.owner, c.Name, vm.Name)
				}
				if paths[vm.MountPath] {
					r.add("%s container %s mounts two volumes at %s", p.owner, c.Name, vm.MountPath)
				}
				paths[vm.MountPath] = true
				used[vm.Name] = true
			}
		}
		for _, v := range p.spec.Volumes {
			if !used[v.Name] {
				r.add("%s defines volume %q but no container mounts it", p.owner, v.Name)
			}
		}
	}
}

func checkConfigMapKeys(m *manifest, r *report) {
	used := map[string]bool{} // namespace/name/key
	for _, p := range m.pods() {
		for _, c := range p.spec.Containers {
			if len(c.EnvFrom) > 0 {
				r.add("%s container %s uses envFrom: name each variable so its ConfigMap key is checked", p.owner, c.Name)
			}
			for _, e := range c.Env {
				if e.ValueFrom == nil {
					continue
				}
				if ref := e.ValueFrom.ConfigMapKeyRef; ref != nil {
					cm, ok := m.configMaps[namespace+"/"+ref.Name]
					switch {
					case !ok:
						r.add("%s container %s env %s reads ConfigMap %q, which deploy.yaml does not create", p.owner, c.Name, e.Name, ref.Name)
					case !hasKey(cm.Data, ref.Key) && (ref.Optional == nil || !*ref.Optional):
						r.add("%s container %s env %s reads key %q of ConfigMap %s, which has keys %v", p.owner, c.Name, e.Name, ref.Key, ref.Name, sortedKeys(cm.Data))
					}
					used[namespace+"/"+ref.Name+"/"+ref.Key] = true
				}
				if ref := e.ValueFrom.SecretKeyRef; ref != nil {
					r.add("%s container %s env %s reads Secret %q into the environment; mount secrets as files", p.owner, c.Name, e.Name, ref.Name)
				}
			}
		}
	}
	for key, cm := range m.configMaps {
		for k := range cm.Data {
			if !used[key+"/"+k] {
				r.add("ConfigMap %s key %q is read by no container: a setting that does nothing misleads", key, k)
			}
		}
	}
}

// checkConfigDefaults holds the shipped settings to the driver's own rules, so the defaults
// a user keeps start a working node plugin.
func checkConfigDefaults(m *manifest, r *report) {
	cm, ok := m.configMaps[namespace+"/rds-csi-config"]
	if !ok {
		r.add("no ConfigMap rds-csi-config")
		return
	}
	if err := nvme.ValidatePrefix(cm.Data["managed-nqn-prefix"]); err != nil {
		r.add("rds-csi-config managed-nqn-prefix: %v", err)
	}
	if vp := cm.Data["rds-volume-path"]; !path.IsAbs(vp) || path.Clean(vp) != vp {
		r.add("rds-csi-config rds-volume-path %q must be a clean absolute path", vp)
	}
	// The two values only the user knows ship empty, so an unedited install fails at start
	// with a message naming them instead of dialling a made-up address.
	for _, key := range []string{"rds-address", "rds-user"} {
		if v, ok := cm.Data[key]; !ok || v != "" {
			r.add("rds-csi-config %s should ship empty (%q) and marked REQUIRED: there is no default that could be right", key, v)
		}
	}
}

// secretKeys are the keys of the SSH Secret the user creates; the header's kubectl line,
// the volume items and the flags must agree on them.
var secretKeys = []string{"id_ed25519", "known_hosts"}

var (
	createSecretLine = regexp.MustCompile(`(?m)^#\s+kubectl create secret generic (\S+) -n (\S+)((?: --from-file=[^=\s]+=\S+)+)\s*$`)
	fromFileKey      = regexp.MustCompile(`--from-file=([^=\s]+)=`)
)

func checkSSHSecret(m *manifest, r *report) {
	match := createSecretLine.FindStringSubmatch(m.raw)
	if match == nil {
		r.add("deploy.yaml's comments lack the line `kubectl create secret generic rds-csi-ssh -n rds-csi --from-file=id_ed25519=… --from-file=known_hosts=…`")
		return
	}
	secretName, secretNS := match[1], match[2]
	if secretNS != namespace {
		r.add("the documented kubectl line creates the Secret in %q, the pods run in %q", secretNS, namespace)
	}
	var documented []string
	for _, f := range fromFileKey.FindAllStringSubmatch(match[3], -1) {
		documented = append(documented, f[1])
	}
	sort.Strings(documented)
	if !slices.Equal(documented, secretKeys) {
		r.add("the documented kubectl line creates keys %v, want %v", documented, secretKeys)
	}

	p, c, err := m.controllerPlugin()
	if !r.must(err) {
		return
	}
	var secretVol *corev1.Volume
	for i, v := range p.spec.Volumes {
		if v.Secret != nil {
			if secretVol != nil {
				r.add("%s mounts more than one Secret", p.owner)
			}
			secretVol = &p.spec.Volumes[i]
		}
	}
	if secretVol == nil {
		r.add("%s mounts no Secret: where would the SSH key come from?", p.owner)
		return
	}
	if secretVol.Secret.SecretName != secretName {
		r.add("%s mounts Secret %q, the documented command creates %q", p.owner, secretVol.Secret.SecretName, secretName)
	}
	var items []string
	itemPath := map[string]string{}
	for _, it := range secretVol.Secret.Items {
		items = append(items, it.Key)
		itemPath[it.Key] = it.Path
	}
	sort.Strings(items)
	if !slices.Equal(items, secretKeys) {
		r.add("Secret volume %s projects keys %v, want exactly %v (listing them turns a missing key into a clear mount error)", secretVol.Name, items, secretKeys)
	}
	if mode := secretVol.Secret.DefaultMode; mode == nil || *mode&0o007 != 0 {
		r.add("Secret volume %s: defaultMode must give others no access to the SSH key", secretVol.Name)
	}
	// The key and known_hosts flags point at the projected files, through a read-only mount.
	for _, f := range []struct{ flag, key string }{{"rds-key-file", "id_ed25519"}, {"rds-known-hosts", "known_hosts"}} {
		path, ok := flagValue(c.Args, f.flag)
		if !ok {
			r.add("%s: the controller plugin does not pass --%s", p.owner, f.flag)
			continue
		}
		vm, rel, ok := mountFor(c, path)
		switch {
		case !ok || vm.Name != secretVol.Name:
			r.add("--%s=%s is not inside the Secret volume's mount", f.flag, path)
		case rel != itemPath[f.key]:
			r.add("--%s=%s resolves to item path %q of the Secret, want %q (key %s)", f.flag, path, rel, itemPath[f.key], f.key)
		case !vm.ReadOnly:
			r.add("the Secret volume is mounted read-write at %s; mount it readOnly", vm.MountPath)
		}
	}
	// Only the controller plugin talks to the RDS: no other container sees the key.
	for _, other := range p.spec.Containers {
		if other.Name == pluginName {
			continue
		}
		for _, vm := range other.VolumeMounts {
			if vm.Name == secretVol.Name {
				r.add("%s container %s mounts the SSH Secret; only the plugin needs it", p.owner, other.Name)
			}
		}
	}
	if np, err := m.nodePod(); err == nil {
		for _, v := range np.spec.Volumes {
			if v.Secret != nil {
				r.add("the node DaemonSet mounts Secret %q: the node plugin never talks to the RDS", v.Secret.SecretName)
			}
		}
	}
}

func checkNoKeyMaterial(m *manifest, r *report) {
	for _, needle := range []string{"PRIVATE KEY", "ssh-ed25519 AAAA", "ssh-rsa AAAA", "ecdsa-sha2-nistp256 AAAA", "kind: Secret"} {
		if strings.Contains(m.raw, needle) {
			r.add("deploy.yaml contains %q: secrets are created by the user, never kept in the repository", needle)
		}
	}
}

// socketAt resolves a container's socket path to the host path (hostPath volumes) or
// "volume NAME:relative" (others), so two containers' views can be compared.
func socketAt(p podTemplate, c *corev1.Container, path string) (string, error) {
	vm, rel, ok := mountFor(c, path)
	if !ok {
		return "", fmt.Errorf("container %s has no volume mounted over %s", c.Name, path)
	}
	if host, ok := hostPathOf(p, c, path); ok {
		return "host:" + host, nil
	}
	return "volume " + vm.Name + ":" + rel, nil
}

// controllerPlugin and nodePlugin return a workload's pod and its rds-csi container.
func (m *manifest) controllerPlugin() (podTemplate, *corev1.Container, error) {
	return withPlugin(m.controllerPod())
}

func (m *manifest) nodePlugin() (podTemplate, *corev1.Container, error) {
	return withPlugin(m.nodePod())
}

func withPlugin(p podTemplate, err error) (podTemplate, *corev1.Container, error) {
	if err != nil {
		return p, nil, err
	}
	c, err := p.container(pluginName)
	return p, c, err
}

func (m *manifest) bothPods(r *report) []podTemplate {
	var out []podTemplate
	if p, err := m.controllerPod(); r.must(err) {
		out = append(out, p)
	}
	if p, err := m.nodePod(); r.must(err) {
		out = append(out, p)
	}
	return out
}

func checkSocketPaths(m *manifest, r *report) {
	for _, p := range m.bothPods(r) {
		plugin, err := p.container(pluginName)
		if !r.must(err) {
			continue
		}
		endpoint, ok := flagValue(plugin.Args, "endpoint")
		if !ok {
			r.add("%s: the plugin does not pass --endpoint", p.owner)
			continue
		}
		sock, found := strings.CutPrefix(endpoint, "unix://")
		if !found {
			r.add("%s: --endpoint=%s is not a unix:// URL", p.owner, endpoint)
			continue
		}
		want, err := socketAt(p, plugin, sock)
		if err != nil {
			r.add("%s: --endpoint: %v", p.owner, err)
			continue
		}
		sidecars := 0
		for i := range p.spec.Containers {
			c := &p.spec.Containers[i]
			addr, ok := flagValue(c.Args, "csi-address")
			if !ok {
				continue
			}
			sidecars++
			got, err := socketAt(p, c, addr)
			if err != nil {
				r.add("%s container %s --csi-address: %v", p.owner, c.Name, err)
			} else if got != want {
				r.add("%s container %s --csi-address=%s reaches %s, the plugin listens at %s", p.owner, c.Name, addr, got, want)
			}
		}
		if sidecars != len(p.spec.Containers)-1 {
			r.add("%s: %d of %d sidecars pass --csi-address", p.owner, sidecars, len(p.spec.Containers)-1)
		}
	}

	// The node socket is where the kubelet looks for it, and the registrar says so.
	p, plugin, err := m.nodePlugin()
	if !r.must(err) {
		return
	}
	endpoint, _ := flagValue(plugin.Args, "endpoint")
	if host, ok := hostPathOf(p, plugin, strings.TrimPrefix(endpoint, "unix://")); !ok || host != kubeletSocket {
		r.add("the node plugin's socket is at host path %q, the kubelet expects %s", host, kubeletSocket)
	}
	reg, err := p.container("node-driver-registrar")
	if !r.must(err) {
		return
	}
	if got, _ := flagValue(reg.Args, "kubelet-registration-path"); got != kubeletSocket {
		r.add("node-driver-registrar --kubelet-registration-path=%s, want %s", got, kubeletSocket)
	}
	if reg.LivenessProbe == nil || reg.LivenessProbe.Exec == nil {
		r.add("node-driver-registrar has no kubelet-registration-probe liveness check")
	} else if got, _ := flagValue(reg.LivenessProbe.Exec.Command, "kubelet-registration-path"); got != kubeletSocket {
		r.add("node-driver-registrar's liveness probe checks %q, want %s", got, kubeletSocket)
	}
	if dir, ok := hostPathOf(p, reg, "/registration"); !ok || dir != "/var/lib/kubelet/plugins_registry" {
		r.add("node-driver-registrar's /registration is host path %q, want /var/lib/kubelet/plugins_registry", dir)
	}
}

// portOf parses the port of a listen address such as ":9809".
func portOf(addr string) (int, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(port)
}

// resolvePort turns a probe's port into a number the way the kubelet does: a name resolves
// within the probing container; a number must be a port some container of the pod declares.
func resolvePort(p podTemplate, c *corev1.Container, port intstr.IntOrString) (int, error) {
	if port.Type == intstr.String {
		for _, cp := range c.Ports {
			if cp.Name == port.StrVal {
				return int(cp.ContainerPort), nil
			}
		}
		return 0, fmt.Errorf("named port %q is not a port of container %s", port.StrVal, c.Name)
	}
	for _, other := range p.spec.Containers {
		for _, cp := range other.Ports {
			if int(cp.ContainerPort) == port.IntValue() {
				return port.IntValue(), nil
			}
		}
	}
	return 0, fmt.Errorf("port %d is declared by no container of the pod", port.IntValue())
}

// listenPort is the port a container listens on by its --flag=address, which it must also
// declare as a containerPort (the plugin's --metrics-address defaults to :9809, so it must
// be passed for the declaration to be checkable).
func listenPort(p podTemplate, c *corev1.Container, flag string) (int, error) {
	addr, ok := flagValue(c.Args, flag)
	if !ok {
		return 0, fmt.Errorf("%s container %s does not pass --%s", p.owner, c.Name, flag)
	}
	port, err := portOf(addr)
	if err != nil {
		return 0, fmt.Errorf("%s container %s --%s=%s: %v", p.owner, c.Name, flag, addr, err)
	}
	if !slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool { return int(cp.ContainerPort) == port }) {
		return 0, fmt.Errorf("%s container %s listens on %d (--%s) but declares no such containerPort", p.owner, c.Name, port, flag)
	}
	return port, nil
}

func checkProbesAndPorts(m *manifest, r *report) {
	for _, p := range m.bothPods(r) {
		seen := map[int32]string{}
		for _, c := range p.spec.Containers {
			for _, cp := range c.Ports {
				if prev, dup := seen[cp.ContainerPort]; dup {
					r.add("%s: port %d is declared by both %s and %s", p.owner, cp.ContainerPort, prev, c.Name)
				}
				seen[cp.ContainerPort] = c.Name
			}
			// Every HTTP probe in the pod hits a declared port.
			for kind, pr := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe} {
				if pr != nil && pr.HTTPGet != nil {
					if _, err := resolvePort(p, &c, pr.HTTPGet.Port); err != nil {
						r.add("%s container %s %s probe: %v", p.owner, c.Name, kind, err)
					}
				}
			}
		}

		plugin, err := p.container(pluginName)
		if !r.must(err) {
			continue
		}
		sidecar, err := p.container("livenessprobe")
		if !r.must(err) {
			continue
		}
		metricsPort, err := listenPort(p, plugin, "metrics-address")
		if !r.must(err) {
			continue
		}
		probePort, err := listenPort(p, sidecar, "http-endpoint")
		if !r.must(err) {
			continue
		}

		// Liveness: our own /healthz, which does not depend on the RDS. Readiness: the
		// livenessprobe sidecar, which calls CSI Probe (not ready while the RDS is away).
		for _, ck := range []struct {
			kind     string
			probe    *corev1.Probe
			wantPort int
			why      string
		}{
			{"liveness", plugin.LivenessProbe, metricsPort, "liveness must not depend on the RDS (CSI Probe does), or an RDS outage restart-loops the plugin"},
			{"readiness", plugin.ReadinessProbe, probePort, "readiness goes through CSI Probe, so an RDS outage shows as not ready"},
		} {
			if ck.probe == nil || ck.probe.HTTPGet == nil {
				r.add("%s: the plugin has no HTTP %s probe", p.owner, ck.kind)
				continue
			}
			port, err := resolvePort(p, plugin, ck.probe.HTTPGet.Port)
			if err != nil {
				continue // reported above
			}
			if port != ck.wantPort || ck.probe.HTTPGet.Path != "/healthz" {
				r.add("%s: plugin %s probe GETs %s on port %d, want /healthz on %d: %s", p.owner, ck.kind, ck.probe.HTTPGet.Path, port, ck.wantPort, ck.why)
			}
		}
		if rp := plugin.ReadinessProbe; rp != nil {
			// livenessprobe's default --probe-timeout is 1s, the kubelet's probe timeout too.
			probeTimeout, kubeletTimeout := time.Second, time.Second
			if v, ok := flagValue(sidecar.Args, "probe-timeout"); ok {
				if probeTimeout, err = time.ParseDuration(v); err != nil {
					r.add("%s: livenessprobe --probe-timeout=%s: %v", p.owner, v, err)
				}
			}
			if rp.TimeoutSeconds > 0 {
				kubeletTimeout = time.Duration(rp.TimeoutSeconds) * time.Second
			}
			if kubeletTimeout <= probeTimeout {
				r.add("%s: readiness timeout %v must exceed livenessprobe --probe-timeout=%v, or a slow Probe reads as no answer", p.owner, kubeletTimeout, probeTimeout)
			}
		}
	}
}

func checkDriverName(m *manifest, r *report) {
	if len(m.csiDrivers) != 1 || m.csiDrivers[0].Name != driverName {
		r.add("want one CSIDriver named %s", driverName)
	}
	for _, sc := range m.storageClasses {
		if sc.Provisioner != driverName {
			r.add("StorageClass %s: provisioner %q, want %s", sc.Name, sc.Provisioner, driverName)
		}
	}
	for _, vsc := range m.snapshotClasses {
		if vsc.Driver != driverName {
			r.add("VolumeSnapshotClass %s: driver %q, want %s", vsc.Name, vsc.Driver, driverName)
		}
	}
	for _, p := range m.pods() {
		for _, c := range p.spec.Containers {
			if v, ok := flagValue(c.Args, "driver-name"); ok && v != driverName {
				r.add("%s container %s passes --driver-name=%s, want %s (or nothing: it is the default)", p.owner, c.Name, v, driverName)
			}
		}
	}
}

func hasContainer(p podTemplate, name string) bool {
	_, err := p.container(name)
	return err == nil
}

func checkCSIDriver(m *manifest, r *report) {
	if len(m.csiDrivers) != 1 {
		r.add("want one CSIDriver, found %d", len(m.csiDrivers))
		return
	}
	spec := m.csiDrivers[0].Spec
	p, err := m.controllerPod()
	if !r.must(err) {
		return
	}
	if spec.AttachRequired == nil || !*spec.AttachRequired {
		r.add("CSIDriver attachRequired must be true: ControllerPublish does the fencing")
	} else if !hasContainer(p, "csi-attacher") {
		r.add("CSIDriver attachRequired is true but the controller runs no csi-attacher: every attach would hang")
	}
	capacity := spec.StorageCapacity != nil && *spec.StorageCapacity
	publishes := false
	if prov, err := p.container("csi-provisioner"); err == nil {
		_, publishes = flagValue(prov.Args, "enable-capacity")
	}
	if capacity != publishes {
		r.add("CSIDriver storageCapacity=%v but csi-provisioner publishes capacity=%v: the manifest must claim only what it does", capacity, publishes)
	}
	if spec.PodInfoOnMount == nil || *spec.PodInfoOnMount {
		r.add("CSIDriver podInfoOnMount must be false")
	}
	if spec.FSGroupPolicy == nil || *spec.FSGroupPolicy != storagev1.FileFSGroupPolicy {
		r.add("CSIDriver fsGroupPolicy must be File")
	}
	if !slices.Equal(spec.VolumeLifecycleModes, []storagev1.VolumeLifecycleMode{storagev1.VolumeLifecyclePersistent}) {
		r.add("CSIDriver volumeLifecycleModes = %v, want [Persistent]", spec.VolumeLifecycleModes)
	}
	for _, sidecar := range []string{"csi-provisioner", "csi-attacher", "csi-resizer", "csi-snapshotter"} {
		c, err := p.container(sidecar)
		if !r.must(err) {
			continue
		}
		if _, ok := flagValue(c.Args, "leader-election"); !ok {
			r.add("%s runs without --leader-election: a second controller pod during a node partition would act twice", sidecar)
		}
	}
}

// shutdownTimeout is the plugin's --shutdown-timeout, or the binary's default.
func shutdownTimeout(c *corev1.Container) (time.Duration, error) {
	v, ok := flagValue(c.Args, "shutdown-timeout")
	if !ok {
		return 30 * time.Second, nil
	}
	return time.ParseDuration(v)
}

func checkGracePeriods(m *manifest, r *report) {
	for _, p := range m.bothPods(r) {
		plugin, err := p.container(pluginName)
		if !r.must(err) {
			continue
		}
		bound, err := shutdownTimeout(plugin)
		if err != nil {
			r.add("%s: --shutdown-timeout: %v", p.owner, err)
			continue
		}
		grace := 30 * time.Second // the Kubernetes default
		if p.spec.TerminationGracePeriodSeconds != nil {
			grace = time.Duration(*p.spec.TerminationGracePeriodSeconds) * time.Second
		}
		if grace < 2*bound {
			r.add("%s: terminationGracePeriodSeconds is %v, less than twice the %v shutdown bound: in-flight RPCs would be SIGKILLed", p.owner, grace, bound)
		}
	}
	if p, err := m.nodePod(); err == nil {
		if g := p.spec.TerminationGracePeriodSeconds; g == nil || *g < 60 {
			r.add("%s: terminationGracePeriodSeconds must be at least 60", p.owner)
		}
	}
}

func checkMountPropagation(m *manifest, r *report) {
	found := 0
	for _, p := range m.pods() {
		for _, c := range p.spec.Containers {
			for _, vm := range c.VolumeMounts {
				if vm.MountPropagation == nil || *vm.MountPropagation == corev1.MountPropagationNone {
					continue
				}
				isNodePlugin := strings.HasPrefix(p.owner, "DaemonSet ") && c.Name == pluginName
				host, _ := hostPathOf(p, &c, vm.MountPath)
				switch {
				case *vm.MountPropagation != corev1.MountPropagationBidirectional:
					r.add("%s container %s mount %s: propagation %s; only the node plugin's kubelet dir propagates, and Bidirectionally", p.owner, c.Name, vm.MountPath, *vm.MountPropagation)
				case !isNodePlugin:
					r.add("%s container %s mounts %s Bidirectional: only the node plugin mounts volumes", p.owner, c.Name, vm.MountPath)
				case vm.MountPath != "/var/lib/kubelet" || host != "/var/lib/kubelet":
					r.add("%s: Bidirectional propagation on %s (host %q); want it on the kubelet dir /var/lib/kubelet only", p.owner, vm.MountPath, host)
				case c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged:
					r.add("%s container %s: Bidirectional propagation needs a privileged container", p.owner, c.Name)
				default:
					found++
				}
			}
		}
	}
	if found != 1 {
		r.add("want exactly one Bidirectional mount (node plugin, /var/lib/kubelet), found %d valid ones", found)
	}
}

func checkNodeDaemonSet(m *manifest, r *report) {
	p, err := m.nodePod()
	if !r.must(err) {
		return
	}
	spec := p.spec
	if !spec.HostNetwork {
		r.add("%s: hostNetwork must be true: the kernel creates NVMe/TCP sockets in the namespace of the process writing /dev/nvme-fabrics, so in a pod network every connection would die with the pod", p.owner)
	}
	if spec.PriorityClassName != "system-node-critical" {
		r.add("%s: priorityClassName %q, want system-node-critical", p.owner, spec.PriorityClassName)
	}
	if !slices.ContainsFunc(spec.Tolerations, func(t corev1.Toleration) bool {
		return t.Key == "" && t.Operator == corev1.TolerationOpExists && t.Effect == ""
	}) {
		r.add("%s: needs a toleration {operator: Exists} to run on every node, tainted ones included", p.owner)
	}
	plugin, err := p.container(pluginName)
	if !r.must(err) {
		return
	}
	if mode, _ := flagValue(plugin.Args, "mode"); mode != "node" {
		r.add("%s: plugin --mode=%q, want node", p.owner, mode)
	}
	sc := plugin.SecurityContext
	if sc == nil || sc.Privileged == nil || !*sc.Privileged {
		r.add("%s: the node plugin must be privileged (fabrics, sysfs, mknod, mount)", p.owner)
	}
	if sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != 0 {
		r.add("%s: the node plugin must set runAsUser: 0 (the image defaults to 65532)", p.owner)
	}
	nodeID, ok := flagValue(plugin.Args, "node-id")
	if !ok {
		r.add("%s: the plugin does not pass --node-id", p.owner)
	} else if name, ok := strings.CutPrefix(nodeID, "$("); !ok {
		r.add("%s: --node-id=%s must come from the pod's spec.nodeName", p.owner, nodeID)
	} else if e := envNamed(plugin, strings.TrimSuffix(name, ")")); e == nil || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		r.add("%s: --node-id=%s must expand an env var set from fieldRef spec.nodeName", p.owner, nodeID)
	}
	if _, ok := flagValue(plugin.Args, "managed-nqn-prefix"); !ok {
		r.add("%s: the plugin does not pass --managed-nqn-prefix", p.owner)
	}
}

func envNamed(c *corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

// nodeHostPaths are the host paths the node plugin works in: each is mounted at the same
// path in the container and its flag names it.
var nodeHostPaths = []struct {
	path, flag string
	hostType   corev1.HostPathType
}{
	{"/dev", "dev-root", corev1.HostPathDirectory},
	{"/sys", "sysfs-root", corev1.HostPathDirectory},
	{"/etc/nvme", "nvme-host-dir", corev1.HostPathDirectoryOrCreate},
	{"/var/lib/rds-csi", "state-dir", corev1.HostPathDirectoryOrCreate},
	{"/var/lib/kubelet", "", corev1.HostPathDirectory},
}

func checkNodeHostPaths(m *manifest, r *report) {
	p, plugin, err := m.nodePlugin()
	if !r.must(err) {
		return
	}
	for _, hp := range nodeHostPaths {
		vm, rel, ok := mountFor(plugin, hp.path)
		if !ok || rel != "" {
			r.add("%s: the node plugin has no mount at %s", p.owner, hp.path)
			continue
		}
		v, _ := volumeNamed(p, vm.Name)
		if v == nil || v.HostPath == nil || v.HostPath.Path != hp.path {
			r.add("%s: %s in the plugin must be the host's %s (hostPath), so the plugin sees the host's view", p.owner, hp.path, hp.path)
			continue
		}
		if v.HostPath.Type == nil || *v.HostPath.Type != hp.hostType {
			r.add("%s: hostPath %s should have type %s", p.owner, hp.path, hp.hostType)
		}
		if hp.flag != "" {
			if got, ok := flagValue(plugin.Args, hp.flag); !ok || got != hp.path {
				r.add("%s: the plugin should pass --%s=%s (the mount), has %q", p.owner, hp.flag, hp.path, got)
			}
		}
	}
}

func checkControllerDeployment(m *manifest, r *report) {
	if len(m.deployments) != 1 {
		r.add("want exactly one Deployment, found %d", len(m.deployments))
		return
	}
	d := m.deployments[0]
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 {
		r.add("Deployment %s: replicas must be 1", d.Name)
	}
	if d.Spec.Strategy.Type != "Recreate" {
		r.add("Deployment %s: strategy %q, want Recreate (two controllers must never run at once)", d.Name, d.Spec.Strategy.Type)
	}
	p, _ := m.controllerPod()
	spec := p.spec
	if spec.HostNetwork {
		r.add("%s: the controller needs no host network", p.owner)
	}
	if spec.PriorityClassName != "system-cluster-critical" {
		r.add("%s: priorityClassName %q, want system-cluster-critical", p.owner, spec.PriorityClassName)
	}
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		r.add("%s: the pod must run as non-root (runAsNonRoot and a non-zero runAsUser): the controller only needs SSH", p.owner)
	}
	for _, c := range spec.Containers {
		sc := c.SecurityContext
		if sc != nil && sc.RunAsUser != nil && *sc.RunAsUser == 0 {
			r.add("%s container %s runs as root", p.owner, c.Name)
		}
		if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			r.add("%s container %s: readOnlyRootFilesystem must be true", p.owner, c.Name)
		}
		if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			r.add("%s container %s: allowPrivilegeEscalation must be false", p.owner, c.Name)
		}
		if sc == nil || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			r.add("%s container %s: must drop ALL capabilities", p.owner, c.Name)
		}
		if sc != nil && sc.Privileged != nil && *sc.Privileged {
			r.add("%s container %s is privileged", p.owner, c.Name)
		}
	}
	plugin, err := p.container(pluginName)
	if !r.must(err) {
		return
	}
	if mode, _ := flagValue(plugin.Args, "mode"); mode != "controller" {
		r.add("%s: plugin --mode=%q, want controller", p.owner, mode)
	}
	prov, err := p.container("csi-provisioner")
	if !r.must(err) {
		return
	}
	for _, want := range []string{"--extra-create-metadata", "--timeout=120s", "--feature-gates=Topology=false", "--leader-election"} {
		if !slices.Contains(prov.Args, want) {
			r.add("%s: csi-provisioner lacks %s", p.owner, want)
		}
	}
	if _, ok := flagValue(prov.Args, "retry-interval-max"); !ok {
		r.add("%s: csi-provisioner lacks --retry-interval-max", p.owner)
	}
}

// sidecarImages are the sidecars each pod must run, by container name.
var sidecarImages = map[string]map[string]string{
	"controller": {
		"csi-provisioner": "csi-provisioner", "csi-attacher": "csi-attacher", "csi-resizer": "csi-resizer",
		"csi-snapshotter": "csi-snapshotter", "livenessprobe": "livenessprobe",
	},
	"node": {"node-driver-registrar": "csi-node-driver-registrar", "livenessprobe": "livenessprobe"},
}

var releaseTag = regexp.MustCompile(`^v\d+\.\d+\.\d+$`)

func checkImagesAndResources(m *manifest, r *report) {
	pods := map[string]podTemplate{}
	if p, err := m.controllerPod(); r.must(err) {
		pods["controller"] = p
	}
	if p, err := m.nodePod(); r.must(err) {
		pods["node"] = p
	}
	ourImages := map[string]bool{}
	for role, p := range pods {
		want := sidecarImages[role]
		if len(p.spec.Containers) != len(want)+1 {
			r.add("%s runs %d containers, want the plugin and %d sidecars", p.owner, len(p.spec.Containers), len(want))
		}
		for _, c := range p.spec.Containers {
			repo, tag, _ := strings.Cut(c.Image, ":")
			if c.Name == pluginName {
				ourImages[c.Image] = true
			} else if img, ok := want[c.Name]; !ok {
				r.add("%s runs an unexpected container %s", p.owner, c.Name)
			} else if repo != "registry.k8s.io/sig-storage/"+img {
				r.add("%s container %s: image %s, want registry.k8s.io/sig-storage/%s", p.owner, c.Name, c.Image, img)
			}
			if !releaseTag.MatchString(tag) && c.Name != pluginName {
				r.add("%s container %s: image %s is not pinned to a release tag vX.Y.Z", p.owner, c.Name, c.Image)
			}
			if tag == "" || tag == "latest" {
				r.add("%s container %s: image %s must name a version", p.owner, c.Name, c.Image)
			}
			res := c.Resources
			if res.Requests.Cpu().IsZero() || res.Requests.Memory().IsZero() {
				r.add("%s container %s: set cpu and memory requests", p.owner, c.Name)
			}
			if res.Limits.Memory().IsZero() {
				r.add("%s container %s: set a memory limit", p.owner, c.Name)
			}
		}
	}
	if len(ourImages) != 1 {
		r.add("the controller and node plugins must run the same rds-csi image, found %v", sortedSet(ourImages))
	}
	for img := range ourImages {
		if repo, _, _ := strings.Cut(img, ":"); repo != defaultImageRepo(r) {
			r.add("rds-csi image %s is not from %s, the repository `make image` tags", img, defaultImageRepo(r))
		}
	}
	// The plugin's idle footprint target is 20 MiB (controller) / 15 MiB (node): requests
	// that claim much more would waste a node's memory on every node.
	for role, p := range pods {
		if c, err := p.container(pluginName); err == nil {
			if req := c.Resources.Requests.Memory().Value(); req > 32<<20 {
				r.add("%s plugin (%s) requests %d MiB; the idle target is 20 MiB or less", p.owner, role, req>>20)
			}
		}
	}
}

func sortedSet(s map[string]bool) []string {
	out := make([]string, 0, len(s))
	for k := range s {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// storageClassParameters are the StorageClass parameters the controller accepts (plus the
// provisioner's csi.storage.k8s.io/ keys); anything else fails every CreateVolume.
var storageClassParameters = []string{
	"volumePath", "nvmeAddress", "nvmePort", "ctrlLossTmo", "reconnectDelay", "keepAliveTmo",
	"fastIoFailTmo", "nrIoQueues", "queueSize", "migrationTimeoutSeconds",
}

// underPath reports whether p lies under base by whole path components.
func underPath(p, base string) bool {
	p, base = path.Clean(p), path.Clean(base)
	return p == base || strings.HasPrefix(p, strings.TrimSuffix(base, "/")+"/")
}

func checkClasses(m *manifest, r *report) {
	pool := ""
	if cm, ok := m.configMaps[namespace+"/rds-csi-config"]; ok {
		pool = cm.Data["rds-volume-path"]
	}
	want := map[string]bool{"rds-nvme": false, "rds-nvme-block": false}
	for _, sc := range m.storageClasses {
		if _, ok := want[sc.Name]; !ok {
			r.add("unexpected StorageClass %s", sc.Name)
			continue
		}
		want[sc.Name] = true
		if sc.ReclaimPolicy == nil || *sc.ReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
			r.add("StorageClass %s: reclaimPolicy must be Delete", sc.Name)
		}
		if sc.AllowVolumeExpansion == nil || !*sc.AllowVolumeExpansion {
			r.add("StorageClass %s: allowVolumeExpansion must be true", sc.Name)
		}
		if sc.VolumeBindingMode == nil {
			r.add("StorageClass %s: say volumeBindingMode explicitly (the choice is justified in a comment)", sc.Name)
		}
		for k := range sc.Parameters {
			if !strings.HasPrefix(k, "csi.storage.k8s.io/") && !slices.Contains(storageClassParameters, k) {
				r.add("StorageClass %s: parameter %q is not one the controller accepts (%v)", sc.Name, k, storageClassParameters)
			}
		}
		vp, ok := sc.Parameters["volumePath"]
		if !ok || pool == "" || !underPath(vp, pool) {
			r.add("StorageClass %s: volumePath %q must lie under rds-volume-path %q of rds-csi-config", sc.Name, vp, pool)
		}
	}
	for name, found := range want {
		if !found {
			r.add("no StorageClass %s", name)
		}
	}
	for _, sc := range m.storageClasses {
		if sc.Name == "rds-nvme" && sc.Parameters["csi.storage.k8s.io/fstype"] != "ext4" {
			r.add("StorageClass rds-nvme: csi.storage.k8s.io/fstype must be ext4")
		}
	}
	if len(m.snapshotClasses) != 1 || m.snapshotClasses[0].Name != "rds-nvme-snapshot" {
		r.add("want one VolumeSnapshotClass rds-nvme-snapshot")
	} else if m.snapshotClasses[0].DeletionPolicy != "Delete" {
		r.add("VolumeSnapshotClass rds-nvme-snapshot: deletionPolicy %q, want Delete", m.snapshotClasses[0].DeletionPolicy)
	}
}

func hasKey(m map[string]string, k string) bool { _, ok := m[k]; return ok }

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
