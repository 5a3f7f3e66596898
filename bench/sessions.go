package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

const (
	// DefaultSessionsPerProcess is how many sessions one harness process
	// holds: each costs it two fds (the client's and the upstream's), so
	// 4,000 stay well under a 20,000 fd limit with room to spare.
	DefaultSessionsPerProcess = 4000
	// ChildArg is the hidden subcommand that makes the bench binary a
	// sessions child (see ChildMain).
	ChildArg = "__sessions-child"
	// sessionsOpenTimeout bounds opening every session of one mode run.
	sessionsOpenTimeout = 5 * time.Minute
	// sessionsIdle is the default of Options.SessionsIdle.
	sessionsIdle = time.Second
	// childMaxLife bounds how long a child waits for the parent.
	childMaxLife = 30 * time.Minute
	// serverSettle is how long a fresh server runs before its baseline.
	serverSettle = 200 * time.Millisecond
)

// SessionsResult is the sessions mode run for one target.
type SessionsResult struct {
	Target    string     `json:"target"`
	Kind      TargetKind `json:"kind"`
	Sessions  int        `json:"sessions"`
	Processes int        `json:"harness_processes"`

	ConnectSeconds float64 `json:"connect_seconds"`
	SessionsPerSec float64 `json:"sessions_per_sec"`

	// Server memory and fds, when the server is a local process: before
	// (after startup) and after every session was open and idle.
	RSSBeforeBytes int64   `json:"rss_before_bytes,omitempty"`
	RSSAfterBytes  int64   `json:"rss_after_bytes,omitempty"`
	PeakRSSBytes   int64   `json:"peak_rss_bytes,omitempty"`
	KiBPerSession  float64 `json:"kib_per_session,omitempty"`
	FDsBefore      int     `json:"fds_before,omitempty"`
	FDsAfter       int     `json:"fds_after,omitempty"`
	FDsPerSession  float64 `json:"fds_per_session,omitempty"`

	Error string `json:"error,omitempty"`
}

// sessionGroup is a set of idle sessions, each with one upstream on an
// idle upstream server of the same process.
type sessionGroup struct {
	up      *upstream
	clients []*client
}

func openSessionGroup(sessionURL string, n int) (*sessionGroup, error) {
	up, err := startUpstream(kindIdle, 1)
	if err != nil {
		return nil, err
	}
	cs, err := openClients(&instance{sessionURL: sessionURL}, up, n, idleBufSize)
	if err != nil {
		up.Close()
		return nil, err
	}
	return &sessionGroup{up: up, clients: cs}, nil
}

func (g *sessionGroup) Close() {
	closeClients(g.clients)
	g.up.Close()
}

// childRequest is the one line a parent sends a sessions child.
type childRequest struct {
	URL      string `json:"url"`
	Sessions int    `json:"sessions"`
}

// childReply is the one line a sessions child answers with once its
// sessions are open (or failed).
type childReply struct {
	Opened int    `json:"opened"`
	Error  string `json:"error,omitempty"`
}

// ChildMain runs a sessions child: it reads a request line from in,
// opens the sessions and their idle upstreams, writes a reply line to
// out, and holds everything open until in is closed. The parent measures
// the server in the meantime. It returns the process exit code.
func ChildMain(in io.Reader, out io.Writer) int {
	raiseFDLimit()
	br := bufio.NewReader(in)
	line, err := br.ReadBytes('\n')
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench child: no request:", err)
		return 2
	}
	var req childRequest
	if err := json.Unmarshal(line, &req); err != nil {
		fmt.Fprintln(os.Stderr, "bench child: bad request:", err)
		return 2
	}
	g, err := openSessionGroup(req.URL, req.Sessions)
	rep := childReply{}
	if err != nil {
		rep.Error = err.Error()
	} else {
		rep.Opened = len(g.clients)
	}
	b, _ := json.Marshal(rep)
	if _, err := out.Write(append(b, '\n')); err != nil {
		return 1
	}
	if g == nil {
		return 1
	}
	defer g.Close()
	eof := make(chan struct{})
	go func() {
		io.Copy(io.Discard, br)
		close(eof)
	}()
	t := time.NewTimer(childMaxLife)
	defer t.Stop()
	select {
	case <-eof:
	case <-t.C:
	}
	return 0
}

// sessionChild is a running child process holding sessions.
type sessionChild struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr lockedBuffer
	reply  chan childReply
}

func startChild(o *Options, url string, n int) (*sessionChild, error) {
	ch := &sessionChild{cmd: o.childCommand(), reply: make(chan childReply, 1)}
	ch.cmd.Stderr = &ch.stderr
	var err error
	if ch.stdin, err = ch.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := ch.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := ch.cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start sessions child: %w", err)
	}
	go func() {
		var rep childReply
		line, err := bufio.NewReader(stdout).ReadBytes('\n')
		if err == nil {
			err = json.Unmarshal(line, &rep)
		}
		if err != nil {
			rep.Error = fmt.Sprintf("bench: sessions child: %v", err)
		}
		ch.reply <- rep
		io.Copy(io.Discard, stdout)
	}()
	b, _ := json.Marshal(childRequest{URL: url, Sessions: n})
	if _, err := ch.stdin.Write(append(b, '\n')); err != nil {
		ch.stop()
		return nil, fmt.Errorf("bench: sessions child: %w", err)
	}
	return ch, nil
}

// stop closes the child's stdin, which makes it exit, and kills it if it
// does not within stopTimeout.
func (ch *sessionChild) stop() {
	ch.stdin.Close()
	done := make(chan struct{})
	go func() {
		ch.cmd.Wait()
		close(done)
	}()
	t := time.NewTimer(stopTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		ch.cmd.Process.Kill()
		<-done
	}
}

// runSessions opens n idle sessions with one upstream each and reads the
// server's memory and fds per session.
func runSessions(ctx context.Context, t *Target, n int, o *Options) SessionsResult {
	res := SessionsResult{Target: t.Name, Kind: t.Kind, Sessions: n}
	if err := res.run(ctx, t, o); err != nil {
		res.Error = err.Error()
	}
	return res
}

func (res *SessionsResult) run(ctx context.Context, t *Target, o *Options) (err error) {
	if t.Kind == KindDirect || t.Kind == KindRelay {
		return errors.New("bench: sessions mode needs a multiplexer")
	}
	in, err := t.start(nil)
	if err != nil {
		return err
	}
	defer func() {
		err = stopErr(in.stop(), err)
	}()
	if err := sleepWatching(ctx, serverSettle, in.proc); err != nil {
		return err
	}
	before, local := in.sample()

	per := max(o.SessionsPerProcess, 1)
	start := time.Now()
	var closers []func()
	defer func() { // children stop in parallel: each waits for its exit
		var wg sync.WaitGroup
		for _, c := range closers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c()
			}()
		}
		wg.Wait()
	}()
	if res.Sessions <= per {
		res.Processes = 1
		g, err := openSessionGroup(in.sessionURL, res.Sessions)
		if err != nil {
			return err
		}
		closers = append(closers, g.Close)
	} else {
		k := (res.Sessions + per - 1) / per
		res.Processes = k + 1 // the children and this process
		var children []*sessionChild
		for i := range k {
			m := res.Sessions/k + btoi(i < res.Sessions%k)
			ch, err := startChild(o, in.sessionURL, m)
			if err != nil {
				return err
			}
			children = append(children, ch)
			closers = append(closers, ch.stop)
		}
		timeout := time.NewTimer(sessionsOpenTimeout)
		defer timeout.Stop()
		var errs []error
		for i, ch := range children {
			select {
			case rep := <-ch.reply:
				if rep.Error != "" {
					errs = append(errs, fmt.Errorf("child %d: %s%s", i, rep.Error, tail(ch)))
				}
			case <-timeout.C:
				return fmt.Errorf("bench: sessions not open within %v", sessionsOpenTimeout)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err := errors.Join(errs...); err != nil {
			return err
		}
	}
	res.ConnectSeconds = time.Since(start).Seconds()
	res.SessionsPerSec = float64(res.Sessions) / res.ConnectSeconds

	if err := sleepWatching(ctx, o.SessionsIdle, in.proc); err != nil {
		return err
	}
	if err := in.check(); err != nil {
		return err
	}
	after, _ := in.sample()
	if local {
		res.RSSBeforeBytes, res.RSSAfterBytes, res.PeakRSSBytes = before.RSS, after.RSS, after.HWM
		res.KiBPerSession = float64(after.RSS-before.RSS) / 1024 / float64(res.Sessions)
		res.FDsBefore, res.FDsAfter = before.FDs, after.FDs
		res.FDsPerSession = float64(after.FDs-before.FDs) / float64(res.Sessions)
	}
	return nil
}

func tail(ch *sessionChild) string {
	s := strings.TrimSpace(ch.stderr.String())
	if s == "" {
		return ""
	}
	if len(s) > 2000 {
		s = s[len(s)-2000:]
	}
	return "; stderr: " + s
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// lockedBuffer collects a child's stderr, written by exec's copying
// goroutine and read by the parent.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 64<<10 {
		return len(p), nil
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
