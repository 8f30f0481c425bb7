package cluster

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"

	"github.com/shardnet/shardnet/api"
)

// KeyringFile is the file, in a node's data dir, that holds the node's
// gossip keys: a JSON list of base64 keys, the primary first, mode 0600 (as
// Consul's serf/local.keyring). Once it exists it is the node's keyring: the
// key given at start (Config.GossipKey) only seeds it, so that keys rotated
// while the node ran survive its restart.
const KeyringFile = "gossip.keyring"

// Errors of gossip key management, mapped to HTTP statuses in server.
var (
	ErrGossipNotEncrypted    = errors.New("cluster: gossip is not encrypted on this node (started without a gossip key)")
	ErrInvalidGossipKey      = errors.New("cluster: invalid gossip key")
	ErrGossipKeyNotInstalled = errors.New("cluster: gossip key not installed")
	ErrGossipKeyPrimary      = errors.New("cluster: the primary gossip key cannot be removed")
)

// ParseGossipKey decodes a gossip key: standard base64 of 16, 24 or 32
// bytes (AES-128, -192 or -256), as `shardnet gossip keygen` prints and
// Consul's -encrypt takes.
func ParseGossipKey(s string) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: not base64: %v", ErrInvalidGossipKey, err)
	}
	if err := memberlist.ValidateKey(k); err != nil {
		return nil, fmt.Errorf("%w: %d bytes, want 16, 24 or 32", ErrInvalidGossipKey, len(k))
	}
	return k, nil
}

// KeyringExists reports whether dataDir holds a gossip keyring, which
// encrypts gossip whether or not a key is given at start.
func KeyringExists(dataDir string) bool {
	_, err := os.Stat(filepath.Join(dataDir, KeyringFile))
	return err == nil
}

// keyring is the node's memberlist keyring and the file that keeps it.
// Changes are written to the file before memberlist sees them, so that the
// file never lags behind the keys the node encrypts with.
type keyring struct {
	path string
	log  hclog.Logger

	mu sync.Mutex // serializes changes, so the file holds the last one
	kr *memberlist.Keyring
}

// openKeyring returns the node's keyring: the keyring file if there is
// one, else a new one holding initial (written to the file), else nil
// (gossip is not encrypted).
func openKeyring(dataDir string, initial []byte, log hclog.Logger) (*keyring, error) {
	k := &keyring{path: filepath.Join(dataDir, KeyringFile), log: log}
	b, err := os.ReadFile(k.path)
	switch {
	case err == nil:
		keys, err := decodeKeyring(b)
		if err != nil {
			return nil, fmt.Errorf("cluster: gossip keyring %s: %w", k.path, err)
		}
		if len(initial) > 0 && !bytes.Equal(initial, keys[0]) {
			log.Warn("the gossip key given at start is not this node's primary key: the keyring file wins, since keys may have been rotated since (shardnet gossip keyring)",
				"keyring", k.path, "given_key_installed", containsKey(keys, initial))
		}
		k.kr, err = memberlist.NewKeyring(keys, keys[0])
		if err != nil {
			return nil, fmt.Errorf("cluster: gossip keyring %s: %w", k.path, err)
		}
		return k, nil
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("cluster: read gossip keyring: %w", err)
	case len(initial) == 0:
		return nil, nil
	}
	if err := memberlist.ValidateKey(initial); err != nil {
		return nil, fmt.Errorf("cluster: gossip key: %w", err)
	}
	if err := writeKeyring(k.path, [][]byte{initial}); err != nil {
		return nil, err
	}
	k.kr, err = memberlist.NewKeyring(nil, initial)
	if err != nil {
		return nil, fmt.Errorf("cluster: gossip key: %w", err)
	}
	return k, nil
}

func decodeKeyring(b []byte) ([][]byte, error) {
	var enc []string
	if err := json.Unmarshal(b, &enc); err != nil {
		return nil, fmt.Errorf("not a JSON list of keys: %w", err)
	}
	if len(enc) == 0 {
		return nil, errors.New("no keys")
	}
	keys := make([][]byte, 0, len(enc))
	for i, s := range enc {
		k, err := ParseGossipKey(s)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// writeKeyring replaces the keyring file atomically: a crash leaves the old
// file or the new one, never half of one.
func writeKeyring(path string, keys [][]byte) error {
	enc := make([]string, len(keys))
	for i, k := range keys {
		enc[i] = base64.StdEncoding.EncodeToString(k)
	}
	b, err := json.Marshal(enc)
	if err != nil {
		return fmt.Errorf("cluster: encode gossip keyring: %w", err)
	}
	if err := writeFileAtomic(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("cluster: write gossip keyring: %w", err)
	}
	return nil
}

func containsKey(keys [][]byte, k []byte) bool {
	for _, x := range keys {
		if bytes.Equal(x, k) {
			return true
		}
	}
	return false
}

// change applies op to the keyring: the new key list is computed and
// written to the file first, then installed in memberlist.
func (k *keyring) change(op api.KeyringOp, key []byte) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	keys := k.kr.GetKeys() // the primary first
	var next [][]byte
	switch op {
	case api.KeyringInstall:
		if containsKey(keys, key) {
			return nil
		}
		next = append(keys, key)
	case api.KeyringUse:
		if !containsKey(keys, key) {
			return ErrGossipKeyNotInstalled
		}
		next = [][]byte{key}
		for _, x := range keys {
			if !bytes.Equal(x, key) {
				next = append(next, x)
			}
		}
	case api.KeyringRemove:
		if bytes.Equal(keys[0], key) {
			return ErrGossipKeyPrimary
		}
		if !containsKey(keys, key) {
			return nil
		}
		for _, x := range keys {
			if !bytes.Equal(x, key) {
				next = append(next, x)
			}
		}
	default:
		return fmt.Errorf("%w: unknown keyring operation %q", ErrInvalidRequest, op)
	}
	if err := writeKeyring(k.path, next); err != nil {
		return err
	}
	var err error
	switch op {
	case api.KeyringInstall:
		err = k.kr.AddKey(key)
	case api.KeyringUse:
		err = k.kr.UseKey(key)
	case api.KeyringRemove:
		err = k.kr.RemoveKey(key)
	}
	if err != nil {
		// Checked above; memberlist refusing now would be a bug, and
		// the file must not say what memberlist does not do.
		_ = writeKeyring(k.path, k.kr.GetKeys())
		return fmt.Errorf("cluster: gossip keyring %s: %w", op, err)
	}
	k.log.Info("gossip keyring changed", "op", string(op), "keys", len(next))
	return nil
}

func (k *keyring) list() (primary string, keys []string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, x := range k.kr.GetKeys() {
		keys = append(keys, base64.StdEncoding.EncodeToString(x))
	}
	return base64.StdEncoding.EncodeToString(k.kr.GetPrimaryKey()), keys
}

// GossipKeyring lists this node's gossip keys; ErrGossipNotEncrypted when
// it has none.
func (n *Node) GossipKeyring(context.Context) (api.GossipKeyring, error) {
	if n.gossip.keys == nil {
		return api.GossipKeyring{}, ErrGossipNotEncrypted
	}
	primary, keys := n.gossip.keys.list()
	return api.GossipKeyring{Node: n.cfg.Name, Primary: primary, Keys: keys}, nil
}

// ChangeGossipKeyring installs, uses (makes primary) or removes a gossip
// key on this node only, and returns the keyring that results; the
// operator applies a change on every member (`shardnet gossip keyring`
// does) before the next one (docs/operations.md "Rotating the gossip key").
func (n *Node) ChangeGossipKeyring(ctx context.Context, op api.KeyringOp, key string) (api.GossipKeyring, error) {
	if n.gossip.keys == nil {
		return api.GossipKeyring{}, ErrGossipNotEncrypted
	}
	k, err := ParseGossipKey(key)
	if err != nil {
		return api.GossipKeyring{}, err
	}
	if err := n.gossip.keys.change(op, k); err != nil {
		return api.GossipKeyring{}, err
	}
	return n.GossipKeyring(ctx)
}
