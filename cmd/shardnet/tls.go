package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/shardnet/shardnet/transport"
)

// The cluster port's certificates (docs/operations.md "Certificates"):
// `shardnet tls ca create` and `shardnet tls cert create`, the agent's
// -tls-* flags, and their reload on SIGHUP.

var tlsCommands = map[string]command{
	"ca":   {"create the cluster CA (ca create)", runTLSCA},
	"cert": {"create a node's certificate (cert create)", runTLSCert},
}

func runTLS(ctx context.Context, c *cli, args []string) int {
	return subcommands(ctx, c, "tls", tlsCommands, args)
}

// wantCreate checks the one verb of "ca create" and "cert create".
func wantCreate(c *cli, what string, args []string) ([]string, bool) {
	if len(args) == 0 || args[0] != "create" {
		fmt.Fprintf(c.stderr, "Usage: shardnet tls %s create [flags]; see shardnet tls %s create -h\n", what, what)
		return nil, false
	}
	return args[1:], true
}

func runTLSCA(_ context.Context, c *cli, args []string) int {
	args, ok := wantCreate(c, "ca", args)
	if !ok {
		return 2
	}
	fs := flag.NewFlagSet("tls ca create", flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	dir := fs.String("dir", ".", "directory to write ca.pem and ca-key.pem (0600) to")
	name := fs.String("name", "shardnet cluster CA", "the CA's common name")
	keyType := fs.String("key-type", transport.KeyECDSA, "ecdsa (P-256) or ed25519")
	days := fs.Int("days", int(transport.DefaultCAValidity/(24*time.Hour)), "validity in days")
	force := fs.Bool("force", false, "replace an existing CA (every node certificate it signed stops being accepted)")
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	if err := transport.WriteCA(*dir, *name, *keyType, time.Duration(*days)*24*time.Hour, *force); err != nil {
		fmt.Fprintf(c.stderr, "Error: %v\n", err)
		return 1
	}
	fmt.Fprintf(c.stdout, "wrote %s and %s (keep the key offline: whoever holds it can make nodes)\n",
		filepath.Join(*dir, transport.CACertFile), filepath.Join(*dir, transport.CAKeyFile))
	return 0
}

func runTLSCert(_ context.Context, c *cli, args []string) int {
	args, ok := wantCreate(c, "cert", args)
	if !ok {
		return 2
	}
	fs := flag.NewFlagSet("tls cert create", flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	var nodes, ips, dns stringList
	fs.Var(&nodes, "node", "node id the certificate names (its -name); repeatable")
	role := fs.String("role", "", "the nodes' role, core or resource (their -role; required): other nodes trust a core node with more")
	caDir := fs.String("ca-dir", ".", "directory holding ca.pem and ca-key.pem")
	out := fs.String("out", ".", "directory to write <node>.pem, <node>-key.pem (0600) and a copy of ca.pem to: the node's data dir")
	fs.Var(&ips, "ip", "IP address to add as a SAN (for other tools; shardnet checks the node name); repeatable")
	fs.Var(&dns, "dns", "DNS name to add as a SAN; repeatable")
	keyType := fs.String("key-type", transport.KeyECDSA, "ecdsa (P-256) or ed25519")
	days := fs.Int("days", int(transport.DefaultCertValidity/(24*time.Hour)), "validity in days (at most the CA's)")
	force := fs.Bool("force", false, "replace an existing certificate and key (rotation: then SIGHUP the node)")
	ifMissing := fs.Bool("if-missing", false, "keep an existing certificate, and create the CA in -ca-dir if there is none (scripts, docker compose)")
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	if len(nodes) == 0 || fs.NArg() > 0 {
		fmt.Fprintln(c.stderr, "Error: give -node NAME (and no other arguments)")
		return 2
	}
	if *role != transport.RoleCore && *role != transport.RoleResource {
		fmt.Fprintf(c.stderr, "Error: give -role %s or -role %s (the node's -role)\n", transport.RoleCore, transport.RoleResource)
		return 2
	}
	var addrs []net.IP
	for _, s := range ips {
		ip := net.ParseIP(s)
		if ip == nil {
			fmt.Fprintf(c.stderr, "Error: -ip %q is not an IP address\n", s)
			return 2
		}
		addrs = append(addrs, ip)
	}
	if *ifMissing {
		if _, err := os.Stat(filepath.Join(*caDir, transport.CAKeyFile)); errors.Is(err, os.ErrNotExist) {
			if err := transport.WriteCA(*caDir, "shardnet cluster CA", *keyType, 0, false); err != nil {
				fmt.Fprintf(c.stderr, "Error: %v\n", err)
				return 1
			}
			fmt.Fprintf(c.stdout, "wrote a new CA to %s\n", *caDir)
		}
	}
	// The node needs the CA's certificate too (-tls-ca): a copy beside its
	// own makes -out all a node needs.
	if err := copyCACert(*caDir, *out); err != nil {
		fmt.Fprintf(c.stderr, "Error: %v\n", err)
		return 1
	}
	for _, node := range nodes {
		if *ifMissing && !*force {
			if existing, _ := transport.NodeCertFiles(*out, node); fileExists(existing) {
				fmt.Fprintf(c.stdout, "kept %s\n", existing)
				continue
			}
		}
		certFile, keyFile, err := transport.WriteNodeCert(*caDir, *out, transport.NodeCertOptions{
			Node: node, Role: *role, IPs: addrs, DNSNames: dns, KeyType: *keyType, Validity: time.Duration(*days) * 24 * time.Hour,
		}, *force)
		if err != nil {
			fmt.Fprintf(c.stderr, "Error: %v\n", err)
			return 1
		}
		fmt.Fprintf(c.stdout, "wrote %s and %s for node %q\n", certFile, keyFile, node)
	}
	return 0
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// copyCACert copies caDir's ca.pem into dir, unless they are one.
func copyCACert(caDir, dir string) error {
	from, to := filepath.Join(caDir, transport.CACertFile), filepath.Join(dir, transport.CACertFile)
	if a, err := filepath.Abs(from); err == nil {
		if b, err := filepath.Abs(to); err == nil && a == b {
			return nil
		}
	}
	b, err := os.ReadFile(from)
	if err != nil {
		return fmt.Errorf("read the CA certificate: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return transport.WriteFileAtomic(to, b, 0o644, true)
}

func flagExit(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}

// tlsFlags registers the agent's cluster-port TLS flags.
func tlsFlags(fs *flag.FlagSet, c *agentConfig) {
	fs.StringVar(&c.TLSCert, "tls-cert", c.TLSCert, "this node's certificate for the cluster port (shardnet tls cert create); SIGHUP rereads it")
	fs.StringVar(&c.TLSKey, "tls-key", c.TLSKey, "this node's private key (keep it 0600 in the data dir)")
	fs.StringVar(&c.TLSCA, "tls-ca", c.TLSCA, "the cluster CA certificate(s) every peer's certificate must chain to")
	fs.BoolVar(&c.Insecure, "insecure", c.Insecure, "run the cluster port without certificates (on the shared cluster key, if one is given: any holder of it can act as any node) and gossip without a key, if none is given: development only")
}

// noCertsHelp is the one line an agent without certificates says.
const noCertsHelp = "the cluster port needs this node's certificate: give -tls-cert, -tls-key and -tls-ca " +
	"(make them with `shardnet tls ca create` and `shardnet tls cert create -node NAME -role ROLE`, docs/operations.md \"Certificates\"), " +
	"or -insecure to run on a shared cluster key (development only)"

// clusterTLS loads the cluster port's certificates, or returns nil with
// -insecure; anything else is an error that says what to do.
func (c agentConfig) clusterTLS() (*transport.Certs, error) {
	given := 0
	for _, v := range []string{c.TLSCert, c.TLSKey, c.TLSCA} {
		if v != "" {
			given++
		}
	}
	switch {
	case given == 0 && c.Insecure:
		return nil, nil
	case given == 0:
		return nil, errors.New(noCertsHelp)
	case c.Insecure:
		return nil, errors.New("-insecure and -tls-* are both set: give one")
	case given < 3:
		return nil, errors.New("give all of -tls-cert, -tls-key and -tls-ca")
	}
	certs, err := transport.LoadCerts(c.TLSCert, c.TLSKey, c.TLSCA)
	if err != nil {
		return nil, err
	}
	if certs.NodeID() != c.Name {
		return nil, fmt.Errorf("-tls-cert %s names node %q, but -name is %q", c.TLSCert, certs.NodeID(), c.Name)
	}
	if certs.Role() != c.Role {
		return nil, fmt.Errorf("-tls-cert %s names role %q, but -role is %q (make the certificate with `shardnet tls cert create -node %s -role %s`)", c.TLSCert, certs.Role(), c.Role, c.Name, c.Role)
	}
	return certs, nil
}

// keyTooOpen reports a key file others than its owner may read.
func keyTooOpen(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().Perm()&0o077 != 0
}

// reloadOnSIGHUP rereads the certificates on every SIGHUP until stop is
// called; a set that fails to load is logged and the old one stays.
func reloadOnSIGHUP(certs *transport.Certs, logger hclog.Logger) (stop func()) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGHUP)
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		for {
			select {
			case <-sig:
				if certs == nil {
					logger.Info("SIGHUP: no certificates to reload (-insecure)")
					continue
				}
				if err := certs.Reload(); err != nil {
					logger.Error("SIGHUP: certificates not reloaded; the old ones stay in force", "error", err)
					continue
				}
				leaf := certs.Leaf()
				logger.Info("SIGHUP: certificates reloaded; new connections use them",
					"serial", leaf.SerialNumber.Text(16), "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(sig)
		close(done)
		<-exited
	}
}

// tlsCertsForDev makes a CA under dir and a certificate for each node in
// its data dir, keeping what an earlier run left there (shardnet dev
// -data-dir).
func tlsCertsForDev(dir string, nodes []devNode) (map[string]*transport.Certs, error) {
	caDir := filepath.Join(dir, "ca")
	if _, err := os.Stat(filepath.Join(caDir, transport.CAKeyFile)); errors.Is(err, os.ErrNotExist) {
		if err := transport.WriteCA(caDir, "shardnet dev CA", transport.KeyECDSA, 0, false); err != nil {
			return nil, err
		}
	}
	out := map[string]*transport.Certs{}
	for _, nd := range nodes {
		node := nd.name
		nodeDir := filepath.Join(dir, node)
		certFile, keyFile := transport.NodeCertFiles(nodeDir, node)
		certs, err := transport.LoadCerts(certFile, keyFile, filepath.Join(caDir, transport.CACertFile))
		// A dev dir of a release before roles in certificates: the CA is
		// at hand, so the node gets one that names its role.
		if errors.Is(err, os.ErrNotExist) || (err == nil && certs.Role() != nd.role) {
			if certFile, keyFile, err = transport.WriteNodeCert(caDir, nodeDir, transport.NodeCertOptions{
				Node: node, Role: nd.role, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}, true); err != nil {
				return nil, err
			}
			certs, err = transport.LoadCerts(certFile, keyFile, filepath.Join(caDir, transport.CACertFile))
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w (remove %s to start over)", node, err, strings.TrimSuffix(certFile, ".pem")+"*")
		}
		out[node] = certs
	}
	return out, nil
}
