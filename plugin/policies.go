package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/policygen/export"
	"podwall.io/podwall/policygen/scheme"
	"podwall.io/podwall/policygen/workload"
)

// policyClient is a client of the API server for WorkloadPolicies, in -n's namespace.
type policyClient struct {
	c  client.Client
	ns string
}

func newPolicyClient(kube *genericclioptions.ConfigFlags) (policyClient, error) {
	k, err := newKubeClients(kube)
	if err != nil {
		return policyClient{}, err
	}
	c, err := client.New(k.cfg, client.Options{Scheme: scheme.New()})
	if err != nil {
		return policyClient{}, fmt.Errorf("kubeconfig: %w", err)
	}
	return policyClient{c: c, ns: k.ns}, nil
}

// denied names the permission a Forbidden answer lacked, as kubectl auth can-i takes it.
func denied(err error, verb, ns, name string) error {
	if !apierrors.IsForbidden(err) {
		return err
	}
	a := access{verb: verb, resource: "workloadpolicies.podwall.io", namespace: ns, name: name}
	return fmt.Errorf("your Kubernetes permissions do not let you %s WorkloadPolicies (check: kubectl auth can-i %s)", verb, a.canI())
}

// find returns the WorkloadPolicy of WORKLOAD: a policy's name (deployment-web), or the workload's
// Kind/name (Deployment/web, deployment/web).
func (pc policyClient) find(ctx context.Context, arg string) (*v1.WorkloadPolicy, error) {
	name := arg
	if kind, wname, ok := strings.Cut(arg, "/"); ok {
		if !slices.ContainsFunc(workload.Kinds, func(k string) bool { return strings.EqualFold(k, kind) }) {
			return nil, fmt.Errorf("%s: podwall has policies for the kinds %s, not %s", arg, strings.Join(workload.Kinds, ", "), kind)
		}
		name = workload.PolicyName(kind, wname)
	}
	var wp v1.WorkloadPolicy
	err := pc.c.Get(ctx, types.NamespacedName{Namespace: pc.ns, Name: name}, &wp)
	switch {
	case apierrors.IsNotFound(err):
		return nil, fmt.Errorf("namespace %s has no WorkloadPolicy %s (list them: kubectl podwall status -n %s)", pc.ns, name, pc.ns)
	case err != nil:
		return nil, denied(err, "get", pc.ns, name)
	}
	return &wp, nil
}

// policyStatus is one workload's row of `kubectl podwall status`, and its -o json|yaml object.
type policyStatus struct {
	Namespace string      `json:"namespace"`
	Policy    string      `json:"policy"`
	Workload  string      `json:"workload"`
	Mode      policy.Mode `json:"mode"`
	// Sidecars subscribed, how many run the latest revision, how many run another version than
	// policygen's (restart their pods to upgrade them), how many guard their pod less than the policy
	// asks (failing open, a weaker mode, or their ruleset changed by another process lately).
	Sidecars       int32            `json:"sidecars"`
	SidecarsInSync int32            `json:"sidecarsInSync"`
	Outdated       int32            `json:"outdatedSidecars"`
	Weakened       int32            `json:"weakenedSidecars"`
	Coverage       *v1.Coverage     `json:"coverage,omitempty"`
	WouldDeny      int32            `json:"wouldDenyFlows"`
	Canary         *v1.CanaryStatus `json:"canary,omitempty"`
	Proposals      int32            `json:"pendingProposals,omitempty"`
}

func statusOf(wp *v1.WorkloadPolicy) policyStatus {
	return policyStatus{Namespace: wp.Namespace, Policy: wp.Name, Workload: wp.Spec.Workload.Kind + "/" + wp.Spec.Workload.Name,
		Mode: wp.Spec.Mode, Sidecars: wp.Status.Sidecars, SidecarsInSync: wp.Status.SidecarsInSync, Outdated: wp.Status.OutdatedSidecars,
		Weakened: wp.Status.WeakenedSidecars,
		Coverage: wp.Status.Coverage, WouldDeny: wp.Status.WouldDenyFlows, Canary: wp.Status.Canary, Proposals: wp.Status.PendingProposals}
}

// coverageText is coverage in a table cell: reported/pods, hours observed, gaps, complete or not.
func coverageText(c *v1.Coverage) string {
	if c == nil {
		return "<none>"
	}
	s := fmt.Sprintf("%d/%d pods %dh", c.Reported, c.Pods, c.ObservedHours)
	if c.GapHours > 0 {
		s += fmt.Sprintf(" %dh gaps", c.GapHours)
	}
	if c.Complete {
		return s + " complete"
	}
	return s + " incomplete"
}

func canaryText(c *v1.CanaryStatus) string {
	if c == nil {
		return "<none>"
	}
	return fmt.Sprintf("%s %d pods", c.State, len(c.Pods))
}

// statusOptions are `kubectl podwall status`'s flags.
type statusOptions struct {
	kube          *genericclioptions.ConfigFlags
	streams       genericiooptions.IOStreams
	allNamespaces bool
	output        string
}

func newStatusCommand(kube *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := statusOptions{kube: kube, streams: streams}
	cmd := &cobra.Command{
		Use:   "status [WORKLOAD...]",
		Short: "Show each workload's mode, coverage, would-deny flows, canary and sidecars",
		Long: `Show podwall's view of each workload of -n's namespace (or every namespace with -A), from its
WorkloadPolicy: its mode; its sidecars (in sync: running the latest revision in the policy's mode;
outdated: running another version than policygen's, until their pods restart; weakened: failing open,
enforcing a weaker mode than the policy's, or whose ruleset another process in the pod changed within
the last 10 minutes, which means something there holds CAP_NET_ADMIN and used it); the coverage of the
current window (the pods that reported, the whole hours observed, gaps); how many flows Protect would
refuse; the canary rollout; and the manifest rules waiting to be accepted.

WORKLOAD is a WorkloadPolicy's name (deployment-web) or a workload's Kind/name (Deployment/web).
It needs RBAC to list WorkloadPolicies (get, for named workloads).`,
		Example: `  # every workload of the namespace
  kubectl podwall status -n shop

  # one workload, as YAML
  kubectl podwall status -n shop deployment/web -o yaml`,
		ValidArgsFunction: completePolicies(kube),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), args)
		},
	}
	cmd.Flags().BoolVarP(&o.allNamespaces, "all-namespaces", "A", false, "the workloads of every namespace")
	cmd.Flags().StringVarP(&o.output, "output", "o", "", "output format: json or yaml (default: a table)")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"json", "yaml"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func (o *statusOptions) run(ctx context.Context, args []string) error {
	if o.output != "" && o.output != "json" && o.output != "yaml" {
		return fmt.Errorf("--output %q: want json or yaml, or nothing for a table", o.output)
	}
	if o.allNamespaces && len(args) > 0 {
		return fmt.Errorf("name workloads of one namespace (-n), or list every namespace's with -A, not both")
	}
	pc, err := newPolicyClient(o.kube)
	if err != nil {
		return err
	}
	var rows []policyStatus
	if len(args) > 0 {
		for _, a := range args {
			wp, err := pc.find(ctx, a)
			if err != nil {
				return err
			}
			rows = append(rows, statusOf(wp))
		}
	} else {
		var list v1.WorkloadPolicyList
		ns := pc.ns
		if o.allNamespaces {
			ns = ""
		}
		if err := pc.c.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return denied(err, "list", ns, "")
		}
		for i := range list.Items {
			rows = append(rows, statusOf(&list.Items[i]))
		}
		slices.SortFunc(rows, func(a, b policyStatus) int {
			return strings.Compare(a.Namespace+"/"+a.Policy, b.Namespace+"/"+b.Policy)
		})
	}
	return printStatus(o.streams.Out, o.streams.ErrOut, rows, o.output, o.allNamespaces, pc.ns)
}

func printStatus(out, errOut io.Writer, rows []policyStatus, output string, allNamespaces bool, ns string) error {
	switch output {
	case "json":
		data, err := json.MarshalIndent(rows, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(out, "%s\n", data)
		return err
	case "yaml":
		data, err := yaml.Marshal(rows)
		if err != nil {
			return err
		}
		_, err = out.Write(data)
		return err
	}
	if len(rows) == 0 {
		if allNamespaces {
			fmt.Fprintln(errOut, "No WorkloadPolicies found.")
		} else {
			fmt.Fprintf(errOut, "No WorkloadPolicies found in %s namespace.\n", ns)
		}
		return nil
	}
	w := printers.GetNewTabWriter(out)
	if allNamespaces {
		fmt.Fprint(w, "NAMESPACE\t")
	}
	fmt.Fprintln(w, "WORKLOAD\tMODE\tSIDECARS\tIN-SYNC\tOUTDATED\tWEAKENED\tCOVERAGE\tWOULD-DENY\tCANARY\tPROPOSALS")
	for _, r := range rows {
		if allNamespaces {
			fmt.Fprintf(w, "%s\t", r.Namespace)
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%d\t%s\t%d\t%s\t%d\n", r.Workload, r.Mode, r.Sidecars, r.SidecarsInSync, r.Outdated, r.Weakened,
			coverageText(r.Coverage), r.WouldDeny, canaryText(r.Canary), r.Proposals)
	}
	return w.Flush()
}

// completePolicies completes WORKLOAD arguments with the WorkloadPolicies of -n's namespace.
func completePolicies(kube *genericclioptions.ConfigFlags) cobra.CompletionFunc {
	return func(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		pc, err := newPolicyClient(kube)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var list v1.WorkloadPolicyList
		if err := pc.c.List(cmd.Context(), &list, client.InNamespace(pc.ns)); err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var names []cobra.Completion
		for _, wp := range list.Items {
			if strings.HasPrefix(wp.Name, toComplete) {
				names = append(names, wp.Name)
			}
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	}
}

// nextMode is the mode a promotion moves to.
func nextMode(m policy.Mode) (policy.Mode, bool) {
	switch m {
	case policy.Learn:
		return policy.Monitor, true
	case policy.Monitor:
		return policy.Protect, true
	}
	return "", false
}

// promoteOptions are `kubectl podwall promote`'s flags.
type promoteOptions struct {
	kube    *genericclioptions.ConfigFlags
	streams genericiooptions.IOStreams
	force   bool
	now     func() time.Time
}

func newPromoteCommand(kube *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := promoteOptions{kube: kube, streams: streams, now: time.Now}
	cmd := &cobra.Command{
		Use:   "promote WORKLOAD",
		Short: "Move a workload's policy to its next mode (Learn → Monitor → Protect), evidence first",
		Long: `Move a workload's policy to its next mode: Learn to Monitor, Monitor to Protect.

The evidence is printed first: the coverage of the current window (did every pod report, through
every hour?), the flows Protect would refuse, and the canary rollout. The promotion is refused while
the coverage is incomplete or unknown, while any flow would be refused, or, to Protect, while a
canary asked for (spec.canary) has not passed; --force promotes all the same.

WORKLOAD is a WorkloadPolicy's name (deployment-web) or a workload's Kind/name (Deployment/web) in
-n's namespace. It needs RBAC to get and patch the WorkloadPolicy.`,
		Example: `  # move web to its next mode if the evidence allows it
  kubectl podwall promote -n shop deployment/web

  # move it whatever the evidence says
  kubectl podwall promote -n shop deployment/web --force`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completePolicies(kube),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), args[0])
		},
	}
	cmd.Flags().BoolVar(&o.force, "force", false, "promote even when the evidence is missing or speaks against it")
	return cmd
}

func (o *promoteOptions) run(ctx context.Context, arg string) error {
	pc, err := newPolicyClient(o.kube)
	if err != nil {
		return err
	}
	wp, err := pc.find(ctx, arg)
	if err != nil {
		return err
	}
	to, ok := nextMode(wp.Spec.Mode)
	if !ok {
		return fmt.Errorf("WorkloadPolicy %s/%s is in %s already: there is no next mode", wp.Namespace, wp.Name, wp.Spec.Mode)
	}
	blockers := o.printEvidence(wp, to)
	if len(blockers) > 0 && !o.force {
		return fmt.Errorf("not promoting %s/%s to %s: %s (promote all the same with --force)", wp.Namespace, wp.Name, to, strings.Join(blockers, "; "))
	}
	patch := client.MergeFrom(wp.DeepCopy())
	wp.Spec.Mode = to
	if err := pc.c.Patch(ctx, wp, patch); err != nil {
		return denied(err, "patch", wp.Namespace, wp.Name)
	}
	fmt.Fprintf(o.streams.Out, "workloadpolicy.podwall.io/%s promoted to %s\n", wp.Name, to)
	return nil
}

// printEvidence prints what the promotion of wp to mode to rests on and returns what speaks against it.
func (o *promoteOptions) printEvidence(wp *v1.WorkloadPolicy, to policy.Mode) []string {
	out := o.streams.Out
	var blockers []string
	fmt.Fprintf(out, "WorkloadPolicy %s/%s (%s/%s): %s → %s\n", wp.Namespace, wp.Name, wp.Spec.Workload.Kind, wp.Spec.Workload.Name, wp.Spec.Mode, to)
	if c := wp.Status.Coverage; c == nil {
		fmt.Fprintln(out, "Coverage:   unknown (policygen has not measured this window yet)")
		blockers = append(blockers, "coverage unknown")
	} else {
		fmt.Fprintf(out, "Coverage:   since %s (%s): %d of %d pods reported, %d whole hours observed, %d with gaps, %d flows seen\n",
			c.Since.UTC().Format(time.RFC3339), duration.HumanDuration(o.now().Sub(c.Since.Time)), c.Reported, c.Pods, c.ObservedHours, c.GapHours, c.Flows)
		if !c.Complete {
			blockers = append(blockers, fmt.Sprintf("coverage incomplete (%d of %d pods reported, %d gap hours)", c.Reported, c.Pods, c.GapHours))
		}
	}
	fmt.Fprintf(out, "Would deny: %d flows\n", wp.Status.WouldDenyFlows)
	for _, f := range wp.Status.WouldDeny {
		peer := f.Peer
		if f.Address != "" {
			peer += " (" + f.Address + ")"
		}
		fmt.Fprintf(out, "  %s %s port %d/%s ×%d, last %s ago\n", f.Direction, peer, f.Port, f.Protocol, f.Count,
			duration.HumanDuration(o.now().Sub(f.LastSeen.Time)))
	}
	if n := wp.Status.WouldDenyFlows; n > 0 {
		blockers = append(blockers, fmt.Sprintf("%d flows would be denied", n))
	}
	switch c := wp.Status.Canary; {
	case c != nil:
		fmt.Fprintf(out, "Canary:     %s on %s since %s", c.State, strings.Join(c.Pods, ", "), c.Since.UTC().Format(time.RFC3339))
		if c.Reason != "" {
			fmt.Fprintf(out, ": %s", c.Reason)
		}
		fmt.Fprintln(out)
		if to == policy.Protect && c.State != v1.CanaryPassed {
			blockers = append(blockers, "the canary has not passed ("+string(c.State)+")")
		}
	case wp.Spec.Canary != nil:
		fmt.Fprintf(out, "Canary:     %s asked, not started\n", wp.Spec.Canary)
		if to == policy.Protect {
			blockers = append(blockers, "the canary asked for has not run")
		}
	default:
		fmt.Fprintln(out, "Canary:     none asked (spec.canary)")
	}
	return blockers
}

func newExportCommand(kube *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	return &cobra.Command{
		Use:   "export WORKLOAD",
		Short: "Print a workload's policy as a Kubernetes NetworkPolicy (YAML)",
		Long: `Print a workload's policy as a Kubernetes NetworkPolicy, in YAML, for a second, CNI-enforced layer
or a cluster without podwall. What a NetworkPolicy cannot express (FQDN peers, loopback rules, ICMP
types, ...) is listed in comment lines first.

WORKLOAD is a WorkloadPolicy's name (deployment-web) or a workload's Kind/name (Deployment/web) in
-n's namespace. It needs RBAC to get the WorkloadPolicy and the workloads and Services its rules name.`,
		Example:           `  kubectl podwall export -n shop deployment/web > web-netpol.yaml`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completePolicies(kube),
		RunE: func(cmd *cobra.Command, args []string) error {
			pc, err := newPolicyClient(kube)
			if err != nil {
				return err
			}
			wp, err := pc.find(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if err := export.Write(cmd.Context(), pc.c, wp.Namespace, wp.Name, streams.Out); err != nil {
				return denied(err, "get", wp.Namespace, wp.Name)
			}
			return nil
		},
	}
}
