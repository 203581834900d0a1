package plugin

import (
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"podwall.io/podwall/internal/version"
)

// NewCommand returns the plugin's root command. Its persistent flags are kubectl's own connection
// flags (--kubeconfig, --context, -n, --as ...), read as kubectl reads them; cobra adds the
// completion command (`kubectl podwall completion bash|zsh|fish|powershell`).
func NewCommand(streams genericiooptions.IOStreams) *cobra.Command {
	kube := genericclioptions.NewConfigFlags(true)
	root := &cobra.Command{
		Use:   "kubectl-podwall",
		Short: "Work with podwall, the per-pod firewall, from kubectl",
		Long: `kubectl podwall works with podwall, the per-pod firewall, in the cluster of your kubeconfig.

Install it by putting the kubectl-podwall binary on your PATH; kubectl then runs it as "kubectl podwall".
Put kubectl_complete-podwall (make build writes it beside the binary) on the PATH too, and kubectl's
own completion completes "kubectl podwall <TAB>"; or load "kubectl podwall completion bash|zsh".

Commands that read WorkloadPolicies (status, promote, export) ask the API server as kubectl does;
those that read verdicts (flows, explain, ui) reach policygen through a port-forward, TLS verified
against policygen's CA, with your token.`,
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl podwall"},
		Version:       version.String("kubectl-podwall"),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	kube.AddFlags(root.PersistentFlags())
	root.AddCommand(newUICommand(kube, streams), newFlowsCommand(kube, streams), newStatusCommand(kube, streams), newPromoteCommand(kube, streams), newExportCommand(kube, streams), newExplainCommand(kube, streams), &cobra.Command{
		Use:   "version",
		Short: "Print the plugin's version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(streams.Out, root.Version)
		},
	})
	// Errors are printed here, once, as kubectl prints them; SilenceErrors keeps cobra from printing
	// them again with its own prefix.
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%w\nSee '%s --help' for usage", err, c.CommandPath())
	})
	return root
}
