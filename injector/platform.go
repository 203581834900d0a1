package injector

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/api/sidecar"
	"podwall.io/podwall/config"
	"podwall.io/podwall/config/platform"
	"podwall.io/podwall/internal/certs"
)

// PlatformSource gives a pod's platform entry: sidecar keys and values that the injector passes as
// the sidecar's environment, which the pod's own config file may only tighten, and the podwall
// container's resources; no one in the pod's namespace can change either.
type PlatformSource interface {
	// For returns the entry of a pod of workload ("Kind/name", "" for none) in namespace. An error
	// refuses the pod, with the error's message.
	For(namespace, workload string) (platform.Entry, error)
}

// Platform reads the platform's ConfigMap (sidecar.PlatformConfigMap, key sidecar.PlatformFile, in the
// injector's namespace) from a cache that watches that namespace's ConfigMaps, so an admission costs
// no API call; the file is parsed again only when the ConfigMap changes (platform.Parse). A
// version that does not parse is logged and the last good one stays in force; with none good since
// the injector started, pods are refused with a message that says so: a platform floor must never
// silently vanish. Without the ConfigMap the platform sets nothing (only a cluster admin can delete
// it). Settings apply to pods created after a change (kubectl rollout restart).
//
// The settings also carry policygen's CA bundle (key policygen-ca), from the ConfigMap where
// policygen publishes it in the same namespace; until it is published, pods are refused: a sidecar
// that cannot verify policygen would never get a policy.
//
// What it read stands until the informer delivers the next event of the namespace's ConfigMaps, so
// that an admission does not even look the ConfigMaps up in the cache (each lookup maps the kind to
// its resource and copies the object); the informer updates its cache before it delivers the event.
type Platform struct {
	reader client.Reader
	base   corev1.ResourceRequirements // the sidecar's resources that the entries are set over
	key    types.NamespacedName
	ca     types.NamespacedName // Name empty: the sidecars use the system roots
	log    logr.Logger
	events atomic.Uint64 // the informer's events of the namespace's ConfigMaps

	mu      sync.Mutex
	version string             // the resourceVersion last parsed
	good    *platform.Platform // the last version that parsed
	bad     error              // why the version last parsed was refused
	last    *platformRead      // the ConfigMaps as last read whole
}

// platformRead is what the ConfigMaps said when the informer had delivered events of them.
type platformRead struct {
	events   uint64
	platform *platform.Platform // nil: no platform ConfigMap, the platform sets nothing
	ca       string             // policygen's CA bundle; empty when the sidecars use the system roots
}

// NewPlatform reads the ConfigMaps of namespace through c, watched by c's ConfigMap informer, which it
// registers: the platform's settings and, unless caConfigMap is empty, policygen's CA bundle. base is
// the sidecar's resources without the platform (SidecarOptions.Resources): a version of the ConfigMap
// whose resources, set over them, would ask for more than a limit is refused.
func NewPlatform(ctx context.Context, c cache.Cache, namespace, caConfigMap string, base corev1.ResourceRequirements, log logr.Logger) (*Platform, error) {
	p := &Platform{reader: c, log: log, base: base,
		key: types.NamespacedName{Namespace: namespace, Name: sidecar.PlatformConfigMap},
		ca:  types.NamespacedName{Namespace: namespace, Name: caConfigMap}}
	informer, err := c.GetInformer(ctx, &corev1.ConfigMap{})
	if err != nil {
		return nil, fmt.Errorf("watch the platform's ConfigMaps: %w", err)
	}
	event := func(any) { p.events.Add(1) }
	if _, err := informer.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: event, UpdateFunc: func(_, obj any) { event(obj) }, DeleteFunc: event,
	}); err != nil {
		return nil, fmt.Errorf("watch the platform's ConfigMaps: %w", err)
	}
	return p, nil
}

// For implements PlatformSource.
func (p *Platform) For(namespace, workload string) (platform.Entry, error) {
	read, err := p.read()
	if err != nil {
		return platform.Entry{}, err
	}
	var entry platform.Entry
	if read.platform != nil {
		entry = read.platform.For(namespace, workload)
	}
	if p.ca.Name == "" {
		return entry, nil
	}
	entry.Settings = maps.Clone(entry.Settings)
	if entry.Settings == nil {
		entry.Settings = config.PlatformSettings{}
	}
	entry.Settings[string(sidecar.KeyPolicyGenCA)] = read.ca
	return entry, nil
}

// read returns what the ConfigMaps said when last read, unless the informer has delivered an event
// since; then it reads them again. A read that fails, or falls back on the last good platform
// version because the ConfigMap could not be read, is not kept.
func (p *Platform) read() (*platformRead, error) {
	events := p.events.Load()
	p.mu.Lock()
	last := p.last
	p.mu.Unlock()
	if last != nil && last.events == events {
		return last, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	parsed, keep, err := p.platform(ctx)
	if err != nil {
		return nil, err
	}
	read := &platformRead{events: events, platform: parsed}
	if p.ca.Name != "" {
		var cm corev1.ConfigMap
		if err := p.reader.Get(ctx, p.ca, &cm); err != nil && !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("podwall: read policygen's CA bundle (ConfigMap %s): %w; retry", p.ca, err)
		}
		if read.ca = cm.Data[certs.KeyCABundle]; read.ca == "" {
			return nil, fmt.Errorf("podwall: policygen's CA bundle is not published yet (ConfigMap %s, key %s): policygen publishes it when it starts; check `kubectl -n %s get pods` and create the pod again",
				p.ca, certs.KeyCABundle, p.ca.Namespace)
		}
	}
	if keep {
		p.mu.Lock()
		p.last = read
		p.mu.Unlock()
	}
	return read, nil
}

// platform is the platform's ConfigMap as parsed, nil when there is none; keep is false when the
// ConfigMap could not be read and the last good version stands in.
func (p *Platform) platform(ctx context.Context) (_ *platform.Platform, keep bool, _ error) {
	var cm corev1.ConfigMap
	err := p.reader.Get(ctx, p.key, &cm)
	if apierrors.IsNotFound(err) {
		return nil, true, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case err != nil && p.good == nil:
		return nil, false, fmt.Errorf("podwall: cannot read ConfigMap %s in %s, the platform's settings: %v; retry", p.key.Name, p.key.Namespace, err)
	case err != nil:
		p.log.Error(err, "read the platform ConfigMap; the last good one stays in force")
	case cm.ResourceVersion != p.version:
		p.version = cm.ResourceVersion
		parsed, perr := platform.Parse([]byte(cm.Data[sidecar.PlatformFile]), p.base)
		if perr != nil {
			p.bad = perr
			p.log.Error(perr, "platform ConfigMap refused; the last good version stays in force", "configmap", p.key.String(), "resourceVersion", cm.ResourceVersion)
			break
		}
		p.good, p.bad = &parsed, nil
		p.log.Info("platform ConfigMap applied to pods created from now on", "configmap", p.key.String(), "resourceVersion", cm.ResourceVersion)
	}
	if p.good == nil {
		return nil, false, fmt.Errorf("podwall: ConfigMap %s in %s (the platform's settings) is invalid and no earlier version of it was good, so no pod is injected until a cluster admin fixes it: %w", p.key.Name, p.key.Namespace, p.bad)
	}
	return p.good, err == nil, nil
}
