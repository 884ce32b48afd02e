package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
)

// kustomizeVersion is built from the Go module proxy when no kustomize is on PATH (v5.8.1
// and later need Go 1.27).
const kustomizeVersion = "v5.8.0"

var (
	kustomizeOnce sync.Once
	kustomizeBin  string
	kustomizeErr  error
)

// kustomize returns a kustomize binary: $KUSTOMIZE, one on PATH, or kustomizeVersion
// installed once into the user's cache (the directory names the version).
func kustomize() (string, error) {
	kustomizeOnce.Do(func() {
		if kustomizeBin = os.Getenv("KUSTOMIZE"); kustomizeBin != "" {
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
			kustomizeErr = fmt.Errorf("installing kustomize %s from the Go module proxy: %v\n%s", kustomizeVersion, err, out)
		}
	})
	return kustomizeBin, kustomizeErr
}

// render lays out a site the way the README says (the checkout as rds-csi, the user's
// overlay beside it as my-rds-csi, from the given example text), builds dir ("rds-csi" or
// "my-rds-csi") and decodes the result.
func render(in *inputs, example, dir string, r *report) *inputs {
	bin, err := kustomize()
	site, err2 := os.MkdirTemp("", "rds-csi-kustomize-")
	if !r.must(err) || !r.must(err2) {
		return nil
	}
	defer os.RemoveAll(site)
	for path, content := range map[string]string{
		"rds-csi/deploy.yaml":           in.files["deploy.yaml"],
		"rds-csi/kustomization.yaml":    in.files["kustomization.yaml"],
		"my-rds-csi/kustomization.yaml": example,
	} {
		full := filepath.Join(site, path)
		if !r.must(os.MkdirAll(filepath.Dir(full), 0o755)) || !r.must(os.WriteFile(full, []byte(content), 0o644)) {
			return nil
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "build", filepath.Join(site, dir)).CombinedOutput()
	if err != nil {
		r.add("kustomize build %s: %v\n%s", dir, err, out)
		return nil
	}
	return in.with("deploy.yaml", string(out))
}

// objectJSON indexes objects by kind/namespace/name with their JSON.
func objectJSON(m *manifest) map[string]string {
	out := map[string]string{}
	for _, o := range m.objects {
		b, _ := json.Marshal(o.obj)
		out[o.kind+"/"+o.meta.GetNamespace()+"/"+o.meta.GetName()] = string(b)
	}
	return out
}

// checkRootKustomization: `kubectl apply -k .` installs exactly deploy.yaml.
func checkRootKustomization(in *inputs, r *report) {
	got := render(in, "", "rds-csi", r)
	if got == nil {
		return
	}
	checkDecodes(got, r)
	want, have := objectJSON(in.m), objectJSON(got.m)
	for id, w := range want {
		if have[id] != w {
			r.add("%s differs between deploy.yaml and the root kustomization (or is missing)", id)
		}
	}
	for id := range have {
		if _, ok := want[id]; !ok {
			r.add("the root kustomization adds %s, which deploy.yaml does not have", id)
		}
	}
}

// exampleSettings turn the example overlay into a user's: every value it sets, changed.
var exampleSettings = [][2]string{
	{"rds-address=192.0.2.10", "rds-address=10.20.30.40"},
	{"rds-user=csi ", "rds-user=storage "},
	{"rds-volume-path=/storage-pool/metal-csi", "rds-volume-path=/raid1/k8s"},
	{"value: /storage-pool/metal-csi", "value: /raid1/k8s/volumes"},
	{"managed-nqn-prefix=nqn.2000-02.com.mikrotik:pvc-", "managed-nqn-prefix=nqn.2000-02.com.mikrotik:k8s-pvc-"},
	{"newTag: v0.1.0", "newTag: v7.7.7"},
}

// checkExampleOverlay: overlays/example, copied beside a checkout and set to a user's values,
// renders; each value reaches the objects that use it (the ConfigMap keeps its name, as the
// README's `kubectl edit configmap rds-csi-config` needs; every StorageClass gets the
// volumePath; both plugins run the image); and the rendering passes every manifest check.
func checkExampleOverlay(in *inputs, r *report) {
	example := in.files["overlays/example/kustomization.yaml"]
	for _, s := range exampleSettings {
		if !strings.Contains(example, s[0]) {
			r.add("the example overlay no longer sets %q; update exampleSettings", s[0])
		}
		example = strings.ReplaceAll(example, s[0], s[1])
	}
	got := render(in, example, "my-rds-csi", r)
	if got == nil {
		return
	}
	want := map[string]string{"rds-address": "10.20.30.40", "rds-user": "storage", "rds-volume-path": "/raid1/k8s", "managed-nqn-prefix": "nqn.2000-02.com.mikrotik:k8s-pvc-"}
	if cm, ok := named[*corev1.ConfigMap](got.m, "rds-csi-config"); !ok {
		r.add("the overlay's output has no ConfigMap rds-csi-config (renamed by a hash suffix?)")
	} else {
		for k, v := range want {
			if cm.Data[k] != v {
				r.add("the overlay's ConfigMap %s = %q, want %q", k, cm.Data[k], v)
			}
		}
	}
	for _, sc := range objectsOf[*storagev1.StorageClass](got.m) {
		if sc.Parameters["volumePath"] != "/raid1/k8s/volumes" {
			r.add("the overlay's StorageClass %s has volumePath %q, want the overlay's", sc.Name, sc.Parameters["volumePath"])
		}
	}
	for _, p := range got.m.pods(r) {
		if !strings.HasSuffix(p.plugin.Image, ":v7.7.7") {
			r.add("the overlay's %s runs %s, want the overlay's tag", p.owner, p.plugin.Image)
		}
	}
	for _, c := range manifestChecks {
		if c.shippedOnly {
			continue
		}
		sub := &report{}
		c.fn(got, sub)
		for _, p := range sub.problems {
			r.add("the overlay's output fails %q: %s", c.name, p)
		}
	}
}
