// Package deploy checks the files that install and ship rds-csi (deploy.yaml, the
// kustomizations, the Dockerfile, the release workflow) against each other and against the
// code they describe: the binary's flags, the StorageClass parameters the controller
// accepts, the tools the mount package runs, the image cmd/rds-image assembles. Each check is
// a rule a careless edit can break, and mutations_test.go breaks each on purpose to prove it
// notices. Test-only: the Kubernetes API modules it imports never reach the driver binary.
package deploy

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
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
	namespace  = "rds-csi"
	pluginName = "rds-csi" // the container that runs our binary, in both pods
	repoRoot   = "../.."
)

// inputFiles are the files the checks read, by path from the repository root. The Go
// sources are the driver's own tables (package main cannot be imported, so they are read
// as text).
var inputFiles = []string{
	"deploy.yaml", "kustomization.yaml", "overlays/example/kustomization.yaml",
	"Dockerfile", "Makefile", "go.mod", ".github/workflows/release.yml", "test/image/build-image.sh",
	"config.go", "volume_options.go", "controller.go", "capability.go", "mount/fs.go",
}

// inputs are the files under check, with deploy.yaml decoded.
type inputs struct {
	files      map[string]string
	m          *manifest
	decodeErrs []error
}

func readInputs(t *testing.T) *inputs {
	t.Helper()
	files := map[string]string{}
	for _, f := range inputFiles {
		b, err := os.ReadFile(filepath.Join(repoRoot, f))
		if err != nil {
			t.Fatal(err)
		}
		files[f] = string(b)
	}
	return newInputs(files)
}

func newInputs(files map[string]string) *inputs {
	m, errs := decodeManifest(files["deploy.yaml"])
	return &inputs{files: files, m: m, decodeErrs: errs}
}

// with returns a copy of the inputs with one file's content replaced.
func (in *inputs) with(path, content string) *inputs {
	files := maps.Clone(in.files)
	files[path] = content
	return newInputs(files)
}

// goStringConsts reads the string constants whose names start with prefix from Go source.
func goStringConsts(src, prefix string) (map[string]string, error) {
	f, err := parser.ParseFile(token.NewFileSet(), "", src, 0)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, d := range f.Decls {
		if gd, ok := d.(*ast.GenDecl); ok && gd.Tok == token.CONST {
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if i >= len(vs.Values) || !strings.HasPrefix(name.Name, prefix) {
						continue
					}
					if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						out[name.Name], _ = strconv.Unquote(lit.Value)
					}
				}
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no string constant %s… in the source", prefix)
	}
	return out, nil
}

// driverName is the binary's default --driver-name (config.go), which deploy.yaml uses.
func driverName(in *inputs, r *report) string {
	c, err := goStringConsts(in.files["config.go"], "defaultDriverName")
	r.must(err)
	return c["defaultDriverName"]
}

// volumeSnapshotClass mirrors snapshot.storage.k8s.io/v1 VolumeSnapshotClass (external-
// snapshotter's client module is not worth a dependency for four fields).
type volumeSnapshotClass struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Driver            string            `json:"driver"`
	Parameters        map[string]string `json:"parameters,omitempty"`
	DeletionPolicy    string            `json:"deletionPolicy"`
}

// kinds maps apiVersion/kind to its API type. A kind missing here fails the decode, so a
// new kind in deploy.yaml is decoded, never skipped.
var kinds = map[string]struct {
	new           func() any
	clusterScoped bool
}{
	"v1/Namespace":      {func() any { return &corev1.Namespace{} }, true},
	"v1/ConfigMap":      {func() any { return &corev1.ConfigMap{} }, false},
	"v1/ServiceAccount": {func() any { return &corev1.ServiceAccount{} }, false},
	"rbac.authorization.k8s.io/v1/ClusterRole":        {func() any { return &rbacv1.ClusterRole{} }, true},
	"rbac.authorization.k8s.io/v1/ClusterRoleBinding": {func() any { return &rbacv1.ClusterRoleBinding{} }, true},
	"rbac.authorization.k8s.io/v1/Role":               {func() any { return &rbacv1.Role{} }, false},
	"rbac.authorization.k8s.io/v1/RoleBinding":        {func() any { return &rbacv1.RoleBinding{} }, false},
	"apps/v1/Deployment":                              {func() any { return &appsv1.Deployment{} }, false},
	"apps/v1/DaemonSet":                               {func() any { return &appsv1.DaemonSet{} }, false},
	"storage.k8s.io/v1/CSIDriver":                     {func() any { return &storagev1.CSIDriver{} }, true},
	"storage.k8s.io/v1/StorageClass":                  {func() any { return &storagev1.StorageClass{} }, true},
	"snapshot.storage.k8s.io/v1/VolumeSnapshotClass":  {func() any { return &volumeSnapshotClass{} }, true},
}

// object is one decoded document.
type object struct {
	line int // the line that opens the document
	kind string
	meta metav1.Object
	obj  any
}

type manifest struct{ objects []object }

var (
	separator = regexp.MustCompile(`(?m)^---[ \t]*(#.*)?$`)
	content   = regexp.MustCompile(`(?m)^[ \t]*[^#\s]`)
)

// decodeManifest decodes every document strictly, the way the API server reads it (unknown
// and duplicate fields are errors, field names case-sensitive), so a misspelled field fails
// here and not at apply time. Namespaced objects must be in rds-csi (without one, kubectl
// puts them wherever its context points), and no object may appear twice.
func decodeManifest(raw string) (*manifest, []error) {
	m := &manifest{}
	var errs []error
	seen := map[string]bool{}
	start := 0
	for _, sep := range append(separator.FindAllStringIndex(raw, -1), []int{len(raw), len(raw)}) {
		text, line := raw[start:sep[0]], strings.Count(raw[:start], "\n")+1
		start = sep[1]
		if !content.MatchString(text) {
			continue // comments only
		}
		o, clusterScoped, err := decodeStrict(text, line)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		id := o.kind + " " + o.meta.GetNamespace() + "/" + o.meta.GetName()
		switch ns := o.meta.GetNamespace(); {
		case clusterScoped && ns != "":
			errs = append(errs, fmt.Errorf("deploy.yaml:%d: cluster-scoped %s sets namespace %q", line, o.kind, ns))
		case !clusterScoped && ns != namespace:
			errs = append(errs, fmt.Errorf("deploy.yaml:%d: %s %s is in namespace %q, want %q", line, o.kind, o.meta.GetName(), ns, namespace))
		case seen[id]:
			errs = append(errs, fmt.Errorf("deploy.yaml:%d: %s appears twice", line, id))
		}
		seen[id] = true
		m.objects = append(m.objects, o)
	}
	return m, errs
}

func decodeStrict(text string, line int) (object, bool, error) {
	var tm metav1.TypeMeta
	if err := sigsyaml.Unmarshal([]byte(text), &tm); err != nil {
		return object{}, false, fmt.Errorf("deploy.yaml:%d: not YAML: %v", line, err)
	}
	kind, ok := kinds[tm.APIVersion+"/"+tm.Kind]
	if !ok {
		return object{}, false, fmt.Errorf("deploy.yaml:%d: %s/%s is not a kind this test knows; add it to kinds", line, tm.APIVersion, tm.Kind)
	}
	js, err := sigsyaml.YAMLToJSONStrict([]byte(text))
	if err != nil {
		return object{}, false, fmt.Errorf("deploy.yaml:%d: %s is not strict YAML: %v", line, tm.Kind, err)
	}
	obj := kind.new()
	strictErrs, err := sigsjson.UnmarshalStrict(js, obj, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err = errors.Join(append(strictErrs, err)...); err != nil {
		return object{}, false, fmt.Errorf("deploy.yaml:%d: %s does not decode strictly: %v", line, tm.Kind, err)
	}
	return object{line: line, kind: tm.Kind, meta: obj.(metav1.Object), obj: obj}, kind.clusterScoped, nil
}

// objectsOf lists the manifest's objects of one API type, e.g. objectsOf[*corev1.ConfigMap].
func objectsOf[T any](m *manifest) []T {
	var out []T
	for _, o := range m.objects {
		if v, ok := o.obj.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// named returns the object of type T with that name (all namespaced objects share rds-csi).
func named[T metav1.Object](m *manifest, name string) (T, bool) {
	for _, v := range objectsOf[T](m) {
		if v.GetName() == name {
			return v, true
		}
	}
	var none T
	return none, false
}

// pod is a workload's pod template, its rds-csi container, and the workload's name.
type pod struct {
	owner  string // e.g. "DaemonSet rds-csi-node"
	spec   *corev1.PodSpec
	plugin *corev1.Container
}

// controller and node return the pods of the one Deployment and the one DaemonSet.
func (m *manifest) controller() (pod, error) {
	d := objectsOf[*appsv1.Deployment](m)
	if len(d) != 1 {
		return pod{}, fmt.Errorf("want one Deployment (the controller), found %d", len(d))
	}
	return newPod("Deployment "+d[0].Name, &d[0].Spec.Template.Spec)
}

func (m *manifest) node() (pod, error) {
	d := objectsOf[*appsv1.DaemonSet](m)
	if len(d) != 1 {
		return pod{}, fmt.Errorf("want one DaemonSet (the node plugin), found %d", len(d))
	}
	return newPod("DaemonSet "+d[0].Name, &d[0].Spec.Template.Spec)
}

func newPod(owner string, spec *corev1.PodSpec) (pod, error) {
	p := pod{owner: owner, spec: spec}
	var err error
	p.plugin, err = p.container(pluginName)
	return p, err
}

// pods returns both pods, reporting a missing one.
func (m *manifest) pods(r *report) []pod {
	var out []pod
	for _, get := range []func() (pod, error){m.controller, m.node} {
		if p, err := get(); r.must(err) {
			out = append(out, p)
		}
	}
	return out
}

func (p pod) container(name string) (*corev1.Container, error) {
	for i := range p.spec.Containers {
		if p.spec.Containers[i].Name == name {
			return &p.spec.Containers[i], nil
		}
	}
	return nil, fmt.Errorf("%s has no container %q", p.owner, name)
}

func (p pod) volume(name string) *corev1.Volume {
	for i := range p.spec.Volumes {
		if p.spec.Volumes[i].Name == name {
			return &p.spec.Volumes[i]
		}
	}
	return nil
}

// flagValue returns the value of --name=value in args (the form every container here uses)
// and whether the flag is there; a bare --name has the value "".
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

// mountFor resolves a path inside container c to the mount that holds it (the longest mount
// point containing it) and the path relative to that mount point.
func mountFor(c *corev1.Container, path string) (vm corev1.VolumeMount, rel string, ok bool) {
	for _, m := range c.VolumeMounts {
		mp := strings.TrimSuffix(m.MountPath, "/")
		if (path == mp || strings.HasPrefix(path, mp+"/")) && (!ok || len(mp) > len(vm.MountPath)) {
			vm, ok = m, true
			rel = strings.TrimPrefix(strings.TrimPrefix(path, mp), "/")
		}
	}
	return vm, rel, ok
}

// hostPathOf resolves a container path to the host path behind it, when a hostPath volume
// holds it.
func hostPathOf(p pod, c *corev1.Container, path string) (string, bool) {
	vm, rel, ok := mountFor(c, path)
	if !ok {
		return "", false
	}
	if v := p.volume(vm.Name); v != nil && v.HostPath != nil {
		return filepath.Join(v.HostPath.Path, rel), true
	}
	return "", false
}

var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expandArgs resolves $(VAR) in a container's arguments the way the kubelet does, from its
// env: literal values, ConfigMap keys of the manifest, and "node-1" for spec.nodeName. A
// reference to a variable the env does not define is a problem: the kubelet passes it on
// literally.
func expandArgs(m *manifest, c *corev1.Container) (args, problems []string) {
	values := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			values[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName":
			values[e.Name] = "node-1"
		case e.ValueFrom.ConfigMapKeyRef != nil:
			if cm, ok := named[*corev1.ConfigMap](m, e.ValueFrom.ConfigMapKeyRef.Name); ok {
				values[e.Name] = cm.Data[e.ValueFrom.ConfigMapKeyRef.Key]
			}
		}
	}
	for _, a := range c.Args {
		args = append(args, envRef.ReplaceAllStringFunc(a, func(ref string) string {
			v, ok := values[envRef.FindStringSubmatch(ref)[1]]
			if !ok {
				problems = append(problems, fmt.Sprintf("container %s: argument %s refers to %s, which its env does not define", c.Name, a, ref))
				return ref
			}
			return v
		}))
	}
	return args, problems
}
