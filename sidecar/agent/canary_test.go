package agent

import (
	"encoding/json"
	"strings"
	"testing"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/api/verdict"
)

// TestCanaryPolicyEnforcesAndSaysCanary checks that a pod of a workload in Monitor enforces Protect
// once served the canary form of its policy, refusing what Monitor only audited, with verdict lines
// that say canary, and goes back to auditing, with lines that no longer say it, when the rollout stops.
func TestCanaryPolicyEnforcesAndSaysCanary(t *testing.T) {
	w := newWorld(t)
	w.writePolicy(t, policy.Monitor, 1, 80)
	a, _ := w.start(t, nil)
	if _, err := w.dial(w.peerAddr(81)); err != nil {
		t.Fatalf("Monitor must allow what Protect would deny: %v", err)
	}
	waitFor(t, w.out, verdict.Line{Verdict: policy.Audit, Dst: w.peerAddr(81), Mode: policy.Monitor, PolicyRevision: 1})

	canary := w.policy(policy.Protect, 2, 80)
	canary.Canary = true
	w.write(t, canary)
	waitRevision(t, a, 2)
	w.mustRefuseFast(t, w.peerAddr(81))
	waitFor(t, w.out, verdict.Line{Verdict: policy.Deny, Dst: w.peerAddr(81), Mode: policy.Protect, PolicyRevision: 2, Canary: true})

	w.writePolicy(t, policy.Monitor, 3, 80)
	waitRevision(t, a, 3)
	if _, err := w.dial(w.peerAddr(81)); err != nil {
		t.Fatalf("Monitor again must allow: %v", err)
	}
	waitFor(t, w.out, verdict.Line{Verdict: policy.Audit, Dst: w.peerAddr(81), Mode: policy.Monitor, PolicyRevision: 3})
	for line := range strings.Lines(w.out.String()) {
		var l verdict.Line
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("verdict line %q: %v", line, err)
		}
		if l.Canary != (l.PolicyRevision == 2) {
			t.Errorf("line of revision %d says canary %v: %s", l.PolicyRevision, l.Canary, line)
		}
	}
}
