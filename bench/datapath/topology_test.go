//go:build bench

package datapath

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"podwall.io/podwall/internal/netnstest"
	"podwall.io/podwall/internal/testutil"
)

// Ports the peer namespace serves on. The policies allow connPort and iperfPort to the peer; deniedPort
// has a listener too but no rule, so that a connection to it shows the firewall is really enforcing.
const (
	connPort   = 7000
	deniedPort = 7001
	iperfPort  = 5201
)

// readyAddr is where the sidecar serves /readyz, on the pod namespace's own loopback.
const readyAddr = "127.0.0.1:9947"

// topology is a pod namespace linked by a veth pair to a peer namespace that serves the load, with or
// without a sidecar in the pod namespace. Every figure compares topologies built the same way.
type topology struct {
	name      string
	pod, peer *netnstest.NS
	server    netip.Addr
	sidecar   *exec.Cmd
	logFile   string
	// errFile is the sidecar's stderr: its diagnostics, JSON lines.
	errFile string
	// idleRSS is the sidecar's resident memory once it started and enforced, in MiB (startBench).
	idleRSS float64
}

// newTopology builds the namespaces and the peer's servers; all are removed when the test ends.
func newTopology(t *testing.T, name string, iperf bool) *topology {
	t.Helper()
	pod, peer := netnstest.New(t), netnstest.New(t)
	_, peerEnd := netnstest.Pair(t, pod, peer)
	top := &topology{name: name, pod: pod, peer: peer, server: peerEnd.Addr.Addr()}
	for _, port := range []int{connPort, deniedPort} {
		go serve(peer.Listen(t, "tcp", top.addr(port)))
	}
	if iperf {
		top.startIperf(t)
	}
	return top
}

// addr is the peer's address on port, as host:port.
func (top *topology) addr(port int) string {
	return net.JoinHostPort(top.server.String(), strconv.Itoa(port))
}

// startIperf runs an iperf3 server in the peer namespace and waits until it listens.
func (top *topology) startIperf(t *testing.T) {
	t.Helper()
	cmd := top.peer.Command(context.Background(), "iperf3", "--server", "--bind", top.server.String(),
		"--port", strconv.Itoa(iperfPort))
	startChild(t, cmd, "iperf3 server in "+top.name)
	testutil.Await(t, "iperf3 server listening in "+top.name, 10*time.Second, func() error {
		out, err := top.peer.Command(context.Background(), "ss", "-Hltn", fmt.Sprintf("sport = :%d", iperfPort)).Output()
		if err != nil || len(strings.TrimSpace(string(out))) == 0 {
			return fmt.Errorf("not listening yet (%v)", err)
		}
		return nil
	})
}

// iperf runs an iperf3 client from the pod namespace for d with streams parallel streams and returns
// the throughput the server received, in Gbit/s.
func (top *topology) iperf(t *testing.T, streams int, d time.Duration) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d+15*time.Second)
	defer cancel()
	out, err := top.pod.Command(ctx, "iperf3", "--client", top.server.String(), "--port", strconv.Itoa(iperfPort),
		"--parallel", strconv.Itoa(streams), "--time", strconv.Itoa(int(d.Seconds())), "--json").Output()
	var res struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if jerr := json.Unmarshal(out, &res); err != nil || jerr != nil || res.Error != "" {
		t.Fatalf("iperf3 -P %d in %s: %v %v %s: %s", streams, top.name, err, jerr, res.Error, stderrOf(err))
	}
	return res.End.SumReceived.BitsPerSecond / 1e9
}

// startSidecar runs the sidecar binary in the pod namespace with the policy file and extra args (flags
// of config/sidecar.go; the rest are defaults: two queues here, fail closed) and waits until its
// /readyz says the ruleset is in place. Its verdict lines go to a file (logging stays on: denies always,
// allows per the sidecar's default), its diagnostics to another, shown if it fails.
func (top *topology) startSidecar(t *testing.T, bin, policyFile string, args ...string) {
	t.Helper()
	dir := t.TempDir()
	top.logFile = filepath.Join(dir, "verdicts.jsonl")
	stdout, err := os.Create(top.logFile)
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	top.errFile = stderr.Name()
	cmd := top.pod.Command(context.Background(), append([]string{bin, "--config=", "--policy-file=" + policyFile,
		"--policy-cache-dir=", "--listen-addr=" + readyAddr, "--pod-name=" + top.name, "--pod-namespace=bench",
		"--workload=Deployment/bench"}, args...)...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	exited := startChild(t, cmd, "sidecar in "+top.name)
	top.sidecar = cmd
	client := top.client()
	defer client.CloseIdleConnections()
	testutil.Await(t, "sidecar ready in "+top.name, 90*time.Second, func() error {
		select {
		case <-exited:
			diag, _ := os.ReadFile(stderr.Name())
			t.Fatalf("sidecar in %s exited before it was ready: %v\n%s", top.name, cmd.ProcessState, diag)
		default:
		}
		return testutil.HTTPOK(client, "http://"+readyAddr+"/readyz")
	})
	// "ip netns exec" execs the command in place, so the process is the sidecar itself; check it, since
	// its memory is measured through this pid.
	if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", cmd.Process.Pid)); exe != bin {
		t.Fatalf("pid %d runs %q, not the sidecar %s", cmd.Process.Pid, exe, bin)
	}
}

// client is an HTTP client that connects from the pod namespace, to reach the sidecar's endpoints.
func (top *topology) client() *http.Client {
	return &http.Client{Timeout: time.Second, Transport: &http.Transport{
		DialContext: func(_ context.Context, network, addr string) (net.Conn, error) {
			return top.pod.Dial(network, addr, time.Second)
		}}}
}

// peakRSS is the sidecar's peak resident memory so far (VmHWM), in MiB.
func (top *topology) peakRSS(t *testing.T) float64 { return top.memory(t, "VmHWM") }

// rss is the sidecar's resident memory now (VmRSS), in MiB.
func (top *topology) rss(t *testing.T) float64 { return top.memory(t, "VmRSS") }

// memory reads one field of the sidecar's /proc status, in kB there, and returns it in MiB.
func (top *topology) memory(t *testing.T, field string) float64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", top.sidecar.Process.Pid))
	if err != nil {
		t.Fatalf("sidecar status in %s: %v", top.name, err)
	}
	defer f.Close()
	for s := bufio.NewScanner(f); s.Scan(); {
		if kb, ok := strings.CutPrefix(s.Text(), field+":"); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(kb), "kB")), 64)
			if err != nil {
				t.Fatalf("%s %q: %v", field, kb, err)
			}
			return n / 1024
		}
	}
	t.Fatalf("no %s in the sidecar's status in %s", field, top.name)
	return 0
}

// startChild starts cmd, which must not outlive the test: it is stopped when the test ends, and killed
// by the kernel if the test process dies first. The returned channel is closed when cmd has exited.
//
// The kernel's parent-death signal follows the thread that forked the child, not the process, and Go
// ends the threads that netnstest switches into a namespace. So the child is forked from a thread
// locked for its whole life: otherwise a later netnstest call could end that thread and kill the child.
func startChild(t *testing.T, cmd *exec.Cmd, what string) <-chan struct{} {
	t.Helper()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started, exited := make(chan error), make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		err := cmd.Start()
		started <- err
		if err == nil {
			cmd.Wait()
			close(exited)
		}
	}()
	if err := <-started; err != nil {
		t.Fatalf("start %s: %v", what, err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	return exited
}
