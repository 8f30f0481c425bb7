package transport

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Handshake: before yamux starts on a new TCP connection, each side proves
// it holds the cluster key without sending it.
//
//	client → server  "SNT" | version u8 | nc (32 random bytes)
//	server → client  ns (32 random bytes) | HMAC-SHA256(key, "server" | nc | ns)
//	client → server  HMAC-SHA256(key, "client" | nc | ns)
//
// Both nonces are fresh, so a recorded exchange cannot be replayed, and the
// two labels differ, so one side's proof cannot be reflected back as the
// other's. The client checks the server's proof first, so a node with the
// wrong key learns it at dial time instead of through a reset stream. The
// connection is not encrypted afterwards (see doc.go).
const (
	handshakeMagic   = "SNT"
	handshakeVersion = byte(1) // bump with codecVersion or the framing
	nonceSize        = 32
	macSize          = sha256.Size
	handshakeTimeout = 5 * time.Second
)

// ErrHandshake is returned (wrapped) when a peer fails to prove the cluster
// key or does not speak this protocol.
var ErrHandshake = errors.New("transport: handshake failed")

func handshakeMAC(key []byte, label string, nc, ns []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(label))
	m.Write(nc)
	m.Write(ns)
	return m.Sum(nil)
}

// clientHandshake runs the dialing side. The caller sets the deadline.
func clientHandshake(conn net.Conn, key []byte) error {
	hello := make([]byte, 0, len(handshakeMagic)+1+nonceSize)
	hello = append(hello, handshakeMagic...)
	hello = append(hello, handshakeVersion)
	nc := make([]byte, nonceSize)
	if _, err := rand.Read(nc); err != nil {
		return fmt.Errorf("nonce: %w", err)
	}
	hello = append(hello, nc...)
	if _, err := conn.Write(hello); err != nil {
		return fmt.Errorf("send hello: %w", err)
	}
	reply := make([]byte, nonceSize+macSize)
	if _, err := io.ReadFull(conn, reply); err != nil {
		// A server that rejects our version closes the connection here.
		return fmt.Errorf("%w: read server proof: %v", ErrHandshake, err)
	}
	ns, mac := reply[:nonceSize], reply[nonceSize:]
	if !hmac.Equal(mac, handshakeMAC(key, "server", nc, ns)) {
		return fmt.Errorf("%w: peer did not prove the cluster key", ErrHandshake)
	}
	if _, err := conn.Write(handshakeMAC(key, "client", nc, ns)); err != nil {
		return fmt.Errorf("send client proof: %w", err)
	}
	return nil
}

// serverHandshake runs the accepting side. The caller sets the deadline.
func serverHandshake(conn net.Conn, key []byte) error {
	// Magic and version first, so a stranger that sends less than a full
	// hello (a port scanner, an HTTP client) is turned away at once.
	hello := make([]byte, len(handshakeMagic)+1+nonceSize)
	if _, err := io.ReadFull(conn, hello[:len(handshakeMagic)+1]); err != nil {
		return fmt.Errorf("%w: read hello: %v", ErrHandshake, err)
	}
	if string(hello[:len(handshakeMagic)]) != handshakeMagic {
		return fmt.Errorf("%w: not a shardnet peer", ErrHandshake)
	}
	if v := hello[len(handshakeMagic)]; v != handshakeVersion {
		return fmt.Errorf("%w: protocol version %d, want %d", ErrHandshake, v, handshakeVersion)
	}
	nc := hello[len(handshakeMagic)+1:]
	if _, err := io.ReadFull(conn, nc); err != nil {
		return fmt.Errorf("%w: read hello: %v", ErrHandshake, err)
	}
	ns := make([]byte, nonceSize)
	if _, err := rand.Read(ns); err != nil {
		return fmt.Errorf("nonce: %w", err)
	}
	reply := append(ns, handshakeMAC(key, "server", nc, ns)...)
	if _, err := conn.Write(reply); err != nil {
		return fmt.Errorf("send server proof: %w", err)
	}
	mac := make([]byte, macSize)
	if _, err := io.ReadFull(conn, mac); err != nil {
		return fmt.Errorf("%w: read client proof: %v", ErrHandshake, err)
	}
	if !hmac.Equal(mac, handshakeMAC(key, "client", nc, ns)) {
		return fmt.Errorf("%w: peer did not prove the cluster key", ErrHandshake)
	}
	return nil
}
