package main

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"

	"podwall.io/podwall/cmd/internal/serving"
	"podwall.io/podwall/config"
	"podwall.io/podwall/injector"
)

// options translates the loaded configuration into the injector's options.
func options(c config.Injector) (injector.Options, error) {
	res, err := resources(c.Sidecar)
	if err != nil {
		return injector.Options{}, err
	}
	var native *bool
	if c.NativeSidecars != config.NativeAuto {
		native = ptr.To(c.NativeSidecars == config.NativeAlways)
	}
	return injector.Options{
		Port:                 c.Serve.Port,
		MetricsAddr:          c.Serve.MetricsAddr,
		HealthAddr:           c.Serve.HealthAddr,
		TLS:                  serving.Options(c.TLS.ServingTLS, c.TLS.Namespace),
		WebhookConfig:        c.TLS.WebhookConfig,
		PolicyGenCAConfigMap: c.Sidecar.PolicyGenCAConfigMap,
		NativeSidecars:       native,
		Sidecar: injector.SidecarOptions{
			Image:            c.Sidecar.Image,
			PullPolicy:       corev1.PullPolicy(c.Sidecar.PullPolicy),
			Resources:        res,
			Privileged:       c.Sidecar.Privileged,
			Port:             int32(c.Sidecar.Port),
			PolicyGenURL:     c.Sidecar.PolicyGenURL,
			TokenExpiration:  c.Sidecar.TokenExpiration,
			PlatformDefaults: c.Sidecar.Platform.PlatformDefaults(),
		},
	}, nil
}

// resources parses the sidecar's requests and limits; an empty quantity is left unset.
func resources(c config.InjectedSidecar) (corev1.ResourceRequirements, error) {
	res := corev1.ResourceRequirements{}
	for _, q := range []struct {
		list  *corev1.ResourceList
		name  corev1.ResourceName
		value string
	}{
		{&res.Requests, corev1.ResourceCPU, c.CPURequest}, {&res.Requests, corev1.ResourceMemory, c.MemoryRequest},
		{&res.Limits, corev1.ResourceCPU, c.CPULimit}, {&res.Limits, corev1.ResourceMemory, c.MemoryLimit},
	} {
		if q.value == "" {
			continue
		}
		v, err := resource.ParseQuantity(q.value)
		if err != nil {
			return res, fmt.Errorf("sidecar %s %q: %w", q.name, q.value, err)
		}
		if *q.list == nil {
			*q.list = corev1.ResourceList{}
		}
		(*q.list)[q.name] = v
	}
	return res, nil
}
