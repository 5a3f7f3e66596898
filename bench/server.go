package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ServerPackage is the import path of the wsplice command the harness
// builds when no binary is given.
const ServerPackage = "github.com/wsplice/wsplice/cmd/wsplice"

// ServerArgs are the flags the harness starts wsplice with: an ephemeral
// loopback port, loopback upstreams allowed, as many upstreams per session
// as the index space holds, and control messages up to 64 MB.
var ServerArgs = []string{
	"--listen", "127.0.0.1:0",
	"--allow-private-upstreams",
	"--max-upstreams-per-session", "65535",
	"--frame-size-limit", "64MB",
}

const (
	serverStartTimeout = 15 * time.Second
	serverStopTimeout  = 5 * time.Second
	stderrTailLines    = 20
)

var (
	errServerExited = errors.New("bench: server exited")
	errServerStart  = errors.New("bench: server did not start")
	listenAddrRE    = regexp.MustCompile(`\baddr="?([^\s"]+)"?`)
)

// BuildServer builds the wsplice command into dir and returns the binary's
// path. It runs the go tool, so the working directory must be inside the
// module.
func BuildServer(ctx context.Context, dir string) (string, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("bench: build wsplice: %w", err)
	}
	out := filepath.Join(dir, "wsplice")
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", out, ServerPackage)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("bench: go build %s: %w\n%s", ServerPackage, err, strings.TrimSpace(string(msg)))
	}
	return out, nil
}

// serverProc is a wsplice process started and watched by the harness.
type serverProc struct {
	cmd   *exec.Cmd
	addrs []string // host:port it listens on, in log order; immutable after startProc

	exited  chan struct{} // closed when the process has exited
	waitErr error         // written before exited is closed

	mu   sync.Mutex // guards tail
	tail []string   // last stderr lines
	logs sync.WaitGroup
}

// startServer starts bin with ServerArgs and waits for its "listening"
// log line.
func startServer(bin string) (*serverProc, error) {
	args := ServerArgs
	if useTLS != nil {
		args = append(append([]string(nil), ServerArgs...), useTLS.serverArgs()...)
	}
	return startProc(exec.Command(bin, args...), 1)
}

// startProc starts cmd and waits for want "listening" log lines (the
// form wsplice logs), whose addresses it keeps.
func startProc(cmd *exec.Cmd, want int) (*serverProc, error) {
	s := &serverProc{cmd: cmd, exited: make(chan struct{})}
	s.cmd.Stdout = io.Discard
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("%w: %w", errServerStart, err)
	}
	addrc := make(chan string, want)
	s.logs.Add(1)
	go s.readLogs(stderr, addrc)
	go func() {
		s.logs.Wait() // Wait must not run before the pipe is drained
		s.waitErr = s.cmd.Wait()
		close(s.exited)
	}()
	t := time.NewTimer(serverStartTimeout)
	defer t.Stop()
	for len(s.addrs) < want {
		select {
		case a := <-addrc:
			s.addrs = append(s.addrs, a)
		case <-s.exited:
			return nil, fmt.Errorf("%w: %w before listening%s", errServerStart, s.waitErr, s.stderrTail())
		case <-t.C:
			s.Stop()
			return nil, fmt.Errorf("%w: %d of %d msg=listening lines within %v%s", errServerStart, len(s.addrs), want, serverStartTimeout, s.stderrTail())
		}
	}
	return s, nil
}

// readLogs keeps the last lines of the server's stderr and reports the
// listening addresses, as many as addrc holds.
func (s *serverProc) readLogs(r io.Reader, addrc chan<- string) {
	defer s.logs.Done()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	found := 0
	for sc.Scan() { // ends at EOF, when the process exits
		line := sc.Text()
		if found < cap(addrc) && strings.Contains(line, "msg=listening") {
			if m := listenAddrRE.FindStringSubmatch(line); m != nil {
				found++
				addrc <- m[1]
			}
		}
		s.mu.Lock()
		if len(s.tail) == stderrTailLines {
			copy(s.tail, s.tail[1:])
			s.tail = s.tail[:stderrTailLines-1]
		}
		s.tail = append(s.tail, line)
		s.mu.Unlock()
	}
	io.Copy(io.Discard, r)
}

func (s *serverProc) stderrTail() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.tail) == 0 {
		return ""
	}
	return "; stderr tail:\n  " + strings.Join(s.tail, "\n  ")
}

func (s *serverProc) pid() int { return s.cmd.Process.Pid }

// url is the URL clients open sessions on.
func (s *serverProc) url() string { return secureURL("ws://" + s.addrs[0] + "/") }

// check returns an error if the process has exited.
func (s *serverProc) check() error {
	select {
	case <-s.exited:
		return fmt.Errorf("%w: %v%s", errServerExited, s.waitErr, s.stderrTail())
	default:
		return nil
	}
}

// Stop sends SIGTERM, waits for the process and kills it if it lingers.
// It returns an error if the process had exited by itself before.
func (s *serverProc) Stop() error {
	err := s.check()
	if err != nil {
		return err
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(serverStopTimeout)
	defer t.Stop()
	select {
	case <-s.exited:
	case <-t.C:
		s.cmd.Process.Kill()
		<-s.exited
		return fmt.Errorf("bench: server ignored SIGTERM for %v; killed%s", serverStopTimeout, s.stderrTail())
	}
	// A clean shutdown exits 0 (or dies of the SIGTERM itself); anything
	// else means the process failed, maybe before the signal.
	var ee *exec.ExitError
	if errors.As(s.waitErr, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGTERM {
			return nil
		}
	}
	if s.waitErr != nil {
		return fmt.Errorf("%w: %v%s", errServerExited, s.waitErr, s.stderrTail())
	}
	return nil
}

// sleepWatching sleeps for d unless the context ends or the server, if
// any, exits.
func sleepWatching(ctx context.Context, d time.Duration, srv *serverProc) error {
	t := time.NewTimer(d)
	defer t.Stop()
	var exited <-chan struct{}
	if srv != nil {
		exited = srv.exited
	}
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-exited:
		return srv.check()
	}
}
