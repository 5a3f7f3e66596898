//go:build linux

package main

// TLS through the real binary: bad files refuse to start and name the
// file, SIGHUP reloads certificate, key and CAs for new connections only,
// --upstream-ca trusts more CAs for wss:// upstreams. TestTLSCost (opt-in)
// measures what TLS costs.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// pki is a CA made for one test, with helpers that write PEM files.
type pki struct {
	t    *testing.T
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

var pkiSerial atomic.Int64

func newPKI(t *testing.T, name string) *pki {
	t.Helper()
	key := pkiKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(pkiSerial.Add(1)), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &pki{t: t, dir: t.TempDir(), cert: cert, key: key, pool: pool}
}

func pkiKey(t *testing.T) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// issue returns a certificate for 127.0.0.1 and localhost with usage.
func (p *pki) issue(usage x509.ExtKeyUsage) tls.Certificate {
	key := pkiKey(p.t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(pkiSerial.Add(1)), Subject: pkix.Name{CommonName: "wsplice test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		p.t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// write writes data to a file of the test's directory (atomically, as a
// careful operator would: a rename) and returns its path.
func (p *pki) write(name string, data []byte) string {
	path := filepath.Join(p.dir, name)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		p.t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		p.t.Fatal(err)
	}
	return path
}

func certPEM(c tls.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]})
}

func keyPEM(t *testing.T, c tls.Certificate) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func (p *pki) caPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.cert.Raw})
}

// serverFiles writes a fresh server certificate and key to cert.pem and
// key.pem and returns their paths and the certificate.
func (p *pki) serverFiles() (certFile, keyFile string, c tls.Certificate) {
	c = p.issue(x509.ExtKeyUsageServerAuth)
	return p.write("cert.pem", certPEM(c)), p.write("key.pem", keyPEM(p.t, c)), c
}

// tlsClient is a dialer trusting roots and presenting cert, if given.
func tlsClient(roots *x509.CertPool, cert ...tls.Certificate) *websocket.Dialer {
	cfg := &tls.Config{RootCAs: roots}
	if len(cert) > 0 {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert[0], nil }
	}
	return &websocket.Dialer{HandshakeTimeout: binWait, TLSClientConfig: cfg}
}

// peerSerial dials url with d and returns the serial of the server's
// certificate, or the error.
func peerSerial(url string, d *websocket.Dialer) (*big.Int, error) {
	c, _, err := d.Dial(url, nil)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.NetConn().(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber, nil
}

// waitLogCount waits until p's log has n lines containing s.
func waitLogCount(t *testing.T, p *binProc, s string, n int) {
	t.Helper()
	deadline := time.Now().Add(binWait)
	for strings.Count(p.log(), s) < n {
		if time.Now().After(deadline) {
			t.Fatalf("want %d log lines with %q; log:\n%s", n, s, p.log())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestBinaryTLSBadFiles checks that a broken TLS file stops wsplice at
// startup with a message naming the file.
func TestBinaryTLSBadFiles(t *testing.T) {
	t.Parallel()
	p := newPKI(t, "bad files CA")
	certFile, keyFile, _ := p.serverFiles()
	other := p.issue(x509.ExtKeyUsageServerAuth)
	garbage := p.write("garbage.pem", []byte("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"))
	notPEM := p.write("not-pem.txt", []byte("hello\n"))
	wrongKey := p.write("wrong-key.pem", keyPEM(t, other))
	caFile := p.write("ca.pem", p.caPEM())
	cases := []struct {
		name    string
		args    []string
		mention string
	}{
		{"cert not PEM", []string{"--tls-cert", notPEM, "--tls-key", keyFile}, notPEM},
		{"cert PEM garbage", []string{"--tls-cert", garbage, "--tls-key", keyFile}, garbage},
		{"key not PEM", []string{"--tls-cert", certFile, "--tls-key", notPEM}, notPEM},
		{"key of another certificate", []string{"--tls-cert", certFile, "--tls-key", wrongKey}, wrongKey},
		{"tls-ca not PEM", []string{"--tls-cert", certFile, "--tls-key", keyFile, "--tls-ca", notPEM}, notPEM},
		{"tls-ca PEM garbage", []string{"--tls-cert", certFile, "--tls-key", keyFile, "--tls-ca", garbage}, garbage},
		{"upstream-ca not PEM", []string{"--upstream-ca", notPEM}, notPEM},
		{"upstream-ca a key", []string{"--upstream-ca", keyFile}, keyFile},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, _, stderr := binRun(t, nil, append([]string{"--listen", "127.0.0.1:0"}, tc.args...)...)
			if code == 0 || strings.Contains(stderr, "msg=listening") {
				t.Fatalf("exit code %d, want non-zero before listening; stderr:\n%s", code, stderr)
			}
			if !strings.Contains(stderr, tc.mention) {
				t.Errorf("stderr does not name %s:\n%s", tc.mention, stderr)
			}
		})
	}
	t.Run("good files", func(t *testing.T) {
		t.Parallel()
		binStart(t, nil, "--tls-cert", certFile, "--tls-key", keyFile, "--tls-ca", caFile, "--upstream-ca", caFile)
	})
}

// TestBinaryTLSReload checks SIGHUP: new connections get the new
// certificate and the new client CA, a session opened before keeps
// working, and a broken file is logged and the old material kept.
func TestBinaryTLSReload(t *testing.T) {
	t.Parallel()
	a, b := newPKI(t, "CA A"), newPKI(t, "CA B")
	certA := a.issue(x509.ExtKeyUsageServerAuth)
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
		return path
	}
	certFile := write("cert.pem", certPEM(certA))
	keyFile := write("key.pem", keyPEM(t, certA))
	caFile := write("ca.pem", a.caPEM())
	clientA, clientB := a.issue(x509.ExtKeyUsageClientAuth), b.issue(x509.ExtKeyUsageClientAuth)

	p := binStart(t, nil, "--allow-private-upstreams", "--tls-cert", certFile, "--tls-key", keyFile, "--tls-ca", caFile)
	url := "wss://" + p.addr + "/"
	upURL, _ := binUpstream(t)
	old := binDial(t, url, tlsClient(a.pool, clientA))
	idx, code := old.connect(upURL)
	equalInt(t, code, 0, "connect")
	roundTrip := func(what string) {
		t.Helper()
		old.sendRaw(uint16(idx), []byte(what))
		if m := old.readData(); string(m.data) != what {
			t.Fatalf("old session echo: got %q, want %q", m.data, what)
		}
	}
	roundTrip("before reload")

	// New certificate from CA B, new client CA B.
	certB := b.issue(x509.ExtKeyUsageServerAuth)
	write("cert.pem", certPEM(certB))
	write("key.pem", keyPEM(t, certB))
	write("ca.pem", b.caPEM())
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitLogCount(t, p, "tls certificate loaded", 2)

	serial, err := peerSerial(url, tlsClient(b.pool, clientB))
	if err != nil {
		t.Fatalf("dial after reload: %v", err)
	}
	if serial.Cmp(certB.Leaf.SerialNumber) != 0 {
		t.Fatalf("new connection got certificate %v, want the reloaded %v", serial, certB.Leaf.SerialNumber)
	}
	if _, err := peerSerial(url, tlsClient(a.pool, clientA)); err == nil {
		t.Errorf("a client trusting only the old CA, with a certificate from the old client CA, connected after the reload")
	}
	both := x509.NewCertPool()
	both.AddCert(a.cert)
	both.AddCert(b.cert)
	if _, err := peerSerial(url, tlsClient(both, clientA)); err == nil {
		t.Errorf("a client certificate of the old client CA was accepted after the reload")
	}
	roundTrip("after reload")

	// A broken certificate: logged, the old material kept.
	write("cert.pem", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitLogCount(t, p, "tls reload failed", 1)
	if !strings.Contains(p.log(), certFile) {
		t.Errorf("the reload failure does not name %s:\n%s", certFile, p.log())
	}
	serial, err = peerSerial(url, tlsClient(b.pool, clientB))
	if err != nil {
		t.Fatalf("dial after a failed reload: %v", err)
	}
	if serial.Cmp(certB.Leaf.SerialNumber) != 0 {
		t.Errorf("after a failed reload the certificate is %v, want the kept %v", serial, certB.Leaf.SerialNumber)
	}
	roundTrip("after failed reload")
	if !strings.Contains(p.log(), "tls handshake refused") {
		t.Errorf("refused handshakes were not logged:\n%s", p.log())
	}
	select {
	case <-p.exited:
		t.Fatalf("wsplice exited: %v\n%s", p.waitErr, p.log())
	default:
	}
}

// wssEcho starts a wss:// echo upstream with cert and returns its URL.
func wssEcho(t *testing.T, cert tls.Certificate) string {
	t.Helper()
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	var wg sync.WaitGroup
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		wg.Add(1)
		defer wg.Done()
		defer c.Close()
		for {
			mt, p, err := c.ReadMessage()
			if err != nil || c.WriteMessage(mt, p) != nil {
				return
			}
		}
	}))
	hs.Config.ErrorLog = log.New(io.Discard, "", 0)
	hs.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	hs.StartTLS()
	t.Cleanup(func() { hs.CloseClientConnections(); hs.Close(); wg.Wait() })
	return "wss://" + hs.Listener.Addr().String() + "/"
}

// TestBinaryUpstreamCA checks that --upstream-ca adds a CA for wss://
// upstreams (the system roots alone refuse the test CA with a 4007 that
// says TLS) and that SIGHUP reloads it.
func TestBinaryUpstreamCA(t *testing.T) {
	t.Parallel()
	p1, p2 := newPKI(t, "upstream CA 1"), newPKI(t, "upstream CA 2")
	url1, url2 := wssEcho(t, p1.issue(x509.ExtKeyUsageServerAuth)), wssEcho(t, p2.issue(x509.ExtKeyUsageServerAuth))

	plain := binStart(t, nil, "--allow-private-upstreams")
	c := binDial(t, "ws://"+plain.addr+"/", nil)
	r := c.call("connect", map[string]any{"url": url1})
	if r.Error == nil || r.Error.Code != 4007 || !strings.Contains(r.Error.Message, "TLS") {
		t.Fatalf("wss:// upstream of an unknown CA: %+v, want a 4007 that says TLS", r)
	}

	caFile := p1.write("upstream-ca.pem", p1.caPEM())
	p := binStart(t, nil, "--allow-private-upstreams", "--upstream-ca", caFile)
	c = binDial(t, "ws://"+p.addr+"/", nil)
	idx, code := c.connect(url1)
	equalInt(t, code, 0, "connect to an upstream of --upstream-ca")
	c.sendRaw(uint16(idx), []byte("secure"))
	if m := c.readData(); string(m.data) != "secure" {
		t.Fatalf("echo: %q", m.data)
	}
	_, code = c.connect(url2)
	equalInt(t, code, 4007, "connect to an upstream of another CA")

	p1.write("upstream-ca.pem", p2.caPEM())
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitLogCount(t, p, "upstream CAs loaded", 2)
	_, code = c.connect(url2)
	equalInt(t, code, 0, "connect to an upstream of the reloaded --upstream-ca")
	c.sendRaw(uint16(idx), []byte("still here"))
	if m := c.readData(); string(m.data) != "still here" {
		t.Fatalf("echo on the upstream opened before the reload: %q", m.data)
	}
}

// TestTLSCost measures, through the binary, what TLS costs: server RSS
// and goroutines per idle session (plain, TLS, with a ws:// or wss://
// upstream), and payload throughput from clients to an upstream that
// discards, with the server's CPU per GB. The clients and upstreams run
// in this process, on the same CPUs. Opt-in: WSPLICE_TLS_COST=1; the
// figures are in the README. WSPLICE_TLS_COST_ENV adds environment
// variables to the server (GODEBUG=..., say).
func TestTLSCost(t *testing.T) {
	if os.Getenv("WSPLICE_TLS_COST") == "" {
		t.Skip("set WSPLICE_TLS_COST=1 to measure")
	}
	var env []string
	if e := os.Getenv("WSPLICE_TLS_COST_ENV"); e != "" {
		env = strings.Fields(e)
	}
	pk := newPKI(t, "cost CA")
	certFile, keyFile, _ := pk.serverFiles()
	caFile := pk.write("ca.pem", pk.caPEM())
	var sunk atomic.Int64
	wsURL := sinkUpstream(t, nil, &sunk)
	c := pk.issue(x509.ExtKeyUsageServerAuth)
	wssURL := sinkUpstream(t, &c, &sunk)
	tlsArgs := []string{"--tls-cert", certFile, "--tls-key", keyFile}
	variants := []struct {
		name     string
		args     []string
		scheme   string
		upstream string
	}{
		{"plain", nil, "ws", wsURL},
		{"tls", tlsArgs, "wss", wsURL},
		{"plain+wss", nil, "ws", wssURL},
		{"tls+wss", tlsArgs, "wss", wssURL},
	}
	start := func(t *testing.T, args []string) (*binProc, string) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		pprofAddr := ln.Addr().String()
		ln.Close()
		p := binStart(t, env, append([]string{"--allow-private-upstreams", "--upstream-ca", caFile,
			"--pprof-address", pprofAddr, "--ping-interval", "0", "--idle-timeout", "0"}, args...)...)
		return p, "http://" + pprofAddr
	}
	const idle = 1000
	for _, v := range variants {
		for _, warm := range []int{100, 64 << 10} {
			t.Run("idle/"+v.name+"/"+strconv.Itoa(warm), func(t *testing.T) {
				p, pprof := start(t, v.args)
				d := tlsClient(pk.pool)
				var conns []*websocket.Conn
				t.Cleanup(func() {
					for _, c := range conns {
						c.Close()
					}
				})
				open := func(k int) {
					for range k {
						bc := binDial(t, v.scheme+"://"+p.addr+"/", d)
						if _, code := bc.connect(v.upstream); code != 0 {
							t.Fatalf("connect: %d", code)
						}
						bc.sendRaw(0, make([]byte, warm)) // one message, then idle
						conns = append(conns, bc.c)
					}
				}
				open(100) // warm-up: loops, pools, runtime
				rss0, g0 := settled(t, p.cmd.Process.Pid, pprof)
				open(idle)
				rss1, g1 := settled(t, p.cmd.Process.Pid, pprof)
				t.Logf("%-9s per idle session with one upstream, after a %5d B message: %5.1f KiB RSS, %.1f goroutines, %.1f fds",
					v.name, warm, float64(rss1-rss0)/idle/1024, float64(g1-g0)/idle, float64(procFDs(p.cmd.Process.Pid))/float64(idle+100))
			})
		}
	}
	for _, v := range variants {
		if v.name == "plain+wss" {
			continue
		}
		for _, size := range []int{128, 4 << 10, 64 << 10} {
			t.Run("throughput/"+v.name+"/"+strconv.Itoa(size), func(t *testing.T) {
				p, _ := start(t, v.args)
				const clients = 4
				dur := 2 * time.Second
				var conns []*websocket.Conn
				for range clients {
					bc := binDial(t, v.scheme+"://"+p.addr+"/", tlsClient(pk.pool))
					idx, code := bc.connect(v.upstream)
					if code != 0 {
						t.Fatalf("connect: %d", code)
					}
					msg := append([]byte{byte(idx >> 8), byte(idx)}, make([]byte, size)...)
					if err := bc.c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
						t.Fatal(err)
					}
					conns = append(conns, bc.c)
				}
				time.Sleep(100 * time.Millisecond)
				sunk.Store(0)
				var sent atomic.Int64
				var wg sync.WaitGroup
				cpu0 := procCPU(t, p.cmd.Process.Pid)
				t0 := time.Now()
				for _, c := range conns {
					wg.Add(1)
					go func() {
						defer wg.Done()
						msg := append([]byte{0, 0}, make([]byte, size)...)
						for time.Since(t0) < dur {
							for range 64 {
								if c.WriteMessage(websocket.BinaryMessage, msg) != nil {
									return
								}
								sent.Add(int64(size))
							}
						}
					}()
				}
				wg.Wait()
				deadline := time.Now().Add(30 * time.Second)
				for sunk.Load() < sent.Load() && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond)
				}
				el := time.Since(t0).Seconds()
				cpu := procCPU(t, p.cmd.Process.Pid) - cpu0
				if sunk.Load() != sent.Load() {
					t.Fatalf("upstreams got %d bytes, sent %d", sunk.Load(), sent.Load())
				}
				t.Logf("%-9s %6d B: %7.1f MB/s, %8.0f msg/s, server CPU %.2f s per GB",
					v.name, size, float64(sent.Load())/el/1e6, float64(sent.Load())/float64(size)/el, cpu/(float64(sent.Load())/1e9))
			})
		}
	}
}

// settled runs a GC in the server (through pprof) and returns its RSS and
// goroutine count once the RSS is steady.
func settled(t *testing.T, pid int, pprof string) (rss int64, goroutines int) {
	t.Helper()
	last := int64(-1)
	for range 20 {
		if r, err := http.Get(pprof + "/debug/pprof/heap?gc=1"); err == nil {
			io.Copy(io.Discard, r.Body)
			r.Body.Close()
		}
		time.Sleep(200 * time.Millisecond)
		rss = procRSS(t, pid)
		if rss == last {
			break
		}
		last = rss
	}
	r, err := http.Get(pprof + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	first, _, _ := strings.Cut(string(b), "\n")
	goroutines, _ = strconv.Atoi(strings.TrimPrefix(first, "goroutine profile: total "))
	return rss, goroutines
}

// sinkUpstream is a ws:// (cert nil) or wss:// upstream that discards
// every message and adds its bytes to n.
func sinkUpstream(t *testing.T, cert *tls.Certificate, n *atomic.Int64) string {
	t.Helper()
	return serveUpstream(t, cert, func(_ *http.Request, c *websocket.Conn) {
		buf := make([]byte, 64<<10)
		for {
			_, rd, err := c.NextReader()
			if err != nil {
				return
			}
			k, _ := io.CopyBuffer(io.Discard, rd, buf)
			n.Add(k)
		}
	})
}

// procRSS returns pid's VmRSS in bytes.
func procRSS(t *testing.T, pid int) int64 {
	b, err := os.ReadFile("/proc/" + itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// procCPU returns pid's user plus system CPU seconds.
func procCPU(t *testing.T, pid int) float64 {
	b, err := os.ReadFile("/proc/" + itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	var ticks float64
	for _, x := range f[11:13] { // utime, stime (fields 14 and 15)
		v, _ := strconv.ParseFloat(x, 64)
		ticks += v
	}
	return ticks / 100 // USER_HZ
}

func procFDs(pid int) int {
	ents, _ := os.ReadDir("/proc/" + itoa(pid) + "/fd")
	return len(ents)
}

func itoa(n int) string { return strconv.Itoa(n) }
