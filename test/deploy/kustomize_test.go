package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// kustomizeVersion is built from the Go module proxy when no kustomize is on PATH (v5.8.1
// and later need Go 1.27).
const kustomizeVersion = "v5.8.0"

var (
	kustomizeOnce sync.Once
	kustomizeBin  string
	kustomizeErr  error
)

// kustomize returns a kustomize binary: $KUSTOMIZE, one on PATH, or kustomize
// kustomizeVersion installed once into the user's cache (a stamped cache: the directory
// names the version).
func kustomize(t *testing.T) string {
	t.Helper()
	kustomizeOnce.Do(func() {
		if k := os.Getenv("KUSTOMIZE"); k != "" {
			kustomizeBin = k
			return
		}
		if k, err := exec.LookPath("kustomize"); err == nil {
			kustomizeBin = k
			return
		}
		cache, err := os.UserCacheDir()
		if err != nil {
			cache = os.TempDir()
		}
		dir := filepath.Join(cache, "rds-csi-tools", "kustomize-"+kustomizeVersion)
		kustomizeBin = filepath.Join(dir, "kustomize")
		if _, err := os.Stat(kustomizeBin); err == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, goTool(), "install", "sigs.k8s.io/kustomize/kustomize/v5@"+kustomizeVersion)
		cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=", "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			kustomizeErr = &buildError{err: err, out: string(out)}
		}
	})
	if kustomizeErr != nil {
		t.Fatalf("installing kustomize %s from the Go module proxy: %v", kustomizeVersion, kustomizeErr)
	}
	return kustomizeBin
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }

func kustomizeBuild(t *testing.T, dir string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, kustomize(t), "build", dir)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kustomize build %s: %v\n%s", dir, err, stderr.String())
	}
	return out
}

func decodeOrFail(t *testing.T, raw []byte) *manifest {
	t.Helper()
	m, errs := decodeManifest(raw)
	for _, err := range errs {
		t.Error(err)
	}
	if len(errs) > 0 {
		t.FailNow()
	}
	return m
}

// byID indexes objects by kind/namespace/name with their JSON.
func byID(t *testing.T, m *manifest) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, o := range m.objects {
		b, err := json.Marshal(o.obj)
		if err != nil {
			t.Fatal(err)
		}
		out[o.kind+"/"+o.meta.GetNamespace()+"/"+o.meta.GetName()] = string(b)
	}
	return out
}

// TestRootKustomizationIsDeployYAML: `kubectl apply -k .` installs exactly deploy.yaml.
func TestRootKustomizationIsDeployYAML(t *testing.T) {
	want := byID(t, load(t))
	got := byID(t, decodeOrFail(t, kustomizeBuild(t, repoRoot)))
	for id, w := range want {
		if got[id] != w {
			t.Errorf("%s differs between deploy.yaml and the root kustomization (or is missing)", id)
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok {
			t.Errorf("the root kustomization adds %s, which deploy.yaml does not have", id)
		}
	}
}

// TestExampleOverlay copies the example overlay beside a "checkout" (a link to this
// repository) the way the README says, sets other values, builds it, and checks that every
// setting reached the objects that use it and that the result passes every deploy.yaml check.
func TestExampleOverlay(t *testing.T) {
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	site := t.TempDir()
	if err := os.Symlink(root, filepath.Join(site, "rds-csi")); err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile(filepath.Join(root, "overlays", "example", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// The example's defaults are deploy.yaml's (bar the two REQUIRED values it fills in).
	base := load(t).configMaps[namespace+"/rds-csi-config"]
	for _, key := range []string{"rds-volume-path", "managed-nqn-prefix"} {
		if !strings.Contains(string(example), "- "+key+"="+base.Data[key]+" ") {
			t.Errorf("the example overlay's %s is not deploy.yaml's %q", key, base.Data[key])
		}
	}
	settings := strings.NewReplacer(
		"rds-address=192.0.2.10", "rds-address=10.20.30.40",
		"rds-user=csi ", "rds-user=storage ",
		"rds-volume-path=/storage-pool/metal-csi", "rds-volume-path=/raid1/k8s",
		"value: /storage-pool/metal-csi", "value: /raid1/k8s/volumes",
		"managed-nqn-prefix=nqn.2000-02.com.mikrotik:pvc-", "managed-nqn-prefix=nqn.2000-02.com.mikrotik:k8s-pvc-",
		"newTag: v0.1.0", "newTag: v7.7.7",
	)
	edited := settings.Replace(string(example))
	for _, old := range []string{"192.0.2.10", "metal-csi", "v0.1.0\n", ":pvc-"} {
		if strings.Contains(edited, old) {
			t.Fatalf("the example overlay changed shape: %q is still there after setting every value", old)
		}
	}
	mine := filepath.Join(site, "my-rds-csi")
	if err := os.Mkdir(mine, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mine, "kustomization.yaml"), []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	m := decodeOrFail(t, kustomizeBuild(t, mine))

	cm := m.configMaps[namespace+"/rds-csi-config"]
	if cm == nil {
		t.Fatal("the overlay's output has no ConfigMap rds-csi/rds-csi-config (renamed by a hash suffix?)")
	}
	for k, v := range map[string]string{"rds-address": "10.20.30.40", "rds-user": "storage", "rds-volume-path": "/raid1/k8s", "managed-nqn-prefix": "nqn.2000-02.com.mikrotik:k8s-pvc-"} {
		if cm.Data[k] != v {
			t.Errorf("ConfigMap %s = %q, want %q", k, cm.Data[k], v)
		}
	}
	for _, sc := range m.storageClasses {
		if sc.Parameters["volumePath"] != "/raid1/k8s/volumes" {
			t.Errorf("StorageClass %s volumePath %q, want the overlay's", sc.Name, sc.Parameters["volumePath"])
		}
	}
	for _, p := range podsOf(t, m) {
		c, err := p.container(pluginName)
		if err != nil {
			t.Fatal(err)
		}
		if c.Image != "ghcr.io/srvlab/rds-csi:v7.7.7" {
			t.Errorf("%s runs %s, want the overlay's image", p.owner, c.Image)
		}
	}
	// Two checks are about the shipped file, not a user's settings: that the REQUIRED values
	// ship empty, and that its comments say how to create the Secret (kustomize drops comments).
	for _, c := range checks {
		if c.name == "SSH Secret is referenced, not shipped" {
			continue
		}
		r := &report{}
		c.fn(m, r)
		for _, p := range r.problems {
			if c.name == "ConfigMap defaults are valid" && strings.Contains(p, "should ship empty") {
				continue
			}
			t.Errorf("the overlay's output fails %q: %s", c.name, p)
		}
	}
}

func podsOf(t *testing.T, m *manifest) []podTemplate {
	t.Helper()
	var out []podTemplate
	for _, get := range []func() (podTemplate, error){m.controllerPod, m.nodePod} {
		p, err := get()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

// TestReadmeInstallsTheWaysThatExist: the README's quick start uses the kustomization and
// the release, and says how to build and push one's own image.
func TestReadmeInstallsTheWaysThatExist(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	quick := string(readme)
	if i := strings.Index(quick, "## Quick start"); i >= 0 {
		quick = quick[i:]
		if j := strings.Index(quick[3:], "\n## "); j >= 0 {
			quick = quick[:j+3]
		}
	} else {
		t.Fatal("README has no ## Quick start section")
	}
	for _, want := range []string{
		"cp -r rds-csi/overlays/example my-rds-csi",
		"kubectl apply -k my-rds-csi",
		"kubectl create secret generic rds-csi-ssh -n rds-csi",
		"/releases/download/<tag>/deploy.yaml",
		"make image push REGISTRY=",
	} {
		if !strings.Contains(quick, want) {
			t.Errorf("the README's quick start lacks %q", want)
		}
	}
	if strings.Contains(quick, "inside deploy.yaml, then") {
		t.Error("the README's quick start still tells users to edit deploy.yaml")
	}
	if _, err := os.Stat(filepath.Join(repoRoot, "overlays", "example", "kustomization.yaml")); err != nil {
		t.Errorf("the README names overlays/example: %v", err)
	}
}
