package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"
)

// Files in channels (fsm/DESIGN.md "Files"). A file's bytes live in the
// nodes' chunk stores, never in the log; its manifest (which chunks make
// it, which servers held them when it was proposed) is channel state,
// written by PutFile and removed by DeleteFile. Manifests live in the
// channel's generation beside the keys, under system keys that start with
// NUL as the idempotency records do (idem.go), so that they move with the
// generation through Restore, are carried by snapshots (as 0x02 records)
// and hashed by hash checks, and no key listing ever shows them:
//
//	0x00 'f' | path   → manifest (below)
//	0x00 'c'          → the group's configuration in force: version byte (1) |
//	                    index uvarint | voters uvarint n, then n server ids
//	                    (bytes), in the configuration's order
//
//	manifest: version byte (1) | size uvarint | content type bytes |
//	          sha256 (32 bytes) | chunk size uvarint | chunks uvarint n,
//	          then n chunk ids (32 bytes each) | holders uvarint n, then n
//	          server ids (bytes) | create index uvarint | modify index uvarint
//
// The configuration record is written when a configuration entry is
// applied (ApplyBatch): hashicorp/raft hands a BatchingFSM its
// configuration entries in log order, so every replica holds the same
// configuration at every index. (It does not call
// raft.ConfigurationStore.StoreConfiguration for a BatchingFSM.) It is left
// out of hash checks: it is raft's own, equal on every replica by
// construction, and a replica of the previous release does not keep it, so
// hashing it would make both releases' replicas disagree during an upgrade.
//
// A file counts its size (logical bytes) in the channel's bytes, so the
// channel's quota covers keys and files together.

const (
	fileTag   byte = 'f'
	configTag byte = 'c'

	manifestVersion byte = 1
	configVersion   byte = 1

	// MaxFilePathBytes bounds a file's path, as MaxKeyBytes bounds a key.
	MaxFilePathBytes = 1024
	// MaxFileChunks bounds the chunks of one manifest, so that one log
	// entry stays small (2 MiB of ids: 256 GiB in 4 MiB chunks).
	MaxFileChunks = 1 << 16
	// MaxHolders bounds a manifest's holders (a channel has few replicas).
	MaxHolders = 64
	// MaxContentTypeBytes bounds a stored Content-Type.
	MaxContentTypeBytes = 255
	// MaxServerIDBytes bounds a server id in a manifest or configuration.
	MaxServerIDBytes = 255
	// MaxChunkSize bounds a file's chunk size (64 MiB).
	MaxChunkSize = 64 << 20

	// maxSystemKeyBytes bounds the user key of any NUL-prefixed record.
	maxSystemKeyBytes = 2 + MaxFilePathBytes
)

// Type bytes of the file commands (version 4).
const (
	typePutFile    byte = 0x06
	typeDeleteFile byte = 0x07
)

// Outcomes of file commands, decided in apply.
var (
	ErrFileNotFound = errors.New("fsm: file not found")
	// ErrPrecondition: an If-None-Match: * put found the file, or an
	// If-Match put or delete found another version (or none).
	ErrPrecondition = errors.New("fsm: file precondition failed")
	// ErrHoldersMinority: the holders of a manifest's chunks are not a
	// majority of the group's configuration in force at the entry (or the
	// channel has recorded no configuration yet).
	ErrHoldersMinority = errors.New("fsm: the chunks' holders are not a majority of the channel's replicas")
	// ErrFileQuota: the file would take the channel past the quota its
	// PutFile carries.
	ErrFileQuota = errors.New("fsm: channel quota exceeded")
	// ErrInvalidPath is a file path that is not clean.
	ErrInvalidPath = errors.New("fsm: invalid file path")
)

// File conditions: what a PutFile or DeleteFile requires of the current
// version of its path.
const (
	CondNone   byte = 0 // none
	CondAbsent byte = 1 // the path holds no file (If-None-Match: *)
	CondMatch  byte = 2 // the file's sha256 is Match (If-Match: <etag>)
)

// Manifest is a file as a channel stores it.
type Manifest struct {
	Path        string
	Size        uint64
	ContentType string
	SHA256      [32]byte
	ChunkSize   uint64
	Chunks      [][32]byte // chunk ids (chunk.ID), in order
	Holders     []string   // server ids that held every chunk when proposed
	CreateIndex uint64
	ModifyIndex uint64
}

// PutFile commits a manifest. Create and modify indexes are the entry's.
type PutFile struct {
	Manifest Manifest
	Cond     byte
	Match    [32]byte // CondMatch: the sha256 the current version must have
	// Quota is the channel's quota_bytes as the proposing node knew it (0:
	// none); the command carries it so that every replica decides the same.
	Quota uint64
}

// DeleteFile removes a file's manifest.
type DeleteFile struct {
	Path  string
	Cond  byte // CondNone or CondMatch
	Match [32]byte
}

func (*PutFile) isCommand()    {}
func (*DeleteFile) isCommand() {}

// ValidatePath reports whether p may name a file: 1..MaxFilePathBytes of
// UTF-8 without NUL or control characters, segments separated by '/',
// none empty, "." or "..", no leading or trailing slash.
func ValidatePath(p string) error {
	if p == "" || len(p) > MaxFilePathBytes {
		return fmt.Errorf("%w: a path is 1 to %d bytes, not %d", ErrInvalidPath, MaxFilePathBytes, len(p))
	}
	if !utf8.ValidString(p) {
		return fmt.Errorf("%w: not UTF-8", ErrInvalidPath)
	}
	for _, r := range p {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: control character %U", ErrInvalidPath, r)
		}
	}
	for _, seg := range strings.Split(p, "/") {
		switch seg {
		case "":
			return fmt.Errorf("%w: empty segment (leading, trailing or double slash)", ErrInvalidPath)
		case ".", "..":
			return fmt.Errorf("%w: segment %q", ErrInvalidPath, seg)
		}
	}
	return nil
}

func fileKey(path string) []byte {
	k := make([]byte, 0, 2+len(path))
	return append(append(k, 0, fileTag), path...)
}

var configKey = []byte{0, configTag}

func isFileKey(user []byte) bool   { return len(user) >= 2 && user[0] == 0 && user[1] == fileTag }
func isConfigKey(user []byte) bool { return bytes.Equal(user, configKey) }

func validateManifest(m *Manifest, what string) error {
	if err := ValidatePath(m.Path); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if len(m.ContentType) > MaxContentTypeBytes {
		return fmt.Errorf("%w: %s: content type of %d bytes", ErrInvalidCommand, what, len(m.ContentType))
	}
	if m.ChunkSize == 0 || m.ChunkSize > MaxChunkSize {
		return fmt.Errorf("%w: %s: chunk size %d outside 1..%d", ErrInvalidCommand, what, m.ChunkSize, MaxChunkSize)
	}
	if len(m.Chunks) > MaxFileChunks {
		return fmt.Errorf("%w: %s: %d chunks, over %d", ErrInvalidCommand, what, len(m.Chunks), MaxFileChunks)
	}
	// Every chunk but the last is full; the empty file has one empty chunk.
	want := max((m.Size+m.ChunkSize-1)/m.ChunkSize, 1)
	if uint64(len(m.Chunks)) != want {
		return fmt.Errorf("%w: %s: %d bytes in chunks of %d make %d chunks, not %d", ErrInvalidCommand, what, m.Size, m.ChunkSize, want, len(m.Chunks))
	}
	if len(m.Holders) == 0 || len(m.Holders) > MaxHolders {
		return fmt.Errorf("%w: %s: %d holders", ErrInvalidCommand, what, len(m.Holders))
	}
	for _, h := range m.Holders {
		if h == "" || len(h) > MaxServerIDBytes {
			return fmt.Errorf("%w: %s: holder id of %d bytes", ErrInvalidCommand, what, len(h))
		}
	}
	return nil
}

func appendManifest(b []byte, m *Manifest) []byte {
	b = append(b, manifestVersion)
	b = binary.AppendUvarint(b, m.Size)
	b = appendBytes(b, []byte(m.ContentType))
	b = append(b, m.SHA256[:]...)
	b = binary.AppendUvarint(b, m.ChunkSize)
	b = binary.AppendUvarint(b, uint64(len(m.Chunks)))
	for _, c := range m.Chunks {
		b = append(b, c[:]...)
	}
	b = binary.AppendUvarint(b, uint64(len(m.Holders)))
	for _, h := range m.Holders {
		b = appendBytes(b, []byte(h))
	}
	b = binary.AppendUvarint(b, m.CreateIndex)
	return binary.AppendUvarint(b, m.ModifyIndex)
}

func (d *decoder) manifest() Manifest {
	var m Manifest
	if v := d.u8(); v != manifestVersion && d.err == nil {
		d.fail(fmt.Errorf("manifest version %d", v))
	}
	m.Size = d.uvarint()
	m.ContentType = string(d.bytes(MaxContentTypeBytes))
	copy(m.SHA256[:], d.fixed(32))
	m.ChunkSize = d.uvarint()
	n := d.uvarint()
	if n > MaxFileChunks {
		d.fail(fmt.Errorf("%w: %d chunks", errLength, n))
	}
	if d.err == nil && n > 0 {
		m.Chunks = make([][32]byte, n)
		for i := range m.Chunks {
			copy(m.Chunks[i][:], d.fixed(32))
		}
	}
	n = d.uvarint()
	if n > MaxHolders {
		d.fail(fmt.Errorf("%w: %d holders", errLength, n))
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		m.Holders = append(m.Holders, string(d.bytes(MaxServerIDBytes)))
	}
	m.CreateIndex = d.uvarint()
	m.ModifyIndex = d.uvarint()
	return m
}

// decodeManifest parses a stored manifest of path.
func decodeManifest(path string, v []byte) (Manifest, error) {
	d := decoder{buf: v}
	m := d.manifest()
	if d.err == nil && len(d.buf) != 0 {
		d.err = fmt.Errorf("%d trailing bytes", len(d.buf))
	}
	if d.err != nil {
		return Manifest{}, fmt.Errorf("fsm: manifest of %q: %w", path, d.err)
	}
	m.Path = path
	return m, nil
}

func encodeFileCommand(c Command) []byte {
	switch c := c.(type) {
	case *PutFile:
		b := []byte{typePutFile, c.Cond}
		if c.Cond == CondMatch {
			b = append(b, c.Match[:]...)
		}
		b = binary.AppendUvarint(b, c.Quota)
		b = appendBytes(b, []byte(c.Manifest.Path))
		return appendManifest(b, &c.Manifest)
	case *DeleteFile:
		b := []byte{typeDeleteFile, c.Cond}
		if c.Cond == CondMatch {
			b = append(b, c.Match[:]...)
		}
		return appendBytes(b, []byte(c.Path))
	}
	return nil
}

// fileCommand decodes the body of a file command of type t; nil for
// another type.
func (d *decoder) fileCommand(t byte) Command {
	switch t {
	case typePutFile:
		p := &PutFile{Cond: d.u8()}
		if p.Cond == CondMatch {
			copy(p.Match[:], d.fixed(32))
		}
		p.Quota = d.uvarint()
		path := string(d.bytes(MaxFilePathBytes))
		p.Manifest = d.manifest()
		p.Manifest.Path = path
		return p
	case typeDeleteFile:
		p := &DeleteFile{Cond: d.u8()}
		if p.Cond == CondMatch {
			copy(p.Match[:], d.fixed(32))
		}
		p.Path = string(d.bytes(MaxFilePathBytes))
		return p
	}
	return nil
}

func validateFileCommand(c Command) error {
	switch c := c.(type) {
	case *PutFile:
		if c == nil {
			return fmt.Errorf("%w: nil put file", ErrInvalidCommand)
		}
		if c.Cond > CondMatch {
			return fmt.Errorf("%w: put file condition %d", ErrInvalidCommand, c.Cond)
		}
		if c.Cond != CondMatch && c.Match != [32]byte{} {
			return fmt.Errorf("%w: put file has a match but no match condition", ErrInvalidCommand)
		}
		if c.Manifest.CreateIndex != 0 || c.Manifest.ModifyIndex != 0 {
			return fmt.Errorf("%w: put file sets indexes", ErrInvalidCommand)
		}
		return validateManifest(&c.Manifest, "put file")
	case *DeleteFile:
		if c == nil {
			return fmt.Errorf("%w: nil delete file", ErrInvalidCommand)
		}
		if c.Cond != CondNone && c.Cond != CondMatch {
			return fmt.Errorf("%w: delete file condition %d", ErrInvalidCommand, c.Cond)
		}
		if c.Cond != CondMatch && c.Match != [32]byte{} {
			return fmt.Errorf("%w: delete file has a match but no match condition", ErrInvalidCommand)
		}
		if err := ValidatePath(c.Path); err != nil {
			return fmt.Errorf("delete file: %w", err)
		}
	}
	return nil
}

// Configuration is the voters of a group as the channel state records them.
type Configuration struct {
	Index  uint64   // the index of the configuration entry
	Voters []string // server ids
}

func encodeConfig(c Configuration) []byte {
	b := []byte{configVersion}
	b = binary.AppendUvarint(b, c.Index)
	b = binary.AppendUvarint(b, uint64(len(c.Voters)))
	for _, v := range c.Voters {
		b = appendBytes(b, []byte(v))
	}
	return b
}

func decodeConfig(v []byte) (Configuration, error) {
	d := decoder{buf: v}
	var c Configuration
	if ver := d.u8(); ver != configVersion && d.err == nil {
		d.fail(fmt.Errorf("configuration record version %d", ver))
	}
	c.Index = d.uvarint()
	n := d.uvarint()
	if n > MaxHolders {
		d.fail(fmt.Errorf("%w: %d voters", errLength, n))
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		c.Voters = append(c.Voters, string(d.bytes(MaxServerIDBytes)))
	}
	if d.err == nil && len(d.buf) != 0 {
		d.err = fmt.Errorf("%d trailing bytes", len(d.buf))
	}
	if d.err != nil {
		return Configuration{}, fmt.Errorf("fsm: configuration record: %w", d.err)
	}
	return c, nil
}

// validSystemRecord checks a NUL-prefixed record as a snapshot carries it:
// an idempotency record, a manifest or the configuration. It returns the
// logical bytes the record adds to the channel's bytes (a file's size).
func validSystemRecord(user, value []byte) (uint64, error) {
	switch {
	case isFileKey(user):
		path := string(user[2:])
		if err := ValidatePath(path); err != nil {
			return 0, err
		}
		m, err := decodeManifest(path, value)
		if err != nil {
			return 0, err
		}
		return m.Size, nil
	case isConfigKey(user):
		_, err := decodeConfig(value)
		return 0, err
	}
	return 0, validIdemRecord(user, value)
}

// applyConfiguration records the configuration a configuration entry
// carries as the one in force from its index on.
func (a *applier) applyConfiguration(l *raft.Log) {
	if len(l.Data) == 0 {
		return // not one raft writes (tests hand such entries in)
	}
	conf := raft.DecodeConfiguration(l.Data) // panics on a bad entry, as Decode's failure does
	c := Configuration{Index: l.Index}
	for _, s := range conf.Servers {
		if s.Suffrage == raft.Voter {
			c.Voters = append(c.Voters, string(s.ID))
		}
	}
	a.set(a.dataKey(configKey), encodeConfig(c))
}

// configuration reads the configuration in force through the batch.
func (a *applier) configuration() (Configuration, bool) {
	v, closer, err := a.b.Get(a.dataKey(configKey))
	if errors.Is(err, pebble.ErrNotFound) {
		return Configuration{}, false
	}
	if err != nil {
		panic(fmt.Sprintf("fsm: channel %d: entry %d: read configuration: %v", a.c.gid, a.index, err))
	}
	defer closer.Close()
	c, err := decodeConfig(v)
	if err != nil {
		panic(fmt.Sprintf("fsm: channel %d: entry %d: %v", a.c.gid, a.index, err))
	}
	return c, true
}

// manifest reads path's manifest through the batch.
func (a *applier) manifest(path string) (Manifest, bool) {
	m, found, err := getManifest(a.b, a.c.gid, a.gen, path)
	if err != nil {
		panic(fmt.Sprintf("fsm: channel %d: entry %d: %v", a.c.gid, a.index, err))
	}
	return m, found
}

func getManifest(r reader, gid, gen uint64, path string) (Manifest, bool, error) {
	v, closer, err := r.Get(dataKey(gid, gen, fileKey(path)))
	if errors.Is(err, pebble.ErrNotFound) {
		return Manifest{}, false, nil
	}
	if err != nil {
		return Manifest{}, false, fmt.Errorf("fsm: get channel %d file %q: %w", gid, path, err)
	}
	defer closer.Close()
	m, err := decodeManifest(path, v)
	return m, err == nil, err
}

// majority reports whether holders include more than half of voters.
func majority(holders, voters []string) bool {
	if len(voters) == 0 {
		return false
	}
	n := 0
	for _, v := range voters {
		for _, h := range holders {
			if h == v {
				n++
				break
			}
		}
	}
	return n > len(voters)/2
}

func checkCond(cond byte, match [32]byte, cur Manifest, found bool) bool {
	switch cond {
	case CondAbsent:
		return !found
	case CondMatch:
		return found && cur.SHA256 == match
	}
	return true
}

func (a *applier) applyPutFile(p *PutFile) *Result {
	m := p.Manifest
	old, found := a.manifest(m.Path)
	if !checkCond(p.Cond, p.Match, old, found) {
		return &Result{Index: a.index, Err: ErrPrecondition}
	}
	conf, ok := a.configuration()
	if !ok || !majority(m.Holders, conf.Voters) {
		return &Result{Index: a.index, Err: ErrHoldersMinority}
	}
	bytes := a.bytes
	if found {
		bytes -= old.Size
	}
	bytes += m.Size
	if p.Quota > 0 && bytes > p.Quota && (!found || m.Size > old.Size) {
		return &Result{Index: a.index, Err: ErrFileQuota}
	}
	a.bytes = bytes
	m.CreateIndex, m.ModifyIndex = a.index, a.index
	if found {
		m.CreateIndex = old.CreateIndex
	}
	a.set(a.dataKey(fileKey(m.Path)), appendManifest(nil, &m))
	return &Result{Index: a.index}
}

func (a *applier) applyDeleteFile(d *DeleteFile) *Result {
	old, found := a.manifest(d.Path)
	if !found {
		return &Result{Index: a.index, Err: ErrFileNotFound}
	}
	if !checkCond(d.Cond, d.Match, old, found) {
		return &Result{Index: a.index, Err: ErrPrecondition}
	}
	a.bytes -= old.Size
	a.del(a.dataKey(fileKey(d.Path)))
	return &Result{Index: a.index}
}

// File returns path's manifest, if the channel has that file.
func (c *Channel) File(path string) (Manifest, bool, error) {
	c.stateMu.RLock()
	defer c.stateMu.RUnlock()
	if c.closed {
		return Manifest{}, false, ErrClosed
	}
	return getManifest(c.db, c.gid, c.gen, path)
}

// Files returns up to limit manifests whose paths start with prefix and
// sort strictly after after, in path order, and whether more follow. A
// limit <= 0 means no limit.
func (c *Channel) Files(prefix, after string, limit int) (ms []Manifest, more bool, err error) {
	c.stateMu.RLock()
	defer c.stateMu.RUnlock()
	if c.closed {
		return nil, false, ErrClosed
	}
	lower := dataKey(c.gid, c.gen, fileKey(prefix))
	upper := prefixEnd(lower)
	it, err := c.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, false, fmt.Errorf("fsm: list files of channel %d: %w", c.gid, err)
	}
	defer it.Close()
	var valid bool
	if after != "" && after >= prefix {
		valid = it.SeekGE(append(dataKey(c.gid, c.gen, fileKey(after)), 0))
	} else {
		valid = it.First()
	}
	for ; valid; valid = it.Next() {
		if limit > 0 && len(ms) == limit {
			return ms, true, nil
		}
		path := string(it.Key()[genPrefixLen+2:])
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, false, fmt.Errorf("fsm: list files of channel %d: %w", c.gid, err)
		}
		m, err := decodeManifest(path, v)
		if err != nil {
			return nil, false, err
		}
		ms = append(ms, m)
	}
	if err := it.Error(); err != nil {
		return nil, false, fmt.Errorf("fsm: list files of channel %d: %w", c.gid, err)
	}
	return ms, false, nil
}

// Configuration returns the group configuration the state records (the
// one in force at Applied()), if one was applied since files came.
func (c *Channel) Configuration() (Configuration, bool, error) {
	c.stateMu.RLock()
	defer c.stateMu.RUnlock()
	if c.closed {
		return Configuration{}, false, ErrClosed
	}
	v, closer, err := c.db.Get(dataKey(c.gid, c.gen, configKey))
	if errors.Is(err, pebble.ErrNotFound) {
		return Configuration{}, false, nil
	}
	if err != nil {
		return Configuration{}, false, fmt.Errorf("fsm: channel %d configuration: %w", c.gid, err)
	}
	defer closer.Close()
	conf, err := decodeConfig(v)
	return conf, err == nil, err
}

// AppendManifest appends m, path included, to b: how a manifest travels
// between nodes (a stat or listing served for another node). Like results,
// never persisted.
func AppendManifest(b []byte, m *Manifest) []byte {
	b = appendBytes(b, []byte(m.Path))
	return appendManifest(b, m)
}

// DecodeManifest reads a manifest AppendManifest wrote and returns the rest
// of b.
func DecodeManifest(b []byte) (Manifest, []byte, error) {
	d := decoder{buf: b}
	path := string(d.bytes(MaxFilePathBytes))
	m := d.manifest()
	if d.err != nil {
		return Manifest{}, nil, fmt.Errorf("fsm: decode manifest: %w", d.err)
	}
	m.Path = path
	return m, d.buf, nil
}

// IsPutFile reports whether an encoded channel command is a PutFile.
func IsPutFile(entry []byte) bool { return len(entry) > 0 && entry[0] == typePutFile }

// ForgetConfigurationForTest deletes the recorded configuration, directly
// in pebble, as a replica whose configuration entries were all applied by
// a release without files looks. Not for production use.
func (c *Channel) ForgetConfigurationForTest() error {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	if c.closed {
		return ErrClosed
	}
	return c.db.Delete(dataKey(c.gid, c.gen, configKey), pebble.Sync)
}
