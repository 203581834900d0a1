package injector

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/api/sidecar"
	"podwall.io/podwall/config"
)

// PlatformSource gives a pod's platform settings: sidecar keys and values that the injector passes as
// the sidecar's environment, which the pod's own config file may only tighten.
type PlatformSource interface {
	// Settings returns the settings of a pod of workload ("Kind/name", "" for none) in namespace. An
	// error refuses the pod, with the error's message.
	Settings(namespace, workload string) (map[string]string, error)
}

// Platform reads the platform's ConfigMap (sidecar.PlatformConfigMap, key sidecar.PlatformFile, in the
// injector's namespace) from a cache that watches that namespace's ConfigMaps, so an admission costs
// no API call; the file is parsed again only when the ConfigMap changes (config.ParsePlatform). A
// version that does not parse is logged and the last good one stays in force; with none good since
// the injector started, pods are refused with a message that says so: a platform floor must never
// silently vanish. Without the ConfigMap the platform sets nothing (only a cluster admin can delete
// it). Settings apply to pods created after a change (kubectl rollout restart).
type Platform struct {
	reader client.Reader
	key    types.NamespacedName
	log    logr.Logger

	mu      sync.Mutex
	version string           // the resourceVersion last parsed
	good    *config.Platform // the last version that parsed
	bad     error            // why the version last parsed was refused
}

// NewPlatform reads the ConfigMap of namespace through reader.
func NewPlatform(reader client.Reader, namespace string, log logr.Logger) *Platform {
	return &Platform{reader: reader, key: types.NamespacedName{Namespace: namespace, Name: sidecar.PlatformConfigMap}, log: log}
}

// Settings implements PlatformSource.
func (p *Platform) Settings(namespace, workload string) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var cm corev1.ConfigMap
	err := p.reader.Get(ctx, p.key, &cm)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case err != nil && p.good == nil:
		return nil, fmt.Errorf("podwall: cannot read ConfigMap %s in %s, the platform's settings: %v; retry", p.key.Name, p.key.Namespace, err)
	case err != nil:
		p.log.Error(err, "read the platform ConfigMap; the last good one stays in force")
	case cm.ResourceVersion != p.version:
		p.version = cm.ResourceVersion
		parsed, perr := config.ParsePlatform([]byte(cm.Data[sidecar.PlatformFile]))
		if perr != nil {
			p.bad = perr
			p.log.Error(perr, "platform ConfigMap refused; the last good version stays in force", "configmap", p.key.String(), "resourceVersion", cm.ResourceVersion)
			break
		}
		p.good, p.bad = &parsed, nil
		p.log.Info("platform ConfigMap applied to pods created from now on", "configmap", p.key.String(), "resourceVersion", cm.ResourceVersion)
	}
	if p.good == nil {
		return nil, fmt.Errorf("podwall: ConfigMap %s in %s (the platform's settings) is invalid and no earlier version of it was good, so no pod is injected until a cluster admin fixes it: %w", p.key.Name, p.key.Namespace, p.bad)
	}
	return p.good.For(namespace, workload), nil
}
