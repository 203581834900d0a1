package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"runtime"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// uiOptions are `kubectl podwall ui`'s flags.
type uiOptions struct {
	policygenFlags
	kube    *genericclioptions.ConfigFlags
	streams genericiooptions.IOStreams
	address string
	port    int
	browser bool
}

func newUICommand(kube *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := uiOptions{kube: kube, streams: streams}
	cmd := &cobra.Command{
		Use:   "ui",
		Short: "Open podwall's web UI, signed in as you",
		Long: `Open podwall's web UI in your browser, signed in as you.

The command port-forwards to a Ready policygen pod (as kubectl port-forward does) and serves a proxy on
127.0.0.1 that speaks TLS to policygen, verified against the CA policygen publishes, and adds a token:
your kubeconfig's own (exec and auth-provider plugins included), or with --service-account one minted
for that ServiceAccount of -n's namespace and renewed before it expires. The UI then shows what that
identity may see: reading needs RBAC to list WorkloadPolicies, changing a policy to patch it.

It prints the URL, opens the browser (unless --browser=false) and runs until Ctrl-C. It needs
permission to create pods/portforward in podwall's namespace, to get its Service, pods and the
ConfigMap podwall-policygen-ca, and, with --service-account, to create serviceaccounts/token.`,
		Example: `  # open the UI as yourself (a kubeconfig that signs in with a token or an exec plugin)
  kubectl podwall ui

  # sign in as the ServiceAccount viewer of namespace team-a; print the URL only
  kubectl podwall ui -n team-a --service-account viewer --browser=false`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			return o.run(cmd.Context())
		},
	}
	f := cmd.Flags()
	o.addFlags(f)
	f.StringVar(&o.address, "address", "127.0.0.1", "address the proxy listens on; it carries your credentials, so anyone who can reach it acts as you")
	f.IntVar(&o.port, "port", 0, "port the proxy listens on (0: any free port)")
	f.BoolVar(&o.browser, "browser", true, "open the UI in the browser (xdg-open, open)")
	return cmd
}

// validate checks the flags that need no cluster.
func (o *uiOptions) validate() error {
	if err := o.policygenFlags.validate(); err != nil {
		return err
	}
	if o.port < 0 || o.port > 65535 {
		return fmt.Errorf("--port %d is no TCP port", o.port)
	}
	return nil
}

// isLoopback reports whether address is localhost or a loopback IP.
func isLoopback(address string) bool {
	if address == "localhost" {
		return true
	}
	ip := net.ParseIP(address)
	return ip != nil && ip.IsLoopback()
}

func (o *uiOptions) run(ctx context.Context) error {
	k, err := newKubeClients(o.kube)
	if err != nil {
		return err
	}
	conn, err := o.connect(ctx, k, "kubectl podwall ui", o.streams)
	if err != nil {
		return err
	}
	defer conn.close()
	if err := o.signIn(ctx, conn); err != nil {
		return err
	}
	return o.serve(ctx, newProxy(conn.rt, conn.server, o.streams.ErrOut))
}

// signIn asks policygen for the workloads list once, so that a token it refuses, or a TLS or
// port-forward failure, stops the command before a URL is printed; missing RBAC only warns, since
// the UI says so on its pages.
func (o *uiOptions) signIn(ctx context.Context, conn *policygenConn) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+conn.server+"/ui/api/workloads", nil)
	if err != nil {
		return err
	}
	resp, err := conn.rt.RoundTrip(req)
	if err != nil {
		return fmt.Errorf("reach policygen's UI: %w", err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return nil
	case http.StatusUnauthorized:
		return fmt.Errorf("policygen does not accept your token (%s): sign in with --service-account NAME instead", body)
	case http.StatusForbidden:
		fmt.Fprintf(o.streams.ErrOut, "warning: you may not list WorkloadPolicies in every namespace, so the UI will show you nothing (%s)\n", body)
		return nil
	default:
		return fmt.Errorf("policygen's UI answered %s: %s", resp.Status, body)
	}
}

// serve listens, prints the URL, opens the browser and serves until ctx ends.
func (o *uiOptions) serve(ctx context.Context, h http.Handler) error {
	lis, err := net.Listen("tcp", net.JoinHostPort(o.address, strconv.Itoa(o.port)))
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if !isLoopback(o.address) {
		fmt.Fprintf(o.streams.ErrOut, "warning: the proxy listens on %s and adds your token to every request: anyone who can reach it acts as you\n", lis.Addr())
	}
	url := "http://" + lis.Addr().String() + "/ui/"
	fmt.Fprintf(o.streams.Out, "podwall UI: %s\n", url)
	fmt.Fprintln(o.streams.ErrOut, "Ctrl-C stops it.")
	if o.browser {
		if err := openBrowser(url); err != nil {
			fmt.Fprintf(o.streams.ErrOut, "cannot open a browser (%v): open %s yourself\n", err, url)
		}
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// openBrowser asks the desktop to open url, without waiting for the browser.
func openBrowser(url string) error {
	var cmd *exec.Cmd
	switch runtime.GOOS {
	case "darwin":
		cmd = exec.Command("open", url)
	case "windows":
		cmd = exec.Command("rundll32", "url.dll,FileProtocolHandler", url)
	default:
		cmd = exec.Command("xdg-open", url)
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() { _ = cmd.Wait() }()
	return nil
}
