package deploy

import (
	"encoding/json"
	"errors"
	"maps"
	"regexp"
	"slices"
	"strings"

	"srvlab.io/rds-csi/internal/imagebuild"
)

var toolPackagesTable = regexp.MustCompile(`(?s)var toolPackages = map\[string\]string\{(.*?)\n\}`)

// toolTable reads the mount package's toolPackages table (tool → Debian package) from
// mount/fs.go's source: the image and the code cannot drift apart.
func toolTable(src string) (map[string]string, error) {
	block := toolPackagesTable.FindStringSubmatch(src)
	if block == nil {
		return nil, errors.New("mount/fs.go has no `var toolPackages = map[string]string{...}`")
	}
	tools := map[string]string{}
	for _, m := range regexp.MustCompile(`"([^"]+)":\s*"([^"]+)"`).FindAllStringSubmatch(block[1], -1) {
		tools[m[1]] = m[2]
	}
	return tools, nil
}

// debianSuites maps the Dockerfile's debian:<N> base to the release name cmd/rds-image uses.
var debianSuites = map[string]string{"12": "bookworm", "13": "trixie"}

// checkDockerfileMatchesImageTool: the image has two recipes, cmd/rds-image
// (imagebuild.DefaultSpec) and the Dockerfile, and both carry exactly the tools the mount
// package runs, from the same packages and Debian release, with the same config files, and
// run the same way (user, entrypoint, environment, binary path, labels).
func checkDockerfileMatchesImageTool(in *inputs, r *report) {
	spec := imagebuild.DefaultSpec()
	execed, err := toolTable(in.files["mount/fs.go"])
	if !r.must(err) {
		return
	}
	stages := dockerfileStages(in.files["Dockerfile"])
	tools, ok := findStage(stages, "tools")
	if !ok {
		r.add("the Dockerfile has no stage tools")
		return
	}
	final := stages[len(stages)-1]

	specTools := map[string]string{}
	for _, tool := range spec.Tools {
		specTools[tool.Name] = tool.Package
	}
	if !maps.Equal(specTools, execed) {
		r.add("cmd/rds-image carries tools %v; the mount package execs %v", specTools, execed)
	}
	collect := tools.run("ldd")
	if loop := regexp.MustCompile(`for tool in ([^;]+);`).FindStringSubmatch(collect); loop == nil {
		r.add("the Dockerfile's collect step has no `for tool in ...;` loop")
	} else if got := slices.Sorted(slices.Values(strings.Fields(loop[1]))); !slices.Equal(got, sortedKeysOf(execed)) {
		r.add("the Dockerfile copies tools %v, the mount package execs %v", got, sortedKeysOf(execed))
	}
	pkgs := regexp.MustCompile(`--no-install-recommends((?:\s+[a-z0-9.+-]+)+)`).FindStringSubmatch(tools.run("apt-get install"))
	if pkgs == nil || !slices.Equal(slices.Sorted(slices.Values(strings.Fields(pkgs[1]))), spec.Packages()) {
		r.add("the Dockerfile installs %v, cmd/rds-image takes tools from %v", pkgs, spec.Packages())
	}
	if base := regexp.MustCompile(`^debian:(\d+)`).FindStringSubmatch(tools.from); base == nil || debianSuites[base[1]] != spec.Suite {
		r.add("the Dockerfile's tools stage is FROM %s, cmd/rds-image uses Debian %s", tools.from, spec.Suite)
	}

	for _, c := range spec.Config {
		want := "cp " + c.Path + ` "$ROOTFS` + c.Path + `"`
		switch {
		case c.Symlink != "":
			want = "ln -sf " + c.Symlink + ` "$ROOTFS` + c.Path + `"`
		case c.Package == "":
			want = "printf '" + strings.ReplaceAll(c.Data, "\n", `\n`) + `' > "$ROOTFS` + c.Path + `"`
		}
		if !strings.Contains(collect, want) {
			r.add("the Dockerfile does not make %s as cmd/rds-image does: want %s", c.Path, want)
		}
	}
	if !strings.Contains(collect, `chmod 1777 "$ROOTFS/tmp"`) {
		r.add("the Dockerfile's /tmp is not 1777 like cmd/rds-image's")
	}

	if u := final.all("USER"); len(u) != 1 || u[0].args != spec.User {
		r.add("the Dockerfile's USER %v, cmd/rds-image %s", u, spec.User)
	}
	var entrypoint []string
	if ep := final.all("ENTRYPOINT"); len(ep) != 1 || json.Unmarshal([]byte(ep[0].args), &entrypoint) != nil || !slices.Equal(entrypoint, spec.Entrypoint) {
		r.add("the Dockerfile's ENTRYPOINT %v, cmd/rds-image %v", ep, spec.Entrypoint)
	}
	var env []string
	for _, in := range final.all("ENV") {
		env = append(env, in.args)
	}
	if !slices.Equal(env, spec.Env) {
		r.add("the Dockerfile's ENV %v, cmd/rds-image %v", env, spec.Env)
	}
	if !slices.ContainsFunc(final.all("COPY"), func(in instruction) bool { return in.args == "--from=build /out/rds-csi "+spec.Binary }) {
		r.add("the Dockerfile does not put the binary at %s", spec.Binary)
	}
	labels := map[string]string{}
	for _, in := range final.all("LABEL") {
		for _, m := range regexp.MustCompile(`([a-z0-9.]+)="([^"]*)"`).FindAllStringSubmatch(in.args, -1) {
			labels[m[1]] = m[2]
		}
	}
	// Version and revision are build arguments in one recipe, Build's inputs in the other.
	delete(labels, "org.opencontainers.image.version")
	delete(labels, "org.opencontainers.image.revision")
	if !maps.Equal(labels, spec.Labels) {
		r.add("the Dockerfile's labels %v, cmd/rds-image's %v", labels, spec.Labels)
	}
}

var (
	makeRegistry  = regexp.MustCompile(`(?m)^REGISTRY\s*\?=\s*(\S+)\s*$`)
	makeImage     = regexp.MustCompile(`(?m)^IMAGE\s*\?=\s*\$\(REGISTRY\)/(\S+)\s*$`)
	scriptDefault = regexp.MustCompile(`(?m)^IMAGE=\$\{IMAGE:-([^}]+)\}$`)
	workflowPin   = regexp.MustCompile(`rds-image pin -image (\S+)`)
)

// checkImageRepository: one image repository everywhere. deploy.yaml's rds-csi image is the
// one `make image` tags (the Makefile's $(REGISTRY)/<IMAGE>), build-image.sh's default, and
// the one the release workflow pins in the published deploy.yaml (`rds-image pin -image`,
// which fails the release when deploy.yaml has no such line).
func checkImageRepository(in *inputs, r *report) {
	var repos []string
	for _, p := range in.m.pods(r) {
		repo, _, _ := strings.Cut(p.plugin.Image, ":")
		repos = append(repos, p.owner+" runs "+repo)
	}
	reg, img := makeRegistry.FindStringSubmatch(in.files["Makefile"]), makeImage.FindStringSubmatch(in.files["Makefile"])
	script := scriptDefault.FindStringSubmatch(in.files["test/image/build-image.sh"])
	pin := workflowPin.FindStringSubmatch(in.files[".github/workflows/release.yml"])
	if reg == nil || img == nil || script == nil || pin == nil {
		r.add("want `REGISTRY ?=` and `IMAGE ?= $(REGISTRY)/…` in the Makefile, `IMAGE=${IMAGE:-…}` in build-image.sh and `rds-image pin -image …` in the release workflow")
		return
	}
	want := reg[1] + "/" + img[1]
	repos = append(repos, "build-image.sh tags "+script[1], "the release workflow pins "+pin[1])
	for _, got := range repos {
		if !strings.HasSuffix(got, " "+want) {
			r.add("%s; make image tags %s", got, want)
		}
	}
}
