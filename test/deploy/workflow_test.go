package deploy

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	sigsyaml "sigs.k8s.io/yaml"
)

const workflowPath = ".github/workflows/release.yml"

// workflow is the part of a GitHub Actions workflow the release checks read.
type workflow struct {
	On          map[string]any    `json:"on"`
	True        map[string]any    `json:"true"` // `on:` read as a YAML 1.1 boolean key
	Permissions map[string]string `json:"permissions"`
	Jobs        map[string]struct {
		RunsOn string            `json:"runs-on"`
		Env    map[string]string `json:"env"`
		Steps  []workflowStep    `json:"steps"`
	} `json:"jobs"`
}

type workflowStep struct {
	Name string            `json:"name"`
	Uses string            `json:"uses"`
	Run  string            `json:"run"`
	Env  map[string]string `json:"env"`
}

func (s workflowStep) String() string {
	if s.Name != "" {
		return fmt.Sprintf("step %q", s.Name)
	}
	return fmt.Sprintf("step %q", s.Uses+s.Run)
}

// makeRecipe returns the recipe lines of a Makefile target.
func makeRecipe(makefile, target string) string {
	m := regexp.MustCompile(`(?ms)^` + regexp.QuoteMeta(target) + `:[^\n]*\n((?:\t[^\n]*\n)+)`).FindStringSubmatch(makefile)
	if m == nil {
		return ""
	}
	return m[1]
}

// checkReleaseWorkflow is every rule for the release workflow: it runs on a version tag,
// builds, proves and pushes the image with the repository's own tool (make image / make
// push → cmd/rds-image, never a container engine), to ghcr.io, and publishes a deploy.yaml
// pinned to the pushed digest.
func checkReleaseWorkflow(raw []byte, makefile string, image string, r *report) {
	var wf workflow
	if err := sigsyaml.Unmarshal(raw, &wf); err != nil {
		r.add("%s is not YAML: %v", workflowPath, err)
		return
	}
	on := wf.On
	if on == nil {
		on = wf.True
	}
	push, _ := on["push"].(map[string]any)
	tags, _ := push["tags"].([]any)
	if len(tags) == 0 || !strings.HasPrefix(fmt.Sprint(tags[0]), "v") {
		r.add("the workflow must run on pushed version tags (on.push.tags: [\"v*.*.*\"]), has on=%v", on)
	}
	for _, perm := range []string{"contents", "packages"} {
		if wf.Permissions[perm] != "write" {
			r.add("permissions.%s must be write (the release and the ghcr.io push use GITHUB_TOKEN), is %q", perm, wf.Permissions[perm])
		}
	}
	if len(wf.Jobs) != 1 {
		r.add("want one release job, have %d", len(wf.Jobs))
		return
	}
	for _, job := range wf.Jobs {
		if job.Env["VERSION"] != "${{ github.ref_name }}" {
			r.add("the job's VERSION must be the tag (${{ github.ref_name }}), is %q", job.Env["VERSION"])
		}
		at := map[string]int{} // what each step does → its index
		find := func(what string, match func(workflowStep) bool) (workflowStep, bool) {
			for i, s := range job.Steps {
				if match(s) {
					at[what] = i
					return s, true
				}
			}
			r.add("no step %s", what)
			return workflowStep{}, false
		}
		runs := func(re string) func(workflowStep) bool {
			return func(s workflowStep) bool { return regexp.MustCompile(re).MatchString(s.Run) }
		}
		if s, ok := find("builds the image with `make image VERSION=...`", runs(`\bmake image\b.*VERSION=`)); ok && !strings.Contains(s.Run, "REGISTRY=") {
			r.add("%s builds without REGISTRY=: the image would not be named for ghcr.io/<owner>", s)
		}
		find("proves the image (go test ./test/image/ with CI=true, as root)", runs(`sudo\b.*CI=true.*go test.*\./test/image/`))
		if s, ok := find("pushes with `make push`", runs(`\bmake push\b`)); ok {
			if s.Env["REGISTRY_USER"] == "" || !strings.Contains(s.Env["REGISTRY_PASSWORD"], "secrets.GITHUB_TOKEN") {
				r.add("%s must set REGISTRY_USER and REGISTRY_PASSWORD (secrets.GITHUB_TOKEN)", s)
			}
		}
		if s, ok := find("pins deploy.yaml with `go run ./cmd/rds-image pin`", runs(`go run \./cmd/rds-image pin\b`)); ok {
			if !strings.Contains(s.Run, "-image "+image+" ") {
				r.add("%s must pin the image lines of %s, the repository deploy.yaml uses", s, image)
			}
			byVar := regexp.MustCompile(`-ref "[^"]*:\$VERSION@\$\{?digest\}?"`).MatchString(s.Run) && strings.Contains(s.Run, "digest=$(cat bin/image/pushed-digest)")
			inline := regexp.MustCompile(`-ref "[^"]*:\$VERSION@\$\(cat bin/image/pushed-digest\)"`).MatchString(s.Run)
			if !strings.Contains(s.Run, "< deploy.yaml") || !(byVar || inline) {
				r.add("%s must pin deploy.yaml to <registry>/rds-csi:$VERSION@<the digest make push wrote to bin/image/pushed-digest>", s)
			}
		}
		find("publishes the release with the pinned deploy.yaml", runs(`gh release create\b.*bin/release/deploy\.yaml`))
		order := []string{
			"builds the image with `make image VERSION=...`",
			"proves the image (go test ./test/image/ with CI=true, as root)",
			"pushes with `make push`",
			"pins deploy.yaml with `go run ./cmd/rds-image pin`",
			"publishes the release with the pinned deploy.yaml",
		}
		for i := 1; i < len(order); i++ {
			a, okA := at[order[i-1]]
			b, okB := at[order[i]]
			if okA && okB && a >= b {
				r.add("the step that %s must come before the one that %s", order[i-1], order[i])
			}
		}
		for _, s := range job.Steps {
			if strings.HasPrefix(s.Uses, "docker/") || regexp.MustCompile(`\b(docker|podman|buildah)\b`).MatchString(s.Run) {
				r.add("%s uses a container engine; the image is built and pushed by cmd/rds-image", s)
			}
			if s.Uses != "" && !regexp.MustCompile(`@(v\d+(\.\d+)*|[0-9a-f]{40})$`).MatchString(s.Uses) {
				r.add("%s: pin the action to a release (@vN) or a commit", s)
			}
		}
		if !strings.Contains(string(raw), `ghcr.io/${OWNER,,}`) {
			r.add("the workflow must push to ghcr.io/<owner, lower case>")
		}
	}
	// The same tool: make image and make push run cmd/rds-image.
	if !strings.Contains(makeRecipe(makefile, "image"), "./cmd/rds-image build") {
		r.add("the Makefile's image target does not run `go run ./cmd/rds-image build`")
	}
	if !strings.Contains(makeRecipe(makefile, "push"), "./cmd/rds-image push") {
		r.add("the Makefile's push target does not run `go run ./cmd/rds-image push`")
	}
	if !regexp.MustCompile(`(?m)^push:.*\bimage\b`).MatchString(makefile) {
		r.add("the Makefile's push target must depend on image, so it pushes what this commit builds")
	}
}

func readWorkflowInputs(t *testing.T) (raw []byte, makefile, image string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot, workflowPath))
	if err != nil {
		t.Fatal(err)
	}
	mk, err := os.ReadFile(filepath.Join(repoRoot, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	r := &report{}
	image = defaultImageRepo(r)
	for _, p := range r.problems {
		t.Fatal(p)
	}
	return raw, string(mk), image
}

func TestReleaseWorkflow(t *testing.T) {
	raw, makefile, image := readWorkflowInputs(t)
	r := &report{}
	checkReleaseWorkflow(raw, makefile, image, r)
	for _, p := range r.problems {
		t.Error(p)
	}
	// Every run script parses as bash (the runner's shell: bash -e).
	var wf workflow
	if err := sigsyaml.Unmarshal(raw, &wf); err != nil {
		t.Fatal(err)
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal("bash is needed to check the workflow's scripts")
	}
	for _, job := range wf.Jobs {
		for _, s := range job.Steps {
			if s.Run == "" {
				continue
			}
			cmd := exec.Command(bash, "-n")
			cmd.Stdin = strings.NewReader(s.Run)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("%s is not valid bash: %v\n%s", s, err, out)
			}
		}
	}
}

// TestReleaseWorkflowChecksCatchMistakes proves each rule can fail.
func TestReleaseWorkflowChecksCatchMistakes(t *testing.T) {
	raw, makefile, image := readWorkflowInputs(t)
	cases := []struct {
		name, old, new string
		inMakefile     bool
		want           string
	}{
		{"runs on every push", "    tags:\n      - \"v*.*.*\"\n", "    branches: [main]\n", false, "must run on pushed version tags"},
		{"no package permission", "packages: write", "packages: read", false, "permissions.packages must be write"},
		{"built with docker", `make image VERSION="$VERSION" REGISTRY="$REGISTRY"`, `docker buildx build --push -t "$REGISTRY/rds-csi:$VERSION" .`, false, "no step builds the image"},
		{"pushed with a docker action", "      - name: Push to ghcr.io\n", "      - uses: docker/login-action@v3\n      - name: Push to ghcr.io\n", false, "uses a container engine"},
		{"pushed without credentials", "REGISTRY_PASSWORD: ${{ secrets.GITHUB_TOKEN }}", "REGISTRY_PASSWORD: \"\"", false, "must set REGISTRY_USER and REGISTRY_PASSWORD"},
		{"deploy.yaml pinned by tag only", "-ref \"$REGISTRY/rds-csi:$VERSION@$digest\" < deploy.yaml", "-ref \"$REGISTRY/rds-csi:$VERSION\" < deploy.yaml", false, "pushed-digest"},
		{"deploy.yaml from sed, not the tool", "go run ./cmd/rds-image pin", "sed -e s/x/y/ #", false, "no step pins deploy.yaml"},
		{"chroot proof dropped", `sudo env "PATH=$PATH" HOME=/root CI=true go test -count=1 ./test/image/...`, "true", false, "no step proves the image"},
		{"floating action", "actions/checkout@v4", "actions/checkout@main", false, "pin the action"},
		{"tag not the version", "VERSION: ${{ github.ref_name }}", "VERSION: latest", false, "VERSION must be the tag"},
		{"make image without the tool", "$(GO) run ./cmd/rds-image build", "./test/image/build-image.sh #", true, "image target does not run"},
		{"make push without the tool", "$(GO) run ./cmd/rds-image push", "skopeo copy #", true, "push target does not run"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w, mk := string(raw), makefile
			target := &w
			if tc.inMakefile {
				target = &mk
			}
			if strings.Count(*target, tc.old) != 1 {
				t.Fatalf("mutation target %q occurs %d times", tc.old, strings.Count(*target, tc.old))
			}
			*target = strings.Replace(*target, tc.old, tc.new, 1)
			r := &report{}
			checkReleaseWorkflow([]byte(w), mk, image, r)
			for _, p := range r.problems {
				if strings.Contains(p, tc.want) {
					return
				}
			}
			t.Errorf("no problem containing %q; got %q", tc.want, r.problems)
		})
	}
}
