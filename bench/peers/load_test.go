//go:build bench

package peers

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The load runs as child processes of this test binary, re-executed inside a pod's network namespace
// (nsenter -n: the host's files, the pod's network): the dialers in the client pod, the accepting
// server in each server pod. envRole names the child's role, envSpec its arguments as JSON.
const (
	envRole   = "PODWALL_PEERS_ROLE"
	envSpec   = "PODWALL_PEERS_SPEC"
	roleDial  = "dial"
	roleServe = "serve"
)

// maxDials bounds one run of repeat-key load whatever its duration, so that the ephemeral ports of
// the client cannot run out.
const maxDials = 500_000

// dialSpec is one run of the dialers.
type dialSpec struct {
	// Addr is the server's address; Port its first port.
	Addr string `json:"addr"`
	Port int    `json:"port"`
	// Fresh makes every attempt take the next port from Port on, up to Max ports: each connection is
	// a key (peer, port) the firewall has not seen. Otherwise every attempt goes to Port.
	Fresh bool `json:"fresh"`
	// Max bounds the attempts; Workers dial in parallel for Duration at most.
	Max      int           `json:"max"`
	Workers  int           `json:"workers"`
	Duration time.Duration `json:"duration"`
	// Timeout is one attempt's limit: a refused connection fails at once, a dropped SYN only after it.
	Timeout time.Duration `json:"timeout"`
}

// dialResult is what one run reports: completed connections, failed attempts, and the connect time
// of the completed ones (the SYN's way through the firewall, the handshake) at the 50th and 99th
// percentile.
type dialResult struct {
	Conns      int     `json:"conns"`
	Errors     int     `json:"errors"`
	Seconds    float64 `json:"seconds"`
	P50Micros  float64 `json:"p50_us"`
	P99Micros  float64 `json:"p99_us"`
	FirstError string  `json:"first_error,omitempty"`
}

// Rate is the completed connections per second.
func (r dialResult) Rate() float64 { return float64(r.Conns) / r.Seconds }

// TestMain runs a child role when the binary was re-executed as one, and the tests otherwise.
func TestMain(m *testing.M) {
	switch os.Getenv(envRole) {
	case roleDial:
		var s dialSpec
		mustDecodeSpec(&s)
		json.NewEncoder(os.Stdout).Encode(dial(s))
	case roleServe:
		var port int
		mustDecodeSpec(&port)
		if err := serve(port); err != nil {
			fmt.Fprintln(os.Stderr, "serve:", err)
			os.Exit(1)
		}
	default:
		os.Exit(m.Run())
	}
	os.Exit(0)
}

func mustDecodeSpec(v any) {
	if err := json.Unmarshal([]byte(os.Getenv(envSpec)), v); err != nil {
		fmt.Fprintf(os.Stderr, "%s=%q: %v\n", envSpec, os.Getenv(envSpec), err)
		os.Exit(2)
	}
}

// dial opens and closes connections as the spec says. Each connection is closed with an RST (linger
// 0), so that the client keeps no TIME_WAIT entry.
func dial(s dialSpec) dialResult {
	var attempts atomic.Int64
	var mu sync.Mutex
	var times []time.Duration
	res := dialResult{}
	start := time.Now()
	deadline := start.Add(s.Duration)
	var wg sync.WaitGroup
	for range s.Workers {
		wg.Go(func() {
			d := net.Dialer{Timeout: s.Timeout}
			var mine []time.Duration
			var errs int
			var first string
			for time.Now().Before(deadline) {
				n := int(attempts.Add(1))
				if n > s.Max {
					break
				}
				port := s.Port
				if s.Fresh {
					port += n - 1
				}
				began := time.Now()
				c, err := d.Dial("tcp", net.JoinHostPort(s.Addr, strconv.Itoa(port)))
				if err != nil {
					if errs++; first == "" {
						first = err.Error()
					}
					continue
				}
				mine = append(mine, time.Since(began))
				c.(*net.TCPConn).SetLinger(0)
				c.Close()
			}
			mu.Lock()
			defer mu.Unlock()
			times = append(times, mine...)
			res.Errors += errs
			if res.FirstError == "" {
				res.FirstError = first
			}
		})
	}
	wg.Wait()
	res.Seconds = time.Since(start).Seconds()
	res.Conns = len(times)
	res.P50Micros, res.P99Micros = percentile(times, 50), percentile(times, 99)
	return res
}

// percentile is the nearest-rank percentile p of times, in microseconds; 0 without any.
func percentile(times []time.Duration, p int) float64 {
	if len(times) == 0 {
		return 0
	}
	slices.Sort(times)
	i := (len(times)*p + 99) / 100
	return float64(times[max(i, 1)-1].Microseconds())
}

// serve accepts connections on port and closes each at once. It says "listening" on stdout once the
// socket listens, and runs until killed.
func serve(port int) error {
	l, err := net.Listen("tcp", ":"+strconv.Itoa(port))
	if err != nil {
		return err
	}
	fmt.Println("listening")
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		c.Close()
	}
}

// netns is a pod's network namespace, entered through one of its processes.
type netns struct {
	pid  int
	name string // for messages: namespace/pod
}

// command runs args inside the namespace (nsenter -n: the host's files and the pod's network).
func (n netns) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(n.pid), "-n", "--"}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// run runs args inside the namespace and fails the test if they fail.
func (n netns) run(t testing.TB, stdin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := n.command(ctx, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v in %s: %v: %s", args, n.name, err, out)
	}
	return string(out)
}

// child runs this test binary as role inside the namespace with spec as its argument.
func (n netns) child(ctx context.Context, t testing.TB, role string, spec any) *exec.Cmd {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatalf("find the test binary: %v", err)
	}
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	cmd := n.command(ctx, self)
	cmd.Env = append(os.Environ(), envRole+"="+role, envSpec+"="+string(b))
	return cmd
}

// dial runs the dialers in the namespace and returns their result.
func (n netns) dial(t testing.TB, s dialSpec) dialResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), s.Duration+s.Timeout+30*time.Second)
	defer cancel()
	out, err := n.child(ctx, t, roleDial, s).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			out = ee.Stderr
		}
		t.Fatalf("dialers in %s: %v: %s", n.name, err, out)
	}
	var r dialResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("dialers in %s said %q: %v", n.name, out, err)
	}
	return r
}

// serveAccept starts the accepting server on port inside the namespace, for the rest of the test.
func (n netns) serveAccept(t testing.TB, port int) {
	t.Helper()
	cmd := n.child(context.Background(), t, roleServe, port)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	background(t, cmd, "server in "+n.name)
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if line != "listening\n" {
		t.Fatalf("server in %s: %q, %v", n.name, line, err)
	}
}

// background starts cmd for the rest of the test: it is killed when the test ends (and by the kernel,
// through Pdeathsig, if the test process dies first).
func background(t testing.TB, cmd *exec.Cmd, what string) {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", what, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
}
