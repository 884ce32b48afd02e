package routeros

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

func TestNewValidatesConfig(t *testing.T) {
	dir := t.TempDir()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := write("id", pem.EncodeToMemory(block))
	block, err = ssh.MarshalPrivateKeyWithPassphrase(priv, "", []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	encrypted := write("id-enc", pem.EncodeToMemory(block))
	hostKey, _ := ssh.NewPublicKey(pub)
	known := write("known_hosts", []byte(knownhosts.Line([]string{"rds.example"}, hostKey)+"\n"))
	ok := Config{Address: "rds.example", User: "admin", KeyFile: keyFile, KnownHostsFile: known}

	cases := []struct {
		name    string
		mut     func(*Config)
		wantErr string
	}{
		{"valid", func(*Config) {}, ""},
		{"insecure opt-in", func(c *Config) { c.KnownHostsFile, c.InsecureSkipHostKey = "", true }, ""},
		{"no address", func(c *Config) { c.Address = "" }, "Address is empty"},
		{"no user", func(c *Config) { c.User = "" }, "User is empty"},
		{"bad port", func(c *Config) { c.Port = 70000 }, "not a TCP port"},
		{"no key", func(c *Config) { c.KeyFile = "" }, "no SSH key"},
		{"missing key file", func(c *Config) { c.KeyFile = filepath.Join(dir, "nope") }, "read SSH key"},
		{"not a key", func(c *Config) { c.KeyFile = known }, "parse SSH key"},
		{"encrypted key", func(c *Config) { c.KeyFile = encrypted }, "passphrase-protected"},
		{"key file and signer", func(c *Config) { c.Signer = mustSigner(t, priv) }, "choose one"},
		{"no host key check", func(c *Config) { c.KnownHostsFile = "" }, "no host key check"},
		{"both host key options", func(c *Config) { c.InsecureSkipHostKey = true }, "choose one"},
		{"host not in known_hosts", func(c *Config) { c.Address = "other.example" }, "no host key for other.example:22"},
		{"missing known_hosts", func(c *Config) { c.KnownHostsFile = filepath.Join(dir, "nope") }, "known_hosts"},
		{"unclean base", func(c *Config) { c.AllowedBases = []string{"/pool/../x"} }, "AllowedBases"},
	}
	for _, c := range cases {
		cfg := ok
		c.mut(&cfg)
		cl, err := New(cfg)
		switch {
		case c.wantErr == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("%s: error %v, want one mentioning %q", c.name, err, c.wantErr)
		}
		if cl != nil {
			if cl.connected() {
				t.Errorf("%s: New dialled", c.name)
			}
			cl.Close()
		}
	}

	cl, err := New(ok)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if cl.cfg.Port != 22 || cl.cfg.MaxSessions != 4 || cl.cfg.DialTimeout.Seconds() != 10 {
		t.Errorf("defaults: %+v", cl.cfg)
	}
	if !slices.Equal(cl.sshCfg.HostKeyAlgorithms, []string{ssh.KeyAlgoED25519}) {
		t.Errorf("host key algorithms %q, want only the type known_hosts holds", cl.sshCfg.HostKeyAlgorithms)
	}
}

func mustSigner(t *testing.T, priv ed25519.PrivateKey) ssh.Signer {
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
