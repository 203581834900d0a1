package injector

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/api/sidecar"
	"podwall.io/podwall/config"
	"podwall.io/podwall/internal/certs"
)

// PlatformSource gives a pod's platform entry: sidecar keys and values that the injector passes as
// the sidecar's environment, which the pod's own config file may only tighten, and the podwall
// container's resources; no one in the pod's namespace can change either.
type PlatformSource interface {
	// For returns the entry of a pod of workload ("Kind/name", "" for none) in namespace. An error
	// refuses the pod, with the error's message.
	For(namespace, workload string) (config.PlatformEntry, error)
}

// Platform reads the platform's ConfigMap (sidecar.PlatformConfigMap, key sidecar.PlatformFile, in the
// injector's namespace) from a cache that watches that namespace's ConfigMaps, so an admission costs
// no API call; the file is parsed again only when the ConfigMap changes (config.ParsePlatform). A
// version that does not parse is logged and the last good one stays in force; with none good since
// the injector started, pods are refused with a message that says so: a platform floor must never
// silently vanish. Without the ConfigMap the platform sets nothing (only a cluster admin can delete
// it). Settings apply to pods created after a change (kubectl rollout restart).
//
// The settings also carry policygen's CA bundle (key policygen-ca), from the ConfigMap where
// policygen publishes it in the same namespace; until it is published, pods are refused: a sidecar
// that cannot verify policygen would never get a policy.
type Platform struct {
	reader client.Reader
	base   corev1.ResourceRequirements // the sidecar's resources that the entries are set over
	key    types.NamespacedName
	ca     types.NamespacedName // Name empty: the sidecars use the system roots
	log    logr.Logger

	mu      sync.Mutex
	version string           // the resourceVersion last parsed
	good    *config.Platform // the last version that parsed
	bad     error            // why the version last parsed was refused
}

// NewPlatform reads the ConfigMaps of namespace through reader: the platform's settings and, unless
// caConfigMap is empty, policygen's CA bundle. base is the sidecar's resources without the platform
// (SidecarOptions.Resources): a version of the ConfigMap whose resources, set over them, would ask
// for more than a limit is refused.
func NewPlatform(reader client.Reader, namespace, caConfigMap string, base corev1.ResourceRequirements, log logr.Logger) *Platform {
	return &Platform{reader: reader, log: log, base: base,
		key: types.NamespacedName{Namespace: namespace, Name: sidecar.PlatformConfigMap},
		ca:  types.NamespacedName{Namespace: namespace, Name: caConfigMap}}
}

// For implements PlatformSource.
func (p *Platform) For(namespace, workload string) (config.PlatformEntry, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	entry, err := p.entry(ctx, namespace, workload)
	if err != nil || p.ca.Name == "" {
		return entry, err
	}
	var cm corev1.ConfigMap
	if err := p.reader.Get(ctx, p.ca, &cm); err != nil && !apierrors.IsNotFound(err) {
		return config.PlatformEntry{}, fmt.Errorf("podwall: read policygen's CA bundle (ConfigMap %s): %w; retry", p.ca, err)
	}
	ca := cm.Data[certs.KeyCABundle]
	if ca == "" {
		return config.PlatformEntry{}, fmt.Errorf("podwall: policygen's CA bundle is not published yet (ConfigMap %s, key %s): policygen publishes it when it starts; check `kubectl -n %s get pods` and create the pod again",
			p.ca, certs.KeyCABundle, p.ca.Namespace)
	}
	entry.Settings = maps.Clone(entry.Settings)
	if entry.Settings == nil {
		entry.Settings = config.PlatformSettings{}
	}
	entry.Settings[string(sidecar.KeyPolicyGenCA)] = ca
	return entry, nil
}

// entry is the pod's entry of the platform's ConfigMap.
func (p *Platform) entry(ctx context.Context, namespace, workload string) (config.PlatformEntry, error) {
	var cm corev1.ConfigMap
	err := p.reader.Get(ctx, p.key, &cm)
	if apierrors.IsNotFound(err) {
		return config.PlatformEntry{}, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case err != nil && p.good == nil:
		return config.PlatformEntry{}, fmt.Errorf("podwall: cannot read ConfigMap %s in %s, the platform's settings: %v; retry", p.key.Name, p.key.Namespace, err)
	case err != nil:
		p.log.Error(err, "read the platform ConfigMap; the last good one stays in force")
	case cm.ResourceVersion != p.version:
		p.version = cm.ResourceVersion
		parsed, perr := config.ParsePlatform([]byte(cm.Data[sidecar.PlatformFile]), p.base)
		if perr != nil {
			p.bad = perr
			p.log.Error(perr, "platform ConfigMap refused; the last good version stays in force", "configmap", p.key.String(), "resourceVersion", cm.ResourceVersion)
			break
		}
		p.good, p.bad = &parsed, nil
		p.log.Info("platform ConfigMap applied to pods created from now on", "configmap", p.key.String(), "resourceVersion", cm.ResourceVersion)
	}
	if p.good == nil {
		return config.PlatformEntry{}, fmt.Errorf("podwall: ConfigMap %s in %s (the platform's settings) is invalid and no earlier version of it was good, so no pod is injected until a cluster admin fixes it: %w", p.key.Name, p.key.Namespace, p.bad)
	}
	return p.good.For(namespace, workload), nil
}
