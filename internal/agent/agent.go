// Package agent assembles one shardnet process's node: the cluster node,
// the HTTP API server on its public port, and the server for requests other
// nodes forward over the cluster port.
//
// It leaves configuration parsing to cmd/shardnet and everything a node does
// to packages cluster and server; `shardnet agent`, `shardnet dev` and the
// in-process test clusters all start nodes through it.
package agent

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/shardnet/shardnet/cluster"
	"github.com/shardnet/shardnet/server"
)

// Options configure one agent.
type Options struct {
	Cluster  cluster.Config
	HTTPBind string // host:port the API listens on (":0" style ports allowed)
	Token    string // operator token; "" disables auth
	// RateLimit is requests per second per client IP (0: unlimited).
	RateLimit float64
	// HTTP holds the connection limits and timeouts of the API (zero
	// fields: the defaults; MaxConns 0: server.MaxConnsForFDs).
	HTTP server.Limits
	// HTTPTLSCert and HTTPTLSKey, when both set, are the PEM files of the
	// API's certificate and key: the API serves HTTPS only. They are read
	// again by ReloadTLS.
	HTTPTLSCert, HTTPTLSKey string
}

// Agent is a running node with its HTTP servers.
type Agent struct {
	Node   *cluster.Node
	Server *server.Server
	log    hclog.Logger
	url    string
	certs  *certFiles // nil: plain HTTP
}

// Start listens on the HTTP port, starts the node and serves.
func Start(opts Options) (*Agent, error) {
	cfg := opts.Cluster
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
		cfg.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	var certs *certFiles
	if opts.HTTPTLSCert != "" || opts.HTTPTLSKey != "" {
		if opts.HTTPTLSCert == "" || opts.HTTPTLSKey == "" {
			return nil, fmt.Errorf("agent: HTTPS needs both a certificate and a key file")
		}
		var err error
		if certs, err = newCertFiles(opts.HTTPTLSCert, opts.HTTPTLSKey); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", opts.HTTPBind)
	if err != nil {
		return nil, fmt.Errorf("agent: listen for HTTP on %s: %w", opts.HTTPBind, err)
	}
	if cfg.Token == "" {
		// The node serving a route call checks the client it carries
		// against the same operator token as the HTTP server.
		cfg.Token = opts.Token
	}
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = ln.Addr().String()
	}
	node, err := cluster.New(cfg)
	if err != nil {
		ln.Close()
		return nil, err
	}
	limits := opts.HTTP
	if limits.MaxConns == 0 {
		limits.MaxConns = server.MaxConnsForFDs()
	}
	var tlsConfig *tls.Config
	scheme := "http://"
	if certs != nil {
		tlsConfig = &tls.Config{GetCertificate: certs.getCertificate, MinVersion: tls.VersionTLS12}
		scheme = "https://"
	}
	srv := server.New(server.Config{
		Backend:   node,
		Token:     opts.Token,
		NodeID:    cfg.Name,
		Logger:    cfg.Logger,
		Registry:  cfg.Registry,
		RateLimit: opts.RateLimit,
		Limits:    limits,
		Internal:  node.InternalHandler(),
		TLS:       tlsConfig,
	})
	a := &Agent{Node: node, Server: srv, log: cfg.Logger, url: scheme + cfg.HTTPAddr, certs: certs}
	go a.serve(srv.Serve, ln)
	// What nodes of the previous version forward and ask over HTTP; nodes
	// of this version call each other (cluster/route.go). Remove with that
	// file's compatibility note, and Config.Internal above.
	go a.serve(srv.ServeForwarded, node.AppListener())
	return a, nil
}

func (a *Agent) serve(serve func(net.Listener) error, ln net.Listener) {
	if err := serve(ln); err != nil {
		a.log.Error("http server stopped", "error", err)
	}
}

// URL is the base URL of the node's HTTP API.
func (a *Agent) URL() string { return a.url }

// ReloadTLS reads the API's certificate and key files again (SIGHUP); new
// connections get the new certificate. On error the old one stays. Without
// HTTPS it does nothing.
func (a *Agent) ReloadTLS() error {
	if a.certs == nil {
		return nil
	}
	if err := a.certs.reload(); err != nil {
		return err
	}
	a.log.Info("reloaded the HTTP API's TLS certificate", "cert", a.certs.certFile)
	return nil
}

// SetOperatorTokens replaces the operator tokens (one per line) the node
// accepts, on its HTTP API and on the route calls other nodes forward to
// it, without a restart: a rotation lists the old token and the new one
// until every client has the new one, then only the new one. Turning
// authentication on or off is refused (access.ErrAuthModeChange).
func (a *Agent) SetOperatorTokens(tokens string) error {
	if err := a.Server.SetOperatorTokens(tokens); err != nil {
		return err
	}
	return a.Node.SetOperatorTokens(tokens)
}

// Close stops serving new requests, lets running ones finish (bounded),
// then shuts the node down gracefully.
func (a *Agent) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = a.Server.Shutdown(ctx)
	err := a.Node.Close()
	_ = a.Server.Close()
	return err
}

// Kill stops the node as a crash would (tests): connections drop, nothing
// is handed over.
func (a *Agent) Kill() error {
	_ = a.Server.Close()
	return a.Node.Kill()
}

// The node serves the file routes (server/files.go).
var _ server.FileBackend = (*cluster.Node)(nil)

// The node serves resumable uploads (server/uploads.go).
var _ server.UploadBackend = (*cluster.Node)(nil)
