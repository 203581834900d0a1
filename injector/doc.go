// Package injector is podwall's mutating admission webhook: it puts the podwall sidecar into every pod
// created in a namespace labelled podwall.io/inject=enabled, and keeps the webhook's own TLS in order.
//
// The webhook reads the AdmissionReview itself, the review and the pod in it in one decode, with
// controller-runtime's limits, checks and answers to a request it cannot read. The mutation edits the
// decoded pod, as a typed defaulter would, and the JSON patch is computed from the pod as the API
// server sent it to the pod as edited, so no patch is written by hand: diffJSON finds the operations
// controller-runtime's defaulters find, on the raw bytes, and the removals that decoding alone makes
// (fields podwall's API types do not know) are dropped, as they drop them. Warnings for the client (a
// hostNetwork pod left alone, an app container that could flush the firewall) go into the answer,
// denied or not. What the injector adds that is the same in every pod (the podwall container but for
// its environment and resources, its volumes, the status annotation) is built once, with the
// Injector, and deep-copied into each pod; the buffers a request is read and its pod marshalled into
// are reused. Per pod this costs a fraction of what controller-runtime's generic path cost
// (BENCHMARKS.md, Injector).
//
// # Layouts
//
// On API servers from 1.29 on, the podwall container is a native sidecar: the first init container,
// with restartPolicy Always and a startup probe on its /readyz, so no other init or app container
// starts before the ruleset is in place. On older servers an init container (the sidecar binary with
// --baseline-only) installs the deny-all baseline first and the podwall container runs as the first
// ordinary container; until it applies the policy, the baseline denies.
//
// # Selection
//
// The MutatingWebhookConfiguration selects opted-in namespaces, never kube-system or podwall-system,
// and sends pods of namespaces labelled podwall.io/strict=true to the strict path (/inject-strict).
// Namespaces enforcing a Pod Security level an injected pod cannot meet (pod-security.kubernetes.io/
// enforce baseline or restricted: the sidecar adds NET_ADMIN) go to the same path with
// "-enforce-<level>" appended. Strictness and level travel in the path so that the webhook needs no
// namespace reads: each request is decided from the request alone. Strict namespaces ignore a pod's
// opt-out and deny app containers that could flush the firewall; elsewhere those get a warning. In a
// namespace enforcing baseline or restricted the injector refuses every pod it would inject, saying
// why and what to do, before PodSecurity would refuse it with a message that names neither.
//
// # NET_RAW
//
// App containers lose NET_RAW, which the runtime grants by default and which would let a compromised
// app set SO_MARK and send through packet sockets past the firewall; the pod's
// net.ipv4.ping_group_range opens ICMP datagram sockets so that ping still works. The annotation
// podwall.io/allow-net-raw=true, or a container adding NET_RAW, keeps it with a warning, and the
// sidecar is told which containers hold it (app-net-raw) to announce them; strict namespaces deny both.
//
// # After creation
//
// The webhook also sees UPDATE of pods/ephemeralcontainers (kubectl debug) and drops NET_RAW from each
// ephemeral container added to an injected pod, as from app containers, unless the pod kept it at
// creation. Everything else after creation is refused by ValidatingAdmissionPolicies that the API
// server evaluates itself (manifests/injector/lifecycle-policy.yaml): changes to the podwall and
// podwall-init containers, to the annotations the injector decided by and to the pod's security
// context; ephemeral containers that are privileged, add capabilities beyond the runtime's defaults,
// target podwall or mount its volumes; exec and attach into podwall. Those need no code here: a
// CONNECT request names only the container, which CEL judges as well as the webhook could, and the
// injector reads no pods.
//
// # The platform's settings
//
// The sidecar's environment is the platform layer of its configuration (package config), which the
// pod's own ConfigMap may only tighten. Beside the pod's identity and the injector's flags, it
// carries the pod's entry of the platform's ConfigMap (podwall-platform in the injector's namespace,
// key platform.yaml: its workload's entry over its namespace's over the defaults), read from a cache
// of that namespace's ConfigMaps (Platform), so that an admission makes no API call, and kept until
// the informer delivers a change, so that it makes no lookup either. A version that does not parse is
// logged and the last good one stays; with none good, pods are refused. Changes reach pods created
// after them. The environment also carries policygen's CA bundle
// (policygen-ca), read from the ConfigMap where policygen publishes it in the same namespace; until it
// is published, pods are refused.
package injector
