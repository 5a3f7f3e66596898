package bench

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// tlsMaterial is a throwaway CA and a server certificate for 127.0.0.1
// and localhost, made when a run measures over TLS (Options.TLS): the
// server side of every target speaks TLS with it, and clients trust only
// that CA.
type tlsMaterial struct {
	dir               string
	certFile, keyFile string
	server, client    *tls.Config
}

// useTLS is the material of a TLS run, nil otherwise. Set by Run before
// any cell, read by the dialers and servers of the cells.
var useTLS *tlsMaterial

func newTLSMaterial() (*tlsMaterial, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "wsplice-bench CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:    []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "wsplice-bench-tls")
	if err != nil {
		return nil, err
	}
	m := &tlsMaterial{dir: dir, certFile: filepath.Join(dir, "cert.pem"), keyFile: filepath.Join(dir, "key.pem")}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	if err := os.WriteFile(m.certFile, certPEM, 0o600); err != nil {
		m.remove()
		return nil, err
	}
	if err := os.WriteFile(m.keyFile, keyPEM, 0o600); err != nil {
		m.remove()
		return nil, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		m.remove()
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	m.server = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	m.client = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	return m, nil
}

func (m *tlsMaterial) remove() { os.RemoveAll(m.dir) }

// serverArgs are the extra flags that make wsplice serve TLS.
func (m *tlsMaterial) serverArgs() []string {
	return []string{"--tls-cert", m.certFile, "--tls-key", m.keyFile}
}

// secureURL turns a ws:// URL into wss:// when the run is over TLS.
func secureURL(u string) string {
	if useTLS != nil {
		if rest, ok := strings.CutPrefix(u, "ws://"); ok {
			return "wss://" + rest
		}
	}
	return u
}

// sniffTLS wraps a connection accepted by an upstream server in TLS when
// its first byte starts a TLS handshake record (22): in a TLS run the
// direct path's clients reach the upstreams over TLS, while wsplice
// reaches the same servers in plain WebSocket.
func sniffTLS(conn net.Conn) (net.Conn, error) {
	if useTLS == nil {
		return conn, nil
	}
	conn.SetReadDeadline(time.Now().Add(handshakeTimeout))
	first := make([]byte, 1)
	_, err := io.ReadFull(conn, first)
	conn.SetReadDeadline(time.Time{})
	if err != nil {
		return nil, err
	}
	pc := &peekedConn{Conn: conn, first: first[0], has: true}
	if first[0] != 22 {
		return pc, nil
	}
	tc := tls.Server(pc, useTLS.server)
	tc.SetDeadline(time.Now().Add(handshakeTimeout))
	if err := tc.Handshake(); err != nil {
		return nil, fmt.Errorf("bench: upstream TLS handshake: %w", err)
	}
	tc.SetDeadline(time.Time{})
	return tc, nil
}

// peekedConn gives back the one byte sniffTLS read before the rest.
type peekedConn struct {
	net.Conn
	first byte
	has   bool
}

func (c *peekedConn) Read(p []byte) (int, error) {
	if c.has && len(p) > 0 {
		p[0] = c.first
		c.has = false
		return 1, nil
	}
	return c.Conn.Read(p)
}
