package ui

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/policygen/export"
	"podwall.io/podwall/policygen/workload"
)

// Row is one workload on the workloads page.
type Row struct {
	Namespace string `json:"namespace"`
	// Policy is the WorkloadPolicy's name; Workload is "Kind/name".
	Policy   string                `json:"policy"`
	Workload string                `json:"workload"`
	Mode     policy.Mode           `json:"mode"`
	Rules    map[policy.Origin]int `json:"rules"`
	Sidecars int32                 `json:"sidecars"`
	InSync   int32                 `json:"inSync"`
	// Versions count the sidecars by version; Outdated those of another version than policygen's
	// (pods created before an upgrade, until they are restarted).
	Versions []v1.SidecarVersion `json:"versions"`
	Outdated int32               `json:"outdated"`
	// Weakened counts the sidecars that guard their pod less than the policy asks (failing open, a
	// weaker mode, their ruleset changed by another process lately).
	Weakened int32 `json:"weakened"`
	// LastHour counts the denies and audits reported in the last hour (to the replicas that answered:
	// see Replicas); Violations is the policy's count since it was created.
	LastHour   uint64 `json:"lastHour"`
	Violations int64  `json:"violations"`
	// Proposals counts the manifest rules waiting to be accepted.
	Proposals int32 `json:"proposals"`
	// Pods are the states its pods' sidecars reported in the last hour: a pod whose
	// mode is weaker than the policy's is not in sync, and a refused config file is shown with why.
	Pods []PodState `json:"pods"`
}

// workloads lists the WorkloadPolicies, of one namespace when ?namespace= says so, with the
// namespaces there are to filter by, and every replica's counts and pod states (everywhere).
func (s *Server) workloads(w http.ResponseWriter, r *http.Request) {
	var list v1.WorkloadPolicyList
	if err := s.reader.List(r.Context(), &list); err != nil {
		s.log.Error(err, "list policies")
		writeError(w, http.StatusServiceUnavailable, "cannot list policies now, retry")
		return
	}
	only := r.URL.Query().Get("namespace")
	all, replicas := s.everywhere(r, "")
	rows, namespaces := []Row{}, []string{}
	for i := range list.Items {
		p := &list.Items[i]
		if !slices.Contains(namespaces, p.Namespace) {
			namespaces = append(namespaces, p.Namespace)
		}
		if only != "" && p.Namespace != only {
			continue
		}
		k := workload.Key{Namespace: p.Namespace, Kind: p.Spec.Workload.Kind, Name: p.Spec.Workload.Name}
		rows = append(rows, Row{Namespace: p.Namespace, Policy: p.Name, Workload: k.Kind + "/" + k.Name,
			Mode: modeOf(p), Rules: CountByOrigin(&p.Spec), Sidecars: p.Status.Sidecars, InSync: p.Status.SidecarsInSync,
			Versions: p.Status.SidecarVersions, Outdated: p.Status.OutdatedSidecars,
			Weakened: p.Status.WeakenedSidecars,
			LastHour: all.LastHour[k.String()], Violations: p.Status.Violations, Proposals: p.Status.PendingProposals,
			Pods: all.Pods[k.String()]})
	}
	slices.SortFunc(rows, func(a, b Row) int {
		return strings.Compare(a.Namespace+"/"+a.Workload, b.Namespace+"/"+b.Workload)
	})
	slices.Sort(namespaces)
	writeJSON(w, map[string]any{"namespaces": namespaces, "workloads": rows, "replicas": replicas.Answered, "unreachable": replicas.Unreachable})
}

// modeOf is the policy's mode, Learn (the API server's default) when unset.
func modeOf(p *v1.WorkloadPolicy) policy.Mode {
	if p.Spec.Mode == "" {
		return policy.Learn
	}
	return p.Spec.Mode
}

// PolicyPage is one workload's policy.
type PolicyPage struct {
	Namespace string      `json:"namespace"`
	Policy    string      `json:"policy"`
	Workload  string      `json:"workload"`
	Mode      policy.Mode `json:"mode"`
	Revision  int64       `json:"revision"`
	Groups    []RuleGroup `json:"groups"`
	// DNS says what names the pod may look up (DNSInWords).
	DNS string `json:"dns"`
	// NetworkPolicy is the export as YAML, with comment lines for what it cannot express.
	NetworkPolicy string `json:"networkPolicy"`
	// CanChangeMode says whether the caller's RBAC lets them patch this policy (change its mode,
	// accept its proposals).
	CanChangeMode bool `json:"canChangeMode"`
	// Proposals are the manifest rules waiting to be accepted; PendingProposals counts them all.
	Proposals        []ProposalView `json:"proposals"`
	PendingProposals int32          `json:"pendingProposals"`
	// The evidence for promotion, from status: the window's coverage (nil before policygen measured
	// it), the flows Protect would deny (at most 32 listed of WouldDenyFlows), and what an automatic
	// promotion waits for.
	Coverage         *v1.Coverage     `json:"coverage"`
	WouldDeny        []v1.FlowSummary `json:"wouldDeny"`
	WouldDenyFlows   int32            `json:"wouldDenyFlows"`
	PromotionBlocked string           `json:"promotionBlocked"`
}

// ProposalView is one proposal on the policy page.
type ProposalView struct {
	Name      string `json:"name"`
	Direction string `json:"direction"`
	// Rule is the rule in plain words.
	Rule   string      `json:"rule"`
	Source string      `json:"source"`
	Since  metav1.Time `json:"since"`
}

func (s *Server) policy(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	key := types.NamespacedName{Namespace: r.PathValue("namespace"), Name: r.PathValue("name")}
	var p v1.WorkloadPolicy
	if err := s.reader.Get(ctx, key, &p); err != nil {
		s.getFailed(w, key, err)
		return
	}
	var np strings.Builder
	if err := export.Write(ctx, s.reader, key.Namespace, key.Name, &np); err != nil {
		s.log.Error(err, "export policy", "policy", key.String())
		np.Reset()
		fmt.Fprintf(&np, "# cannot export now: %v\n", err)
	}
	_, canPatch, err := s.may(r, "patch", key.Namespace, key.Name)
	if err != nil {
		s.log.Error(err, "check patch access", "policy", key.String())
	}
	proposals := []ProposalView{}
	for _, pr := range p.Status.Proposals {
		proposals = append(proposals, ProposalView{Name: pr.Name, Direction: pr.Direction, Rule: RuleInWords(pr.Direction, pr.Rule),
			Source: pr.Source, Since: pr.Since})
	}
	writeJSON(w, PolicyPage{Namespace: p.Namespace, Policy: p.Name, Workload: p.Spec.Workload.Kind + "/" + p.Spec.Workload.Name,
		Mode: modeOf(&p), Revision: p.Status.Revision, Groups: Describe(&p.Spec), DNS: DNSInWords(&p.Spec), NetworkPolicy: np.String(), CanChangeMode: canPatch,
		Proposals: proposals, PendingProposals: p.Status.PendingProposals, Coverage: p.Status.Coverage,
		WouldDeny: append([]v1.FlowSummary{}, p.Status.WouldDeny...), WouldDenyFlows: p.Status.WouldDenyFlows, PromotionBlocked: p.Status.PromotionBlocked})
}

func (s *Server) getFailed(w http.ResponseWriter, key types.NamespacedName, err error) {
	if apierrors.IsNotFound(err) {
		writeError(w, http.StatusNotFound, "no WorkloadPolicy "+key.String())
		return
	}
	s.log.Error(err, "get policy", "policy", key.String())
	writeError(w, http.StatusServiceUnavailable, "cannot read the policy now, retry")
}

// Annotations setMode leaves on a WorkloadPolicy: who last set its mode through the UI, and when
// (RFC 3339). policygen patches as its own ServiceAccount, so the API server's audit log names it;
// these name the person. Anyone who may patch the policy may also edit them, so they record the UI's
// changes, not every change: a direct edit is in the audit log under its author's name.
const (
	ModeChangedByAnnotation = "podwall.io/mode-changed-by"
	ModeChangedAtAnnotation = "podwall.io/mode-changed-at"
)

// UIFieldManager is the field manager of the UI's patches, so managedFields tell its writes apart
// from the generator's and the promoter's.
const UIFieldManager = "podwall-ui"

// setMode patches spec.mode for a caller RBAC lets patch this WorkloadPolicy, recording who asked.
func (s *Server) setMode(w http.ResponseWriter, r *http.Request) {
	key := types.NamespacedName{Namespace: r.PathValue("namespace"), Name: r.PathValue("name")}
	user, ok := s.allowed(w, r, "patch", key.Namespace, key.Name)
	if !ok {
		return
	}
	var body struct {
		Mode policy.Mode `json:"mode"`
	}
	if !decode(w, r, 1024, &body, `want {"mode": "Learn"|"Monitor"|"Protect"}`) {
		return
	}
	if !slices.Contains([]policy.Mode{policy.Learn, policy.Monitor, policy.Protect}, body.Mode) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("mode %q: want Learn, Monitor or Protect", body.Mode))
		return
	}
	p := &v1.WorkloadPolicy{}
	p.Namespace, p.Name = key.Namespace, key.Name
	patch, _ := json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{
			ModeChangedByAnnotation: user, ModeChangedAtAnnotation: time.Now().UTC().Format(time.RFC3339)}},
		"spec": map[string]any{"mode": body.Mode},
	})
	if err := s.writer.Patch(r.Context(), p, client.RawPatch(types.MergePatchType, patch), client.FieldOwner(UIFieldManager)); err != nil {
		s.getFailed(w, key, err)
		return
	}
	s.log.Info("mode changed from the UI", "policy", key.String(), "mode", body.Mode, "user", user)
	writeJSON(w, map[string]any{"mode": modeOf(p)})
}

// decode reads a write's JSON body of at most limit bytes into v, refusing unknown fields; on a
// bad body it answers 400 with usage (and the unknown field's name) and returns false.
func decode(w http.ResponseWriter, r *http.Request, limit int64, v any, usage string) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		msg := usage
		if field, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			msg = "unknown field " + field + ": " + msg
		}
		writeError(w, http.StatusBadRequest, msg)
		return false
	}
	return true
}

// acceptProposals accepts pending proposals for a caller RBAC lets patch this WorkloadPolicy: it adds
// their names to the annotation v1alpha1.AcceptProposalsAnnotation, which the generator consumes
// with the same checks as one set with kubectl (only what is still pending under that name is
// applied), and names the caller in v1alpha1.AcceptedByAnnotation for the acceptance Event. A name not pending in this replica's view is refused (409), so the caller looks again.
func (s *Server) acceptProposals(w http.ResponseWriter, r *http.Request) {
	key := types.NamespacedName{Namespace: r.PathValue("namespace"), Name: r.PathValue("name")}
	user, ok := s.allowed(w, r, "patch", key.Namespace, key.Name)
	if !ok {
		return
	}
	var body struct {
		Proposals []string `json:"proposals"`
	}
	if !decode(w, r, 16<<10, &body, `want {"proposals": ["<name>", ...]}`) {
		return
	}
	if len(body.Proposals) == 0 {
		writeError(w, http.StatusBadRequest, `name at least one proposal: {"proposals": ["<name>", ...]}`)
		return
	}
	var p v1.WorkloadPolicy
	if err := s.reader.Get(r.Context(), key, &p); err != nil {
		s.getFailed(w, key, err)
		return
	}
	names := v1.AcceptedProposals(p.Annotations[v1.AcceptProposalsAnnotation])
	for _, n := range body.Proposals {
		if !slices.ContainsFunc(p.Status.Proposals, func(pr v1.Proposal) bool { return pr.Name == n }) {
			writeError(w, http.StatusConflict, fmt.Sprintf("proposal %q is not pending (its rule may have changed): reload and look again", n))
			return
		}
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{
		v1.AcceptProposalsAnnotation: strings.Join(names, ","), v1.AcceptedByAnnotation: user}}})
	if err := s.writer.Patch(r.Context(), &p, client.RawPatch(types.MergePatchType, patch), client.FieldOwner(UIFieldManager)); err != nil {
		s.getFailed(w, key, err)
		return
	}
	s.log.Info("proposals accepted from the UI", "policy", key.String(), "proposals", body.Proposals, "user", user)
	writeJSON(w, map[string]any{"accepted": body.Proposals})
}
