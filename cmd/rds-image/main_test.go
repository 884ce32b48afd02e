package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestPin(t *testing.T) {
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	const manifest = `containers:
  - name: rds-csi
    image: ghcr.io/srvlab/rds-csi:v0.1.0
  - name: csi-provisioner
    image: registry.k8s.io/sig-storage/csi-provisioner:v6.4.0
  - image: ghcr.io/srvlab/rds-csi:v0.0.9@` + digest + `
    name: old
`
	ref := "ghcr.io/srvlab/rds-csi:v1.0.0@" + digest
	var out bytes.Buffer
	if err := pin([]string{"-image", "ghcr.io/srvlab/rds-csi", "-ref", ref}, strings.NewReader(manifest), &out); err != nil {
		t.Fatal(err)
	}
	want := strings.NewReplacer("ghcr.io/srvlab/rds-csi:v0.1.0", ref, "ghcr.io/srvlab/rds-csi:v0.0.9@"+digest, ref).Replace(manifest)
	if out.String() != want {
		t.Errorf("pinned manifest:\n%s\nwant:\n%s", out.String(), want)
	}

	for _, tc := range []struct {
		name, image, ref, in, want string
	}{
		{"no image line of that repository", "ghcr.io/other/rds-csi", ref, manifest, "no `image: ghcr.io/other/rds-csi:<tag>` line"},
		{"tag without digest", "ghcr.io/srvlab/rds-csi", "ghcr.io/srvlab/rds-csi:v1.0.0", manifest, "must be host/repository:tag@sha256"},
		{"a longer repository name is not ours", "ghcr.io/srvlab/rds", ref, "image: ghcr.io/srvlab/rds-csi:v1\n", "no `image: ghcr.io/srvlab/rds:<tag>` line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := pin([]string{"-image", tc.image, "-ref", tc.ref}, strings.NewReader(tc.in), &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("pin: %v, want an error with %q", err, tc.want)
			}
		})
	}
}
