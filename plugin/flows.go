package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"podwall.io/podwall/policygen/ui"
)

// flowsOptions are `kubectl podwall flows`'s flags.
type flowsOptions struct {
	policygenFlags
	kube          *genericclioptions.ConfigFlags
	streams       genericiooptions.IOStreams
	allNamespaces bool
	workload      string
	verdict       string
	peer          string
	port          uint16
	follow        bool
	output        string
}

func newFlowsCommand(kube *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := flowsOptions{kube: kube, streams: streams}
	cmd := &cobra.Command{
		Use:   "flows",
		Short: "Print the denied and audited connections of every pod, from all policygen replicas",
		Long: `Print the connections podwall's sidecars reported as denied or audited, as policygen keeps them
(the latest few thousand per replica), merged from every policygen replica; with --follow, go on
printing them as they are reported, like hubble observe.

Each line is one verdict: when, the pod's namespace, workload and pod, the direction (-> egress,
<- ingress), the peer and its address and port, the verdict, and the rule that decided. A replica
that cannot be reached is named on stderr: its verdicts are missing until it answers.

The command reaches policygen as kubectl podwall ui does (a port-forward, TLS verified against
policygen's CA, your token); reading needs RBAC to list WorkloadPolicies in every namespace.`,
		Example: `  # the denies of namespace shop, then each new one
  kubectl podwall flows -n shop --verdict deny --follow

  # everything every replica holds, as JSON lines
  kubectl podwall flows -A -o json`,
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
	f.BoolVarP(&o.allNamespaces, "all-namespaces", "A", false, "the pods of every namespace (default: -n's namespace)")
	f.StringVar(&o.workload, "workload", "", "only the pods of this workload, Kind/name (Deployment/web)")
	f.StringVar(&o.verdict, "verdict", "", "only this verdict: deny or audit")
	f.StringVar(&o.peer, "peer", "", "only peers whose address is in this address or CIDR, or whose name holds this text")
	f.Uint16Var(&o.port, "port", 0, "only connections to or from this port")
	f.BoolVarP(&o.follow, "follow", "f", false, "go on printing verdicts as they are reported, until Ctrl-C")
	f.StringVarP(&o.output, "output", "o", "", "output format: empty for lines, json for one JSON object per line")
	_ = cmd.RegisterFlagCompletionFunc("verdict", cobra.FixedCompletions([]string{"deny", "audit"}, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"json"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func (o *flowsOptions) validate() error {
	if err := o.policygenFlags.validate(); err != nil {
		return err
	}
	if o.output != "" && o.output != "json" {
		return fmt.Errorf("--output %q: want json, or nothing for lines", o.output)
	}
	if o.workload != "" && !strings.Contains(o.workload, "/") {
		return fmt.Errorf("--workload %q: want Kind/name, as Deployment/web", o.workload)
	}
	return nil
}

// query is the filter the cluster stream applies (ui.ParseFilter's parameters).
func (o *flowsOptions) query(ns string) url.Values {
	q := url.Values{"follow": {strconv.FormatBool(o.follow)}}
	if !o.allNamespaces {
		q.Set("namespace", ns)
	}
	for k, v := range map[string]string{"workload": o.workload, "verdict": o.verdict, "peer": o.peer} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if o.port != 0 {
		q.Set("port", strconv.Itoa(int(o.port)))
	}
	return q
}

func (o *flowsOptions) run(ctx context.Context) error {
	k, err := newKubeClients(o.kube)
	if err != nil {
		return err
	}
	conn, err := o.connect(ctx, k, "kubectl podwall flows", o.streams)
	if err != nil {
		return err
	}
	defer conn.close()
	resp, err := conn.get(ctx, "/ui/api/cluster/verdicts?"+o.query(k.ns).Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	err = ui.ReadEvents(resp.Body, func(event, _, data string) error {
		switch event {
		case "":
			var v ui.Event
			if err := json.Unmarshal([]byte(data), &v); err != nil {
				return fmt.Errorf("policygen sent a verdict that is no JSON: %w", err)
			}
			if o.output == "json" {
				fmt.Fprintln(o.streams.Out, data)
				return nil
			}
			fmt.Fprintln(o.streams.Out, flowLine(v))
		case "unreachable":
			var u ui.Unreachable
			if json.Unmarshal([]byte(data), &u) == nil {
				fmt.Fprintf(o.streams.ErrOut, "warning: policygen replica %s does not answer, its verdicts are missing: %s\n", u.Replica, u.Error)
			}
		case "lost":
			var l ui.Lost
			if json.Unmarshal([]byte(data), &l) == nil {
				fmt.Fprintf(o.streams.ErrOut, "warning: %d verdicts fell out of policygen replica %s's buffer before they could be printed\n", l.Lost, l.Replica)
			}
		}
		return nil
	})
	if ctx.Err() != nil {
		return nil // Ctrl-C
	}
	return err
}

// flowLine is a verdict as one line: time, pod, direction, peer, verdict, rule.
func flowLine(v ui.Event) string {
	arrow := "->"
	if v.Direction == "ingress" {
		arrow = "<-"
	}
	peer := v.Peer
	if peer != v.PeerAddr {
		peer += " (" + v.PeerAddr + ")"
	}
	if v.Name != "" {
		peer += " " + v.Name
	}
	line := fmt.Sprintf("%s  %s/%s %s %s %s port %d/%s  %s  rule %s", v.Time.Local().Format("Jan _2 15:04:05.000"),
		v.Namespace, v.Workload, v.Pod, arrow, peer, v.Port, v.Protocol, strings.ToUpper(v.Verdict), v.Rule)
	if v.Count > 1 {
		line += fmt.Sprintf("  ×%d", v.Count)
	}
	return line
}

// get asks policygen for path and returns a 200 answer; any other is an error saying what to do.
func (c *policygenConn) get(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+c.server+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.rt.RoundTrip(req)
	if err != nil {
		return nil, fmt.Errorf("reach policygen: %w", err)
	}
	if resp.StatusCode == http.StatusOK {
		return resp, nil
	}
	defer resp.Body.Close()
	var e struct{ Error string }
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if json.Unmarshal(body, &e) != nil || e.Error == "" {
		e.Error = strings.TrimSpace(string(body))
	}
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		return nil, fmt.Errorf("policygen does not accept your token (%s): sign in with --service-account NAME instead", e.Error)
	case http.StatusForbidden:
		return nil, fmt.Errorf("%s (check: kubectl auth can-i list workloadpolicies.podwall.io -A)", e.Error)
	}
	return nil, errors.New("policygen answered " + resp.Status + ": " + e.Error)
}
