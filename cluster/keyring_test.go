package cluster

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/shardnet/shardnet/api"
)

func key(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

// TestKeyringFile: the key given at the first start seeds the keyring file
// (0600); every change is in the file, the primary first, so a node that
// restarts with its first key still uses the rotated ones; a damaged file
// stops the node rather than running gossip under a guess.
func TestKeyringFile(t *testing.T) {
	dir := t.TempDir()
	log := hclog.NewNullLogger()
	if k, err := openKeyring(dir, nil, log); err != nil || k != nil {
		t.Fatalf("no key, no file: %v, %v (want no keyring)", k, err)
	}
	if KeyringExists(dir) {
		t.Fatal("a keyring file without a key")
	}
	k, err := openKeyring(dir, key(1), log)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, KeyringFile)
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("keyring file: %v, %v", st, err)
	}
	for _, step := range []struct {
		op  api.KeyringOp
		key []byte
		err error
	}{
		{api.KeyringUse, key(2), ErrGossipKeyNotInstalled},
		{api.KeyringInstall, key(2), nil},
		{api.KeyringInstall, key(2), nil}, // again: nothing changes
		{api.KeyringRemove, key(1), ErrGossipKeyPrimary},
		{api.KeyringUse, key(2), nil},
		{api.KeyringInstall, key(3), nil},
		{api.KeyringRemove, key(1), nil},
		{api.KeyringRemove, key(9), nil}, // not there: nothing changes
	} {
		if err := k.change(step.op, step.key); !errors.Is(err, step.err) {
			t.Fatalf("%s %x: %v, want %v", step.op, step.key[0], err, step.err)
		}
	}
	want := [][]byte{key(2), key(3)}
	if got := k.kr.GetKeys(); len(got) != 2 || !bytes.Equal(got[0], want[0]) || !bytes.Equal(got[1], want[1]) {
		t.Fatalf("memberlist's keys: %x", got)
	}
	// A restart with the first key: the file wins.
	k2, err := openKeyring(dir, key(1), log)
	if err != nil {
		t.Fatal(err)
	}
	if got := k2.kr.GetKeys(); len(got) != 2 || !bytes.Equal(got[0], want[0]) || !bytes.Equal(got[1], want[1]) {
		t.Fatalf("keys after a restart: %x, want %x", got, want)
	}
	if !KeyringExists(dir) {
		t.Fatal("KeyringExists: false")
	}
	for name, content := range map[string]string{
		"not json": "{", "empty": "[]", "short key": `["c2hvcnQ="]`, "not base64": `["!!"]`,
	} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := openKeyring(dir, key(1), log); err == nil || !strings.Contains(err.Error(), KeyringFile) {
			t.Errorf("%s keyring file: %v", name, err)
		}
	}
}

func TestParseGossipKey(t *testing.T) {
	for in, ok := range map[string]bool{
		"AAECAwQFBgcICQoLDA0ODw==":                     true,  // 16 bytes
		"AAECAwQFBgcICQoLDA0ODxAREhMUFRYX":             true,  // 24
		"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=": true,  // 32
		"AAECAwQFBgcICQoLDA0O":                         false, // 15
		"AAECAwQFBgcICQoLDA0ODw":                       false, // unpadded
		"":                                             false,
		"not base64!":                                  false,
	} {
		_, err := ParseGossipKey(in)
		if (err == nil) != ok || (err != nil && !errors.Is(err, ErrInvalidGossipKey)) {
			t.Errorf("ParseGossipKey(%q): %v", in, err)
		}
	}
}
