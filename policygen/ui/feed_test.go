package ui

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/types"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/policygen/policyapi"
	"podwall.io/podwall/policygen/workload"
)

func seqs(vs []Event) []uint64 {
	out := []uint64{}
	for _, v := range vs {
		out = append(out, v.Seq)
	}
	return out
}

func TestFeedAfter(t *testing.T) {
	f := NewFeed(nil, 4)
	k := workload.Key{Namespace: "shop", Kind: "Deployment", Name: "web"}
	for range 6 {
		f.add(k, []Event{{Verdict: "deny", Count: 1}})
	}
	// The ring of 4 holds 3..6; 1 and 2 fell out.
	tests := []struct {
		name  string
		after uint64
		want  []uint64
		lost  uint64
	}{
		{"from the start", 0, []uint64{3, 4, 5, 6}, 2},
		{"resume inside the ring", 4, []uint64{5, 6}, 0},
		{"resume just before the ring", 2, []uint64{3, 4, 5, 6}, 0},
		{"up to date", 6, []uint64{}, 0},
		{"a seq from another replica", 99, []uint64{3, 4, 5, 6}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vs, lost, _ := f.After(tt.after)
			if diff := cmp.Diff(tt.want, seqs(vs)); diff != "" || lost != tt.lost {
				t.Errorf("After(%d): lost %d (want %d), seqs (-want +got):\n%s", tt.after, lost, tt.lost, diff)
			}
		})
	}
}

func TestFeedWakes(t *testing.T) {
	f := NewFeed(nil, 8)
	_, _, more := f.After(0)
	select {
	case <-more:
		t.Fatal("woken before anything arrived")
	default:
	}
	f.add(workload.Key{Name: "web"}, []Event{{Verdict: "audit", Count: 1}})
	select {
	case <-more:
	default:
		t.Fatal("not woken by a new verdict")
	}
}

func TestFeedLastHour(t *testing.T) {
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	f := NewFeed(nil, 16)
	f.now = func() time.Time { return now }
	web, api := workload.Key{Namespace: "shop", Kind: "Deployment", Name: "web"}, workload.Key{Namespace: "shop", Kind: "Deployment", Name: "api"}
	f.add(web, []Event{{Count: 3}, {Count: 2}})
	now = now.Add(30 * time.Minute)
	f.add(api, []Event{{Count: 1}})
	f.add(web, []Event{{Count: 10}})
	if diff := cmp.Diff(map[workload.Key]uint64{web: 15, api: 1}, f.LastHour()); diff != "" {
		t.Errorf("after 30 minutes (-want +got):\n%s", diff)
	}
	now = now.Add(40 * time.Minute) // the first 5 are now 70 minutes old
	if diff := cmp.Diff(map[workload.Key]uint64{web: 10, api: 1}, f.LastHour()); diff != "" {
		t.Errorf("after 70 minutes (-want +got):\n%s", diff)
	}
	now = now.Add(2 * time.Hour)
	if diff := cmp.Diff(map[workload.Key]uint64{}, f.LastHour()); diff != "" {
		t.Errorf("after 3 hours (-want +got):\n%s", diff)
	}
}

func TestFeedPods(t *testing.T) {
	f := NewFeed(nil, 8)
	now := time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)
	f.now = func() time.Time { return now }
	web := workload.Key{Namespace: "shop", Kind: "Deployment", Name: "web"}
	id := func(pod string) policyapi.Identity {
		return policyapi.Identity{Pod: types.NamespacedName{Namespace: "shop", Name: pod}, Workload: web}
	}
	f.Record(context.Background(), id("web-b"), &policy.Report{Mode: policy.Monitor, Config: &policy.SidecarConfig{File: policy.ConfigRefused, Message: "why"}})
	f.Record(context.Background(), id("web-a"), &policy.Report{Mode: policy.Protect})
	want := []PodState{{Pod: "web-a", Mode: policy.Protect, Seen: now}, {Pod: "web-b", Mode: policy.Monitor, File: policy.ConfigRefused, Message: "why", Seen: now}}
	if diff := cmp.Diff(want, f.Pods(web)); diff != "" {
		t.Errorf("pods (-want +got):\n%s", diff)
	}
	now = now.Add(time.Hour + time.Second)
	if got := f.Pods(web); len(got) != 0 {
		t.Errorf("pods an hour later: %+v, want none", got)
	}
}
