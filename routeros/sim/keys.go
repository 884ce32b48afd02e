package sim

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/crypto/ssh"
)

// NewKey makes an ed25519 key pair (cheap enough for every test) and returns its signer
// and its OpenSSH private key file contents.
func NewKey() (ssh.Signer, []byte, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("sim: generate key: %w", err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, nil, fmt.Errorf("sim: signer: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "rds-sim")
	if err != nil {
		return nil, nil, fmt.Errorf("sim: marshal key: %w", err)
	}
	return signer, pem.EncodeToMemory(block), nil
}

// LoadOrCreateHostKey reads an OpenSSH private key file, or creates an ed25519 one (mode
// 0600) when the file does not exist.
func LoadOrCreateHostKey(path string) (ssh.Signer, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		signer, pemBytes, err := NewKey()
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("sim: create host key directory: %w", err)
		}
		if err := os.WriteFile(path, pemBytes, 0o600); err != nil {
			return nil, fmt.Errorf("sim: write host key: %w", err)
		}
		return signer, nil
	}
	if err != nil {
		return nil, fmt.Errorf("sim: read host key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("sim: parse host key %s: %w", path, err)
	}
	return signer, nil
}

// LoadAuthorizedKeys reads an OpenSSH authorized_keys file.
func LoadAuthorizedKeys(path string) ([]ssh.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("sim: read authorized keys: %w", err)
	}
	var keys []ssh.PublicKey
	for len(data) > 0 {
		key, _, _, rest, err := ssh.ParseAuthorizedKey(data)
		if err != nil {
			break // only blank lines and comments are left
		}
		keys = append(keys, key)
		data = rest
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("sim: %s holds no public key: add the client's key (ssh-ed25519 AAAA…)", path)
	}
	return keys, nil
}
