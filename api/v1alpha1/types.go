package v1alpha1

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"podwall.io/podwall/api/policy"
)

// WorkloadPolicySpec is the desired policy of one workload.
type WorkloadPolicySpec struct {
	// Workload is the top owner of the pods this policy applies to, in the policy's namespace.
	Workload WorkloadRef `json:"workload"`
	// Mode is Learn, Monitor or Protect.
	// +kubebuilder:default=Learn
	// +optional
	Mode policy.Mode `json:"mode,omitempty"`
	// AutoProtect promotes Monitor to Protect once no audit has been seen for the configured period.
	// +optional
	AutoProtect bool `json:"autoProtect,omitempty"`
	// AutoAcceptManifestRules lets manifest rules that add or widen a rule (a new Service selecting
	// the workload, a Service its environment or podwall.io/egress names, a selectorless Service's new
	// endpoint) into the policy in Protect too. Off (the default), in Protect such a rule waits in
	// status.proposals until someone who may edit this policy accepts it (the annotation
	// podwall.io/accept-proposals, or the UI); in Learn and Monitor manifest rules always apply.
	// +optional
	AutoAcceptManifestRules bool `json:"autoAcceptManifestRules,omitempty"`
	// RestrictDNS, in Protect, refuses the pod's DNS queries for names that no egress rule's fqdn
	// peer matches and that lie outside the pod's own search domains (its resolv.conf: the cluster's
	// names), and logs each refused query as a verdict: a name nothing may reach is never resolved,
	// and DNS cannot carry data out of the pod in made-up names. In Learn and Monitor the queries are
	// only audited.
	// +optional
	RestrictDNS bool `json:"restrictDNS,omitempty"`
	// Canary, in Monitor, runs Protect on this many of the workload's pods first: a replica count
	// ("1") or a percentage of them ("25%", rounded up, at least one pod); the other pods stay in
	// Monitor. The canary pods are listed in status.canary and their verdict lines carry
	// "canary":true. A deny on a canary stops the rollout (the canaries go back to Monitor, a Warning
	// Event CanaryStopped says why); a canary window without one passes it, and then the policy is
	// promoted to Protect with autoProtect, or waits for someone to promote it. A stopped rollout
	// starts again when the policy's rules change or spec.canary does.
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 1 : self.matches('^([1-9][0-9]?|100)%$')",message="a replica count of at least 1, or a percentage from 1% to 100%"
	// +optional
	Canary *intstr.IntOrString `json:"canary,omitempty"`
	// Ingress rules allow inbound connections from their peers.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:XValidation:rule="self.all(r, r.peers.all(p, !has(p.fqdn)))",message="fqdn peers are for egress rules only: a DNS answer tells where the pod connects, not who connects to it"
	// +optional
	Ingress []Rule `json:"ingress,omitempty"`
	// Egress rules allow outbound connections to their peers.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=256
	// +optional
	Egress []Rule `json:"egress,omitempty"`
	// Loopback rules allow or forbid in-pod ports to the pod's own processes; unnamed ports are allowed.
	// For a pod with a mesh proxy, policygen writes a deny rule of origin manifest for the proxy's
	// admin and control ports (m-istio-proxy, m-linkerd-proxy), less the ports an allow rule of
	// another origin names; Learn learns the ports the pod was seen using into the allow rule
	// l-loopback.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=64
	// +optional
	Loopback []LoopbackRule `json:"loopback,omitempty"`
}

// WorkloadRef names a workload: a Deployment, StatefulSet, DaemonSet, Job, CronJob, ReplicaSet or bare Pod.
type WorkloadRef struct {
	// +kubebuilder:validation:Enum=Deployment;StatefulSet;DaemonSet;Job;CronJob;ReplicaSet;Pod
	Kind string `json:"kind"`
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// Rule allows connections with its peers on its ports.
type Rule struct {
	// Name is unique within its list and stable, so that verdict lines can name the rule.
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=100
	Name string `json:"name"`
	// Origin says who wrote the rule.
	// +kubebuilder:default=user
	// +optional
	Origin policy.Origin `json:"origin,omitempty"`
	// Peers are the remote ends the rule allows.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	Peers []Peer `json:"peers"`
	// Ports the rule allows; empty means every port.
	// +kubebuilder:validation:MaxItems=64
	// +optional
	Ports []Port `json:"ports,omitempty"`
}

// Peer names a remote end by identity, never by pod IP: exactly one field is set.
// +kubebuilder:validation:XValidation:rule="[has(self.workload), has(self.selector), has(self.service), has(self.cidr), has(self.nodes), has(self.fqdn)].filter(x, x).size() == 1",message="set exactly one of workload, selector, service, cidr, nodes, fqdn"
type Peer struct {
	// Workload is another workload's pods.
	// +optional
	Workload *WorkloadPeer `json:"workload,omitempty"`
	// Selector is the pods matching label selectors.
	// +optional
	Selector *SelectorPeer `json:"selector,omitempty"`
	// Service is a Service: its cluster IPs and the pods behind it.
	// +optional
	Service *ServicePeer `json:"service,omitempty"`
	// CIDR is an address range in canonical form (no host bits), e.g. 10.0.0.0/8 or 2001:db8::/32.
	// +kubebuilder:validation:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="isCIDR(self) && cidr(self) == cidr(self).masked()",message="must be a CIDR without host bits, e.g. 10.0.0.0/8"
	// +optional
	CIDR string `json:"cidr,omitempty"`
	// Nodes is the cluster's node addresses, where kubelet probes come from.
	// +kubebuilder:validation:XValidation:rule="self",message="set nodes to true or leave it out"
	// +optional
	Nodes bool `json:"nodes,omitempty"`
	// FQDN is a DNS name, in egress rules only: an exact name ("api.stripe.com") or a one-label
	// wildcard ("*.s3.amazonaws.com" matches "bucket.s3.amazonaws.com", neither "s3.amazonaws.com"
	// nor "a.b.s3.amazonaws.com"), in lower case without the trailing dot, of at least two labels
	// after the wildcard ("*.com" is refused). The sidecar allows an address while a DNS answer the
	// pod asked for, from its own resolvers, maps a matching name to it, for the answer's TTL
	// (api/policy: Rule.Names). Checked as policy.ValidateNamePattern checks it: labels of 1-63
	// letters, digits, '-' and '_' that neither start nor end with '-' (a pattern, not CEL: it costs
	// nothing of the API server's rule budget).
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:Pattern=`^(\*\.)?[a-z0-9_]([-a-z0-9_]{0,61}[a-z0-9_])?(\.[a-z0-9_]([-a-z0-9_]{0,61}[a-z0-9_])?)+$`
	// +kubebuilder:validation:XValidation:rule="size(self) <= (self.startsWith('*.') ? 255 : 253)",message="a name is at most 253 characters, not counting a wildcard's leading *."
	// +optional
	FQDN string `json:"fqdn,omitempty"`
}

// WorkloadPeer names a workload, in the policy's namespace unless Namespace is set.
type WorkloadPeer struct {
	// +kubebuilder:validation:MaxLength=63
	// +optional
	Namespace   string `json:"namespace,omitempty"`
	WorkloadRef `json:",inline"`
}

// SelectorPeer selects pods by labels, in the namespaces NamespaceSelector selects (the policy's own
// namespace when it is left out). At least one selector is set.
// +kubebuilder:validation:XValidation:rule="has(self.podSelector) || has(self.namespaceSelector)",message="set podSelector, namespaceSelector or both"
type SelectorPeer struct {
	// +optional
	NamespaceSelector *LabelSelector `json:"namespaceSelector,omitempty"`
	// +optional
	PodSelector *LabelSelector `json:"podSelector,omitempty"`
}

// ServicePeer names a Service, in the policy's namespace unless Namespace is set.
type ServicePeer struct {
	// +kubebuilder:validation:MaxLength=63
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// +kubebuilder:validation:Pattern=`^[a-z]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`
	// Endpoints pins a Service without a selector to the endpoint addresses this peer accepts: it
	// resolves to those of them the Service's EndpointSlices list, and to the Service's cluster IPs
	// only while its EndpointSlices list no address outside them (a cluster IP forwards wherever the
	// EndpointSlices point). Manifest rules set it; left out, every endpoint address is accepted.
	// +optional
	Endpoints *ServiceEndpoints `json:"endpoints,omitempty"`
}

// ServiceEndpoints are the endpoint addresses a Service peer accepts; none accepts only a Service
// whose EndpointSlices list no address.
type ServiceEndpoints struct {
	// +kubebuilder:validation:MaxItems=64
	// +listType=set
	// +optional
	Addresses []IPAddress `json:"addresses,omitempty"`
}

// IPAddress is an IPv4 or IPv6 address.
// +kubebuilder:validation:MaxLength=45
// +kubebuilder:validation:XValidation:rule="isIP(self)",message="must be an IP address"
type IPAddress string

// LabelSelector is metav1.LabelSelector with bounds and syntax checks, so that the API server rejects a
// selector that would fail to parse later. An empty selector matches everything.
type LabelSelector struct {
	// +kubebuilder:validation:MaxProperties=16
	// +kubebuilder:validation:XValidation:rule="self.all(k, k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))",message="label keys must be valid label names"
	// +optional
	MatchLabels map[string]LabelValue `json:"matchLabels,omitempty"`
	// +kubebuilder:validation:MaxItems=16
	// +optional
	MatchExpressions []LabelRequirement `json:"matchExpressions,omitempty"`
}

// LabelValue is a label's value, checked by pattern rather than CEL, which keeps the schema's rule cost
// within the API server's budget.
// +kubebuilder:validation:MaxLength=63
// +kubebuilder:validation:Pattern=`^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$`
type LabelValue string

// LabelRequirement is one selector expression.
// +kubebuilder:validation:XValidation:rule="(self.operator in ['In', 'NotIn']) == (has(self.values) && size(self.values) > 0)",message="In and NotIn need values, Exists and DoesNotExist take none"
type LabelRequirement struct {
	// +kubebuilder:validation:MaxLength=317
	// +kubebuilder:validation:Pattern=`^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$`
	Key string `json:"key"`
	// +kubebuilder:validation:Enum=In;NotIn;Exists;DoesNotExist
	Operator string `json:"operator"`
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$`
	// +optional
	Values []string `json:"values,omitempty"`
}

// Port is one protocol's port or port range; no port means every port of the protocol. ICMP and
// ICMPv6 have no ports: they name message types instead, and no types means every type.
// +kubebuilder:validation:XValidation:rule="!has(self.endPort) || (has(self.port) && self.endPort >= self.port)",message="endPort needs a port and must not be below it"
// +kubebuilder:validation:XValidation:rule="!has(self.types) || (has(self.protocol) && self.protocol in ['ICMP', 'ICMPv6'])",message="types are for ICMP and ICMPv6 only"
// +kubebuilder:validation:XValidation:rule="!has(self.protocol) || !(self.protocol in ['ICMP', 'ICMPv6']) || (!has(self.port) && !has(self.endPort))",message="ICMP and ICMPv6 have no ports: name types"
type Port struct {
	// +kubebuilder:default=TCP
	// +optional
	Protocol policy.Protocol `json:"protocol,omitempty"`
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	Port int32 `json:"port,omitempty"`
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	EndPort int32 `json:"endPort,omitempty"`
	// Types are the ICMP or ICMPv6 message types allowed (8 and 128: echo request); none means every
	// type. Only for those protocols.
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:Minimum=0
	// +kubebuilder:validation:items:Maximum=255
	// +listType=set
	// +optional
	Types []int32 `json:"types,omitempty"`
}

// LoopbackRule allows or forbids in-pod ports to the pod's own processes.
// +kubebuilder:validation:XValidation:rule="self.ports.all(p, !has(p.protocol) || !(p.protocol in ['ICMP', 'ICMPv6']))",message="loopback rules name ports: TCP, UDP or SCTP"
type LoopbackRule struct {
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=100
	Name string `json:"name"`
	// +kubebuilder:default=user
	// +optional
	Origin policy.Origin `json:"origin,omitempty"`
	Action policy.Action `json:"action"`
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	Ports []Port `json:"ports"`
}

// WorkloadPolicyStatus is what policygen observed about the policy.
type WorkloadPolicyStatus struct {
	// Revision is the resolved policy's revision that policygen serves to the workload's sidecars.
	// +optional
	Revision int64 `json:"revision,omitempty"`
	// Rules counts ingress, egress and loopback rules.
	// +optional
	Rules int32 `json:"rules,omitempty"`
	// Sidecars is how many sidecars are subscribed; SidecarsInSync how many of them run the latest revision.
	// +optional
	Sidecars int32 `json:"sidecars,omitempty"`
	// +optional
	SidecarsInSync int32 `json:"sidecarsInSync,omitempty"`
	// Replicas holds each policygen replica's view of its own subscribers; Sidecars and SidecarsInSync
	// are their sums.
	// +listType=map
	// +listMapKey=name
	// +optional
	Replicas []ReplicaStatus `json:"replicas,omitempty"`
	// SidecarVersions counts the subscribed sidecars by the version they run (the sums of the
	// replicas' lists).
	// +listType=map
	// +listMapKey=version
	// +kubebuilder:validation:MaxItems=16
	// +optional
	SidecarVersions []SidecarVersion `json:"sidecarVersions,omitempty"`
	// OutdatedSidecars counts the subscribed sidecars whose version differs from policygen's own:
	// pods created before an upgrade keep their sidecar until they are restarted.
	// +optional
	OutdatedSidecars int32 `json:"outdatedSidecars"`
	// WeakenedSidecars counts the subscribed sidecars that guard their pod less than the policy asks
	// (the sums of the replicas' Weakened): configured to fail open, enforcing a mode weaker than the
	// policy's, or whose ruleset another process changed within WeakenedFor (restored at once, but
	// something in the pod holds CAP_NET_ADMIN and used it).
	// +optional
	WeakenedSidecars int32 `json:"weakenedSidecars"`
	// LearnedFlows counts the reported connections that added or widened a learned rule.
	// +optional
	LearnedFlows int64 `json:"learnedFlows,omitempty"`
	// Violations counts the connections reported as denied or audited.
	// +optional
	Violations int64 `json:"violations,omitempty"`
	// Mode is the mode ModeSince refers to; a differing spec.mode (someone changed it) restarts the clock.
	// +optional
	Mode policy.Mode `json:"mode,omitempty"`
	// ModeSince is when the current mode began; quiet periods count from the later of it and the last
	// learned flow or violation.
	// +optional
	ModeSince *metav1.Time `json:"modeSince,omitempty"`
	// +optional
	LastLearned *metav1.Time `json:"lastLearned,omitempty"`
	// +optional
	LastViolation *metav1.Time `json:"lastViolation,omitempty"`
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Proposals are the manifest rules that would add to or widen this policy while it is in Protect,
	// waiting to be accepted (spec.autoAcceptManifestRules, or the annotation
	// podwall.io/accept-proposals: "<name>,<name>" or "all"). At most 64 are listed; PendingProposals
	// counts them all.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=64
	// +optional
	Proposals []Proposal `json:"proposals,omitempty"`
	// +optional
	PendingProposals int32 `json:"pendingProposals,omitempty"`
	// Coverage is how much of the workload the current mode's window has observed: automatic
	// promotion waits until every pod reported through the whole window.
	// +optional
	Coverage *Coverage `json:"coverage,omitempty"`
	// WouldDeny are the flows of the current window that Protect would refuse: the connections the
	// sidecars reported as audited or denied under the policy's latest revision, most recent first.
	// At most 32 are listed; WouldDenyFlows counts them all. Automatic promotion to Protect waits for
	// none.
	// +kubebuilder:validation:MaxItems=32
	// +optional
	WouldDeny []FlowSummary `json:"wouldDeny,omitempty"`
	// +optional
	WouldDenyFlows int32 `json:"wouldDenyFlows"`
	// PromotionBlocked says what the automatic promotion out of the current mode waits for besides its
	// quiet period: the pods without a reporting sidecar, the gap hours, the would-deny flows. Empty
	// when nothing is missing or no automatic promotion applies.
	// +kubebuilder:validation:MaxLength=1024
	// +optional
	PromotionBlocked string `json:"promotionBlocked,omitempty"`
	// Canary is the state of the canary rollout that spec.canary asks for.
	// +optional
	Canary *CanaryStatus `json:"canary,omitempty"`
	// OpenPorts are the Service ports that manifest rules keep open to every address (0.0.0.0/0 and
	// ::/0), and why. A port of a Service that is not public is narrowed to its observed callers (the
	// learned ingress rules that allow it) once the policy leaves Learn.
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	// +optional
	OpenPorts []OpenPort `json:"openPorts,omitempty"`
}

// OpenReason says why a manifest rule keeps a Service port open to every address.
// +kubebuilder:validation:Enum=Public;Learning;NoCallers
type OpenReason string

const (
	// OpenPublic: the Service is of type LoadBalancer or NodePort, or annotated podwall.io/public:
	// "true"; its callers come from outside and the port stays open in every mode.
	OpenPublic OpenReason = "Public"
	// OpenLearning: the policy is in Learn, recording the port's callers.
	OpenLearning OpenReason = "Learning"
	// OpenNoCallers: the policy left Learn without a caller of the port observed (no learned ingress
	// rule allows it), so nothing says whom to narrow it to.
	OpenNoCallers OpenReason = "NoCallers"
)

// OpenPort is a Service port a manifest rule keeps open to every address.
type OpenPort struct {
	// Rule is the manifest ingress rule that opens it, Service the Service (namespace/name).
	Rule    string `json:"rule"`
	Service string `json:"service"`
	// Protocol and Port are the pod's port the Service targets.
	Protocol policy.Protocol `json:"protocol"`
	Port     int32           `json:"port"`
	Reason   OpenReason      `json:"reason"`
}

// Coverage is how much of a workload a window observed.
type Coverage struct {
	// Since is when the window began: the current mode's start, or later when the policy's spec
	// changed since (a rule added, widened or narrowed; not the peers' addresses coming and going).
	Since metav1.Time `json:"since"`
	// Generation is the policy's metadata.generation the window observes; a newer one restarts it.
	// +optional
	Generation int64 `json:"generation,omitempty"`
	// Pods is how many pods the workload runs now; Reported how many of them have a sidecar that
	// reported or subscribed during the window.
	Pods     int32 `json:"pods"`
	Reported int32 `json:"reported"`
	// ObservedHours counts the window's whole hours in which every pod of the workload had a
	// sidecar subscribed; GapHours those in which some pod had none.
	ObservedHours int32 `json:"observedHours"`
	// +optional
	GapHours int32 `json:"gapHours,omitempty"`
	// Flows counts the connections the sidecars reported during the window.
	Flows int64 `json:"flows"`
	// Complete says every pod reported through the whole window: no gap hour, and Reported equals
	// Pods (at least one).
	Complete bool `json:"complete"`
}

// FlowSummary is one flow a window observed, aggregated over the workload's pods.
type FlowSummary struct {
	Direction policy.Direction `json:"direction"`
	// Peer names the remote end as policygen knows it ("workload:ns/Deployment/api",
	// "cidr:203.0.113.7/32", "fqdn:api.example.com"); Address is the address reported.
	// +kubebuilder:validation:MaxLength=512
	Peer string `json:"peer"`
	// +kubebuilder:validation:MaxLength=45
	// +optional
	Address string `json:"address,omitempty"`
	// +optional
	Protocol policy.Protocol `json:"protocol,omitempty"`
	// +optional
	Port int32 `json:"port,omitempty"`
	// Count is the connections seen in the window; LastSeen the latest.
	Count    int64       `json:"count"`
	LastSeen metav1.Time `json:"lastSeen"`
}

// CanaryState is where a canary rollout stands.
// +kubebuilder:validation:Enum=Running;Stopped;Passed
type CanaryState string

// The canary states.
const (
	// CanaryRunning: the canary pods enforce Protect, the others Monitor.
	CanaryRunning CanaryState = "Running"
	// CanaryStopped: a canary denied a connection; every pod is back in Monitor until the rules or
	// spec.canary change.
	CanaryStopped CanaryState = "Stopped"
	// CanaryPassed: a whole canary window passed without a deny; the policy is promoted to Protect
	// with autoProtect, or waits for someone to promote it.
	CanaryPassed CanaryState = "Passed"
)

// CanaryStatus is a canary rollout's state.
type CanaryStatus struct {
	State CanaryState `json:"state"`
	// Pods are the canary pods, by name.
	// +kubebuilder:validation:MaxItems=64
	// +listType=set
	// +optional
	Pods []string `json:"pods,omitempty"`
	// Revision is the policy revision the canary runs; Since when it began.
	Revision int64       `json:"revision"`
	Since    metav1.Time `json:"since"`
	// Generation is the policy's metadata.generation when the rollout began: a later change of the
	// spec (its rules, spec.canary) starts the rollout again.
	// +optional
	Generation int64 `json:"generation,omitempty"`
	// Reason says why the rollout stopped: the denied flow and the pod.
	// +kubebuilder:validation:MaxLength=1024
	// +optional
	Reason string `json:"reason,omitempty"`
}

// Proposal is a manifest rule that would add to or widen a policy in Protect.
// +kubebuilder:validation:XValidation:rule="self.direction == 'egress' || self.rule.peers.all(p, !has(p.fqdn))",message="fqdn peers are for egress rules only"
type Proposal struct {
	// Name names this rule's content: "<direction>-<rule>-<hash>". A proposal whose rule changes
	// gets another name, so accepting a name accepts exactly what was shown.
	Name string `json:"name"`
	// +kubebuilder:validation:Enum=ingress;egress
	Direction string `json:"direction"`
	// Rule is the rule accepting writes into the spec, in place of the manifest rule of its name.
	Rule Rule `json:"rule"`
	// Source says what in the cluster caused it, e.g. "Service demo/web selects this workload".
	Source string `json:"source"`
	// Since is when policygen first proposed it.
	Since metav1.Time `json:"since"`
}

// ReplicaStatus is one policygen replica's subscribers of this policy.
type ReplicaStatus struct {
	Name           string      `json:"name"`
	Revision       int64       `json:"revision"`
	Sidecars       int32       `json:"sidecars"`
	SidecarsInSync int32       `json:"sidecarsInSync"`
	Updated        metav1.Time `json:"updated"`
	// SidecarVersions counts this replica's subscribers by version.
	// +kubebuilder:validation:MaxItems=16
	// +optional
	SidecarVersions []SidecarVersion `json:"sidecarVersions,omitempty"`
	// Pods names the pods of this replica's subscribers, in name order, at most MaxReplicaPods: the
	// promoter counts coverage by pod from them (a pod subscribed at two replicas counts once, a gone
	// pod not at all), and by Sidecars alone when a replica holds more.
	// +kubebuilder:validation:MaxItems=256
	// +listType=atomic
	// +optional
	Pods []string `json:"pods,omitempty"`
	// Weakened counts this replica's subscribers that guard their pod less than the policy asks
	// (WorkloadPolicyStatus.WeakenedSidecars).
	// +optional
	Weakened int32 `json:"weakened,omitempty"`
}

// MaxReplicaPods bounds ReplicaStatus.Pods.
const MaxReplicaPods = 256

// WeakenedFor is how long a sidecar whose ruleset another process changed counts as weakened.
const WeakenedFor = 10 * time.Minute

// MaxSidecarVersions bounds a list of SidecarVersions; the versions beyond the 15 most common are
// counted together as OtherVersions.
const MaxSidecarVersions = 16

// OtherVersions is the version that stands for the versions beyond a list's bound.
const OtherVersions = "other"

// SidecarVersion counts the sidecars that run one version.
type SidecarVersion struct {
	// Version is the version a sidecar sends with its requests (the X-Podwall-Version header of the
	// policy API), "unknown" for sidecars that send none (older than the header).
	// +kubebuilder:validation:MaxLength=128
	Version string `json:"version"`
	Count   int32  `json:"count"`
}

// WorkloadPolicy is one workload's firewall policy.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=wp;wpol,categories=podwall
// +kubebuilder:storageversion
// +kubebuilder:printcolumn:name="Workload",type=string,JSONPath=`.spec.workload.name`
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="Rules",type=integer,JSONPath=`.status.rules`
// +kubebuilder:printcolumn:name="Revision",type=integer,JSONPath=`.status.revision`,priority=1
// +kubebuilder:printcolumn:name="Sidecars",type=integer,JSONPath=`.status.sidecars`,priority=1
// +kubebuilder:printcolumn:name="In-Sync",type=integer,JSONPath=`.status.sidecarsInSync`
// +kubebuilder:printcolumn:name="Outdated",type=integer,JSONPath=`.status.outdatedSidecars`
// +kubebuilder:printcolumn:name="Weakened",type=integer,JSONPath=`.status.weakenedSidecars`
// +kubebuilder:printcolumn:name="Violations",type=integer,JSONPath=`.status.violations`
// +kubebuilder:printcolumn:name="Coverage",type=string,JSONPath=`.status.coverage.complete`
// +kubebuilder:printcolumn:name="Would-Deny",type=integer,JSONPath=`.status.wouldDenyFlows`
// +kubebuilder:printcolumn:name="Canary",type=string,JSONPath=`.status.canary.state`,priority=1
// +kubebuilder:printcolumn:name="Proposals",type=integer,JSONPath=`.status.pendingProposals`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type WorkloadPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   WorkloadPolicySpec   `json:"spec"`
	Status WorkloadPolicyStatus `json:"status,omitempty"`
}

// WorkloadPolicyList is a list of WorkloadPolicy.
// +kubebuilder:object:root=true
type WorkloadPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []WorkloadPolicy `json:"items"`
}
