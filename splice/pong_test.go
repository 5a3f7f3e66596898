//go:build linux

package splice_test

import (
	"bufio"
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/wsplice/wsplice/splice"
)

// TestUpstreamPingDuringClientFrame: an upstream's ping that arrives
// while the client is inside a frame to that upstream is answered right
// after the frame (RFC 6455 5.5.2: a pong "as soon as practical"), never
// inside it.
func TestUpstreamPingDuringClientFrame(t *testing.T) {
	t.Parallel()
	ts := startServer(t, splice.Config{})
	pingNow := make(chan struct{})
	got := make(chan []frame, 1)
	up := startRawUpstream(t, func(conn net.Conn, br *bufio.Reader) {
		if _, err := rawAccept(conn, br, nil); err != nil {
			return
		}
		<-pingNow
		conn.Write(appendFrame(nil, frame{fin: true, op: opPing, payload: []byte("keepalive")}))
		var fs []frame
		conn.SetReadDeadline(time.Now().Add(waitTimeout))
		for len(fs) < 2 {
			f, err := readFrame(br)
			if err != nil {
				break
			}
			fs = append(fs, f)
		}
		got <- fs
		hold := make([]byte, 1)
		conn.Read(hold) // keep the connection until the test ends
	})
	c := dialRaw(t, ts.addr)
	req := `{"id":1,"type":"method","method":"connect","params":{"url":"` + up.url + `"}}`
	c.write(frame{fin: true, op: opBinary, masked: true, payload: withIndex(0xffff, []byte(req))})
	if r := c.readControl(); r.Error != nil {
		t.Fatalf("connect: %s", r)
	}
	payload := bytes.Repeat([]byte("x"), 4000)
	whole := appendFrame(nil, frame{fin: true, op: opBinary, masked: true, payload: withIndex(0, payload)})
	half := len(whole) / 2
	c.writeBytes(whole[:half]) // the upstream frame is now partly sent
	time.Sleep(50 * time.Millisecond)
	close(pingNow)
	time.Sleep(100 * time.Millisecond) // the ping reaches wsplice mid-frame
	c.writeBytes(whole[half:])
	var fs []frame
	select {
	case fs = <-got:
	case <-time.After(waitTimeout):
		t.Fatal("upstream saw nothing")
	}
	if len(fs) != 2 {
		t.Fatalf("upstream got %d frames, want the data frame then a pong: %v", len(fs), fs)
	}
	if fs[0].op != opBinary || !bytes.Equal(fs[0].payload, payload) {
		t.Fatalf("first frame %s, want the whole data frame", fs[0])
	}
	if fs[1].op != opPong || string(fs[1].payload) != "keepalive" {
		t.Fatalf("second frame %s, want pong \"keepalive\"", fs[1])
	}
}
