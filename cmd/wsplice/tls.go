//go:build linux

package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sync/atomic"
	"time"
)

// tlsFiles is the TLS material named on the command line (--tls-cert,
// --tls-key, --tls-ca, --upstream-ca), loaded at startup and again on
// SIGHUP. The material in use sits behind atomic pointers that every new
// handshake and every wss:// dial reads, so a reload changes what new
// connections see and leaves open sessions alone. A reload that fails
// keeps the old material.
//
// The two groups reload separately: the server's (certificate, key and
// client CA bundle, one unit: a new certificate is not used with an old
// key or CA) and the upstream CA bundle.
type tlsFiles struct {
	certFile, keyFile, caFile string // "" when not serving TLS / no --tls-ca
	upstreamCAFile            string
	log                       *slog.Logger

	server   atomic.Pointer[tls.Config]    // per-handshake config; nil: plain
	upstream atomic.Pointer[x509.CertPool] // system roots plus --upstream-ca
}

// loadTLSFiles loads what o names. An error names the flag and the file.
func loadTLSFiles(o *options, log *slog.Logger) (*tlsFiles, error) {
	t := &tlsFiles{certFile: o.TLSCert, keyFile: o.TLSKey, caFile: o.TLSCA, upstreamCAFile: o.UpstreamCA, log: log}
	if err := t.loadServer(); err != nil {
		return nil, err
	}
	if err := t.loadUpstream(); err != nil {
		return nil, err
	}
	return t, nil
}

// serving reports whether wsplice serves TLS.
func (t *tlsFiles) serving() bool { return t.certFile != "" }

// mode is the log's word for what the listener speaks.
func (t *tlsFiles) mode() string {
	switch {
	case t.caFile != "":
		return "mutual-tls"
	case t.certFile != "":
		return "tls"
	}
	return "plain"
}

// listenerConfig returns the tls.Config for splice.Server.ServeTLS, or nil
// when not serving TLS. It holds no certificate itself: each handshake
// takes the material loaded last.
func (t *tlsFiles) listenerConfig() *tls.Config {
	if !t.serving() {
		return nil
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return t.server.Load(), nil
		},
	}
}

// upstreamRoots is splice.Config.UpstreamRootCAs: nil without
// --upstream-ca (the system roots).
func (t *tlsFiles) upstreamRoots() func() *x509.CertPool {
	if t.upstreamCAFile == "" {
		return nil
	}
	return t.upstream.Load
}

// loadServer reads the certificate, key and client CA bundle and, when
// all three are good, makes them the material of new handshakes.
func (t *tlsFiles) loadServer() error {
	if !t.serving() {
		return nil
	}
	certPEM, err := os.ReadFile(t.certFile)
	if err != nil {
		return fmt.Errorf("--tls-cert: %w", err)
	}
	if _, err := parseCerts(certPEM); err != nil {
		return fmt.Errorf("--tls-cert %s: %w", t.certFile, err)
	}
	keyPEM, err := os.ReadFile(t.keyFile)
	if err != nil {
		return fmt.Errorf("--tls-key: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("--tls-key %s (for --tls-cert %s): %w", t.keyFile, t.certFile, err)
	}
	cfg := &tls.Config{
		// Go's defaults otherwise: TLS 1.2 and 1.3, its cipher suites and
		// curves.
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{pair},
	}
	if t.caFile != "" {
		pool, n, err := loadPool(t.caFile, x509.NewCertPool())
		if err != nil {
			return fmt.Errorf("--tls-ca %s: %w", t.caFile, err)
		}
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.ClientCAs = pool
		t.log.Info("tls client CAs loaded", "file", t.caFile, "certificates", n)
	}
	t.server.Store(cfg)
	leaf := pair.Leaf
	t.log.Info("tls certificate loaded", "file", t.certFile, "subject", leaf.Subject.String(),
		"not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	if time.Now().After(leaf.NotAfter) {
		t.log.Warn("tls certificate has expired", "file", t.certFile, "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// loadUpstream reads --upstream-ca into a copy of the system roots.
func (t *tlsFiles) loadUpstream() error {
	if t.upstreamCAFile == "" {
		return nil
	}
	roots, err := x509.SystemCertPool()
	if err != nil {
		t.log.Warn("no system roots: wss:// upstreams are verified against --upstream-ca only", "err", err)
		roots = x509.NewCertPool()
	}
	pool, n, err := loadPool(t.upstreamCAFile, roots)
	if err != nil {
		return fmt.Errorf("--upstream-ca %s: %w", t.upstreamCAFile, err)
	}
	t.upstream.Store(pool)
	t.log.Info("upstream CAs loaded", "file", t.upstreamCAFile, "certificates", n)
	return nil
}

// reload loads every file again (on SIGHUP, see service.go); a group that
// fails is logged and keeps its old material. Open connections are not
// touched.
func (t *tlsFiles) reload() {
	if err := t.loadServer(); err != nil {
		t.log.Error("tls reload failed: keeping the previous certificate, key and CAs", "err", err)
	}
	if err := t.loadUpstream(); err != nil {
		t.log.Error("tls reload failed: keeping the previous upstream CAs", "err", err)
	}
}

// parseCerts returns the certificates of a PEM bundle; blocks of other
// types are skipped. No certificate, or one that does not parse, is an
// error.
func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate in the file")
	}
	return certs, nil
}

// loadPool adds the certificates of a PEM file to pool and returns it
// with their number.
func loadPool(file string, pool *x509.CertPool) (*x509.CertPool, int, error) {
	data, err := os.ReadFile(file)
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return nil, 0, pe.Err // the caller names the file
	}
	if err != nil {
		return nil, 0, err
	}
	certs, err := parseCerts(data)
	if err != nil {
		return nil, 0, err
	}
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, len(certs), nil
}
