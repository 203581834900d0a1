package export

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/policygen/scheme"
	"podwall.io/podwall/policygen/workload"
)

// Command is "podwall-policygen export <namespace>/<name>": it writes that policy's NetworkPolicy to
// w, reaching the cluster the way kubectl would (--kubeconfig, KUBECONFIG, in-cluster).
func Command(ctx context.Context, args []string, w io.Writer) error {
	ns, name, ok := strings.Cut(strings.Join(args, " "), "/")
	if len(args) != 1 || !ok || ns == "" || name == "" {
		return fmt.Errorf("usage: podwall-policygen export <namespace>/<workloadpolicy>")
	}
	restCfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("kubernetes client configuration: %w", err)
	}
	c, err := client.New(restCfg, client.Options{Scheme: scheme.New()})
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	return Write(ctx, c, ns, name, w)
}

// Write reads the WorkloadPolicy namespace/name and what its peers name, and writes the NetworkPolicy
// as YAML to w, preceded by comment lines listing what could not be expressed.
func Write(ctx context.Context, r client.Reader, namespace, name string, w io.Writer) error {
	var wp v1.WorkloadPolicy
	if err := r.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &wp); err != nil {
		return fmt.Errorf("get WorkloadPolicy %s/%s: %w", namespace, name, err)
	}
	np, notes, err := Build(ctx, r, &wp)
	if err != nil {
		return err
	}
	out, err := yaml.Marshal(np)
	if err != nil {
		return fmt.Errorf("marshal NetworkPolicy: %w", err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# NetworkPolicy exported by podwall from WorkloadPolicy %s/%s.\n", namespace, name)
	for _, n := range notes {
		fmt.Fprintf(&b, "# not expressed: %s\n", n)
	}
	b.Write(out)
	_, err = io.WriteString(w, b.String())
	return err
}

// Build reads from r the selectors of wp's workload and of the workloads and Services its rules name,
// and translates wp (see NetworkPolicy).
func Build(ctx context.Context, r client.Reader, wp *v1.WorkloadPolicy) (*networkingv1.NetworkPolicy, []string, error) {
	in := Input{Policy: wp, Workloads: map[string]*metav1.LabelSelector{}, Services: map[string]*corev1.Service{}}
	var err error
	if in.PodSelector, err = selectorOf(ctx, r, wp.Namespace, wp.Spec.Workload.Kind, wp.Spec.Workload.Name); err != nil {
		return nil, nil, err
	}
	for _, rule := range slices.Concat(wp.Spec.Ingress, wp.Spec.Egress) {
		for _, p := range rule.Peers {
			if err := in.lookup(ctx, r, wp.Namespace, p); err != nil {
				return nil, nil, err
			}
		}
	}
	np, notes := NetworkPolicy(in)
	return np, notes, nil
}

func (in *Input) lookup(ctx context.Context, r client.Reader, ns string, p v1.Peer) error {
	switch {
	case p.Workload != nil:
		wns := or(p.Workload.Namespace, ns)
		sel, err := selectorOf(ctx, r, wns, p.Workload.Kind, p.Workload.Name)
		if err != nil {
			return err
		}
		if sel != nil {
			in.Workloads[wns+"/"+p.Workload.Kind+"/"+p.Workload.Name] = sel
		}
	case p.Service != nil:
		sns := or(p.Service.Namespace, ns)
		var svc corev1.Service
		err := r.Get(ctx, client.ObjectKey{Namespace: sns, Name: p.Service.Name}, &svc)
		if err == nil {
			in.Services[sns+"/"+p.Service.Name] = &svc
		} else if !apierrors.IsNotFound(err) {
			return fmt.Errorf("get Service %s/%s: %w", sns, p.Service.Name, err)
		}
	}
	return nil
}

// selectorOf returns the pod selector of a workload: its own selector, its labels for a bare pod; nil
// when it does not exist.
func selectorOf(ctx context.Context, r client.Reader, ns, kind, name string) (*metav1.LabelSelector, error) {
	obj, err := workload.New(kind)
	if err != nil {
		return nil, err
	}
	if err := r.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("get %s %s/%s: %w", kind, ns, name, err)
	}
	tpl, err := workload.Template(obj)
	if err != nil {
		return nil, err
	}
	// The template's labels select exactly the workload's pods (a Deployment's selector is a subset).
	return &metav1.LabelSelector{MatchLabels: tpl.Labels}, nil
}
