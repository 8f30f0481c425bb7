package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclparse"

	"github.com/shardnet/shardnet/cluster"
	"github.com/shardnet/shardnet/internal/agent"
	"github.com/shardnet/shardnet/internal/procs"
	"github.com/shardnet/shardnet/server"
)

// agentConfig is a node's configuration: defaults, then the HCL file of
// -config, then the flags actually given. HCL attribute names are the flag
// names with '_' for '-'.
type agentConfig struct {
	Name            string   `hcl:"name,optional"`
	Role            string   `hcl:"role,optional"`
	Zone            string   `hcl:"zone,optional"`
	DataDir         string   `hcl:"data_dir,optional"`
	Bind            string   `hcl:"bind,optional"`
	Advertise       string   `hcl:"advertise,optional"`
	GossipPort      int      `hcl:"gossip_port,optional"`
	ClusterPort     int      `hcl:"cluster_port,optional"`
	HTTPAddr        string   `hcl:"http_addr,optional"`
	BootstrapExpect int      `hcl:"bootstrap_expect,optional"`
	Join            []string `hcl:"join,optional"`
	Stake           uint64   `hcl:"stake,optional"`
	DiskBytes       uint64   `hcl:"disk_bytes,optional"`
	CapacityDisk    uint64   `hcl:"capacity_disk,optional"` // the older name of disk_bytes
	Operator        string   `hcl:"operator,optional"`
	ServeData       bool     `hcl:"serve_data,optional"`
	DeadAfter       string   `hcl:"dead_after,optional"`
	MaxReplicas     int      `hcl:"max_replicas,optional"`
	Token           string   `hcl:"token,optional"`
	TokenFile       string   `hcl:"token_file,optional"`
	ClusterKey      string   `hcl:"cluster_key,optional"`
	ClusterKeyFile  string   `hcl:"cluster_key_file,optional"`
	Encrypt         string   `hcl:"encrypt,optional"`
	EncryptFile     string   `hcl:"encrypt_file,optional"`
	HTTPTLSCert     string   `hcl:"http_tls_cert,optional"`
	HTTPTLSKey      string   `hcl:"http_tls_key,optional"`
	Insecure        bool     `hcl:"insecure,optional"`
	LogLevel        string   `hcl:"log_level,optional"`
	LogJSON         bool     `hcl:"log_json,optional"`
	RateLimit       float64  `hcl:"rate_limit,optional"`
	KeyIndexMB      int      `hcl:"key_index_mb,optional"`
	LeaderRebalance string   `hcl:"leader_rebalance,optional"`
	HashCheck       string   `hcl:"hash_check_interval,optional"`
	ChunkGC         string   `hcl:"chunk_gc_interval,optional"`
	ChunkGCGrace    string   `hcl:"chunk_gc_grace,optional"`
	RepairPerNode   int      `hcl:"repair_per_node,optional"`
	RepairMax       int      `hcl:"repair_max,optional"`
	IdleOneProc     bool     `hcl:"idle_one_proc,optional"`

	HTTPMaxConns          int    `hcl:"http_max_conns,optional"`
	HTTPMaxConnsPerClient int    `hcl:"http_max_conns_per_client,optional"`
	HTTPIdleTimeout       string `hcl:"http_idle_timeout,optional"`
	HTTPBodyTimeout       string `hcl:"http_body_timeout,optional"`
	HTTPBodyMinRate       int64  `hcl:"http_body_min_rate,optional"`

	// gossipKey is Encrypt decoded (checkKeys).
	gossipKey []byte

	// The cluster port's mutual TLS (tls.go): the node's certificate and
	// key and the cluster CA; -insecure (Insecure) runs without them.
	TLSCert string `hcl:"tls_cert,optional"`
	TLSKey  string `hcl:"tls_key,optional"`
	TLSCA   string `hcl:"tls_ca,optional"`

	// secretOnCommandLine: -token, -cluster-key or -encrypt was given as a flag,
	// where every local user's process listing shows it.
	secretOnCommandLine bool
}

func defaultAgentConfig() agentConfig {
	return agentConfig{
		Role:        "core",
		Bind:        "127.0.0.1",
		GossipPort:  7946,
		ClusterPort: 7947,
		HTTPAddr:    "127.0.0.1:8500",
		LogLevel:    "info",
		RateLimit:   20000,
		IdleOneProc: true,

		HTTPMaxConnsPerClient: server.DefaultMaxConnsPerClient,
		HTTPIdleTimeout:       server.DefaultIdleTimeout.String(),
		HTTPBodyTimeout:       server.DefaultBodyTimeout.String(),
		HTTPBodyMinRate:       server.DefaultBodyMinRate,
	}
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func agentFlags(c *agentConfig, configPath *string) *flag.FlagSet {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.StringVar(configPath, "config", "", "HCL config file; flags given on the command line win over it")
	fs.StringVar(&c.Name, "name", c.Name, "node id, unique in the cluster (required)")
	fs.StringVar(&c.Role, "role", c.Role, "core (runs the control plane, stakes) or resource (hosts data)")
	fs.StringVar(&c.Zone, "zone", c.Zone, "failure zone; the allocator spreads replicas across zones")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "directory for this node's data (required)")
	fs.StringVar(&c.Bind, "bind", c.Bind, "IP address to bind the gossip and cluster ports to")
	fs.StringVar(&c.Advertise, "advertise", c.Advertise, "IP address other nodes use to reach this one (default: -bind)")
	fs.IntVar(&c.GossipPort, "gossip-port", c.GossipPort, "gossip (memberlist) port, TCP and UDP")
	fs.IntVar(&c.ClusterPort, "cluster-port", c.ClusterPort, "cluster port: Raft and forwarding between nodes")
	fs.StringVar(&c.HTTPAddr, "http-addr", c.HTTPAddr, "host:port of the HTTP API")
	fs.IntVar(&c.BootstrapExpect, "bootstrap-expect", c.BootstrapExpect, "core nodes to wait for before forming the meta group (core nodes only)")
	join := (*stringList)(&c.Join)
	fs.Var(join, "join", "gossip address (host:port) of a node to join; repeatable")
	fs.Uint64Var(&c.Stake, "stake", c.Stake, "stake of a core node")
	fs.Uint64Var(&c.DiskBytes, "disk-bytes", c.DiskBytes, "disk bytes this node offers to channels (0: the size of the file system of -data-dir)")
	fs.Uint64Var(&c.CapacityDisk, "capacity-disk", c.CapacityDisk, "the older name of -disk-bytes")
	fs.StringVar(&c.Operator, "operator", c.Operator, "who runs this node; the allocator spreads a channel's replicas across operators as across zones")
	fs.BoolVar(&c.ServeData, "serve-data", c.ServeData, "a core node hosts channel replicas too (resource nodes always do); a cluster of core nodes only needs it")
	fs.StringVar(&c.DeadAfter, "dead-after", c.DeadAfter, "how long the meta leader must see a node absent from gossip before the registry calls it dead (until then: suspect); the meta leader's setting counts (default 5m)")
	fs.IntVar(&c.MaxReplicas, "max-replicas", c.MaxReplicas, "most channel replicas this node hosts (0: 2000)")
	fs.StringVar(&c.Token, "token", c.Token, "operator token every /v1 call must present (empty: no auth); process listings show it: prefer -token-file or $SHARDNET_TOKEN")
	fs.StringVar(&c.TokenFile, "token-file", c.TokenFile, "file holding the operator token, or several, one per line, all accepted (rotation: reread on SIGHUP); default: $SHARDNET_TOKEN")
	fs.StringVar(&c.ClusterKey, "cluster-key", c.ClusterKey, "secret nodes prove to each other on the cluster port under -insecure, instead of certificates; process listings show it: prefer -cluster-key-file or $SHARDNET_CLUSTER_KEY")
	fs.StringVar(&c.ClusterKeyFile, "cluster-key-file", c.ClusterKeyFile, "file holding the cluster key (default: $SHARDNET_CLUSTER_KEY)")
	fs.StringVar(&c.Encrypt, "encrypt", c.Encrypt, "gossip encryption key: base64 of 16, 24 or 32 random bytes (shardnet gossip keygen); it seeds the keyring file in -data-dir, which wins from then on (required unless -insecure or that file exists); process listings show it: prefer -encrypt-file or $SHARDNET_GOSSIP_KEY")
	fs.StringVar(&c.EncryptFile, "encrypt-file", c.EncryptFile, "file holding the gossip encryption key (default: $SHARDNET_GOSSIP_KEY)")
	fs.StringVar(&c.HTTPTLSCert, "http-tls-cert", c.HTTPTLSCert, "PEM certificate (chain) of the HTTP API: with -http-tls-key, the API serves HTTPS only; both files are read again on SIGHUP")
	fs.StringVar(&c.HTTPTLSKey, "http-tls-key", c.HTTPTLSKey, "PEM private key of -http-tls-cert")
	fs.IntVar(&c.HTTPMaxConns, "http-max-conns", c.HTTPMaxConns, "most open HTTP connections; at the cap the longest idle one is closed to make room (0: half the file descriptor limit)")
	fs.IntVar(&c.HTTPMaxConnsPerClient, "http-max-conns-per-client", c.HTTPMaxConnsPerClient, "most open HTTP connections from one client IP; beyond, 429 too_many_connections (-1: no cap)")
	fs.StringVar(&c.HTTPIdleTimeout, "http-idle-timeout", c.HTTPIdleTimeout, "close an HTTP keep-alive connection idle this long")
	fs.StringVar(&c.HTTPBodyTimeout, "http-body-timeout", c.HTTPBodyTimeout, "a request body must arrive within this plus its length at -http-body-min-rate, and never stall this long (408); an answer that cannot be written for this long closes the connection")
	fs.Int64Var(&c.HTTPBodyMinRate, "http-body-min-rate", c.HTTPBodyMinRate, "slowest upload rate, bytes per second, a request body is given time for")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "trace, debug, info, warn or error")
	fs.BoolVar(&c.LogJSON, "log-json", c.LogJSON, "log JSON lines")
	fs.IntVar(&c.KeyIndexMB, "key-index-mb", c.KeyIndexMB, "memory for the channels' in-memory key indexes, which spare each write a read of its key (0: 256; -1: none)")
	fs.StringVar(&c.HashCheck, "hash-check-interval", c.HashCheck, "how often the leader of each channel this node leads has every replica hash its state, so that a replica whose state differs from its group's is noticed and stops serving (default 5m; off: never)")
	fs.StringVar(&c.ChunkGC, "chunk-gc-interval", c.ChunkGC, "how often this node deletes the chunks of its store that no manifest of its channel replicas references (default 10m; off: never)")
	fs.StringVar(&c.ChunkGCGrace, "chunk-gc-grace", c.ChunkGCGrace, "an unreferenced chunk is kept this long after it was written, or after an upload last sent this replica a chunk (default 1h)")
	fs.StringVar(&c.LeaderRebalance, "leader-rebalance", c.LeaderRebalance, "how often this node hands the channels it leads back to their preferred leaders, the first nodes of their placements (default 10s; off: never)")
	fs.IntVar(&c.RepairPerNode, "repair-per-node", c.RepairPerNode, "on the meta leader: most replicas being moved onto one node at once, by automatic repair and drain (0: 2)")
	fs.IntVar(&c.RepairMax, "repair-max", c.RepairMax, "on the meta leader: most replicas being moved in the cluster at once, by automatic repair and drain (0: 8)")
	fs.BoolVar(&c.IdleOneProc, "idle-one-proc", c.IdleOneProc, "run on one processor (GOMAXPROCS=1) while the node uses under 25 % of a core, and on all again within a second of using 45 % (docs/operations.md); ignored when $GOMAXPROCS is set")
	fs.Float64Var(&c.RateLimit, "rate-limit", c.RateLimit, "requests per second each client IP may send (burst: twice that); 0: unlimited")
	tlsFlags(fs, c)
	return fs
}

// loadAgentConfig applies defaults, then the HCL file, then the flags
// actually set: the flags are parsed twice, the second time over the values
// the file produced, so only flags given on the command line override it.
func loadAgentConfig(args []string) (agentConfig, error) {
	var path string
	probe := defaultAgentConfig()
	fs := agentFlags(&probe, &path)
	fs.SetOutput(os.Stderr)
	if err := fs.Parse(args); err != nil {
		return probe, err
	}
	if fs.NArg() > 0 {
		return probe, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	cfg := defaultAgentConfig()
	if path != "" {
		file, diags := hclparse.NewParser().ParseHCLFile(path)
		if diags.HasErrors() {
			return cfg, fmt.Errorf("config %s: %s", path, diags.Error())
		}
		if diags := gohcl.DecodeBody(file.Body, nil, &cfg); diags.HasErrors() {
			return cfg, fmt.Errorf("config %s: %s", path, hcl.Diagnostics(diags).Error())
		}
	}
	var ignored string
	fs = agentFlags(&cfg, &ignored)
	fs.SetOutput(os.Stderr)
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	var errs []error
	if cfg.Name == "" {
		errs = append(errs, errors.New("-name is required"))
	}
	if cfg.DataDir == "" {
		errs = append(errs, errors.New("-data-dir is required"))
	}
	if _, _, err := net.SplitHostPort(cfg.HTTPAddr); err != nil {
		errs = append(errs, fmt.Errorf("-http-addr %q: %w", cfg.HTTPAddr, err))
	}
	if _, err := cfg.leaderRebalance(); err != nil {
		errs = append(errs, err)
	}
	if _, err := cfg.hashCheckInterval(); err != nil {
		errs = append(errs, err)
	}
	if _, _, err := cfg.chunkGC(); err != nil {
		errs = append(errs, err)
	}
	if _, err := cfg.deadAfter(); err != nil {
		errs = append(errs, err)
	}
	if _, err := cfg.httpLimits(); err != nil {
		errs = append(errs, err)
	}
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "token" || f.Name == "cluster-key" || f.Name == "encrypt" {
			cfg.secretOnCommandLine = true
		}
	})
	if err := cfg.readSecrets(os.Getenv); err != nil {
		errs = append(errs, err)
	} else if err := cfg.checkKeys(); err != nil {
		errs = append(errs, err)
	}
	if (cfg.HTTPTLSCert == "") != (cfg.HTTPTLSKey == "") {
		errs = append(errs, errors.New("-http-tls-cert and -http-tls-key go together: give both or neither"))
	}
	return cfg, errors.Join(errs...)
}

// checkKeys refuses to start a node whose cluster or gossip port would be
// open to anyone, unless -insecure says so. The keys are never derived
// from the operator token: whoever holds a token for the API would then
// hold the cluster too (docs/security.md "Secrets").
func (c *agentConfig) checkKeys() error {
	var errs []error
	if c.Encrypt != "" {
		k, err := cluster.ParseGossipKey(c.Encrypt)
		if err != nil {
			// Not the value: it is a secret.
			return fmt.Errorf("gossip key (-encrypt, -encrypt-file or $SHARDNET_GOSSIP_KEY): want base64 of 16, 24 or 32 bytes, as shardnet gossip keygen prints")
		}
		c.gossipKey = k
	}
	// The cluster port needs certificates unless -insecure (clusterTLS,
	// tls.go); with -insecure it proves the cluster key, if one is given.
	if c.Insecure {
		return nil
	}
	if c.gossipKey == nil && !cluster.KeyringExists(c.DataDir) {
		errs = append(errs, errors.New("no gossip key: pass -encrypt-file FILE or set $SHARDNET_GOSSIP_KEY (the same key on every node, made with shardnet gossip keygen; -insecure runs without one)"))
	}
	return errors.Join(errs...)
}

// readSecrets fills Token, ClusterKey and Encrypt from their files or, failing
// those, the environment. A secret given twice (flag or HCL, and a file)
// is refused: which one wins would be a guess.
func (c *agentConfig) readSecrets(getenv func(string) string) error {
	var errs []error
	for _, s := range []struct {
		name        string
		value, file *string
		env         string
	}{
		{"token", &c.Token, &c.TokenFile, "SHARDNET_TOKEN"},
		{"cluster-key", &c.ClusterKey, &c.ClusterKeyFile, "SHARDNET_CLUSTER_KEY"},
		{"encrypt", &c.Encrypt, &c.EncryptFile, "SHARDNET_GOSSIP_KEY"},
	} {
		switch {
		case *s.file != "" && *s.value != "":
			errs = append(errs, fmt.Errorf("-%s and -%s-file are both set: give one", s.name, s.name))
		case *s.file != "":
			b, err := os.ReadFile(*s.file)
			if err != nil {
				errs = append(errs, fmt.Errorf("-%s-file: %w", s.name, err))
				continue
			}
			v := strings.TrimSpace(string(b))
			if v == "" {
				errs = append(errs, fmt.Errorf("-%s-file %s is empty", s.name, *s.file))
				continue
			}
			*s.value = v
		case *s.value == "":
			*s.value = strings.TrimSpace(getenv(s.env))
		}
	}
	return errors.Join(errs...)
}

// httpLimits is the -http-* flags as the agent takes them.
func (c agentConfig) httpLimits() (server.Limits, error) {
	idle, err := time.ParseDuration(c.HTTPIdleTimeout)
	if err != nil || idle <= 0 {
		return server.Limits{}, fmt.Errorf("-http-idle-timeout %q: want a positive duration such as 60s", c.HTTPIdleTimeout)
	}
	body, err := time.ParseDuration(c.HTTPBodyTimeout)
	if err != nil || body <= 0 {
		return server.Limits{}, fmt.Errorf("-http-body-timeout %q: want a positive duration such as 10s", c.HTTPBodyTimeout)
	}
	if c.HTTPBodyMinRate <= 0 {
		return server.Limits{}, fmt.Errorf("-http-body-min-rate %d: want a positive number of bytes per second", c.HTTPBodyMinRate)
	}
	if c.HTTPMaxConns < 0 {
		return server.Limits{}, fmt.Errorf("-http-max-conns %d: want a positive number, or 0 for half the file descriptor limit", c.HTTPMaxConns)
	}
	if c.HTTPMaxConnsPerClient == 0 || c.HTTPMaxConnsPerClient < -1 {
		return server.Limits{}, fmt.Errorf("-http-max-conns-per-client %d: want a positive number, or -1 for no cap", c.HTTPMaxConnsPerClient)
	}
	return server.Limits{
		MaxConns: c.HTTPMaxConns, MaxConnsPerClient: c.HTTPMaxConnsPerClient,
		IdleTimeout: idle, BodyTimeout: body, BodyMinRate: c.HTTPBodyMinRate,
	}, nil
}

// leaderRebalance is -leader-rebalance as cluster.Config takes it: 0 for
// the default, negative for off.
func (c agentConfig) leaderRebalance() (time.Duration, error) {
	return interval("-leader-rebalance", c.LeaderRebalance, "10s")
}

// deadAfter is -dead-after as cluster.Config takes it (0: the default).
func (c agentConfig) deadAfter() (time.Duration, error) {
	if c.DeadAfter == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(c.DeadAfter)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("-dead-after must be a positive duration such as 5m, not %q", c.DeadAfter)
	}
	return d, nil
}

// diskBytes is -disk-bytes, or its older name -capacity-disk.
func (c agentConfig) diskBytes() uint64 {
	if c.DiskBytes > 0 {
		return c.DiskBytes
	}
	return c.CapacityDisk
}

// hashCheckInterval is -hash-check-interval as cluster.Config takes it: 0
// for the default, negative for off.
func (c agentConfig) hashCheckInterval() (time.Duration, error) {
	return interval("-hash-check-interval", c.HashCheck, "5m")
}

// chunkGC is -chunk-gc-interval and -chunk-gc-grace as cluster.Config
// takes them: 0 for the defaults, a negative interval for off.
func (c agentConfig) chunkGC() (every, grace time.Duration, err error) {
	if every, err = interval("-chunk-gc-interval", c.ChunkGC, "10m"); err != nil {
		return 0, 0, err
	}
	if c.ChunkGCGrace == "" {
		return every, 0, nil
	}
	grace, err = time.ParseDuration(c.ChunkGCGrace)
	if err != nil || grace <= 0 {
		return 0, 0, fmt.Errorf("-chunk-gc-grace %q: want a positive duration such as 1h", c.ChunkGCGrace)
	}
	return every, grace, nil
}

// interval parses the value of an interval flag: "" is 0 (the default),
// "off" is negative, else a positive duration.
func interval(flag, v, example string) (time.Duration, error) {
	switch v {
	case "":
		return 0, nil
	case "off":
		return -1, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s %q: want a positive duration such as %s, or off", flag, v, example)
	}
	return d, nil
}

func newLogger(level string, json bool) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       "shardnet",
		Level:      hclog.LevelFromString(level),
		JSONFormat: json,
		Output:     os.Stderr,
	})
}

func runAgent(args []string) int {
	cfg, err := loadAgentConfig(args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		// One "Error:" line per mistake: errors.Join puts each on its own.
		fmt.Fprintf(os.Stderr, "Error: %s\n", strings.ReplaceAll(err.Error(), "\n", "\nError: "))
		return 2
	}
	certs, err := cfg.clusterTLS()
	if err != nil {
		fmt.Fprintf(os.Stderr, "Error: %v\n", err)
		return 2
	}
	logger := newLogger(cfg.LogLevel, cfg.LogJSON)
	if certs != nil && keyTooOpen(cfg.TLSKey) {
		logger.Warn("the node's TLS key can be read by other users: chmod 600 it", "file", cfg.TLSKey)
	}
	if cfg.secretOnCommandLine {
		logger.Warn("a secret was given on the command line, where every local user's process listing shows it; use -token-file, -cluster-key-file and -encrypt-file, or $SHARDNET_TOKEN, $SHARDNET_CLUSTER_KEY and $SHARDNET_GOSSIP_KEY")
	}
	if cfg.Insecure && (cfg.ClusterKey == "" || (cfg.gossipKey == nil && !cluster.KeyringExists(cfg.DataDir))) {
		logger.Warn("-insecure: the cluster port or gossip runs without a key; anyone who reaches them can join this cluster (and, through an open cluster port, read and write every channel)")
	}
	httpAdvertise := cfg.HTTPAddr
	if host, port, _ := net.SplitHostPort(cfg.HTTPAddr); host == "" || host == "0.0.0.0" || host == "::" {
		adv := cfg.Advertise
		if adv == "" {
			adv = cfg.Bind
		}
		httpAdvertise = net.JoinHostPort(adv, port)
	}
	rebalance, _ := cfg.leaderRebalance() // checked by loadAgentConfig
	hashCheck, _ := cfg.hashCheckInterval()
	gcEvery, gcGrace, _ := cfg.chunkGC()
	deadAfter, _ := cfg.deadAfter()
	limits, _ := cfg.httpLimits()
	a, err := agent.Start(agent.Options{
		Cluster: cluster.Config{
			Name: cfg.Name, Role: cfg.Role, Zone: cfg.Zone, DataDir: cfg.DataDir,
			BindAddr: cfg.Bind, Advertise: cfg.Advertise,
			GossipPort: cfg.GossipPort, ClusterPort: cfg.ClusterPort, HTTPAddr: httpAdvertise,
			BootstrapExpect: cfg.BootstrapExpect, Join: cfg.Join,
			Stake: cfg.Stake, CapacityDisk: cfg.diskBytes(), MaxReplicas: cfg.MaxReplicas,
			Operator: cfg.Operator, ServeData: cfg.ServeData, DeadAfter: deadAfter,
			ClusterKey: []byte(cfg.ClusterKey), GossipKey: cfg.gossipKey, Logger: logger,
			TLS:               certs,
			KeyIndexBytes:     int64(cfg.KeyIndexMB) << 20,
			LeaderRebalance:   rebalance,
			HashCheckInterval: hashCheck,
			ChunkGCInterval:   gcEvery,
			ChunkGCGrace:      gcGrace,
			RepairPerNode:     cfg.RepairPerNode,
			RepairMax:         cfg.RepairMax,
		},
		HTTPBind:  cfg.HTTPAddr,
		Token:     cfg.Token,
		RateLimit: cfg.RateLimit,
		HTTP:      limits,

		HTTPTLSCert: cfg.HTTPTLSCert,
		HTTPTLSKey:  cfg.HTTPTLSKey,
	})
	if err != nil {
		logger.Error("cannot start", "error", err)
		return 1
	}
	logger.Info("serving", "http", a.URL(), "gossip", a.Node.GossipAddr(), "cluster", a.Node.ClusterAddr(), "cluster_tls", certs != nil)
	stopProcs := func() {}
	if cfg.IdleOneProc && procs.Enabled() {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); procs.Run(ctx, procs.Config{Logger: logger.Named("procs")}) }()
		stopProcs = func() { cancel(); <-done }
	}
	// SIGHUP rereads the cluster certificates (reloadOnSIGHUP), the HTTP
	// API's, and the -token-file (operator token rotation).
	stopReload := reloadOnSIGHUP(certs, logger)
	waitForSignal(a.Node.Leaving(), func() {
		if err := a.ReloadTLS(); err != nil {
			logger.Error("SIGHUP: the HTTP API keeps its certificate", "error", err)
		}
		if cfg.TokenFile != "" {
			reloadTokenFile(a, cfg.TokenFile, logger)
		}
	})
	stopReload()
	stopProcs()
	logger.Info("shutting down")
	if err := a.Close(); err != nil {
		logger.Error("shutdown", "error", err)
		return 1
	}
	return 0
}

// reloadTokenFile rereads the operator tokens (one per line) from file and
// gives them to the running node; on any error the node keeps the tokens
// it has.
func reloadTokenFile(a *agent.Agent, file string, logger hclog.Logger) {
	b, err := os.ReadFile(file)
	if err == nil && strings.TrimSpace(string(b)) == "" {
		err = fmt.Errorf("%s is empty", file)
	}
	if err == nil {
		err = a.SetOperatorTokens(string(b))
	}
	if err != nil {
		logger.Error("SIGHUP: the node keeps its operator tokens", "token_file", file, "error", err)
		return
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(line) != "" {
			n++
		}
	}
	logger.Info("SIGHUP: reloaded the operator tokens", "token_file", file, "tokens", n)
}

// waitForSignal returns on SIGINT or SIGTERM, or once done is closed (the
// node agreed to leave the cluster: shardnet node leave); on SIGHUP it
// calls reload (nil: SIGHUP is not caught) and waits on.
func waitForSignal(done <-chan struct{}, reload func()) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	if reload != nil {
		signal.Notify(sig, syscall.SIGHUP)
	}
	defer signal.Stop(sig)
	for {
		select {
		case <-done:
			return
		case s := <-sig:
			if s != syscall.SIGHUP {
				return
			}
			reload()
		}
	}
}
