//go:build linux

package splice

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/wsplice/wsplice/rpc"
)

// Dial stages, as Hooks.Dial reports a failure.
const (
	stagePolicy    = "refused_by_policy"
	stageDNS       = "dns_error"
	stageTCP       = "tcp_error"
	stageTLS       = "tls_error"
	stageHandshake = "handshake_error"
)

// dialError is a failed dial: the error the client gets, and the stage
// that failed (for metrics, so nothing has to read the message).
type dialError struct {
	reply *rpc.Error
	stage string
}

func failed(stage string, e *rpc.Error) *dialError { return &dialError{reply: e, stage: stage} }

// dialed is an upstream connection ready for a loop: a non-blocking fd
// after a completed WebSocket handshake.
type dialed struct {
	fd          int
	leftover    []byte // bytes the upstream sent right behind its 101
	subprotocol string
}

// dial resolves, checks, connects and handshakes with an upstream, on a
// worker goroutine. The fd it returns is the caller's to close.
func (s *Server) dial(p *rpc.ConnectParams) (*dialed, *dialError) {
	pol := s.cfg.Policy
	if err := pol.CheckHost(p.Host); err != nil {
		return nil, failed(stagePolicy, &rpc.Error{Code: rpc.InvalidHostname, Message: err.Error(), Path: "url"})
	}
	timeout := s.cfg.DialTimeout
	if p.Timeout > 0 && p.Timeout < timeout {
		timeout = p.Timeout
	}
	deadline := time.Now().Add(timeout)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()

	var addrs []netip.Addr
	if a, err := netip.ParseAddr(p.Host); err == nil {
		addrs = []netip.Addr{a.Unmap()}
	} else {
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", p.Host)
		if err != nil {
			return nil, failed(stageDNS, &rpc.Error{Code: rpc.DialError, Message: "DNS lookup of " + p.Host + " failed: " + dnsReason(err)})
		}
		for _, ip := range ips {
			addrs = append(addrs, ip.Unmap())
		}
	}
	// The policy applies to the address actually dialed: resolve once,
	// check, dial that address (no second lookup to rebind).
	var allowed []netip.Addr
	var refused error
	for _, a := range addrs {
		if err := pol.CheckAddr(p.Host, a); err != nil {
			refused = err
			continue
		}
		allowed = append(allowed, a)
	}
	if len(allowed) == 0 {
		msg := "no address for " + p.Host
		if refused != nil {
			msg = refused.Error()
		}
		return nil, failed(stagePolicy, &rpc.Error{Code: rpc.InvalidHostname, Message: msg, Path: "url"})
	}
	port, _ := strconv.Atoi(p.Port)
	var fd int
	var err error
	var target string
	for _, a := range allowed {
		target = netip.AddrPortFrom(a, uint16(port)).String()
		fd, err = connect(a, port, s.sourceFor(a), deadline)
		if err == nil {
			break
		}
	}
	if err != nil {
		return nil, failed(stageTCP, &rpc.Error{Code: rpc.DialError, Message: "TCP connect to " + target + " failed: " + errReason(err)})
	}
	if p.URL.Scheme == "wss" {
		return s.dialTLS(fd, p, deadline) // TLS, then the WebSocket handshake (tls.go)
	}
	d := ws.Dialer{Protocols: p.Subprotocols}
	if len(p.Header) > 0 {
		d.Header = ws.HandshakeHeaderHTTP(p.Header)
	}
	br, hs, err := d.Upgrade(&fdConn{fd: fd, deadline: deadline}, p.URL)
	if err != nil {
		unix.Close(fd)
		return nil, failed(stageHandshake, &rpc.Error{Code: rpc.DialError, Message: "WebSocket handshake with " + target + " failed: " + errReason(err)})
	}
	out := &dialed{fd: fd, subprotocol: hs.Protocol}
	if br != nil && br.Buffered() > 0 {
		out.leftover = make([]byte, br.Buffered())
		io.ReadFull(br, out.leftover)
		ws.PutReader(br)
	}
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	return out, nil
}

func dnsReason(err error) string {
	var de *net.DNSError
	if errors.As(err, &de) {
		switch {
		case de.IsNotFound:
			return "no such host"
		case de.IsTimeout:
			return "timeout"
		}
		return de.Err
	}
	return err.Error()
}

func errReason(err error) string {
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err.Error()
	}
	return err.Error()
}

var errTimeout = errors.New("timeout")

// connect opens a non-blocking TCP socket to a:port and waits, until
// deadline, for the connection to complete.
func connect(a netip.Addr, port int, src netip.Addr, deadline time.Time) (int, error) {
	var sa unix.Sockaddr
	family := unix.AF_INET
	if a.Is4() {
		sa = &unix.SockaddrInet4{Port: port, Addr: a.As4()}
	} else {
		family = unix.AF_INET6
		sa6 := &unix.SockaddrInet6{Port: port, Addr: a.As16()}
		if z := a.Zone(); z != "" {
			if ifi, err := net.InterfaceByName(z); err == nil {
				sa6.ZoneId = uint32(ifi.Index)
			}
		}
		sa = sa6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	if src.IsValid() {
		var bsa unix.Sockaddr = &unix.SockaddrInet4{Addr: src.As4()}
		if src.Is6() {
			bsa = &unix.SockaddrInet6{Addr: src.As16()}
		}
		// Bind the address only: the kernel still picks the port, so
		// each source address brings its own ephemeral port range.
		unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
		if err := unix.Bind(fd, bsa); err != nil {
			unix.Close(fd)
			return -1, os.NewSyscallError("bind "+src.String(), err)
		}
	}
	err = unix.Connect(fd, sa)
	if err == unix.EINPROGRESS || err == unix.EINTR {
		if err = waitFD(fd, unix.POLLOUT, deadline); err == nil {
			var soerr int
			soerr, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
			if err == nil && soerr != 0 {
				err = unix.Errno(soerr)
			}
		}
	}
	if err != nil {
		unix.Close(fd)
		if err == errTimeout {
			return -1, err
		}
		return -1, os.NewSyscallError("connect", err)
	}
	return fd, nil
}

// waitFD blocks the calling worker until fd is ready for ev or deadline
// passes.
func waitFD(fd int, ev int16, deadline time.Time) error {
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return errTimeout
		}
		ms := int(left / time.Millisecond)
		if ms == 0 {
			ms = 1
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: ev}}
		n, err := unix.Poll(pfd, ms)
		if err == unix.EINTR || (err == nil && n == 0) {
			continue
		}
		return err
	}
}

// fdConn is a blocking view of a non-blocking fd with a deadline, for the
// upstream handshake on a worker.
type fdConn struct {
	fd       int
	deadline time.Time
}

func (c *fdConn) Read(p []byte) (int, error) {
	for {
		n, err := unix.Read(c.fd, p)
		switch {
		case err == unix.EAGAIN:
			if err := waitFD(c.fd, unix.POLLIN, c.deadline); err != nil {
				return 0, err
			}
		case err == unix.EINTR:
		case err != nil:
			return 0, os.NewSyscallError("read", err)
		case n == 0:
			return 0, io.EOF
		default:
			return n, nil
		}
	}
}

func (c *fdConn) Write(p []byte) (int, error) {
	done := 0
	for done < len(p) {
		n, err := unix.Write(c.fd, p[done:])
		switch {
		case err == unix.EAGAIN:
			if err := waitFD(c.fd, unix.POLLOUT, c.deadline); err != nil {
				return done, err
			}
		case err == unix.EINTR:
		case err != nil:
			return done, os.NewSyscallError("write", err)
		default:
			done += n
		}
	}
	return done, nil
}

// sourceFor picks the next configured source address of a's family, or
// the zero Addr to let the kernel choose.
func (s *Server) sourceFor(a netip.Addr) netip.Addr {
	src := s.cfg.SourceAddrs
	if len(src) == 0 {
		return netip.Addr{}
	}
	start := int(s.nextSrc.Add(1))
	for i := range src {
		if c := src[(start+i)%len(src)]; c.Is4() == a.Is4() {
			return c
		}
	}
	return netip.Addr{}
}
