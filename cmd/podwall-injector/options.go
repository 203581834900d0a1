package main

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	"podwall.io/podwall/cmd/internal/serving"
	"podwall.io/podwall/config"
	"podwall.io/podwall/config/platform"
	"podwall.io/podwall/injector"
)

// options translates the loaded configuration into the injector's options.
func options(c config.Injector) (injector.Options, error) {
	res, err := platform.SidecarResources(c.Sidecar)
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
