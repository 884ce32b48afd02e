package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"srvlab.io/rds-csi/routeros/sim"
)

// keyFiles are what an operator sets up between the driver and the RDS.
type keyFiles struct {
	clientKey, hostKey, authorized, knownHosts string
}

func writeKeys(dir string) (keyFiles, error) {
	k := keyFiles{
		clientKey: filepath.Join(dir, "id_ed25519"), hostKey: filepath.Join(dir, "host_ed25519"),
		authorized: filepath.Join(dir, "authorized_keys"), knownHosts: filepath.Join(dir, "known_hosts"),
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return k, err
	}
	client, err := writeKey(k.clientKey)
	if err != nil {
		return k, err
	}
	host, err := writeKey(k.hostKey)
	if err != nil {
		return k, err
	}
	return k, errors.Join(
		os.WriteFile(k.authorized, ssh.MarshalAuthorizedKey(client), 0o600),
		os.WriteFile(k.knownHosts, []byte(knownhosts.Line([]string{knownhosts.Normalize(simListen)}, host)+"\n"), 0o600))
}

func writeKey(path string) (ssh.PublicKey, error) {
	signer, pem, err := sim.NewKey()
	if err != nil {
		return nil, err
	}
	return signer.PublicKey(), os.WriteFile(path, pem, 0o600)
}

// writeIdentity gives the node the /etc/nvme a provisioned host has.
func writeIdentity(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	u := make([]byte, 16)
	if _, err := rand.Read(u); err != nil {
		return err
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	id := fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
	return errors.Join(
		os.WriteFile(filepath.Join(dir, "hostnqn"), []byte("nqn.2014-08.org.nvmexpress:uuid:"+id+"\n"), 0o644),
		os.WriteFile(filepath.Join(dir, "hostid"), []byte(id+"\n"), 0o644))
}
