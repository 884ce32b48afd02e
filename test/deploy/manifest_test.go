// Package deploy checks deploy.yaml and the container image recipe: every object decodes
// strictly into its Kubernetes API type, and the objects agree with each other and with the
// rds-csi binary (names, ports, socket paths, keys, flags). Test-only: the Kubernetes API
// modules it imports never reach the driver binary.
package deploy

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsjson "sigs.k8s.io/json"
	sigsyaml "sigs.k8s.io/yaml"
)

const (
	driverName    = "rds.csi.srvlab.io"
	namespace     = "rds-csi"
	pluginName    = "rds-csi" // the container running our binary, in both pods
	manifestPath  = "../../deploy.yaml"
	repoRoot      = "../.."
	kubeletSocket = "/var/lib/kubelet/plugins/" + driverName + "/csi.sock"
)

// volumeSnapshotClass mirrors snapshot.storage.k8s.io/v1 VolumeSnapshotClass (external-
// snapshotter's client module is not worth a dependency for four fields).
type volumeSnapshotClass struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Driver            string            `json:"driver"`
	Parameters        map[string]string `json:"parameters,omitempty"`
	DeletionPolicy    string            `json:"deletionPolicy"`
}

// kindTypes maps apiVersion/kind to a fresh typed object. A kind missing here fails the
// strict decode: adding an object kind to deploy.yaml means teaching this test about it.
var kindTypes = map[string]func() any{
	"v1/Namespace":      func() any { return &corev1.Namespace{} },
	"v1/ConfigMap":      func() any { return &corev1.ConfigMap{} },
	"v1/ServiceAccount": func() any { return &corev1.ServiceAccount{} },
	"rbac.authorization.k8s.io/v1/ClusterRole":        func() any { return &rbacv1.ClusterRole{} },
	"rbac.authorization.k8s.io/v1/ClusterRoleBinding": func() any { return &rbacv1.ClusterRoleBinding{} },
	"rbac.authorization.k8s.io/v1/Role":               func() any { return &rbacv1.Role{} },
	"rbac.authorization.k8s.io/v1/RoleBinding":        func() any { return &rbacv1.RoleBinding{} },
	"apps/v1/Deployment":                              func() any { return &appsv1.Deployment{} },
	"apps/v1/DaemonSet":                               func() any { return &appsv1.DaemonSet{} },
	"storage.k8s.io/v1/CSIDriver":                     func() any { return &storagev1.CSIDriver{} },
	"storage.k8s.io/v1/StorageClass":                  func() any { return &storagev1.StorageClass{} },
	"snapshot.storage.k8s.io/v1/VolumeSnapshotClass":  func() any { return &volumeSnapshotClass{} },
}

// clusterScoped kinds carry no namespace; every other kind must live in rds-csi.
var clusterScoped = map[string]bool{
	"Namespace": true, "ClusterRole": true, "ClusterRoleBinding": true,
	"CSIDriver": true, "StorageClass": true, "VolumeSnapshotClass": true,
}

// document is one YAML document of the manifest.
type document struct {
	index int    // 1-based
	line  int    // first line of the document in the file
	text  []byte // the document's YAML
}

func (d document) String() string { return fmt.Sprintf("document %d (line %d)", d.index, d.line) }

// object is a decoded document.
type object struct {
	doc  document
	kind string
	meta metav1.Object
	obj  any
}

func (o object) String() string {
	name := o.meta.GetName()
	if ns := o.meta.GetNamespace(); ns != "" {
		name = ns + "/" + name
	}
	return fmt.Sprintf("%s %s (%s)", o.kind, name, o.doc)
}

// podTemplate is a workload's pod spec with the workload's name, for messages.
type podTemplate struct {
	owner string // e.g. "Deployment rds-csi-controller"
	spec  *corev1.PodSpec
}

// manifest is deploy.yaml, decoded and indexed.
type manifest struct {
	raw     string
	objects []object

	configMaps      map[string]*corev1.ConfigMap      // by namespace/name
	serviceAccounts map[string]*corev1.ServiceAccount // by namespace/name
	clusterRoles    map[string]*rbacv1.ClusterRole
	roles           map[string]*rbacv1.Role // by namespace/name
	crBindings      []*rbacv1.ClusterRoleBinding
	roleBindings    []*rbacv1.RoleBinding
	deployments     []*appsv1.Deployment
	daemonSets      []*appsv1.DaemonSet
	csiDrivers      []*storagev1.CSIDriver
	storageClasses  []*storagev1.StorageClass
	snapshotClasses []*volumeSnapshotClass
}

var (
	loadOnce   sync.Once
	loaded     *manifest
	loadErrors []error
)

// load decodes deploy.yaml once per test binary; a test that needs it fails (not skips) when
// any document does not decode, so a broken manifest cannot pass by omission.
func load(t *testing.T) *manifest {
	t.Helper()
	loadOnce.Do(func() {
		raw, err := os.ReadFile(manifestPath)
		if err != nil {
			loadErrors = []error{err}
			return
		}
		loaded, loadErrors = decodeManifest(raw)
	})
	for _, err := range loadErrors {
		t.Error(err)
	}
	if len(loadErrors) > 0 {
		t.FailNow()
	}
	return loaded
}

var separator = regexp.MustCompile(`^---\s*(#.*)?$`)

// splitDocuments splits a YAML stream at "---" lines, dropping documents that hold only
// comments and blank lines.
func splitDocuments(raw []byte) []document {
	var docs []document
	var cur bytes.Buffer
	start, lineNo, meaningful := 1, 0, false
	flush := func() {
		if meaningful {
			docs = append(docs, document{index: len(docs) + 1, line: start, text: bytes.Clone(cur.Bytes())})
		}
		cur.Reset()
		meaningful = false
	}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lineNo++
		line := sc.Text()
		if separator.MatchString(line) {
			flush()
			start = lineNo + 1
			continue
		}
		if trimmed := strings.TrimSpace(line); trimmed != "" && !strings.HasPrefix(trimmed, "#") {
			meaningful = true
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
	}
	flush()
	return docs
}

// decodeStrict decodes one document into the type registered for its apiVersion/kind,
// failing on unknown fields and duplicate keys.
func decodeStrict(doc document) (object, error) {
	var tm metav1.TypeMeta
	if err := sigsyaml.Unmarshal(doc.text, &tm); err != nil {
		return object{}, fmt.Errorf("%s: not YAML: %v", doc, err)
	}
	key := tm.APIVersion + "/" + tm.Kind
	newObj, ok := kindTypes[key]
	if !ok {
		return object{}, fmt.Errorf("%s: apiVersion %q kind %q is not a kind this test knows; add it to kindTypes", doc, tm.APIVersion, tm.Kind)
	}
	// YAML to JSON refusing duplicate keys, then JSON into the API type the way the API
	// server reads it: field names case-sensitive, unknown and duplicate fields reported with
	// their path.
	js, err := sigsyaml.YAMLToJSONStrict(doc.text)
	if err != nil {
		return object{}, fmt.Errorf("%s: %s is not strict YAML: %v", doc, tm.Kind, err)
	}
	obj := newObj()
	strictErrs, err := sigsjson.UnmarshalStrict(js, obj, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err != nil {
		return object{}, fmt.Errorf("%s: %s does not decode: %v", doc, tm.Kind, err)
	}
	if len(strictErrs) > 0 {
		msgs := make([]string, len(strictErrs))
		for i, e := range strictErrs {
			msgs[i] = e.Error()
		}
		return object{}, fmt.Errorf("%s: %s does not decode strictly: %s", doc, tm.Kind, strings.Join(msgs, "; "))
	}
	meta, ok := obj.(metav1.Object)
	if !ok {
		return object{}, fmt.Errorf("%s: %s has no object metadata", doc, tm.Kind)
	}
	return object{doc: doc, kind: tm.Kind, meta: meta, obj: obj}, nil
}

func decodeManifest(raw []byte) (*manifest, []error) {
	m := &manifest{
		raw:             string(raw),
		configMaps:      map[string]*corev1.ConfigMap{},
		serviceAccounts: map[string]*corev1.ServiceAccount{},
		clusterRoles:    map[string]*rbacv1.ClusterRole{},
		roles:           map[string]*rbacv1.Role{},
	}
	var errs []error
	seen := map[string]object{}
	for _, doc := range splitDocuments(raw) {
		o, err := decodeStrict(doc)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		name, ns := o.meta.GetName(), o.meta.GetNamespace()
		if name == "" {
			errs = append(errs, fmt.Errorf("%s: %s has no metadata.name", doc, o.kind))
		}
		if clusterScoped[o.kind] && ns != "" {
			errs = append(errs, fmt.Errorf("%s: cluster-scoped %s must not set a namespace (has %q)", o, o.kind, ns))
		}
		if !clusterScoped[o.kind] && ns != namespace {
			errs = append(errs, fmt.Errorf("%s: namespaced %s must be in namespace %q, has %q", o, o.kind, namespace, ns))
		}
		id := o.kind + " " + ns + "/" + name
		if prev, dup := seen[id]; dup {
			errs = append(errs, fmt.Errorf("%s duplicates %s", o, prev))
		}
		seen[id] = o
		m.objects = append(m.objects, o)
		m.index(o)
	}
	if len(m.objects) == 0 && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("%s holds no objects", manifestPath))
	}
	return m, errs
}

func (m *manifest) index(o object) {
	key := o.meta.GetNamespace() + "/" + o.meta.GetName()
	switch v := o.obj.(type) {
	case *corev1.ConfigMap:
		m.configMaps[key] = v
	case *corev1.ServiceAccount:
		m.serviceAccounts[key] = v
	case *rbacv1.ClusterRole:
		m.clusterRoles[v.Name] = v
	case *rbacv1.Role:
		m.roles[key] = v
	case *rbacv1.ClusterRoleBinding:
		m.crBindings = append(m.crBindings, v)
	case *rbacv1.RoleBinding:
		m.roleBindings = append(m.roleBindings, v)
	case *appsv1.Deployment:
		m.deployments = append(m.deployments, v)
	case *appsv1.DaemonSet:
		m.daemonSets = append(m.daemonSets, v)
	case *storagev1.CSIDriver:
		m.csiDrivers = append(m.csiDrivers, v)
	case *storagev1.StorageClass:
		m.storageClasses = append(m.storageClasses, v)
	case *volumeSnapshotClass:
		m.snapshotClasses = append(m.snapshotClasses, v)
	}
}

// pods lists every pod template in the manifest.
func (m *manifest) pods() []podTemplate {
	var out []podTemplate
	for _, d := range m.deployments {
		out = append(out, podTemplate{owner: "Deployment " + d.Name, spec: &d.Spec.Template.Spec})
	}
	for _, d := range m.daemonSets {
		out = append(out, podTemplate{owner: "DaemonSet " + d.Name, spec: &d.Spec.Template.Spec})
	}
	return out
}

// controllerPod and nodePod return the two workloads' pod templates.
func (m *manifest) controllerPod() (podTemplate, error) {
	if len(m.deployments) != 1 {
		return podTemplate{}, fmt.Errorf("want exactly one Deployment (the controller), found %d", len(m.deployments))
	}
	d := m.deployments[0]
	return podTemplate{owner: "Deployment " + d.Name, spec: &d.Spec.Template.Spec}, nil
}

func (m *manifest) nodePod() (podTemplate, error) {
	if len(m.daemonSets) != 1 {
		return podTemplate{}, fmt.Errorf("want exactly one DaemonSet (the node plugin), found %d", len(m.daemonSets))
	}
	d := m.daemonSets[0]
	return podTemplate{owner: "DaemonSet " + d.Name, spec: &d.Spec.Template.Spec}, nil
}

// container returns the named container of a pod.
func (p podTemplate) container(name string) (*corev1.Container, error) {
	for i := range p.spec.Containers {
		if p.spec.Containers[i].Name == name {
			return &p.spec.Containers[i], nil
		}
	}
	return nil, fmt.Errorf("%s has no container %q", p.owner, name)
}

// flagValue returns the value of --name=value in args (the form every container here uses),
// and whether it was present. A bare --name counts as present with value "".
func flagValue(args []string, name string) (string, bool) {
	for _, a := range args {
		if a == "--"+name {
			return "", true
		}
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// mountFor resolves a path inside container c to the volume mounted there and the path
// relative to the mount point (the longest mount point that contains it wins).
func mountFor(c *corev1.Container, path string) (corev1.VolumeMount, string, bool) {
	var best corev1.VolumeMount
	found := false
	for _, vm := range c.VolumeMounts {
		mp := strings.TrimSuffix(vm.MountPath, "/")
		if path == mp || strings.HasPrefix(path, mp+"/") {
			if !found || len(mp) > len(strings.TrimSuffix(best.MountPath, "/")) {
				best, found = vm, true
			}
		}
	}
	if !found {
		return corev1.VolumeMount{}, "", false
	}
	rel := strings.TrimPrefix(strings.TrimPrefix(path, strings.TrimSuffix(best.MountPath, "/")), "/")
	return best, rel, true
}

func volumeNamed(p podTemplate, name string) (*corev1.Volume, bool) {
	for i := range p.spec.Volumes {
		if p.spec.Volumes[i].Name == name {
			return &p.spec.Volumes[i], true
		}
	}
	return nil, false
}

// hostPathOf resolves a container path to the host path behind it, when a hostPath volume is
// mounted there.
func hostPathOf(p podTemplate, c *corev1.Container, path string) (string, bool) {
	vm, rel, ok := mountFor(c, path)
	if !ok {
		return "", false
	}
	v, ok := volumeNamed(p, vm.Name)
	if !ok || v.HostPath == nil {
		return "", false
	}
	return filepath.Join(v.HostPath.Path, rel), true
}

func TestManifestDecodesStrictly(t *testing.T) {
	m := load(t)
	// The manifest must hold at least these objects; the kinds in between are cross-checked
	// by the other tests.
	want := []struct{ kind, name string }{
		{"Namespace", namespace},
		{"CSIDriver", driverName},
		{"ConfigMap", "rds-csi-config"},
		{"ServiceAccount", "rds-csi-controller"},
		{"ServiceAccount", "rds-csi-node"},
		{"Deployment", "rds-csi-controller"},
		{"DaemonSet", "rds-csi-node"},
		{"StorageClass", "rds-nvme"},
		{"StorageClass", "rds-nvme-block"},
		{"VolumeSnapshotClass", "rds-nvme-snapshot"},
	}
	for _, w := range want {
		found := false
		for _, o := range m.objects {
			found = found || (o.kind == w.kind && o.meta.GetName() == w.name)
		}
		if !found {
			t.Errorf("deploy.yaml has no %s %q", w.kind, w.name)
		}
	}
	t.Logf("%d objects decoded strictly", len(m.objects))
}

// The strict decoder is what makes TestManifestDecodesStrictly worth anything; prove it
// rejects what it must.
func TestStrictDecodingRejectsMistakes(t *testing.T) {
	cases := []struct{ name, yaml, wantErr string }{
		{"unknown field deep in a pod", `apiVersion: apps/v1
kind: DaemonSet
metadata: {name: x, namespace: rds-csi}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers:
        - name: c
          image: i
          argz: ["--mode=node"]
`, `unknown field "spec.template.spec.containers[0].argz"`},
		{"misspelled CSIDriver field", `apiVersion: storage.k8s.io/v1
kind: CSIDriver
metadata: {name: x}
spec: {attachRequire: true}
`, `unknown field "spec.attachRequire"`},
		{"duplicate key", `apiVersion: v1
kind: ConfigMap
metadata: {name: x, namespace: rds-csi}
data: {a: "1", a: "2"}
`, `already set`},
		{"field name in the wrong case", `apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: x}
provisioner: p
AllowVolumeExpansion: true
`, `unknown field "AllowVolumeExpansion"`},
		{"kind the test does not know", `apiVersion: v1
kind: Secret
metadata: {name: x, namespace: rds-csi}
`, `not a kind this test knows`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeStrict(document{index: 1, line: 1, text: []byte(tc.yaml)})
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("decodeStrict error = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}
