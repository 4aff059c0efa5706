// Package e2e runs the real rauta binary in network namespaces against real
// clients and servers. Every test builds its own testbed and removes it,
// with the daemon's pins, also when it fails.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rauta-lb/rauta/tools/backend"
	"github.com/rauta-lb/rauta/tools/testbed"
)

var rautaBinary string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Println("e2e: not root, tests will skip")
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "rauta-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	rautaBinary = filepath.Join(dir, "rauta")
	build := exec.Command("go", "build", "-o", rautaBinary, "github.com/rauta-lb/rauta/cmd/rauta")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build rauta:", err)
		return 1
	}
	return m.Run()
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces and BPF")
	}
}

// startBackends serves the test backend in every backend namespace on :80.
func startBackends(t *testing.T, tb *testbed.Testbed) {
	t.Helper()
	for i, ns := range tb.Backends {
		ln, err := ns.Listen("tcp", ":80")
		if err != nil {
			t.Fatalf("backend %d: %v", i+1, err)
		}
		srv := backend.New(fmt.Sprintf("b%d", i+1))
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	}
}

// daemon is a rauta process running in the LB namespace. It keeps the host's
// mount namespace (nsenter --net, not ip netns exec), so its pins are
// visible to bpftool like in a real deployment.
type daemon struct {
	t       *testing.T
	cmd     *exec.Cmd
	config  string
	pinPath string
	logs    *syncBuffer
	exited  chan struct{}
	err     error
}

func randomSuffix(t *testing.T) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// writeConfig writes a config file whose bpffs directory is unique to the
// test; %PINS% in the text is replaced by it.
func writeConfig(t *testing.T, path, text, pinPath string) {
	t.Helper()
	text = strings.ReplaceAll(text, "%PINS%", pinPath)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// startDaemon runs `rauta run` with configText and waits until it reports
// that it is running. It is stopped (and its pins removed) at cleanup.
func startDaemon(t *testing.T, tb *testbed.Testbed, configText string) *daemon {
	t.Helper()
	d := launchDaemon(t, tb, configText)
	if err := d.waitLog("rauta running", 20*time.Second); err != nil {
		t.Fatalf("daemon did not start: %v\n%s", err, d.logs.String())
	}
	return d
}

func launchDaemon(t *testing.T, tb *testbed.Testbed, configText string) *daemon {
	t.Helper()
	d := &daemon{
		t:       t,
		config:  filepath.Join(t.TempDir(), "rauta.yaml"),
		pinPath: "/sys/fs/bpf/rauta-e2e-" + randomSuffix(t),
		logs:    &syncBuffer{},
		exited:  make(chan struct{}),
	}
	writeConfig(t, d.config, configText, d.pinPath)
	d.cmd = tb.LB.NetCommand(rautaBinary, "run", "--config", d.config, "--log-level", "debug")
	d.cmd.Stdout = d.logs
	d.cmd.Stderr = d.logs
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start rauta: %v", err)
	}
	go func() {
		d.err = d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		d.stop()
		os.RemoveAll(d.pinPath) // only left behind if the daemon was killed
		if t.Failed() {
			t.Logf("rauta log:\n%s", d.logs.String())
		}
	})
	return d
}

func (d *daemon) stop() {
	select {
	case <-d.exited:
		return
	default:
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
	}
}

// reload rewrites the config file and sends SIGHUP, then waits for the
// daemon to confirm.
func (d *daemon) reload(configText string) {
	d.t.Helper()
	before := strings.Count(d.logs.String(), "configuration reloaded")
	writeConfig(d.t, d.config, configText, d.pinPath)
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		d.t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(d.logs.String(), "configuration reloaded") == before {
		if time.Now().After(deadline) {
			d.t.Fatalf("no reload confirmation\n%s", d.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (d *daemon) waitLog(substr string, timeout time.Duration) error {
	deadline := time.After(timeout)
	for !strings.Contains(d.logs.String(), substr) {
		select {
		case <-d.exited:
			return fmt.Errorf("daemon exited: %v", d.err)
		case <-deadline:
			return fmt.Errorf("timed out waiting for %q", substr)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// reply is what the test backend says about a request.
type reply struct {
	Backend string
	Peer    string
}

// client sends HTTP requests from the client namespace.
func client(tb *testbed.Testbed, keepAlive bool) *http.Client {
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DialContext:       tb.Client.DialContext,
			DisableKeepAlives: !keepAlive,
			MaxIdleConns:      1,
		},
	}
}

func get(t *testing.T, c *http.Client, url string) reply {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d: %s", url, resp.StatusCode, body)
	}
	return reply{Backend: resp.Header.Get("X-Backend"), Peer: resp.Header.Get("X-Peer")}
}

// curl runs curl in the client namespace and returns its output.
func curl(t *testing.T, tb *testbed.Testbed, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := tb.Client.Command(ctx, "curl", append([]string{"-sS", "--max-time", "5"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("curl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func peerIP(t *testing.T, peer string) string {
	t.Helper()
	host, _, err := net.SplitHostPort(peer)
	if err != nil {
		t.Fatalf("peer %q: %v", peer, err)
	}
	return host
}

// lines splits output into non-empty lines.
func lines(s string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// checkDownload GETs url, which serves size bytes of the backend's pattern, and checks them
// byte for byte (sha256).
func checkDownload(t *testing.T, c *http.Client, url string, size int) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("download: %v", err)
	}
	got := sha256.New()
	n, err := io.Copy(got, resp.Body)
	resp.Body.Close()
	if err != nil || n != int64(size) {
		t.Fatalf("download: %d of %d bytes: %v", n, size, err)
	}
	want := sha256.New()
	io.Copy(want, backend.Pattern(int64(size)))
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatalf("%d-byte download is not byte-exact", size)
	}
}

// checkUpload POSTs size random bytes to url and checks the digest the backend
// computed over what it received.
func checkUpload(t *testing.T, c *http.Client, url string, size int) {
	t.Helper()
	body := make([]byte, size)
	rand.Read(body)
	resp, err := c.Post(url, "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	echo, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	sum := sha256.Sum256(body)
	if strings.TrimSpace(string(echo)) != hex.EncodeToString(sum[:]) {
		t.Fatalf("%d-byte upload: backend saw sha256 %q, want %x", size, echo, sum)
	}
}
