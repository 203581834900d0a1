package injector

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/internal/certs"
)

// Platform is what the platform's namespace (podwall-system) holds for the pods the injector
// injects, read at each admission: nothing a namespace's own users can write.
type Platform struct {
	// PolicyGenCA is the PEM bundle that verifies policygen, which policygen publishes; the sidecar
	// gets it in its environment. Empty: the system roots.
	PolicyGenCA []byte
}

// PlatformSource reads the Platform for one admission.
type PlatformSource func(ctx context.Context) (Platform, error)

// ConfigMapPlatform reads policygen's CA bundle from the ConfigMap namespace/caConfigMap (key
// ca.crt, where policygen publishes it) through r, the injector's cache of that namespace's
// ConfigMaps; an empty caConfigMap leaves the sidecars on the system roots. Until policygen has
// published it, pods are refused: a sidecar that cannot verify policygen would never get a policy.
func ConfigMapPlatform(r client.Reader, namespace, caConfigMap string) PlatformSource {
	return func(ctx context.Context) (Platform, error) {
		if caConfigMap == "" {
			return Platform{}, nil
		}
		var cm corev1.ConfigMap
		err := r.Get(ctx, types.NamespacedName{Namespace: namespace, Name: caConfigMap}, &cm)
		if err != nil && !apierrors.IsNotFound(err) {
			return Platform{}, fmt.Errorf("podwall: read policygen's CA bundle (ConfigMap %s/%s): %w", namespace, caConfigMap, err)
		}
		ca := cm.Data[certs.KeyCABundle]
		if ca == "" {
			return Platform{}, fmt.Errorf("podwall: policygen's CA bundle is not published yet (ConfigMap %s/%s, key %s): policygen publishes it when it starts; check `kubectl -n %s get pods` and create the pod again",
				namespace, caConfigMap, certs.KeyCABundle, namespace)
		}
		return Platform{PolicyGenCA: []byte(ca)}, nil
	}
}
