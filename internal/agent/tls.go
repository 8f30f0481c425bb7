package agent

import (
	"crypto/tls"
	"fmt"
	"sync"
)

// certFiles serves the HTTP API's certificate from a certificate and key
// file pair, read again by reload (SIGHUP) so that a renewed certificate
// takes effect without a restart; connections already open keep the one
// they were made with.
type certFiles struct {
	certFile, keyFile string

	mu   sync.RWMutex
	cert *tls.Certificate
}

func newCertFiles(certFile, keyFile string) (*certFiles, error) {
	c := &certFiles{certFile: certFile, keyFile: keyFile}
	if err := c.reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// reload reads the pair again; on error the certificate served so far
// stays.
func (c *certFiles) reload() error {
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("agent: HTTP TLS certificate %s, key %s: %w", c.certFile, c.keyFile, err)
	}
	c.mu.Lock()
	c.cert = &cert
	c.mu.Unlock()
	return nil
}

func (c *certFiles) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.cert, nil
}
