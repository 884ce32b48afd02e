package deploy

import (
	"fmt"
	"os/exec"
	"regexp"
	"strings"

	sigsyaml "sigs.k8s.io/yaml"
)

const workflowPath = ".github/workflows/release.yml"

// workflow is the part of a GitHub Actions workflow the release check reads.
type workflow struct {
	On          map[string]any    `json:"on"`
	True        map[string]any    `json:"true"` // `on:` read as a YAML 1.1 boolean key
	Permissions map[string]string `json:"permissions"`
	Jobs        map[string]struct {
		Env   map[string]string `json:"env"`
		Steps []struct {
			Name string            `json:"name"`
			Run  string            `json:"run"`
			Env  map[string]string `json:"env"`
		} `json:"steps"`
	} `json:"jobs"`
}

// makeRecipe returns the recipe lines of a Makefile target.
func makeRecipe(makefile, target string) string {
	m := regexp.MustCompile(`(?ms)^` + regexp.QuoteMeta(target) + `:[^\n]*\n((?:\t[^\n]*\n)+)`).FindStringSubmatch(makefile)
	if m == nil {
		return ""
	}
	return m[1]
}

// releaseSteps are what the release job must do, in this order, each matched by its run
// script: build with the repository's own tool, prove, push, pin deploy.yaml to the pushed
// digest, publish that deploy.yaml.
var releaseSteps = []struct{ what, run string }{
	{"builds the image with `make image VERSION=... REGISTRY=...`", `\bmake image\b.*VERSION=.*REGISTRY=`},
	{"proves the image (go test ./test/image/ with CI=true, as root)", `sudo\b.*CI=true.*go test.*\./test/image/`},
	{"pushes with `make push`", `\bmake push\b`},
	{"pins deploy.yaml to <registry>/rds-csi:$VERSION@<the digest make push wrote>",
		`digest=\$\(cat bin/image/pushed-digest\)[\s\S]*go run \./cmd/rds-image pin [\s\S]*-ref "[^"]*:\$VERSION@\$\{?digest\}?" < deploy\.yaml`},
	{"publishes the release with the pinned deploy.yaml", `gh release create\b.*bin/release/deploy\.yaml`},
}

// checkReleaseWorkflow: the release runs on a version tag, which becomes VERSION; may write
// the release and the ghcr.io package; builds, proves, pushes (with credentials), pins and
// publishes in that order; each run script is valid bash; and make image / make push are
// cmd/rds-image, the same tool the Dockerfile is held to.
func checkReleaseWorkflow(in *inputs, r *report) {
	raw := in.files[workflowPath]
	var wf workflow
	if err := sigsyaml.Unmarshal([]byte(raw), &wf); err != nil {
		r.add("%s is not YAML: %v", workflowPath, err)
		return
	}
	on := wf.On
	if on == nil {
		on = wf.True
	}
	push, _ := on["push"].(map[string]any)
	if tags, _ := push["tags"].([]any); len(tags) == 0 || !strings.HasPrefix(fmt.Sprint(tags[0]), "v") {
		r.add("the workflow must run on pushed version tags (on.push.tags: [\"v*.*.*\"]), has on=%v", on)
	}
	for _, perm := range []string{"contents", "packages"} {
		if wf.Permissions[perm] != "write" {
			r.add("permissions.%s must be write (the release and the ghcr.io push use GITHUB_TOKEN), is %q", perm, wf.Permissions[perm])
		}
	}
	if len(wf.Jobs) != 1 {
		r.add("want one release job, have %d", len(wf.Jobs))
	}
	for _, job := range wf.Jobs {
		if job.Env["VERSION"] != "${{ github.ref_name }}" {
			r.add("the job's VERSION must be the tag (${{ github.ref_name }}), is %q", job.Env["VERSION"])
		}
		first := map[int]int{} // releaseSteps index → the first step that does it
		for i, s := range job.Steps {
			for k, want := range releaseSteps {
				if _, seen := first[k]; !seen && regexp.MustCompile(want.run).MatchString(s.Run) {
					first[k] = i
				}
			}
			if strings.Contains(s.Run, "make push") && (s.Env["REGISTRY_USER"] == "" || !strings.Contains(s.Env["REGISTRY_PASSWORD"], "secrets.GITHUB_TOKEN")) {
				r.add("step %q must set REGISTRY_USER and REGISTRY_PASSWORD (secrets.GITHUB_TOKEN)", s.Name)
			}
			bash := exec.Command("bash", "-n")
			bash.Stdin = strings.NewReader(s.Run)
			if out, err := bash.CombinedOutput(); err != nil {
				r.add("step %q is not valid bash: %v\n%s", s.Name, err, out)
			}
		}
		for k, want := range releaseSteps {
			i, ok := first[k]
			prev, prevOK := first[k-1]
			switch {
			case !ok:
				r.add("no step %s", want.what)
			case prevOK && prev >= i:
				r.add("the step that %s must come after the one that %s", want.what, releaseSteps[k-1].what)
			}
		}
	}
	for _, target := range []string{"image", "push"} {
		if !strings.Contains(makeRecipe(in.files["Makefile"], target), "./cmd/rds-image "+map[string]string{"image": "build", "push": "push"}[target]) {
			r.add("the Makefile's %s target does not run cmd/rds-image", target)
		}
	}
}
