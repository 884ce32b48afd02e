package imagebuild

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Deadlines of the external commands: apt-get talks to the network, dpkg-deb only to disk.
const (
	aptUpdateTimeout   = 5 * time.Minute
	aptDownloadTimeout = 10 * time.Minute
	aptQueryTimeout    = 2 * time.Minute
	dpkgTimeout        = 2 * time.Minute
)

// Debian fetches and unpacks Debian packages of one architecture with apt-get and dpkg-deb,
// using a private apt state below Cache: the host's sources, architectures and installed
// packages play no part, so a Debian or Ubuntu machine of any architecture builds both
// images from the same archive.
type Debian struct {
	Cache    string // directory for apt state, .deb files and unpacked packages
	Mirror   string // e.g. http://deb.debian.org/debian
	Security string // e.g. http://deb.debian.org/debian-security
	Keyring  string // the archive keyring apt verifies the release files with
	Suite    string // e.g. bookworm
	Logf     func(format string, args ...any)

	updated map[string]bool // architectures whose package lists this process refreshed
}

// Package is one downloaded and unpacked package.
type Package struct {
	Name, Version string
	File          string // the .deb's file name
	SHA256        string // as the archive's signed index gives it, checked on download
	Root          string // where it is unpacked
	Depends       []string
}

func (d *Debian) logf(format string, args ...any) {
	if d.Logf != nil {
		d.Logf(format, args...)
	}
}

func (d *Debian) aptDir(a Arch) string { return filepath.Join(d.Cache, "apt-"+a.Debian) }

// lock serialises builds sharing a cache (apt's own locks fail instead of waiting).
func (d *Debian) lock(a Arch) (unlock func(), err error) {
	dir := d.aptDir(a)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", dir, err)
	}
	return func() { f.Close() }, nil
}

// aptOptions point apt-get at the private state of architecture a.
func (d *Debian) aptOptions(a Arch) ([]string, error) {
	dir := d.aptDir(a)
	for _, sub := range []string{"lists/partial", "cache/archives/partial", "etc/apt.conf.d", "etc/preferences.d", "etc/trusted.gpg.d"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(d.Keyring); err != nil {
		return nil, fmt.Errorf("the Debian archive keyring %s is missing (apt-get install debian-archive-keyring): %w", d.Keyring, err)
	}
	src := fmt.Sprintf("deb [signed-by=%[1]s] %[2]s %[4]s main\ndeb [signed-by=%[1]s] %[2]s %[4]s-updates main\ndeb [signed-by=%[1]s] %[3]s %[4]s-security main\n",
		d.Keyring, d.Mirror, d.Security, d.Suite)
	if err := writeIfChanged(filepath.Join(dir, "etc/sources.list"), []byte(src)); err != nil {
		return nil, err
	}
	status := filepath.Join(dir, "status")
	if err := writeIfChanged(status, nil); err != nil {
		return nil, err
	}
	opts := map[string]string{
		"APT::Architecture":          a.Debian,
		"APT::Architectures::":       a.Debian,
		"Dir::State":                 dir,
		"Dir::State::Lists":          filepath.Join(dir, "lists"),
		"Dir::State::status":         status,
		"Dir::Cache":                 filepath.Join(dir, "cache"),
		"Dir::Etc::SourceList":       filepath.Join(dir, "etc/sources.list"),
		"Dir::Etc::SourceParts":      "-",
		"Dir::Etc::Parts":            filepath.Join(dir, "etc/apt.conf.d"),
		"Dir::Etc::Preferences":      filepath.Join(dir, "etc/preferences"),
		"Dir::Etc::PreferencesParts": filepath.Join(dir, "etc/preferences.d"),
		"Dir::Etc::TrustedParts":     filepath.Join(dir, "etc/trusted.gpg.d"),
		"Acquire::Languages":         "none",
		"Acquire::IndexTargets::deb::DEP-11::DefaultEnabled":             "false",
		"Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled":       "false",
		"Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled": "false",
		"Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled":       "false",
		"Acquire::Retries":       "3",
		"Acquire::http::Timeout": "60",
	}
	if os.Geteuid() == 0 {
		// The private directories are not readable by apt's sandbox user _apt (and only
		// root switches to it).
		opts["APT::Sandbox::User"] = "root"
	}
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var args []string
	for _, k := range keys {
		args = append(args, "-o", k+"="+opts[k])
	}
	return args, nil
}

// run runs a command under a deadline and returns its standard output; a failure carries
// the end of what it printed.
func run(ctx context.Context, timeout time.Duration, dir string, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive")
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (gave up after %s)", err, timeout)
		}
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 2000 {
			msg = "..." + msg[len(msg)-2000:]
		}
		return nil, fmt.Errorf("%s %s: %w: %s", name, args[len(args)-1], err, msg)
	}
	return stdout.Bytes(), nil
}

// update refreshes architecture a's package lists once per process.
func (d *Debian) update(ctx context.Context, a Arch, opts []string) error {
	if d.updated[a.Debian] {
		return nil
	}
	d.logf("apt-get update (%s %s)", d.Suite, a.Debian)
	if _, err := run(ctx, aptUpdateTimeout, "", "apt-get", append(opts, "-q", "update")...); err != nil {
		return err
	}
	if d.updated == nil {
		d.updated = map[string]bool{}
	}
	d.updated[a.Debian] = true
	return nil
}

// uriLine is one line of `apt-get download --print-uris`:
// 'http://.../e2fsprogs_1.47.0-2_amd64.deb' e2fsprogs_1.47.0-2_amd64.deb 589432 SHA256:ab12...
var uriLine = regexp.MustCompile(`^'([^']+)' (\S+\.deb) (\d+) SHA256:([0-9a-f]{64})$`)

// Fetch downloads (unless cached with the right hash) and unpacks the named packages of
// architecture a, returning them by name.
func (d *Debian) Fetch(ctx context.Context, a Arch, names []string) (map[string]*Package, error) {
	unlock, err := d.lock(a)
	if err != nil {
		return nil, err
	}
	defer unlock()
	opts, err := d.aptOptions(a)
	if err != nil {
		return nil, err
	}
	if err := d.update(ctx, a, opts); err != nil {
		return nil, err
	}
	names = append([]string(nil), names...)
	sort.Strings(names)
	out, err := run(ctx, aptQueryTimeout, "", "apt-get", append(append(opts, "download", "--print-uris"), names...)...)
	if err != nil {
		return nil, err
	}
	type want struct{ file, sha string }
	var wants []want
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		m := uriLine.FindStringSubmatch(strings.TrimSpace(sc.Text()))
		if m != nil {
			wants = append(wants, want{file: m[2], sha: m[4]})
		}
	}
	if len(wants) != len(names) {
		return nil, fmt.Errorf("apt-get download --print-uris %v named %d packages, want %d:\n%s", names, len(wants), len(names), out)
	}
	debs := filepath.Join(d.Cache, "debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return nil, err
	}
	var missing []string
	for _, w := range wants {
		if sum, err := fileSHA256(filepath.Join(debs, w.file)); err != nil || sum != w.sha {
			// A .deb is named <package>_<version>_<arch>.deb; apt lists them in its own order.
			name, _, _ := strings.Cut(w.file, "_")
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		d.logf("apt-get download %s (%s)", strings.Join(missing, " "), a.Debian)
		if _, err := run(ctx, aptDownloadTimeout, debs, "apt-get", append(append(opts, "-q", "download"), missing...)...); err != nil {
			return nil, err
		}
	}
	pkgs := map[string]*Package{}
	for _, w := range wants {
		path := filepath.Join(debs, w.file)
		if sum, err := fileSHA256(path); err != nil || sum != w.sha {
			return nil, fmt.Errorf("%s: after download its SHA256 is %q, the archive index says %s (%v)", path, sum, w.sha, err)
		}
		p, err := d.unpack(ctx, path)
		if err != nil {
			return nil, err
		}
		p.SHA256 = w.sha
		pkgs[p.Name] = p
	}
	for _, n := range names {
		if pkgs[n] == nil {
			return nil, fmt.Errorf("apt-get download %s gave no package named %s", n, n)
		}
	}
	return pkgs, nil
}

// unpack extracts a .deb once (into a directory named after the file) and reads its control
// fields.
func (d *Debian) unpack(ctx context.Context, deb string) (*Package, error) {
	file := filepath.Base(deb)
	root := filepath.Join(d.Cache, "unpacked", strings.TrimSuffix(file, ".deb"))
	if _, err := os.Stat(root); errors.Is(err, os.ErrNotExist) {
		// Unpack beside the final name and rename, so an interrupted unpack is never taken
		// for a finished one (it stays behind as an unused .partial directory).
		if err := os.MkdirAll(filepath.Dir(root), 0o755); err != nil {
			return nil, err
		}
		tmp, err := os.MkdirTemp(filepath.Dir(root), file+".partial-")
		if err != nil {
			return nil, err
		}
		if _, err := run(ctx, dpkgTimeout, "", "dpkg-deb", "-x", deb, tmp); err != nil {
			return nil, err
		}
		if err := os.Rename(tmp, root); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	fields, err := run(ctx, dpkgTimeout, "", "dpkg-deb", "-f", deb, "Package", "Version", "Depends", "Pre-Depends")
	if err != nil {
		return nil, err
	}
	p := &Package{File: file, Root: root}
	for _, line := range strings.Split(string(fields), "\n") {
		key, value, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		switch key {
		case "Package":
			p.Name = value
		case "Version":
			p.Version = value
		case "Depends", "Pre-Depends":
			p.Depends = append(p.Depends, parseDepends(value)...)
		}
	}
	if p.Name == "" || p.Version == "" {
		return nil, fmt.Errorf("%s: no Package or Version control field", deb)
	}
	sort.Strings(p.Depends)
	return p, nil
}

// parseDepends reads a Depends field into package names: the first of each set of
// alternatives, without version constraints or architecture qualifiers.
func parseDepends(field string) []string {
	var names []string
	for _, dep := range strings.Split(field, ",") {
		first, _, _ := strings.Cut(dep, "|")
		name, _, _ := strings.Cut(strings.TrimSpace(first), " ")
		name, _, _ = strings.Cut(name, "(")
		name, _, _ = strings.Cut(name, ":")
		if name = strings.TrimSpace(name); name != "" {
			names = append(names, name)
		}
	}
	return names
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func writeIfChanged(path string, data []byte) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return nil
	}
	return os.WriteFile(path, data, 0o644)
}
