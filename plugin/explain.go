package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"podwall.io/podwall/policygen/ui"
)

// explainOptions are `kubectl podwall explain`'s flags.
type explainOptions struct {
	policygenFlags
	kube      *genericclioptions.ConfigFlags
	streams   genericiooptions.IOStreams
	direction string
	protocol  string
	mode      string
	output    string
}

func newExplainCommand(kube *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := explainOptions{kube: kube, streams: streams}
	cmd := &cobra.Command{
		Use:   "explain POD DEST:PORT",
		Short: "Say which rule would allow or deny a pod's connection, without sending it",
		Long: `Say how POD's sidecar would judge a connection to DEST:PORT (or, with --direction ingress, from DEST
to the pod's PORT; loopback: to the pod's own PORT): the verdict, the rule that decides and what it
allows. Nothing is sent: policygen runs the sidecar's own decision code on the policy it serves the
pod now. DEST is an IP address or, for egress, a DNS name policygen resolves now (in the cluster).
--mode judges in another mode than the policy's: what would Protect do?

It reaches policygen as kubectl podwall ui does (a port-forward, TLS verified against policygen's
CA, your token) and needs RBAC to list WorkloadPolicies in every namespace.`,
		Example: `  # may web-0 reach the database?
  kubectl podwall explain -n shop web-0 10.96.0.12:5432

  # what would Protect do with a connection to a name?
  kubectl podwall explain -n shop web-0 api.stripe.com:443 --mode Protect`,
		Args: cobra.ExactArgs(2),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
			if len(args) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			k, err := newKubeClients(kube)
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			pods, err := k.cs.CoreV1().Pods(k.ns).List(cmd.Context(), metav1.ListOptions{})
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var names []cobra.Completion
			for _, p := range pods.Items {
				names = append(names, p.Name)
			}
			return names, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), args[0], args[1])
		},
	}
	f := cmd.Flags()
	o.addFlags(f)
	f.StringVar(&o.direction, "direction", "egress", "egress (the pod connects to DEST), ingress (DEST connects to the pod) or loopback")
	f.StringVar(&o.protocol, "protocol", "TCP", "TCP, UDP or SCTP")
	f.StringVar(&o.mode, "mode", "", "judge in this mode (Learn, Monitor, Protect) instead of the policy's")
	f.StringVarP(&o.output, "output", "o", "", "output format: json (default: words)")
	_ = cmd.RegisterFlagCompletionFunc("direction", cobra.FixedCompletions([]string{"egress", "ingress", "loopback"}, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("protocol", cobra.FixedCompletions([]string{"TCP", "UDP", "SCTP"}, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("mode", cobra.FixedCompletions([]string{"Learn", "Monitor", "Protect"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func (o *explainOptions) run(ctx context.Context, pod, dest string) error {
	if err := o.validate(); err != nil {
		return err
	}
	if o.output != "" && o.output != "json" {
		return fmt.Errorf("--output %q: want json, or nothing for words", o.output)
	}
	host, port, err := net.SplitHostPort(dest)
	if err != nil {
		return fmt.Errorf("%s: want DEST:PORT, as 10.0.0.7:5432, [fd00::7]:5432 or api.example.com:443", dest)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("%s: %q is no port", dest, port)
	}
	k, err := newKubeClients(o.kube)
	if err != nil {
		return err
	}
	conn, err := o.connect(ctx, k, "kubectl podwall explain", o.streams)
	if err != nil {
		return err
	}
	defer conn.close()
	q := url.Values{"namespace": {k.ns}, "pod": {pod}, "dest": {host}, "port": {port},
		"direction": {o.direction}, "protocol": {o.protocol}, "mode": {o.mode}}
	resp, err := conn.get(ctx, "/ui/api/explain?"+q.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var ex ui.Explanation
	if err := json.NewDecoder(resp.Body).Decode(&ex); err != nil {
		return fmt.Errorf("policygen's answer: %w", err)
	}
	if o.output == "json" {
		return json.NewEncoder(o.streams.Out).Encode(ex)
	}
	fmt.Fprintln(o.streams.Out, explanationText(ex))
	return nil
}

// explanationText says an explanation in a few lines.
func explanationText(ex ui.Explanation) string {
	var b strings.Builder
	what := ex.Address
	if ex.Name != "" {
		what = ex.Name + " (" + ex.Address + ")"
	}
	switch ex.Direction {
	case "ingress":
		fmt.Fprintf(&b, "%s from %s to pod %s/%s port %d/%s", ex.Direction, what, ex.Namespace, ex.Pod, ex.Port, ex.Protocol)
	default:
		fmt.Fprintf(&b, "%s from pod %s/%s to %s port %d/%s", ex.Direction, ex.Namespace, ex.Pod, what, ex.Port, ex.Protocol)
	}
	fmt.Fprintf(&b, "\nverdict: %s\nrule:    %s", strings.ToUpper(ex.Verdict), ex.Rule)
	if ex.Allows != "" {
		fmt.Fprintf(&b, " (allows %s)", ex.Allows)
	} else if ex.Rule == "default" {
		fmt.Fprintf(&b, " (no rule allows it: %s's default)", ex.Mode)
	}
	fmt.Fprintf(&b, "\npeer:    %s\npolicy:  %s (%s), revision %d, mode %s", ex.Peer, ex.Policy, ex.Workload, ex.Revision, ex.Mode)
	return b.String()
}
